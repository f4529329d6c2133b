/**
 * Admission and shutdown over the worker-backed generator (loadGenerator's default): a full queue answers
 * 429 with Retry-After; close() refuses queued and new requests, lets the one in flight finish, and leaves
 * the generator usable (the caller owns it); past the grace period an in-flight generation is aborted.
 */
import { fileURLToPath } from 'node:url';
import { loadGenerator, type TextGenerator } from '@mexit/speculative';
import { startServer } from '@mexit/server';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HeldGenerator, until } from './support/gate.js';

const MODEL = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));
const PROMPT = 'Once upon a time';

let generator: TextGenerator;

beforeAll(async () => {
  generator = await loadGenerator(MODEL);
});

afterAll(async () => {
  await generator?.dispose();
});

const sdk = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });

it('queue full → 429 with Retry-After; close(): queued → 503, new refused, in-flight completes', async () => {
  const held = new HeldGenerator(generator, 1);
  const server = await startServer({ generator: held, modelId: 'tiny', port: 0, maxConcurrent: 1, queueDepth: 1, log: () => {} });
  const client = sdk(server.url);
  const ask = () => client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 10, temperature: 0 });

  const inFlight = ask();
  await held.untilHeld(1);
  const queued = ask().catch((e) => e);
  await until(() => server.stats().queued === 1);
  const full = await ask().catch((e) => e);
  expect(full).toBeInstanceOf(OpenAI.RateLimitError);
  expect(full.code).toBe('queue_full');
  expect(full.headers.get('retry-after')).toBe('1');

  const closing = server.close(60_000);
  expect(server.stats().ready).toBe(false);
  const refused = await queued;
  expect(refused).toBeInstanceOf(OpenAI.APIError);
  expect(refused.status).toBe(503);
  expect(refused.code).toBe('shutting_down');
  // A new request: refused at the door (the listener is closed) or answered 503.
  const late = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'tiny', prompt: PROMPT, max_tokens: 2 }),
  }).then(
    (r) => r.status,
    () => 'refused',
  );
  expect([503, 'refused']).toContain(late);

  held.open();
  const done = await inFlight;
  const expected = await generator.generate(await generator.tokenize(PROMPT), { maxNewTokens: 10 });
  expect(done.choices[0].text).toBe(expected.text);
  expect(done.usage?.completion_tokens).toBe(expected.ids.length);
  await closing;
  expect(server.stats().generations).toMatchObject({ completed: 1, shutdown: 0 });
  // The generator is the caller's: still usable after the server closed.
  expect((await generator.generate([1, 2, 3], { maxNewTokens: 2 })).ids).toHaveLength(2);
});

it('a queued client that disconnects leaves the queue; its place goes to the next', async () => {
  const held = new HeldGenerator(generator, 1);
  const server = await startServer({ generator: held, modelId: 'tiny', port: 0, maxConcurrent: 1, queueDepth: 1, log: () => {} });
  try {
    const client = sdk(server.url);
    const ask = (signal?: AbortSignal) =>
      client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 4, temperature: 0 }, { signal });
    const running = ask();
    await held.untilHeld(1);
    const controller = new AbortController();
    const gone = ask(controller.signal).catch((e) => e);
    await until(() => server.stats().queued === 1);
    controller.abort();
    expect(await gone).toBeInstanceOf(Error);
    await until(() => server.stats().queued === 0);
    const next = ask(); // the freed queue place takes it (a full queue would answer 429)
    await until(() => server.stats().queued === 1);
    held.open();
    expect((await running).usage?.completion_tokens).toBe(4);
    expect((await next).usage?.completion_tokens).toBe(4);
    expect(server.stats().generations.completed).toBe(2);
  } finally {
    await server.close(0);
  }
});

it('past the grace period an in-flight generation is aborted (503) and close() resolves', async () => {
  // In this thread: a worker runs ahead of its consumer, so a held worker generation may already be complete.
  const inThread = await loadGenerator(MODEL, { inProcess: true });
  const held = new HeldGenerator(inThread, 1);
  const server = await startServer({ generator: held, modelId: 'tiny', port: 0, log: () => {} });
  const client = sdk(server.url);
  const inFlight = client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 10, temperature: 0 }).catch((e) => e);
  await held.untilHeld(1);
  await server.close(50);
  const error = await inFlight;
  expect(error).toBeInstanceOf(OpenAI.APIError);
  expect(error.status).toBe(503);
  expect(server.stats()).toMatchObject({ inFlight: 0, generations: { shutdown: 1, completed: 0 } });
  await inThread.dispose();
});

it('a worker-backed stream answers exactly what the JSON request does', async () => {
  const server = await startServer({ generator, modelId: 'tiny', port: 0, log: () => {} });
  try {
    const client = sdk(server.url);
    const messages = [{ role: 'user' as const, content: 'A story about a cat.' }];
    const plain = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0 });
    const stream = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe(plain.choices[0].message.content);
    expect(plain.choices[0].message.content).toBe((await generator.generate(messages, { maxNewTokens: 12 })).text);
  } finally {
    await server.close(0);
  }
});

it('a generator still loading: /health 200, /ready and generation 503 with Retry-After, then served once loaded', async () => {
  let resolve!: (g: TextGenerator) => void;
  const loading = new Promise<TextGenerator>((r) => (resolve = r));
  const server = await startServer({ generator: loading, modelId: 'tiny', port: 0, log: () => {} });
  try {
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const ready = await fetch(`${server.url}/ready`);
    expect(ready.status).toBe(503);
    expect(ready.headers.get('retry-after')).toBe('5');
    expect(await ready.json()).toEqual({ status: 'loading' });
    expect(server.stats().ready).toBe(false);
    const early = await sdk(server.url)
      .completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 4, temperature: 0 })
      .catch((e) => e);
    expect(early).toBeInstanceOf(OpenAI.APIError);
    expect(early.status).toBe(503);
    expect(early.code).toBe('model_loading');
    expect(early.headers.get('retry-after')).toBe('5');

    resolve(generator);
    await until(() => server.stats().ready);
    expect((await fetch(`${server.url}/ready`)).status).toBe(200);
    const answer = await sdk(server.url).completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 6, temperature: 0 });
    const alone = await generator.generate(PROMPT, { maxNewTokens: 6 });
    expect(answer.choices[0].text).toBe(alone.text);
  } finally {
    await server.close(0);
  }
});

it('a load that fails: /ready and generation keep answering 503 (model_load_failed), and it is logged', async () => {
  const lines: string[] = [];
  const failing = loadGenerator('/nonexistent/model');
  const server = await startServer({ generator: failing, modelId: 'tiny', port: 0, log: (l) => lines.push(l) });
  try {
    await failing.catch(() => undefined);
    await until(() => lines.length > 0);
    expect(lines.join('\n')).toMatch(/failed to load.*model directory not found/);
    const ready = await fetch(`${server.url}/ready`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: 'load failed' });
    const r = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: PROMPT }),
    });
    expect(r.status).toBe(503);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('model_load_failed');
  } finally {
    await server.close(0);
  }
});
