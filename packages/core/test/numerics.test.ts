import { describe, expect, it } from 'vitest';
import { argmax, logSoftmax, logsumexp, softmax, topKIndices } from '@mexit/core';
import { expectMexitError, mulberry32 } from './support/helpers.js';

function randomLogits(n: number, seed: number, scale = 10): Float32Array {
  const rand = mulberry32(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (rand() - 0.5) * scale;
  return x;
}

// Hand values: e^1, e^2, e^3 = 2.718281828, 7.389056099, 20.08553692; sum = 30.19287485.
const SOFTMAX_123 = [0.09003057317, 0.2447284711, 0.6652409558];
const LSE_123 = 3.407605964; // ln(30.19287485)

describe('softmax', () => {
  it('matches the hand-computed 3-element example', () => {
    const out = softmax(new Float32Array([1, 2, 3]), new Float32Array(3));
    for (let i = 0; i < 3; i++) expect(out[i]).toBeCloseTo(SOFTMAX_123[i], 7);
  });

  it('sums to 1 on random logits and preserves order', () => {
    const x = randomLogits(1000, 1, 40);
    const out = softmax(x, new Float32Array(x.length));
    let sum = 0;
    for (const p of out) sum += p;
    expect(sum).toBeCloseTo(1, 5);
    // Monotone: a larger logit never gets a smaller probability.
    for (let i = 1; i < x.length; i++) {
      if (x[i] > x[i - 1]) expect(out[i]).toBeGreaterThanOrEqual(out[i - 1]);
      else expect(out[i]).toBeLessThanOrEqual(out[i - 1]);
    }
  });

  it('is stable for logits around 1e4', () => {
    const out = softmax(new Float32Array([1e4, 1e4 - 1, 1e4 - 2]), new Float32Array(3));
    expect(out[0]).toBeCloseTo(SOFTMAX_123[2], 6);
    expect(out[1]).toBeCloseTo(SOFTMAX_123[1], 6);
    expect(out[2]).toBeCloseTo(SOFTMAX_123[0], 6);
  });

  it('gives exactly 0 to -Infinity entries and no NaN', () => {
    const out = softmax(new Float32Array([0, -Infinity, 0, -Infinity]), new Float32Array(4));
    expect(Array.from(out)).toEqual([0.5, 0, 0.5, 0]);
  });

  it('works in place (out === logits)', () => {
    const x = new Float32Array([1, 2, 3]);
    const out = softmax(x, x);
    expect(out).toBe(x);
    for (let i = 0; i < 3; i++) expect(x[i]).toBeCloseTo(SOFTMAX_123[i], 7);
  });

  it('throws typed errors instead of writing NaN', () => {
    expectMexitError(() => softmax(new Float32Array([-Infinity, -Infinity]), new Float32Array(2)), 'NO_FINITE_LOGITS');
    expectMexitError(() => softmax(new Float32Array([1, NaN]), new Float32Array(2)), 'NO_FINITE_LOGITS');
    expectMexitError(() => softmax(new Float32Array([1, Infinity]), new Float32Array(2)), 'NO_FINITE_LOGITS');
    expectMexitError(() => softmax(new Float32Array(0), new Float32Array(0)), 'NO_FINITE_LOGITS');
    expectMexitError(() => softmax(new Float32Array(3), new Float32Array(2)), 'SHAPE_MISMATCH');
  });
});

describe('logSoftmax', () => {
  it('matches the hand-computed example', () => {
    const out = logSoftmax(new Float32Array([1, 2, 3]), new Float32Array(3));
    expect(out[0]).toBeCloseTo(1 - LSE_123, 6);
    expect(out[1]).toBeCloseTo(2 - LSE_123, 6);
    expect(out[2]).toBeCloseTo(3 - LSE_123, 6);
  });

  it('equals log(softmax) on random logits', () => {
    const x = randomLogits(500, 2, 20);
    const logp = logSoftmax(x, new Float32Array(x.length));
    const p = softmax(x, new Float32Array(x.length));
    for (let i = 0; i < x.length; i++) expect(logp[i]).toBeCloseTo(Math.log(p[i]), 4);
  });

  it('keeps -Infinity entries at -Infinity and works in place', () => {
    const x = new Float32Array([0, -Infinity, 0]);
    logSoftmax(x, x);
    expect(x[0]).toBeCloseTo(-Math.LN2, 7);
    expect(x[1]).toBe(-Infinity);
    expect(x[2]).toBeCloseTo(-Math.LN2, 7);
  });

  it('throws on all -Infinity', () => {
    expectMexitError(() => logSoftmax(new Float32Array([-Infinity]), new Float32Array(1)), 'NO_FINITE_LOGITS');
  });
});

describe('logsumexp', () => {
  it('matches known values', () => {
    expect(logsumexp(new Float32Array([0, 0]))).toBeCloseTo(Math.LN2, 12);
    expect(logsumexp(new Float32Array([1, 2, 3]))).toBeCloseTo(LSE_123, 8);
    expect(logsumexp(new Float32Array([1e4, 1e4]))).toBeCloseTo(1e4 + Math.LN2, 8);
    expect(logsumexp(new Float32Array([-Infinity, 0]))).toBe(0);
    expect(logsumexp(new Float32Array([5]))).toBe(5);
  });

  it('follows the maths at the edges', () => {
    expect(logsumexp(new Float32Array(0))).toBe(-Infinity);
    expect(logsumexp(new Float32Array([-Infinity, -Infinity]))).toBe(-Infinity);
    expect(logsumexp(new Float32Array([1, Infinity]))).toBe(Infinity);
    expect(logsumexp(new Float32Array([1, NaN]))).toBeNaN();
    expect(logsumexp(new Float32Array([-Infinity, NaN]))).toBeNaN();
  });
});

describe('argmax', () => {
  it('returns the first index of the max', () => {
    expect(argmax(new Float32Array([1, 3, 3, 2]))).toBe(1);
    expect(argmax(new Float32Array([5]))).toBe(0);
    expect(argmax(new Float32Array([-2, -1, -1]))).toBe(1);
    expect(argmax(new Float32Array([-Infinity, -Infinity]))).toBe(0);
    expect(argmax(new Float32Array([-Infinity, -5]))).toBe(1);
  });

  it('ignores NaN', () => {
    expect(argmax(new Float32Array([NaN, 1, 5, NaN, 5]))).toBe(2);
    expect(argmax(new Float32Array([NaN, -Infinity]))).toBe(1);
  });

  it('throws when there is no comparable entry', () => {
    expectMexitError(() => argmax(new Float32Array(0)), 'NO_COMPARABLE_VALUE');
    expectMexitError(() => argmax(new Float32Array([NaN, NaN])), 'NO_COMPARABLE_VALUE');
  });
});

describe('topKIndices', () => {
  /** Reference: stable sort of all indices by value descending (NaN last). */
  function referenceTopK(x: Float32Array, k: number): number[] {
    const key = (i: number) => (Number.isNaN(x[i]) ? -Infinity : x[i]);
    const rank = (i: number) => (Number.isNaN(x[i]) ? 1 : 0);
    return Array.from(x.keys())
      .sort((a, b) => rank(a) - rank(b) || key(b) - key(a) || a - b)
      .slice(0, k);
  }

  it('matches a sort-based reference on random data with ties', () => {
    for (const seed of [3, 4, 5]) {
      const rand = mulberry32(seed);
      const x = new Float32Array(300);
      // Few distinct levels so ties are common.
      for (let i = 0; i < x.length; i++) x[i] = Math.floor(rand() * 40) - 20;
      for (const k of [1, 2, 7, 50, 299, 300]) {
        const out = topKIndices(x, k, new Int32Array(k));
        expect(Array.from(out)).toEqual(referenceTopK(x, k));
      }
    }
  });

  it('matches the reference on continuous data, -Infinity and NaN', () => {
    const x = randomLogits(1000, 6, 100);
    x[10] = NaN;
    x[20] = -Infinity;
    x[30] = -Infinity;
    for (const k of [1, 10, 64, 998, 1000]) {
      const out = topKIndices(x, k, new Int32Array(k + 3));
      expect(Array.from(out.subarray(0, k))).toEqual(referenceTopK(x, k));
    }
  });

  it('handles a hand example and k = 0', () => {
    const x = new Float32Array([0.1, 0.9, 0.5, 0.9, 0.3]);
    expect(Array.from(topKIndices(x, 3, new Int32Array(3)))).toEqual([1, 3, 2]);
    const untouched = new Int32Array([7, 7]);
    expect(Array.from(topKIndices(x, 0, untouched))).toEqual([7, 7]);
  });

  it('rejects a bad k or a short buffer', () => {
    const x = new Float32Array(4);
    expectMexitError(() => topKIndices(x, 5, new Int32Array(5)), 'INVALID_ARGUMENT');
    expectMexitError(() => topKIndices(x, 1.5, new Int32Array(5)), 'INVALID_ARGUMENT');
    expectMexitError(() => topKIndices(x, -1, new Int32Array(5)), 'INVALID_ARGUMENT');
    expectMexitError(() => topKIndices(x, 3, new Int32Array(2)), 'SHAPE_MISMATCH');
  });
});
