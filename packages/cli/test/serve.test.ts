/**
 * `mexit serve`: flag errors in-process (exit 2, typed codes), and real processes — the listening line, a
 * request through the openai client, SIGTERM with a streamed request in flight (it completes; exit 0), and
 * the warning for a non-loopback host without an API key (then SIGINT, exit 0).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { parseServeArgs } from '../src/commands/serve.js';
import { cli } from './support/run-cli.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

describe('mexit serve flags', () => {
  it('--help lists the serving flags', async () => {
    const r = await cli(['serve', '--help']);
    expect(r.code).toBe(0);
    for (const flag of [
      '--host',
      '--port',
      '--api-key',
      '--model-id',
      '--queue-depth',
      '--parallel',
      '--request-timeout',
      '--workers',
      '--in-process',
      '--mode',
    ])
      expect(r.stdout).toContain(flag);
    expect((await cli(['--help'])).stdout).toMatch(/serve\s+serve the model over an OpenAI-compatible HTTP API/);
  });

  it('the default model id: the bundled model, a directory name, a hub id without its revision', () => {
    const id = (argv: string[]) => (parseServeArgs(argv) as Exclude<ReturnType<typeof parseServeArgs>, 'help'>).modelId;
    expect(id([])).toBe('tinystories-ee');
    expect(id(['--model', `${ROOT}fixtures/goldens/gpt2-tiny/`])).toBe('gpt2-tiny');
    expect(id(['--model', 'org/some-model@main'])).toBe('org/some-model');
    expect(id(['--model-id', 'mine'])).toBe('mine');
    const request = parseServeArgs(['--workers', '2', '--max-new-tokens', '9', '--mode', 'ar']);
    expect(request).toMatchObject({
      parallel: 2,
      workers: 2,
      queueDepth: 16,
      port: 8080,
      host: '127.0.0.1',
      options: { mode: 'ar', maxNewTokens: 9 },
    });
  });

  it('bad flags exit 2 with a typed code before any model work', async () => {
    const cases: [string[], string][] = [
      [['--port', '70000'], 'INVALID_FLAG'],
      [['--port', 'http'], 'INVALID_FLAG'],
      [['--parallel', '0'], 'INVALID_FLAG'],
      [['--queue-depth', '-1'], 'INVALID_FLAG'],
      [['--request-timeout', 'soon'], 'INVALID_FLAG'],
      [['--workers', '2', '--in-process'], 'CONTRADICTION'],
      [['--mode', 'fast'], 'INVALID_FLAG'],
      [['--prompt', 'x'], 'UNKNOWN_FLAG'],
    ];
    for (const [argv, code] of cases) {
      const r = await cli(['serve', ...argv]);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.stderr, argv.join(' ')).toMatch(new RegExp(`error \\[${code}\\]`));
      expect(r.stderr).toContain('mexit serve --help');
    }
  });
});

describe('mexit serve with a model that fails to load', () => {
  it('exits 2 with the typed error (the port it opened is closed again)', async () => {
    const r = await cli(['serve', '--model', '/nonexistent/model-dir', '--port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/error \[MODEL_DIR_MISSING\]: model directory not found: \/nonexistent\/model-dir/);
    expect(r.stderr).not.toMatch(/listening on/);
  });
});

interface Served {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exit: Promise<number | null>;
}

/** Spawns `mexit serve` and resolves at its listening line. */
function serve(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--port', '0', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, MEXIT_API_KEY: '' },
  });
  let stderr = '';
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d.toString();
      const m = /mexit serve: listening on (http:\/\/\S+) \(model (\S+)\)\n/.exec(stderr);
      if (m) resolve({ child, url: m[1], stderr: () => stderr, exit });
    });
    void exit.then((code) => reject(new Error(`mexit serve exited ${code} before listening:\n${stderr}`)));
  });
}

describe('mexit serve processes', () => {
  it('serves through a worker; SIGTERM lets the in-flight stream finish, then exits 0', async () => {
    const served = await serve(['--model-id', 'tiny', '--api-key', 'k1', '--eos-ids', '', '--max-new-tokens', '8']);
    try {
      const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'k1', maxRetries: 0 });
      const r = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', temperature: 0 });
      expect(r.usage?.completion_tokens).toBe(8); // --max-new-tokens is the default max_tokens; no EOS
      const bad = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
      expect(await bad.models.list().catch((e) => e)).toBeInstanceOf(OpenAI.AuthenticationError);

      // A long stream (EOS off: it cannot end early); SIGTERM after its first chunk.
      const stream = await client.completions.create({
        model: 'tiny',
        prompt: 'Once upon a time',
        max_tokens: 300,
        temperature: 0,
        stream: true,
      });
      let text = '';
      let finish: string | null = null;
      let signalled = false;
      for await (const chunk of stream) {
        text += chunk.choices[0].text;
        finish = chunk.choices[0].finish_reason ?? finish;
        if (!signalled) {
          signalled = true;
          served.child.kill('SIGTERM');
        }
      }
      expect(finish).toBe('length');
      expect(await served.exit).toBe(0);
      expect(served.stderr()).toMatch(/SIGTERM: finishing in-flight requests/);
      // The streamed text is the whole 300-token answer: the same as one JSON request gives.
      const again = await serve(['--model-id', 'tiny', '--eos-ids', '', '--in-process']);
      try {
        const c = new OpenAI({ baseURL: `${again.url}/v1`, apiKey: 'x', maxRetries: 0 });
        const full = await c.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 300, temperature: 0 });
        expect(full.usage?.completion_tokens).toBe(300);
        expect(text).toBe(full.choices[0].text);
        // A non-loopback-free check: no warning on 127.0.0.1 without a key.
        expect(again.stderr()).not.toMatch(/warning/);
      } finally {
        again.child.kill('SIGINT');
        expect(await again.exit).toBe(0);
      }
    } finally {
      served.child.kill('SIGKILL');
    }
  });

  it('warns when binding a non-loopback host without an API key', async () => {
    const served = await serve(['--host', '0.0.0.0', '--in-process']);
    expect(served.stderr()).toMatch(/warning: listening on 0\.0\.0\.0 without an API key/);
    expect((await fetch(`${served.url.replace('0.0.0.0', '127.0.0.1')}/health`)).status).toBe(200);
    served.child.kill('SIGINT');
    expect(await served.exit).toBe(0);
  });
});
