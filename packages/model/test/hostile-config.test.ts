/**
 * Hostile config.json / generation_config.json (issue 14, classes 2 and 8): every size the loader reads is
 * checked for type and against a sane upper bound before anything is sized by it, then against the
 * checkpoint's tensors (layers present, embedding = vocab × hidden, ...); id fields are integers or lists of
 * integers, never coerced. Each bad value is a ConfigError naming the field and its file, raised by
 * ModelRuntime.load (which builds no stage), quickly and without allocating.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, TokenizerError, openSafetensors, writeSafetensors, type MexitError, type Tensor } from '@mexit/core';
import { CONFIG_LIMITS, MAX_NUM_SPECULATIONS, ModelRuntime } from '@mexit/model';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));
const MODELS = ['llama2-tiny', 'llama32-tiny', 'gpt2-tiny', 'gpt-neo-tiny'] as const;
type Model = (typeof MODELS)[number];

/** The size fields each architecture reads (positive integers) and its positive-number fields. */
const INT_FIELDS: Record<Model, string[]> = {
  'llama2-tiny': [
    'num_hidden_layers',
    'hidden_size',
    'num_attention_heads',
    'num_key_value_heads',
    'head_dim',
    'intermediate_size',
    'vocab_size',
    'max_position_embeddings',
  ],
  'llama32-tiny': ['num_hidden_layers', 'hidden_size', 'num_key_value_heads', 'head_dim', 'vocab_size', 'max_position_embeddings'],
  'gpt2-tiny': ['n_layer', 'n_embd', 'n_head', 'n_inner', 'vocab_size', 'n_positions'],
  'gpt-neo-tiny': ['num_layers', 'hidden_size', 'num_heads', 'intermediate_size', 'vocab_size', 'max_position_embeddings', 'window_size'],
};
const NUMBER_FIELDS: Record<Model, string[]> = {
  'llama2-tiny': ['rms_norm_eps', 'rope_theta'],
  'llama32-tiny': ['rms_norm_eps', 'rope_theta'],
  'gpt2-tiny': ['layer_norm_epsilon'],
  'gpt-neo-tiny': ['layer_norm_epsilon'],
};

/** One scratch copy per golden (weights copied once); config files are rewritten per case. */
const scratch = new Map<Model, string>();
function modelDir(model: Model): string {
  let dir = scratch.get(model);
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), `mexit-hostile-${model}-`));
    for (const f of ['config.json', 'generation_config.json', 'model.safetensors'])
      cpSync(join(fixture(`goldens/${model}`), f), join(dir, f));
    scratch.set(model, dir);
  }
  return dir;
}
afterAll(() => {
  for (const dir of scratch.values()) rmSync(dir, { recursive: true, force: true });
});

const original = (model: Model, file: string) => JSON.parse(readFileSync(fixture(`goldens/${model}/${file}`), 'utf8'));

/** Writes the golden's config.json and generation_config.json with `config` / `generation` merged in. */
function writeConfigs(model: Model, config: Record<string, unknown>, generation: Record<string, unknown> = {}): string {
  const dir = modelDir(model);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...original(model, 'config.json'), ...config }));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ ...original(model, 'generation_config.json'), ...generation }));
  return dir;
}

/** Loads `dir`: the runtime (disposed) or the error, with the time and buffer bytes the attempt took. */
async function attempt(dir: string): Promise<{ error?: unknown; ms: number; bytes: number }> {
  const bytes = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  try {
    const rt = await ModelRuntime.load(dir, { threads: 1 });
    expect(await rt.builtStages()).toEqual([]);
    await rt.dispose();
    return { ms: performance.now() - t0, bytes: process.memoryUsage().arrayBuffers - bytes };
  } catch (error) {
    return { error, ms: performance.now() - t0, bytes: process.memoryUsage().arrayBuffers - bytes };
  }
}

/** A ConfigError whose message names `field` and `file` (quickly, without allocating). */
async function expectConfigError(dir: string, field: string, file = 'config.json', code?: string): Promise<ConfigError> {
  const { error, bytes } = await attempt(dir);
  expect(error, `${field}: load succeeded`).toBeInstanceOf(ConfigError);
  const e = error as ConfigError;
  expect(e.message, e.message).toContain(field);
  expect(e.message).toContain(join(dir, file));
  if (code) expect(e.code).toBe(code);
  expect(bytes).toBeLessThan(64 * 2 ** 20);
  return e;
}

const ALWAYS_BAD = [0, -1, -1e300, 1.5, 1e9, 1e15, 2 ** 53, 1e300, '4', '', true, [4], {}, [[4]]];

describe('config.json sizes: type, upper bound, then the tensors', () => {
  it('every size field set to huge, negative, zero, fractional or non-number values: ConfigError naming it', async () => {
    for (const model of MODELS) {
      for (const field of INT_FIELDS[model]) {
        for (const value of ALWAYS_BAD) await expectConfigError(writeConfigs(model, { [field]: value }), `"${field}"`);
      }
      for (const field of NUMBER_FIELDS[model]) {
        for (const value of [0, -1, -1e-9, '1e-5', true, [1e-5], {}])
          await expectConfigError(writeConfigs(model, { [field]: value }), `"${field}"`);
      }
    }
  });

  it('the upper bounds are stated in the message and sit above every real model', async () => {
    expect(CONFIG_LIMITS).toEqual({
      numLayers: 1024,
      hiddenSize: 65536,
      numHeads: 4096,
      headDim: 4096,
      intermediateSize: 2 ** 20,
      vocabSize: 2 ** 22,
      maxPositions: 2 ** 24,
    });
    const e = await expectConfigError(writeConfigs('llama2-tiny', { vocab_size: 1e9 }), '"vocab_size"', 'config.json', 'CONFIG_FIELD');
    expect(e.message).toMatch(/positive integer up to 4194304, got 1000000000/);
    // A long value is cut short in the message.
    const long = await expectConfigError(writeConfigs('gpt2-tiny', { n_embd: 'x'.repeat(100_000) }), '"n_embd"');
    expect(long.message.length).toBeLessThan(400);
  });

  it('property: any value of any read field loads a consistent model or is a ConfigError naming the field and file', async () => {
    const value = fc.oneof(
      fc.constantFrom<unknown>(...ALWAYS_BAD, null, -0, Number.MAX_SAFE_INTEGER, 2 ** 31, 2 ** 24, 2 ** 22 + 1, 65537),
      fc.integer({ min: 1, max: 3000 }),
      fc.double({ min: -10, max: 1e6, noNaN: true }),
      fc.string({ maxLength: 5 }),
    );
    const mutation = fc
      .constantFrom(...MODELS)
      .chain((model) => fc.tuple(fc.constant(model), fc.constantFrom(...INT_FIELDS[model], ...NUMBER_FIELDS[model]), value));
    let loaded = 0;
    await fc.assert(
      fc.asyncProperty(mutation, async ([model, field, v]) => {
        const dir = writeConfigs(model, { [field]: v });
        const { error, bytes } = await attempt(dir);
        expect(bytes).toBeLessThan(64 * 2 ** 20);
        if (error === undefined) {
          loaded++;
          return;
        }
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as Error).message).toContain(field);
        expect((error as Error).message).toContain(join(dir, 'config.json'));
      }),
      { seed: 1, numRuns: 300 },
    );
    expect(loaded).toBeGreaterThan(0); // e.g. another window_size, rope_theta, or a null optional field
  });

  it('vocab_size, hidden size, positions, MLP width and heads that disagree with the tensors: CONFIG_CHECKPOINT', async () => {
    const cases: [Model, Record<string, unknown>, string, RegExp][] = [
      ['llama2-tiny', { vocab_size: 513 }, '"vocab_size"', /\[512, 64\]/],
      ['llama2-tiny', { hidden_size: 128 }, '"hidden_size"', /\[512, 64\]/],
      ['llama2-tiny', { intermediate_size: 161 }, '"intermediate_size"', /up_proj/],
      ['llama2-tiny', { head_dim: 32 }, 'head_dim', /q_proj/],
      ['llama32-tiny', { num_key_value_heads: 4 }, 'num_key_value_heads', /k_proj/],
      ['gpt2-tiny', { vocab_size: 50257 }, '"vocab_size"', /wte/],
      ['gpt2-tiny', { n_positions: 1024 }, '"n_positions"', /wpe/],
      ['gpt2-tiny', { n_inner: 128 }, '"n_inner"', /c_fc/],
      ['gpt-neo-tiny', { max_position_embeddings: 2048 }, '"max_position_embeddings"', /wpe/],
      ['gpt-neo-tiny', { intermediate_size: 128 }, '"intermediate_size"', /c_fc/],
    ];
    for (const [model, change, field, message] of cases) {
      const e = await expectConfigError(writeConfigs(model, change), field, 'config.json', 'CONFIG_CHECKPOINT');
      expect(e.message).toMatch(message);
    }
  });

  it('layers missing from or extra in the checkpoint vs the layer count', async () => {
    expect((await expectConfigError(writeConfigs('llama2-tiny', { num_hidden_layers: 3 }), '"num_hidden_layers"')).message).toMatch(
      /is 3 but the checkpoint .* holds 4 layers/,
    );
    expect((await expectConfigError(writeConfigs('gpt2-tiny', { n_layer: 1000 }), '"n_layer"')).message).toMatch(/holds 4 layers/);
    const neo = {
      num_layers: 3,
      attention_types: [
        [['global', 'local'], 1],
        [['global'], 1],
      ],
    };
    await expectConfigError(writeConfigs('gpt-neo-tiny', neo), '"num_layers"', 'config.json', 'CONFIG_CHECKPOINT');

    // The weights edited instead: layer 3 removed, or a layer 4 added.
    const dir = mkdtempSync(join(tmpdir(), 'mexit-hostile-layers-'));
    try {
      cpSync(fixture('goldens/llama2-tiny'), dir, { recursive: true });
      const file = join(dir, 'model.safetensors');
      const map = openSafetensors(file);
      const all: Record<string, Tensor> = {};
      for (const name of map.names) all[name] = map.get(name);
      map.close();
      const without: Record<string, Tensor> = {};
      for (const [name, t] of Object.entries(all)) if (!name.startsWith('model.layers.3.')) without[name] = t;
      writeSafetensors(file, without);
      expect((await expectConfigError(dir, '"num_hidden_layers"')).message).toMatch(/is 4 but .* holds 3 layers/);
      const extra: Record<string, Tensor> = { ...all };
      for (const [name, t] of Object.entries(all)) if (name.startsWith('model.layers.3.')) extra[name.replace('.3.', '.4.')] = t;
      writeSafetensors(file, extra);
      expect((await expectConfigError(dir, '"num_hidden_layers"')).message).toMatch(/is 4 but .* holds 5 layers/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('GPT-Neo attention_types bombs are counted, not expanded', async () => {
    const bombs: unknown[] = [
      [[['global', 'local'], 1e9]],
      [[['global'], 2 ** 53]],
      [[[], 1e15]],
      [
        [['global', 'local'], 1e9],
        [['local'], -1e9],
      ],
      [[['global'], 1.5]],
      [[['global'], '2']],
      [[['global', 'x'], 2]],
      [[['global', null], 2]],
      [[['global', 'local']]],
      [[[['global'], 2]]],
      'global',
      { global: 4 },
      [null],
    ];
    for (const attention_types of bombs) {
      const e = await expectConfigError(writeConfigs('gpt-neo-tiny', { attention_types }), 'attention', 'config.json');
      expect(e.code).toBe('CONFIG_CONTRADICTION');
    }
    // Zero repeats contribute nothing; the golden's own form still loads.
    const ok = await attempt(
      writeConfigs('gpt-neo-tiny', {
        attention_types: [
          [['global'], 0],
          [['global', 'local'], 2],
        ],
      }),
    );
    expect(ok.error).toBeUndefined();
  });

  it('rope_scaling numbers are numbers; the object must be an object', async () => {
    const llama3 = original('llama32-tiny', 'config.json').rope_scaling;
    for (const rope_scaling of [{ ...llama3, factor: '32' }, { ...llama3, original_max_position_embeddings: [64] }, 'llama3', [1], 5]) {
      await expectConfigError(writeConfigs('llama32-tiny', { rope_scaling }), 'rope_scaling');
    }
  });

  it('lm_head_layer_indices: integers only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-hostile-multiexit-'));
    try {
      cpSync(fixture('goldens/gpt2-multiexit-tiny'), dir, { recursive: true });
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      for (const lm_head_layer_indices of ['2', [2, '4'], [2.5], [2, null], { 2: true }]) {
        writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, lm_head_layer_indices }));
        await expectConfigError(dir, '"lm_head_layer_indices"', 'config.json', 'CONFIG_FIELD');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('ids and recorded settings: integers, not coerced', () => {
  it('eos / bos / pad token ids of the wrong type, in either file: ConfigError naming the field and the file', async () => {
    const bad: unknown[] = ['2', 2.5, -2, true, {}, [[2]], [2, '3'], [2, null], 1e300, 2 ** 53, ['2']];
    for (const key of ['eos_token_id', 'bos_token_id', 'pad_token_id']) {
      for (const v of bad) {
        await expectConfigError(writeConfigs('llama2-tiny', {}, { [key]: v }), `"${key}"`, 'generation_config.json', 'CONFIG_FIELD');
        await expectConfigError(writeConfigs('llama2-tiny', { [key]: v }), `"${key}"`, 'config.json', 'CONFIG_FIELD');
      }
    }
    // eos -1 is not an id (generation could never use it); pad -1 is the common "none".
    await expectConfigError(writeConfigs('llama2-tiny', {}, { eos_token_id: -1 }), '"eos_token_id"', 'generation_config.json');
    expect((await attempt(writeConfigs('llama2-tiny', { pad_token_id: -1 }, { pad_token_id: -1 }))).error).toBeUndefined();
  });

  it('valid forms keep their meaning: lists, empty lists and null fall back to config.json', async () => {
    const cases: [Record<string, unknown>, Record<string, unknown>, number[], number | undefined][] = [
      [{}, { eos_token_id: [2, 7] }, [2, 7], 1],
      [{ eos_token_id: 9 }, { eos_token_id: [] }, [9], 1],
      [{ eos_token_id: [9, 10] }, { eos_token_id: null, bos_token_id: null }, [9, 10], 1],
      [{ eos_token_id: null, bos_token_id: null }, { eos_token_id: null, bos_token_id: [3, 4] }, [], 3],
    ];
    for (const [config, generation, eos, bos] of cases) {
      const rt = await ModelRuntime.load(writeConfigs('llama2-tiny', config, generation), { threads: 1 });
      expect([rt.config.eosTokenIds, rt.config.bosTokenId]).toEqual([eos, bos]);
      await rt.dispose();
    }
  });

  it('mexit_num_speculations and mexit_exit_layer: bounded integers', async () => {
    for (const v of [MAX_NUM_SPECULATIONS + 1, 1e9, 2 ** 53, '4', 4.5, true, [4]]) {
      const e = await expectConfigError(
        writeConfigs('llama2-tiny', {}, { mexit_num_speculations: v }),
        '"mexit_num_speculations"',
        'generation_config.json',
      );
      expect(e.message).toContain('up to 64');
    }
    for (const v of [1e9, '1', 0, 4, 1.5]) {
      await expectConfigError(writeConfigs('llama2-tiny', {}, { mexit_exit_layer: v }), '"mexit_exit_layer"', 'generation_config.json');
    }
    const rt = await ModelRuntime.load(writeConfigs('llama2-tiny', {}, { mexit_num_speculations: 64, mexit_exit_layer: 3 }), {
      threads: 1,
    });
    expect([rt.config.recommendedNumSpeculations, rt.config.recommendedExitLayer]).toEqual([64, 3]);
    await rt.dispose();
  });
});

describe('tokenizer vs vocab_size', () => {
  it('a tokenizer that can produce ids the embedding lacks is a TokenizerError at load naming both sizes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mexit-hostile-tokenizer-'));
    try {
      for (const f of ['config.json', 'model.safetensors']) cpSync(join(fixture('goldens/gpt2-tiny'), f), join(dir, f));
      const gpt2 = JSON.parse(readFileSync(fixture('tokenizers/gpt2/tokenizer.json'), 'utf8'));
      const write = (size: number) => {
        const vocab = Object.fromEntries(Object.entries(gpt2.model.vocab as Record<string, number>).filter(([, id]) => id < size));
        const model = { ...gpt2.model, vocab, merges: gpt2.model.merges.slice(0, size - 256) };
        writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ ...gpt2, added_tokens: [], model }));
      };
      write(600);
      const { error } = await attempt(dir);
      expect(error).toBeInstanceOf(TokenizerError);
      expect((error as MexitError).code).toBe('TOKENIZER_VOCAB');
      expect((error as Error).message).toMatch(/600 ids .*vocab_size is 512/);
      write(512); // the same size, and a smaller one, are fine
      expect((await attempt(dir)).error).toBeUndefined();
      write(400);
      expect((await attempt(dir)).error).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
