/**
 * Reading input files (configs, tokenizers, checkpoint indexes) without trusting what the path names: the
 * file is opened non-blocking (opening a FIFO for reading would otherwise wait for a writer forever),
 * fstat'ed through the open descriptor (no check-then-open race), refused unless it is a regular file
 * under a per-kind size limit, and read for exactly the size fstat reported (a device such as /dev/zero
 * never ends). Every failure is a typed MexitError naming the file.
 */
import fs from 'node:fs';
import { CheckpointError, type MexitError } from './errors.js';

const MiB = 1024 * 1024;

/** Largest accepted size per kind of file. Real files are far smaller; the limits only stop a wrong or hostile path. */
export const FILE_SIZE_LIMITS = Object.freeze({
  /** config.json, generation_config.json */
  config: 16 * MiB,
  /** tokenizer_config.json, special_tokens_map.json, chat_template.json, chat_template.jinja */
  tokenizerConfig: 16 * MiB,
  /** tokenizer.json (vocabulary and merges) */
  tokenizer: 256 * MiB,
  /** model.safetensors.index.json, pytorch_model.bin.index.json */
  checkpointIndex: 64 * MiB,
});

/** Flags for opening an input file: read-only, and non-blocking so a FIFO cannot hang the open (no effect on regular files). */
export const OPEN_READ_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

type MexitErrorClass = new (code: string, message: string, options?: { cause?: unknown }) => MexitError;

export interface ReadFileOptions {
  /** what the file is, for messages (e.g. 'config.json') */
  what: string;
  /** largest accepted size in bytes (see FILE_SIZE_LIMITS) */
  maxBytes: number;
  /** the typed error thrown (default CheckpointError) */
  error?: MexitErrorClass;
  /** code when the file cannot be opened (missing, no permission); default FILE_MISSING */
  missingCode?: string;
}

export interface ReadJsonOptions extends ReadFileOptions {
  /** code when the content is not JSON; default FILE_JSON */
  jsonCode?: string;
}

/** 'a directory', 'a FIFO', ...: what a non-regular file is, for messages. */
export function fileKind(stat: fs.Stats): string {
  if (stat.isFile()) return 'a regular file';
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a FIFO (named pipe)';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  if (stat.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * The bytes of `file`, which must be a regular file of at most `maxBytes` bytes. Errors (of `options.error`):
 * `missingCode` when it cannot be opened, FILE_NOT_REGULAR (directory, FIFO, device, socket),
 * FILE_TOO_LARGE (checked before anything is allocated), FILE_IO when a read fails.
 */
export function readRegularFile(file: string, options: ReadFileOptions): Buffer {
  const { what, maxBytes, error: ErrorClass = CheckpointError, missingCode = 'FILE_MISSING' } = options;
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_READ_FLAGS);
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).code;
    const why = errno === 'ENOENT' || errno === 'ENOTDIR' ? 'not found' : `cannot be opened (${(err as Error).message})`;
    throw new ErrorClass(missingCode, `${what} ${why}: ${file}`, { cause: err });
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) {
      throw new ErrorClass('FILE_NOT_REGULAR', `${what} must be a regular file, but ${file} is ${fileKind(stat)}`);
    }
    if (stat.size > maxBytes) {
      throw new ErrorClass(
        'FILE_TOO_LARGE',
        `${what} ${file} is ${stat.size} bytes, over the ${maxBytes}-byte limit for this kind of file`,
      );
    }
    const bytes = Buffer.allocUnsafe(stat.size);
    let done = 0;
    while (done < bytes.length) {
      let got: number;
      try {
        got = fs.readSync(fd, bytes, done, bytes.length - done, done);
      } catch (err) {
        throw new ErrorClass('FILE_IO', `${what} ${file}: read failed at offset ${done} (${(err as Error).message})`, { cause: err });
      }
      if (got === 0) break; // the file shrank since fstat: use what is there
      done += got;
    }
    return done === bytes.length ? bytes : bytes.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}

/** readRegularFile decoded as UTF-8 (invalid sequences become U+FFFD, as with readFileSync). */
export function readTextFile(file: string, options: ReadFileOptions): string {
  return readRegularFile(file, options).toString('utf8');
}

/** readTextFile parsed as JSON; `jsonCode` (default FILE_JSON) when it is not valid JSON. */
export function readJsonFile(file: string, options: ReadJsonOptions): unknown {
  const text = readTextFile(file, options);
  try {
    return JSON.parse(text);
  } catch (err) {
    const ErrorClass = options.error ?? CheckpointError;
    throw new ErrorClass(options.jsonCode ?? 'FILE_JSON', `${options.what} is not valid JSON: ${file} (${(err as Error).message})`, {
      cause: err,
    });
  }
}
