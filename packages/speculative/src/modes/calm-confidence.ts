/**
 * CALM confidence measures and the decaying exit threshold (Schuster et al. 2022; REFERENCE §5).
 * An exit is taken when its confidence reaches the threshold λ_t of the current output position.
 */
import { MexitError, OptionsError, formatValue } from '@mexit/core';

export type ConfidenceMeasure = 'softmax' | 'top-gap' | 'saturation';
export const CONFIDENCE_MEASURES: readonly ConfidenceMeasure[] = ['softmax', 'top-gap', 'saturation'];

/** Default τ of the threshold decay. */
export const DEFAULT_CALM_DECAY_TAU = 4;

/**
 * Top-1 softmax probability of `logits`, computed in closed form (1 / Σ exp(z − max z)) in float64, so no
 * scratch buffer is needed. Throws MexitError NO_FINITE_LOGITS on empty, NaN, +∞ or all −∞ logits.
 */
export function softmaxMaxConfidence(logits: Float32Array): number {
  const top = maxOf(logits);
  return 1 / sumExpShifted(logits, top, 'softmaxMaxConfidence');
}

/**
 * Top-1 minus top-2 softmax probability: (1 − exp(z₂ − z₁)) / Σ exp(z − z₁), float64, no scratch.
 * Equal top logits give 0; a one-token vocabulary gives 1.
 */
export function topGapConfidence(logits: Float32Array): number {
  if (logits.length === 0) throw emptyLogits('topGapConfidence');
  let first = -Infinity;
  let second = -Infinity;
  for (let x = 0; x < logits.length; x++) {
    const z = logits[x];
    if (z > first) {
      second = first;
      first = z;
    } else if (z > second) {
      second = z;
    }
  }
  const sum = sumExpShifted(logits, first, 'topGapConfidence');
  return (1 - Math.exp(second - first)) / sum;
}

/**
 * Cosine similarity of two consecutive exit hidden states ("state saturation"), float64. A zero vector has
 * no direction: the result is then 0 (not saturated).
 */
export function saturationConfidence(prevHidden: Float32Array, hidden: Float32Array): number {
  if (prevHidden.length !== hidden.length || hidden.length === 0) {
    throw new MexitError(
      'SHAPE_MISMATCH',
      `saturationConfidence: hidden states must have the same non-zero length, got ${prevHidden.length} and ${hidden.length}`,
    );
  }
  let dot = 0;
  let prevNorm2 = 0;
  let norm2 = 0;
  for (let i = 0; i < hidden.length; i++) {
    const a = prevHidden[i];
    const b = hidden[i];
    dot += a * b;
    prevNorm2 += a * a;
    norm2 += b * b;
  }
  if (!Number.isFinite(dot) || !Number.isFinite(prevNorm2) || !Number.isFinite(norm2)) {
    throw new MexitError('NON_FINITE_HIDDEN', 'saturationConfidence: hidden states contain NaN or Infinity');
  }
  if (prevNorm2 === 0 || norm2 === 0) return 0;
  const cosine = dot / Math.sqrt(prevNorm2 * norm2);
  // Rounding can push |cos| a hair past 1.
  return cosine > 1 ? 1 : cosine < -1 ? -1 : cosine;
}

/**
 * Decaying CALM threshold for output position t (0-based) of at most `maxNewTokens`:
 * λ_t = clip_[0,1](0.9·λ + 0.1·λ·exp(−τ·t/N)). Starts at λ and decays towards 0.9·λ.
 */
export function calmThreshold(lambda: number, t: number, maxNewTokens: number, tau = DEFAULT_CALM_DECAY_TAU): number {
  if (!Number.isFinite(lambda)) {
    throw new OptionsError('INVALID_OPTION', `CALM threshold lambda must be a finite number, got ${lambda}`);
  }
  if (!(t >= 0) || !Number.isFinite(t)) {
    throw new OptionsError('INVALID_OPTION', `CALM threshold position t must be a finite number >= 0, got ${t}`);
  }
  if (!(maxNewTokens > 0) || !Number.isFinite(maxNewTokens)) {
    throw new OptionsError('INVALID_OPTION', `CALM threshold maxNewTokens must be a finite number > 0, got ${maxNewTokens}`);
  }
  if (!(tau >= 0) || !Number.isFinite(tau)) {
    throw new OptionsError('INVALID_OPTION', `CALM threshold tau must be a finite number >= 0, got ${tau}`);
  }
  const value = 0.9 * lambda + 0.1 * lambda * Math.exp((-tau * t) / maxNewTokens);
  return value < 0 ? 0 : value > 1 ? 1 : value;
}

/** What a confidence measure may need; which fields are required depends on the measure. */
export interface ConfidenceInputs {
  /** Exit logits (for 'softmax' and 'top-gap'). */
  logits?: Float32Array;
  /** This exit's hidden state (for 'saturation'). */
  hidden?: Float32Array;
  /** The previous exit's hidden state (for 'saturation'). */
  prevHidden?: Float32Array;
}

/** Dispatches to the named confidence measure. Missing inputs raise MexitError CONFIDENCE_MISSING_INPUT. */
export function computeConfidence(measure: ConfidenceMeasure, inputs: ConfidenceInputs): number {
  switch (measure) {
    case 'softmax':
      return softmaxMaxConfidence(requireInput(inputs.logits, measure, 'logits'));
    case 'top-gap':
      return topGapConfidence(requireInput(inputs.logits, measure, 'logits'));
    case 'saturation':
      return saturationConfidence(requireInput(inputs.prevHidden, measure, 'prevHidden'), requireInput(inputs.hidden, measure, 'hidden'));
    default:
      throw invalidMeasure(measure);
  }
}

/** Validates a user-supplied measure name; OptionsError INVALID_OPTION lists the valid ones. */
export function parseConfidenceMeasure(name: string): ConfidenceMeasure {
  if ((CONFIDENCE_MEASURES as readonly string[]).includes(name)) return name as ConfidenceMeasure;
  throw invalidMeasure(name);
}

function invalidMeasure(name: unknown): OptionsError {
  return new OptionsError(
    'INVALID_OPTION',
    `confidence measure must be one of ${CONFIDENCE_MEASURES.map((m) => `'${m}'`).join(', ')}, got ${formatValue(name, 100, 'js')}`,
  );
}

function requireInput(value: Float32Array | undefined, measure: ConfidenceMeasure, field: string): Float32Array {
  if (value === undefined) {
    throw new MexitError('CONFIDENCE_MISSING_INPUT', `confidence measure '${measure}' needs ${field}`);
  }
  return value;
}

function emptyLogits(caller: string): MexitError {
  return new MexitError('NO_FINITE_LOGITS', `${caller}: logits are empty`);
}

function maxOf(logits: Float32Array): number {
  let top = -Infinity;
  for (let x = 0; x < logits.length; x++) if (logits[x] > top) top = logits[x];
  return top;
}

/** Σ exp(z − top); throws unless the result is a real ≥ 1 (the top term alone contributes 1). */
function sumExpShifted(logits: Float32Array, top: number, caller: string): number {
  if (logits.length === 0) throw emptyLogits(caller);
  let sum = 0;
  for (let x = 0; x < logits.length; x++) sum += Math.exp(logits[x] - top);
  if (!(sum >= 1) || sum === Infinity) {
    throw new MexitError('NO_FINITE_LOGITS', `${caller}: logits contain NaN or +Infinity, or are all -Infinity`);
  }
  return sum;
}
