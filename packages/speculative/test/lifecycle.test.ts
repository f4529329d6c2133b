/**
 * Lifecycle of generators and runtimes: an aborted call that would wait behind another generation rejects at
 * once; an abandoned or interleaved stream blocks nothing; dispose() ends running generations and later calls
 * with MexitError 'DISPOSED'; the stage cache is an LRU bounded by RuntimeOptions.maxStages whose evicted
 * stages are rebuilt on request with the same logits, and is never allowed to evict a stage in use.
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, ConfigError, MexitError } from '@mexit/core';
import { ModelRuntime, type StageSpec } from '@mexit/model';
import { MexitGenerator, type GenerateOptions, type GenerationEvent } from '@mexit/speculative';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));
const TINYSTORIES = fixture('models/tinystories-ee');

/** Fails the test instead of hanging. */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The rejection of `promise` (fails if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

function expectCode(error: unknown, code: string): void {
  expect(error).toBeInstanceOf(MexitError);
  expect((error as MexitError).code, String(error)).toBe(code);
}

/** Lets released sessions finish releasing (their bookkeeping settles within a few event-loop turns). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

async function tokensOf(events: AsyncIterable<GenerationEvent>): Promise<number[]> {
  const ids: number[] = [];
  for await (const e of events) ids.push(e.token);
  return ids;
}

describe('queued, abandoned and interleaved generations on one generator', () => {
  let runtime: ModelRuntime;
  let gen: MexitGenerator;
  const LONG: GenerateOptions = { mode: 'ar', maxNewTokens: 300, eosTokenIds: [] };
  const SPEC: GenerateOptions = { mode: 'self-spec', maxNewTokens: 40, draftQuantization: 'none', exitLayer: 3 };
  let longRef: number[];
  let specRef: number[];
  let arRef: number[];
  beforeAll(async () => {
    runtime = await ModelRuntime.load(TINYSTORIES, { threads: 1 });
    gen = new MexitGenerator(runtime);
    longRef = (await gen.generate('Once upon a time', LONG)).ids;
    specRef = (await gen.generate('The little dog', SPEC)).ids;
    arRef = (await gen.generate('Lily went to the park', { mode: 'ar', maxNewTokens: 30 })).ids;
  });
  afterAll(async () => {
    await runtime?.dispose();
  });

  it('aborting a call issued while another generation runs rejects it at once; the running one is unaffected', async () => {
    const running = gen.events('Once upon a time', LONG);
    const first = await running.next();
    expect(first.done).toBe(false);
    let runningDone = false;
    const rest = tokensOf({ [Symbol.asyncIterator]: () => running }).then((ids) => {
      runningDone = true;
      return ids;
    });
    const controller = new AbortController();
    const queued = gen.generate('The little dog', { ...SPEC, signal: controller.signal });
    setTimeout(() => controller.abort(), 2);
    expect(await within(5_000, rejection(queued))).toBeInstanceOf(AbortError);
    // An already-aborted signal rejects before any model work, also while the other generation runs.
    expect(await rejection(gen.generate('The little dog', { ...SPEC, signal: AbortSignal.abort() }))).toBeInstanceOf(AbortError);
    expect(runningDone).toBe(false);
    const ids = [(first.value as GenerationEvent).token, ...(await within(30_000, rest))];
    expect(ids).toEqual(longRef);
  });

  it('an abandoned stream and an abandoned events iterator do not block the next generate()', async () => {
    const stream = gen.stream('Once upon a time', LONG);
    expect((await stream.next()).done).toBe(false);
    const events = gen.events('The little dog', SPEC);
    expect((await events.next()).done).toBe(false);
    // Neither is finished nor return()ed.
    expect((await within(10_000, gen.generate('The little dog', SPEC))).ids).toEqual(specRef);
    expect((await within(10_000, gen.generate('Lily went to the park', { mode: 'ar', maxNewTokens: 30 }))).ids).toEqual(arRef);
  });

  it('two streams consumed alternately, token by token, both give their sequential outputs', async () => {
    const a = gen.events('The little dog', SPEC);
    const b = gen.events('Lily went to the park', { mode: 'ar', maxNewTokens: 30 });
    const idsA: number[] = [];
    const idsB: number[] = [];
    let doneA = false;
    let doneB = false;
    await within(
      20_000,
      (async () => {
        while (!doneA || !doneB) {
          if (!doneA) {
            const r = await a.next();
            if (r.done) doneA = true;
            else idsA.push(r.value.token);
          }
          if (!doneB) {
            const r = await b.next();
            if (r.done) doneB = true;
            else idsB.push(r.value.token);
          }
        }
      })(),
    );
    expect(idsA).toEqual(specRef);
    expect(idsB).toEqual(arRef);
  });

  it('an abort during a first-use stage build rejects at once, and the build then releases its hold', async () => {
    const rt = await ModelRuntime.load(TINYSTORIES, { threads: 1, maxStages: 1 });
    try {
      const g = new MexitGenerator(rt);
      const controller = new AbortController();
      const call = g.generate('The little dog', { ...SPEC, draftQuantization: 'int8', signal: controller.signal });
      controller.abort();
      expect(await within(1_000, rejection(call))).toBeInstanceOf(AbortError);
      // The builds go on; once done, the abandoned generation's stages are released down to the bound.
      await within(30_000, rt.builtStages());
      await settle();
      expect(rt.liveStages).toBeLessThanOrEqual(1);
    } finally {
      await rt.dispose();
    }
  });
});

describe('an abandoned iterator that is garbage-collected releases its stages', () => {
  it('stages held by a dropped stream become evictable after collection', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const rt = await ModelRuntime.load(TINYSTORIES, { threads: 1, maxStages: 1 });
    try {
      const g = new MexitGenerator(rt);
      await (async () => {
        const stream = g.stream('The little dog', { mode: 'self-spec', maxNewTokens: 40, draftQuantization: 'none', exitLayer: 3 });
        await stream.next();
      })();
      // Held: the draft, chain and verify stages stay although maxStages is 1.
      expect(rt.liveStages).toBeGreaterThan(1);
      for (let i = 0; i < 50 && rt.liveStages > 1; i++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(rt.liveStages).toBe(1);
    } finally {
      await rt.dispose();
    }
  });
});

describe('dispose()', () => {
  it('ends a generation between tokens with MexitError DISPOSED; later calls reject with it too', async () => {
    const gen = await MexitGenerator.fromPretrained(TINYSTORIES, { threads: 1 });
    const stage = await gen.runtime.stage({ from: 0, to: 2, exits: [{ layer: 2 }] });
    const events = gen.events('Once upon a time', { mode: 'self-spec', maxNewTokens: 100 });
    expect((await events.next()).done).toBe(false);
    await gen.dispose();
    expectCode(await rejection(tokensOf({ [Symbol.asyncIterator]: () => events })), 'DISPOSED');
    expectCode(await rejection(gen.generate('Once upon a time', { maxNewTokens: 4 })), 'DISPOSED');
    expectCode(await rejection(gen.stream('Once upon a time').next()), 'DISPOSED');
    expectCode(await rejection(stage.run(gen.runtime.createCache(), [1, 2])), 'DISPOSED');
    let thrown: unknown;
    try {
      gen.runtime.stage({ from: 0, to: 2 });
    } catch (error) {
      thrown = error;
    }
    expectCode(thrown, 'DISPOSED');
    await gen.dispose(); // idempotent
  });

  it('while stage calls are in flight or a build is running, generations end with DISPOSED, never an ORT error', async () => {
    for (const mode of ['ar', 'self-spec', 'calm'] as const) {
      for (const delay of [0, 1, 5, 20]) {
        const gen = await MexitGenerator.fromPretrained(TINYSTORIES, { threads: 1 });
        if (delay > 0) await gen.generate('Once', { mode, maxNewTokens: 2 }); // sessions built: dispose lands mid-run
        const errors = Promise.all(
          [
            gen.generate('Once upon a time', { mode, maxNewTokens: 200, eosTokenIds: [] }),
            tokensOf(gen.events('The little dog', { mode, maxNewTokens: 200, eosTokenIds: [] })),
          ].map(rejection),
        );
        await new Promise((resolve) => setTimeout(resolve, delay));
        const disposing = gen.dispose();
        for (const error of await within(10_000, errors)) expectCode(error, 'DISPOSED');
        await disposing;
      }
    }
  });
});

describe('the stage cache is an LRU bounded by maxStages', () => {
  const LLAMA = fixture('goldens/llama2-tiny');
  const golden = JSON.parse(readFileSync(`${LLAMA}/goldens.json`, 'utf8')) as {
    prompts: Record<string, number[]>;
    greedy: Record<string, number[]>;
  };

  it('rejects a maxStages that is not a positive integer with ConfigError RUNTIME_OPTIONS', async () => {
    for (const maxStages of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '4' as unknown as number]) {
      for (const load of [() => ModelRuntime.load(LLAMA, { maxStages }), () => MexitGenerator.fromPretrained(LLAMA, { maxStages })]) {
        const error = await rejection(load());
        expect(error, String(maxStages)).toBeInstanceOf(ConfigError);
        expect((error as ConfigError).code).toBe('RUNTIME_OPTIONS');
        expect((error as ConfigError).message).toMatch(/maxStages/);
      }
    }
  });

  it('keeps at most maxStages sessions; an evicted stage refuses calls and is rebuilt on request with the same logits', async () => {
    const rt = await ModelRuntime.load(LLAMA, { threads: 1, maxStages: 3 });
    try {
      expect(rt.options.maxStages).toBe(3);
      const L = rt.numLayers;
      const prompt = golden.prompts['0'];
      const logitsOf = async (spec: StageSpec) => (await (await rt.stage(spec)).run(rt.createCache(), prompt)).logits[0];
      const first: StageSpec = { from: 0, to: L, exits: [{ layer: L }] };
      const firstStage = await rt.stage(first);
      const reference = await logitsOf(first);
      const specs: StageSpec[] = [];
      for (let l = 1; l <= L; l++)
        specs.push({ from: 0, to: l, exits: [{ layer: l }] }, { from: 0, to: l, exits: [{ layer: l }], quantize: 'int8' });
      const seen = new Map<string, Float32Array>();
      for (const spec of specs) {
        const logits = await logitsOf(spec);
        seen.set(JSON.stringify(spec), logits);
        await settle();
        expect(rt.liveStages).toBeLessThanOrEqual(3);
      }
      expect(firstStage.released).toBe(true);
      expectCode(await rejection(firstStage.run(rt.createCache(), prompt)), 'STAGE_EVICTED');
      const rebuilt = await rt.stage(first);
      expect(rebuilt).not.toBe(firstStage);
      expect(await logitsOf(first)).toEqual(reference);
      // Every evicted setting gives the same logits when requested again.
      for (const spec of specs) expect(await logitsOf(spec), JSON.stringify(spec)).toEqual(seen.get(JSON.stringify(spec)));
      await settle();
      expect(rt.liveStages).toBeLessThanOrEqual(3);
    } finally {
      await rt.dispose();
    }
  });

  it('a stage evicted while a call runs on it finishes that call exactly, then releases its session', async () => {
    const rt = await ModelRuntime.load(LLAMA, { threads: 1, maxStages: 1 });
    try {
      const L = rt.numLayers;
      const spec: StageSpec = { from: 0, to: L, exits: [{ layer: L }] };
      const prompt = golden.prompts['1'];
      const stage = await rt.stage(spec);
      const reference = (await stage.run(rt.createCache(), prompt)).logits[0];
      const running = stage.run(rt.createCache(), prompt);
      const other = rt.stage({ from: 0, to: 1, exits: [{ layer: 1 }] }); // evicts `stage` while its call is in flight
      await Promise.resolve(); // eviction releases a built stage one microtask later, long before ORT runs the call
      expect(stage.released).toBe(true);
      expect((await running).logits[0]).toEqual(reference);
      await other;
      await settle();
      expect(rt.liveStages).toBe(1);
    } finally {
      await rt.dispose();
    }
  });

  it("many settings on one generator with maxStages 2: memory stays bounded, ids equal HF transformers' greedy", async () => {
    const gen = await MexitGenerator.fromPretrained(LLAMA, { threads: 1, maxStages: 2 });
    try {
      const settings: GenerateOptions[] = [];
      for (const exitLayer of [1, 2, 3]) {
        for (const numSpeculations of [2, 5]) {
          for (const draftQuantization of ['none', 'int8'] as const)
            settings.push({ mode: 'self-spec', exitLayer, numSpeculations, draftQuantization });
        }
      }
      settings.push({ mode: 'ar' }, { mode: 'self-spec', drafter: 'prompt-lookup' });
      for (const options of settings) {
        for (const k of Object.keys(golden.prompts)) {
          const want = golden.greedy[k];
          const { ids } = await gen.generate(golden.prompts[k], { ...options, maxNewTokens: want.length });
          expect(ids, `${JSON.stringify(options)} prompt ${k}`).toEqual(want);
        }
        await settle();
        expect(gen.runtime.liveStages, JSON.stringify(options)).toBeLessThanOrEqual(2);
      }
      // Two generations holding three stages each run at once on the 2-stage runtime: held stages stay.
      const [a, b] = await within(
        20_000,
        Promise.all([
          gen.generate(golden.prompts['0'], {
            mode: 'self-spec',
            exitLayer: 1,
            numSpeculations: 3,
            maxNewTokens: golden.greedy['0'].length,
          }),
          gen.generate(golden.prompts['2'], {
            mode: 'self-spec',
            exitLayer: 3,
            numSpeculations: 4,
            maxNewTokens: golden.greedy['2'].length,
          }),
        ]),
      );
      expect(a.ids).toEqual(golden.greedy['0']);
      expect(b.ids).toEqual(golden.greedy['2']);
      await settle();
      expect(gen.runtime.liveStages).toBeLessThanOrEqual(2);
    } finally {
      await gen.dispose();
    }
  });
});
