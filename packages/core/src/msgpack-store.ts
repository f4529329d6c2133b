/**
 * MessagePack on disk (msgpackr with `moreTypes`, so typed arrays, Maps, Sets and Errors survive a round
 * trip with their exact types). Its job: the on-disk cache of quantized draft weights
 * (@mexit/model RuntimeOptions.cacheDir), which stores blocks as Uint8Array / Float32Array. Tests use it for
 * fixtures too.
 *
 * Files are written to a temporary name in the same directory and renamed into place, so a reader (another
 * process included) sees either the previous file or the complete new one, never a partial write.
 * Failures are MexitErrors with stable codes: MSGPACK_MISSING (cannot read the file), MSGPACK_INVALID (not
 * valid MessagePack, e.g. truncated), MSGPACK_WRITE (cannot write it), MSGPACK_KEY (a store key that is not
 * a plain file name).
 */
import { formatValue } from './pickle.js';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { MexitError } from './errors.js';
import { readRegularFile } from './files.js';

const packr = new Packr({ moreTypes: true });

/** Encodes `obj` as MessagePack. */
export function packMsgpack(obj: unknown): Uint8Array {
  return packr.pack(obj);
}

/** Decodes MessagePack bytes written by packMsgpack; MexitError MSGPACK_INVALID when they are not valid. */
export function unpackMsgpack<T = unknown>(buf: Uint8Array): T {
  try {
    return packr.unpack(buf) as T;
  } catch (err) {
    throw new MexitError('MSGPACK_INVALID', `data is not valid MessagePack (${(err as Error).message})`, { cause: err });
  }
}

/** Reads and decodes a MessagePack file; MexitError MSGPACK_MISSING / MSGPACK_INVALID name the file. */
export function readMsgpackFile<T = unknown>(file: string): T {
  // a regular file (a FIFO or device in the cache folder must not hang or exhaust memory); 2 GiB is readFileSync's own limit
  const bytes = readRegularFile(file, {
    what: 'MessagePack file',
    maxBytes: 2 ** 31 - 1,
    error: MexitError,
    missingCode: 'MSGPACK_MISSING',
  });
  try {
    return packr.unpack(bytes) as T;
  } catch (err) {
    throw new MexitError('MSGPACK_INVALID', `${file}: not valid MessagePack (${(err as Error).message})`, { cause: err });
  }
}

/**
 * Encodes `obj` into `file` atomically (temporary file in the same directory, then rename), creating the
 * parent directory if needed; MexitError MSGPACK_WRITE when it cannot, with no temporary file left behind.
 */
export function writeMsgpackFile(file: string, obj: unknown): void {
  const bytes = packMsgpack(obj);
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(temp, bytes);
    fs.renameSync(temp, file);
  } catch (err) {
    try {
      fs.rmSync(temp, { force: true });
    } catch {
      // nothing was written there
    }
    throw new MexitError('MSGPACK_WRITE', `${file}: cannot write MessagePack file (${(err as Error).message})`, { cause: err });
  }
}

/** Store keys become file names: letters, digits, '.', '_' and '-', not starting with '.'. */
const KEY = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

/** A directory of MessagePack files, one per key (`<dir>/<key>.msgpack`). The directory is created on first write. */
export class MsgpackStore {
  constructor(readonly dir: string) {}

  /** The file that holds `key`; MexitError MSGPACK_KEY unless the key is a plain file name. */
  file(key: string): string {
    if (!KEY.test(key)) throw new MexitError('MSGPACK_KEY', `store key ${formatValue(key, 100, 'js')} is not a plain file name`);
    return path.join(this.dir, `${key}.msgpack`);
  }

  /** The value stored under `key`; MSGPACK_MISSING when there is none, MSGPACK_INVALID when its file is not valid. */
  read<T = unknown>(key: string): T {
    return readMsgpackFile<T>(this.file(key));
  }

  /** Stores `value` under `key`, replacing any previous value atomically; MSGPACK_WRITE on failure. */
  write(key: string, value: unknown): void {
    writeMsgpackFile(this.file(key), value);
  }
}
