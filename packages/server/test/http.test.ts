/**
 * What the SDK cannot send, over raw fetch and sockets: malformed and mistyped bodies, bad token budgets,
 * prompts beyond the context, invalid UTF-8, oversized bodies, a body that never comes (408), a slow-loris
 * client while others are served, content types, methods, routes, the API key, health, readiness, metrics,
 * and the per-request timeout.
 */
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { MexitGenerator } from '@mexit/speculative';
import { startServer, type MexitServer } from '@mexit/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeldGenerator, until } from './support/gate.js';

const MODEL = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));
const KEY = 'sk-test-key';

let generator: MexitGenerator;
let server: MexitServer;

beforeAll(async () => {
  generator = await MexitGenerator.fromPretrained(MODEL);
  server = await startServer({
    generator,
    modelId: 'tiny',
    port: 0,
    apiKey: KEY,
    bodyLimitBytes: 4096,
    bodyTimeoutMs: 200,
    headersTimeoutMs: 400,
    log: () => {},
  });
});

afterAll(async () => {
  await server?.close(0);
  await generator?.dispose();
});

const auth = { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' };

async function post(path: string, body: string | Uint8Array, headers: Record<string, string> = auth) {
  const r = await fetch(server.url + path, { method: 'POST', headers, body });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, json: () => JSON.parse(text) };
}

const completion = (fields: Record<string, unknown>) =>
  post('/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 4, temperature: 0, ...fields }));

/** Every error body has exactly OpenAI's four fields, and no stack trace. */
function expectError(r: { status: number; text: string }, status: number, code?: string, param?: string | null) {
  expect(r.status).toBe(status);
  const body = JSON.parse(r.text);
  expect(Object.keys(body)).toEqual(['error']);
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(r.text).not.toMatch(/\bat .*\.(ts|js):\d+/);
  if (code !== undefined) expect(body.error.code).toBe(code);
  if (param !== undefined) expect(body.error.param).toBe(param);
  return body.error;
}

/** Writes `text` on a raw connection and collects everything until the server closes it. */
function raw(text: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(server.port, '127.0.0.1');
    let data = '';
    socket.on('data', (d) => (data += d.toString('latin1')));
    socket.on('close', () => resolve(data));
    socket.on('error', reject);
    socket.write(text);
  });
}

describe('bad bodies → 400 naming the problem', () => {
  it('malformed JSON, a non-object body, wrong types', async () => {
    expectError(await post('/v1/completions', '{"model": "tiny", "prompt": '), 400, 'invalid_json', null);
    expectError(await post('/v1/completions', '[1, 2]'), 400, 'invalid_type');
    expectError(await completion({ prompt: 42 }), 400, 'invalid_type', 'prompt');
    expectError(await completion({ max_tokens: '4' }), 400, 'invalid_value', 'max_tokens');
    expectError(await completion({ temperature: 'hot' }), 400, 'invalid_value', 'temperature');
    expectError(await completion({ stream: 'yes' }), 400, 'invalid_type', 'stream');
    expectError(await completion({ stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'invalid_value', 'stop');
    expectError(await completion({ seed: -1 }), 400, 'invalid_value', 'seed');
    expectError(await completion({ model: 7 }), 400, 'invalid_type', 'model');
    expectError(await completion({ mexit: { exit_layr: 2 } }), 400, 'unknown_parameter', 'mexit.exit_layr');
    expectError(await completion({ mexit: JSON.parse('{"__proto__": {"mode": "ar"}}') }), 400, 'unknown_parameter', 'mexit.__proto__');
    expectError(await completion({ mexit: { constructor: 1 } }), 400, 'unknown_parameter', 'mexit.constructor');
    expectError(await completion({ mexit: { mode: 'fast' } }), 400, 'INVALID_OPTION', 'mexit.mode');
    expectError(await completion({ prompt: '' }), 400, 'EMPTY_PROMPT', 'prompt');
    const chat = (messages: unknown) => post('/v1/chat/completions', JSON.stringify({ model: 'tiny', messages, max_tokens: 2 }));
    expectError(await chat([]), 400, 'invalid_type', 'messages');
    expectError(await chat([{ role: 'wizard', content: 'x' }]), 400, 'invalid_value', 'messages[0].role');
    expectError(await chat([{ role: 'user', content: 5 }]), 400, 'invalid_type', 'messages[0].content');
  });

  it('negative, zero, fractional and huge max_tokens; prompts beyond the context', async () => {
    for (const max_tokens of [-1, 0, 1.5, 1e300]) {
      const r = await completion({ max_tokens });
      expect(r.status).toBe(400);
      expect(r.json().error.param).toBe('max_tokens');
    }
    expectError(await completion({ max_tokens: 100_000 }), 400, 'context_length_exceeded', 'max_tokens');
    // A client's value is echoed bounded, not whole.
    const long = await completion({ max_tokens: 'x'.repeat(3000) });
    expect(long.status).toBe(400);
    expect(long.text.length).toBeLessThan(1000);
    const context = generator.info.maxPositions;
    expectError(await completion({ prompt: new Array(context).fill(50), max_tokens: undefined }), 400, 'context_length_exceeded', 'prompt');
    // Absent max_tokens is capped by the context left: a prompt one short of the context gets exactly one token.
    const r = await completion({ prompt: new Array(context - 1).fill(50), max_tokens: undefined });
    expect(r.status).toBe(200);
    expect(r.json().usage.completion_tokens).toBeLessThanOrEqual(1);
  });

  it('invalid UTF-8 → 400; a body over the limit → 413', async () => {
    const bytes = Buffer.concat([Buffer.from('{"model":"tiny","prompt":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('","max_tokens":2}')]);
    expectError(await post('/v1/completions', bytes), 400, 'invalid_encoding');
    expectError(await completion({ prompt: 'x'.repeat(10_000) }), 413, 'request_too_large');
    // Without a Content-Length (chunked), the limit holds as the bytes arrive.
    const chunked = await raw(
      'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Authorization: Bearer ${KEY}\r\nTransfer-Encoding: chunked\r\n\r\n` +
        `1388\r\n${'y'.repeat(5000)}\r\n0\r\n\r\n`,
    );
    expect(chunked).toMatch(/^HTTP\/1\.1 413/);
  });
});

describe('slow and silent clients', () => {
  it('a Content-Length with no body → 408 after the body timeout', async () => {
    const response = await raw(
      'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Authorization: Bearer ${KEY}\r\nContent-Length: 120\r\n\r\n{"model":`,
    );
    expect(response).toMatch(/^HTTP\/1\.1 408/);
    expect(response).toMatch(/"code":"body_timeout"/);
  });

  it('a slow-loris client dribbling headers is cut off while another request is served', async () => {
    const socket: Socket = connect(server.port, '127.0.0.1');
    let closed = false;
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    socket.on('close', () => (closed = true));
    socket.on('error', () => {});
    socket.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n');
    const dribble = setInterval(() => {
      if (!closed) socket.write('X-Slow: a\r\n');
    }, 20);
    try {
      const r = await completion({});
      expect(r.status).toBe(200);
      expect(r.json().usage.completion_tokens).toBe(4);
      await until(() => closed); // node's headersTimeout ends the dribbler
      expect(received === '' || received.startsWith('HTTP/1.1 408')).toBe(true);
    } finally {
      clearInterval(dribble);
      socket.destroy();
    }
  });
});

describe('routes, methods, content types, the API key', () => {
  it('404 unknown route, 405 wrong method (with Allow), 415 non-JSON (charset tolerated)', async () => {
    expectError(await post('/v1/embeddings', '{}'), 404, 'unknown_route');
    const get = await fetch(`${server.url}/v1/completions`, { headers: auth });
    expectError({ status: get.status, text: await get.text() }, 405, 'method_not_allowed');
    expect(get.headers.get('allow')).toBe('POST');
    expectError(await post('/v1/completions', 'prompt=x', { ...auth, 'Content-Type': 'text/plain' }), 415, 'unsupported_media_type');
    const charset = await post('/v1/completions', JSON.stringify({ model: 'tiny', prompt: 'Hi', max_tokens: 1 }), {
      ...auth,
      'Content-Type': 'Application/JSON; charset=utf-8',
    });
    expect(charset.status).toBe(200);
  });

  it('the key guards /v1/* and /metrics; /health and /ready are open', async () => {
    const noKey = { 'Content-Type': 'application/json' };
    const body = JSON.stringify({ model: 'tiny', prompt: 'Hi', max_tokens: 1 });
    expectError(await post('/v1/completions', body, noKey), 401, 'invalid_api_key');
    expectError(await post('/v1/completions', body, { ...noKey, Authorization: 'Bearer sk-wrong' }), 401);
    expectError(await post('/v1/completions', body, { ...noKey, Authorization: `Bearer ${KEY}x` }), 401);
    expect((await fetch(`${server.url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const ready = await fetch(`${server.url}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', model: 'tiny' });
  });

  it('/metrics: Prometheus text with requests by route and status, tokens, queue and latency histograms', async () => {
    await completion({});
    const r = await fetch(`${server.url}/metrics`, { headers: auth });
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await r.text();
    expect(text).toMatch(/mexit_http_requests_total\{route="\/v1\/completions",status="200"\} \d+/);
    expect(text).toMatch(/mexit_http_requests_total\{route="\/v1\/completions",status="401"\} 3/);
    expect(text).toMatch(/mexit_tokens_generated_total \d+/);
    expect(text).toMatch(/mexit_queue_depth 0/);
    expect(text).toMatch(/mexit_generations_in_flight 0/);
    expect(text).toMatch(/mexit_draft_acceptance_rate 0\.\d+|mexit_draft_acceptance_rate [01]/);
    expect(text).toMatch(/mexit_time_to_first_token_seconds_count \d+/);
    expect(text).toMatch(/mexit_inter_token_latency_seconds_bucket/);
  });
});

describe('timeouts', () => {
  it('a generation past requestTimeoutMs is aborted: 504, and the slot is freed', async () => {
    const held = new HeldGenerator(generator, 1);
    const local = await startServer({ generator: held, modelId: 'tiny', port: 0, requestTimeoutMs: 100, log: () => {} });
    try {
      const r = await fetch(`${local.url}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'tiny', prompt: 'Hi', max_tokens: 8 }),
      });
      expectError({ status: r.status, text: await r.text() }, 504, 'request_timeout');
      await until(() => local.stats().inFlight === 0);
      expect(local.stats().generations.timeout).toBe(1);
    } finally {
      await local.close(0);
    }
  });
});
