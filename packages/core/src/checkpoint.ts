/**
 * openCheckpoint: one TensorMap over whatever weights a model directory holds: a single safetensors
 * file, a sharded safetensors index, a torch.save pytorch_model.bin, or a sharded .bin index.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CheckpointError } from './errors.js';
import { FILE_SIZE_LIMITS, fileKind, readJsonFile } from './files.js';
import { formatValue } from './pickle.js';
import { openSafetensors } from './safetensors.js';
import type { Tensor, TensorInfo, TensorMap } from './tensor.js';
import { openTorchCheckpoint } from './torch-pickle.js';

/** Weight files openCheckpoint looks for, in order of preference (safetensors first). */
export const CHECKPOINT_FILES: readonly string[] = Object.freeze([
  'model.safetensors',
  'model.safetensors.index.json',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
]);

/**
 * Opens the weights of a model directory (or a weights file / index file given directly).
 * CheckpointError CHECKPOINT_MISSING lists the names looked for when the directory has none of them.
 */
export function openCheckpoint(dir: string): TensorMap {
  const stat = statOrUndefined(dir);
  if (stat?.isFile()) return openWeightsFile(dir);
  if (stat?.isDirectory()) {
    for (const name of CHECKPOINT_FILES) {
      const file = path.join(dir, name);
      if (fs.existsSync(file)) return openWeightsFile(file);
    }
  }
  if (stat && !stat.isDirectory()) {
    throw new CheckpointError('CHECKPOINT_IO', `${dir}: expected a model directory or weights file, but it is ${fileKind(stat)}`);
  }
  throw new CheckpointError(
    'CHECKPOINT_MISSING',
    `${dir}: no model weights found ${stat ? 'in this directory' : '(no such directory)'}; looked for ${CHECKPOINT_FILES.join(', ')}`,
  );
}

function statOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.statSync(file);
  } catch {
    return undefined;
  }
}

function openWeightsFile(file: string): TensorMap {
  if (file.endsWith('.index.json')) return openShardedCheckpoint(file);
  if (file.endsWith('.safetensors')) return openSafetensors(file);
  return openTorchCheckpoint(file);
}

/**
 * Opens a sharded checkpoint from its index ({"weight_map": {tensor: shard file}}). Every shard must exist
 * (CHECKPOINT_SHARD_MISSING otherwise); shards are opened on first use.
 */
export function openShardedCheckpoint(indexFile: string): TensorMap {
  const parsed = readJsonFile(indexFile, {
    what: 'checkpoint index',
    maxBytes: FILE_SIZE_LIMITS.checkpointIndex,
    missingCode: 'CHECKPOINT_INDEX',
    jsonCode: 'CHECKPOINT_INDEX',
  });
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new CheckpointError('CHECKPOINT_INDEX', `${indexFile}: index has no "weight_map" object`);
  }
  const dir = path.dirname(indexFile);
  const shardOf = new Map<string, string>();
  const checked = new Set<string>();
  const map = weightMap as Record<string, unknown>;
  // for...in and one check per distinct shard: an index may list a million tensors
  for (const name in map) {
    if (!Object.hasOwn(map, name)) continue;
    const shard = map[name];
    if (typeof shard === 'string' && checked.has(shard)) {
      shardOf.set(name, shard);
      continue;
    }
    if (typeof shard !== 'string' || shard === '' || shard !== path.basename(shard) || shard === '..' || shard === '.') {
      // a shard must sit next to the index; anything with a path could point anywhere on disk
      throw new CheckpointError(
        'CHECKPOINT_INDEX',
        `${indexFile}: tensor ${formatValue(name)} maps to ${formatValue(shard)}, not a file name in ${dir}`,
      );
    }
    if (shard.endsWith('.index.json')) {
      throw new CheckpointError(
        'CHECKPOINT_INDEX',
        `${indexFile}: tensor ${formatValue(name)} maps to another index file ${formatValue(shard)}`,
      );
    }
    const shardStat = statOrUndefined(path.join(dir, shard));
    if (!shardStat?.isFile()) {
      throw new CheckpointError(
        'CHECKPOINT_SHARD_MISSING',
        `${indexFile}: shard file ${formatValue(shard)} (holding ${formatValue(name)}) ` +
          `${shardStat ? `is ${fileKind(shardStat)}, not a regular file,` : 'does not exist'} in ${dir}`,
      );
    }
    checked.add(shard);
    shardOf.set(name, shard);
  }
  return new ShardedTensorMap(indexFile, dir, shardOf);
}

class ShardedTensorMap implements TensorMap {
  readonly names: readonly string[];
  private readonly open = new Map<string, TensorMap>();
  private closed = false;

  constructor(
    private readonly indexFile: string,
    private readonly dir: string,
    private readonly shardOf: Map<string, string>,
  ) {
    this.names = Object.freeze([...shardOf.keys()]);
  }

  has(name: string): boolean {
    return this.shardOf.has(name);
  }

  info(name: string): TensorInfo {
    return this.shardFor(name).info(name);
  }

  get(name: string): Tensor {
    return this.shardFor(name).get(name);
  }

  getF32(name: string): Float32Array {
    return this.shardFor(name).getF32(name);
  }

  getRowsF32(name: string, rows: ArrayLike<number>, out: Float32Array): void {
    this.shardFor(name).getRowsF32(name, rows, out);
  }

  close(): void {
    this.closed = true;
    for (const shard of this.open.values()) shard.close();
    this.open.clear();
  }

  private shardFor(name: string): TensorMap {
    if (this.closed) throw new CheckpointError('CHECKPOINT_CLOSED', `${this.indexFile} was closed; cannot read '${name}'`);
    const shard = this.shardOf.get(name);
    if (shard === undefined) throw new CheckpointError('TENSOR_MISSING', `tensor '${name}' not found in ${this.indexFile}`);
    let map = this.open.get(shard);
    if (!map) {
      map = openWeightsFile(path.join(this.dir, shard));
      this.open.set(shard, map);
    }
    if (!map.has(name)) {
      throw new CheckpointError(
        'TENSOR_MISSING',
        `tensor '${name}': ${this.indexFile} places it in shard '${shard}', but that shard does not contain it`,
      );
    }
    return map;
  }
}
