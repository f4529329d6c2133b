/**
 * CALM adaptive exit through the generator on the golden models: the extremes against `ar`, early exit and
 * HF's own greedy ids / exit logits, exit statistics, the exit schedule, the confidence measures, and state
 * propagation against a reference loop that builds the skipped layers' K/V with ordinary layer stages.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OptionsError, openSafetensors, type TensorMap } from '@mexit/core';
import { ModelRuntime } from '@mexit/model';
import { SelfSpeculativeGenerator, type GenerateOptions, type GenerationResult } from '@mexit/speculative';
import { calmExitPoints } from '../src/modes/calm.js';

const goldenDir = (name: string) => fileURLToPath(new URL(`../../../fixtures/goldens/${name}`, import.meta.url));
const MODELS = ['gpt2-tiny', 'llama2-tiny'] as const;
const V = 512;
const L = 4;

const goldens = new Map<string, TensorMap>();
const generators = new Map<string, SelfSpeculativeGenerator>();
beforeAll(async () => {
  for (const name of [...MODELS, 'gpt2-multiexit-tiny']) {
    goldens.set(name, openSafetensors(`${goldenDir(name)}/goldens.safetensors`));
    generators.set(name, new SelfSpeculativeGenerator(await ModelRuntime.load(goldenDir(name), { threads: 1 })));
  }
});
afterAll(async () => {
  for (const g of generators.values()) await g.dispose();
});

const ids = (model: string, name: string) => Array.from(goldens.get(model)!.get(name).data as BigInt64Array, Number);
const prompt = (model: string, k: number) => ids(model, `input_ids_${k}`);

/** Largest softmax probability of row `row` (float64, written here independently of the engine). */
function maxProb(x: Float32Array, row: number, width = V): number {
  let max = -Infinity;
  for (let i = 0; i < width; i++) max = Math.max(max, x[row * width + i]);
  let sum = 0;
  for (let i = 0; i < width; i++) sum += Math.exp(x[row * width + i] - max);
  return 1 / sum;
}

function argmaxRow(x: Float32Array, row: number, width = V): number {
  let best = 0;
  for (let i = 1; i < width; i++) if (x[row * width + i] > x[row * width + best]) best = i;
  return best;
}

function histogramTotal(result: GenerationResult): number {
  return Object.values(result.stats.exitHistogram ?? {}).reduce((a, b) => a + b, 0);
}

/** EOS off: the reference loops below do not stop on it (llama2-tiny emits its EOS id 2 under early exit). */
const run = (model: string, p: number[], options: GenerateOptions) =>
  generators.get(model)!.generate(p, { maxNewTokens: 24, eosTokenIds: [], ...options });

for (const model of MODELS) {
  describe(`CALM on ${model}`, () => {
    it('threshold 1 (no decay) never exits early: identical to ar and to HF greedy', async () => {
      for (let k = 0; k < 3; k++) {
        const calm = await run(model, prompt(model, k), { mode: 'calm', calmThreshold: 1, calmDecay: 0 });
        const ar = await run(model, prompt(model, k), { mode: 'ar' });
        expect(calm.ids).toEqual(ar.ids);
        expect(calm.ids).toEqual(ids(model, `greedy_${k}`));
        expect(calm.stats.exitHistogram).toEqual({ [L]: 24 });
        expect(calm.stats.meanLayersPerToken).toBe(L);
      }
    });

    it('a tiny threshold exits every token at layer 1: identical to early exit at layer 1', async () => {
      for (let k = 0; k < 3; k++) {
        const p = prompt(model, k);
        const calm = await run(model, p, { mode: 'calm', calmThreshold: 1e-6, calmMinExitLayer: 1 });
        const early = await run(model, p, { mode: 'early-exit', exitLayer: 1, exitHead: 'shared' });
        // Exit 1 reads only layer 0, whose K/V both modes compute alike (CALM's propagated K/V sits above it).
        expect(calm.ids).toEqual(early.ids);
        expect(calm.stats.exitHistogram).toEqual({ 1: 24 });
        expect(calm.stats.meanLayersPerToken).toBe(1);
        expect(calm.stats.tokenSources.every((s) => s === 'draft')).toBe(true);
        expect(calm.ids[0]).toBe(argmaxRow(goldens.get(model)!.getF32(`exit_logits_${k}_1`), p.length - 1));
      }
    });

    it("the first token takes the first confident exit of HF's exit logits; statistics add up", async () => {
      const golden = goldens.get(model)!;
      let mixed = 0;
      for (const threshold of [0.04, 0.06, 0.09, 0.2]) {
        for (let k = 0; k < 3; k++) {
          const p = prompt(model, k);
          const calm = await run(model, p, { mode: 'calm', calmThreshold: threshold, maxNewTokens: 16 });
          // λ_0 = threshold (the decay starts at t = 0); exits 1..L−1, else the full model.
          let exit = L;
          for (let l = 1; l < L; l++) {
            if (maxProb(golden.getF32(`exit_logits_${k}_${l}`), p.length - 1) >= threshold) {
              exit = l;
              break;
            }
          }
          expect(calm.ids[0]).toBe(argmaxRow(golden.getF32(`exit_logits_${k}_${exit}`), p.length - 1));
          expect(histogramTotal(calm)).toBe(calm.stats.newTokens);
          const mean = calm.stats.meanLayersPerToken!;
          expect(mean).toBeGreaterThanOrEqual(1);
          expect(mean).toBeLessThanOrEqual(L);
          const weighted = Object.entries(calm.stats.exitHistogram!).reduce((a, [l, n]) => a + Number(l) * n, 0);
          expect(mean).toBeCloseTo(weighted / calm.stats.newTokens, 12);
          if (Object.keys(calm.stats.exitHistogram!).length > 1) mixed++;
        }
      }
      expect(mixed).toBeGreaterThan(0); // the thresholds do exercise mixed exits
    });

    it('exit interval 2 exits only at the listed points (1, 3, then L)', async () => {
      const runtime = generators.get(model)!.runtime;
      expect(calmExitPoints(runtime, 1, 2)).toEqual([1, 3, 4]);
      expect(calmExitPoints(runtime, 2, 2)).toEqual([2, 4]);
      expect(calmExitPoints(runtime, 4, 1)).toEqual([4]);
      const seen = new Set<number>();
      for (const threshold of [0.05, 0.07, 0.1]) {
        for (let k = 0; k < 3; k++) {
          const calm = await run(model, prompt(model, k), { mode: 'calm', calmThreshold: threshold, calmExitInterval: 2 });
          for (const l of Object.keys(calm.stats.exitHistogram!)) seen.add(Number(l));
          expect(histogramTotal(calm)).toBe(24);
        }
      }
      expect([...seen].every((l) => [1, 3, 4].includes(l))).toBe(true);
      expect(seen.size).toBeGreaterThan(1);
      const late = await run(model, prompt(model, 1), { mode: 'calm', calmThreshold: 1e-6, calmMinExitLayer: 2, calmExitInterval: 2 });
      expect(late.stats.exitHistogram).toEqual({ 2: 24 });
      expect(late.stats.meanLayersPerToken).toBe(2);
    });

    it("'saturation' and 'top-gap' confidence run; saturation never exits at the first exit point", async () => {
      for (let k = 0; k < 3; k++) {
        const saturation = await run(model, prompt(model, k), { mode: 'calm', calmConfidence: 'saturation', calmThreshold: 1e-6 });
        expect(histogramTotal(saturation)).toBe(24);
        // No earlier exit state to compare with at layer 1: its confidence is 0.
        expect(saturation.stats.exitHistogram![1]).toBeUndefined();
        const topGap = await run(model, prompt(model, k), { mode: 'calm', calmConfidence: 'top-gap', calmThreshold: 0.02 });
        expect(histogramTotal(topGap)).toBe(24);
        const ar = await run(model, prompt(model, k), { mode: 'ar' });
        const topGapAll = await run(model, prompt(model, k), { mode: 'calm', calmConfidence: 'top-gap', calmThreshold: 1, calmDecay: 0 });
        expect(topGapAll.ids).toEqual(ar.ids);
      }
    });

    it('state propagation: matches a reference loop that builds skipped K/V with ordinary layer stages', async () => {
      const runtime = generators.get(model)!.runtime;
      const points = [1, 2, 3, 4];
      const chunks = await Promise.all(
        points.map((l, i) => runtime.stage({ from: i === 0 ? 0 : points[i - 1], to: l, exits: [{ layer: l }] })),
      );
      const layerStages = await Promise.all(Array.from({ length: L }, (_, j) => runtime.stage({ from: j, to: j + 1 })));
      const d = runtime.config.hiddenSize;
      let readsPropagated = 0;
      for (const threshold of [0.05, 0.08]) {
        for (let k = 0; k < 3; k++) {
          const p = prompt(model, k);
          const cache = runtime.createCache();
          const tokens: number[] = [];
          const exits: number[] = [];
          let pending: number[] = p;
          for (let t = 0; t < 16; t++) {
            let input: number[] | Float32Array = pending;
            let exit = -1;
            let logits!: Float32Array;
            for (let i = 0; i < points.length; i++) {
              const rows = i === 0 ? input.length : input.length / d;
              const out = await chunks[i].run(cache, input, rows - 1);
              input = out.hidden;
              if (i === points.length - 1) {
                if (exit < 0) [exit, logits] = [L, out.logits[0]];
                break;
              }
              if (exit >= 0 || maxProb(out.logits[0], 0) < threshold) continue;
              [exit, logits] = [points[i], out.logits[0]];
              if (pending.length > 1) continue; // the prompt keeps its full K/V
              // K/V of each skipped layer j from the exit state: run layer j itself on it, ignore its output.
              for (let j = points[i]; j < L; j++) await layerStages[j].run(cache, out.hidden);
              break;
            }
            const token = argmaxRow(logits, 0);
            tokens.push(token);
            exits.push(exit);
            pending = [token];
          }
          const calm = await run(model, p, { mode: 'calm', calmThreshold: threshold, calmDecay: 0, maxNewTokens: 16 });
          expect(calm.ids).toEqual(tokens);
          // Full-depth tokens after early exits read propagated K/V.
          if (exits.slice(0, -1).some((l, t) => l < L && exits.slice(t + 1).some((m) => m > l))) readsPropagated++;
          const histogram: Record<number, number> = {};
          for (const l of exits) histogram[l] = (histogram[l] ?? 0) + 1;
          expect(calm.stats.exitHistogram).toEqual(histogram);
        }
      }
      expect(readsPropagated).toBeGreaterThan(2);
    });
  });
}

describe('CALM on gpt2-multiexit-tiny (layer-specific heads at 2 and 4)', () => {
  const model = 'gpt2-multiexit-tiny';

  it('reads exits through the checkpoint heads by default: exit points 2, then L', async () => {
    const runtime = generators.get(model)!.runtime;
    expect(calmExitPoints(runtime, 1, 1, 'layer-specific')).toEqual([2, 4]);
    expect(calmExitPoints(runtime, 1, 1, 'shared')).toEqual([1, 2, 3, 4]);
    for (let k = 0; k < 3; k++) {
      const p = prompt(model, k);
      const calm = await run(model, p, { mode: 'calm', calmThreshold: 1e-6 });
      const early = await run(model, p, { mode: 'early-exit', exitLayer: 2, exitHead: 'layer-specific' });
      expect(calm.stats.exitHistogram).toEqual({ 2: 24 });
      expect(calm.ids).toEqual(early.ids);
      const golden = goldens.get(model)!.getF32(`exitheads_logits_${k}_2`);
      expect(calm.ids[0]).toBe(argmaxRow(golden, p.length - 1));
    }
  });

  it('a schedule that hits no exit head is an OptionsError naming the available heads', async () => {
    const runtime = generators.get(model)!.runtime;
    expect(() => calmExitPoints(runtime, 3, 1, 'layer-specific')).toThrow(OptionsError);
    expect(() => calmExitPoints(runtime, 1, 2, 'layer-specific')).toThrow(/available layer-specific exits: 2/);
    await expect(run(model, prompt(model, 0), { mode: 'calm', calmMinExitLayer: 3 })).rejects.toMatchObject({
      code: 'EXIT_NOT_IN_CHECKPOINT',
    });
  });
});
