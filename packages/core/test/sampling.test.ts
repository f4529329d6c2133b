import { describe, expect, it } from 'vitest';
import { LogitsWarper, OptionsError, Rng, sampleCategorical, type WarpOptions } from '@mexit/core';
import { expectMexitError } from './support/helpers.js';

/** Straightforward BigInt PCG32 (pcg32_srandom_r / pcg32_random_r), independent of the Rng under test. */
function pcg32Reference(seed: bigint, stream: bigint, count: number): number[] {
  const mask = (1n << 64n) - 1n;
  const mult = 6364136223846793005n;
  const inc = ((stream << 1n) | 1n) & mask;
  let state = 0n;
  const step = () => {
    state = (state * mult + inc) & mask;
  };
  step();
  state = (state + seed) & mask;
  step();
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const old = state;
    step();
    const xorshifted = Number((((old >> 18n) ^ old) >> 27n) & 0xffffffffn);
    const rot = Number(old >> 59n);
    out.push(((xorshifted >>> rot) | (xorshifted << (-rot & 31))) >>> 0);
  }
  return out;
}

/** Chi-square statistic of observed counts against expected probabilities. */
function chiSquare(counts: number[], probs: number[], total: number): number {
  let stat = 0;
  for (let i = 0; i < counts.length; i++) {
    const expected = probs[i] * total;
    stat += (counts[i] - expected) ** 2 / expected;
  }
  return stat;
}

/** Reference softmax in float64 over plain numbers, -Infinity → 0. */
function refSoftmax(logits: number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((l) => Math.exp(l - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

function warp(logits: number[], options: WarpOptions, history: number[] = []): number[] {
  const warper = new LogitsWarper(logits.length, options);
  return Array.from(warper.probs(new Float32Array(logits), history, new Float32Array(logits.length)));
}

function expectProbs(actual: number[], expected: number[], digits = 6): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (expected[i] === 0) expect(actual[i], `index ${i}`).toBe(0);
    else expect(actual[i], `index ${i}`).toBeCloseTo(expected[i], digits);
  }
}

describe('Rng (PCG32)', () => {
  it('reproduces the published pcg32 demo vector (seed 42, stream 54)', () => {
    const rng = new Rng(42);
    const first = Array.from({ length: 6 }, () => rng.nextU32());
    expect(first).toEqual([0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]);
  });

  it('matches an independent BigInt implementation for several seeds', () => {
    for (const seed of [0, 1, 42, 0xffffffff, 2 ** 32, 123456789012345, Number.MAX_SAFE_INTEGER]) {
      const rng = new Rng(seed);
      const got = Array.from({ length: 50 }, () => rng.nextU32());
      expect(got, `seed ${seed}`).toEqual(pcg32Reference(BigInt(seed), 54n, 50));
    }
  });

  it('nextFloat is in [0, 1), uses the u32 stream and looks uniform', () => {
    const a = new Rng(7);
    const b = new Rng(7);
    expect(a.nextFloat()).toBe(b.nextU32() / 2 ** 32);
    const buckets = new Array<number>(10).fill(0);
    const n = 100_000;
    let sum = 0;
    let outOfRange = 0;
    for (let i = 0; i < n; i++) {
      const u = a.nextFloat();
      if (!(u >= 0 && u < 1)) outOfRange++;
      sum += u;
      buckets[Math.floor(u * 10)]++;
    }
    expect(outOfRange).toBe(0);
    expect(sum / n).toBeCloseTo(0.5, 2);
    // df = 9, p = 0.001 critical value 27.88.
    expect(chiSquare(buckets, new Array(10).fill(0.1), n)).toBeLessThan(27.88);
  });

  it('different seeds give different streams; invalid seeds throw', () => {
    expect(new Rng(1).nextU32()).not.toBe(new Rng(2).nextU32());
    for (const bad of [-1, 1.5, NaN, 2 ** 53]) expectMexitError(() => new Rng(bad), 'INVALID_OPTION', 'seed');
  });
});

describe('sampleCategorical', () => {
  class FixedRng extends Rng {
    constructor(private readonly u: number) {
      super(0);
    }
    override nextFloat(): number {
      return this.u;
    }
  }

  it('inverts the CDF with one uniform, scaled by the sum', () => {
    const probs = new Float32Array([0.5, 0.5, 1]); // sums to 2
    expect(sampleCategorical(probs, new FixedRng(0))).toBe(0);
    expect(sampleCategorical(probs, new FixedRng(0.2499))).toBe(0);
    expect(sampleCategorical(probs, new FixedRng(0.25))).toBe(1);
    expect(sampleCategorical(probs, new FixedRng(0.4999))).toBe(1);
    expect(sampleCategorical(probs, new FixedRng(0.5))).toBe(2);
    expect(sampleCategorical(probs, new FixedRng(1 - 2 ** -32))).toBe(2);
  });

  it('never draws zero-probability entries, even at the edges', () => {
    const probs = new Float32Array([0, 0.5, 0, 0.5, 0]);
    expect(sampleCategorical(probs, new FixedRng(0))).toBe(1);
    expect(sampleCategorical(probs, new FixedRng(1 - 2 ** -32))).toBe(3);
  });

  it('matches the distribution on 100k draws (chi-square)', () => {
    // Unnormalised on purpose (sum 2), with a zero entry.
    const weights = [0.2, 0, 0.4, 0.6, 0.8];
    const probs = new Float32Array(weights);
    const rng = new Rng(2024);
    const counts = new Array<number>(weights.length).fill(0);
    const n = 100_000;
    for (let i = 0; i < n; i++) counts[sampleCategorical(probs, rng)]++;
    expect(counts[1]).toBe(0);
    const nonZero = [0, 2, 3, 4];
    // df = 3, p = 0.001 critical value 16.27.
    const stat = chiSquare(
      nonZero.map((i) => counts[i]),
      nonZero.map((i) => weights[i] / 2),
      n,
    );
    expect(stat).toBeLessThan(16.27);
  });

  it('rejects distributions without positive finite mass', () => {
    const rng = new Rng(1);
    expectMexitError(() => sampleCategorical(new Float32Array([0, 0]), rng), 'INVALID_DISTRIBUTION');
    expectMexitError(() => sampleCategorical(new Float32Array([NaN, -1]), rng), 'INVALID_DISTRIBUTION');
    expectMexitError(() => sampleCategorical(new Float32Array([1, Infinity]), rng), 'INVALID_DISTRIBUTION');
    expectMexitError(() => sampleCategorical(new Float32Array(0), rng), 'INVALID_DISTRIBUTION');
  });
});

describe('LogitsWarper options', () => {
  it('rejects invalid options with OptionsError naming the option', () => {
    const bad: Array<[WarpOptions, string]> = [
      [{ temperature: -0.1 }, 'temperature'],
      [{ temperature: NaN }, 'temperature'],
      [{ temperature: Infinity }, 'temperature'],
      [{ topK: -1 }, 'topK'],
      [{ topK: 2.5 }, 'topK'],
      [{ topP: 0 }, 'topP'],
      [{ topP: 1.01 }, 'topP'],
      [{ topP: NaN }, 'topP'],
      [{ minP: -0.01 }, 'minP'],
      [{ minP: 1.5 }, 'minP'],
      [{ repetitionPenalty: 0 }, 'repetitionPenalty'],
      [{ repetitionPenalty: -1 }, 'repetitionPenalty'],
      [{ topP: '0.9' as unknown as number }, 'topP'],
    ];
    for (const [options, name] of bad) {
      const error = expectMexitError(() => new LogitsWarper(10, options), 'INVALID_OPTION', name);
      expect(error).toBeInstanceOf(OptionsError);
    }
    expectMexitError(() => new LogitsWarper(0, {}), 'INVALID_OPTION', 'vocabSize');
  });

  it('accepts the boundary values', () => {
    expect(() => new LogitsWarper(10, { temperature: 0, topK: 0, topP: 1, minP: 0 })).not.toThrow();
    expect(() => new LogitsWarper(10, { topK: 100, topP: 1e-9, minP: 1, repetitionPenalty: 1e-3 })).not.toThrow();
  });
});

describe('LogitsWarper.probs', () => {
  it('with no options equals softmax and leaves logits untouched', () => {
    const logits = [1, 2, 3, -Infinity];
    const input = new Float32Array(logits);
    const warper = new LogitsWarper(4, {});
    const out = warper.probs(input, [], new Float32Array(4));
    expectProbs(Array.from(out), [0.09003057317, 0.2447284711, 0.6652409558, 0]);
    expect(Array.from(input)).toEqual(logits);
  });

  it('applies the repetition penalty once per distinct id (HF rule)', () => {
    // history repeats ids 0 and 1; penalty 2: 2 -> 1, -1 -> -2, -3 -> -6; 0.5 and 1.5 untouched.
    const logits = [2, -1, 0.5, -3, 1.5];
    const history = [0, 1, 1, 3, 0];
    const got = warp(logits, { repetitionPenalty: 2 }, history);
    expectProbs(got, refSoftmax([1, -2, 0.5, -6, 1.5]));
    // Applying it per occurrence would give [0.5, -4, 0.5, -6, 1.5]: make sure we are far from that.
    expect(Math.abs(got[0] - refSoftmax([0.5, -4, 0.5, -6, 1.5])[0])).toBeGreaterThan(0.05);
  });

  it('divides by the temperature', () => {
    // T = 0.5 -> logits [2, 4, 6]: e^0, e^2, e^4 = 1, 7.389056, 54.598150; sum 62.987206.
    expectProbs(warp([1, 2, 3], { temperature: 0.5 }), [0.01587624, 0.117310434, 0.866813326]);
  });

  it('temperature 0 gives a one-hot at the greedy token (after the penalty)', () => {
    expect(warp([1, 3, 2], { temperature: 0 })).toEqual([0, 1, 0]);
    // Penalty 2 on id 1: 3 -> 1.5 < 2, so the greedy token becomes 2.
    expect(warp([1, 3, 2], { temperature: 0, repetitionPenalty: 2 }, [1])).toEqual([0, 0, 1]);
  });

  it('top-k keeps ties with the k-th value', () => {
    const logits = [3, 1, 3, 2, 1];
    const e = Math.E;
    expectProbs(warp(logits, { topK: 1 }), [0.5, 0, 0.5, 0, 0]); // both 3s tie with the 1st value
    expectProbs(warp(logits, { topK: 2 }), [0.5, 0, 0.5, 0, 0]);
    // k = 3: e^3, e^3, e^2 -> e/(2e+1), e/(2e+1), 1/(2e+1)
    expectProbs(warp(logits, { topK: 3 }), [e / (2 * e + 1), 0, e / (2 * e + 1), 1 / (2 * e + 1), 0]);
    // k = 4: the 4th value is 1, tied with index 4 -> everything survives.
    expectProbs(warp(logits, { topK: 4 }), refSoftmax(logits));
    expectProbs(warp(logits, { topK: 50 }), refSoftmax(logits));
  });

  const QUARTET = [0.5, 0.3, 0.15, 0.05].map(Math.log);

  it('top-p keeps the smallest set of likely tokens whose mass reaches p', () => {
    expectProbs(warp(QUARTET, { topP: 0.8 }), [0.625, 0.375, 0, 0]);
    expectProbs(warp(QUARTET, { topP: 0.81 }), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]);
    expectProbs(warp(QUARTET, { topP: 0.5 }), [1, 0, 0, 0]);
    expectProbs(warp(QUARTET, { topP: 0.51 }), [0.625, 0.375, 0, 0]);
    expectProbs(warp(QUARTET, { topP: 0.96 }), [0.5, 0.3, 0.15, 0.05]);
    expectProbs(warp(QUARTET, { topP: 1e-6 }), [1, 0, 0, 0]);
    // Index order does not matter.
    const shuffled = [QUARTET[2], QUARTET[0], QUARTET[3], QUARTET[1]];
    expectProbs(warp(shuffled, { topP: 0.8 }), [0, 0.625, 0, 0.375]);
  });

  it('min-p drops tokens below minP * max prob', () => {
    // max prob 0.5: minP 0.35 -> threshold 0.175 keeps 0.5, 0.3; minP 0.25 -> 0.125 keeps three.
    expectProbs(warp(QUARTET, { minP: 0.35 }), [0.625, 0.375, 0, 0]);
    expectProbs(warp(QUARTET, { minP: 0.25 }), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0]);
    expectProbs(warp(QUARTET, { minP: 1 }), [1, 0, 0, 0]);
  });

  it('applies temperature before top-p (HF order)', () => {
    // Logits 2 ln[4, 2, 1]. At T = 2 probs are [4, 2, 1]/7 = [0.571, 0.286, 0.143]: top-p 0.7 keeps two
    // -> [2/3, 1/3, 0]. Top-p first (on [16, 4, 1]/21 = [0.762, ...]) would keep one token -> [1, 0, 0].
    const logits = [2 * Math.log(4), 2 * Math.log(2), 0];
    expectProbs(warp(logits, { temperature: 2, topP: 0.7 }), [2 / 3, 1 / 3, 0]);
  });

  it('applies temperature before min-p (HF order)', () => {
    // At T = 2 probs ∝ sqrt([0.5, 0.3, 0.15, 0.05]); ratios to the max: 1, 0.775, 0.548, 0.316.
    // min-p 0.4 keeps three; on the unscaled probs (ratios 1, 0.6, 0.3, 0.1) it would keep two.
    const s = [0.5, 0.3, 0.15].map(Math.sqrt);
    const z = s[0] + s[1] + s[2];
    expectProbs(warp(QUARTET, { temperature: 2, minP: 0.4 }), [s[0] / z, s[1] / z, s[2] / z, 0]);
  });

  it('combines top-k then top-p on the renormalised survivors', () => {
    // top-k 3 -> [0.5, 0.3, 0.15]/0.95 = [0.526, 0.316, 0.158]; top-p 0.8: 0.526 < 0.8 keeps the 2nd,
    // 0.842 >= 0.8 drops the 3rd.
    expectProbs(warp(QUARTET, { topK: 3, topP: 0.8 }), [0.625, 0.375, 0, 0]);
    // top-k 2 then top-p 0.6: [0.625, 0.375]; 0.625 >= 0.6 drops the second.
    expectProbs(warp(QUARTET, { topK: 2, topP: 0.6 }), [1, 0, 0, 0]);
  });

  it('matches a sort-based reference of the full pipeline on random logits', () => {
    /** HF pipeline written plainly: penalty, temperature, top-k, top-p (sorted), min-p, softmax. */
    function reference(logits: number[], history: number[], o: Required<WarpOptions>): number[] {
      const z = logits.slice();
      for (const id of new Set(history)) z[id] = logits[id] < 0 ? logits[id] * o.repetitionPenalty : logits[id] / o.repetitionPenalty;
      for (let i = 0; i < z.length; i++) z[i] /= o.temperature;
      if (o.topK > 0 && o.topK < z.length) {
        const kth = z.slice().sort((a, b) => b - a)[o.topK - 1];
        for (let i = 0; i < z.length; i++) if (z[i] < kth) z[i] = -Infinity;
      }
      if (o.topP < 1) {
        const p = refSoftmax(z);
        const order = Array.from(z.keys()).sort((a, b) => p[b] - p[a]);
        let before = 0;
        for (const i of order) {
          if (before >= o.topP) z[i] = -Infinity;
          before += p[i];
        }
      }
      if (o.minP > 0) {
        const p = refSoftmax(z);
        const maxP = Math.max(...p);
        for (let i = 0; i < z.length; i++) if (p[i] < o.minP * maxP) z[i] = -Infinity;
      }
      return refSoftmax(z);
    }
    let state = 99;
    const rand = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state / 2 ** 32;
    };
    const vocab = 1000;
    const cases: Array<Required<WarpOptions>> = [
      { temperature: 1, topK: 0, topP: 0.9, minP: 0, repetitionPenalty: 1 },
      { temperature: 0.7, topK: 0, topP: 0.5, minP: 0, repetitionPenalty: 1.3 },
      { temperature: 1.5, topK: 40, topP: 0.95, minP: 0, repetitionPenalty: 1 },
      { temperature: 1, topK: 0, topP: 0.99, minP: 0.05, repetitionPenalty: 1.1 },
      { temperature: 0.8, topK: 200, topP: 1, minP: 0.1, repetitionPenalty: 1 },
      { temperature: 1, topK: 0, topP: 0.3, minP: 0, repetitionPenalty: 1 },
    ];
    for (const options of cases) {
      const logits = Array.from({ length: vocab }, () => (rand() - 0.5) * 12);
      const f32 = Array.from(new Float32Array(logits));
      const history = Array.from({ length: 30 }, () => Math.floor(rand() * vocab));
      const got = warp(f32, options, history);
      const want = reference(f32, history, options);
      for (let i = 0; i < vocab; i++) {
        if (want[i] === 0) expect(got[i], `${JSON.stringify(options)} index ${i}`).toBe(0);
        else expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-6);
      }
    }
  });

  it('sums to 1, reuses its scratch across calls and allows out === logits', () => {
    const warper = new LogitsWarper(5, { topP: 0.9, temperature: 0.8 });
    const first = Array.from(warper.probs(new Float32Array([0, 1, 2, 3, 4]), [], new Float32Array(5)));
    warper.probs(new Float32Array([4, 3, 2, 1, 0]), [], new Float32Array(5));
    const again = warper.probs(new Float32Array([0, 1, 2, 3, 4]), [], new Float32Array(5));
    expect(Array.from(again)).toEqual(first);
    expect(first.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    const inPlace = new Float32Array([0, 1, 2, 3, 4]);
    warper.probs(inPlace, [], inPlace);
    expect(Array.from(inPlace)).toEqual(first);
  });

  it('throws typed errors for bad shapes, ids and logits', () => {
    const warper = new LogitsWarper(3, { repetitionPenalty: 1.2 });
    expectMexitError(() => warper.probs(new Float32Array(4), [], new Float32Array(3)), 'SHAPE_MISMATCH', 'logits');
    expectMexitError(() => warper.probs(new Float32Array(3), [], new Float32Array(2)), 'SHAPE_MISMATCH', 'out');
    expectMexitError(() => warper.probs(new Float32Array(3), [3], new Float32Array(3)), 'INVALID_TOKEN_ID', 'history[0]');
    expectMexitError(() => warper.probs(new Float32Array(3), [0, -1], new Float32Array(3)), 'INVALID_TOKEN_ID');
    expectMexitError(() => warper.greedy(new Float32Array(3), [0.5]), 'INVALID_TOKEN_ID');
    expectMexitError(() => warper.probs(new Float32Array([-Infinity, -Infinity, -Infinity]), [], new Float32Array(3)), 'NO_FINITE_LOGITS');
    expectMexitError(() => warper.probs(new Float32Array([0, NaN, 1]), [], new Float32Array(3)), 'NO_FINITE_LOGITS');
  });
});

describe('LogitsWarper.greedy', () => {
  it('is the argmax after the repetition penalty', () => {
    const logits = new Float32Array([2, -1, 0.5, -3, 1.5]);
    expect(new LogitsWarper(5, {}).greedy(logits, [0])).toBe(0);
    // Penalty 2: 2 -> 1 falls below 1.5.
    expect(new LogitsWarper(5, { repetitionPenalty: 2 }).greedy(logits, [0, 0])).toBe(4);
    // Temperature / top-k do not change the greedy pick; ties go to the first index.
    expect(new LogitsWarper(3, { temperature: 0.1, topK: 1 }).greedy(new Float32Array([1, 4, 4]), [])).toBe(1);
  });

  it('does not modify logits', () => {
    const logits = new Float32Array([2, -1, 0.5]);
    new LogitsWarper(3, { repetitionPenalty: 3 }).greedy(logits, [0, 1]);
    expect(Array.from(logits)).toEqual([2, -1, 0.5]);
  });
});
