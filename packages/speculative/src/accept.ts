/**
 * Acceptance rules for speculative decoding (REFERENCE §1, step 3). Pure functions on token ids, logits and
 * Float32Array distributions; nothing here knows about models or caches.
 */
import { MexitError, sampleCategorical } from '@mexit/core';
import type { Rng, TokenPicker } from '@mexit/core';

/**
 * Greedy acceptance: the length n of the longest prefix with `draftTokens[i] === targetTokens[i]`.
 *
 * `targetTokens[i]` is the target's greedy token at draft position i: one per draft, plus optionally the
 * bonus token after the last draft. The emitted block is `draftTokens[0..n)` followed by `targetTokens[n]`
 * (the correction at the first mismatch, or the bonus when every draft token matched and it exists).
 */
export function acceptGreedy(draftTokens: ArrayLike<number>, targetTokens: ArrayLike<number>): number {
  const draftLength = draftTokens.length;
  if (targetTokens.length < draftLength) {
    throw new MexitError(
      'SHAPE_MISMATCH',
      `acceptGreedy: ${draftLength} draft tokens need at least ${draftLength} target tokens (one per draft position, optionally the bonus), got ${targetTokens.length}`,
    );
  }
  let accepted = 0;
  while (accepted < draftLength && draftTokens[accepted] === targetTokens[accepted]) accepted++;
  return accepted;
}

/** Inputs of {@link SpeculativeSampler.acceptSampled}. */
export interface SampledAcceptanceArgs {
  /** d draft tokens, `draftTokens[i]` sampled from `draftProbs[i]`. */
  draftTokens: ArrayLike<number>;
  /** q_i: exactly the (warped, normalised) distribution each draft token was sampled from. */
  draftProbs: readonly Float32Array[];
  /**
   * p_0..p_{d−1}: the target's distributions, warped by the same warper as q, optionally followed by p_d, the
   * bonus distribution. Without p_d a fully accepted round emits no further token (`nextToken` null).
   */
  targetProbs: readonly Float32Array[];
  rng: Rng;
  /** Whether targetProbs[d] (the bonus distribution) is there to use. Default: targetProbs.length > d. */
  bonus?: boolean;
}

/** Outcome of one round: `draftTokens[0..accepted)` are kept and `nextToken` (if any) is emitted after them. */
export interface SampledAcceptance {
  accepted: number;
  nextToken: number | null;
}

/**
 * Lossless speculative sampling (Leviathan et al. / Chen et al.): the emitted tokens are distributed
 * exactly as if sampled from the target distributions p, whatever the draft distributions q are,
 * provided each draft token really was sampled from the q passed in.
 *
 * Holds one residual buffer of vocabulary size, so a call allocates only its small result object.
 */
export class SpeculativeSampler {
  readonly vocabSize: number;
  private readonly residual: Float32Array;

  constructor(vocabSize: number) {
    if (!Number.isInteger(vocabSize) || vocabSize < 1) {
      throw new MexitError('SHAPE_MISMATCH', `SpeculativeSampler: vocabSize must be a positive integer, got ${vocabSize}`);
    }
    this.vocabSize = vocabSize;
    this.residual = new Float32Array(vocabSize);
  }

  /**
   * Accepts or rejects each draft token in order and picks the token emitted after the accepted prefix.
   *
   * For i = 0..d-1: u_i = rng.nextFloat(); accept draft token x if u_i < p_i(x) / q_i(x) (i.e. with
   * probability min(1, p_i(x)/q_i(x))). If q_i(x) == 0 (x could not have come from q_i: a caller bug or an
   * underflow) the token is rejected. At the first rejection the next token is sampled from
   * normalise(max(p_i − q_i, 0)); if that residual has no mass (p_i == q_i) it is sampled from p_i. If all d
   * tokens are accepted the bonus token is sampled from p_d (when given; else there is no next token: the
   * caller continues from the last draft, which is still exact — the round simply ends one token earlier).
   *
   * RNG stream, fixed for reproducibility: one `nextFloat()` per examined draft position (always drawn,
   * even when q_i(x) == 0), then exactly one `sampleCategorical` call for the emitted token.
   */
  acceptSampled(args: SampledAcceptanceArgs): SampledAcceptance {
    const { draftTokens, draftProbs, targetProbs, rng } = args;
    const draftLength = draftTokens.length;
    const bonus = args.bonus ?? targetProbs.length > draftLength;
    if (draftProbs.length < draftLength || targetProbs.length < draftLength + (bonus ? 1 : 0)) {
      throw new MexitError(
        'SHAPE_MISMATCH',
        `acceptSampled: ${draftLength} draft tokens need ${draftLength} draft distributions and ${draftLength + (bonus ? 1 : 0)} target distributions, got ${draftProbs.length} and ${targetProbs.length}`,
      );
    }
    for (let i = 0; i < draftLength; i++) {
      const token = draftTokens[i];
      const q = draftProbs[i];
      const p = targetProbs[i];
      this.checkDistribution(p, 'targetProbs', i);
      this.checkDistribution(q, 'draftProbs', i);
      if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) {
        throw new MexitError('SHAPE_MISMATCH', `acceptSampled: draft token ${i} is ${token}, outside [0, ${this.vocabSize})`);
      }
      const u = rng.nextFloat();
      const qx = q[token];
      // u < p/q is u < min(1, p/q) because u < 1.
      if (qx > 0 && u < p[token] / qx) continue;
      return { accepted: i, nextToken: this.sampleResidual(p, q, rng) };
    }
    if (!bonus) return { accepted: draftLength, nextToken: null };
    this.checkDistribution(targetProbs[draftLength], 'targetProbs', draftLength);
    return { accepted: draftLength, nextToken: sampleCategorical(targetProbs[draftLength], rng) };
  }

  /**
   * Samples from normalise(max(p − q, 0)), or from p when that has no mass. sampleCategorical scales its
   * uniform by the actual sum, which is the normalisation, so the residual is not rescaled separately.
   */
  private sampleResidual(p: Float32Array, q: Float32Array, rng: Rng): number {
    const residual = this.residual;
    let mass = 0;
    for (let x = 0; x < residual.length; x++) {
      const r = p[x] - q[x];
      const positive = r > 0 ? r : 0;
      residual[x] = positive;
      mass += positive;
    }
    return sampleCategorical(mass > 0 ? residual : p, rng);
  }

  private checkDistribution(probs: Float32Array | undefined, name: string, index: number): void {
    if (probs === undefined || probs.length !== this.vocabSize) {
      throw new MexitError(
        'SHAPE_MISMATCH',
        `acceptSampled: ${name}[${index}] must have the vocabulary size ${this.vocabSize}, got ${probs === undefined ? 'undefined' : probs.length}`,
      );
    }
  }
}

/** Inputs of {@link DraftAcceptance.accept}: one round's drafts and the full model's logits for them. */
export interface RoundToJudge {
  picker: TokenPicker;
  /** History with the drafts at [committed, committed + drafts): the repetition penalty of row i reads its first committed + i ids. */
  history: Int32Array;
  committed: number;
  drafts: readonly number[];
  /** Sampling: q_i per draft. */
  draftProbs?: readonly Float32Array[];
  /** [rows, vocab] target logits, rows = drafts (no bonus row) or drafts + 1. */
  logits: Float32Array;
  bonus: boolean;
}

/**
 * The acceptance step of a round: warps each target row exactly like the drafts were warped, then applies
 * the greedy rule (longest agreeing prefix, then the target's token) or lossless speculative sampling.
 * Holds its scratch, so a round allocates only its result.
 */
export class DraftAcceptance {
  private readonly sampler: SpeculativeSampler;
  private readonly targetProbs: Float32Array[] = [];
  private targets = new Int32Array(16);

  constructor(private readonly vocabSize: number) {
    this.sampler = new SpeculativeSampler(vocabSize);
  }

  accept(r: RoundToJudge): { accepted: number; next: number | null } {
    const V = this.vocabSize;
    const rows = r.drafts.length + (r.bonus ? 1 : 0);
    const row = (i: number) => r.logits.subarray(i * V, (i + 1) * V);
    const historyAt = (i: number) => r.history.subarray(0, r.committed + i);
    if (!r.picker.doSample) {
      if (this.targets.length < rows) this.targets = new Int32Array(rows * 2);
      for (let i = 0; i < rows; i++) this.targets[i] = r.picker.warper.greedy(row(i), historyAt(i));
      const accepted = acceptGreedy(r.drafts, this.targets.subarray(0, rows));
      return { accepted, next: accepted < rows ? this.targets[accepted] : null };
    }
    while (this.targetProbs.length < rows) this.targetProbs.push(new Float32Array(V));
    for (let i = 0; i < rows; i++) r.picker.warper.probs(row(i), historyAt(i), this.targetProbs[i]);
    const { accepted, nextToken } = this.sampler.acceptSampled({
      draftTokens: r.drafts,
      draftProbs: r.draftProbs ?? [],
      targetProbs: this.targetProbs,
      rng: r.picker.rng,
      bonus: r.bonus,
    });
    return { accepted, next: nextToken };
  }
}
