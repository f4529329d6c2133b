/**
 * Numerically stable reductions over logits. Float32Array in, caller-provided output, no allocation.
 *
 * Precondition shared by softmax / logSoftmax: at least one entry must be finite and none may be NaN or
 * +Infinity. Masked entries (-Infinity) are fine and get probability 0 (log-probability -Infinity).
 * The check costs O(1) per call (it looks at the max and the sum), so violating it throws a MexitError
 * ('NO_FINITE_LOGITS') instead of silently writing NaN.
 */
import { MexitError } from './errors.js';

function checkSameLength(what: string, input: ArrayLike<number>, out: ArrayLike<number>): void {
  if (out.length !== input.length) {
    throw new MexitError('SHAPE_MISMATCH', `${what}: output has ${out.length} entries, expected ${input.length} (the input length)`);
  }
}

/** Largest entry, ignoring NaN; -Infinity when there is none. */
function maxIgnoringNaN(x: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const value = x[i];
    if (value > max) max = value;
  }
  return max;
}

function noFiniteLogits(what: string, length: number): MexitError {
  return new MexitError('NO_FINITE_LOGITS', `${what}: needs at least one finite logit and no NaN/+Infinity (got ${length} entries)`);
}

/**
 * Stable softmax (max-subtracted, accumulated in float64) written into `out`; returns `out`.
 * `out` may be the same array as `logits`. -Infinity entries get exactly 0.
 */
export function softmax(logits: Float32Array, out: Float32Array): Float32Array {
  checkSameLength('softmax', logits, out);
  const max = maxIgnoringNaN(logits);
  if (!Number.isFinite(max)) throw noFiniteLogits('softmax', logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp(logits[i] - max);
    out[i] = e;
    sum += e;
  }
  // sum >= 1 (the max contributes exp(0)); NaN fails the comparison.
  if (!(sum >= 1)) throw noFiniteLogits('softmax', logits.length);
  const inv = 1 / sum;
  for (let i = 0; i < out.length; i++) out[i] *= inv;
  return out;
}

/**
 * Stable log-softmax: out[i] = logits[i] - logsumexp(logits). `out` may be the same array as `logits`.
 * -Infinity entries stay -Infinity.
 */
export function logSoftmax(logits: Float32Array, out: Float32Array): Float32Array {
  checkSameLength('logSoftmax', logits, out);
  const max = maxIgnoringNaN(logits);
  if (!Number.isFinite(max)) throw noFiniteLogits('logSoftmax', logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  if (!(sum >= 1)) throw noFiniteLogits('logSoftmax', logits.length);
  const shift = max + Math.log(sum);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - shift;
  return out;
}

/**
 * log(Σ exp(x)) computed stably in float64. Follows the maths at the edges rather than throwing:
 * empty or all -Infinity → -Infinity; any +Infinity → +Infinity; any NaN → NaN.
 */
export function logsumexp(x: Float32Array): number {
  const max = maxIgnoringNaN(x);
  if (max === -Infinity) {
    for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i])) return NaN;
    return -Infinity;
  }
  if (max === Infinity) {
    for (let i = 0; i < x.length; i++) if (Number.isNaN(x[i])) return NaN;
    return Infinity;
  }
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  return max + Math.log(sum);
}

/**
 * Index of the largest entry; the first one on ties. NaN entries are ignored.
 * Throws MexitError 'NO_COMPARABLE_VALUE' when `x` is empty or all NaN (there is no valid index).
 */
export function argmax(x: Float32Array): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const value = x[i];
    // `>=` only for the first candidate, so -Infinity entries can win when nothing is larger.
    if (value > bestValue || (best < 0 && value === -Infinity)) {
      best = i;
      bestValue = value;
    }
  }
  if (best < 0) {
    throw new MexitError('NO_COMPARABLE_VALUE', `argmax: no non-NaN entry among ${x.length}`);
  }
  return best;
}

/**
 * True when entry i ranks above entry j: larger value first, then smaller index; NaN ranks below everything.
 * Ranking by index on ties makes the result deterministic (matches a stable descending sort).
 */
function ranksAbove(x: Float32Array, i: number, j: number): boolean {
  const a = x[i];
  const b = x[j];
  if (a > b) return true;
  if (a < b) return false;
  // Equal, or at least one NaN.
  const aNaN = Number.isNaN(a);
  const bNaN = Number.isNaN(b);
  if (aNaN !== bNaN) return bNaN;
  return i < j;
}

/**
 * Indices of the k largest entries of `x`, in descending order of value (ties: lower index first; NaN last),
 * written into outIdx[0..k); returns `outIdx`. O(V log k) with a bounded min-heap, no allocation.
 * Requires 0 <= k <= x.length and outIdx.length >= k.
 */
export function topKIndices(x: Float32Array, k: number, outIdx: Int32Array): Int32Array {
  if (!Number.isInteger(k) || k < 0 || k > x.length) {
    throw new MexitError('INVALID_ARGUMENT', `topKIndices: k must be an integer in [0, ${x.length}], got ${k}`);
  }
  if (outIdx.length < k) {
    throw new MexitError('SHAPE_MISMATCH', `topKIndices: outIdx has ${outIdx.length} entries, needs at least k = ${k}`);
  }
  if (k === 0) return outIdx;
  // outIdx[0..size) is a heap whose root is the lowest-ranked index kept so far.
  let size = 0;
  for (let i = 0; i < x.length; i++) {
    if (size < k) {
      // Sift up.
      let child = size++;
      while (child > 0) {
        const parent = (child - 1) >> 1;
        if (!ranksAbove(x, outIdx[parent], i)) break;
        outIdx[child] = outIdx[parent];
        child = parent;
      }
      outIdx[child] = i;
    } else if (ranksAbove(x, i, outIdx[0])) {
      siftDown(x, outIdx, i, size);
    }
  }
  // Heap sort in place: repeatedly move the lowest-ranked root to the end.
  for (let end = size - 1; end > 0; end--) {
    const lowest = outIdx[0];
    siftDown(x, outIdx, outIdx[end], end);
    outIdx[end] = lowest;
  }
  return outIdx;
}

/** Places `item` at the root of heap outIdx[0..size) and sifts it down (root = lowest-ranked). */
function siftDown(x: Float32Array, heap: Int32Array, item: number, size: number): void {
  let pos = 0;
  for (;;) {
    let child = 2 * pos + 1;
    if (child >= size) break;
    const right = child + 1;
    if (right < size && ranksAbove(x, heap[child], heap[right])) child = right;
    if (!ranksAbove(x, item, heap[child])) break;
    heap[pos] = heap[child];
    pos = child;
  }
  heap[pos] = item;
}
