/**
 * The runtime against HF transformers' own outputs (fixtures/goldens, made by HF modelling code):
 * per-layer hidden states, every exit's logits, final logits, greedy generations, chunked prefill
 * through the KV cache, .bin vs .safetensors twins, IBM exit heads, and the malicious pickle.
 */
import { describe, expect, it, afterAll } from 'vitest';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { CheckpointError, openSafetensors, type TensorMap } from '@mexit/core';
import { ModelRuntime } from '@mexit/model';

const goldensDir = fileURLToPath(new URL('../../../fixtures/goldens/', import.meta.url));
const MODELS = ['gpt2-tiny', 'gpt-neo-tiny', 'llama2-tiny', 'llama32-tiny', 'gpt2-multiexit-tiny'] as const;
const runtimes: ModelRuntime[] = [];

afterAll(async () => {
  for (const r of runtimes) await r.dispose();
});

async function load(name: string): Promise<ModelRuntime> {
  const r = await ModelRuntime.load(goldensDir + name, { threads: 1 });
  runtimes.push(r);
  return r;
}

function ids(golden: TensorMap, name: string): number[] {
  return Array.from(golden.get(name).data as BigInt64Array, Number);
}

/** Max violation of |a − b| ≤ atol + rtol·|b| (≤ 0 means within tolerance). */
function worstExcess(actual: Float32Array, expected: Float32Array, atol: number, rtol = 1e-5): number {
  expect(actual.length).toBe(expected.length);
  let worst = -Infinity;
  for (let i = 0; i < expected.length; i++) {
    const excess = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    worst = Number.isNaN(excess) ? Infinity : Math.max(worst, excess);
  }
  return worst;
}

function argmax(x: Float32Array, offset: number, len: number): number {
  let best = 0;
  for (let i = 1; i < len; i++) if (x[offset + i] > x[offset + best]) best = i;
  return best;
}

for (const name of MODELS) {
  describe(`${name} matches HF transformers`, () => {
    const golden = openSafetensors(`${goldensDir}${name}/goldens.safetensors`);

    it('exit logits at every layer and final logits, all positions', async () => {
      const rt = await load(name);
      const L = rt.numLayers;
      const exits = Array.from({ length: L }, (_, i) => ({ layer: i + 1 }));
      const stage = await rt.stage({ from: 0, to: L, exits });
      for (let k = 0; k < 3; k++) {
        const cache = rt.createCache();
        const out = await stage.run(cache, ids(golden, `input_ids_${k}`));
        for (let l = 1; l <= L; l++) {
          expect(worstExcess(out.logits[l - 1], golden.getF32(`exit_logits_${k}_${l}`), 1e-4)).toBeLessThanOrEqual(0);
        }
        expect(worstExcess(out.logits[L - 1], golden.getF32(`logits_${k}`), 1e-4)).toBeLessThanOrEqual(0);
      }
    });

    it('hidden state after every block, one stage per layer chained through the cache', async () => {
      const rt = await load(name);
      const L = rt.numLayers;
      const d = rt.config.hiddenSize;
      for (let k = 0; k < 3; k++) {
        const cache = rt.createCache();
        const hiddenRef = golden.getF32(`hidden_${k}`); // [L+1, T, d]; the last entry is final-normed
        const T = hiddenRef.length / ((L + 1) * d);
        let h: Float32Array | number[] = ids(golden, `input_ids_${k}`);
        for (let l = 0; l < L - 1; l++) {
          const out = await (await rt.stage({ from: l, to: l + 1 })).run(cache, h);
          h = out.hidden;
          const ref = hiddenRef.subarray((l + 1) * T * d, (l + 2) * T * d);
          expect(worstExcess(out.hidden, ref, 2e-4)).toBeLessThanOrEqual(0);
        }
      }
    });

    it('greedy generation (24 tokens) equals HF generate, with and without cache', async () => {
      const rt = await load(name);
      const L = rt.numLayers;
      const V = rt.config.vocabSize;
      const stage = await rt.stage({ from: 0, to: L, exits: [{ layer: L }] });
      for (let k = 0; k < 3; k++) {
        const cache = rt.createCache();
        const generated: number[] = [];
        let pending = ids(golden, `input_ids_${k}`);
        for (let step = 0; step < 24; step++) {
          const out = await stage.run(cache, pending, pending.length - 1);
          const next = argmax(out.logits[0], 0, V);
          generated.push(next);
          pending = [next];
        }
        expect(generated).toEqual(ids(golden, `greedy_${k}`));
        expect(ids(golden, `greedy_nocache_${k}`)).toEqual(ids(golden, `greedy_${k}`));
      }
    });

    it('two-chunk prefill through the cache equals one pass (step_logits), first chunk without logits', async () => {
      const rt = await load(name);
      const L = rt.numLayers;
      const stage = await rt.stage({ from: 0, to: L, exits: [{ layer: L }] });
      for (let k = 0; k < 3; k++) {
        const prompt = ids(golden, `input_ids_${k}`);
        const h = Math.floor(prompt.length / 2);
        const cache = rt.createCache();
        // logitsStart = n: the first chunk asks for no logits rows (how the drafter feeds its last draft)
        const first = await stage.run(cache, prompt.slice(0, h), h);
        expect(first.logits[0].length).toBe(0);
        const out = await stage.run(cache, prompt.slice(h), prompt.length - h - 1);
        expect(worstExcess(out.logits[0], golden.getF32(`step_logits_${k}`), 1e-4)).toBeLessThanOrEqual(0);
      }
    });

    it('pytorch_model.bin twin gives identical logits', async () => {
      const rt = await load(name);
      const bin = await load(`${name}-bin`);
      const L = rt.numLayers;
      const a = await rt.stage({ from: 0, to: L, exits: [{ layer: L }, { layer: 1 }] });
      const b = await bin.stage({ from: 0, to: L, exits: [{ layer: L }, { layer: 1 }] });
      const prompt = ids(golden, 'input_ids_2');
      const outA = await a.run(rt.createCache(), prompt);
      const outB = await b.run(bin.createCache(), prompt);
      expect(outB.logits[0]).toEqual(outA.logits[0]);
      expect(outB.logits[1]).toEqual(outA.logits[1]);
    });

    if (name === 'gpt2-multiexit-tiny') {
      it('IBM layer-specific exit heads match exitheads_logits', async () => {
        const rt = await load(name);
        expect(rt.availableExits().layerSpecific).toEqual([2, 4]);
        const stage = await rt.stage({
          from: 0,
          to: 4,
          exits: [
            { layer: 2, head: 'layer-specific' },
            { layer: 4, head: 'layer-specific' },
          ],
        });
        for (let k = 0; k < 3; k++) {
          const out = await stage.run(rt.createCache(), ids(golden, `input_ids_${k}`));
          expect(worstExcess(out.logits[0], golden.getF32(`exitheads_logits_${k}_2`), 1e-4)).toBeLessThanOrEqual(0);
          expect(worstExcess(out.logits[1], golden.getF32(`exitheads_logits_${k}_4`), 1e-4)).toBeLessThanOrEqual(0);
        }
      });
    }
  });
}

describe('quantized stages (drafts only)', () => {
  it('int8 / int4 llama2-tiny: int8 exit logits near HF with the argmax kept, int4 further off', async () => {
    const rt = await load('llama2-tiny');
    const golden = openSafetensors(`${goldensDir}llama2-tiny/goldens.safetensors`);
    const prompt = ids(golden, 'input_ids_0');
    const expected = golden.getF32('exit_logits_0_2');
    const V = rt.config.vocabSize;
    const errors: number[] = [];
    for (const quantize of ['int8', 'int4'] as const) {
      const stage = await rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }], quantize });
      expect(stage.weightBytes).toBeLessThan((await rt.stage({ from: 0, to: 2, exits: [{ layer: 2 }] })).weightBytes);
      const out = (await stage.run(rt.createCache(), prompt)).logits[0];
      let worst = 0;
      let scale = 0;
      let agree = 0;
      for (let i = 0; i < expected.length; i++) {
        worst = Math.max(worst, Math.abs(out[i] - expected[i]));
        scale = Math.max(scale, Math.abs(expected[i]));
      }
      const rows = expected.length / V;
      for (let r = 0; r < rows; r++) agree += argmax(out, r * V, V) === argmax(expected, r * V, V) ? 1 : 0;
      expect(worst).toBeGreaterThan(0); // really quantized, not the F32 path
      // Measured: int8 6.5% of the largest logit, every argmax kept; int4 69%, 1 in 5 kept (random tiny
      // weights give near-flat logits; on the trained bundled model int4 keeps ~95% of draft argmaxes).
      if (quantize === 'int8') {
        expect(worst / scale).toBeLessThan(0.15);
        expect(agree / rows).toBeGreaterThanOrEqual(0.9);
      } else {
        expect(Number.isFinite(worst)).toBe(true);
      }
      errors.push(worst);
    }
    expect(errors[0]).toBeLessThan(errors[1]);
  });
});

describe('chain stages (greedy drafts in one call)', () => {
  // The chain stage must draft exactly what per-token calls with argmax draft, and leave the same K/V rows.
  const cases = [
    { model: 'llama2-tiny', exit: { layer: 2 }, quantize: 'int8' as const },
    { model: 'llama2-tiny', exit: { layer: 1 }, quantize: undefined },
    { model: 'gpt2-multiexit-tiny', exit: { layer: 2, head: 'layer-specific' as const }, quantize: undefined, feedLast: true },
    { model: 'llama2-tiny', exit: { layer: 3 }, quantize: undefined, feedLast: true },
    // GPT-Neo's local layers (window 8) keep a mask in the one-row passes: 9 + 2 + 6 positions exceed the window.
    { model: 'gpt-neo-tiny', exit: { layer: 2 }, quantize: undefined, feedLast: true },
    { model: 'gpt-neo-tiny', exit: { layer: 4 }, quantize: 'int8' as const },
  ];
  for (const { model, exit, quantize, feedLast } of cases) {
    it(`${model}, exit ${exit.layer}${exit.head ? ` (${exit.head})` : ''}, ${quantize ?? 'f32'}${feedLast ? ', last draft fed' : ''}: drafts, hidden and K/V rows equal per-step argmax`, async () => {
      const rt = await load(model);
      const spec = { from: 0, to: exit.layer, exits: [exit], quantize };
      const step = await rt.stage(spec);
      const V = rt.config.vocabSize;
      const d = rt.config.hiddenSize;
      for (const [promptLength, chainLength] of [
        [1, 1],
        [5, 3],
        [9, 6],
      ]) {
        const chain = await rt.stage({ ...spec, chain: chainLength, chainFeedsLast: feedLast });
        const prompt = Array.from({ length: promptLength }, (_, i) => (i * 7919 + chainLength) % V);
        const stepCache = rt.createCache();
        const chainCache = rt.createCache();
        // A history already in both caches, so the chain's passes read a non-empty past.
        await step.run(stepCache, prompt, promptLength);
        await step.run(chainCache, prompt, promptLength);
        const expected: number[] = [];
        const hiddens: number[] = [];
        // Pass 0 feeds two rows after a longer history (as a catch-up does), one row after a one-token prompt.
        const first = promptLength > 1 ? [3, 5] : [3];
        let input = first;
        for (let i = 0; i < chainLength; i++) {
          const out = await step.run(stepCache, input, input.length - 1);
          expected.push(argmax(out.logits[0], 0, V));
          hiddens.push(...out.hidden);
          input = [expected[i]];
        }
        if (feedLast) hiddens.push(...(await step.run(stepCache, input, input.length)).hidden);
        const { drafts, hidden } = await chain.runChain(chainCache, first);
        expect(Array.from(drafts, Number)).toEqual(expected);
        expect(chainCache.length(0)).toBe(stepCache.length(0));
        expect(hidden.length).toBe((chainLength - (feedLast ? 0 : 1) + first.length) * d);
        expect(Math.max(...hidden.map((x, i) => Math.abs(x - hiddens[i])))).toBeLessThan(1e-5);
        for (let l = 0; l < exit.layer; l++) {
          const a = stepCache.view(l, stepCache.length(l));
          const b = chainCache.view(l, chainCache.length(l));
          let worst = 0;
          for (let i = 0; i < a.k.length; i++) worst = Math.max(worst, Math.abs(a.k[i] - b.k[i]), Math.abs(a.v[i] - b.v[i]));
          expect(worst).toBeLessThan(1e-5);
        }
      }
    });
  }
});

describe('unsafe checkpoints', () => {
  it('gpt2-tiny-evil is refused by the restricted unpickler before anything runs', async () => {
    expect(existsSync(`${goldensDir}gpt2-tiny-evil/pytorch_model.bin`)).toBe(true);
    const err = await ModelRuntime.load(`${goldensDir}gpt2-tiny-evil`).catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.code).toBe('PICKLE_FORBIDDEN_GLOBAL');
  });
});
