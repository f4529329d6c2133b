/**
 * Test/golden fixtures as MessagePack (msgpackr with `moreTypes`, so typed arrays, Maps, Sets and
 * Errors survive a round trip).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Packr } from 'msgpackr';
import { MexitError } from './errors.js';

const packr = new Packr({ moreTypes: true });

/** Encodes `obj` as MessagePack. */
export function packFixture(obj: unknown): Uint8Array {
  return packr.pack(obj);
}

/** Decodes MessagePack bytes written by packFixture; MexitError FIXTURE_INVALID when they are not valid. */
export function unpackFixture<T = unknown>(buf: Uint8Array): T {
  try {
    return packr.unpack(buf) as T;
  } catch (err) {
    throw new MexitError('FIXTURE_INVALID', `fixture data is not valid MessagePack (${(err as Error).message})`, { cause: err });
  }
}

/** Reads and decodes a fixture file; MexitError FIXTURE_MISSING / FIXTURE_INVALID name the file. */
export function readFixture<T = unknown>(file: string): T {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new MexitError('FIXTURE_MISSING', `${file}: cannot read fixture (${(err as Error).message})`, { cause: err });
  }
  try {
    return packr.unpack(bytes) as T;
  } catch (err) {
    throw new MexitError('FIXTURE_INVALID', `${file}: fixture is not valid MessagePack (${(err as Error).message})`, { cause: err });
  }
}

/** Encodes `obj` into `file`, creating the parent directory if needed. */
export function writeFixture(file: string, obj: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, packFixture(obj));
}
