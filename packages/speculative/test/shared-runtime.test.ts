/**
 * Shared use of one ModelRuntime: several generators on one runtime, several generations on one generator and
 * raw concurrent Stage.run calls on one stage must give exactly the results of the same calls run one after
 * another. A stage keeps reusable feeds and id buffers, and onnxruntime-node reads the feeds only on the next
 * turn of the event loop, so unserialised calls would run on each other's inputs and caches. A KvCache shaped
 * for another model, or too small for the call, is refused with a CacheError before any model work.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheError, KvCache } from '@mexit/core';
import { ModelRuntime, type Stage } from '@mexit/model';
import { MexitGenerator, type GenerateOptions } from '@mexit/speculative';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));

/** Mixed modes on the bundled model (L = 12, recorded E = 3, d = 7, int8 drafts). */
const CALLS: { prompt: string; options: GenerateOptions }[] = [
  { prompt: 'Once upon a time', options: { mode: 'ar', maxNewTokens: 24 } },
  { prompt: 'The little dog', options: { mode: 'self-spec', maxNewTokens: 24, draftQuantization: 'none', exitLayer: 4 } },
  { prompt: 'Lily went to the park', options: { mode: 'self-spec', maxNewTokens: 24, draftQuantization: 'int8' } },
  { prompt: 'Tom had a red ball', options: { mode: 'early-exit', exitLayer: 6, maxNewTokens: 24 } },
  { prompt: 'One day, a cat', options: { mode: 'self-spec', drafter: 'prompt-lookup', maxNewTokens: 24 } },
  { prompt: 'The sun was hot', options: { mode: 'self-spec', doSample: true, seed: 7, temperature: 0.9, maxNewTokens: 24 } },
  { prompt: 'A bird sang', options: { mode: 'ar', doSample: true, seed: 3, topK: 20, maxNewTokens: 24 } },
  {
    prompt: 'Once upon a time',
    options: { mode: 'self-spec', maxNewTokens: 24, draftQuantization: 'none', exitLayer: 3, numSpeculations: 2, bonusToken: false },
  },
  { prompt: 'The big tree', options: { mode: 'acd', contrastLayers: ['original', 6], maxNewTokens: 16 } },
  // The CALM runs use 9 and 11 stages: with the others' that is past the default maxStages (16), so stages
  // are evicted and rebuilt between calls, and held past the bound while concurrent calls run.
  { prompt: 'Ben and Mia', options: { mode: 'calm', calmThreshold: 0.4, calmExitInterval: 3, maxNewTokens: 16 } },
  { prompt: 'Ben and Mia', options: { mode: 'calm', calmThreshold: 0.6, calmMinExitLayer: 2, calmExitInterval: 2, maxNewTokens: 16 } },
];

/** Fails the test instead of hanging when a call deadlocks. */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('generators sharing one runtime of the bundled model', () => {
  let runtime: ModelRuntime;
  let reference: number[][];
  beforeAll(async () => {
    runtime = await ModelRuntime.load(fixture('models/tinystories-ee'), { threads: 1 });
    const solo = new MexitGenerator(runtime);
    reference = [];
    for (const c of CALLS) reference.push((await solo.generate(c.prompt, c.options)).ids);
  });
  afterAll(async () => {
    await runtime?.dispose();
  });

  it('four generators running mixed modes concurrently give the sequential ids', async () => {
    const gens = Array.from({ length: 4 }, () => new MexitGenerator(runtime));
    for (let round = 0; round < 2; round++) {
      // Round 1 shifts the assignment so every generator serves every mode family.
      const ids = await within(
        60_000,
        Promise.all(CALLS.map((c, i) => gens[(i + round) % gens.length].generate(c.prompt, c.options).then((r) => r.ids))),
      );
      expect(ids).toEqual(reference);
    }
  });

  it('concurrent generations on one generator (generate and stream together) give the sequential ids', async () => {
    const gen = new MexitGenerator(runtime);
    const viaEvents = async (i: number) => {
      const ids: number[] = [];
      for await (const e of gen.events(CALLS[i].prompt, CALLS[i].options)) ids.push(e.token);
      return ids;
    };
    const ids = await within(
      60_000,
      Promise.all(CALLS.map((c, i) => (i % 2 ? viaEvents(i) : gen.generate(c.prompt, c.options).then((r) => r.ids)))),
    );
    expect(ids).toEqual(reference);
  });
});

describe('generators sharing one runtime of a golden model (gpt2-tiny)', () => {
  const golden = JSON.parse(readFileSync(fixture('goldens/gpt2-tiny/goldens.json'), 'utf8')) as {
    prompts: Record<string, number[]>;
    greedy: Record<string, number[]>;
  };
  let runtime: ModelRuntime;
  beforeAll(async () => {
    runtime = await ModelRuntime.load(fixture('goldens/gpt2-tiny'), { threads: 1 });
  });
  afterAll(async () => {
    await runtime?.dispose();
  });

  it("ar and self-spec on three generators at once reproduce HF transformers' greedy ids", async () => {
    const gens = Array.from({ length: 3 }, () => new MexitGenerator(runtime));
    const keys = Object.keys(golden.prompts);
    const settings: GenerateOptions[] = [
      { mode: 'ar' },
      { mode: 'self-spec', exitLayer: 1, numSpeculations: 3 },
      { mode: 'self-spec', exitLayer: 2, numSpeculations: 5 },
      { mode: 'self-spec', drafter: 'prompt-lookup' },
    ];
    const jobs: Promise<void>[] = [];
    settings.forEach((options, s) => {
      keys.forEach((k, j) => {
        const want = golden.greedy[k];
        const gen = gens[(s + j) % gens.length];
        jobs.push(
          gen.generate(golden.prompts[k], { ...options, maxNewTokens: want.length }).then((r) => {
            expect(r.ids, `${JSON.stringify(options)} prompt ${k}`).toEqual(want);
          }),
        );
      });
    });
    await within(60_000, Promise.all(jobs));
  });
});

describe('raw Stage.run on one stage', () => {
  let runtime: ModelRuntime;
  let stage: Stage;
  beforeAll(async () => {
    runtime = await ModelRuntime.load(fixture('models/tinystories-ee'), { threads: 1 });
    stage = await runtime.stage({ from: 0, to: runtime.numLayers, exits: [{ layer: runtime.numLayers }] });
  });
  afterAll(async () => {
    await runtime?.dispose();
  });

  /** Prefill `prompt`, then `steps` greedy one-token calls; every call's logits, in order. */
  async function lane(prompt: number[], steps: number, cache = runtime.createCache()): Promise<Float32Array[]> {
    const all: Float32Array[] = [];
    let input = prompt;
    for (let t = 0; t <= steps; t++) {
      const out = await stage.run(cache, input, input.length - 1);
      all.push(out.logits[0]);
      let best = 0;
      for (let x = 1; x < out.logits[0].length; x++) if (out.logits[0][x] > out.logits[0][best]) best = x;
      input = [best];
    }
    return all;
  }

  it('concurrent lanes with their own caches equal the same lanes run one after another (random prompts)', async () => {
    const V = runtime.config.vocabSize;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.integer({ min: 0, max: V - 1 }), { minLength: 1, maxLength: 12 }), { minLength: 2, maxLength: 4 }),
        fc.integer({ min: 1, max: 4 }),
        async (prompts, steps) => {
          const sequential: Float32Array[][] = [];
          for (const p of prompts) sequential.push(await lane(p, steps));
          const concurrent = await within(20_000, Promise.all(prompts.map((p) => lane(p, steps))));
          expect(concurrent).toEqual(sequential);
        },
      ),
      { seed: 1, numRuns: 12 },
    );
  });

  it('calls on one cache issued together run in call order, as if awaited one by one', async () => {
    const ids = [5, 17, 300, 42, 9];
    const sequentialCache = runtime.createCache();
    const sequential: Float32Array[] = [];
    for (const id of ids) sequential.push((await stage.run(sequentialCache, [id])).logits[0]);
    const cache = runtime.createCache();
    const concurrent = await within(20_000, Promise.all(ids.map((id) => stage.run(cache, [id]).then((r) => r.logits[0]))));
    expect(concurrent).toEqual(sequential);
    expect(cache.length(0)).toBe(ids.length);
  });

  it('a cache changed under a running call (another runtime, a truncate) is refused, never appended out of place', async () => {
    const other = await ModelRuntime.load(fixture('models/tinystories-ee'), { threads: 1 });
    try {
      const L = runtime.numLayers;
      const otherStage = await other.stage({ from: 0, to: L, exits: [{ layer: L }] });
      const alone = (await stage.run(runtime.createCache(), [7, 8, 9])).logits[0];
      const cache = runtime.createCache();
      const outcomes = await Promise.allSettled([stage.run(cache, [7, 8, 9]), otherStage.run(cache, [7, 8, 9])]);
      const fulfilled = outcomes.filter((o) => o.status === 'fulfilled');
      for (const o of outcomes) {
        if (o.status === 'rejected') {
          expect(o.reason).toBeInstanceOf(CacheError);
          expect((o.reason as CacheError).code).toBe('KV_CONCURRENT_USE');
        }
      }
      expect(fulfilled.length).toBeGreaterThanOrEqual(1);
      expect(fulfilled[0].value.logits[0]).toEqual(alone);
      for (let l = 0; l < L; l++) expect(cache.length(l)).toBe(3 * fulfilled.length);
      // A truncate while the call runs.
      const cut = runtime.createCache();
      await stage.run(cut, [1, 2, 3, 4]);
      const running = stage.run(cut, [5]);
      cut.truncate(2);
      const error = await running.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CacheError);
      expect((error as CacheError).code).toBe('KV_CONCURRENT_USE');
      expect(cut.length(0)).toBe(2);
      expect(cut.length(L - 1)).toBe(2);
    } finally {
      await other.dispose();
    }
  });

  it('refuses a cache made for another model or too small for the call, before running', async () => {
    const { numLayers, numKvHeads, headDim } = runtime.config;
    const base = { numLayers, kvHeads: numKvHeads, headDim, initialCapacity: 8, maxCapacity: 64 };
    const callsBefore = stage.calls;
    const cases: [Partial<typeof base>, RegExp][] = [
      [{ numLayers: numLayers - 1 }, /numLayers/],
      [{ numLayers: numLayers + 3 }, /numLayers/],
      [{ kvHeads: numKvHeads * 2 }, /kvHeads/],
      [{ headDim: headDim / 2 }, /headDim/],
    ];
    for (const [change, names] of cases) {
      const error = await stage.run(new KvCache({ ...base, ...change }), [1, 2, 3]).catch((e: unknown) => e);
      expect(error, JSON.stringify(change)).toBeInstanceOf(CacheError);
      expect((error as CacheError).code).toBe('KV_MODEL_MISMATCH');
      expect((error as CacheError).message).toMatch(names);
    }
    // Capacity: 3 rows fit in 4, the next 2 do not; the cache is left as it was.
    const small = new KvCache({ ...base, initialCapacity: 2, maxCapacity: 4 });
    await stage.run(small, [1, 2, 3]);
    const error = await stage.run(small, [4, 5]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CacheError);
    expect((error as CacheError).code).toBe('KV_CAPACITY');
    expect((error as CacheError).message).toMatch(/maxCapacity 4/);
    expect(small.length(0)).toBe(3);
    expect(small.length(numLayers - 1)).toBe(3);
    // Not a cache at all.
    for (const bogus of [null, {}, { numLayers, kvHeads: numKvHeads, headDim }]) {
      const e = await stage.run(bogus as unknown as KvCache, [1]).catch((x: unknown) => x);
      expect(e, JSON.stringify(bogus)).toBeInstanceOf(CacheError);
      expect((e as CacheError).code).toBe('KV_MODEL_MISMATCH');
    }
    expect(stage.calls).toBe(callsBefore + 1);
    // A chain stage checks its rows (2 ids + 3 fed drafts) against the capacity too.
    const chain = await runtime.stage({ from: 0, to: 3, exits: [{ layer: 3 }], chain: 4 });
    const chainError = await chain.runChain(new KvCache({ ...base, initialCapacity: 2, maxCapacity: 4 }), [1, 2]).catch((e: unknown) => e);
    expect(chainError).toBeInstanceOf(CacheError);
    expect((chainError as CacheError).code).toBe('KV_CAPACITY');
  });
});
