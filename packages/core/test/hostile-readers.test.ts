/**
 * Hostile input to the checkpoint readers (issue 14): pickles built to blow up a naive reader (BigInt in an
 * error message, cycles, 100k-deep nesting, exponential memo/DUP DAGs, huge memo indices), files that are
 * not regular files or are absurdly large, zip deflate bombs and sparse storages, and fast-check fuzzing of
 * pickle streams and zip / safetensors headers. Each must return or throw a MexitError, quickly.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  ConfigError,
  FILE_SIZE_LIMITS,
  MexitError,
  PICKLE_LIMITS,
  TORCH_ALLOWED_GLOBALS,
  type TensorMap,
  formatValue,
  openCheckpoint,
  openSafetensors,
  openTorchCheckpoint,
  parseSafetensorsHeader,
  readJsonFile,
  readMsgpackFile,
  readRegularFile,
  writeSafetensors,
} from '@mexit/core';
import { PickleDict, type UnpickleHooks, unpickle } from '../src/pickle.js';
import { expectCheckpointError, expectMexitError } from './support/helpers.js';

let tmp: string;
let fifo: string | undefined;
let fifoUnblocker: ChildProcess | undefined;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-hostile-'));
  try {
    fifo = path.join(tmp, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // should a reader ever block on the FIFO, this writer releases it (EOF) after 5 s instead of hanging the suite
    fifoUnblocker = spawn('sh', ['-c', `sleep 5; while :; do : > '${fifo}'; done`], { stdio: 'ignore' });
  } catch {
    fifo = undefined;
  }
});
afterAll(() => {
  fifoUnblocker?.kill();
  fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
function tmpPath(name = 'f.bin'): string {
  return path.join(tmp, `${counter++}-${name}`);
}

/** Runs `fn`; returns 'ok' or the MexitError's code. Anything else, a slow call or an unbounded message fails. */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (!(err instanceof MexitError)) throw err;
    expect(err.message.length, err.message.slice(0, 300)).toBeLessThan(2000);
    return err.code;
  } finally {
  }
}

/** Opens a checkpoint and reads every tensor (the reads are where lazily found problems surface). */
function exercise(open: (file: string) => TensorMap, file: string): string {
  return outcome(() => {
    const map = open(file);
    try {
      for (const name of map.names) map.get(name);
    } finally {
      map.close();
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// pickles

const OP = {
  MARK: 0x28,
  STOP: 0x2e,
  POP: 0x30,
  DUP: 0x32,
  BININT: 0x4a,
  BININT1: 0x4b,
  NONE: 0x4e,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  BINUNICODE: 0x58,
  EMPTY_LIST: 0x5d,
  APPEND: 0x61,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  SETITEM: 0x73,
  TUPLE: 0x74,
  EMPTY_DICT: 0x7d,
  EMPTY_TUPLE: 0x29,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  MEMOIZE: 0x94,
} as const;

/** A protocol-2 pickle written opcode by opcode. */
class Pickle {
  private readonly parts: Buffer[] = [Buffer.from([0x80, 2])];
  op(...bytes: number[]): this {
    this.parts.push(Buffer.from(bytes));
    return this;
  }
  raw(bytes: Uint8Array): this {
    this.parts.push(Buffer.from(bytes));
    return this;
  }
  u32(op: number, n: number): this {
    const b = Buffer.alloc(5);
    b[0] = op;
    b.writeUInt32LE(n >>> 0, 1);
    return this.raw(b);
  }
  str(s: string): this {
    const bytes = Buffer.from(s, 'utf8');
    return this.u32(OP.BINUNICODE, bytes.length).raw(bytes);
  }
  int(n: number | bigint): this {
    if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n < 256) return this.op(OP.BININT1, n);
    if (typeof n === 'number' && Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31) return this.u32(OP.BININT, n);
    const b = Buffer.alloc(10);
    b[0] = OP.LONG1;
    b[1] = 8;
    b.writeBigInt64LE(BigInt.asIntN(64, BigInt(n)), 2);
    return this.raw(b);
  }
  global(module: string, name: string): this {
    return this.raw(Buffer.from(`c${module}\n${name}\n`, 'latin1'));
  }
  tuple(items: readonly (number | bigint)[]): this {
    this.op(OP.MARK);
    for (const i of items) this.int(i);
    return this.op(OP.TUPLE);
  }
  bytes(): Uint8Array {
    return Buffer.concat([...this.parts, Buffer.from([OP.STOP])]);
  }
  /** The opcodes after PROTO, without STOP (to splice into another pickle). */
  body(): Buffer {
    return Buffer.concat(this.parts.slice(1));
  }
}

interface TensorSpec {
  name: string;
  key: string;
  storage?: string;
  numel: number | bigint;
  offset?: number;
  size: readonly (number | bigint)[];
  stride: readonly (number | bigint)[];
}

/** Writes `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())` as torch does. */
function writeTensor(p: Pickle, t: TensorSpec): Pickle {
  p.global('torch._utils', '_rebuild_tensor_v2').op(OP.MARK);
  p.op(OP.MARK)
    .str('storage')
    .global('torch', t.storage ?? 'ByteStorage')
    .str(t.key)
    .str('cpu')
    .int(t.numel)
    .op(OP.TUPLE, OP.BINPERSID);
  p.int(t.offset ?? 0)
    .tuple(t.size)
    .tuple(t.stride)
    .op(OP.NEWFALSE);
  return p.global('collections', 'OrderedDict').op(OP.EMPTY_TUPLE, OP.REDUCE, OP.TUPLE, OP.REDUCE);
}

function statePickle(tensors: readonly TensorSpec[]): Uint8Array {
  const p = new Pickle().op(OP.EMPTY_DICT);
  for (const t of tensors) writeTensor(p.str(t.name), t).op(OP.SETITEM);
  return p.bytes();
}

const HOOKS: UnpickleHooks = {
  allowedGlobals: TORCH_ALLOWED_GLOBALS,
  reduce: () => new PickleDict(),
  persistentLoad: (pid) => pid,
};

function expectPickleError(bytes: Uint8Array, code: string, ...parts: string[]): void {
  expectCheckpointError(() => unpickle(bytes, HOOKS, 'hostile.pkl'), code, 'hostile.pkl', ...parts);
}

/** A zero-argument pickle of `count` copies of opcode `op` (e.g. NONE pushes). */
function repeated(op: number, count: number, prefix: number[] = [], suffix: number[] = []): Uint8Array {
  return Buffer.concat([Buffer.from([0x80, 2, ...prefix]), Buffer.alloc(count, op), Buffer.from([...suffix, OP.STOP])]);
}

// ---------------------------------------------------------------------------------------------------------
// zips (an independent minimal writer: stored or deflated entries, holes for sparse data, forged sizes)

interface ZipEntrySpec {
  name: string;
  data?: Uint8Array;
  /** stored entry of this many bytes left as a hole in the file */
  hole?: number;
  deflate?: boolean;
  /** uncompressed size written to the directory instead of the real one */
  declaredSize?: number;
  /** compression method written to the headers instead of the real one */
  method?: number;
}

function writeZip(file: string, entries: readonly ZipEntrySpec[]): string {
  const fd = fs.openSync(file, 'w');
  try {
    let offset = 0;
    const central: Buffer[] = [];
    for (const e of entries) {
      const name = Buffer.from(e.name, 'utf8');
      const payload = e.data === undefined ? undefined : e.deflate ? zlib.deflateRawSync(e.data) : Buffer.from(e.data);
      const stored = payload?.length ?? e.hole ?? 0;
      const size = e.declaredSize ?? e.data?.length ?? e.hole ?? 0;
      const method = e.method ?? (e.deflate ? 8 : 0);
      const local = Buffer.alloc(30);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(20, 4);
      local.writeUInt16LE(method, 8);
      local.writeUInt32LE(stored >>> 0, 18);
      local.writeUInt32LE(size >>> 0, 22);
      local.writeUInt16LE(name.length, 26);
      fs.writeSync(fd, Buffer.concat([local, name]), 0, 30 + name.length, offset);
      if (payload) fs.writeSync(fd, payload, 0, payload.length, offset + 30 + name.length);
      const record = Buffer.alloc(46);
      record.writeUInt32LE(0x02014b50, 0);
      record.writeUInt16LE(20, 4);
      record.writeUInt16LE(20, 6);
      record.writeUInt16LE(method, 10);
      record.writeUInt32LE(stored >>> 0, 20);
      record.writeUInt32LE(size >>> 0, 24);
      record.writeUInt16LE(name.length, 28);
      record.writeUInt32LE(offset >>> 0, 42);
      central.push(record, name);
      offset += 30 + name.length + stored;
    }
    const cd = Buffer.concat(central);
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0);
    eocd.writeUInt16LE(entries.length, 8);
    eocd.writeUInt16LE(entries.length, 10);
    eocd.writeUInt32LE(cd.length, 12);
    eocd.writeUInt32LE(offset >>> 0, 16);
    const tail = Buffer.concat([cd, eocd]);
    fs.writeSync(fd, tail, 0, tail.length, offset);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

function torchZip(pickle: Uint8Array, storages: readonly ZipEntrySpec[] = []): string {
  const entries = [{ name: 'archive/data.pkl', data: pickle }, ...storages.map((s) => ({ ...s, name: `archive/data/${s.name}` }))];
  return writeZip(tmpPath('model.bin'), entries);
}

// ---------------------------------------------------------------------------------------------------------

describe('pickle values are bounded (class 3)', () => {
  it('a BigInt reaching an error message is printed, not a TypeError', () => {
    const huge = 2n ** 62n;
    // as a state dict key, as a storage element count, inside a tensor size
    const key = new Pickle().op(OP.EMPTY_DICT).int(huge).op(OP.NONE, OP.SETITEM).bytes();
    expectCheckpointError(() => openTorchCheckpoint(torchZip(key)), 'TORCH_NOT_STATE_DICT', String(huge));
    const numel = statePickle([{ name: 'w', key: '0', numel: huge, size: [1], stride: [1] }]);
    expectCheckpointError(
      () => openTorchCheckpoint(torchZip(numel, [{ name: '0', data: new Uint8Array(4) }])),
      'TORCH_PERSISTENT_ID',
      String(huge),
    );
    const size = statePickle([{ name: 'w', key: '0', numel: 4, size: [huge], stride: [1] }]);
    expectCheckpointError(
      () => openTorchCheckpoint(torchZip(size, [{ name: '0', data: new Uint8Array(4) }])),
      'TORCH_TENSOR_INVALID',
      String(huge),
    );
    expect(formatValue([1n, -(2n ** 500n)])).toMatch(/^\[1, -\d+/);
  });

  it('lists cannot be made cyclic, directly or through a tuple', () => {
    const self = new Pickle().op(OP.EMPTY_LIST, OP.BINPUT, 0, OP.BINGET, 0, OP.APPEND).bytes();
    expectPickleError(self, 'PICKLE_INVALID', 'itself');
    const viaTuple = new Pickle().op(OP.EMPTY_LIST, OP.BINPUT, 0, OP.BINGET, 0, OP.TUPLE1, OP.APPEND).bytes();
    expectPickleError(viaTuple, 'PICKLE_INVALID', 'already inside');
    const viaDict = new Pickle().op(OP.EMPTY_DICT, OP.BINPUT, 0).str('k').op(OP.BINGET, 0, OP.SETITEM).bytes();
    expectPickleError(viaDict, 'PICKLE_INVALID', 'itself');
    // the formatter copes with cycles built by anyone else
    const cyclic: unknown[] = [1];
    cyclic.push(cyclic);
    expect(formatValue(cyclic)).toBe('[1, <cycle>]');
  });

  it('100k-deep nesting is refused (tuples, lists, dict keys, MARKs)', () => {
    const n = 100_000;
    expectPickleError(repeated(OP.TUPLE1, n, [OP.NONE]), 'PICKLE_TOO_DEEP', String(PICKLE_LIMITS.maxDepth));
    expectPickleError(repeated(OP.EMPTY_LIST, n, [], Array(n - 1).fill(OP.APPEND)), 'PICKLE_TOO_DEEP');
    const deepKey = Buffer.concat([
      Buffer.from([0x80, 2, OP.EMPTY_DICT, OP.NONE]),
      Buffer.alloc(n, OP.TUPLE1),
      Buffer.from([OP.NONE, OP.SETITEM, OP.STOP]),
    ]);
    expectPickleError(deepKey, 'PICKLE_TOO_DEEP');
    expectPickleError(repeated(OP.MARK, n), 'PICKLE_TOO_DEEP');
    // just under the limit is fine, and a message quoting it stays short
    const ok = unpickle(repeated(OP.TUPLE1, PICKLE_LIMITS.maxDepth - 1, [OP.NONE]), HOOKS, 'ok.pkl');
    expect(formatValue(ok)).toBe('(((((…)))))');
    let deep: unknown = 1;
    for (let i = 0; i < n; i++) deep = [deep];
    expect(formatValue(deep).length).toBeLessThanOrEqual(120);
  });

  it('an exponential DAG through DUP or the memo is refused, not expanded', () => {
    const dup = new Pickle().op(OP.NONE);
    for (let i = 0; i < 64; i++) dup.op(OP.DUP, OP.TUPLE2);
    expectPickleError(dup.bytes(), 'PICKLE_TOO_LARGE', String(PICKLE_LIMITS.maxObjects));
    const memo = new Pickle().op(OP.NONE, OP.BINPUT, 0, OP.POP);
    for (let i = 0; i < 64; i++) memo.op(OP.BINGET, i, OP.BINGET, i, OP.TUPLE2, OP.BINPUT, i + 1, OP.POP);
    expectPickleError(memo.bytes(), 'PICKLE_TOO_LARGE');
    // wide fan-out: one big tuple referenced many times from one MARK
    const wide = new Pickle().op(OP.NONE);
    for (let i = 0; i < 16; i++) wide.op(OP.DUP, OP.TUPLE2);
    wide.op(OP.BINPUT, 0, OP.MARK);
    for (let i = 0; i < 200; i++) wide.op(OP.BINGET, 0);
    expectPickleError(wide.op(OP.TUPLE).bytes(), 'PICKLE_TOO_LARGE');
    // just under the limit it loads, and the state dict error quoting it is short and fast
    const big = new Pickle().op(OP.EMPTY_DICT).str('w').op(OP.NONE);
    for (let i = 0; i < 20; i++) big.op(OP.DUP, OP.TUPLE2);
    const file = torchZip(big.op(OP.SETITEM).bytes());
    expect(outcome(() => openTorchCheckpoint(file))).toBe('TORCH_NOT_STATE_DICT');
  });

  it('huge memo indices are fine, too many memo entries or pushes are refused', () => {
    const far = new Pickle().op(OP.NONE).u32(OP.LONG_BINPUT, 0xffffffff).u32(OP.LONG_BINGET, 0xffffffff).op(OP.TUPLE2).bytes();
    expect(unpickle(far, HOOKS, 'far.pkl')).toEqual([null, null]);
    expectPickleError(new Pickle().op(OP.NONE).u32(OP.LONG_BINGET, 0xfffffffe).bytes(), 'PICKLE_INVALID', '4294967294');
    expectPickleError(repeated(OP.MEMOIZE, PICKLE_LIMITS.maxMemo + 1, [OP.NONE]), 'PICKLE_TOO_LARGE', 'memo');
    expectPickleError(repeated(OP.NONE, PICKLE_LIMITS.maxObjects + 1), 'PICKLE_TOO_LARGE');
  });

  it('messages quoting pickle strings stay short', () => {
    const long = 'x'.repeat(1_000_000);
    const forbidden = new Pickle().global('os', long).bytes();
    expectPickleError(forbidden, 'PICKLE_FORBIDDEN_GLOBAL', "'os.xxx");
    const key = statePickle([{ name: 'w', key: long, numel: 4, size: [4], stride: [1] }]);
    expect(outcome(() => openTorchCheckpoint(torchZip(key)))).toBe('TORCH_STORAGE_MISSING');
  });

  it('data.pkl and byteorder entries are size-checked before they are read', () => {
    const sparse = writeZip(tmpPath('sparse-pkl.bin'), [{ name: 'archive/data.pkl', hole: 300 * 1024 * 1024 }]);
    expectCheckpointError(() => openTorchCheckpoint(sparse), 'PICKLE_TOO_LARGE', 'data.pkl');
    const order = writeZip(tmpPath('order.bin'), [
      { name: 'archive/byteorder', hole: 1 << 20 },
      { name: 'archive/data.pkl', data: statePickle([]) },
    ]);
    expectCheckpointError(() => openTorchCheckpoint(order), 'TORCH_BYTEORDER');
  });
});

describe('only regular files of sane size are read (class 4)', () => {
  const json = (kind: string) => ({ what: kind, maxBytes: FILE_SIZE_LIMITS.config, error: ConfigError, missingCode: 'CONFIG_MISSING' });

  it('refuses directories, devices and FIFOs before reading', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'dir-'));
    for (const [file, kind] of [
      [dir, 'directory'],
      ['/dev/zero', 'character device'],
      ['/dev/null', 'character device'],
      ...(fifo ? [[fifo, 'FIFO']] : []),
    ]) {
      const err = expectMexitError(() => readJsonFile(file, json('config.json')), 'FILE_NOT_REGULAR', file, kind);
      expect(err).toBeInstanceOf(ConfigError);
      expectCheckpointError(() => openSafetensors(file), 'CHECKPOINT_IO', kind);
      expectCheckpointError(() => openTorchCheckpoint(file), 'CHECKPOINT_IO', kind);
      expectCheckpointError(() => readRegularFile(file, { what: 'index', maxBytes: 100 }), 'FILE_NOT_REGULAR');
    }
  });

  it('refuses files over the per-kind limit, sparse ones included, without reading them', () => {
    const big = tmpPath('config.json');
    fs.writeFileSync(big, '{}');
    fs.truncateSync(big, FILE_SIZE_LIMITS.config + 1);
    expectMexitError(() => readJsonFile(big, json('config.json')), 'FILE_TOO_LARGE', big, String(FILE_SIZE_LIMITS.config));
    const huge = tmpPath('tokenizer.json');
    fs.writeFileSync(huge, '');
    fs.truncateSync(huge, 20 * 2 ** 30);
    expect(outcome(() => readJsonFile(huge, { what: 'tokenizer.json', maxBytes: FILE_SIZE_LIMITS.tokenizer }))).toBe('FILE_TOO_LARGE');
    // at the limit it is read (and here fails as JSON, with the caller's code)
    fs.truncateSync(big, FILE_SIZE_LIMITS.config);
    expectMexitError(() => readJsonFile(big, { ...json('config.json'), jsonCode: 'CONFIG_JSON' }), 'CONFIG_JSON', big);
  });

  it('reads regular files, through symlinks too, and names missing ones', () => {
    const file = tmpPath('config.json');
    fs.writeFileSync(file, '{"a": [1, 2]}');
    const link = tmpPath('link.json');
    fs.symlinkSync(file, link);
    expect(readJsonFile(link, json('config.json'))).toEqual({ a: [1, 2] });
    expectMexitError(() => readJsonFile(path.join(tmp, 'absent.json'), json('config.json')), 'CONFIG_MISSING', 'absent.json', 'not found');
    expectCheckpointError(() => readRegularFile(path.join(file, 'below'), { what: 'index', maxBytes: 10 }), 'FILE_MISSING');
  });

  it('weights, indexes, shards and cache files that are not regular files are typed errors', () => {
    const dirOf = (name: string, make: (file: string) => void): string => {
      const dir = fs.mkdtempSync(path.join(tmp, 'model-'));
      make(path.join(dir, name));
      return dir;
    };
    const targets: [string, string][] = [
      ['model.safetensors', 'CHECKPOINT_IO'],
      ['pytorch_model.bin', 'CHECKPOINT_IO'],
      ['model.safetensors.index.json', 'FILE_NOT_REGULAR'],
    ];
    for (const [name, code] of targets) {
      expect(outcome(() => openCheckpoint(dirOf(name, (f) => fs.symlinkSync('/dev/zero', f))))).toBe(code);
      expect(outcome(() => openCheckpoint(dirOf(name, (f) => fs.mkdirSync(f))))).toBe(code);
      if (fifo) expect(outcome(() => openCheckpoint(dirOf(name, (f) => fs.symlinkSync(fifo as string, f))))).toBe(code);
    }
    expectCheckpointError(() => openCheckpoint('/dev/zero'), 'CHECKPOINT_IO', 'character device');
    const sparseIndex = dirOf('model.safetensors.index.json', (f) => {
      fs.writeFileSync(f, '');
      fs.truncateSync(f, FILE_SIZE_LIMITS.checkpointIndex + 1);
    });
    expect(outcome(() => openCheckpoint(sparseIndex))).toBe('FILE_TOO_LARGE');
    const devShard = dirOf('model.safetensors.index.json', (f) => {
      fs.symlinkSync('/dev/zero', path.join(path.dirname(f), 'shard.safetensors'));
      fs.writeFileSync(f, JSON.stringify({ weight_map: { w: 'shard.safetensors' } }));
    });
    expectCheckpointError(() => openCheckpoint(devShard), 'CHECKPOINT_SHARD_MISSING', 'character device');
    expectMexitError(() => readMsgpackFile('/dev/zero'), 'FILE_NOT_REGULAR');
    if (fifo) expectMexitError(() => readMsgpackFile(fifo as string), 'FILE_NOT_REGULAR');
  });
});

describe('zip entries are inflated once and within their declared size (class 4)', () => {
  it('a deflate bomb shared by many tensors is inflated once', () => {
    const size = 32 << 20;
    const tensors = Array.from({ length: 256 }, (_, i) => ({
      name: `t${i}`,
      key: '0',
      numel: size,
      offset: i * 4096,
      size: [4096],
      stride: [1],
    }));
    // two views per tensor (one strided) read ranges of the same storage
    tensors.push({ name: 'strided', key: '0', numel: size, offset: 0, size: [64, 64], stride: [1, 64] });
    const file = torchZip(statePickle(tensors), [{ name: '0', data: new Uint8Array(size), deflate: true }]);
    expect(fs.statSync(file).size).toBeLessThan(128 * 1024);
    const inflate = vi.spyOn(zlib, 'inflateRawSync');
    try {
      expect(exercise(openTorchCheckpoint, file)).toBe('ok');
      expect(inflate).toHaveBeenCalledTimes(1);
    } finally {
      inflate.mockRestore();
    }
  });

  it('forged uncompressed sizes are caught before or while inflating', () => {
    const data = new Uint8Array(1 << 20);
    const pickle = statePickle([{ name: 'w', key: '0', numel: 1000, size: [1000], stride: [1] }]);
    // says 1000 bytes, inflates to 1 MiB: zlib stops at the declared size
    const under = torchZip(pickle, [{ name: '0', data, deflate: true, declaredSize: 1000 }]);
    expect(exercise(openTorchCheckpoint, under)).toBe('TORCH_ZIP_INVALID');
    // claims more than deflate can expand to
    const over = torchZip(pickle, [{ name: '0', data: new Uint8Array(10), deflate: true, declaredSize: 1 << 30 }]);
    expectCheckpointError(() => openTorchCheckpoint(over), 'TORCH_ZIP_INVALID', 'claims');
    // a plausible ratio but over the inflate cap: refused before allocating
    const compressed = 2_200_000;
    const capped = writeZip(tmpPath('capped.bin'), [
      { name: 'archive/data.pkl', data: statePickle([{ name: 'w', key: '0', numel: 2 ** 31, size: [4], stride: [1] }]) },
      { name: 'archive/data/0', data: new Uint8Array(compressed), declaredSize: 2 ** 31, method: 8 },
    ]);
    expect(exercise(openTorchCheckpoint, capped)).toBe('TORCH_ZIP_UNSUPPORTED');
  });

  it('a huge central directory in a sparse file is refused before it is allocated', () => {
    const file = tmpPath('cd.bin');
    const cdSize = 200 * 1024 * 1024;
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0);
    eocd.writeUInt16LE(1, 8);
    eocd.writeUInt16LE(1, 10);
    eocd.writeUInt32LE(cdSize, 12);
    eocd.writeUInt32LE(0, 16);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, cdSize);
    fs.appendFileSync(file, eocd);
    expectCheckpointError(() => openTorchCheckpoint(file), 'TORCH_ZIP_UNSUPPORTED', 'central directory');
  });

  it('a sparse strided view of a 3.5 GiB storage reads two elements, not the whole span', () => {
    const numel = 3.5 * 2 ** 30;
    const pickle = statePickle([{ name: 'w', key: '0', numel, size: [2], stride: [3 * 2 ** 30] }]);
    const file = torchZip(pickle, [{ name: '0', hole: numel }]);
    const map = openTorchCheckpoint(file);
    expect(Array.from(map.get('w').data as Uint8Array)).toEqual([0, 0]);
    map.close();
    // reading the whole 3.5 GiB span (as before) takes seconds, if the memory is there at all
  });
});

describe('large inputs use no argument spreads or recursion (class 6)', () => {
  it('a checkpoint index with 300k entries opens (past any argument-spread limit)', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'index-'));
    writeSafetensors(path.join(dir, 'shard.safetensors'), { w: { dtype: 'F32', shape: [1], data: new Float32Array(1) } });
    const entries: string[] = [];
    for (let i = 0; i < 300_000; i++) entries.push(`"t${i}":"shard.safetensors"`);
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), `{"weight_map":{${entries.join(',')}}}`);
    let names = 0;
    expect(
      outcome(() => {
        const map = openCheckpoint(dir);
        names = map.names.length;
        map.close();
      }),
    ).toBe('ok');
    expect(names).toBe(300_000);
  });

  it('a safetensors header with a 100k-deep shape or a million-element shape gives a short typed error', () => {
    const deep = `{"a": {"dtype": "F32", "shape": ${'['.repeat(100_000)}${']'.repeat(100_000)}, "data_offsets": [0, 4]}}`;
    expect(outcome(() => parseSafetensorsHeader(Buffer.from(deep), 4, 'deep'))).toBe('SAFETENSORS_SHAPE');
    const wide = JSON.stringify({ a: { dtype: 'F32', shape: Array(1_000_000).fill(1), data_offsets: [0, 8] } });
    expect(outcome(() => parseSafetensorsHeader(Buffer.from(wide), 8, 'wide'))).toBe('SAFETENSORS_SHAPE_MISMATCH');
    const deepDtype = `{"a": {"dtype": ${'['.repeat(100_000)}${']'.repeat(100_000)}, "shape": [1], "data_offsets": [0, 4]}}`;
    expect(outcome(() => parseSafetensorsHeader(Buffer.from(deepDtype), 4, 'deep dtype'))).toBe('SAFETENSORS_DTYPE');
  });

  it('a state dict with 100k tensors and a pickle of a million list items load', () => {
    // one tensor's opcodes spliced 100k times under different names
    const tensor = writeTensor(new Pickle(), { name: '', key: '0', numel: 4, size: [4], stride: [1] }).body();
    const setitem = Buffer.from([OP.SETITEM]);
    const parts: Buffer[] = [Buffer.from([0x80, 2, OP.EMPTY_DICT])];
    for (let i = 0; i < 100_000; i++) parts.push(new Pickle().str(`w${i}`).body(), tensor, setitem);
    parts.push(Buffer.from([OP.STOP]));
    const file = torchZip(Buffer.concat(parts), [{ name: '0', data: new Uint8Array(4) }]);
    let count = 0;
    expect(
      outcome(() => {
        const map = openTorchCheckpoint(file);
        count = map.names.length;
        map.close();
      }),
    ).toBe('ok');
    expect(count).toBe(100_000);
    const list = Buffer.concat([
      Buffer.from([0x80, 2, OP.EMPTY_LIST, OP.MARK]),
      Buffer.alloc(1_000_000, OP.NONE),
      Buffer.from([0x65, OP.STOP]),
    ]);
    expect((unpickle(list, HOOKS, 'list.pkl') as unknown[]).length).toBe(1_000_000);
  });
});

// ---------------------------------------------------------------------------------------------------------
// fuzzing: whatever the bytes, a value or a MexitError, quickly

const GLOBAL_NAMES = ['torch._utils\n_rebuild_tensor_v2', 'torch\nFloatStorage', 'collections\nOrderedDict', 'os\nsystem', 'torch\nx'];

const pickleToken = fc.oneof(
  fc.constantFrom(
    [0x28],
    [0x2e],
    [0x30],
    [0x31],
    [0x32],
    [0x4e],
    [0x51],
    [0x52],
    [0x5d],
    [0x61],
    [0x62],
    [0x65],
    [0x73],
    [0x74],
    [0x75],
    [0x7d],
    [0x29],
    [0x85],
    [0x86],
    [0x87],
    [0x88],
    [0x89],
    [0x93],
    [0x94],
  ),
  fc.tuple(fc.constantFrom(0x4b, 0x68, 0x71), fc.integer({ min: 0, max: 4 })),
  fc.tuple(fc.constantFrom(0x4a, 0x6a, 0x72), fc.uint8Array({ minLength: 4, maxLength: 4 })).map(([op, b]) => [op, ...b]),
  fc.uint8Array({ maxLength: 12 }).map((b) => [0x8a, b.length, ...b]),
  fc.string({ maxLength: 8 }).map((s) => [0x8c, Buffer.byteLength(s), ...Buffer.from(s)]),
  fc.constantFrom(...GLOBAL_NAMES).map((g) => [0x63, ...Buffer.from(`${g}\n`)]),
  fc.uint8Array({ minLength: 1, maxLength: 6 }).map((b) => Array.from(b)),
);

const pickleStream = fc
  .tuple(fc.boolean(), fc.array(pickleToken, { maxLength: 60 }))
  .map(([proto, tokens]) => Uint8Array.from([...(proto ? [0x80, 2] : []), ...tokens.flat()]));

/** A small valid torch zip: one stored and one deflated storage, a transposed view. */
function baseTorchZip(): Buffer {
  const pickle = statePickle([
    { name: 'a', key: '0', numel: 6, size: [2, 3], stride: [3, 1], storage: 'FloatStorage' },
    { name: 'aT', key: '0', numel: 6, size: [3, 2], stride: [1, 3], storage: 'FloatStorage' },
    { name: 'b', key: '1', numel: 8, size: [8], stride: [1] },
  ]);
  return fs.readFileSync(
    torchZip(pickle, [
      { name: '0', data: new Uint8Array(24).fill(7) },
      { name: '1', data: new Uint8Array(8).fill(3), deflate: true },
    ]),
  );
}

describe('fuzzing (fast-check)', () => {
  it('pickle byte streams: a value (which formats) or a MexitError', () => {
    fc.assert(
      fc.property(pickleStream, (bytes) => {
        outcome(() => expect(formatValue(unpickle(bytes, HOOKS, 'fuzz.pkl')).length).toBeLessThanOrEqual(120));
      }),
      { seed: 1, numRuns: 2000 },
    );
  });

  it('pickle byte streams inside a torch zip: tensors or a MexitError', () => {
    const file = tmpPath('fuzz-pickle.bin');
    const storage = { name: 'archive/data/0', data: new Uint8Array(64) };
    fc.assert(
      fc.property(pickleStream, (bytes) => {
        writeZip(file, [{ name: 'archive/data.pkl', data: bytes }, storage]);
        exercise(openTorchCheckpoint, file);
      }),
      { seed: 1, numRuns: 150 },
    );
  });

  it('zip headers: tensors or a MexitError', () => {
    const base = baseTorchZip();
    expect(exercise(openTorchCheckpoint, tmpFileOf(base))).toBe('ok');
    const interesting = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0xffffffff, 0x7fffffff, base.length, base.length - 22];
    const edit = fc.record({
      at: fc.integer({ min: 0, max: base.length - 1 }),
      width: fc.constantFrom(1, 2, 4),
      value: fc.oneof(fc.constantFrom(...interesting), fc.nat()),
    });
    const file = tmpPath('fuzz-zip.bin');
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), fc.boolean(), (edits, tailBiased) => {
        const bytes = Buffer.from(base);
        for (const e of edits) {
          // most structure (central directory, end record) sits in the last ~300 bytes
          const at = tailBiased ? Math.max(0, base.length - 1 - (e.at % 300)) : e.at;
          const width = Math.min(e.width, bytes.length - at);
          bytes.writeUIntLE(e.value % 2 ** (8 * width), at, width);
        }
        fs.writeFileSync(file, bytes);
        exercise(openTorchCheckpoint, file);
      }),
      { seed: 1, numRuns: 400 },
    );
  });

  it('safetensors headers: entries or a MexitError', () => {
    const dtype = fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'BOOL', 'U8'), fc.jsonValue({ maxDepth: 2 }));
    const shape = fc.oneof(
      fc.array(fc.nat({ max: 8 }), { maxLength: 4 }),
      fc.array(fc.integer(), { maxLength: 3 }),
      fc.jsonValue({ maxDepth: 3 }),
    );
    const offsets = fc.oneof(
      fc.tuple(fc.nat({ max: 64 }), fc.nat({ max: 64 })),
      fc.array(fc.double(), { maxLength: 3 }),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const entry = fc.oneof(fc.record({ dtype, shape, data_offsets: offsets }), fc.jsonValue({ maxDepth: 2 }));
    const header = fc.dictionary(fc.oneof(fc.string({ maxLength: 6 }), fc.constant('__metadata__')), entry, { maxKeys: 4 });
    fc.assert(
      fc.property(header, fc.nat({ max: 64 }), (h, dataLength) => {
        outcome(() => parseSafetensorsHeader(Buffer.from(JSON.stringify(h)), dataLength, 'fuzz.safetensors'));
      }),
      { seed: 1, numRuns: 1500 },
    );
    const file = tmpPath('fuzz.safetensors');
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.boolean(),
        fc.oneof(
          fc.uint8Array({ maxLength: 80 }),
          fc.string().map((s) => Buffer.from(s)),
        ),
        (length, exact, rest) => {
          const prefix = Buffer.alloc(8);
          prefix.writeBigUInt64LE(exact ? BigInt(rest.length) : length);
          fs.writeFileSync(file, Buffer.concat([prefix, rest]));
          exercise(openSafetensors, file);
        },
      ),
      { seed: 1, numRuns: 200 },
    );
  });
});

function tmpFileOf(bytes: Uint8Array): string {
  const file = tmpPath();
  fs.writeFileSync(file, bytes);
  return file;
}
