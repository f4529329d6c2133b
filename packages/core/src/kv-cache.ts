/**
 * Per-layer key/value cache for incremental decoding. Each layer owns one Float32Array for K and one for V,
 * token-major [capacity, kvHeads, headDim], so the first n tokens are one contiguous zero-copy view that can be
 * fed straight to onnxruntime. Layers keep separate lengths: in self-speculative decoding the draft layers run
 * ahead of the verify layers within a round, and truncate() rolls every layer back to the committed length.
 */
import { CacheError } from './errors.js';

export interface KvCacheOptions {
  numLayers: number;
  kvHeads: number;
  headDim: number;
  /** Rows (tokens) allocated up front per layer. Default min(256, maxCapacity). */
  initialCapacity?: number;
  /** Hard limit on rows per layer; appending past it throws CacheError 'KV_CAPACITY'. Default: KV_MAX_BYTES' worth. */
  maxCapacity?: number;
}

const DEFAULT_INITIAL_CAPACITY = 256;
const BYTES_PER_FLOAT = 4;
/** Most layers a cache may have (each holds two arrays; real models have at most a few hundred layers). */
export const KV_MAX_LAYERS = 1024;
/**
 * Most bytes of K and V one cache may allocate, all layers together (16 GiB). Checked before every allocation,
 * so an absurd shape or length is a CacheError rather than an out-of-memory abort.
 */
export const KV_MAX_BYTES = 2 ** 34;

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

/**
 * KV cache with geometric growth (all layers share one capacity). Views returned by view() alias the cache
 * storage: they stay valid until an append() that grows the capacity (which moves the data) or until the rows
 * are overwritten after a truncate()/reset().
 */
export class KvCache {
  readonly numLayers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Floats per token per layer: kvHeads * headDim. */
  readonly rowSize: number;
  readonly maxCapacity: number;

  private capacityRows: number;
  private readonly keys: Float32Array[];
  private readonly values: Float32Array[];
  private readonly lengths: Int32Array;

  /**
   * Validates the shape (CacheError 'KV_OPTIONS': positive integers, at most KV_MAX_LAYERS layers and KV_MAX_BYTES
   * for the initial rows) and allocates initialCapacity rows per layer.
   */
  constructor(options: KvCacheOptions) {
    const { numLayers, kvHeads, headDim } = options ?? ({} as KvCacheOptions);
    for (const [name, value] of [
      ['numLayers', numLayers],
      ['kvHeads', kvHeads],
      ['headDim', headDim],
    ] as const) {
      if (!isPositiveInteger(value)) {
        throw new CacheError('KV_OPTIONS', `KvCache: ${name} must be a positive integer, got ${String(value)}`);
      }
    }
    if (numLayers > KV_MAX_LAYERS) {
      throw new CacheError('KV_OPTIONS', `KvCache: numLayers must be at most ${KV_MAX_LAYERS}, got ${numLayers}`);
    }
    const maxCapacity = options.maxCapacity ?? Infinity;
    if (maxCapacity !== Infinity && !isPositiveInteger(maxCapacity)) {
      throw new CacheError('KV_OPTIONS', `KvCache: maxCapacity must be a positive integer, got ${String(maxCapacity)}`);
    }
    const initialCapacity = options.initialCapacity ?? Math.min(DEFAULT_INITIAL_CAPACITY, maxCapacity);
    if (!isPositiveInteger(initialCapacity) || initialCapacity > maxCapacity) {
      throw new CacheError(
        'KV_OPTIONS',
        `KvCache: initialCapacity must be a positive integer <= maxCapacity (${maxCapacity}), got ${String(initialCapacity)}`,
      );
    }
    const bytes = numLayers * initialCapacity * kvHeads * headDim * BYTES_PER_FLOAT * 2;
    if (bytes > KV_MAX_BYTES) {
      throw new CacheError(
        'KV_OPTIONS',
        `KvCache: ${numLayers} layers x ${initialCapacity} rows x ${kvHeads} kvHeads x ${headDim} headDim need ${bytes} bytes of K/V, ` +
          `more than the limit of ${KV_MAX_BYTES} (KV_MAX_BYTES)`,
      );
    }
    this.numLayers = numLayers;
    this.kvHeads = kvHeads;
    this.headDim = headDim;
    this.rowSize = kvHeads * headDim;
    this.maxCapacity = maxCapacity;
    this.capacityRows = initialCapacity;
    this.keys = [];
    this.values = [];
    for (let layer = 0; layer < numLayers; layer++) {
      this.keys.push(this.allocate(initialCapacity));
      this.values.push(this.allocate(initialCapacity));
    }
    this.lengths = new Int32Array(numLayers);
  }

  /** Rows (tokens) each layer can hold before the next growth. */
  get capacity(): number {
    return this.capacityRows;
  }

  /** Rows currently stored for `layer`. */
  length(layer: number): number {
    this.checkLayer(layer);
    return this.lengths[layer];
  }

  /**
   * Appends rows = k.length / rowSize tokens to `layer` (copying). Grows every layer geometrically when needed;
   * throws CacheError 'KV_CAPACITY' past maxCapacity, 'KV_SHAPE' for mismatched or ragged k/v.
   */
  append(layer: number, k: Float32Array, v: Float32Array): void {
    this.checkLayer(layer);
    if (!(k instanceof Float32Array) || !(v instanceof Float32Array)) {
      throw new CacheError('KV_SHAPE', `KvCache.append(layer ${layer}): k and v must be Float32Arrays`);
    }
    if (k.length !== v.length || k.length % this.rowSize !== 0) {
      throw new CacheError(
        'KV_SHAPE',
        `KvCache.append(layer ${layer}): k has ${k.length} floats and v has ${v.length}; both must be equal ` +
          `multiples of rowSize = ${this.rowSize} (kvHeads ${this.kvHeads} x headDim ${this.headDim})`,
      );
    }
    const rows = k.length / this.rowSize;
    const start = this.lengths[layer];
    const needed = start + rows;
    if (needed > this.capacityRows) this.grow(needed, layer);
    this.keys[layer].set(k, start * this.rowSize);
    this.values[layer].set(v, start * this.rowSize);
    this.lengths[layer] = needed;
  }

  /**
   * Zero-copy views of the first n rows (default: all stored rows) of `layer`'s K and V.
   * Throws CacheError 'KV_RANGE' when n is not an integer in [0, length(layer)].
   */
  view(layer: number, n?: number): { k: Float32Array; v: Float32Array } {
    this.checkLayer(layer);
    const length = this.lengths[layer];
    const rows = n ?? length;
    if (!Number.isInteger(rows) || rows < 0 || rows > length) {
      throw new CacheError('KV_RANGE', `KvCache.view(layer ${layer}): n = ${rows} is outside [0, ${length}] (stored rows)`);
    }
    const end = rows * this.rowSize;
    return { k: this.keys[layer].subarray(0, end), v: this.values[layer].subarray(0, end) };
  }

  /** Rolls back: every layer's length becomes min(its length, length). Data is not cleared. */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0) {
      throw new CacheError('KV_RANGE', `KvCache.truncate: length must be a non-negative integer, got ${length}`);
    }
    for (let layer = 0; layer < this.numLayers; layer++) {
      if (this.lengths[layer] > length) this.lengths[layer] = length;
    }
  }

  /** Empties every layer, keeping the allocation for the next sequence. */
  reset(): void {
    this.lengths.fill(0);
  }

  /** Bytes of K and V holding stored rows, summed over layers. */
  bytesUsed(): number {
    let rows = 0;
    for (let layer = 0; layer < this.numLayers; layer++) rows += this.lengths[layer];
    return rows * this.rowSize * BYTES_PER_FLOAT * 2;
  }

  /** Bytes allocated for K and V across all layers. */
  bytesAllocated(): number {
    return this.numLayers * this.capacityRows * this.rowSize * BYTES_PER_FLOAT * 2;
  }

  private checkLayer(layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.numLayers) {
      throw new CacheError('KV_LAYER', `KvCache: layer ${layer} is outside [0, ${this.numLayers})`);
    }
  }

  /** Reallocates every layer to at least `needed` rows (doubling, capped at maxCapacity), copying stored rows. */
  private grow(needed: number, layer: number): void {
    if (needed > this.maxCapacity) {
      throw new CacheError('KV_CAPACITY', `KvCache.append(layer ${layer}): needs ${needed} rows but maxCapacity is ${this.maxCapacity}`);
    }
    const rowBytes = this.numLayers * this.rowSize * BYTES_PER_FLOAT * 2;
    const limitRows = Math.floor(KV_MAX_BYTES / rowBytes);
    if (needed > limitRows) {
      throw new CacheError(
        'KV_CAPACITY',
        `KvCache.append(layer ${layer}): needs ${needed} rows = ${needed * rowBytes} bytes of K/V, more than the limit of ` +
          `${KV_MAX_BYTES} (KV_MAX_BYTES)`,
      );
    }
    const newCapacity = Math.min(Math.max(needed, this.capacityRows * 2), this.maxCapacity, limitRows);
    for (let l = 0; l < this.numLayers; l++) {
      const used = this.lengths[l] * this.rowSize;
      const keys = this.allocate(newCapacity);
      keys.set(this.keys[l].subarray(0, used));
      const values = this.allocate(newCapacity);
      values.set(this.values[l].subarray(0, used));
      this.keys[l] = keys;
      this.values[l] = values;
    }
    this.capacityRows = newCapacity;
  }

  private allocate(rows: number): Float32Array {
    try {
      return new Float32Array(rows * this.rowSize);
    } catch (cause) {
      throw new CacheError('KV_ALLOC', `KvCache: cannot allocate ${rows} rows x ${this.rowSize} floats per layer (${String(cause)})`, {
        cause,
      });
    }
  }
}
