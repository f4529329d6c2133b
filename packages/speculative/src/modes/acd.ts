/**
 * Auto-contrastive decoding (Gera et al. 2023, IBM autocontrastive-gen; REFERENCE §4): contrast an upper
 * exit with a lower one on the upper exit's plausible head set, keep the upper distribution elsewhere.
 */
import { MexitError, OptionsError, logSoftmax, softmax, topKIndices } from '@mexit/core';

/** Writes contrasted log-probabilities for one position into `out` (user-replaceable). */
export type ContrastFunction = (upper: Float32Array, lower: Float32Array, out: Float32Array) => void;

export interface AcdOptions {
  /** Head-set threshold as a fraction of the top upper probability, in (0, 1]. Default 0.1. */
  alpha?: number;
  /** The head set always holds at least this many tokens (integer ≥ 1). Default 1. */
  minimumCandidates?: number;
}

export const DEFAULT_ACD_ALPHA = 0.1;
export const DEFAULT_ACD_MINIMUM_CANDIDATES = 1;

/** Work buffers of one AutoContrast. */
interface AcdScratch {
  /** softmax(upper), vocabulary size. */
  upperProbs: Float32Array;
  /** Room for the indices of the `minimumCandidates` most probable upper tokens. */
  topIndices: Int32Array;
}

/** Validates ACD options and fills in defaults; OptionsError INVALID_OPTION names the bad option. */
export function resolveAcdOptions(options: AcdOptions = {}): Required<AcdOptions> {
  const alpha = options.alpha ?? DEFAULT_ACD_ALPHA;
  const minimumCandidates = options.minimumCandidates ?? DEFAULT_ACD_MINIMUM_CANDIDATES;
  if (typeof alpha !== 'number' || !(alpha > 0 && alpha <= 1)) {
    throw new OptionsError('INVALID_OPTION', `alpha must be a number in (0, 1], got ${String(alpha)}`);
  }
  if (typeof minimumCandidates !== 'number' || !Number.isInteger(minimumCandidates) || minimumCandidates < 1) {
    throw new OptionsError('INVALID_OPTION', `minimumCandidates must be an integer >= 1, got ${String(minimumCandidates)}`);
  }
  return { alpha, minimumCandidates };
}

/**
 * ACD over one vocabulary: `logProbs` writes contrasted log-probabilities into `out`. With p_u = softmax(upper),
 * τ = min(alpha·max p_u, k-th largest p_u) (k = minimumCandidates, capped at the vocabulary size),
 * H = {x : p_u(x) ≥ τ} and S = Σ_H p_u:
 *   x ∈ H: log S + d(x) − logsumexp_H(d),   d = upper − lower (logit-difference form: finite even when the
 *          lower probabilities underflow);
 *   x ∉ H: log p_u(x).
 * When |H| = 1 the result is exactly logSoftmax(upper). exp(out) sums to 1.
 *
 * `out` may be `upper` (in place) but not `lower`. Throws MexitError NO_FINITE_LOGITS (from softmax) on NaN / +∞ /
 * all −∞ upper logits, and NON_FINITE_LOGITS when a head-set token's lower logit is NaN or −∞ (the contrast
 * is undefined there).
 *
 * The one entry point of ACD: options are validated once and scratch is held for a fixed vocabulary size,
 * so `logProbs` allocates nothing.
 */
export class AutoContrast {
  readonly vocabSize: number;
  readonly alpha: number;
  readonly minimumCandidates: number;
  private readonly scratch: AcdScratch;

  constructor(vocabSize: number, options?: AcdOptions) {
    if (!Number.isInteger(vocabSize) || vocabSize < 1) {
      throw new MexitError('SHAPE_MISMATCH', `AutoContrast: vocabSize must be a positive integer, got ${vocabSize}`);
    }
    const resolved = resolveAcdOptions(options);
    this.vocabSize = vocabSize;
    this.alpha = resolved.alpha;
    this.minimumCandidates = resolved.minimumCandidates;
    this.scratch = {
      upperProbs: new Float32Array(vocabSize),
      topIndices: new Int32Array(Math.max(1, Math.min(resolved.minimumCandidates, vocabSize))),
    };
  }

  /** Contrasted log-probabilities of one position, written into `out` (returned). */
  logProbs(upper: Float32Array, lower: Float32Array, out: Float32Array): Float32Array {
    return contrastInto(upper, lower, out, this.alpha, this.minimumCandidates, this.scratch);
  }

  /** This instance as a {@link ContrastFunction}. */
  readonly contrast: ContrastFunction = (upper, lower, out) => {
    this.logProbs(upper, lower, out);
  };
}

function contrastInto(
  upper: Float32Array,
  lower: Float32Array,
  out: Float32Array,
  alpha: number,
  minimumCandidates: number,
  scratch: AcdScratch,
): Float32Array {
  const vocabSize = upper.length;
  if (vocabSize === 0 || lower.length !== vocabSize || out.length !== vocabSize) {
    throw new MexitError(
      'SHAPE_MISMATCH',
      `acdLogProbs: upper, lower and out must have the same non-zero length, got ${vocabSize}, ${lower.length}, ${out.length}`,
    );
  }
  if (out === lower) {
    throw new MexitError('SHAPE_MISMATCH', 'acdLogProbs: out must not be the lower logits buffer');
  }
  const candidates = Math.min(minimumCandidates, vocabSize);
  if (scratch.upperProbs.length < vocabSize || scratch.topIndices.length < candidates) {
    throw new MexitError(
      'SHAPE_MISMATCH',
      `acdLogProbs: scratch holds ${scratch.upperProbs.length} probabilities and ${scratch.topIndices.length} indices, need ${vocabSize} and ${candidates}`,
    );
  }
  const probs = vocabSize === scratch.upperProbs.length ? scratch.upperProbs : scratch.upperProbs.subarray(0, vocabSize);

  // Both from `upper` before `out` (possibly `upper` itself) is overwritten.
  // softmax throws NO_FINITE_LOGITS on NaN / +Infinity / all −Infinity upper logits.
  softmax(upper, probs);
  let maxProb = 0;
  for (let x = 0; x < vocabSize; x++) if (probs[x] > maxProb) maxProb = probs[x];
  let threshold = alpha * maxProb;
  if (candidates > 1) {
    const top = topKIndices(probs, candidates, scratch.topIndices);
    const kthProb = probs[top[candidates - 1]];
    if (kthProb < threshold) threshold = kthProb;
  }
  logSoftmax(upper, out);

  // Contrast score d = log p_u − z_l: differs from z_u − z_l by a constant, which the softmax over H cancels,
  // and reading it from `out` keeps `out === upper` working.
  let headSize = 0;
  let headMass = 0;
  let tailMass = 0;
  let maxScore = -Infinity;
  for (let x = 0; x < vocabSize; x++) {
    if (probs[x] >= threshold) {
      const score = out[x] - lower[x];
      if (Number.isNaN(score) || score === Infinity) {
        throw new MexitError(
          'NON_FINITE_LOGITS',
          `acdLogProbs: token ${x} is in the head set but its lower logit is ${lower[x]} (upper ${out[x]}); the contrast needs finite values there`,
        );
      }
      headSize++;
      headMass += probs[x];
      if (score > maxScore) maxScore = score;
    } else {
      tailMass += probs[x];
    }
  }
  if (headSize === 1) return out; // exactly log p_u
  if (maxScore === -Infinity) {
    throw new MexitError('NON_FINITE_LOGITS', 'acdLogProbs: every head-set token has a non-finite contrast score');
  }
  let sumExp = 0;
  for (let x = 0; x < vocabSize; x++) {
    if (probs[x] >= threshold) sumExp += Math.exp(out[x] - lower[x] - maxScore);
  }
  // log S: log1p(−tail) keeps precision when H holds nearly all the mass (and gives exactly 0 when it holds all).
  const logHeadMass = tailMass < 0.5 ? Math.log1p(-tailMass) : Math.log(headMass);
  const shift = logHeadMass - maxScore - Math.log(sumExp);
  for (let x = 0; x < vocabSize; x++) {
    if (probs[x] >= threshold) out[x] = out[x] - lower[x] + shift;
  }
  return out;
}
