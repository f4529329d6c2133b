/**
 * MultiExitConfiguration (IBM autocontrastive-gen's options): validation, the mapping onto generator
 * options, and decoding through the generator against IBM's own ACD greedy ids and HF exit-head logits
 * (fixtures/goldens/gpt2-multiexit-tiny, made by independent Python code).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MexitError, OptionsError, openSafetensors, type TensorMap } from '@mexit/core';
import { ModelRuntime } from '@mexit/model';
import {
  SelfSpeculativeGenerator,
  VOCAB_PROJECTION_MODES,
  describeMultiExit,
  multiExitLayers,
  multiExitOptions,
  type ContrastFunction,
  type GenerateOptions,
  type MultiExitConfiguration,
} from '@mexit/speculative';

const fixtures = fileURLToPath(new URL('../../../fixtures/', import.meta.url));
const MULTI = `${fixtures}goldens/gpt2-multiexit-tiny`;
const PLAIN = `${fixtures}goldens/gpt2-tiny`;
const golden: TensorMap = openSafetensors(`${MULTI}/goldens.safetensors`);
const V = 512;

const ids = (name: string) => Array.from(golden.get(name).data as BigInt64Array, Number);

function argmaxRow(x: Float32Array, row: number, width: number): number {
  let best = 0;
  for (let i = 1; i < width; i++) if (x[row * width + i] > x[row * width + best]) best = i;
  return best;
}

/** The code of the OptionsError thrown by fn, plus its message. */
function optionsError(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(OptionsError);
    return { code: (e as MexitError).code, message: (e as Error).message };
  }
  throw new Error('expected an OptionsError');
}

/**
 * A 512-entry byte-level BPE matching the golden vocabulary size: GPT-2's 256 byte symbols, its first 255
 * merges (ids 256..510, as in GPT-2) and <|endoftext|> at 511.
 */
function writeTinyTokenizer(dir: string): void {
  const gpt2 = JSON.parse(readFileSync(`${fixtures}tokenizers/gpt2/tokenizer.json`, 'utf8'));
  const vocab: Record<string, number> = {};
  for (const [token, id] of Object.entries(gpt2.model.vocab as Record<string, number>)) if (id < 511) vocab[token] = id;
  vocab['<|endoftext|>'] = 511;
  const eos = { id: 511, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  const json = { ...gpt2, added_tokens: [eos], model: { ...gpt2.model, vocab, merges: gpt2.model.merges.slice(0, 255) } };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({
      tokenizer_class: 'GPT2Tokenizer',
      bos_token: '<|endoftext|>',
      eos_token: '<|endoftext|>',
      unk_token: '<|endoftext|>',
    }),
  );
}

let multi: ModelRuntime;
let plain: ModelRuntime;
let generator: SelfSpeculativeGenerator;
beforeAll(async () => {
  multi = await ModelRuntime.load(MULTI, { threads: 1 });
  plain = await ModelRuntime.load(PLAIN, { threads: 1 });
  generator = new SelfSpeculativeGenerator(multi);
});
afterAll(async () => {
  await multi.dispose();
  await plain.dispose();
});

describe('multiExitOptions validation', () => {
  const off = (config: MultiExitConfiguration): MultiExitConfiguration => ({ useOriginalHead: false, ...config });

  it('contrast with the original head (the default) is a contradiction', () => {
    for (const config of [
      { contrastLayerIndices: [4, 2] },
      { useOriginalHead: true, contrastLayerIndices: [4, 2] },
    ] as MultiExitConfiguration[]) {
      const e = optionsError(() => multiExitOptions(multi, config));
      expect(e.code).toBe('CONTRADICTION');
      expect(e.message).toContain('useOriginalHead');
    }
  });

  it('an output layer together with a contrast, or with the original head, is a contradiction', () => {
    expect(optionsError(() => multiExitOptions(multi, off({ outputLayerIndex: 2, contrastLayerIndices: [4, 2] }))).code).toBe(
      'CONTRADICTION',
    );
    expect(optionsError(() => multiExitOptions(multi, { outputLayerIndex: 2 })).code).toBe('CONTRADICTION');
  });

  it('ACD settings without a contrast, or with a custom contrast function, are contradictions', () => {
    expect(optionsError(() => multiExitOptions(multi, off({ outputLayerIndex: 2, alpha: 0.2 }))).code).toBe('CONTRADICTION');
    expect(optionsError(() => multiExitOptions(multi, { minimumCandidates: 2 })).code).toBe('CONTRADICTION');
    const fn: ContrastFunction = (u, _l, out) => out.set(u);
    expect(optionsError(() => multiExitOptions(multi, off({ contrastLayerIndices: [4, 2], contrastFunction: fn, alpha: 0.5 }))).code).toBe(
      'CONTRADICTION',
    );
  });

  it('exits off with neither an output layer nor a contrast is an error', () => {
    expect(optionsError(() => multiExitOptions(multi, off({}))).code).toBe('INVALID_OPTION');
  });

  it('layer-specific layers must be lm_head_<l> heads of the checkpoint, naming the available ones', () => {
    for (const config of [off({ outputLayerIndex: 3 }), off({ contrastLayerIndices: [4, 1] }), off({ contrastLayerIndices: [3, 2] })]) {
      const e = optionsError(() => multiExitOptions(multi, config));
      expect(e.code).toBe('EXIT_NOT_IN_CHECKPOINT');
      expect(e.message).toContain('available: 2, 4');
    }
    // A checkpoint without exit heads has none.
    const e = optionsError(() => multiExitOptions(plain, off({ outputLayerIndex: 2, vocabProjectionMode: 'layer-specific' })));
    expect(e.code).toBe('EXIT_NOT_IN_CHECKPOINT');
    expect(e.message).toContain('available: none');
  });

  it('lmHeadLayerIndices restricts the exits and must name exits of the checkpoint', () => {
    const e = optionsError(() => multiExitOptions(multi, off({ outputLayerIndex: 2, lmHeadLayerIndices: [4] })));
    expect(e.code).toBe('EXIT_NOT_IN_CHECKPOINT');
    expect(e.message).toContain('available: 4');
    expect(multiExitOptions(multi, off({ outputLayerIndex: 4, lmHeadLayerIndices: [4] }))).toEqual({
      mode: 'early-exit',
      exitLayer: 4,
      exitHead: 'layer-specific',
    });
    const missing = optionsError(() => multiExitOptions(multi, off({ outputLayerIndex: 2, lmHeadLayerIndices: [2, 3] })));
    expect(missing.code).toBe('EXIT_NOT_IN_CHECKPOINT');
    expect(missing.message).toContain('available: 2, 4');
    expect(optionsError(() => multiExitOptions(multi, off({ outputLayerIndex: 2, lmHeadLayerIndices: [0] }))).code).toBe('INVALID_OPTION');
    expect(multiExitLayers(plain, 'shared-direct', [1, 3])).toEqual([1, 3]);
  });

  it('shared modes: any layer 1..L directly; cast only where a cast matrix exists, plus L', () => {
    expect(multiExitLayers(plain, 'shared-direct')).toEqual([1, 2, 3, 4]);
    for (let l = 1; l <= 4; l++) expect(multiExitOptions(plain, off({ outputLayerIndex: l })).exitLayer).toBe(l);
    const e = optionsError(() => multiExitOptions(plain, off({ outputLayerIndex: 5 })));
    expect(e.code).toBe('EXIT_NOT_IN_CHECKPOINT');
    expect(e.message).toContain('available: 1, 2, 3, 4');
    expect(multiExitLayers(multi, 'shared-cast')).toEqual([4]); // no cast matrices in this checkpoint
    expect(optionsError(() => multiExitOptions(multi, off({ outputLayerIndex: 2, vocabProjectionMode: 'shared-cast' }))).message).toContain(
      'available: 4',
    );
    // Under shared-cast, L is the model's own output.
    expect(multiExitOptions(multi, off({ outputLayerIndex: 4, vocabProjectionMode: 'shared-cast' }))).toEqual({
      mode: 'early-exit',
      exitLayer: 4,
      exitHead: 'shared',
    });
  });

  it('"original" only as the upper layer; the upper layer must lie above the lower one', () => {
    const e = optionsError(() => multiExitOptions(multi, off({ contrastLayerIndices: [4, 'original' as unknown as number] })));
    expect(e.code).toBe('INVALID_OPTION');
    expect(e.message).toContain('only allowed as the upper');
    for (const pair of [
      [2, 4],
      [2, 2],
    ] as [number, number][]) {
      const bad = optionsError(() => multiExitOptions(multi, off({ contrastLayerIndices: pair })));
      expect(bad.code).toBe('INVALID_OPTION');
      expect(bad.message).toContain('above the lower');
    }
    expect(optionsError(() => multiExitOptions(multi, off({ contrastLayerIndices: [4] as unknown as [number, number] }))).code).toBe(
      'INVALID_OPTION',
    );
  });

  it('an unknown projection mode lists the three valid ones', () => {
    const e = optionsError(() => multiExitOptions(multi, { vocabProjectionMode: 'shared' as never }));
    expect(e.code).toBe('INVALID_OPTION');
    for (const mode of VOCAB_PROJECTION_MODES) expect(e.message).toContain(`'${mode}'`);
    expect(VOCAB_PROJECTION_MODES).toHaveLength(3);
  });

  it('alpha must lie in (0, 1] and minimumCandidates be an integer ≥ 1', () => {
    for (const alpha of [0, -0.1, 1.5, Number.NaN]) {
      const e = optionsError(() => multiExitOptions(multi, off({ contrastLayerIndices: [4, 2], alpha })));
      expect([e.code, e.message.includes('alpha')]).toEqual(['INVALID_OPTION', true]);
    }
    for (const minimumCandidates of [0, -1, 1.5]) {
      const e = optionsError(() => multiExitOptions(multi, off({ contrastLayerIndices: [4, 2], minimumCandidates })));
      expect([e.code, e.message.includes('minimumCandidates')]).toEqual(['INVALID_OPTION', true]);
    }
    expect(multiExitOptions(multi, off({ contrastLayerIndices: [4, 2], alpha: 1, minimumCandidates: 3 }))).toMatchObject({
      alpha: 1,
      minimumCandidates: 3,
    });
  });

  it('a non-boolean useOriginalHead is an error', () => {
    expect(optionsError(() => multiExitOptions(multi, { useOriginalHead: 'false' as never })).code).toBe('INVALID_OPTION');
  });
});

describe('multiExitOptions mapping', () => {
  it('maps original head, output layer and contrast onto generator modes', () => {
    expect(multiExitOptions(multi)).toEqual({ mode: 'ar' });
    expect(multiExitOptions(multi, { useOriginalHead: true })).toEqual({ mode: 'ar' });
    expect(multiExitOptions(multi, { useOriginalHead: false, outputLayerIndex: 2 })).toEqual({
      mode: 'early-exit',
      exitLayer: 2,
      exitHead: 'layer-specific',
    });
    expect(multiExitOptions(multi, { useOriginalHead: false, contrastLayerIndices: [4, 2] })).toEqual({
      mode: 'acd',
      contrastLayers: [4, 2],
      exitHead: 'layer-specific',
      alpha: 0.1,
      minimumCandidates: 1,
    });
    expect(
      multiExitOptions(multi, {
        useOriginalHead: false,
        contrastLayerIndices: ['original', 3],
        vocabProjectionMode: 'shared-direct',
        alpha: 0.3,
      }),
    ).toEqual({
      mode: 'acd',
      contrastLayers: ['original', 3],
      exitHead: 'shared',
      alpha: 0.3,
      minimumCandidates: 1,
    });
    const fn: ContrastFunction = (u, _l, out) => out.set(u);
    expect(multiExitOptions(multi, { useOriginalHead: false, contrastLayerIndices: ['original', 2], contrastFunction: fn })).toEqual({
      mode: 'acd',
      contrastLayers: ['original', 2],
      exitHead: 'layer-specific',
      contrastFunction: fn,
    });
  });

  it('defaults the projection to the checkpoint: layer-specific with exit heads, else shared-direct', () => {
    expect(multiExitOptions(multi, { useOriginalHead: false, outputLayerIndex: 4 }).exitHead).toBe('layer-specific');
    expect(multiExitOptions(plain, { useOriginalHead: false, outputLayerIndex: 3 }).exitHead).toBe('shared');
  });

  it('describes a configuration as the library does', () => {
    expect(describeMultiExit({})).toBe('original_head');
    expect(describeMultiExit({ useOriginalHead: false, outputLayerIndex: 2 })).toBe('layer_2');
    expect(describeMultiExit({ useOriginalHead: false, contrastLayerIndices: ['original', 2] })).toBe('original_vs_2');
  });
});

describe('multi-exit decoding through the generator (gpt2-multiexit-tiny goldens)', () => {
  const acd: MultiExitConfiguration = { useOriginalHead: false, contrastLayerIndices: [4, 2] };

  it('greedy ACD 4 vs 2 (layer-specific) reproduces IBM MultiExitGPT2 contrast-mode greedy ids', async () => {
    const options = multiExitOptions(multi, acd);
    for (let k = 0; k < 3; k++) {
      const result = await generator.generate(ids(`input_ids_${k}`), { ...options, maxNewTokens: 24 });
      expect(result.ids).toEqual(ids(`acd_greedy_${k}`));
      expect(result.stats.mode).toBe('acd');
    }
  });

  it('early exit at head 2 starts with the argmax of HF exit-head logits and stays consistent with them', async () => {
    const options = multiExitOptions(multi, { useOriginalHead: false, outputLayerIndex: 2 });
    const stage = await multi.stage({ from: 0, to: 2, exits: [{ layer: 2, head: 'layer-specific' }] });
    for (let k = 0; k < 3; k++) {
      const prompt = ids(`input_ids_${k}`);
      const result = await generator.generate(prompt, { ...options, maxNewTokens: 12 });
      expect(result.ids).toHaveLength(12);
      expect(result.ids[0]).toBe(argmaxRow(golden.getF32(`exitheads_logits_${k}_2`), prompt.length - 1, V));
      // Every later token is the head-2 argmax after the sequence so far (one batched pass, fresh cache).
      const sequence = [...prompt, ...result.ids.slice(0, -1)];
      const out = await stage.run(multi.createCache(), sequence, prompt.length - 1);
      for (let i = 0; i < result.ids.length; i++) expect(result.ids[i]).toBe(argmaxRow(out.logits[0], i, V));
    }
  });

  it('a custom contrast function is the one used', async () => {
    const prompt = ids('input_ids_1');
    const lowerOnly = multiExitOptions(multi, { ...acd, contrastFunction: (_u, l, out) => out.set(l) });
    const upperOnly = multiExitOptions(multi, { ...acd, contrastFunction: (u, _l, out) => out.set(u) });
    const exit = (layer: number) =>
      generator.generate(prompt, { ...multiExitOptions(multi, { useOriginalHead: false, outputLayerIndex: layer }), maxNewTokens: 10 });
    // Head 2 only reads layers 0–1, computed identically by both modes, so the token streams coincide.
    expect((await generator.generate(prompt, { ...lowerOnly, maxNewTokens: 10 })).ids).toEqual((await exit(2)).ids);
    expect((await generator.generate(prompt, { ...upperOnly, maxNewTokens: 10 })).ids).toEqual((await exit(4)).ids);
    expect((await exit(2)).ids).not.toEqual((await exit(4)).ids);
  });

  it('sampled ACD is deterministic by seed', async () => {
    const options: GenerateOptions = { ...multiExitOptions(multi, acd), doSample: true, maxNewTokens: 16 };
    const prompt = ids('input_ids_0');
    const a = await generator.generate(prompt, { ...options, seed: 7 });
    const b = await generator.generate(prompt, { ...options, seed: 7 });
    const c = await generator.generate(prompt, { ...options, seed: 8 });
    expect(a.ids).toHaveLength(16);
    expect(a.ids.every((id) => Number.isInteger(id) && id >= 0 && id < V)).toBe(true);
    expect(b.ids).toEqual(a.ids);
    expect(c.ids).not.toEqual(a.ids);
    // Sampling ACD differs from its greedy decoding somewhere.
    const greedy = await generator.generate(prompt, { ...options, doSample: false });
    expect(greedy.ids).not.toEqual(a.ids);
  });

  describe('streaming text (512-entry byte-level BPE tokenizer in a temporary model directory)', () => {
    let dir: string;
    let textGenerator: SelfSpeculativeGenerator;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'mexit-multiexit-'));
      for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(MULTI, f), join(dir, f));
      writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 511, bos_token_id: 511 }));
      writeTinyTokenizer(dir);
      textGenerator = await SelfSpeculativeGenerator.fromPretrained(dir, { threads: 1 });
    });
    afterAll(async () => {
      await textGenerator?.dispose();
      rmSync(dir, { recursive: true, force: true });
    });

    it('stream() yields text deltas that add up to the decoded ids', async () => {
      const tokenizer = textGenerator.runtime.tokenizer!;
      const sample = 'Once upon a time, there was a cat.';
      expect(tokenizer.encode(sample).every((id) => id >= 0 && id < 511)).toBe(true);
      expect(tokenizer.decode(tokenizer.encode(sample))).toBe(sample);
      for (const config of [acd, { useOriginalHead: false, outputLayerIndex: 2 }, {}] as MultiExitConfiguration[]) {
        const options: GenerateOptions = { ...multiExitOptions(textGenerator.runtime, config), maxNewTokens: 20 };
        const stream = textGenerator.stream('Once upon a time, there was', options);
        const deltas: string[] = [];
        let step = await stream.next();
        while (!step.done) {
          deltas.push(step.value);
          step = await stream.next();
        }
        const result = step.value;
        expect(deltas.length).toBeGreaterThan(1);
        expect(deltas.every((d) => d.length > 0)).toBe(true);
        expect(deltas.join('')).toBe(result.text);
        expect(result.text).toBe(tokenizer.decode(result.ids, { skipSpecialTokens: true }));
        // The same ids as a non-streamed call with the prompt's ids.
        const prompt = tokenizer.encode('Once upon a time, there was');
        expect((await textGenerator.generate(prompt, options)).ids).toEqual(result.ids);
      }
    });
  });
});
