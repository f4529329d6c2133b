/**
 * WorkerGenerator (and loadGenerator's default): the model in a worker thread behind the generator API.
 * Its tokens, texts, per-token sources and stop reasons equal the in-process generator's for every mode,
 * greedy and sampled; aborts, early exits from the loop, typed errors, a killed worker and dispose behave as
 * documented; the caller's event loop keeps running while the worker computes; an idle worker does not keep
 * the process alive.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MexitError } from '@mexit/core';
import {
  AbortError,
  loadGenerator,
  MexitGenerator,
  OptionsError,
  WorkerGenerator,
  type GenerateOptions,
  type GenerationEvent,
  type GenerationResult,
} from '@mexit/speculative';

const MODEL = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));
const DIST = fileURLToPath(new URL('../dist/index.js', import.meta.url));

const CALLS: { prompt: string | number[]; options: GenerateOptions }[] = [
  { prompt: 'Once upon a time', options: { mode: 'ar', maxNewTokens: 40 } },
  { prompt: 'The little dog', options: { maxNewTokens: 40 } },
  { prompt: 'Lily went to the park', options: { draftQuantization: 'none', exitLayer: 4, numSpeculations: 3, maxNewTokens: 40 } },
  { prompt: 'Tom had a red ball', options: { mode: 'early-exit', exitLayer: 6, maxNewTokens: 24 } },
  { prompt: 'One day, a cat', options: { drafter: 'prompt-lookup', maxNewTokens: 24 } },
  { prompt: 'The sun was hot', options: { doSample: true, seed: 7, temperature: 0.9, topP: 0.95, maxNewTokens: 40 } },
  { prompt: [1, 2, 3, 4], options: { mode: 'ar', doSample: true, seed: 3, topK: 20, maxNewTokens: 24 } },
  { prompt: 'The big tree', options: { mode: 'acd', contrastLayers: ['original', 6], maxNewTokens: 16 } },
  { prompt: 'Ben and Mia', options: { mode: 'calm', calmThreshold: 0.6, calmExitInterval: 3, maxNewTokens: 16 } },
  { prompt: 'Sue said', options: { stop: ['.'], maxNewTokens: 64 } },
];

let local: MexitGenerator;
let remote: WorkerGenerator;
const expected: GenerationResult[] = [];

beforeAll(async () => {
  local = await MexitGenerator.fromPretrained(MODEL);
  remote = await loadGenerator(MODEL);
  for (const call of CALLS) expected.push(await local.generate(call.prompt, call.options));
});

afterAll(async () => {
  await remote?.dispose();
  await local?.dispose();
});

/** The fields that do not depend on timing. */
function exact(r: GenerationResult) {
  const { timeMs: _t, tokensPerSecond: _s, ...stats } = r.stats;
  return { ids: r.ids, text: r.text, stats };
}

async function collect(events: AsyncGenerator<GenerationEvent>): Promise<GenerationEvent[]> {
  const out: GenerationEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

describe('WorkerGenerator', () => {
  it('is what loadGenerator returns by default, with the model info of the in-process generator', () => {
    expect(remote).toBeInstanceOf(WorkerGenerator);
    expect(remote.info).toEqual(local.info);
  });

  it('generates exactly what the in-process generator does, in every mode, greedy and sampled', async () => {
    for (const [i, call] of CALLS.entries()) {
      const got = await remote.generate(call.prompt, call.options);
      expect(exact(got), JSON.stringify(call)).toEqual(exact(expected[i]));
    }
  });

  it('streams the same events and text deltas', async () => {
    const call = CALLS[1];
    const want = await collect(local.events(call.prompt, call.options));
    expect(await collect(remote.events(call.prompt, call.options))).toEqual(want);
    const deltas: string[] = [];
    for await (const delta of remote.stream(call.prompt, call.options)) deltas.push(delta);
    expect(deltas.join('')).toBe(expected[1].text);
  });

  it('runs overlapping generations, each equal to its solo result', async () => {
    const results = await Promise.all(CALLS.map((c) => remote.generate(c.prompt, c.options)));
    expect(results.map(exact)).toEqual(expected.slice(0, results.length).map(exact));
  });

  it('keeps the caller’s event loop running while the worker computes', async () => {
    let ticks = 0;
    let tokens = 0;
    let ticksBeforeLastToken = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      let first = -1;
      for await (const _ of remote.events('Once upon a time', { mode: 'ar', maxNewTokens: 400, eosTokenIds: [] })) {
        if (first < 0) first = ticks;
        tokens++;
        ticksBeforeLastToken = ticks - first;
      }
    } finally {
      clearInterval(timer);
    }
    expect(tokens).toBe(400);
    expect(ticksBeforeLastToken).toBeGreaterThanOrEqual(10);
  });

  it('tokenizes as the in-process generator does, with the same typed errors', async () => {
    expect(await remote.tokenize('Hello world')).toEqual(local.encodePrompt('Hello world'));
    expect(await remote.tokenize([{ role: 'user', content: 'Hi' }])).toEqual(local.encodePrompt([{ role: 'user', content: 'Hi' }]));
    await expect(remote.tokenize([1, 99_999])).rejects.toMatchObject({ name: 'OptionsError', code: 'TOKEN_ID_RANGE' });
  });

  it('rejects bad options and prompts with the engine’s typed errors, and stays usable', async () => {
    const cases: [unknown, unknown, string][] = [
      ['x', { maxNewTokens: -1 }, 'INVALID_OPTION'],
      ['x', { mode: 'fast' }, 'INVALID_OPTION'],
      ['x', { exitLayer: 99 }, 'INVALID_OPTION'],
      ['x', { maxNewTokens: 600 }, 'CONTEXT_OVERFLOW'],
      ['x', { contrastFunction: () => undefined }, 'NOT_TRANSFERABLE'],
      ['x', { signal: 'no' }, 'INVALID_OPTION'],
      ['x', null, 'INVALID_OPTION'],
      [[1, 99_999], {}, 'TOKEN_ID_RANGE'],
      [[], {}, 'EMPTY_PROMPT'],
      [[{ role: 'user', content: () => 1 }], {}, 'NOT_TRANSFERABLE'],
    ];
    for (const [prompt, options, code] of cases) {
      const error = await remote.generate(prompt as string, options as GenerateOptions).catch((e: unknown) => e);
      expect(error, code).toBeInstanceOf(MexitError);
      expect((error as MexitError).code, JSON.stringify(options)).toBe(code);
    }
    const bad = await remote.generate('x', { maxNewTokens: 0 }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OptionsError);
    expect(exact(await remote.generate(CALLS[0].prompt, CALLS[0].options))).toEqual(exact(expected[0]));
  });

  it('aborts between rounds: AbortError, no events after the abort, and the next call is exact', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const run = (async () => {
      for await (const e of remote.events('Once upon a time', { mode: 'ar', maxNewTokens: 300, signal: controller.signal })) {
        seen.push(e.token);
        if (seen.length === 5) controller.abort();
      }
    })();
    await expect(run).rejects.toBeInstanceOf(AbortError);
    expect(seen).toHaveLength(5);
    const pre = new AbortController();
    pre.abort();
    await expect(remote.generate('x', { signal: pre.signal })).rejects.toMatchObject({ code: 'ABORTED' });
    expect(exact(await remote.generate(CALLS[1].prompt, CALLS[1].options))).toEqual(exact(expected[1]));
  });

  it('a loop left early stops its generation and frees the worker', async () => {
    for await (const _ of remote.events('Once upon a time', { mode: 'ar', maxNewTokens: 300 })) break;
    expect(exact(await remote.generate(CALLS[2].prompt, CALLS[2].options))).toEqual(exact(expected[2]));
  });
});

describe('a worker that dies', () => {
  it('rejects its calls in flight with WORKER_CRASHED (an uncaught exception in the worker), restarts, and the generator stays exact', async () => {
    const g = await WorkerGenerator.load(MODEL);
    try {
      const workers = (g as unknown as { workers: { crash(): void }[] }).workers;
      const running = (async () => {
        let n = 0;
        for await (const _ of g.events('Once upon a time', { mode: 'ar', maxNewTokens: 400, eosTokenIds: [] })) {
          if (++n === 3) workers[0].crash();
        }
      })();
      await expect(running).rejects.toMatchObject({ name: 'MexitError', code: 'WORKER_CRASHED' });
      expect(exact(await g.generate(CALLS[1].prompt, CALLS[1].options))).toEqual(exact(expected[1]));
      expect(exact(await g.generate(CALLS[5].prompt, CALLS[5].options))).toEqual(exact(expected[5]));
    } finally {
      await g.dispose();
    }
  });
});

describe('loading and disposing', () => {
  it('reports load failures with the typed error, and bad load options before any worker starts', async () => {
    await expect(loadGenerator('/nonexistent/model-dir')).rejects.toMatchObject({ name: 'ConfigError', code: 'MODEL_DIR_MISSING' });
    const inThread = (await MexitGenerator.fromPretrained(MODEL, { threads: -2 }).catch((e: unknown) => e)) as MexitError;
    await expect(loadGenerator(MODEL, { threads: -2 })).rejects.toMatchObject({
      name: inThread.name,
      code: inThread.code,
      message: inThread.message,
    });
    await expect(loadGenerator(MODEL, { maxNewTokens: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(loadGenerator(MODEL, { workers: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTION' });
    await expect(loadGenerator(MODEL, { inProcess: true, workers: 2 } as never)).rejects.toMatchObject({ code: 'INVALID_OPTION' });
  });

  it('forwards load progress from the worker', async () => {
    const statuses: string[] = [];
    const g = await loadGenerator(MODEL, { onProgress: (p) => statuses.push(`${p.status}:${p.file ?? p.stage ?? ''}`) });
    await g.generate('Hi', { mode: 'ar', maxNewTokens: 2 });
    await g.dispose();
    expect(statuses).toContain('done:config.json');
    expect(statuses).toContain('ready:');
    expect(statuses.some((s) => s.startsWith('done:layers'))).toBe(true);
  });

  it('spreads calls over several workers, each exact', async () => {
    const g = await loadGenerator(MODEL, { workers: 2 });
    try {
      const results = await Promise.all(CALLS.slice(0, 6).map((c) => g.generate(c.prompt, c.options)));
      expect(results.map(exact)).toEqual(expected.slice(0, results.length).map(exact));
    } finally {
      await g.dispose();
    }
  });

  it('dispose ends calls in flight and later calls with DISPOSED', async () => {
    const g = await loadGenerator(MODEL);
    const running = g.generate('Once upon a time', { mode: 'ar', maxNewTokens: 400, eosTokenIds: [] }).catch((e: unknown) => e);
    for await (const _ of g.events('Hi', { mode: 'ar', maxNewTokens: 1 })) {
      // wait until the worker has served a call
    }
    await g.dispose();
    expect(await running).toMatchObject({ code: 'DISPOSED' });
    await expect(g.generate('x')).rejects.toMatchObject({ code: 'DISPOSED' });
    await g.dispose(); // twice is fine
  });

  it('inProcess: true gives the in-thread generator', async () => {
    const g = await loadGenerator(MODEL, { inProcess: true });
    expect(g).toBeInstanceOf(MexitGenerator);
    await g.dispose();
  });

  it('an idle worker does not keep the process alive (no dispose needed for a script to exit), under any node flags', async () => {
    const want = await local.generate('Once upon a time', { maxNewTokens: 8 });
    const script = `import { loadGenerator } from ${JSON.stringify(DIST)};
      const g = await loadGenerator(${JSON.stringify(MODEL)});
      const r = await g.generate('Once upon a time', { maxNewTokens: 8 });
      console.log(JSON.stringify(r.ids));`;
    // --expose-gc: a per-process flag that a worker's explicit execArgv would refuse (the bench runs so).
    const run = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(JSON.parse(run.stdout.trim())).toEqual(want.ids);
  });
});
