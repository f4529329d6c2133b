import { describe, expect, it } from 'vitest';
import { MexitError, OptionsError } from '@mexit/core';
import {
  CONFIDENCE_MEASURES,
  calmThreshold,
  computeConfidence,
  parseConfidenceMeasure,
  saturationConfidence,
  softmaxMaxConfidence,
  topGapConfidence,
} from '../src/modes/calm-confidence.js';

const f32 = (values: number[]) => Float32Array.from(values);

function errorCode(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(MexitError);
    return (error as MexitError).code;
  }
  return 'no error';
}

describe('softmaxMaxConfidence', () => {
  it('is the top-1 softmax probability', () => {
    // softmax([2, 1, 0]) = [e², e, 1] / (e² + e + 1) = [0.6652410, 0.2447285, 0.0900306]
    expect(softmaxMaxConfidence(f32([2, 1, 0]))).toBeCloseTo(0.665241, 6);
    expect(softmaxMaxConfidence(f32([0, 1, 2]))).toBeCloseTo(0.665241, 6); // position does not matter
    expect(softmaxMaxConfidence(f32([3, 3, 3, 3]))).toBeCloseTo(0.25, 12);
    expect(softmaxMaxConfidence(f32([5]))).toBe(1);
    // Shift invariance and masked tokens.
    expect(softmaxMaxConfidence(f32([1002, 1001, 1000]))).toBeCloseTo(0.665241, 6);
    expect(softmaxMaxConfidence(f32([2, 1, 0, -Infinity]))).toBeCloseTo(0.665241, 6);
    expect(softmaxMaxConfidence(f32([40, 0, 0]))).toBeCloseTo(1, 12);
  });

  it('rejects empty, NaN and +Infinity logits', () => {
    expect(errorCode(() => softmaxMaxConfidence(f32([])))).toBe('NO_FINITE_LOGITS');
    expect(errorCode(() => softmaxMaxConfidence(f32([1, NaN])))).toBe('NO_FINITE_LOGITS');
    expect(errorCode(() => softmaxMaxConfidence(f32([1, Infinity])))).toBe('NO_FINITE_LOGITS');
    expect(errorCode(() => softmaxMaxConfidence(f32([-Infinity, -Infinity])))).toBe('NO_FINITE_LOGITS');
  });
});

describe('topGapConfidence', () => {
  it('is the top-1 minus top-2 softmax probability', () => {
    // 0.6652410 − 0.2447285
    expect(topGapConfidence(f32([2, 1, 0]))).toBeCloseTo(0.4205125, 6);
    expect(topGapConfidence(f32([0, 2, 1]))).toBeCloseTo(0.4205125, 6);
    // A tied top pair has no gap.
    expect(topGapConfidence(f32([3, 3, 1, 0]))).toBe(0);
    expect(topGapConfidence(f32([1, 3, 0, 3]))).toBe(0);
    // One token: p1 = 1, p2 = 0.
    expect(topGapConfidence(f32([0.5]))).toBe(1);
    // A masked runner-up: softmax([1, 0, -∞]) = [e/(e+1), 1/(e+1), 0] → gap (e−1)/(e+1).
    expect(topGapConfidence(f32([1, -Infinity, 0]))).toBeCloseTo((Math.E - 1) / (Math.E + 1), 6);
  });

  it('rejects empty and NaN logits', () => {
    expect(errorCode(() => topGapConfidence(f32([])))).toBe('NO_FINITE_LOGITS');
    expect(errorCode(() => topGapConfidence(f32([NaN, 1, 2])))).toBe('NO_FINITE_LOGITS');
  });
});

describe('saturationConfidence', () => {
  it('is the cosine similarity of consecutive exit hidden states', () => {
    expect(saturationConfidence(f32([1, 0, 0]), f32([1, 1, 0]))).toBeCloseTo(Math.SQRT1_2, 7);
    // [1,2,3]·[4,5,6] / (√14 · √77) = 32 / √1078
    expect(saturationConfidence(f32([1, 2, 3]), f32([4, 5, 6]))).toBeCloseTo(0.9746318, 7);
    expect(saturationConfidence(f32([1, 2, 3]), f32([2, 4, 6]))).toBeCloseTo(1, 12);
    expect(saturationConfidence(f32([1, 2, 3]), f32([-1, -2, -3]))).toBeCloseTo(-1, 12);
    expect(saturationConfidence(f32([1, 0]), f32([0, 5]))).toBe(0);
  });

  it('treats a zero vector as unsaturated and rejects bad inputs', () => {
    expect(saturationConfidence(f32([0, 0, 0]), f32([1, 2, 3]))).toBe(0);
    expect(saturationConfidence(f32([1, 2, 3]), f32([0, 0, 0]))).toBe(0);
    expect(errorCode(() => saturationConfidence(f32([1, 2]), f32([1, 2, 3])))).toBe('SHAPE_MISMATCH');
    expect(errorCode(() => saturationConfidence(f32([]), f32([])))).toBe('SHAPE_MISMATCH');
    expect(errorCode(() => saturationConfidence(f32([1, NaN]), f32([1, 2])))).toBe('NON_FINITE_HIDDEN');
  });
});

describe('calmThreshold', () => {
  it('decays from λ towards 0.9·λ: clip(0.9λ + 0.1λ·exp(−τt/N))', () => {
    expect(calmThreshold(0.9, 0, 100)).toBeCloseTo(0.9, 12);
    expect(calmThreshold(0.9, 50, 100)).toBeCloseTo(0.81 + 0.09 * Math.exp(-2), 12); // 0.8221802
    expect(calmThreshold(0.9, 100, 100)).toBeCloseTo(0.8116484, 7); // 0.81 + 0.09·e⁻⁴
    expect(calmThreshold(0.5, 10, 24)).toBeCloseTo(0.4594438, 7); // 0.45 + 0.05·e^(−40/24)
    expect(calmThreshold(0.9, 50, 100, 2)).toBeCloseTo(0.81 + 0.09 * Math.exp(-1), 12);
    expect(calmThreshold(0.7, 30, 100, 0)).toBeCloseTo(0.7, 12); // τ = 0: no decay
    // Monotone non-increasing in t.
    let previous = Infinity;
    for (let t = 0; t <= 64; t++) {
      const value = calmThreshold(0.8, t, 64);
      expect(value).toBeLessThanOrEqual(previous);
      previous = value;
    }
  });

  it('clips to [0, 1]', () => {
    expect(calmThreshold(1.5, 0, 10)).toBe(1);
    expect(calmThreshold(1.05, 10, 10)).toBeCloseTo(0.945 + 0.105 * Math.exp(-4), 12); // below 1 after decay
    expect(calmThreshold(-0.5, 3, 10)).toBe(0);
    expect(calmThreshold(0, 3, 10)).toBe(0);
  });

  it('rejects invalid arguments with OptionsError INVALID_OPTION', () => {
    const bad: Array<[number, number, number, number?]> = [
      [NaN, 0, 10],
      [0.9, -1, 10],
      [0.9, 0, 0],
      [0.9, 0, -5],
      [0.9, 0, 10, -1],
      [0.9, 0, 10, NaN],
      [0.9, Infinity, 10],
    ];
    for (const [lambda, t, n, tau] of bad) {
      expect(() => calmThreshold(lambda, t, n, tau)).toThrowError(OptionsError);
      expect(errorCode(() => calmThreshold(lambda, t, n, tau))).toBe('INVALID_OPTION');
    }
  });
});

describe('confidence dispatcher', () => {
  const logits = f32([2, 1, 0]);

  it('routes each measure to its function', () => {
    expect(computeConfidence('softmax', { logits })).toBeCloseTo(0.665241, 6);
    expect(computeConfidence('top-gap', { logits })).toBeCloseTo(0.4205125, 6);
    expect(computeConfidence('saturation', { prevHidden: f32([1, 0, 0]), hidden: f32([1, 1, 0]) })).toBeCloseTo(Math.SQRT1_2, 7);
  });

  it('names the missing input and validates measure names', () => {
    expect(errorCode(() => computeConfidence('softmax', {}))).toBe('CONFIDENCE_MISSING_INPUT');
    expect(errorCode(() => computeConfidence('saturation', { hidden: f32([1]) }))).toBe('CONFIDENCE_MISSING_INPUT');
    expect(() => computeConfidence('entropy' as never, { logits })).toThrowError(OptionsError);
    expect(CONFIDENCE_MEASURES).toEqual(['softmax', 'top-gap', 'saturation']);
    for (const measure of CONFIDENCE_MEASURES) expect(parseConfidenceMeasure(measure)).toBe(measure);
    try {
      parseConfidenceMeasure('Softmax');
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(OptionsError);
      expect((error as OptionsError).code).toBe('INVALID_OPTION');
      expect((error as Error).message).toContain("'softmax', 'top-gap', 'saturation'");
    }
  });
});
