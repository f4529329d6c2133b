/**
 * Bad generation input: every case must be a typed OptionsError with a stable code and a message naming the
 * offending option, raised before any model work (no stage is built, no session is run).
 */
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, OptionsError } from '@mexit/core';
import { SelfSpeculativeGenerator, type GenerateOptions, type Prompt } from '@mexit/speculative';
import { modelWork } from './support/model-work.js';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));
const GPT2_TINY = fixture('goldens/gpt2-tiny');
const MULTIEXIT = fixture('goldens/gpt2-multiexit-tiny');

/** gpt2-tiny plus a 512-token byte-level BPE tokenizer (GPT-2's ids 0..511), in a temporary directory. */
function modelWithTokenizer(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mexit-bad-input-'));
  for (const file of ['config.json', 'model.safetensors']) copyFileSync(join(GPT2_TINY, file), join(dir, file));
  const gpt2 = JSON.parse(readFileSync(fixture('tokenizers/gpt2/tokenizer.json'), 'utf8'));
  const vocab = Object.fromEntries(Object.entries(gpt2.model.vocab as Record<string, number>).filter(([, id]) => id < 512));
  const model = { ...gpt2.model, vocab, merges: gpt2.model.merges.slice(0, 256) };
  const { pre_tokenizer, post_processor, decoder } = gpt2;
  writeFileSync(
    join(dir, 'tokenizer.json'),
    JSON.stringify({ version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer, post_processor, decoder, model }),
  );
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ tokenizer_class: 'GPT2Tokenizer', clean_up_tokenization_spaces: false }),
  );
  return dir;
}

/** The error `run` rejects with (fails the test when it resolves). */
async function rejection(run: () => Promise<unknown>): Promise<unknown> {
  return run().then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)?.slice(0, 200)}`);
    },
    (error: unknown) => error,
  );
}

/** Consumes stream() so errors raised inside the async generator surface. */
async function drainStream(gen: SelfSpeculativeGenerator, prompt: Prompt, options: GenerateOptions): Promise<void> {
  for await (const _ of gen.stream(prompt, options)) {
    // nothing
  }
}

async function expectOptionsError(
  gen: SelfSpeculativeGenerator,
  prompt: Prompt,
  options: GenerateOptions,
  code: string,
  names: RegExp,
): Promise<void> {
  for (const run of [() => gen.generate(prompt, options), () => drainStream(gen, prompt, options)]) {
    const error = await rejection(run);
    expect(error, `${JSON.stringify(options)}`).toBeInstanceOf(OptionsError);
    expect((error as OptionsError).code).toBe(code);
    expect((error as OptionsError).message).toMatch(names);
  }
}

const PROMPT = [10, 20, 30];

describe('bad generation options on gpt2-tiny (L = 4, vocab 512, 128 positions)', () => {
  let gen: SelfSpeculativeGenerator;
  beforeAll(async () => {
    gen = await SelfSpeculativeGenerator.fromPretrained(GPT2_TINY, { threads: 1 });
  });
  afterAll(async () => {
    await gen?.dispose();
  });

  it('exitLayer ≤ 0, ≥ L for self-spec, > L for early-exit, or not an integer', async () => {
    for (const exitLayer of [0, -1, 4, 5, 1.5, Number.NaN]) {
      await expectOptionsError(gen, PROMPT, { mode: 'self-spec', exitLayer }, 'INVALID_OPTION', /exitLayer/);
    }
    await expectOptionsError(gen, PROMPT, { mode: 'early-exit', exitLayer: 5 }, 'INVALID_OPTION', /exitLayer/);
    await expectOptionsError(gen, PROMPT, { mode: 'early-exit', exitLayer: 0 }, 'INVALID_OPTION', /exitLayer/);
  });

  it('exit heads the checkpoint does not have', async () => {
    await expectOptionsError(
      gen,
      PROMPT,
      { exitLayer: 2, exitHead: 'layer-specific' },
      'EXIT_NOT_IN_CHECKPOINT',
      /layer-specific exit at layer 2/,
    );
    await expectOptionsError(gen, PROMPT, { exitLayer: 2, exitHead: 'cast' }, 'EXIT_NOT_IN_CHECKPOINT', /cast exit at layer 2/);
    await expectOptionsError(gen, PROMPT, { exitLayer: 2, exitHead: 'bogus' as never }, 'EXIT_HEAD_KIND', /exit head kind "bogus"/);
  });

  it('numSpeculations < 1 or not an integer', async () => {
    for (const numSpeculations of [0, -2, 1.5]) {
      await expectOptionsError(gen, PROMPT, { numSpeculations }, 'INVALID_OPTION', /numSpeculations/);
    }
  });

  it('sampling parameters out of range: temperature < 0, topP ∉ (0, 1], topK < 0, minP, repetitionPenalty', async () => {
    for (const temperature of [-0.1, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
      await expectOptionsError(gen, PROMPT, { doSample: true, temperature }, 'INVALID_OPTION', /temperature/);
    }
    for (const topP of [0, -0.2, 1.5, Number.NaN]) {
      await expectOptionsError(gen, PROMPT, { doSample: true, topP }, 'INVALID_OPTION', /topP/);
    }
    for (const topK of [-1, 2.5]) {
      await expectOptionsError(gen, PROMPT, { doSample: true, topK }, 'INVALID_OPTION', /topK/);
    }
    await expectOptionsError(gen, PROMPT, { minP: 1.5 }, 'INVALID_OPTION', /minP/);
    for (const repetitionPenalty of [0, -1]) {
      await expectOptionsError(gen, PROMPT, { repetitionPenalty }, 'INVALID_OPTION', /repetitionPenalty/);
    }
  });

  it('maxNewTokens < 1 or not an integer; other malformed options', async () => {
    for (const maxNewTokens of [0, -5, 2.5]) {
      await expectOptionsError(gen, PROMPT, { maxNewTokens }, 'INVALID_OPTION', /maxNewTokens/);
    }
    await expectOptionsError(gen, PROMPT, { mode: 'beam' as never }, 'INVALID_OPTION', /mode/);
    await expectOptionsError(gen, PROMPT, { draftConfidenceThreshold: 1 }, 'INVALID_OPTION', /draftConfidenceThreshold/);
    await expectOptionsError(gen, PROMPT, { draftConfidenceThreshold: -0.1 }, 'INVALID_OPTION', /draftConfidenceThreshold/);
    await expectOptionsError(gen, PROMPT, { draftQuantization: 'int3' as 'int4' }, 'INVALID_OPTION', /draftQuantization.*'int8'/);
    await expectOptionsError(gen, PROMPT, { eosTokenIds: [-1] }, 'INVALID_OPTION', /eosTokenIds/);
    await expectOptionsError(gen, PROMPT, { seed: 0.5 }, 'INVALID_OPTION', /seed/);
    await expectOptionsError(gen, PROMPT, { seed: -1 }, 'INVALID_OPTION', /seed/);
  });

  it('options that are not an object; a generator without a runtime', async () => {
    for (const options of [null, 5, 'fast', [1, 2]]) {
      await expectOptionsError(gen, PROMPT, options as never, 'INVALID_OPTION', /options must be an object/);
    }
    for (const runtime of [null, {}, 'model-dir']) {
      expect(() => new SelfSpeculativeGenerator(runtime as never)).toThrow(expect.objectContaining({ code: 'INVALID_RUNTIME' }));
    }
  });

  it('empty prompt', async () => {
    await expectOptionsError(gen, [], {}, 'EMPTY_PROMPT', /prompt is empty/);
  });

  it('prompt + maxNewTokens beyond max_position_embeddings; the exact fit is accepted', async () => {
    const long = Array.from({ length: 100 }, (_, i) => i);
    await expectOptionsError(gen, long, { maxNewTokens: 29 }, 'CONTEXT_OVERFLOW', /maxNewTokens \(29\).*128/);
    await expectOptionsError(
      gen,
      Array.from({ length: 129 }, (_, i) => i % 512),
      { maxNewTokens: 1 },
      'CONTEXT_OVERFLOW',
      /maxNewTokens/,
    );
    expect(await modelWork(gen)).toEqual({ stages: 0, calls: 0 });
    // 100 + 28 = 128 fits (run with ar, the cheapest mode).
    const fits = await gen.generate(long, { mode: 'ar', maxNewTokens: 28 });
    expect(fits.ids).toHaveLength(28);
  });

  it('token ids outside the vocabulary', async () => {
    for (const bad of [512, -1, 1.5, Number.NaN, 1e9]) {
      await expectOptionsError(gen, [1, 2, bad], { mode: 'ar' }, 'TOKEN_ID_RANGE', new RegExp(`token id ${bad}.*0\\.\\.511`));
    }
  });

  it('text prompts, chat messages and stop strings on a model without tokenizer', async () => {
    await expectOptionsError(gen, 'Once upon a time', {}, 'NO_TOKENIZER', /tokenizer/);
    await expectOptionsError(gen, '', {}, 'NO_TOKENIZER', /tokenizer/);
    await expectOptionsError(gen, [{ role: 'user', content: 'hi' }], {}, 'NO_TOKENIZER', /tokenizer/);
    await expectOptionsError(gen, PROMPT, { stop: ['x'] }, 'NO_TOKENIZER', /stop strings need a tokenizer/);
  });

  it('a prompt of the wrong type', async () => {
    await expectOptionsError(gen, 42 as never, {}, 'INVALID_PROMPT', /prompt must be/);
  });
});

describe('bad input, checked before any model work', () => {
  it('no stage is built and no session runs for any of the cases above', async () => {
    const gen = await SelfSpeculativeGenerator.fromPretrained(GPT2_TINY, { threads: 1 });
    try {
      const cases: [Prompt, GenerateOptions][] = [
        [PROMPT, { exitLayer: 4 }],
        [PROMPT, { numSpeculations: 0 }],
        [PROMPT, { temperature: -1 }],
        [PROMPT, { topP: 0 }],
        [PROMPT, { topK: -1 }],
        [PROMPT, { maxNewTokens: 0 }],
        [[], {}],
        [Array.from({ length: 128 }, () => 1), { maxNewTokens: 1 }],
        [[512], {}],
        ['text', {}],
        [PROMPT, { seed: -1 }],
      ];
      for (const [prompt, options] of cases) {
        await expect(gen.generate(prompt, options)).rejects.toBeInstanceOf(OptionsError);
      }
      expect(await modelWork(gen)).toEqual({ stages: 0, calls: 0 });
    } finally {
      await gen.dispose();
    }
  });

  it('bad defaults fail fromPretrained; a missing model directory is a ConfigError', async () => {
    const error = await rejection(() => SelfSpeculativeGenerator.fromPretrained(GPT2_TINY, { threads: 1, numSpeculations: 0 }));
    expect(error).toBeInstanceOf(OptionsError);
    expect((error as OptionsError).message).toMatch(/numSpeculations/);
    const missing = await rejection(() =>
      SelfSpeculativeGenerator.fromPretrained(join(tmpdir(), 'mexit-no-such-model-dir'), { threads: 1 }),
    );
    expect(missing).toBeInstanceOf(ConfigError);
    expect((missing as ConfigError).code).toBe('MODEL_DIR_MISSING');
  });

  it("the model's recorded E, d and draft quantization are the defaults; options override them; ids stay those of ar", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-recorded-'));
    cpSync(fixture('goldens/llama32-tiny'), dir, { recursive: true });
    const genPath = join(dir, 'generation_config.json');
    const recorded = { mexit_exit_layer: 2, mexit_num_speculations: 3, mexit_draft_quantization: 'int8' };
    writeFileSync(genPath, JSON.stringify({ ...JSON.parse(readFileSync(genPath, 'utf8')), ...recorded }));
    const gen = await SelfSpeculativeGenerator.fromPretrained(dir, { threads: 1 });
    try {
      const ids = [5, 17, 99, 3, 42, 8];
      const options: GenerateOptions = { maxNewTokens: 24, eosTokenIds: [] };
      const ar = await gen.generate(ids, { ...options, mode: 'ar' });
      const byDefault = await gen.generate(ids, options);
      expect([byDefault.stats.mode, byDefault.stats.exitLayer, byDefault.stats.numSpeculations, byDefault.stats.draftQuantization]).toEqual(
        ['self-spec', 2, 3, 'int8'],
      );
      expect(byDefault.ids).toEqual(ar.ids);
      const exact = await gen.generate(ids, { ...options, draftQuantization: 'none', exitLayer: 1 });
      expect([exact.stats.exitLayer, exact.stats.numSpeculations, exact.stats.draftQuantization]).toEqual([1, 3, 'none']);
      expect(exact.ids).toEqual(ar.ids);
    } finally {
      await gen.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('multi-exit checkpoint: the default exit has a layer-specific head, and an exit without one is rejected', async () => {
    // Default options must resolve to an exit the checkpoint has (heads at 2 and 4; self-spec needs E < 4).
    const gen = await SelfSpeculativeGenerator.fromPretrained(MULTIEXIT, { threads: 1 });
    try {
      await expectOptionsError(
        gen,
        PROMPT,
        { exitLayer: 1 },
        'EXIT_NOT_IN_CHECKPOINT',
        /layer-specific exit at layer 1; available layer-specific exits: 2, 4/,
      );
      expect(await modelWork(gen)).toEqual({ stages: 0, calls: 0 });
      const byDefault = await gen.generate(PROMPT, { maxNewTokens: 12 });
      expect(byDefault.stats.mode).toBe('self-spec');
      expect(byDefault.stats.exitLayer).toBe(2);
      const explicit = await gen.generate(PROMPT, { maxNewTokens: 12, exitLayer: 2, exitHead: 'layer-specific' });
      expect(byDefault.ids).toEqual(explicit.ids);
      expect(byDefault.ids).toEqual((await gen.generate(PROMPT, { mode: 'ar', maxNewTokens: 12 })).ids);
    } finally {
      await gen.dispose();
    }
  });
});

describe('bad input on a model with a tokenizer', () => {
  let dir: string;
  let gen: SelfSpeculativeGenerator;
  beforeAll(async () => {
    dir = modelWithTokenizer();
    gen = await SelfSpeculativeGenerator.fromPretrained(dir, { threads: 1 });
  });
  afterAll(async () => {
    await gen?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('empty text prompt, empty stop string, text overflowing the context', async () => {
    expect(gen.runtime.tokenizer).not.toBeNull();
    await expectOptionsError(gen, '', {}, 'EMPTY_PROMPT', /prompt is empty/);
    await expectOptionsError(gen, [], {}, 'EMPTY_PROMPT', /prompt is empty/);
    await expectOptionsError(gen, 'hello', { stop: [''] }, 'INVALID_OPTION', /stop/);
    // 200 single-byte tokens: '~' is in no merge among the first 256.
    await expectOptionsError(gen, '~'.repeat(200), { maxNewTokens: 1 }, 'CONTEXT_OVERFLOW', /maxNewTokens/);
    expect(await modelWork(gen)).toEqual({ stages: 0, calls: 0 });
  });
});
