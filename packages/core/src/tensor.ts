/**
 * Tensor types shared by the checkpoint readers (safetensors, PyTorch zip), dtype tables and the
 * F16/BF16 → F32 conversions.
 */
import fs from 'node:fs';
import { CheckpointError } from './errors.js';
import { OPEN_READ_FLAGS, fileKind } from './files.js';

/** Element types the readers understand (safetensors names). */
export type DType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Storage array for a tensor: F16/BF16 hold raw bits in a Uint16Array, BOOL holds 0/1 bytes in a Uint8Array. */
export type TensorData = Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array;

/** A dense, row-major tensor. */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

/** What a checkpoint says about a tensor, without reading its data. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** elements × bytes per element */
  byteLength: number;
  /** the file the tensor's bytes live in */
  file: string;
}

/** Read-only, lazily loaded view of a checkpoint's tensors. */
export interface TensorMap {
  readonly names: readonly string[];
  has(name: string): boolean;
  /** CheckpointError TENSOR_MISSING naming the tensor and the checkpoint path. */
  info(name: string): TensorInfo;
  /** Raw dtype (F16/BF16 as Uint16Array bits). Returns a fresh, aligned array. */
  get(name: string): Tensor;
  /** Any float dtype (F32, F16, BF16, F64) converted to F32; CheckpointError TENSOR_DTYPE for integer dtypes. */
  getF32(name: string): Float32Array;
  /**
   * Rows `rows[i]` of a 2-D float tensor [R, C], as F32, into out[i·C .. (i+1)·C). Reads only those rows where
   * the format allows (per-token embedding lookups of a model whose table stays on disk); otherwise the tensor
   * is read once and kept. CheckpointError TENSOR_SHAPE for a row outside 0..R−1.
   */
  getRowsF32(name: string, rows: ArrayLike<number>, out: Float32Array): void;
  close(): void;
}

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = Object.freeze({
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
});

/** All supported dtypes, in a fixed order. */
export const DTYPES: readonly DType[] = Object.freeze(Object.keys(DTYPE_BYTES) as DType[]);

/** True when `s` names a supported dtype. */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

/** True for the dtypes getF32 can convert. */
export function isFloatDType(dtype: DType): boolean {
  return dtype === 'F32' || dtype === 'F16' || dtype === 'BF16' || dtype === 'F64';
}

/** Product of the dimensions (1 for a scalar shape []). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A fresh zero-filled array of the storage type for `dtype` (always aligned: it owns its buffer). */
export function allocTensorData(dtype: DType, elements: number): TensorData {
  switch (dtype) {
    case 'F32':
      return new Float32Array(elements);
    case 'F16':
    case 'BF16':
      return new Uint16Array(elements);
    case 'F64':
      return new Float64Array(elements);
    case 'I64':
      return new BigInt64Array(elements);
    case 'I32':
      return new Int32Array(elements);
    case 'I16':
      return new Int16Array(elements);
    case 'I8':
      return new Int8Array(elements);
    case 'U8':
    case 'BOOL':
      return new Uint8Array(elements);
  }
}

/** The bytes of a typed array, as a Uint8Array view (no copy). */
export function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

// F16 bits → F32 bits for all 65536 patterns; built on first use (256 KiB), makes conversion one load per element.
let f16Table: Uint32Array | null = null;

function buildF16Table(): Uint32Array {
  const table = new Uint32Array(65536);
  const scratch = new Float32Array(1);
  const scratchBits = new Uint32Array(scratch.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    let bits: number;
    if (exp === 0) {
      // zero or subnormal: mant · 2^-24 is exact in F32
      scratch[0] = mant * 2 ** -24;
      bits = scratchBits[0];
    } else if (exp === 31) {
      bits = 0x7f800000 | (mant << 13); // inf, or NaN keeping its payload
    } else {
      bits = ((exp + 112) << 23) | (mant << 13); // rebias 15 → 127
    }
    table[h] = (sign | bits) >>> 0;
  }
  return table;
}

/** One IEEE half-precision bit pattern as a number (exact). */
export function f16BitsToF32(bits: number): number {
  f16Table ??= buildF16Table();
  const out = new Float32Array(new Uint32Array([f16Table[bits & 0xffff]]).buffer);
  return out[0];
}

/** One bfloat16 bit pattern as a number (exact: bf16 is the top half of an f32). */
export function bf16BitsToF32(bits: number): number {
  const out = new Float32Array(new Uint32Array([(bits & 0xffff) << 16]).buffer);
  return out[0];
}

/**
 * Converts `count` F16 or BF16 values to F32. `src` may alias the upper half of `out`'s buffer
 * (element i is read before out[i] overwrites src[2i..2i+1], and 2i+1 < count+i for i < count),
 * which lets the readers load bits into the F32 result's own memory and convert in place.
 */
export function halfToF32(dtype: 'F16' | 'BF16', src: Uint16Array, out: Float32Array): Float32Array {
  const n = src.length;
  if (out.length < n) {
    throw new CheckpointError('TENSOR_SHAPE', `halfToF32: output holds ${out.length} floats, need ${n}`);
  }
  const outBits = new Uint32Array(out.buffer, out.byteOffset, n);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) outBits[i] = src[i] << 16;
  } else {
    f16Table ??= buildF16Table();
    const table = f16Table;
    for (let i = 0; i < n; i++) outBits[i] = table[src[i]];
  }
  return out;
}

/** Rounds F32 values to BF16 bits (round to nearest even; NaN stays NaN). */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i];
    if ((b & 0x7fffffff) > 0x7f800000) {
      out[i] = (b >>> 16) | 0x40; // quiet NaN
    } else {
      out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/** Checks that `data` is the storage type for `dtype` and holds exactly shape-product elements. */
export function checkTensor(name: string, t: Tensor): void {
  if (!isDType(t.dtype)) throw new CheckpointError('TENSOR_DTYPE', `tensor '${name}': unknown dtype ${String(t.dtype)}`);
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new CheckpointError('TENSOR_SHAPE', `tensor '${name}': bad dimension ${d} in shape [${t.shape}]`);
    }
  }
  const expectedCtor = allocTensorData(t.dtype, 0).constructor;
  if (t.data.constructor !== expectedCtor) {
    throw new CheckpointError(
      'TENSOR_DTYPE',
      `tensor '${name}': dtype ${t.dtype} needs a ${expectedCtor.name}, got ${t.data.constructor.name}`,
    );
  }
  const n = shapeSize(t.shape);
  if (t.data.length !== n) {
    throw new CheckpointError('TENSOR_SHAPE', `tensor '${name}': shape [${t.shape}] has ${n} elements but data has ${t.data.length}`);
  }
}

/** Where one tensor's bytes come from; `read` fills `dst` (exactly info.byteLength bytes). */
export interface TensorSource {
  info: TensorInfo;
  read(dst: Uint8Array): void;
  /** Fills `dst` from byte `offset` of the tensor's data (contiguous layouts only). */
  readAt?(dst: Uint8Array, offset: number): void;
}

/**
 * TensorMap over a fixed set of lazily read tensors. The format readers supply one TensorSource per
 * tensor; this class owns allocation and dtype conversion so both formats behave identically.
 */
export class SourceTensorMap implements TensorMap {
  readonly names: readonly string[];
  private closed = false;

  constructor(
    /** checkpoint path used in error messages */
    readonly path: string,
    private readonly sources: Map<string, TensorSource>,
    private readonly onClose: () => void,
  ) {
    this.names = Object.freeze([...sources.keys()]);
  }

  has(name: string): boolean {
    return this.sources.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.source(name).info;
    return { ...info, shape: [...info.shape] };
  }

  get(name: string): Tensor {
    const src = this.source(name);
    const { dtype, shape } = src.info;
    const data = allocTensorData(dtype, shapeSize(shape));
    src.read(bytesOf(data));
    return { dtype, shape: [...shape], data };
  }

  getF32(name: string): Float32Array {
    const src = this.source(name);
    const { dtype, shape } = src.info;
    const n = shapeSize(shape);
    switch (dtype) {
      case 'F32': {
        const out = new Float32Array(n);
        src.read(bytesOf(out));
        return out;
      }
      case 'F16':
      case 'BF16': {
        // load the bits into the upper half of the result and widen in place: no second allocation
        const out = new Float32Array(n);
        const bits = new Uint16Array(out.buffer, 2 * n, n);
        src.read(bytesOf(bits));
        return halfToF32(dtype, bits, out);
      }
      case 'F64': {
        const wide = new Float64Array(n);
        src.read(bytesOf(wide));
        return Float32Array.from(wide);
      }
      default:
        throw new CheckpointError(
          'TENSOR_DTYPE',
          `tensor '${name}' in ${this.path} has dtype ${dtype}; getF32 needs a float dtype (F32, F16, BF16, F64)`,
        );
    }
  }

  getRowsF32(name: string, rows: ArrayLike<number>, out: Float32Array): void {
    const src = this.source(name);
    const { dtype, shape } = src.info;
    if (shape.length !== 2 || !isFloatDType(dtype)) {
      throw new CheckpointError(
        'TENSOR_SHAPE',
        `tensor '${name}' in ${this.path}: row reads need a 2-D float tensor, got ${dtype} [${shape}]`,
      );
    }
    const [numRows, cols] = shape;
    if (out.length < rows.length * cols) {
      throw new CheckpointError('TENSOR_SHAPE', `getRowsF32 '${name}': output holds ${out.length} floats, need ${rows.length * cols}`);
    }
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (!Number.isInteger(r) || r < 0 || r >= numRows) {
        throw new CheckpointError('TENSOR_SHAPE', `tensor '${name}' has ${numRows} rows; row ${r} is out of range`);
      }
    }
    const whole = src.readAt || dtype === 'F64' ? undefined : this.kept(name);
    const itemSize = DTYPE_BYTES[dtype];
    for (let i = 0; i < rows.length; i++) {
      const dst = out.subarray(i * cols, (i + 1) * cols);
      if (whole) {
        dst.set(whole.subarray(rows[i] * cols, (rows[i] + 1) * cols));
      } else if (dtype === 'F32') {
        src.readAt!(bytesOf(dst), rows[i] * cols * itemSize);
      } else if (dtype === 'F16' || dtype === 'BF16') {
        const bits = new Uint16Array(dst.buffer, dst.byteOffset + 2 * cols, cols);
        src.readAt!(bytesOf(bits), rows[i] * cols * itemSize);
        halfToF32(dtype, bits, dst);
      } else {
        dst.set(this.kept(name).subarray(rows[i] * cols, (rows[i] + 1) * cols));
      }
    }
  }

  /** Whole tensors kept for row reads when the format cannot read a range (strided torch storages, F64). */
  private readonly keptRows = new Map<string, Float32Array>();
  private kept(name: string): Float32Array {
    let t = this.keptRows.get(name);
    if (!t) {
      t = this.getF32(name);
      this.keptRows.set(name, t);
    }
    return t;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.keptRows.clear();
    this.onClose();
  }

  private source(name: string): TensorSource {
    if (this.closed) throw new CheckpointError('CHECKPOINT_CLOSED', `${this.path} was closed; cannot read '${name}'`);
    const src = this.sources.get(name);
    if (!src) throw new CheckpointError('TENSOR_MISSING', `tensor '${name}' not found in ${this.path}`);
    return src;
  }
}

const READ_CHUNK = 1 << 30; // one readSync moves at most this (Linux caps a read at ~2 GiB)

/**
 * Fills `dst` from `fd` starting at byte `position` (positions are plain numbers, exact up to 2^53).
 * A short file gives CheckpointError `code` naming `file`.
 */
export function readFullyAt(fd: number, dst: Uint8Array, position: number, file: string, code = 'CHECKPOINT_TRUNCATED'): void {
  let done = 0;
  while (done < dst.length) {
    const want = Math.min(READ_CHUNK, dst.length - done);
    let got: number;
    try {
      got = fs.readSync(fd, dst, done, want, position + done);
    } catch (err) {
      throw new CheckpointError('CHECKPOINT_IO', `${file}: read failed at offset ${position + done} (${(err as Error).message})`, {
        cause: err,
      });
    }
    if (got === 0) {
      throw new CheckpointError(code, `${file}: unexpected end of file reading ${dst.length} bytes at offset ${position} (got ${done})`);
    }
    done += got;
  }
}

/** Opens a checkpoint file for reading (non-blocking, so a FIFO cannot hang), turning a missing file into CHECKPOINT_MISSING. */
export function openForRead(file: string): number {
  try {
    return fs.openSync(file, OPEN_READ_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CheckpointError('CHECKPOINT_MISSING', `${file}: no such file`, { cause: err });
    throw new CheckpointError('CHECKPOINT_IO', `${file}: cannot open (${(err as Error).message})`, { cause: err });
  }
}

/** Size of an open regular file; anything else (a directory, a FIFO, a device such as /dev/zero) is CHECKPOINT_IO. */
export function fileSizeOf(fd: number, file: string): number {
  const stat = fs.fstatSync(fd);
  if (!stat.isFile()) throw new CheckpointError('CHECKPOINT_IO', `${file}: not a regular file (it is ${fileKind(stat)})`);
  return stat.size;
}
