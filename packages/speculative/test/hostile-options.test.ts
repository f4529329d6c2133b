/**
 * Hostile generation input (issue 14, classes 2 and 8): options of the wrong type are OptionsError, not coerced
 * ('false' is truthy, '4' is not 4); misspelt keys are UNKNOWN_OPTION; sizes (numSpeculations, maxNewTokens,
 * seed, temperature) are bounded before any cache or graph is sized by them; prompts are ids or chat messages,
 * each element checked. A fast-check property throws random hostile options at generate(): it must resolve or
 * reject with a MexitError, within a time limit and without allocating absurd memory.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MexitError, OptionsError } from '@mexit/core';
import { MAX_NUM_SPECULATIONS } from '@mexit/model';
import { MexitGenerator, resolveOptions, type GenerateOptions, type Prompt } from '@mexit/speculative';
import { modelWork } from './support/model-work.js';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));
const GPT2_TINY = fixture('goldens/gpt2-tiny'); // L = 4, vocab 512, 128 positions
const PROMPT = [10, 20, 30];

/** `promise`, or a rejection naming `what` after `ms` (a hang fails the test instead of stalling it). */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The OptionsError generate() rejects with (fails when it resolves or throws anything else). */
async function optionsError(gen: MexitGenerator, prompt: Prompt, options: GenerateOptions): Promise<OptionsError> {
  const outcome = await within(10_000, JSON.stringify(options), gen.generate(prompt, options)).then(
    (r) => new Error(`expected a rejection, got ids ${JSON.stringify(r.ids)}`),
    (e: unknown) => e,
  );
  expect(outcome, JSON.stringify(options)).toBeInstanceOf(OptionsError);
  return outcome as OptionsError;
}

async function expectRejected(gen: MexitGenerator, prompt: Prompt, options: GenerateOptions, code: string, message: RegExp) {
  const error = await optionsError(gen, prompt, options);
  expect(error.code, error.message).toBe(code);
  expect(error.message).toMatch(message);
}

describe('options are type-checked, sizes bounded, before any model work (gpt2-tiny)', () => {
  let gen: MexitGenerator;
  beforeAll(async () => {
    gen = await MexitGenerator.fromPretrained(GPT2_TINY, { threads: 1 });
  });
  afterAll(async () => {
    await gen?.dispose();
  });

  it('booleans must be booleans: a truthy string does not turn sampling on', async () => {
    const cases: [keyof GenerateOptions, unknown][] = [
      ['doSample', 'false'],
      ['doSample', 1],
      ['doSample', null],
      ['adaptiveDraftLength', 'yes'],
      ['bonusToken', 0],
      ['addSpecialTokens', 'false'],
    ];
    for (const [key, value] of cases) {
      await expectRejected(gen, PROMPT, { [key]: value }, 'INVALID_OPTION', new RegExp(`${key} must be a boolean`));
    }
    expect(await modelWork(gen)).toEqual({ stages: 0, calls: 0 });
  });

  it('numbers must be numbers: "4" is not 4', async () => {
    const keys: (keyof GenerateOptions)[] = [
      'maxNewTokens',
      'exitLayer',
      'numSpeculations',
      'temperature',
      'topK',
      'topP',
      'minP',
      'repetitionPenalty',
      'seed',
      'draftConfidenceThreshold',
      'alpha',
      'minimumCandidates',
      'calmThreshold',
      'calmMinExitLayer',
      'calmExitInterval',
      'calmDecay',
    ];
    for (const key of keys) {
      for (const value of ['4', '0.5', true, [2], {}]) {
        await expectRejected(gen, PROMPT, { [key]: value }, 'INVALID_OPTION', new RegExp(`^${key} must be`));
      }
    }
    await expectRejected(gen, PROMPT, { signal: 'abort' as never }, 'INVALID_OPTION', /signal must be an AbortSignal/);
    await expectRejected(gen, PROMPT, { signal: { aborted: 'yes' } as never }, 'INVALID_OPTION', /signal/);
    await expectRejected(
      gen,
      PROMPT,
      { mode: 'acd', contrastLayers: [4, 2], contrastFunction: 'x' as never },
      'INVALID_OPTION',
      /function/,
    );
    await expectRejected(gen, PROMPT, { exitHead: 5 as never }, 'EXIT_HEAD_KIND', /exitHead.*5/);
    await expectRejected(gen, PROMPT, { mode: 'ar', exitHead: 'bogus' as never }, 'EXIT_HEAD_KIND', /"bogus"/);
    expect(await modelWork(gen)).toEqual({ stages: 0, calls: 0 });
  });

  it('lists are checked element by element, holes included', async () => {
    // biome-ignore lint/suspicious/noSparseArray: the hole is the test
    await expectRejected(gen, PROMPT, { eosTokenIds: [1, , 2] as number[] }, 'INVALID_OPTION', /eosTokenIds/);
    await expectRejected(gen, PROMPT, { eosTokenIds: ['2'] as never }, 'INVALID_OPTION', /eosTokenIds/);
    await expectRejected(gen, PROMPT, { eosTokenIds: 2 as never }, 'INVALID_OPTION', /eosTokenIds/);
    await expectRejected(gen, PROMPT, { eosTokenIds: [2 ** 60] }, 'INVALID_OPTION', /eosTokenIds/);
  });

  it('misspelt or unknown keys are UNKNOWN_OPTION with the nearest known name', async () => {
    const cases: [string, RegExp][] = [
      ['maxTokens', /unknown option "maxTokens"; did you mean "maxNewTokens"/],
      ['max_new_tokens', /did you mean "maxNewTokens"/],
      ['temp', /did you mean "temperature"/],
      ['do_sample', /did you mean "doSample"/],
      ['numSpeculation', /did you mean "numSpeculations"/],
      ['top_p', /did you mean "topP"/],
      ['frobnicate', /unknown option "frobnicate"; known options: mode, exitLayer/],
    ];
    for (const [key, message] of cases) await expectRejected(gen, PROMPT, { [key]: 1 } as GenerateOptions, 'UNKNOWN_OPTION', message);
    const t0 = performance.now();
    const long = await optionsError(gen, PROMPT, { ['x'.repeat(1_000_000)]: 1 } as GenerateOptions);
    expect([long.code, long.message.length < 1000, performance.now() - t0 < 1000]).toEqual(['UNKNOWN_OPTION', true, true]);
    // An explicit undefined is "not given", also for known keys.
    expect((await gen.generate(PROMPT, { mode: 'ar', maxNewTokens: 2, doSample: undefined })).ids).toHaveLength(2);
    expect(() => resolveOptions(gen.runtime, 'abc' as never)).toThrow(/options must be an object/);
    expect(() => resolveOptions(gen.runtime, [] as never)).toThrow(OptionsError);
  });

  it('numSpeculations is bounded by MAX_NUM_SPECULATIONS before any graph is sized by it', async () => {
    expect(MAX_NUM_SPECULATIONS).toBe(64);
    const before = await modelWork(gen);
    for (const numSpeculations of [65, 2000, 1e9, 2 ** 53, 1e300]) {
      await expectRejected(gen, PROMPT, { numSpeculations }, 'INVALID_OPTION', /numSpeculations must be an integer in 1\.\.64/);
    }
    expect(await modelWork(gen)).toEqual(before);
  });

  it('maxNewTokens larger than the context is CONTEXT_OVERFLOW before a cache is allocated', async () => {
    const buffers = process.memoryUsage().arrayBuffers;
    for (const maxNewTokens of [129, 1e9, 1e15, Number.MAX_SAFE_INTEGER, 1e300]) {
      await expectRejected(gen, PROMPT, { maxNewTokens }, 'CONTEXT_OVERFLOW', /maxNewTokens \(.*\) exceeds the context of 128/);
    }
    expect(process.memoryUsage().arrayBuffers - buffers).toBeLessThan(64 * 2 ** 20);
    await expectRejected(gen, PROMPT, { exitLayer: 1e9 }, 'INVALID_OPTION', /exitLayer/);
    for (const seed of [2 ** 53, 1e300, -0.5]) await expectRejected(gen, PROMPT, { seed }, 'INVALID_OPTION', /seed must be a non-negative/);
  });

  it('temperature and repetitionPenalty so small (or large) that logits leave float32: rejected with the bound', async () => {
    for (const temperature of [1e-45, 1e-30, 5e-7, 2e6, Number.MAX_VALUE]) {
      await expectRejected(
        gen,
        PROMPT,
        { doSample: true, temperature },
        'INVALID_OPTION',
        /temperature must be 0 \(greedy\) or a number in \[1e-6, 1e6\]/,
      );
    }
    for (const repetitionPenalty of [1e-300, 1e-45, 1e300]) {
      await expectRejected(gen, PROMPT, { repetitionPenalty }, 'INVALID_OPTION', /repetitionPenalty must be a number in \[1e-6/);
    }
    // The bounds themselves sample without NaN mid-generation; 0 is greedy.
    for (const temperature of [1e-6, 1e6]) {
      const r = await gen.generate(PROMPT, {
        doSample: true,
        temperature,
        repetitionPenalty: 1e-6,
        seed: 3,
        maxNewTokens: 6,
        eosTokenIds: [],
      });
      expect(r.ids).toHaveLength(6);
    }
    const greedy = await gen.generate(PROMPT, { mode: 'ar', maxNewTokens: 6, eosTokenIds: [] });
    const zero = await gen.generate(PROMPT, { mode: 'ar', doSample: true, temperature: 0, maxNewTokens: 6, eosTokenIds: [] });
    expect(zero.ids).toEqual(greedy.ids);
  });

  it('prompts: every element an id or every element a {role, content} message, else INVALID_PROMPT naming it', async () => {
    const before = await modelWork(gen);
    const cases: [unknown[], RegExp][] = [
      [[null], /prompt\[0\] must be a token id \(number\) or a chat message.*null/],
      [[{ role: 'user', content: 'hi' }, 5], /prompt\[1\] must be a chat message.*5/],
      [[1, 'a'], /prompt\[1\] must be a token id.*"a"/],
      [[[1]], /prompt\[0\] must be a token id.*\[1\]/],
      // biome-ignore lint/suspicious/noSparseArray: the hole is the test
      [[1, , 2], /prompt\[1\] .*a hole/],
      [[1, undefined], /prompt\[1\]/],
      [[1, null], /prompt\[1\].*null/],
      [[1, true], /prompt\[1\].*true/],
      [[1, 2n], /prompt\[1\].*2n/],
      [['hello'], /prompt\[0\]/],
      [[{ role: 1, content: 'x' }], /prompt\[0\] must be a chat message with string role and string content/],
      [[{ role: 'user' }], /prompt\[0\] must be a chat message with string role/],
      [[{ role: 'user', content: 'a' }, null], /prompt\[1\]/],
    ];
    for (const [prompt, message] of cases) await expectRejected(gen, prompt as Prompt, { mode: 'ar' }, 'INVALID_PROMPT', message);
    // Numbers stay TOKEN_ID_RANGE (a number outside the vocabulary, not a wrong kind).
    for (const id of [1.5, Number.NaN, -1, 512, 1e300]) await expectRejected(gen, [1, id], { mode: 'ar' }, 'TOKEN_ID_RANGE', /token id/);
    await expectRejected(gen, [{ role: 'user', content: 'hi' }], {}, 'NO_TOKENIZER', /tokenizer/);
    expect(() => gen.encodePrompt(PROMPT, 'yes' as never)).toThrow(/addSpecialTokens must be a boolean/);
    expect(await modelWork(gen)).toEqual(before);
  });

  it('d is cut to maxNewTokens − 1: the same tokens as with d = maxNewTokens − 1, and a chain no longer than that', async () => {
    const base: GenerateOptions = { eosTokenIds: [], exitLayer: 2 };
    for (const maxNewTokens of [1, 2, 3, 5]) {
      const ar = await gen.generate(PROMPT, { ...base, mode: 'ar', maxNewTokens });
      for (const sampling of [{}, { doSample: true, temperature: 0.9, seed: 11 }]) {
        for (const adaptiveDraftLength of [false, true]) {
          const o = { ...base, ...sampling, adaptiveDraftLength, maxNewTokens };
          const fit = await gen.generate(PROMPT, { ...o, numSpeculations: Math.max(1, maxNewTokens - 1) });
          for (const numSpeculations of [maxNewTokens, 2 * maxNewTokens + 3, MAX_NUM_SPECULATIONS]) {
            const r = await gen.generate(PROMPT, { ...o, numSpeculations });
            expect(r.ids, JSON.stringify({ ...o, numSpeculations })).toEqual(fit.ids);
            expect([r.stats.drafted, r.stats.accepted]).toEqual([fit.stats.drafted, fit.stats.accepted]);
            expect(r.stats.numSpeculations).toBe(Math.max(1, maxNewTokens - 1));
          }
          if (!('doSample' in sampling)) expect(fit.ids).toEqual(ar.ids);
        }
      }
    }
    const chains = (await gen.runtime.builtStages()).map((s) => s.spec.chain ?? 0);
    expect(Math.max(...chains)).toBeLessThanOrEqual(4);
  });
});

describe('property: hostile option values never crash, hang or allocate absurdly', () => {
  let gen: MexitGenerator;
  beforeAll(async () => {
    gen = await MexitGenerator.fromPretrained(GPT2_TINY, { threads: 1 });
  });
  afterAll(async () => {
    await gen?.dispose();
  });

  const hostileNumber = fc.oneof(
    fc.constantFrom(0, -0, -1, 0.5, 1.5, Number.NaN, Infinity, -Infinity, 1e-45, 1e-7, 2 ** 31, 2 ** 53, 1e9, 1e15, 1e300),
    fc.integer({ min: -2, max: 8 }),
    fc.double({ min: 0, max: 2, noNaN: true }),
  );
  const hostileValue = fc.oneof(
    hostileNumber,
    fc.constantFrom('false', 'true', '4', '', '0.5', 'int8', 'ar', 'self-spec', 'calm', 'early-exit', 'acd', 'shared', 'original'),
    fc.constantFrom(null, true, false, [], {}, [1], [4, 2], ['x'], [0, -1], { aborted: 'yes' }, 5n),
    fc.string({ maxLength: 6 }),
  );
  const keys = [
    'mode',
    'exitLayer',
    'exitHead',
    'drafter',
    'numSpeculations',
    'maxNewTokens',
    'doSample',
    'temperature',
    'topK',
    'topP',
    'minP',
    'repetitionPenalty',
    'seed',
    'stop',
    'eosTokenIds',
    'draftConfidenceThreshold',
    'adaptiveDraftLength',
    'bonusToken',
    'draftQuantization',
    'signal',
    'addSpecialTokens',
    'contrastLayers',
    'alpha',
    'minimumCandidates',
    'calmThreshold',
    'calmConfidence',
    'calmMinExitLayer',
    'calmExitInterval',
    'calmDecay',
    'maxTokens',
    'temp',
  ];
  const hostileOptions = fc.dictionary(fc.constantFrom(...keys), hostileValue, { maxKeys: 4 });

  it('generate() resolves or rejects with a MexitError, within 15 s, and allocates at most 256 MiB of buffers', async () => {
    const counts = { ok: 0, typed: 0 };
    await fc.assert(
      fc.asyncProperty(hostileOptions, async (hostile) => {
        const options = { maxNewTokens: 4, ...hostile } as GenerateOptions;
        const buffers = process.memoryUsage().arrayBuffers;
        const outcome = await within(
          15_000,
          JSON.stringify(options, (_, v) => (typeof v === 'bigint' ? `${v}n` : v)),
          gen.generate(PROMPT, options),
        ).then(
          () => 'ok' as const,
          (e: unknown) => e,
        );
        if (outcome === 'ok') counts.ok++;
        else {
          if (!(outcome instanceof MexitError)) throw outcome; // an untyped error fails with its own stack
          counts.typed++;
        }
        expect(process.memoryUsage().arrayBuffers - buffers).toBeLessThan(256 * 2 ** 20);
      }),
      { seed: 1, numRuns: 400 },
    );
    expect(counts.ok).toBeGreaterThan(20); // the property also exercised successful generations
    expect(counts.typed).toBeGreaterThan(100);
    // Still usable, and still exact, after all of that.
    const ar = await gen.generate(PROMPT, { mode: 'ar', maxNewTokens: 8, eosTokenIds: [] });
    expect((await gen.generate(PROMPT, { maxNewTokens: 8, eosTokenIds: [] })).ids).toEqual(ar.ids);
  }, 120_000);
});

describe('hostile prompts with a tokenizer: chat messages are checked before the template sees them', () => {
  let dir: string;
  let gen: MexitGenerator;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mexit-hostile-options-'));
    for (const file of ['config.json', 'model.safetensors']) copyFileSync(join(GPT2_TINY, file), join(dir, file));
    const gpt2 = JSON.parse(readFileSync(fixture('tokenizers/gpt2/tokenizer.json'), 'utf8'));
    const vocab = Object.fromEntries(Object.entries(gpt2.model.vocab as Record<string, number>).filter(([, id]) => id < 512));
    const model = { ...gpt2.model, vocab, merges: gpt2.model.merges.slice(0, 256) };
    const { pre_tokenizer, post_processor, decoder } = gpt2;
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({ version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer, post_processor, decoder, model }),
    );
    const template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'GPT2Tokenizer', chat_template: template }));
    gen = await MexitGenerator.fromPretrained(dir, { threads: 1 });
  });
  afterAll(async () => {
    await gen?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('fast-check: arrays mixing messages, ids and junk are INVALID_PROMPT naming the first bad index; good ones encode', async () => {
    const message = fc.record({ role: fc.constantFrom('user', 'assistant', 'system'), content: fc.string({ maxLength: 8 }) });
    const junk = fc.constantFrom<unknown>(
      null,
      undefined,
      5,
      'text',
      [1],
      true,
      { role: 'user' },
      { content: 'x' },
      { role: 2, content: 'x' },
    );
    const element = fc.oneof(message, junk, fc.integer({ min: 0, max: 511 }));
    await fc.assert(
      fc.asyncProperty(fc.array(element, { minLength: 1, maxLength: 5 }), async (prompt) => {
        const isMessage = (v: unknown) =>
          typeof v === 'object' &&
          v !== null &&
          !Array.isArray(v) &&
          typeof (v as { role?: unknown }).role === 'string' &&
          typeof (v as { content?: unknown }).content === 'string';
        const firstIsObject = typeof prompt[0] === 'object' && prompt[0] !== null && !Array.isArray(prompt[0]);
        const good = firstIsObject ? prompt.every(isMessage) : prompt.every((v) => typeof v === 'number');
        let error: unknown;
        try {
          gen.encodePrompt(prompt as Prompt);
        } catch (e) {
          error = e;
        }
        if (good) expect(error === undefined || (error as OptionsError).code === 'EMPTY_PROMPT').toBe(true);
        else {
          expect(error).toBeInstanceOf(OptionsError);
          expect((error as OptionsError).code).toBe('INVALID_PROMPT');
          expect((error as OptionsError).message).toMatch(/^prompt\[\d\] must be/);
        }
      }),
      { seed: 1, numRuns: 200 },
    );
    const r = await gen.generate([{ role: 'user', content: 'hi' }], { mode: 'ar', maxNewTokens: 2 });
    expect(r.ids).toHaveLength(2);
  });
});
