/**
 * safetensors reader and writer. Format: u64 LE header length N, N bytes of UTF-8 JSON
 * ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}), then the data
 * section; offsets are relative to the data section. Tensors are read lazily with positioned reads, so
 * files larger than 2 GiB work and nothing but the header is read at open.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CheckpointError } from './errors.js';
import { formatValue } from './pickle.js';
import {
  DTYPE_BYTES,
  type DType,
  type Tensor,
  type TensorSource,
  SourceTensorMap,
  bytesOf,
  checkTensor,
  fileSizeOf,
  isDType,
  openForRead,
  readFullyAt,
  shapeSize,
} from './tensor.js';

/** Largest header accepted; real headers are kilobytes, this only stops a corrupt length from allocating gigabytes. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** A TensorMap over one safetensors file, plus its `__metadata__`. */
export class SafetensorsMap extends SourceTensorMap {
  constructor(
    path: string,
    sources: Map<string, TensorSource>,
    onClose: () => void,
    /** the header's `__metadata__` ({} when absent) */
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    super(path, sources, onClose);
  }
}

interface HeaderEntry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/** Opens a safetensors file and validates its header; tensor data is read on demand. */
export function openSafetensors(file: string): SafetensorsMap {
  const fd = openForRead(file);
  try {
    const fileSize = fileSizeOf(fd, file);
    if (fileSize < 8) {
      throw new CheckpointError(
        'SAFETENSORS_TRUNCATED',
        `${file}: ${fileSize} bytes is too short for a safetensors file (the 8-byte header length is missing)`,
      );
    }
    const lengthBytes = new Uint8Array(8);
    readFullyAt(fd, lengthBytes, 0, file, 'SAFETENSORS_TRUNCATED');
    const view = new DataView(lengthBytes.buffer);
    // u64 as a number: exact below 2^53, and anything that large is rejected below anyway
    const headerLength = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
    if (headerLength > SAFETENSORS_MAX_HEADER_BYTES) {
      throw new CheckpointError(
        'SAFETENSORS_HEADER_LENGTH',
        `${file}: header length ${headerLength} exceeds the ${SAFETENSORS_MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`,
      );
    }
    if (headerLength > fileSize - 8) {
      throw new CheckpointError(
        'SAFETENSORS_HEADER_LENGTH',
        `${file}: header length ${headerLength} runs past the end of the ${fileSize}-byte file (truncated or not safetensors)`,
      );
    }
    const headerBytes = new Uint8Array(headerLength);
    readFullyAt(fd, headerBytes, 8, file, 'SAFETENSORS_TRUNCATED');
    const dataStart = 8 + headerLength;
    const { entries, metadata } = parseSafetensorsHeader(headerBytes, fileSize - dataStart, file);

    const sources = new Map<string, TensorSource>();
    for (const e of entries) {
      const info = { name: e.name, dtype: e.dtype, shape: e.shape, byteLength: e.end - e.begin, file };
      const position = dataStart + e.begin;
      sources.set(e.name, {
        info,
        read(dst: Uint8Array): void {
          readFullyAt(fd, dst, position, file, 'SAFETENSORS_TRUNCATED');
        },
        readAt(dst: Uint8Array, offset: number): void {
          readFullyAt(fd, dst, position + offset, file, 'SAFETENSORS_TRUNCATED');
        },
      });
    }
    return new SafetensorsMap(file, sources, () => fs.closeSync(fd), metadata);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/**
 * Validates a safetensors JSON header against a data section of `dataLength` bytes.
 * Exported for tests and tools; openSafetensors is the normal entry point.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  file: string,
): { entries: HeaderEntry[]; metadata: Record<string, string> } {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new CheckpointError('SAFETENSORS_HEADER_JSON', `${file}: header is not valid UTF-8 JSON (${(err as Error).message})`, {
      cause: err,
    });
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new CheckpointError('SAFETENSORS_HEADER_JSON', `${file}: header JSON must be an object, got ${describe(header)}`);
  }

  const metadata: Record<string, string> = {};
  const entries: HeaderEntry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new CheckpointError('SAFETENSORS_METADATA', `${file}: __metadata__ must be an object of strings`);
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw new CheckpointError(
            'SAFETENSORS_METADATA',
            `${file}: __metadata__[${formatValue(k)}] must be a string, got ${describe(v)}`,
          );
        }
        metadata[k] = v;
      }
      continue;
    }
    entries.push(parseEntry(name, raw, file));
  }

  // No two non-empty tensors may share bytes.
  const ranges = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i].begin < ranges[i - 1].end) {
      const a = ranges[i - 1];
      const b = ranges[i];
      throw new CheckpointError(
        'SAFETENSORS_OVERLAP',
        `${file}: tensor ${formatValue(b.name)} [${b.begin}, ${b.end}) overlaps tensor ${formatValue(a.name)} [${a.begin}, ${a.end})`,
      );
    }
  }
  for (const e of entries) {
    if (e.end > dataLength) {
      // Writers lay tensors out back to back from 0; if the header does that, a short data section means the
      // file was cut off, otherwise this one entry points outside the file.
      const contiguous = ranges.every((r, i) => r.begin === (i === 0 ? 0 : ranges[i - 1].end));
      if (contiguous && e.end > e.begin) {
        const needed = ranges[ranges.length - 1].end;
        throw new CheckpointError(
          'SAFETENSORS_TRUNCATED',
          `${file}: file truncated: header describes ${needed} data bytes but only ${dataLength} are present ` +
            `(tensor ${formatValue(e.name)} ends at ${e.end})`,
        );
      }
      throw new CheckpointError(
        'SAFETENSORS_OFFSETS',
        `${file}: tensor ${formatValue(e.name)} data_offsets [${e.begin}, ${e.end}] run past the ${dataLength}-byte data section`,
      );
    }
  }
  return { entries, metadata };
}

function parseEntry(name: string, raw: unknown, file: string): HeaderEntry {
  const tensor = `${file}: tensor ${formatValue(name)}`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new CheckpointError('SAFETENSORS_ENTRY', `${tensor}: entry must be an object, got ${describe(raw)}`);
  }
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (!isDType(dtype)) {
    throw new CheckpointError(
      'SAFETENSORS_DTYPE',
      `${tensor}: unsupported dtype ${formatValue(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new CheckpointError('SAFETENSORS_SHAPE', `${tensor}: shape must be an array of non-negative integers, got ${formatValue(shape)}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw new CheckpointError(
      'SAFETENSORS_OFFSETS',
      `${tensor}: data_offsets must be [begin, end] with 0 <= begin <= end, got ${formatValue(offsets)}`,
    );
  }
  const [begin, end] = offsets as number[];
  const elements = shapeSize(shape as number[]);
  const expectedBytes = elements * DTYPE_BYTES[dtype];
  if (!Number.isSafeInteger(expectedBytes) || expectedBytes !== end - begin) {
    throw new CheckpointError(
      'SAFETENSORS_SHAPE_MISMATCH',
      `${tensor}: ${dtype} shape ${formatValue(shape)} needs ${expectedBytes} bytes but data_offsets ` +
        `[${begin}, ${end}] cover ${end - begin}`,
    );
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

/**
 * Writes `tensors` as a safetensors file: names sorted, packed back to back, header JSON padded with
 * spaces to a multiple of 8 bytes, optional `__metadata__`. Written to a temporary name and renamed, so a
 * failed write never leaves a half file at `file`.
 */
export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new CheckpointError('SAFETENSORS_METADATA', `writeSafetensors ${file}: metadata['${k}'] must be a string`);
      }
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const name of names) {
    if (name === '__metadata__') {
      throw new CheckpointError('SAFETENSORS_ENTRY', `writeSafetensors ${file}: '__metadata__' is reserved, not a tensor name`);
    }
    const t = tensors[name];
    checkTensor(name, t);
    const byteLength = t.data.byteLength;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const paddedLength = Math.ceil(json.length / 8) * 8;
  const prefix = Buffer.alloc(8 + paddedLength, 0x20);
  prefix.writeUInt32LE(paddedLength % 2 ** 32, 0);
  prefix.writeUInt32LE(Math.floor(paddedLength / 2 ** 32), 4);
  json.copy(prefix, 8);

  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    let position = writeFully(fd, prefix, 0);
    for (const name of names) position = writeFully(fd, bytesOf(tensors[name].data), position);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
  } catch (err) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function writeFully(fd: number, bytes: Uint8Array, position: number): number {
  let done = 0;
  while (done < bytes.length) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30), position + done);
  }
  return position + bytes.length;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}
