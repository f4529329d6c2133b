/**
 * Lossless speculative *sampling*: the tokens self-spec emits must follow the same distribution as plain
 * autoregressive sampling. A two-sample χ² homogeneity test over the first two generated tokens compares
 * self-spec with `ar` (20,000 seeded generations each, so the outcome is deterministic), and a negative
 * control shows the same test rejects lossy early-exit sampling. The χ² tail is computed here from the
 * regularised incomplete gamma function and checked against tabulated values.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SelfSpeculativeGenerator, type GenerateOptions } from '@mexit/speculative';
import { chiSquareSurvival, lnGamma } from './support/chi-square.js';

const GPT2_TINY = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-tiny', import.meta.url));

// ---------------------------------------------------------------------------------------------------------
// χ² distribution: P(X ≥ x) for X ~ χ²(df) = Q(df/2, x/2), Q the regularised upper incomplete gamma.

interface ChiSquareResult {
  statistic: number;
  df: number;
  pValue: number;
  cells: number;
}

/**
 * Two-sample χ² homogeneity test on categorical counts. Outcomes whose expected count is below
 * `minExpected` in either sample are pooled into one bucket (pooled by their combined count, so the
 * bucketing treats both samples alike).
 */
function chiSquareHomogeneity(a: Map<string, number>, b: Map<string, number>, minExpected = 5): ChiSquareResult {
  let na = 0;
  let nb = 0;
  for (const v of a.values()) na += v;
  for (const v of b.values()) nb += v;
  const n = na + nb;
  const keys = new Set([...a.keys(), ...b.keys()]);
  const cells: [number, number][] = [];
  let rare: [number, number] = [0, 0];
  for (const key of keys) {
    const ca = a.get(key) ?? 0;
    const cb = b.get(key) ?? 0;
    const total = ca + cb;
    if (Math.min((total * na) / n, (total * nb) / n) < minExpected) rare = [rare[0] + ca, rare[1] + cb];
    else cells.push([ca, cb]);
  }
  const rareTotal = rare[0] + rare[1];
  if (rareTotal > 0) {
    if (Math.min((rareTotal * na) / n, (rareTotal * nb) / n) >= minExpected || cells.length === 0) cells.push(rare);
    else {
      // Too small even pooled: fold it into the smallest regular cell.
      cells.sort((x, y) => x[0] + x[1] - (y[0] + y[1]));
      cells[0] = [cells[0][0] + rare[0], cells[0][1] + rare[1]];
    }
  }
  let statistic = 0;
  for (const [ca, cb] of cells) {
    const total = ca + cb;
    const ea = (total * na) / n;
    const eb = (total * nb) / n;
    statistic += (ca - ea) ** 2 / ea + (cb - eb) ** 2 / eb;
  }
  const df = cells.length - 1;
  return { statistic, df, pValue: df > 0 ? chiSquareSurvival(statistic, df) : 1, cells: cells.length };
}

describe('χ² machinery', () => {
  it('matches tabulated critical values and closed forms', () => {
    // Tabulated 5% and 0.1% critical values.
    expect(chiSquareSurvival(3.841, 1)).toBeCloseTo(0.05, 4);
    expect(chiSquareSurvival(18.307, 10)).toBeCloseTo(0.05, 4);
    expect(chiSquareSurvival(124.342, 100)).toBeCloseTo(0.05, 4);
    expect(chiSquareSurvival(10.828, 1)).toBeCloseTo(0.001, 5);
    expect(chiSquareSurvival(29.588, 10)).toBeCloseTo(0.001, 5);
    expect(chiSquareSurvival(0.00393, 1)).toBeCloseTo(0.95, 4);
    // Even df have closed forms: Q(1, x/2) = e^{−x/2}, Q(2, x/2) = e^{−x/2}(1 + x/2).
    for (const x of [0.1, 1, 2.5, 7, 30, 120]) {
      expect(chiSquareSurvival(x, 2)).toBeCloseTo(Math.exp(-x / 2), 12);
      expect(chiSquareSurvival(x, 4)).toBeCloseTo(Math.exp(-x / 2) * (1 + x / 2), 12);
    }
    expect(chiSquareSurvival(0, 5)).toBe(1);
    expect(lnGamma(5)).toBeCloseTo(Math.log(24), 12);
    expect(lnGamma(0.5)).toBeCloseTo(0.5 * Math.log(Math.PI), 12);
  });

  it('homogeneity test: identical counts give p = 1, clearly different ones a tiny p, rare cells are pooled', () => {
    const same = new Map([
      ['a', 500],
      ['b', 300],
      ['c', 200],
    ]);
    expect(chiSquareHomogeneity(same, new Map(same)).pValue).toBeCloseTo(1, 12);
    // Hand computation: 2×2 table [[60, 40], [40, 60]]: every expected count is 50, χ² = 4·(10²/50) = 8, df 1.
    const r = chiSquareHomogeneity(
      new Map([
        ['x', 60],
        ['y', 40],
      ]),
      new Map([
        ['x', 40],
        ['y', 60],
      ]),
    );
    expect(r.statistic).toBeCloseTo(8, 12);
    expect(r.df).toBe(1);
    expect(r.pValue).toBeCloseTo(0.004678, 5);
    // Rare outcomes (expected < 5) are pooled into one bucket: 3 regular cells + 1 bucket.
    const withRare = chiSquareHomogeneity(
      new Map([
        ['a', 500],
        ['b', 300],
        ['c', 200],
        ['r1', 3],
        ['r2', 4],
        ['r3', 2],
      ]),
      new Map([
        ['a', 490],
        ['b', 310],
        ['c', 205],
        ['r1', 2],
        ['r2', 3],
        ['r4', 4],
      ]),
    );
    expect(withRare.cells).toBe(4);
  });
});

// ---------------------------------------------------------------------------------------------------------

const SAMPLES = 20_000;
const P_THRESHOLD = 1e-4;
/** A short prompt; its ids recur among the likely continuations, so the repetition penalty matters below. */
const PROMPT = [1, 5, 9];

interface Sample {
  /** Counts of "t1,t2" over the generations. */
  counts: Map<string, number>;
  /** Among the first two tokens: how many were accepted drafts, how many came from the full model. */
  fromDraft: number;
  fromTarget: number;
}

/**
 * The first two generated tokens of `n` generations with seeds seedBase + i. The work is split over two
 * generator instances running concurrently (each seed is its own generation, so the result does not depend
 * on the split). Iteration stops after two tokens: nothing later is needed.
 */
async function firstTwoTokens(
  gens: SelfSpeculativeGenerator[],
  options: GenerateOptions,
  seedBase: number,
  n = SAMPLES,
  prompt = PROMPT,
): Promise<Sample> {
  const sample: Sample = { counts: new Map(), fromDraft: 0, fromTarget: 0 };
  const lane = async (gen: SelfSpeculativeGenerator, from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const ids: number[] = [];
      for await (const event of gen.events(prompt, { ...options, doSample: true, seed: seedBase + i })) {
        ids.push(event.token);
        if (event.fromDraft) sample.fromDraft++;
        else sample.fromTarget++;
        if (ids.length === 2) break;
      }
      const key = ids.join(',');
      sample.counts.set(key, (sample.counts.get(key) ?? 0) + 1);
    }
  };
  const per = Math.ceil(n / gens.length);
  await Promise.all(gens.map((gen, k) => lane(gen, k * per, Math.min(n, (k + 1) * per))));
  return sample;
}

describe('self-spec sampling has the ar distribution (gpt2-tiny, first two tokens, 20,000 samples each)', () => {
  const gens: SelfSpeculativeGenerator[] = [];
  beforeAll(async () => {
    for (let k = 0; k < 2; k++) gens.push(await SelfSpeculativeGenerator.fromPretrained(GPT2_TINY, { threads: 1 }));
  });
  afterAll(async () => {
    for (const gen of gens) await gen.dispose();
  });

  // Small support (top-8 at a high temperature) so 20k samples give the test power; the ar sample is shared.
  const hot: GenerateOptions = { temperature: 1.5, topK: 8 };
  let arHot: Promise<Sample> | undefined;
  const arHotSample = () => (arHot ??= firstTwoTokens(gens, { ...hot, mode: 'ar', maxNewTokens: 2 }, 1_000_000));

  it('self-spec (E = 2, d = 2) vs ar: χ² does not reject', async () => {
    // maxNewTokens 3 lets the first round draft 2 tokens, so acceptance at the second draft position is exercised.
    const spec = await firstTwoTokens(gens, { ...hot, mode: 'self-spec', exitLayer: 2, numSpeculations: 2, maxNewTokens: 3 }, 2_000_000);
    const ar = await arHotSample();
    const result = chiSquareHomogeneity(ar.counts, spec.counts);
    expect(result.df).toBeGreaterThanOrEqual(20);
    expect(result.pValue, JSON.stringify(result)).toBeGreaterThan(P_THRESHOLD);
    // Both paths of the acceptance rule were taken many times: accepted drafts and full-model tokens
    // (residual samples after a rejection, and bonus tokens).
    expect(spec.fromDraft).toBeGreaterThan(2000);
    expect(spec.fromTarget).toBeGreaterThan(2000);
    expect(ar.fromDraft).toBe(0);
  });

  it('without the bonus row (bonusToken false), d = 2 and d = 1: χ² does not reject', async () => {
    const ar = await arHotSample();
    const noBonus = await firstTwoTokens(
      gens,
      { ...hot, mode: 'self-spec', exitLayer: 2, numSpeculations: 2, maxNewTokens: 3, bonusToken: false },
      6_000_000,
    );
    // d = 1: after an accepted draft the round ends, and the second token comes from the next round, which
    // starts from that draft.
    const single = await firstTwoTokens(
      gens,
      { ...hot, mode: 'self-spec', exitLayer: 2, numSpeculations: 1, maxNewTokens: 3, bonusToken: false },
      7_000_000,
    );
    for (const spec of [noBonus, single]) {
      const result = chiSquareHomogeneity(ar.counts, spec.counts);
      expect(result.df).toBeGreaterThanOrEqual(20);
      expect(result.pValue, JSON.stringify(result)).toBeGreaterThan(P_THRESHOLD);
      expect(spec.fromDraft).toBeGreaterThan(2000);
    }
  });

  it('quantized drafts (own cache, full-model verify; on GPT-2 the int4 part is the head): χ² does not reject', async () => {
    const ar = await arHotSample();
    const spec = await firstTwoTokens(
      gens,
      { ...hot, mode: 'self-spec', exitLayer: 2, numSpeculations: 2, maxNewTokens: 3, draftQuantization: 'int4' },
      8_000_000,
    );
    const result = chiSquareHomogeneity(ar.counts, spec.counts);
    expect(result.df).toBeGreaterThanOrEqual(20);
    expect(result.pValue, JSON.stringify(result)).toBeGreaterThan(P_THRESHOLD);
    expect(spec.fromDraft).toBeGreaterThan(2000);
  });

  it('prompt-lookup drafts (deterministic, one-hot q) on a repeating prompt: χ² does not reject', async () => {
    // The suffix [1, 5, 9] occurred before, followed by 242 and 1: the first round drafts those. 242 is the
    // full model's top token after this prompt (found by a search over the vocabulary), so drafts are often
    // accepted and both paths of the acceptance rule are exercised.
    const repeating = [1, 5, 9, 242, 1, 5, 9];
    const ar = await firstTwoTokens(gens, { ...hot, mode: 'ar', maxNewTokens: 2 }, 9_000_000, SAMPLES, repeating);
    const spec = await firstTwoTokens(
      gens,
      { ...hot, mode: 'self-spec', drafter: 'prompt-lookup', numSpeculations: 2, maxNewTokens: 3 },
      10_000_000,
      SAMPLES,
      repeating,
    );
    const result = chiSquareHomogeneity(ar.counts, spec.counts);
    expect(result.df).toBeGreaterThanOrEqual(20);
    expect(result.pValue, JSON.stringify(result)).toBeGreaterThan(P_THRESHOLD);
    expect(spec.fromDraft).toBeGreaterThan(1000);
    expect(spec.fromTarget).toBeGreaterThan(1000);
  });

  it('negative control: lossy early-exit sampling (E = 2) vs ar is rejected by the same test', async () => {
    const early = await firstTwoTokens(gens, { ...hot, mode: 'early-exit', exitLayer: 2, maxNewTokens: 2 }, 3_000_000);
    const result = chiSquareHomogeneity((await arHotSample()).counts, early.counts);
    expect(result.pValue, JSON.stringify(result)).toBeLessThan(P_THRESHOLD);
  });

  it('p and q are warped alike (temperature 0.7, top-p 0.9, repetition penalty 1.3): self-spec vs ar passes (10,000 each)', async () => {
    // If the acceptance used a q other than the warped distribution the draft was sampled from (or warped p
    // differently, e.g. without the drafts in the penalty history), the emitted distribution would shift.
    // top-k 8 keeps the support small enough for the test to have power. (Checked by mutation: recomputing q
    // without the penalty history, or warping p without the drafts in it, gives p < 1e-13 at this size.)
    const warp: GenerateOptions = { temperature: 0.7, topK: 8, topP: 0.9, repetitionPenalty: 1.3 };
    const ar = await firstTwoTokens(gens, { ...warp, mode: 'ar', maxNewTokens: 2 }, 4_000_000, 10_000);
    const spec = await firstTwoTokens(
      gens,
      { ...warp, mode: 'self-spec', exitLayer: 2, numSpeculations: 2, maxNewTokens: 3 },
      5_000_000,
      10_000,
    );
    const result = chiSquareHomogeneity(ar.counts, spec.counts);
    expect(result.df).toBeGreaterThanOrEqual(10);
    expect(result.pValue, JSON.stringify(result)).toBeGreaterThan(P_THRESHOLD);
    expect(spec.fromDraft).toBeGreaterThan(1000);
  });
});
