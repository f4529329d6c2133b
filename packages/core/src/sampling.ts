/**
 * Reproducible randomness and HF-compatible logits warping.
 *
 * Rng is PCG32 (pcg32_random_r, O'Neill 2014, pcg-random.org) with 64-bit state emulated in two uint32
 * halves, so every machine produces the same stream. LogitsWarper applies HF transformers' processors in
 * HF's order and preallocates all scratch once, so probs()/greedy() allocate nothing per call.
 */
import { MexitError, OptionsError } from './errors.js';
import { argmax, softmax, topKIndices } from './numerics.js';

// PCG32 multiplier 6364136223846793005 split into 32-bit halves.
const PCG_MULT_HI = 0x5851f42d;
const PCG_MULT_LO = 0x4c957f2d;
/** Stream selector used by the reference pcg32 demo (pcg32_srandom_r(&rng, 42u, 54u)). */
const PCG_DEFAULT_STREAM = 54;
const TWO_POW_32 = 4294967296;

/**
 * PCG32 pseudo-random generator (XSH RR 64/32), seeded like the reference `pcg32_srandom_r(seed, 54)`,
 * so `new Rng(42)` reproduces the published pcg32 demo stream. Same stream on every machine.
 */
export class Rng {
  private stateHi = 0;
  private stateLo = 0;
  private readonly incHi: number;
  private readonly incLo: number;

  /** `seed`: a non-negative safe integer (all 53 bits are used). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new OptionsError('INVALID_OPTION', `seed must be a non-negative safe integer, got ${seed}`);
    }
    // inc = (initseq << 1) | 1 as a 64-bit value.
    this.incHi = PCG_DEFAULT_STREAM >>> 31;
    this.incLo = ((PCG_DEFAULT_STREAM << 1) | 1) >>> 0;
    this.step();
    // state += initstate (64-bit add).
    const seedLo = seed % TWO_POW_32;
    const seedHi = Math.floor(seed / TWO_POW_32);
    const lo = this.stateLo + seedLo;
    this.stateLo = lo >>> 0;
    this.stateHi = (this.stateHi + seedHi + (lo >= TWO_POW_32 ? 1 : 0)) >>> 0;
    this.step();
  }

  /** state = state * MULT + inc (mod 2^64). */
  private step(): void {
    const sLo = this.stateLo;
    const sHi = this.stateHi;
    // Full 64-bit product of the low halves via 16-bit limbs (every partial product < 2^32, exact in doubles).
    const a0 = sLo & 0xffff;
    const a1 = sLo >>> 16;
    const b0 = PCG_MULT_LO & 0xffff;
    const b1 = PCG_MULT_LO >>> 16;
    const p00 = a0 * b0;
    const p01 = a0 * b1;
    const p10 = a1 * b0;
    const p11 = a1 * b1;
    const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    const prodLo = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
    let prodHi = p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16);
    // Cross terms only affect the high half (mod 2^32).
    prodHi = (prodHi + Math.imul(sHi, PCG_MULT_LO) + Math.imul(sLo, PCG_MULT_HI)) >>> 0;
    const lo = prodLo + this.incLo;
    this.stateLo = lo >>> 0;
    this.stateHi = (prodHi + this.incHi + (lo >= TWO_POW_32 ? 1 : 0)) >>> 0;
  }

  /** Next uniformly distributed 32-bit unsigned integer. */
  nextU32(): number {
    const hi = this.stateHi;
    const lo = this.stateLo;
    this.step();
    // xorshifted = uint32(((state >> 18) ^ state) >> 27); rot = state >> 59.
    const xHi = hi ^ (hi >>> 18);
    const xLo = lo ^ ((lo >>> 18) | (hi << 14));
    const xorshifted = ((xLo >>> 27) | (xHi << 5)) >>> 0;
    const rot = hi >>> 27;
    return ((xorshifted >>> rot) | (xorshifted << (-rot & 31))) >>> 0;
  }

  /** Uniform float in [0, 1) from 32 random bits (multiples of 2^-32). */
  nextFloat(): number {
    return this.nextU32() / TWO_POW_32;
  }
}

/**
 * Draws an index from a categorical distribution by inverse CDF with one uniform. `probs` need not sum to 1
 * exactly: the uniform is scaled by the actual sum. Entries <= 0 (or NaN) are never drawn.
 * Throws MexitError 'INVALID_DISTRIBUTION' when no entry is positive or the sum is not finite.
 */
export function sampleCategorical(probs: Float32Array, rng: Rng): number {
  let total = 0;
  let lastPositive = -1;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i];
    if (p > 0) {
      total += p;
      lastPositive = i;
    }
  }
  if (lastPositive < 0 || !Number.isFinite(total)) {
    throw new MexitError(
      'INVALID_DISTRIBUTION',
      `sampleCategorical: probabilities must have a positive, finite sum (got ${total} over ${probs.length} entries)`,
    );
  }
  const target = rng.nextFloat() * total;
  let cumulative = 0;
  for (let i = 0; i < lastPositive; i++) {
    const p = probs[i];
    if (p > 0) {
      cumulative += p;
      if (cumulative > target) return i;
    }
  }
  // Rounding can leave target just above the running sum: the last positive entry absorbs it.
  return lastPositive;
}

/** Sampling settings, HF transformers' meaning. Omitted fields are disabled. */
export interface WarpOptions {
  /** >= 0. 1 (default) = no scaling; 0 = greedy (probs() returns a one-hot). */
  temperature?: number;
  /** Integer >= 0. 0 (default) = disabled; ties with the k-th value are kept. */
  topK?: number;
  /** In (0, 1]. 1 (default) = disabled. Keeps the smallest set of most likely tokens whose mass reaches topP. */
  topP?: number;
  /** In [0, 1]. 0 (default) = disabled. Drops tokens with prob < minP * max prob. */
  minP?: number;
  /** > 0. 1 (default) = disabled. HF/CTRL rule: logit < 0 ? logit * penalty : logit / penalty. */
  repetitionPenalty?: number;
}

/**
 * Top-p boundary slack in probability units. HF compares a float32 cumulative sum against 1 - top_p, so at an
 * exact boundary (e.g. masses 0.5 + 0.3 with top_p = 0.8) the outcome depends on rounding; we treat "within
 * 1e-6 of top_p" as having reached it, which matches the exact-arithmetic result of HF's rule.
 */
const TOP_P_SLACK = 1e-6;

function invalidOption(name: string, expected: string, got: unknown): OptionsError {
  return new OptionsError('INVALID_OPTION', `${name} must be ${expected}, got ${String(got)}`);
}

/**
 * Warps logits into a sampling distribution exactly like HF transformers' processors, in HF's order:
 * repetition penalty -> temperature -> top-k -> top-p -> min-p -> softmax. One instance serves both the
 * target (p) and draft (q) distributions of speculative decoding. Not reentrant (shared scratch).
 */
export class LogitsWarper {
  readonly vocabSize: number;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;

  // float32 copies: torch divides/multiplies a float32 tensor by the scalar in float32.
  private readonly temperature32: number;
  private readonly penalty32: number;
  /** Penalised, temperature-scaled logits. */
  private readonly scaledLogits: Float32Array;
  /** exp(scaled - max) per token, 0 once filtered out (float64 for accurate masses). */
  private readonly weights: Float64Array;
  /** Working copy of surviving weights for the top-p selection. */
  private readonly candidates: Float64Array;
  private readonly topKIdx: Int32Array;

  /** Validates the options (OptionsError 'INVALID_OPTION' naming the option) and preallocates scratch. */
  constructor(vocabSize: number, options: WarpOptions) {
    if (!Number.isInteger(vocabSize) || vocabSize <= 0) {
      throw invalidOption('vocabSize', 'a positive integer', vocabSize);
    }
    const opts = options ?? {};
    const temperature = opts.temperature ?? 1;
    const topK = opts.topK ?? 0;
    const topP = opts.topP ?? 1;
    const minP = opts.minP ?? 0;
    const repetitionPenalty = opts.repetitionPenalty ?? 1;
    if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0) {
      throw invalidOption('temperature', 'a finite number >= 0', temperature);
    }
    if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 0) {
      throw invalidOption('topK', 'an integer >= 0', topK);
    }
    if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) {
      throw invalidOption('topP', 'a number in (0, 1]', topP);
    }
    if (typeof minP !== 'number' || !(minP >= 0 && minP <= 1)) {
      throw invalidOption('minP', 'a number in [0, 1]', minP);
    }
    if (typeof repetitionPenalty !== 'number' || !Number.isFinite(repetitionPenalty) || !(repetitionPenalty > 0)) {
      throw invalidOption('repetitionPenalty', 'a finite number > 0', repetitionPenalty);
    }
    this.vocabSize = vocabSize;
    this.temperature = temperature;
    this.topK = topK;
    this.topP = topP;
    this.minP = minP;
    this.repetitionPenalty = repetitionPenalty;
    this.temperature32 = Math.fround(temperature);
    this.penalty32 = Math.fround(repetitionPenalty);
    this.scaledLogits = new Float32Array(vocabSize);
    this.weights = new Float64Array(vocabSize);
    this.candidates = new Float64Array(topP < 1 ? vocabSize : 0);
    // HF clamps top_k to the vocabulary; k >= vocab keeps everything, so no selection is needed.
    this.topKIdx = new Int32Array(topK > 0 && topK < vocabSize ? topK : 0);
  }

  /**
   * Writes the warped, normalised distribution into `out` (length vocabSize) and returns it.
   * `history` = prompt + generated ids (for the repetition penalty). Never modifies `logits`
   * (out === logits is allowed). Logits need at least one finite entry and no NaN / +Infinity.
   */
  probs(logits: Float32Array, history: ArrayLike<number>, out: Float32Array): Float32Array {
    this.checkLength('logits', logits);
    this.checkLength('out', out);
    const scaled = this.penalisedLogits(logits, history);
    if (this.temperature === 0) {
      const best = argmax(scaled);
      out.fill(0);
      out[best] = 1;
      return out;
    }
    const n = this.vocabSize;
    if (this.temperature32 !== 1) {
      const t = this.temperature32;
      for (let i = 0; i < n; i++) scaled[i] = scaled[i] / t;
    }

    // Top-k: threshold at the k-th largest value; `< kth` is removed, so ties with it survive (as in HF).
    let kth = -Infinity;
    if (this.topKIdx.length > 0) {
      const idx = topKIndices(scaled, this.topKIdx.length, this.topKIdx);
      kth = scaled[idx[idx.length - 1]];
    }

    let max = -Infinity;
    for (let i = 0; i < n; i++) if (scaled[i] > max) max = scaled[i];
    if (!Number.isFinite(max)) throw this.badLogits(max);

    // Unnormalised survivors: w = exp(l - max), so the most likely token has weight exactly 1.
    const weights = this.weights;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const value = scaled[i];
      const w = value >= kth ? Math.exp(value - max) : Number.isNaN(value) ? NaN : 0;
      weights[i] = w;
      total += w;
    }
    if (!(total >= 1) || !Number.isFinite(total)) throw this.badLogits(total);

    if (this.topP < 1) {
      const cutoff = this.topPCutoff(total);
      total = 0;
      for (let i = 0; i < n; i++) {
        if (weights[i] < cutoff) weights[i] = 0;
        else total += weights[i];
      }
    }

    if (this.minP > 0) {
      // prob < minP * maxProb  <=>  w < minP * 1 (weights share the normaliser; the max weight is 1).
      const minP = this.minP;
      total = 0;
      for (let i = 0; i < n; i++) {
        if (weights[i] < minP) weights[i] = 0;
        else total += weights[i];
      }
    }

    const inv = 1 / total;
    for (let i = 0; i < n; i++) out[i] = weights[i] * inv;
    return out;
  }

  /** Greedy pick: argmax after the repetition penalty (first index on ties). Allocates nothing. */
  greedy(logits: Float32Array, history: ArrayLike<number>): number {
    this.checkLength('logits', logits);
    return argmax(this.penalty32 === 1 ? logits : this.penalisedLogits(logits, history));
  }

  /**
   * Copies logits into scratch and applies HF's RepetitionPenaltyLogitsProcessor: each distinct id in history
   * gets logit < 0 ? logit * penalty : logit / penalty. Reading from the untouched input makes repeats idempotent.
   */
  private penalisedLogits(logits: Float32Array, history: ArrayLike<number>): Float32Array {
    const scaled = this.scaledLogits;
    scaled.set(logits);
    const penalty = this.penalty32;
    if (penalty === 1) return scaled;
    const n = this.vocabSize;
    for (let h = 0; h < history.length; h++) {
      const id = history[h];
      if (!(id >= 0 && id < n) || !Number.isInteger(id)) {
        throw new OptionsError('INVALID_TOKEN_ID', `history[${h}] = ${id} is not a token id in [0, ${n}) (repetition penalty)`);
      }
      const logit = logits[id];
      scaled[id] = logit < 0 ? logit * penalty : logit / penalty;
    }
    return scaled;
  }

  /**
   * Smallest weight kept by top-p. HF removes a token when the ascending cumulative mass up to and including it
   * is <= 1 - top_p, i.e. keeps it iff the mass of strictly more likely tokens is < top_p. The cutoff c is the
   * largest weight with mass(w >= c) >= top_p; tokens tied with c are all kept (deterministic, order-free).
   * Found by a weighted quickselect in O(V) expected time instead of sorting the vocabulary.
   */
  private topPCutoff(total: number): number {
    const weights = this.weights;
    const cand = this.candidates;
    let count = 0;
    for (let i = 0; i < weights.length; i++) if (weights[i] > 0) cand[count++] = weights[i];
    // Mass still to cover inside cand[lo, hi); kept > 0 so an empty "greater" side never satisfies it.
    let need = Math.max((this.topP - TOP_P_SLACK) * total, Number.MIN_VALUE);
    let lo = 0;
    let hi = count;
    while (hi > lo) {
      const pivot = medianOfThree(cand[lo], cand[(lo + hi) >>> 1], cand[hi - 1]);
      // 3-way partition: [lo, gt) > pivot, [gt, i) == pivot, [lt, hi) < pivot.
      let gt = lo;
      let i = lo;
      let lt = hi;
      let massGreater = 0;
      let massEqual = 0;
      while (i < lt) {
        const v = cand[i];
        if (v > pivot) {
          cand[i] = cand[gt];
          cand[gt] = v;
          massGreater += v;
          gt++;
          i++;
        } else if (v < pivot) {
          lt--;
          cand[i] = cand[lt];
          cand[lt] = v;
        } else {
          massEqual += v;
          i++;
        }
      }
      if (massGreater >= need) {
        hi = gt;
      } else if (massGreater + massEqual >= need) {
        return pivot;
      } else {
        need -= massGreater + massEqual;
        if (lt === hi) return pivot; // rounding left a sliver uncovered: keep everything down to here
        lo = lt;
      }
    }
    // Unreachable for positive weights; keep everything rather than nothing.
    return 0;
  }

  private checkLength(name: string, array: Float32Array): void {
    if (array.length !== this.vocabSize) {
      throw new MexitError('SHAPE_MISMATCH', `LogitsWarper: ${name} has ${array.length} entries, expected vocabSize = ${this.vocabSize}`);
    }
  }

  private badLogits(found: number): MexitError {
    return new MexitError(
      'NO_FINITE_LOGITS',
      `LogitsWarper: logits need at least one finite entry and no NaN/+Infinity (reduction gave ${found})`,
    );
  }
}

function medianOfThree(a: number, b: number, c: number): number {
  if (a > b) {
    if (b >= c) return b;
    return a > c ? c : a;
  }
  if (a >= c) return a;
  return b > c ? c : b;
}

/**
 * Greedy or sampled choice of the next token through one warper, so a draft's q and the target's p are
 * warped alike (what lossless speculative sampling needs).
 */
export class TokenPicker {
  readonly rng: Rng;
  private readonly scratch: Float32Array;

  constructor(
    readonly warper: LogitsWarper,
    readonly doSample: boolean,
    seed: number,
  ) {
    this.rng = new Rng(seed);
    this.scratch = new Float32Array(warper.vocabSize);
  }

  /**
   * Picks from `logits` given `history`. When sampling, the warped distribution is written to `probsOut`
   * (kept by the caller as the draft distribution q) before the draw.
   */
  pick(logits: Float32Array, history: Int32Array, probsOut: Float32Array = this.scratch): number {
    if (!this.doSample) return this.warper.greedy(logits, history);
    this.warper.probs(logits, history, probsOut);
    return sampleCategorical(probsOut, this.rng);
  }

  /** Probability the picker gave `token` (sampled: q(token) from `probs`; greedy: softmax max of logits). */
  confidence(logits: Float32Array, token: number, probs: Float32Array): number {
    if (this.doSample) return probs[token];
    softmax(logits, this.scratch);
    return this.scratch[token];
  }
}
