/**
 * On-disk cache of quantized draft weights (RuntimeOptions.cacheDir). An int8 / int4 stage quantizes each of
 * its linear weights in JS at build time (quantizeBlocks), which at 1B parameters costs seconds per load;
 * with a cache directory the blocks are computed once and later read back from MessagePack files.
 *
 * One file per quantized weight, `<cacheDir>/quantized/<sha256 of key>.msgpack`. The key names everything the
 * blocks depend on: the format version, QUANT_BLOCK, bits, N, K and, for each source tensor (several for a
 * joined linearsT weight), its name and its checkpoint file's absolute path, size and mtimeMs. A file is used
 * only if it decodes, repeats the key, has the lengths N, K and bits imply and its SHA-256 matches;
 * otherwise (missing, truncated, garbage, stale, wrong lengths) the blocks are recomputed and the file
 * rewritten (atomically: temporary file + rename). A cache that cannot be written is skipped silently: it
 * only ever saves time, it never changes a stage's weights.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MexitError, MsgpackStore, type TensorMap } from '@mexit/core';
import { QUANT_BLOCK, quantizeBlocks, type BlockQuantizer, type QuantizedBlocks } from './onnx/builder.js';

/** Bump when the stored layout or quantizeBlocks' arithmetic changes: old files then simply miss. */
export const QUANT_CACHE_FORMAT = 1;

/** What a cache file holds. */
interface StoredBlocks {
  format: number;
  key: string;
  N: number;
  K: number;
  bits: number;
  data: Uint8Array;
  scales: Float32Array;
  /** SHA-256 (hex) of data then scales. */
  sha256: string;
}

function digest(blocks: QuantizedBlocks): string {
  const { data, scales } = blocks;
  return createHash('sha256')
    .update(data)
    .update(new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength))
    .digest('hex');
}

export class QuantizedBlockCache {
  /** Weights read from the cache. */
  hits = 0;
  /** Weights quantized because no valid file held them (missing, stale or rejected). */
  misses = 0;
  /** Files found but not used: undecodable, for another key, wrong lengths or checksum. Counted in misses too. */
  rejected = 0;
  /** Files written (each miss writes one unless writing fails). */
  writes = 0;
  private readonly store: MsgpackStore;

  constructor(
    readonly dir: string,
    private readonly tensors: TensorMap,
  ) {
    this.store = new MsgpackStore(join(dir, 'quantized'));
  }

  /** The GraphBuilder quantizer: stored blocks when valid, else quantizeBlocks (stored for next time). */
  readonly quantizer: BlockQuantizer = (w, N, K, bits, sources) => {
    const key = this.key(N, K, bits, sources);
    if (key === undefined) return quantizeBlocks(w, N, K, bits);
    const file = createHash('sha256').update(key).digest('hex');
    const stored = this.read(file, key, N, K, bits);
    if (stored) {
      this.hits++;
      return stored;
    }
    this.misses++;
    const blocks = quantizeBlocks(w, N, K, bits);
    const entry: StoredBlocks = {
      format: QUANT_CACHE_FORMAT,
      key,
      N,
      K,
      bits,
      data: blocks.data,
      scales: blocks.scales,
      sha256: digest(blocks),
    };
    try {
      this.store.write(file, entry);
      this.writes++;
    } catch (err) {
      if (!(err instanceof MexitError)) throw err;
    }
    return blocks;
  };

  /** The cache key, or undefined when a source is not a checkpoint tensor or its file cannot be stat'ed. */
  private key(N: number, K: number, bits: number, sources: readonly string[]): string | undefined {
    const files: [string, string, number, number][] = [];
    for (const name of sources) {
      if (!this.tensors.has(name)) return undefined;
      const file = resolve(this.tensors.info(name).file);
      let size: number;
      let mtimeMs: number;
      try {
        ({ size, mtimeMs } = statSync(file));
      } catch {
        return undefined;
      }
      files.push([name, file, size, mtimeMs]);
    }
    return JSON.stringify({ format: QUANT_CACHE_FORMAT, block: QUANT_BLOCK, bits, N, K, sources: files });
  }

  /** The stored blocks of `file` if it is a valid entry for `key`, else undefined. */
  private read(file: string, key: string, N: number, K: number, bits: number): QuantizedBlocks | undefined {
    let entry: unknown;
    try {
      entry = this.store.read(file);
    } catch (err) {
      if (!(err instanceof MexitError)) throw err;
      if (err.code !== 'MSGPACK_MISSING') this.rejected++;
      return undefined;
    }
    if (!isValidEntry(entry, key, N, K, bits)) {
      this.rejected++;
      return undefined;
    }
    return { data: entry.data, scales: entry.scales };
  }
}

/** Whether `entry` holds blocks for `key` of the lengths an [N, K] weight at `bits` has, with a matching checksum. */
function isValidEntry(entry: unknown, key: string, N: number, K: number, bits: number): entry is StoredBlocks {
  if (typeof entry !== 'object' || entry === null) return false;
  const e = entry as Partial<StoredBlocks>;
  const blocks = K / QUANT_BLOCK;
  return (
    e.format === QUANT_CACHE_FORMAT &&
    e.key === key &&
    e.N === N &&
    e.K === K &&
    e.bits === bits &&
    e.data instanceof Uint8Array &&
    e.data.length === (N * blocks * QUANT_BLOCK * bits) / 8 &&
    e.scales instanceof Float32Array &&
    e.scales.length === N * blocks &&
    e.sha256 === digest({ data: e.data, scales: e.scales })
  );
}
