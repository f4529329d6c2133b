import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MexitError, OptionsError, logSoftmax, openSafetensors } from '@mexit/core';
import { AutoContrast, resolveAcdOptions, type AcdOptions } from '../src/modes/acd.js';

/** ACD log-probs through the one public entry point (a fresh AutoContrast per call). */
const acdLogProbs = (upper: Float32Array, lower: Float32Array, out: Float32Array, options?: AcdOptions) =>
  new AutoContrast(upper.length, options).logProbs(upper, lower, out);

const GOLDENS = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-multiexit-tiny/goldens.safetensors', import.meta.url));

const f32 = (values: number[]) => Float32Array.from(values);

/** Straight-from-the-definition ACD in float64 (sorts for the k-th largest), independent of the fast path. */
function referenceAcd(upper: Float32Array, lower: Float32Array, alpha: number, k: number): Float64Array {
  const n = upper.length;
  let max = -Infinity;
  for (const z of upper) max = Math.max(max, z);
  let sum = 0;
  for (const z of upper) sum += Math.exp(z - max);
  const pu = Array.from(upper, (z) => Math.exp(z - max) / sum);
  const sorted = [...pu].sort((a, b) => b - a);
  const tau = Math.min(alpha * sorted[0], sorted[Math.min(k, n) - 1]);
  const head = pu.map((p) => p >= tau);
  const headMass = pu.reduce((acc, p, x) => acc + (head[x] ? p : 0), 0);
  let headDenominator = 0;
  for (let x = 0; x < n; x++) if (head[x]) headDenominator += Math.exp(upper[x] - lower[x]);
  const out = new Float64Array(n);
  for (let x = 0; x < n; x++) {
    out[x] = head[x] ? Math.log((headMass * Math.exp(upper[x] - lower[x])) / headDenominator) : Math.log(pu[x]);
  }
  return out;
}

/** Deterministic pseudo-random logits (LCG), so the test needs nothing from the RNG under development. */
function randomLogits(n: number, seed: number, scale: number): Float32Array {
  let state = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = (state / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThanOrEqual(tolerance);
}

function sumExp(logProbs: Float32Array): number {
  let sum = 0;
  for (const v of logProbs) sum += Math.exp(v);
  return sum;
}

describe('acdLogProbs', () => {
  const upper = f32([2, 1.5, 0.5, -1, 0]);
  const lower = f32([2.5, 0.5, 0.2, -1, 0.1]);

  it('reproduces the worked example of REFERENCE §4', () => {
    const out = acdLogProbs(upper, lower, new Float32Array(5));
    expectClose(out, [-2.244122, -0.744122, -1.444122, -3.700512, -1.844122], 1e-5);
    // Token 3 is outside the head set: it keeps log p_u, not −∞.
    expect(out[3]).toBeCloseTo(-1 - Math.log(Math.exp(2) + Math.exp(1.5) + Math.exp(0.5) + Math.exp(-1) + 1), 6);
  });

  it('follows alpha and minimumCandidates (values computed independently in float64)', () => {
    // alpha 0.5: H = {0, 1}.
    expectClose(
      acdLogProbs(upper, lower, new Float32Array(5), { alpha: 0.5 }),
      [-1.9278479, -0.4278479, -2.2005116, -3.7005116, -2.7005116],
      1e-5,
    );
    // alpha 0.5 but at least 3 candidates: H = {0, 1, 2}.
    expectClose(
      acdLogProbs(upper, lower, new Float32Array(5), { alpha: 0.5, minimumCandidates: 3 }),
      [-2.1385398, -0.6385398, -1.3385398, -3.7005116, -2.7005116],
      1e-5,
    );
    // More candidates than tokens: every token is in H, S = 1, out = logSoftmax(upper − lower).
    expectClose(
      acdLogProbs(upper, lower, new Float32Array(5), { minimumCandidates: 10 }),
      [-2.3839601, -0.8839601, -1.5839601, -1.8839601, -1.9839601],
      1e-5,
    );
  });

  it('is exactly logSoftmax(upper) when the head set has one token', () => {
    // Others in [−2, 0], the top token ln 10 + margin above them: alone in H, yet p_u(top) is far from 1, so
    // bit-exactness is a real requirement (the general formula gives log S + d − d, rounded differently).
    for (let seed = 1; seed <= 40; seed++) {
      const vocab = 16 + seed * 3;
      const peaked = randomLogits(vocab, seed, 1).map((z) => z - 1);
      const top = seed % vocab;
      peaked[top] = 2.31 + (seed % 7) * 0.3;
      const lowerLogits = randomLogits(vocab, seed + 500, 3);
      const expected = logSoftmax(peaked, new Float32Array(vocab));
      const out = acdLogProbs(peaked, lowerLogits, new Float32Array(vocab));
      expect(out.every((v, i) => Object.is(v, expected[i]))).toBe(true);
    }
  });

  it('stays finite when the lower probabilities underflow', () => {
    const upperLogits = f32([0, 0, -10, -10, -3]);
    const lowerLogits = f32([1000, -1000, 0, 0, -1000]);
    const out = acdLogProbs(upperLogits, lowerLogits, new Float32Array(5));
    expect(out.every(Number.isFinite)).toBe(true);
    // H = {0, 1} (p_u(4) ≈ 0.024 < 0.1 · 0.49): token 1 takes all of S, token 0 is ~2000 nats below it.
    const logZ = Math.log(2 + 2 * Math.exp(-10) + Math.exp(-3));
    const logS = Math.log(2 / Math.exp(logZ));
    expect(out[1]).toBeCloseTo(logS, 5);
    expect(out[0]).toBeCloseTo(logS - 2000, 2);
    expect(out[4]).toBeCloseTo(-3 - logZ, 5);
    expect(sumExp(out)).toBeCloseTo(1, 6);
  });

  it('matches a float64 reference from the definition on random logits, and exp(out) sums to 1', () => {
    const vocab = 300;
    for (let seed = 1; seed <= 12; seed++) {
      const upperLogits = randomLogits(vocab, seed, 4);
      const lowerLogits = randomLogits(vocab, seed + 1000, 4);
      const alpha = [0.1, 0.05, 0.3, 1][seed % 4];
      const minimumCandidates = [1, 2, 5][seed % 3];
      const out = acdLogProbs(upperLogits, lowerLogits, new Float32Array(vocab), { alpha, minimumCandidates });
      expectClose(out, referenceAcd(upperLogits, lowerLogits, alpha, minimumCandidates), 2e-5);
      expect(sumExp(out)).toBeCloseTo(1, 5);
    }
  });

  it('agrees across fresh and reused AutoContrast instances, its contrast function and in-place output', () => {
    const vocab = 200;
    const upperLogits = randomLogits(vocab, 42, 3);
    const lowerLogits = randomLogits(vocab, 43, 3);
    const expected = acdLogProbs(upperLogits, lowerLogits, new Float32Array(vocab), { alpha: 0.05 });
    expect(Array.from(expected)).not.toEqual(Array.from(logSoftmax(upperLogits, new Float32Array(vocab))));

    const auto = new AutoContrast(vocab, { alpha: 0.05 });
    for (let round = 0; round < 2; round++) {
      const out = auto.logProbs(upperLogits, lowerLogits, new Float32Array(vocab)); // scratch reused
      expect(Array.from(out)).toEqual(Array.from(expected));
    }
    expect(Array.from(auto.logProbs(upperLogits, lowerLogits, new Float32Array(vocab)))).toEqual(Array.from(expected));
    const viaContrast = new Float32Array(vocab);
    auto.contrast(upperLogits, lowerLogits, viaContrast);
    expect(Array.from(viaContrast)).toEqual(Array.from(expected));

    const inPlace = upperLogits.slice();
    acdLogProbs(inPlace, lowerLogits, inPlace, { alpha: 0.05 });
    expect(Array.from(inPlace)).toEqual(Array.from(expected));
  });

  it.each([0, 1, 2])('matches IBM autocontrastive-gen on gpt2-multiexit-tiny prompt %i (acd_logprobs)', (k) => {
    const goldens = openSafetensors(GOLDENS);
    try {
      const upperRows = goldens.get(`exitheads_logits_${k}_4`);
      const [rows, vocab] = upperRows.shape;
      const upperLast = goldens.getF32(`exitheads_logits_${k}_4`).slice((rows - 1) * vocab, rows * vocab);
      const lowerLast = goldens.getF32(`exitheads_logits_${k}_2`).slice((rows - 1) * vocab, rows * vocab);
      const expected = goldens.getF32(`acd_logprobs_${k}`);
      const out = acdLogProbs(upperLast, lowerLast, new Float32Array(vocab));
      expectClose(out, expected, 1e-4);
      // The contrast must matter here, or the comparison proves nothing.
      let moved = 0;
      const plain = logSoftmax(upperLast, new Float32Array(vocab));
      for (let x = 0; x < vocab; x++) moved = Math.max(moved, Math.abs(plain[x] - expected[x]));
      expect(moved).toBeGreaterThan(1e-2);
    } finally {
      goldens.close();
    }
  });

  it('rejects bad options with OptionsError INVALID_OPTION naming the option and range', () => {
    const out = new Float32Array(5);
    for (const alpha of [0, -0.1, 1.5, Number.NaN, Infinity]) {
      expect(() => acdLogProbs(upper, lower, out, { alpha })).toThrowError(OptionsError);
      try {
        acdLogProbs(upper, lower, out, { alpha });
      } catch (error) {
        expect((error as OptionsError).code).toBe('INVALID_OPTION');
        expect((error as Error).message).toMatch(/alpha.*\(0, 1\]/);
      }
    }
    for (const minimumCandidates of [0, -1, 1.5, Number.NaN]) {
      try {
        acdLogProbs(upper, lower, out, { minimumCandidates });
        expect.unreachable();
      } catch (error) {
        expect(error).toBeInstanceOf(OptionsError);
        expect((error as OptionsError).code).toBe('INVALID_OPTION');
        expect((error as Error).message).toMatch(/minimumCandidates.*integer >= 1/);
      }
    }
    expect(() => new AutoContrast(5, { alpha: 2 })).toThrowError(OptionsError);
    expect(() => new AutoContrast(5, { minimumCandidates: 0 })).toThrowError(OptionsError);
    expect(resolveAcdOptions({ alpha: 1 })).toEqual({ alpha: 1, minimumCandidates: 1 });
  });

  it('rejects mismatched shapes and non-finite head-set contrasts with typed errors', () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        expect(error).toBeInstanceOf(MexitError);
        return (error as MexitError).code;
      }
      return 'no error';
    };
    expect(code(() => acdLogProbs(upper, lower, new Float32Array(4)))).toBe('SHAPE_MISMATCH');
    expect(code(() => acdLogProbs(upper, f32([1, 2]), new Float32Array(5)))).toBe('SHAPE_MISMATCH');
    const lowerCopy = lower.slice();
    expect(code(() => acdLogProbs(upper, lowerCopy, lowerCopy))).toBe('SHAPE_MISMATCH');
    expect(code(() => new AutoContrast(3).logProbs(upper, lower, new Float32Array(5)))).toBe('SHAPE_MISMATCH');
    expect(code(() => acdLogProbs(upper, f32([1, -Infinity, 0, 0, 0]), new Float32Array(5)))).toBe('NON_FINITE_LOGITS');
    expect(code(() => acdLogProbs(upper, f32([1, NaN, 0, 0, 0]), new Float32Array(5)))).toBe('NON_FINITE_LOGITS');
    expect(code(() => acdLogProbs(f32([1, NaN, 0, 0, 0]), lower, new Float32Array(5)))).toBe('NO_FINITE_LOGITS');
    // A NaN outside the head set (token 3 here) does not matter: the upper distribution is kept there.
    expect(acdLogProbs(upper, f32([2.5, 0.5, 0.2, NaN, 0.1]), new Float32Array(5)).every(Number.isFinite)).toBe(true);
  });
});
