/**
 * Malformed model directories and bad runtime requests: each must raise a typed MexitError with a code
 * and a message naming the problem, before any session is built, and never crash natively.
 */
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointError, ConfigError, OptionsError, TokenizerError, openSafetensors, writeSafetensors, type Tensor } from '@mexit/core';
import { ModelRuntime, defaultThreads } from '@mexit/model';

const golden = (name: string) => fileURLToPath(new URL(`../../../fixtures/goldens/${name}`, import.meta.url));

/** A scratch copy of a golden model directory, edited by `edit`. */
function variant(name: string, edit: (dir: string) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'mexit-bad-'));
  cpSync(golden(name), dir, { recursive: true });
  edit(dir);
  return dir;
}

function editConfig(dir: string, change: (cfg: Record<string, unknown>) => void): void {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  change(cfg);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
}

function rewriteWeights(dir: string, change: (tensors: Record<string, Tensor>) => void): void {
  const file = join(dir, 'model.safetensors');
  const map = openSafetensors(file);
  const tensors: Record<string, Tensor> = {};
  for (const name of map.names) tensors[name] = map.get(name);
  map.close();
  change(tensors);
  writeSafetensors(file, tensors);
}

async function loadError(dir: string): Promise<{ code: string; message: string } & Error> {
  try {
    await ModelRuntime.load(dir);
  } catch (e) {
    return e as { code: string; message: string } & Error;
  } finally {
    if (dir.startsWith(tmpdir())) rmSync(dir, { recursive: true, force: true });
  }
  throw new Error('load unexpectedly succeeded');
}

describe('malformed model directories', () => {
  it('missing tensor: named, with the checkpoint', async () => {
    const err = await loadError(variant('llama2-tiny', (d) => rewriteWeights(d, (t) => delete t['model.layers.2.mlp.up_proj.weight'])));
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.code).toBe('TENSOR_MISSING');
    expect(err.message).toContain('model.layers.2.mlp.up_proj.weight');
  });

  it('wrong shape: expected vs actual', async () => {
    const err = await loadError(
      variant('gpt2-tiny', (d) =>
        rewriteWeights(d, (t) => {
          t['transformer.h.1.attn.c_proj.weight'] = { dtype: 'F32', shape: [64, 32], data: new Float32Array(64 * 32) };
        }),
      ),
    );
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.code).toBe('TENSOR_SHAPE');
    expect(err.message).toContain('[64, 32]');
    expect(err.message).toContain('[64, 64]');
  });

  it('config field missing', async () => {
    const err = await loadError(variant('llama2-tiny', (d) => editConfig(d, (c) => delete c.hidden_size)));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe('CONFIG_FIELD');
    expect(err.message).toContain('hidden_size');
  });

  it('recorded self-spec settings (generation_config.json): used when valid, a typed error naming the key when not', async () => {
    const editGen = (d: string, extra: Record<string, unknown>) => {
      const path = join(d, 'generation_config.json');
      writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), ...extra }));
    };
    const ok = await ModelRuntime.load(
      variant('llama2-tiny', (d) => editGen(d, { mexit_exit_layer: 1, mexit_num_speculations: 5, mexit_draft_quantization: 'int8' })),
      { threads: 1 },
    );
    expect([ok.config.recommendedExitLayer, ok.config.recommendedNumSpeculations, ok.config.recommendedDraftQuantization]).toEqual([
      1,
      5,
      'int8',
    ]);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ mexit_draft_quantization: 'int3' }, /mexit_draft_quantization.*"none", "int8" or "int4".*"int3"/],
      [{ mexit_exit_layer: 99 }, /mexit_exit_layer.*1\.\.\d+.*99/],
      [{ mexit_num_speculations: 0 }, /mexit_num_speculations.*positive integer.*0/],
    ];
    for (const [extra, message] of bad) {
      const err = await loadError(variant('llama2-tiny', (d) => editGen(d, extra)));
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.code).toBe('CONFIG_FIELD');
      expect(err.message).toMatch(message);
    }
  });

  it('config contradictory: heads not a multiple of kv heads', async () => {
    const err = await loadError(variant('llama32-tiny', (d) => editConfig(d, (c) => (c.num_key_value_heads = 3))));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe('CONFIG_CONTRADICTION');
    expect(err.message).toContain('num_key_value_heads');
  });

  it('config contradictory: GPT-Neo attention_types vs num_layers', async () => {
    const err = await loadError(variant('gpt-neo-tiny', (d) => editConfig(d, (c) => (c.num_layers = 6))));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain('attention_types');
  });

  it('unknown model_type lists the supported ones', async () => {
    const err = await loadError(variant('gpt2-tiny', (d) => editConfig(d, (c) => (c.model_type = 'mamba'))));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe('UNSUPPORTED_MODEL_TYPE');
    expect(err.message).toMatch(/llama.*gpt2.*gpt_neo/);
  });

  it('config.json not JSON', async () => {
    const err = await loadError(variant('gpt2-tiny', (d) => writeFileSync(join(d, 'config.json'), '{"model_type": "gpt2",')));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe('CONFIG_JSON');
  });

  it('no weights at all', async () => {
    const err = await loadError(variant('gpt2-tiny', (d) => rmSync(join(d, 'model.safetensors'))));
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.code).toBe('CHECKPOINT_MISSING');
  });

  it('model directory missing', async () => {
    const err = await loadError('/nonexistent/mexit-model');
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.code).toBe('MODEL_DIR_MISSING');
  });

  it('tokenizer.json malformed', async () => {
    const err = await loadError(variant('gpt2-tiny', (d) => writeFileSync(join(d, 'tokenizer.json'), 'not json')));
    expect(err).toBeInstanceOf(TokenizerError);
  });

  it('a directory without tokenizer files loads (ids still work)', async () => {
    const rt = await ModelRuntime.load(golden('gpt2-tiny'), { threads: 1 });
    expect(rt.tokenizer).toBeNull();
    await rt.dispose();
  });
});

describe('bad runtime requests', () => {
  it('exit layer out of range or absent from the checkpoint', async () => {
    const rt = await ModelRuntime.load(golden('gpt2-multiexit-tiny'), { threads: 1 });
    expect(() => rt.validateExit({ layer: 0 })).toThrow(OptionsError);
    expect(() => rt.validateExit({ layer: 5 })).toThrow(/1\.\.4/);
    let err: unknown;
    try {
      rt.validateExit({ layer: 3, head: 'layer-specific' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OptionsError);
    expect((err as OptionsError).code).toBe('EXIT_NOT_IN_CHECKPOINT');
    expect((err as Error).message).toContain('2, 4');
    expect(() => rt.stage({ from: 0, to: 4, exits: [{ layer: 3, head: 'cast' }] })).toThrow(/cast/);
    expect(() => rt.stage({ from: 0, to: 2, quantize: 'int3' as 'int4' })).toThrow(expect.objectContaining({ code: 'STAGE_QUANTIZE' }));
    const chainCode = expect.objectContaining({ code: 'STAGE_CHAIN' });
    expect(() => rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }], chain: 0 })).toThrow(chainCode);
    expect(() => rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }], chain: 1.5 })).toThrow(chainCode);
    expect(() => rt.stage({ from: 1, to: 2, exits: [{ layer: 2 }], chain: 2 })).toThrow(chainCode);
    expect(() => rt.stage({ from: 0, to: 2, chain: 2 })).toThrow(chainCode);
    expect(() => rt.stage({ from: 0, to: 2, exits: [{ layer: 1 }], chain: 2 })).toThrow(chainCode);
    expect(() => rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }], chainFeedsLast: true })).toThrow(chainCode);
    const chain = await rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }], chain: 2 });
    await expect(chain.run(rt.createCache(), [1])).rejects.toMatchObject({ code: 'STAGE_CHAIN' });
    const plain = await rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }] });
    await expect(plain.runChain(rt.createCache(), [1])).rejects.toMatchObject({ code: 'STAGE_CHAIN' });
    await rt.dispose();
  });

  it('prompt beyond max_position_embeddings, empty input, out-of-vocabulary ids, logitsStart beyond the input', async () => {
    const rt = await ModelRuntime.load(golden('gpt2-tiny'), { threads: 1 });
    const stage = await rt.stage({ from: 0, to: 4, exits: [{ layer: 4 }] });
    const tooLong = Array.from({ length: 129 }, (_, i) => i % 512);
    await expect(stage.run(rt.createCache(), tooLong)).rejects.toMatchObject({ code: 'CONTEXT_OVERFLOW' });
    await expect(stage.run(rt.createCache(), [])).rejects.toMatchObject({ code: 'STAGE_INPUT' });
    await expect(stage.run(rt.createCache(), [1, 512])).rejects.toMatchObject({ code: 'TOKEN_ID_RANGE' });
    await expect(stage.run(rt.createCache(), [1, 2], 3)).rejects.toMatchObject({ code: 'STAGE_INPUT' });
    // A chain feeds its drafts too: 125 ids + 4 fed drafts pass position 128; 124 + 4 fit.
    const chain = await rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }], chain: 5 });
    const ids = (n: number) => Array.from({ length: n }, (_, i) => i % 512);
    await expect(chain.runChain(rt.createCache(), ids(125))).rejects.toMatchObject({ code: 'CONTEXT_OVERFLOW' });
    expect((await chain.runChain(rt.createCache(), ids(124))).drafts.length).toBe(5);
    await expect(chain.runChain(rt.createCache(), [1, 512])).rejects.toMatchObject({ code: 'TOKEN_ID_RANGE' });
    await expect(stage.run(rt.createCache(), [1, 2], -1)).rejects.toMatchObject({ code: 'STAGE_INPUT' });
    await rt.dispose();
  });

  it('stage specs of the wrong shape: typed errors before anything is built', async () => {
    const rt = await ModelRuntime.load(golden('gpt2-tiny'), { threads: 1 });
    const bad: [unknown, string][] = [
      [null, 'STAGE_SPEC'],
      ['layers', 'STAGE_SPEC'],
      [{ from: 0, to: 4, exits: new Array(1_000_000).fill({ layer: 4 }) }, 'STAGE_EXIT'],
      [{ from: 0, to: 4, exits: 'all' }, 'STAGE_EXIT'],
      [{ from: 0, to: 4, exits: [null] }, 'STAGE_EXIT'],
      [{ from: 0, to: 4, exits: [{ layer: '4' }] }, 'STAGE_EXIT'],
      [{ from: 0, to: 4, exits: [{ layer: 4, head: 'magic' }] }, 'STAGE_EXIT'],
      [{ from: 0, to: 4, propagate: 'yes' }, 'STAGE_SPEC'],
    ];
    for (const [spec, code] of bad)
      expect(() => rt.stage(spec as never), JSON.stringify(spec)?.slice(0, 60)).toThrow(expect.objectContaining({ code }));
    expect(rt.liveStages).toBe(0);
    await rt.dispose();
  });

  it('inputs of the wrong kind: typed STAGE_INPUT, not a TypeError', async () => {
    const rt = await ModelRuntime.load(golden('gpt2-tiny'), { threads: 1 });
    const embed = await rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }] });
    const rest = await rt.stage({ from: 2, to: 4, exits: [{ layer: 4 }] });
    const cache = rt.createCache();
    for (const input of [null, undefined, 'hello', 42, { length: 2 }, new DataView(new ArrayBuffer(8))]) {
      await expect(embed.run(cache, input as never)).rejects.toMatchObject({ code: 'STAGE_INPUT' });
    }
    for (const input of [null, [0.5, 0.5], new Float64Array(64), 'x']) {
      await expect(rest.run(cache, input as never)).rejects.toMatchObject({ code: 'STAGE_INPUT' });
    }
    // Nothing was appended by the refused calls.
    expect(cache.length(0)).toBe(0);
    await rt.dispose();
  });
});

describe('runtime options', () => {
  it('threads: a positive integer, or by default one per 16 MiB of F32 weights within the core count', async () => {
    await expect(ModelRuntime.load(golden('gpt2-tiny'), { threads: 0 })).rejects.toMatchObject({ code: 'RUNTIME_OPTIONS' });
    await expect(ModelRuntime.load(golden('gpt2-tiny'), { threads: 1.5 })).rejects.toMatchObject({ code: 'RUNTIME_OPTIONS' });
    const MiB = 2 ** 20;
    expect(defaultThreads(200 * 1024, 16)).toBe(1); // a golden model: far below one thread's share
    expect(defaultThreads(36 * MiB, 2)).toBe(2); // the bundled model on 2 cores
    expect(defaultThreads(36 * MiB, 1)).toBe(1);
    expect(defaultThreads(1024 * MiB, 8)).toBe(8);
    const rt = await ModelRuntime.load(golden('gpt2-tiny'));
    expect(rt.options).toMatchObject({ threads: 1, spinning: true, prepacking: true });
    await rt.dispose();
  });
});
