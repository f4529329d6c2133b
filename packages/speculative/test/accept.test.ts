import { describe, expect, it } from 'vitest';
import { LogitsWarper, MexitError, Rng, sampleCategorical } from '@mexit/core';
import type { WarpOptions } from '@mexit/core';
import { SpeculativeSampler, acceptGreedy } from '../src/accept.js';
import type { SampledAcceptance, SampledAcceptanceArgs } from '../src/accept.js';
import { chiSquareSurvival } from './support/chi-square.js';

// ---------------------------------------------------------------------------------------------------------
// χ² goodness of fit (independent of the code under test): p-value = Q(df/2, χ²/2), the regularised upper
// incomplete gamma function, by series / continued fraction (Numerical Recipes gser/gcf).

interface ChiSquareResult {
  statistic: number;
  df: number;
  pValue: number;
  /** Draws that landed on a category of expected probability 0 (an immediate failure). */
  impossible: number;
}

/** Pearson χ² of observed counts against expected probabilities. */
function chiSquare(counts: ArrayLike<number>, expected: ArrayLike<number>): ChiSquareResult {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i];
  let statistic = 0;
  let categories = 0;
  let impossible = 0;
  for (let i = 0; i < counts.length; i++) {
    if (expected[i] > 0) {
      const e = expected[i] * total;
      statistic += (counts[i] - e) ** 2 / e;
      categories++;
    } else {
      impossible += counts[i];
    }
  }
  const df = categories - 1;
  const pValue = impossible > 0 ? 0 : chiSquareSurvival(statistic, df);
  return { statistic, df, pValue, impossible };
}

const SIGNIFICANCE = 1e-4;

// ---------------------------------------------------------------------------------------------------------
// A toy context-dependent language: the next-token distribution depends on the previous token, and position 0
// has its own "prompt" context. Target p and draft q come from different logit tables through LogitsWarper.

const V = 5;
const PROMPT = V; // context index of the prompt
const TRIALS = 200_000;

// Rows: contexts 0..V-1 (previous token), then the prompt. Fixed, hand-picked so that p and q differ a lot.
const TARGET_LOGITS = [
  [1.2, -0.5, 0.3, 2.0, -1.0],
  [0.1, 1.5, -0.7, 0.4, 0.9],
  [-1.2, 0.6, 1.8, 0.0, 0.5],
  [2.2, 0.2, -0.3, -1.5, 1.0],
  [0.0, -0.8, 0.7, 1.1, 1.6],
  [0.8, 1.9, -0.4, 0.5, 0.0],
];
const DRAFT_LOGITS = [
  [0.2, 1.1, 1.3, 0.4, -0.6],
  [1.4, -0.2, 0.9, 0.0, 0.3],
  [0.5, 1.7, -0.9, 1.2, 0.1],
  [-0.4, 1.0, 1.6, 0.3, -1.1],
  [1.8, 0.4, -0.2, 0.6, 0.0],
  [1.5, 0.0, 1.2, -0.6, 0.9],
];

/** Warps every context's logits with a fresh warper of the given options (history empty). */
function warpTable(logits: number[][], options: WarpOptions): Float32Array[] {
  const warper = new LogitsWarper(V, options);
  return logits.map((row) => warper.probs(Float32Array.from(row), [], new Float32Array(V)));
}

/** The warper both distributions must share; topK/topP zero out different tokens in p and q. */
const SHARED_WARP: WarpOptions = { temperature: 0.8, topK: 4, topP: 0.97 };

type AcceptFn = (args: SampledAcceptanceArgs) => SampledAcceptance;

interface SimulationSetup {
  accept: AcceptFn;
  draftLength: number;
  target: Float32Array[];
  /** q handed to the acceptance rule. */
  draftClaimed: Float32Array[];
  /** q the draft tokens are actually sampled from (differs from draftClaimed only in the mismatch test). */
  draftSampled?: Float32Array[];
  seed: number;
  trials?: number;
}

/**
 * Runs speculative rounds until two tokens are emitted, `trials` times. Returns the counts of the first token
 * [V] and of the first two tokens [V·V] (index a·V + b).
 */
function simulate(setup: SimulationSetup): { first: Float64Array; pairs: Float64Array } {
  const { accept, draftLength, target, draftClaimed } = setup;
  const draftSampled = setup.draftSampled ?? draftClaimed;
  const trials = setup.trials ?? TRIALS;
  const rng = new Rng(setup.seed);
  const first = new Float64Array(V);
  const pairs = new Float64Array(V * V);
  const draftTokens = new Int32Array(draftLength);
  const draftProbs: Float32Array[] = new Array(draftLength);
  const targetProbs: Float32Array[] = new Array(draftLength + 1);
  const args: SampledAcceptanceArgs = { draftTokens, draftProbs, targetProbs, rng };
  const emitted = new Int32Array(draftLength + 3);
  for (let trial = 0; trial < trials; trial++) {
    let count = 0;
    let context = PROMPT;
    while (count < 2) {
      let c = context;
      for (let i = 0; i < draftLength; i++) {
        draftProbs[i] = draftClaimed[c];
        targetProbs[i] = target[c];
        c = sampleCategorical(draftSampled[c], rng);
        draftTokens[i] = c;
      }
      targetProbs[draftLength] = target[c];
      const { accepted, nextToken } = accept(args);
      for (let i = 0; i < accepted && count < emitted.length; i++) emitted[count++] = draftTokens[i];
      emitted[count++] = nextToken as number;
      context = nextToken as number;
    }
    first[emitted[0]]++;
    pairs[emitted[0] * V + emitted[1]]++;
  }
  return { first, pairs };
}

/** p(first token) and p(first two tokens) of the target language. */
function targetLaws(target: Float32Array[]): { first: Float64Array; pairs: Float64Array } {
  const first = Float64Array.from(target[PROMPT]);
  const pairs = new Float64Array(V * V);
  for (let a = 0; a < V; a++) for (let b = 0; b < V; b++) pairs[a * V + b] = target[PROMPT][a] * target[a][b];
  return { first, pairs };
}

// Deliberately wrong samplers (the negative controls), each a realistic implementation bug.
type Bug = 'resample-from-target' | 'shifted-target' | 'stale-bonus';

function buggySampler(bug: Bug): AcceptFn {
  const residual = new Float32Array(V);
  return ({ draftTokens, draftProbs, targetProbs, rng }) => {
    const d = draftTokens.length;
    for (let i = 0; i < d; i++) {
      const x = draftTokens[i];
      // 'shifted-target': position i is judged against the target distribution of position i+1.
      const p = bug === 'shifted-target' ? targetProbs[i + 1] : targetProbs[i];
      const q = draftProbs[i];
      if (rng.nextFloat() < p[x] / q[x]) continue;
      if (bug === 'resample-from-target') return { accepted: i, nextToken: sampleCategorical(p, rng) };
      let mass = 0;
      for (let v = 0; v < V; v++) mass += residual[v] = Math.max(p[v] - q[v], 0);
      return { accepted: i, nextToken: sampleCategorical(mass > 0 ? residual : p, rng) };
    }
    // 'stale-bonus': the bonus is drawn from the last draft position's target instead of p_d.
    const bonus = bug === 'stale-bonus' ? targetProbs[d - 1] : targetProbs[d];
    return { accepted: d, nextToken: sampleCategorical(bonus, rng) };
  };
}

const target = warpTable(TARGET_LOGITS, SHARED_WARP);
const draft = warpTable(DRAFT_LOGITS, SHARED_WARP);
const laws = targetLaws(target);

function correctSampler(): AcceptFn {
  const sampler = new SpeculativeSampler(V);
  return (args) => sampler.acceptSampled(args);
}

// ---------------------------------------------------------------------------------------------------------

describe('χ² helper', () => {
  it('reproduces known χ² tail probabilities (scipy.stats.chi2.sf)', () => {
    expect(chiSquareSurvival(18.4668, 4)).toBeCloseTo(0.0010000121596, 9);
    expect(chiSquareSurvival(51.179, 24)).toBeCloseTo(0.00099988043424, 9);
    expect(chiSquareSurvival(3.841459, 1)).toBeCloseTo(0.0499999946532, 9);
    expect(chiSquareSurvival(35.564, 10)).toBeCloseTo(0.00010000055, 9);
    expect(chiSquareSurvival(20, 19)).toBeCloseTo(0.394578182086, 9);
  });
});

describe('acceptGreedy', () => {
  it('returns the longest matching prefix', () => {
    expect(acceptGreedy([5, 6, 7], [1, 6, 7, 9])).toBe(0);
    expect(acceptGreedy([5, 6, 7], [5, 6, 2, 9])).toBe(2);
    expect(acceptGreedy([5, 6, 7], [5, 1, 7, 9])).toBe(1); // a later match after a mismatch does not count
    expect(acceptGreedy([5, 6, 7], [5, 6, 7, 9])).toBe(3);
    expect(acceptGreedy(Int32Array.from([3]), Int32Array.from([3, 4]))).toBe(1);
    expect(acceptGreedy([], [4])).toBe(0);
  });

  it('needs one target token per draft position (the bonus is optional)', () => {
    expect(acceptGreedy([5, 6, 7], [5, 6, 7])).toBe(3); // no bonus: the caller emits no extra token
    expect(acceptGreedy([5, 6, 7], [5, 6, 1])).toBe(2);
    try {
      acceptGreedy([1, 2, 3], [1, 2]);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(MexitError);
      expect((error as MexitError).code).toBe('SHAPE_MISMATCH');
    }
  });
});

/** Rng stand-in that returns scripted uniforms and counts the draws. */
function scriptedRng(values: number[]): Rng & { draws: number } {
  const stub = {
    draws: 0,
    nextFloat() {
      if (stub.draws >= values.length) throw new Error('scripted rng exhausted');
      return values[stub.draws++];
    },
    nextU32() {
      return Math.floor(stub.nextFloat() * 2 ** 32);
    },
  };
  return stub as unknown as Rng & { draws: number };
}

describe('SpeculativeSampler.acceptSampled (deterministic cases)', () => {
  const f32 = (v: number[]) => Float32Array.from(v);

  it('accepts with probability min(1, p/q): u < p/q accepts, u = p/q rejects', () => {
    const sampler = new SpeculativeSampler(3);
    const q = f32([0.5, 0.25, 0.25]);
    const p = f32([0.25, 0.5, 0.25]); // p(0)/q(0) = 0.5
    const bonus = f32([0, 0, 1]);
    const accepted = sampler.acceptSampled({
      draftTokens: [0],
      draftProbs: [q],
      targetProbs: [p, bonus],
      rng: scriptedRng([0.49, 0.5]),
    });
    expect(accepted).toEqual({ accepted: 1, nextToken: 2 });
    // Rejection: residual max(p − q, 0) = [0, 0.25, 0] → token 1 whatever the second uniform.
    const rejected = sampler.acceptSampled({
      draftTokens: [0],
      draftProbs: [q],
      targetProbs: [p, bonus],
      rng: scriptedRng([0.5, 0.99]),
    });
    expect(rejected).toEqual({ accepted: 0, nextToken: 1 });
  });

  it('samples the normalised residual by inverse CDF', () => {
    const sampler = new SpeculativeSampler(3);
    const p = f32([0.5, 0.5, 0]);
    const q = f32([0.2, 0.1, 0.7]); // draft token 2 has p = 0: always rejected; residual ∝ [0.3, 0.4, 0]
    const run = (u: number) => sampler.acceptSampled({ draftTokens: [2], draftProbs: [q], targetProbs: [p, p], rng: scriptedRng([0, u]) });
    expect(run(0.42)).toEqual({ accepted: 0, nextToken: 0 }); // 0.42 < 3/7
    expect(run(0.43)).toEqual({ accepted: 0, nextToken: 1 }); // 0.43 > 3/7
    expect(run(0.999)).toEqual({ accepted: 0, nextToken: 1 });
  });

  it('accepts everything when p = q and then samples the bonus from p_d', () => {
    const sampler = new SpeculativeSampler(4);
    const p = f32([0.1, 0.2, 0.3, 0.4]);
    const bonus = f32([0, 1, 0, 0]);
    const rng = scriptedRng([0.999, 0.999, 0.999, 0.5]);
    const result = sampler.acceptSampled({
      draftTokens: [3, 0, 2],
      draftProbs: [p, p, p],
      targetProbs: [p, p, p, bonus],
      rng,
    });
    expect(result).toEqual({ accepted: 3, nextToken: 1 });
    expect(rng.draws).toBe(4); // d acceptance uniforms + 1 for the bonus
  });

  it('without the bonus distribution: all accepted → no next token; a rejection still samples the residual', () => {
    const sampler = new SpeculativeSampler(4);
    const p = f32([0.1, 0.2, 0.3, 0.4]);
    const q = f32([0.4, 0.3, 0.2, 0.1]);
    let rng = scriptedRng([0.999, 0.999]);
    expect(sampler.acceptSampled({ draftTokens: [3, 2], draftProbs: [p, p], targetProbs: [p, p], rng })).toEqual({
      accepted: 2,
      nextToken: null,
    });
    expect(rng.draws).toBe(2); // nothing drawn for a bonus
    // Same arrays with a spare entry, bonus explicitly off (the verifier reuses longer buffers).
    rng = scriptedRng([0.999, 0.999]);
    expect(sampler.acceptSampled({ draftTokens: [3, 2], draftProbs: [p, p], targetProbs: [p, p, p], rng, bonus: false })).toEqual({
      accepted: 2,
      nextToken: null,
    });
    // Token 0 with p/q = 0.25: u = 0.5 rejects; residual max(p − q, 0) = [0, 0, 0.1, 0.3] → u 0.2 of 0.4 → token 2.
    rng = scriptedRng([0.5, 0.2]);
    expect(sampler.acceptSampled({ draftTokens: [0, 1], draftProbs: [q, q], targetProbs: [p, p], rng })).toEqual({
      accepted: 0,
      nextToken: 2,
    });
    expect(() => sampler.acceptSampled({ draftTokens: [0, 1], draftProbs: [q, q], targetProbs: [p], rng: scriptedRng([0.1]) })).toThrow(
      /2 target distributions/,
    );
    expect(() =>
      sampler.acceptSampled({ draftTokens: [0, 1], draftProbs: [q, q], targetProbs: [p, p], rng: scriptedRng([0.1]), bonus: true }),
    ).toThrow(/3 target distributions/);
  });

  it('draws one uniform per examined position, then one for the emitted token', () => {
    const sampler = new SpeculativeSampler(2);
    const p = f32([1, 0]);
    const q = f32([0.5, 0.5]);
    // Position 0: token 0, p/q = 2 → accepted. Position 1: token 1, p = 0 → rejected; residual = [0.5, 0].
    const rng = scriptedRng([0.3, 0.3, 0.7]);
    const result = sampler.acceptSampled({
      draftTokens: [0, 1, 0],
      draftProbs: [q, q, q],
      targetProbs: [p, p, p, p],
      rng,
    });
    expect(result).toEqual({ accepted: 1, nextToken: 0 });
    expect(rng.draws).toBe(3);
  });

  it('rejects a draft token that has q = 0 (it cannot have been sampled from q), still drawing its uniform', () => {
    const sampler = new SpeculativeSampler(3);
    const p = f32([0.2, 0.3, 0.5]);
    const q = f32([0.5, 0.5, 0]);
    const rng = scriptedRng([0, 0.999]);
    const result = sampler.acceptSampled({ draftTokens: [2], draftProbs: [q], targetProbs: [p, p], rng });
    // Residual max(p − q, 0) = [0, 0, 0.5] → token 2.
    expect(result).toEqual({ accepted: 0, nextToken: 2 });
    expect(rng.draws).toBe(2);
  });

  it('falls back to p when the residual has no mass (p = q)', () => {
    const sampler = new SpeculativeSampler(3);
    const same = f32([0.2, 0.8, 0]);
    const bonus = f32([1, 0, 0]);
    // Draft token 2 has q = 0, so it is rejected; max(p − q, 0) is all zeros, so the token comes from
    // p_0 = [0.2, 0.8, 0]: u = 0.5 → token 1 (a residual-free draw from the bonus would give token 0).
    const result = sampler.acceptSampled({
      draftTokens: [2],
      draftProbs: [same],
      targetProbs: [same, bonus],
      rng: scriptedRng([0, 0.5]),
    });
    expect(result).toEqual({ accepted: 0, nextToken: 1 });
  });

  it('reproduces the same decisions for the same seed', () => {
    const sampler = new SpeculativeSampler(V);
    const run = (seed: number) => {
      const rng = new Rng(seed);
      const out: number[] = [];
      for (let i = 0; i < 200; i++) {
        const { accepted, nextToken } = sampler.acceptSampled({
          draftTokens: [1, 3],
          draftProbs: [draft[0], draft[1]],
          targetProbs: [target[0], target[1], target[3]],
          rng,
        });
        out.push(accepted, nextToken as number);
      }
      return out;
    };
    expect(run(11)).toEqual(run(11));
    expect(run(11)).not.toEqual(run(12));
  });

  it('rejects malformed inputs with typed errors', () => {
    const sampler = new SpeculativeSampler(3);
    const p = f32([0.2, 0.3, 0.5]);
    const code = (args: Partial<SampledAcceptanceArgs>) => {
      try {
        sampler.acceptSampled({ draftTokens: [0], draftProbs: [p], targetProbs: [p, p], rng: new Rng(1), ...args });
      } catch (error) {
        expect(error).toBeInstanceOf(MexitError);
        return (error as MexitError).code;
      }
      return 'no error';
    };
    expect(code({})).toBe('no error');
    expect(code({ targetProbs: [] })).toBe('SHAPE_MISMATCH');
    expect(code({ targetProbs: [p], bonus: true })).toBe('SHAPE_MISMATCH');
    expect(code({ draftProbs: [] })).toBe('SHAPE_MISMATCH');
    expect(code({ draftProbs: [f32([0.5, 0.5])] })).toBe('SHAPE_MISMATCH');
    expect(code({ targetProbs: [p, f32([1])] })).toBe('SHAPE_MISMATCH');
    expect(code({ draftTokens: [3] })).toBe('SHAPE_MISMATCH');
    expect(code({ draftTokens: [-1] })).toBe('SHAPE_MISMATCH');
    expect(() => new SpeculativeSampler(0)).toThrowError(MexitError);
  });
});

describe('SpeculativeSampler.acceptSampled is lossless (χ² against the target distribution)', () => {
  it('the tables exercise the interesting cases: p and q differ, and top-k/top-p zero out different tokens', () => {
    let maxGap = 0;
    let pZeroWhereQPositive = 0;
    let qZeroWherePPositive = 0;
    for (let c = 0; c <= V; c++) {
      for (let x = 0; x < V; x++) {
        maxGap = Math.max(maxGap, Math.abs(target[c][x] - draft[c][x]));
        if (target[c][x] === 0 && draft[c][x] > 0) pZeroWhereQPositive++;
        if (draft[c][x] === 0 && target[c][x] > 0) qZeroWherePPositive++;
      }
    }
    expect(maxGap).toBeGreaterThan(0.3);
    expect(pZeroWhereQPositive).toBeGreaterThan(0);
    expect(qZeroWherePPositive).toBeGreaterThan(0);
  });

  it('d = 1: the first token follows p (not q), and the first two follow p(a)·p(b|a)', () => {
    const counts = simulate({ accept: correctSampler(), draftLength: 1, target, draftClaimed: draft, seed: 1 });
    const first = chiSquare(counts.first, laws.first);
    const pairs = chiSquare(counts.pairs, laws.pairs);
    expect(first.impossible).toBe(0);
    expect(pairs.impossible).toBe(0);
    expect(first.pValue).toBeGreaterThan(SIGNIFICANCE);
    expect(pairs.pValue).toBeGreaterThan(SIGNIFICANCE);
    // The draft's own law is far off, so the test has power.
    expect(chiSquare(counts.first, Float64Array.from(draft[PROMPT])).pValue).toBeLessThan(SIGNIFICANCE);
  });

  it('d = 3: the first two tokens follow p(a)·p(b|a)', () => {
    const counts = simulate({ accept: correctSampler(), draftLength: 3, target, draftClaimed: draft, seed: 2 });
    const pairs = chiSquare(counts.pairs, laws.pairs);
    expect(pairs.impossible).toBe(0);
    expect(pairs.pValue).toBeGreaterThan(SIGNIFICANCE);
  });

  // Negative controls: the same test must reject samplers with known bugs.
  it.each([
    ['resample-from-target', 1],
    ['stale-bonus', 1],
    ['resample-from-target', 3],
    ['shifted-target', 3],
  ] as const)('negative control: a sampler with bug %s (d = %i) fails the χ² test', (bug, draftLength) => {
    const counts = simulate({
      accept: buggySampler(bug),
      draftLength,
      target,
      draftClaimed: draft,
      seed: 3,
      trials: TRIALS / 2,
    });
    const pairs = chiSquare(counts.pairs, laws.pairs);
    expect(pairs.pValue).toBeLessThan(SIGNIFICANCE);
  });

  it('fails when q is warped differently from the distribution the draft was sampled from', () => {
    // The draft samples at temperature 1.3 without top-k/top-p, but acceptance is told q = the shared warp
    // (temperature 0.8, top-k 4, top-p 0.97): the classic "q is not what the token came from" bug.
    const draftSampled = warpTable(DRAFT_LOGITS, { temperature: 1.3 });
    const counts = simulate({
      accept: correctSampler(),
      draftLength: 3,
      target,
      draftClaimed: draft,
      draftSampled,
      seed: 4,
      trials: TRIALS / 2,
    });
    expect(chiSquare(counts.pairs, laws.pairs).pValue).toBeLessThan(SIGNIFICANCE);

    // Control: the same mismatched draft is lossless again once acceptance gets the q it really sampled from.
    const consistent = simulate({
      accept: correctSampler(),
      draftLength: 3,
      target,
      draftClaimed: draftSampled,
      seed: 5,
      trials: TRIALS / 2,
    });
    expect(chiSquare(consistent.pairs, laws.pairs).pValue).toBeGreaterThan(SIGNIFICANCE);
  });
});
