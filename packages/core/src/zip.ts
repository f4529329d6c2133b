/**
 * Minimal zip reader for torch.save archives: parses the central directory (with zip64 records and extra
 * fields, so entries past 4 GiB work) and reads entries with positioned reads. Supports stored (method 0)
 * and deflated (method 8) entries; no encryption, no multi-disk archives. A deflated entry is inflated
 * at most once (its bytes are kept until releaseCache), never past its declared size.
 */
import zlib from 'node:zlib';
import { CheckpointError } from './errors.js';
import { formatValue } from './pickle.js';
import { readFullyAt } from './tensor.js';

/** One file in the archive, from its central directory record. */
export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflated */
  method: number;
  flags: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
/** Largest central directory read; each record is ~100 bytes, so this is hundreds of thousands of entries. */
export const ZIP_MAX_DIRECTORY_BYTES = 64 * 1024 * 1024;
/** Largest deflated entry inflated (torch.save stores storages uncompressed; only a re-zipped archive deflates them). */
export const ZIP_MAX_INFLATED_BYTES = 2 ** 31 - 1;

/** Thrown when the file has no end-of-central-directory record at all. */
export const ZIP_NOT_ZIP = 'TORCH_NOT_ZIP';
/** Thrown for a zip whose structures are inconsistent or point outside the file. */
export const ZIP_INVALID = 'TORCH_ZIP_INVALID';
/** Thrown for features this reader does not implement (encryption, other compression methods, multi-disk). */
export const ZIP_UNSUPPORTED = 'TORCH_ZIP_UNSUPPORTED';

/** Reads a zip's central directory from an open file; entries' data is read on demand. */
export class ZipReader {
  readonly entries = new Map<string, ZipEntry>();
  private readonly dataOffsets = new Map<ZipEntry, number>();
  private readonly inflated = new Map<ZipEntry, Uint8Array>();

  constructor(
    private readonly fd: number,
    private readonly fileSize: number,
    private readonly file: string,
  ) {
    this.readCentralDirectory();
  }

  /** The entry's uncompressed bytes [start, start + dst.length) into dst. */
  readRange(entry: ZipEntry, start: number, dst: Uint8Array): void {
    if (start < 0 || start + dst.length > entry.uncompressedSize) {
      throw this.invalid(
        `entry ${formatValue(entry.name)}: range [${start}, ${start + dst.length}) outside its ${entry.uncompressedSize} bytes`,
      );
    }
    if (dst.length === 0) return;
    const dataOffset = this.dataOffset(entry);
    if (entry.method === 0) {
      readFullyAt(this.fd, dst, dataOffset + start, this.file, ZIP_INVALID);
      return;
    }
    // tensors sharing one storage read ranges of it: inflate it once, not once per tensor
    let inflated = this.inflated.get(entry);
    if (!inflated) {
      inflated = this.inflate(entry, dataOffset);
      this.inflated.set(entry, inflated);
    }
    dst.set(inflated.subarray(start, start + dst.length));
  }

  /** All of an entry's uncompressed bytes, read once (for small entries such as data.pkl; not cached). */
  read(entry: ZipEntry): Uint8Array {
    if (entry.method === 0 || entry.uncompressedSize === 0 || this.inflated.has(entry)) {
      const out = new Uint8Array(entry.uncompressedSize);
      this.readRange(entry, 0, out);
      return out;
    }
    return this.inflate(entry, this.dataOffset(entry));
  }

  /** Drops the inflated entries kept for readRange. */
  releaseCache(): void {
    this.inflated.clear();
  }

  private inflate(entry: ZipEntry, dataOffset: number): Uint8Array {
    if (entry.uncompressedSize > ZIP_MAX_INFLATED_BYTES) {
      throw new CheckpointError(
        ZIP_UNSUPPORTED,
        `${this.file}: deflated entry ${formatValue(entry.name)} of ${entry.uncompressedSize} bytes is over the ${ZIP_MAX_INFLATED_BYTES}-byte ` +
          'inflate limit; store it uncompressed',
      );
    }
    const compressed = new Uint8Array(entry.compressedSize);
    readFullyAt(this.fd, compressed, dataOffset, this.file, ZIP_INVALID);
    let inflated: Buffer;
    try {
      // maxOutputLength stops a forged size from turning into a decompression bomb
      inflated = zlib.inflateRawSync(compressed, { maxOutputLength: Math.max(1, entry.uncompressedSize) });
    } catch (err) {
      throw this.invalid(`entry ${formatValue(entry.name)}: deflate data is corrupt (${(err as Error).message})`, err);
    }
    if (inflated.length !== entry.uncompressedSize) {
      throw this.invalid(
        `entry ${formatValue(entry.name)}: inflated to ${inflated.length} bytes, directory says ${entry.uncompressedSize}`,
      );
    }
    return inflated;
  }

  /** Position of the entry's data: after its local header, whose name/extra lengths may differ from the central record's. */
  private dataOffset(entry: ZipEntry): number {
    const cached = this.dataOffsets.get(entry);
    if (cached !== undefined) return cached;
    if (entry.flags & 1) throw new CheckpointError(ZIP_UNSUPPORTED, `${this.file}: entry ${formatValue(entry.name)} is encrypted`);
    if (entry.method !== 0 && entry.method !== 8) {
      throw new CheckpointError(
        ZIP_UNSUPPORTED,
        `${this.file}: entry ${formatValue(entry.name)} uses compression method ${entry.method} (only 0 stored and 8 deflate are supported)`,
      );
    }
    if (entry.method === 0 && entry.compressedSize !== entry.uncompressedSize) {
      throw this.invalid(
        `stored entry ${formatValue(entry.name)} has compressed size ${entry.compressedSize} != size ${entry.uncompressedSize}`,
      );
    }
    const local = this.readAt(entry.localHeaderOffset, 30, `local header of ${formatValue(entry.name)}`);
    if (local.getUint32(0, true) !== SIG_LOCAL) throw this.invalid(`entry ${formatValue(entry.name)}: bad local header signature`);
    const offset = entry.localHeaderOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
    if (offset + entry.compressedSize > this.fileSize) {
      throw this.invalid(
        `entry ${formatValue(entry.name)}: data [${offset}, ${offset + entry.compressedSize}) runs past the end of the ${this.fileSize}-byte file (truncated?)`,
      );
    }
    this.dataOffsets.set(entry, offset);
    return offset;
  }

  private readCentralDirectory(): void {
    const tailLength = Math.min(this.fileSize, EOCD_SIZE + MAX_COMMENT);
    const tailStart = this.fileSize - tailLength;
    const tail = new Uint8Array(tailLength);
    readFullyAt(this.fd, tail, tailStart, this.file, ZIP_INVALID);
    const tailView = new DataView(tail.buffer);
    let eocd = -1;
    for (let i = tailLength - EOCD_SIZE; i >= 0; i--) {
      if (tailView.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tailView.getUint16(i + 20, true) <= tailLength) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) {
      const head = this.fileSize >= 4 ? this.readAt(0, 4, 'first local header').getUint32(0, true) : 0;
      if (head === SIG_LOCAL) throw this.invalid('starts like a zip but has no end-of-central-directory record (truncated?)');
      throw new CheckpointError(ZIP_NOT_ZIP, `${this.file}: not a zip archive (no end-of-central-directory record)`);
    }

    const eocdPos = tailStart + eocd;
    let diskNumber = tailView.getUint16(eocd + 4, true);
    let cdDisk = tailView.getUint16(eocd + 6, true);
    let entryCount = tailView.getUint16(eocd + 10, true);
    let cdSize = tailView.getUint32(eocd + 12, true);
    let cdOffset = tailView.getUint32(eocd + 16, true);
    let cdLimit = eocdPos;

    if (eocdPos >= 20) {
      const locator = this.readAt(eocdPos - 20, 20, 'zip64 locator');
      if (locator.getUint32(0, true) === SIG_ZIP64_LOCATOR) {
        const z64Pos = this.u64(locator, 8, 'zip64 end-of-directory offset');
        if (z64Pos + 56 > eocdPos - 20) throw this.invalid(`zip64 end-of-directory offset ${z64Pos} is out of range`);
        const z64 = this.readAt(z64Pos, 56, 'zip64 end-of-directory record');
        if (z64.getUint32(0, true) !== SIG_ZIP64_EOCD) throw this.invalid('bad zip64 end-of-directory signature');
        diskNumber = z64.getUint32(16, true);
        cdDisk = z64.getUint32(20, true);
        entryCount = this.u64(z64, 32, 'zip64 entry count');
        cdSize = this.u64(z64, 40, 'zip64 directory size');
        cdOffset = this.u64(z64, 48, 'zip64 directory offset');
        cdLimit = z64Pos;
      }
    }
    if (diskNumber !== 0 || cdDisk !== 0)
      throw new CheckpointError(ZIP_UNSUPPORTED, `${this.file}: multi-disk zip archives are not supported`);
    if (cdOffset + cdSize > cdLimit) {
      throw this.invalid(`central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at ${cdLimit} (truncated?)`);
    }
    // each record is at least 46 bytes, so a forged count cannot make us loop past the directory
    if (entryCount * 46 > cdSize) throw this.invalid(`${entryCount} entries cannot fit in a ${cdSize}-byte central directory`);
    if (cdSize > ZIP_MAX_DIRECTORY_BYTES) {
      throw new CheckpointError(
        ZIP_UNSUPPORTED,
        `${this.file}: central directory of ${cdSize} bytes is over the ${ZIP_MAX_DIRECTORY_BYTES}-byte limit`,
      );
    }

    const cd = new Uint8Array(cdSize);
    readFullyAt(this.fd, cd, cdOffset, this.file, ZIP_INVALID);
    const view = new DataView(cd.buffer);
    const decoder = new TextDecoder('utf-8');
    let p = 0;
    for (let i = 0; i < entryCount; i++) {
      if (p + 46 > cdSize || view.getUint32(p, true) !== SIG_CENTRAL) throw this.invalid(`central directory record ${i} is malformed`);
      const flags = view.getUint16(p + 8, true);
      const method = view.getUint16(p + 10, true);
      let compressedSize = view.getUint32(p + 20, true);
      let uncompressedSize = view.getUint32(p + 24, true);
      const nameLength = view.getUint16(p + 28, true);
      const extraLength = view.getUint16(p + 30, true);
      const commentLength = view.getUint16(p + 32, true);
      let localHeaderOffset = view.getUint32(p + 42, true);
      const end = p + 46 + nameLength + extraLength + commentLength;
      if (end > cdSize) throw this.invalid(`central directory record ${i} runs past the directory`);
      const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLength));

      // zip64 extra field (id 1): 8-byte values for exactly those fields saturated at 0xffffffff, in this order
      let q = p + 46 + nameLength;
      const extraEnd = q + extraLength;
      while (q + 4 <= extraEnd) {
        const id = view.getUint16(q, true);
        const size = view.getUint16(q + 2, true);
        const fieldEnd = q + 4 + size;
        if (fieldEnd > extraEnd) throw this.invalid(`entry ${formatValue(name)}: extra field runs past its record`);
        if (id === 1) {
          let r = q + 4;
          const take = (what: string): number => {
            if (r + 8 > fieldEnd) throw this.invalid(`entry ${formatValue(name)}: zip64 extra field lacks the ${what}`);
            const v = this.u64(view, r, `zip64 ${what} of ${formatValue(name)}`);
            r += 8;
            return v;
          };
          if (uncompressedSize === 0xffffffff) uncompressedSize = take('size');
          if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('header offset');
        }
        q = fieldEnd;
      }
      if (localHeaderOffset + 30 + compressedSize > this.fileSize) {
        throw this.invalid(
          `entry ${formatValue(name)}: header offset ${localHeaderOffset} + ${compressedSize} data bytes run past the end of the ${this.fileSize}-byte file (truncated?)`,
        );
      }
      // deflate cannot expand more than ~1032:1; a bigger claimed size is forged and would only make us allocate it
      if (method === 8 && uncompressedSize > compressedSize * 1032 + 1024) {
        throw this.invalid(`entry ${formatValue(name)}: claims ${uncompressedSize} bytes from ${compressedSize} deflated bytes`);
      }
      if (this.entries.has(name)) throw this.invalid(`duplicate entry ${formatValue(name)}`);
      this.entries.set(name, { name, method, flags, compressedSize, uncompressedSize, localHeaderOffset });
      p = end;
    }
  }

  private readAt(position: number, length: number, what: string): DataView {
    if (position < 0 || position + length > this.fileSize) throw this.invalid(`${what} at ${position} is outside the file`);
    const bytes = new Uint8Array(length);
    readFullyAt(this.fd, bytes, position, this.file, ZIP_INVALID);
    return new DataView(bytes.buffer);
  }

  private u64(view: DataView, offset: number, what: string): number {
    const value = view.getUint32(offset, true) + view.getUint32(offset + 4, true) * 2 ** 32;
    if (!Number.isSafeInteger(value) || value > this.fileSize * 2 ** 16) {
      // no honest size/offset is beyond 2^53 or wildly beyond the file (deflate ratio is < 1032)
      throw this.invalid(`${what} ${value} is implausible`);
    }
    return value;
  }

  private invalid(message: string, cause?: unknown): CheckpointError {
    return new CheckpointError(ZIP_INVALID, `${this.file}: invalid zip: ${message}`, cause === undefined ? undefined : { cause });
  }
}
