/**
 * Reader for PyTorch checkpoints written by torch.save (>= 1.6): a zip holding `<archive>/data.pkl`
 * (the pickled state dict, tensors as persistent-id storage references) and `<archive>/data/<key>`
 * (raw little-endian storage bytes). The pickle goes through the restricted unpickler in pickle.ts, so a
 * malicious checkpoint cannot run code; tensor bytes are read lazily from the zip.
 */
import fs from 'node:fs';
import { CheckpointError } from './errors.js';
import { PickleDict, PickleGlobal, type PickleTuple, formatValue, unpickle } from './pickle.js';
import { DTYPE_BYTES, type DType, type TensorSource, SourceTensorMap, fileSizeOf, openForRead, readFullyAt, shapeSize } from './tensor.js';
import { ZipReader, type ZipEntry } from './zip.js';

/** torch storage class (module `torch`) → dtype. */
const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAMETER = 'torch._utils._rebuild_parameter';
const ORDERED_DICT = 'collections.OrderedDict';

/** The only globals a checkpoint's pickle may name. */
export const TORCH_ALLOWED_GLOBALS: ReadonlySet<string> = new Set([
  ORDERED_DICT,
  REBUILD_TENSOR,
  REBUILD_PARAMETER,
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

/** Largest data.pkl read; a state dict's pickle is ~100 bytes per tensor, so this is millions of tensors. */
export const TORCH_MAX_PICKLE_BYTES = 256 * 1024 * 1024;
/** torch writes 'little' or 'big'; anything much longer is not a byteorder record. */
const MAX_BYTEORDER_BYTES = 64;
/** A strided view is read in blocks whose storage span is at most MAX_SPAN_SLACK × their size + SPAN_ALWAYS_OK bytes. */
const MAX_SPAN_SLACK = 4;
const SPAN_ALWAYS_OK = 64 * 1024 * 1024;

// torch < 1.6 wrote a bare pickle stream starting with this pickled magic number (protocol 2, LONG1 0x1950a86a20f9469cfc6c)
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

class TorchStorage {
  constructor(
    readonly key: string,
    readonly dtype: DType,
    readonly numel: number,
    readonly entry: ZipEntry,
  ) {}
}

class TorchTensorRef {
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

/** Opens a torch.save zip checkpoint (e.g. pytorch_model.bin). Only the pickle is parsed at open. */
export function openTorchCheckpoint(file: string): SourceTensorMap {
  const fd = openForRead(file);
  try {
    const fileSize = fileSizeOf(fd, file);
    refuseLegacyFormat(fd, fileSize, file);
    const zip = new ZipReader(fd, fileSize, file);
    const archive = findArchivePrefix(zip, file);

    const byteorder = zip.entries.get(`${archive}byteorder`);
    if (byteorder) {
      if (byteorder.uncompressedSize > MAX_BYTEORDER_BYTES) {
        throw new CheckpointError('TORCH_BYTEORDER', `${file}: byteorder entry holds ${byteorder.uncompressedSize} bytes, not 'little'`);
      }
      const order = new TextDecoder().decode(zip.read(byteorder)).trim();
      if (order !== 'little') {
        throw new CheckpointError('TORCH_BYTEORDER', `${file}: storages are ${formatValue(order)}-endian; only little-endian is supported`);
      }
    }

    const pickleEntry = zip.entries.get(`${archive}data.pkl`)!;
    if (pickleEntry.uncompressedSize > TORCH_MAX_PICKLE_BYTES) {
      throw new CheckpointError(
        'PICKLE_TOO_LARGE',
        `${file}: ${pickleEntry.name} holds ${pickleEntry.uncompressedSize} bytes, over the ${TORCH_MAX_PICKLE_BYTES}-byte limit for a state dict pickle`,
      );
    }
    const pickleBytes = zip.read(pickleEntry);
    const storages = new Map<string, TorchStorage>();
    const root = unpickle(
      pickleBytes,
      {
        allowedGlobals: TORCH_ALLOWED_GLOBALS,
        persistentLoad: (pid, offset) => loadStorage(pid, offset, zip, archive, storages, file),
        reduce: (callable, args, offset) => reduce(callable, args, offset, file),
      },
      file,
    );

    const sources = new Map<string, TensorSource>();
    for (const [name, tensor] of stateDictEntries(root, file)) {
      sources.set(name, tensorSource(name, tensor, zip, file));
    }
    return new SourceTensorMap(file, sources, () => {
      zip.releaseCache();
      fs.closeSync(fd);
    });
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

function refuseLegacyFormat(fd: number, fileSize: number, file: string): void {
  const head = new Uint8Array(Math.min(fileSize, LEGACY_MAGIC.length));
  readFullyAt(fd, head, 0, file);
  if (head.length === LEGACY_MAGIC.length && LEGACY_MAGIC.every((b, i) => head[i] === b)) {
    throw new CheckpointError(
      'TORCH_NOT_ZIP',
      `${file}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with torch >= 1.6 ` +
        `(torch.save(torch.load(f), f)) or convert it to safetensors`,
    );
  }
}

/** torch names every entry `<archive>/...`; the archive is the folder holding data.pkl. */
function findArchivePrefix(zip: ZipReader, file: string): string {
  const candidates = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n) || n === 'data.pkl');
  if (candidates.length === 0) {
    throw new CheckpointError(
      'TORCH_NO_DATA_PKL',
      `${file}: zip has no '<archive>/data.pkl' entry, so it is not a torch.save checkpoint ` +
        `(entries: ${zip.entries.size === 0 ? 'none' : formatValue([...zip.entries.keys()])})`,
    );
  }
  if (candidates.length > 1) {
    throw new CheckpointError('TORCH_ZIP_INVALID', `${file}: zip holds several data.pkl entries (${formatValue(candidates)})`);
  }
  return candidates[0].slice(0, -'data.pkl'.length);
}

/** BINPERSID: ('storage', storage_type, key, location, numel) → a lazily read storage. */
function loadStorage(
  pid: unknown,
  offset: number,
  zip: ZipReader,
  archive: string,
  storages: Map<string, TorchStorage>,
  file: string,
): TorchStorage {
  const bad = (why: string) => new CheckpointError('TORCH_PERSISTENT_ID', `${file}: pickle persistent id at byte ${offset}: ${why}`);
  if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') throw bad(`expected ('storage', type, key, location, numel)`);
  const [, type, key, , numel] = pid as unknown[];
  if (!(type instanceof PickleGlobal) || type.module !== 'torch' || !Object.hasOwn(STORAGE_DTYPES, type.name)) {
    throw bad(`unknown storage type ${formatValue(type)}`);
  }
  if (typeof key !== 'string') throw bad(`storage key ${formatValue(key)} is not a string`);
  if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw bad(`bad element count ${formatValue(numel)}`);
  const dtype = STORAGE_DTYPES[type.name];

  const seen = storages.get(key);
  if (seen) {
    if (seen.dtype !== dtype || seen.numel !== numel) throw bad(`storage ${formatValue(key)} is referenced with two different types/sizes`);
    return seen;
  }
  const entryName = `${archive}data/${key}`;
  const entry = zip.entries.get(entryName);
  if (!entry) {
    throw new CheckpointError('TORCH_STORAGE_MISSING', `${file}: storage ${formatValue(key)} has no zip entry ${formatValue(entryName)}`);
  }
  const needed = numel * DTYPE_BYTES[dtype];
  if (entry.uncompressedSize < needed) {
    throw new CheckpointError(
      'TORCH_STORAGE_SIZE',
      `${file}: storage ${formatValue(key)} holds ${entry.uncompressedSize} bytes but ${numel} ${dtype} elements need ${needed}`,
    );
  }
  const storage = new TorchStorage(key, dtype, numel, entry);
  storages.set(key, storage);
  return storage;
}

/** REDUCE for the allowed callables; anything else allowed by name but not callable (storage classes) is refused. */
function reduce(callable: PickleGlobal, args: PickleTuple, offset: number, file: string): unknown {
  const bad = (why: string) =>
    new CheckpointError('TORCH_TENSOR_INVALID', `${file}: ${callable.qualifiedName} call at pickle byte ${offset}: ${why}`);
  switch (callable.qualifiedName) {
    case ORDERED_DICT:
      if (args.length !== 0) throw bad('only an empty OrderedDict() is supported');
      return new PickleDict();
    case REBUILD_PARAMETER:
      // (data, requires_grad, backward_hooks): a Parameter is just its tensor here
      if (!(args[0] instanceof TorchTensorRef)) throw bad('first argument is not a tensor');
      return args[0];
    case REBUILD_TENSOR: {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, storageOffset, size, stride] = args;
      if (args.length < 4 || !(storage instanceof TorchStorage)) throw bad('expected (storage, offset, size, stride, ...)');
      const isIndexList = (v: unknown): v is number[] =>
        Array.isArray(v) && v.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0);
      if (typeof storageOffset !== 'number' || !Number.isSafeInteger(storageOffset) || storageOffset < 0) {
        throw bad(`bad storage offset ${formatValue(storageOffset)}`);
      }
      if (!isIndexList(size) || !isIndexList(stride) || size.length !== stride.length) {
        throw bad(`size ${formatValue(size)} and stride ${formatValue(stride)} must be equal-length lists of non-negative integers`);
      }
      const numel = shapeSize(size);
      if (!Number.isSafeInteger(numel * DTYPE_BYTES[storage.dtype])) throw bad(`size ${formatValue(size)} is too large`);
      if (numel > 0) {
        let last = storageOffset;
        for (let d = 0; d < size.length; d++) last += (size[d] - 1) * stride[d];
        if (last >= storage.numel) {
          throw bad(
            `size ${formatValue(size)}, stride ${formatValue(stride)}, offset ${storageOffset} reach element ${last} of a ${storage.numel}-element storage`,
          );
        }
      }
      return new TorchTensorRef(storage, storageOffset, [...size], [...stride]);
    }
    default:
      throw bad('is not callable');
  }
}

function stateDictEntries(root: unknown, file: string): [string, TorchTensorRef][] {
  if (!(root instanceof PickleDict)) {
    throw new CheckpointError('TORCH_NOT_STATE_DICT', `${file}: the pickle holds a ${describe(root)}, not a state dict`);
  }
  const out: [string, TorchTensorRef][] = [];
  for (const [key, value] of root.map) {
    if (typeof key !== 'string') {
      throw new CheckpointError('TORCH_NOT_STATE_DICT', `${file}: state dict key ${formatValue(key)} is not a string`);
    }
    if (!(value instanceof TorchTensorRef)) {
      throw new CheckpointError(
        'TORCH_NOT_STATE_DICT',
        `${file}: state dict entry ${formatValue(key)} is a ${describe(value)} (${formatValue(value)}), not a tensor`,
      );
    }
    out.push([key, value]);
  }
  return out;
}

function tensorSource(name: string, t: TorchTensorRef, zip: ZipReader, file: string): TensorSource {
  const itemSize = DTYPE_BYTES[t.storage.dtype];
  const numel = shapeSize(t.shape);
  const info = { name, dtype: t.storage.dtype, shape: t.shape, byteLength: numel * itemSize, file };
  const entry = t.storage.entry;
  if (numel === 0) return { info, read: () => {} };
  if (isContiguous(t.shape, t.stride)) {
    return {
      info,
      read: (dst) => zip.readRange(entry, t.storageOffset * itemSize, dst),
      readAt: (dst, offset) => zip.readRange(entry, t.storageOffset * itemSize + offset, dst),
    };
  }
  return { info, read: (dst) => readStrided(zip, entry, t, itemSize, dst) };
}

/**
 * A strided view: the most inner dimensions whose storage span stays within a few times their own size are
 * read as one block per index of the outer ones and gathered in row-major order. A dense view (a
 * transpose) is one read; a sparse one (huge strides) never allocates its whole span.
 */
function readStrided(zip: ZipReader, entry: ZipEntry, t: TorchTensorRef, itemSize: number, dst: Uint8Array): void {
  const { shape, stride } = t;
  let split = shape.length;
  let span = 1; // elements the inner dimensions [split, rank) touch
  let count = 1; // elements they hold
  for (let d = shape.length - 1, dSpan = 1, dCount = 1; d >= 0; d--) {
    dSpan += (shape[d] - 1) * stride[d];
    dCount *= shape[d];
    if (dSpan * itemSize <= MAX_SPAN_SLACK * dCount * itemSize + SPAN_ALWAYS_OK) {
      split = d;
      span = dSpan;
      count = dCount;
    }
  }
  const innerShape = shape.slice(split);
  const innerStride = stride.slice(split);
  const blockBytes = count * itemSize;
  const block = new Uint8Array(span * itemSize);
  const index = new Array<number>(split).fill(0);
  let base = t.storageOffset;
  for (let out = 0; out < dst.length; out += blockBytes) {
    zip.readRange(entry, base * itemSize, block);
    gather(block, innerShape, innerStride, itemSize, dst.subarray(out, out + blockBytes));
    // odometer increment over the outer dimensions
    for (let d = split - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        base += stride[d];
        break;
      }
      base -= (shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
}

/** Row-major contiguity, ignoring the stride of size-1 dimensions (as torch does). */
function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Copies the strided view of `src` (element strides, offset already applied) into dense `dst`. */
function gather(src: Uint8Array, shape: readonly number[], stride: readonly number[], itemSize: number, dst: Uint8Array): void {
  // copy whole elements as 1-, 2- or 4-byte words (8-byte items as two words) instead of byte by byte
  const wordSize = Math.min(itemSize, 4);
  const aligned = src.byteOffset % wordSize === 0 && dst.byteOffset % wordSize === 0;
  const word = aligned ? wordSize : 1;
  const words = (a: Uint8Array): Uint8Array | Uint16Array | Uint32Array =>
    word === 4
      ? new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4)
      : word === 2
        ? new Uint16Array(a.buffer, a.byteOffset, a.byteLength / 2)
        : a;
  const from = words(src);
  const to = words(dst);
  const wordsPerItem = itemSize / word;
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  const total = shapeSize(shape);
  let srcElement = 0;
  for (let i = 0, out = 0; i < total; i++) {
    const base = srcElement * wordsPerItem;
    for (let w = 0; w < wordsPerItem; w++) to[out++] = from[base + w];
    // odometer increment over the multi-index
    for (let d = rank - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        srcElement += stride[d];
        break;
      }
      srcElement -= (shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
}

function describe(v: unknown): string {
  if (v === null) return 'None';
  if (v instanceof PickleDict) return 'dict';
  if (v instanceof PickleGlobal) return `global ${v.qualifiedName}`;
  if (Array.isArray(v)) return Object.isFrozen(v) ? 'tuple' : 'list';
  if (v instanceof TorchTensorRef) return 'tensor';
  return typeof v;
}
