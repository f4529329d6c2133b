import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, openTorchCheckpoint } from '@mexit/core';
import { expectCheckpointError } from './support/helpers.js';

const GOLDENS = fileURLToPath(new URL('../../../fixtures/goldens/', import.meta.url));
const GOLDEN_MODELS = ['gpt2-tiny', 'gpt-neo-tiny', 'llama2-tiny', 'llama32-tiny', 'gpt2-multiexit-tiny'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-pt-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let fileCounter = 0;
function tmpFile(bytes: Uint8Array): string {
  const file = path.join(tmp, `m${fileCounter++}.bin`);
  fs.writeFileSync(file, bytes);
  return file;
}

// ---------------------------------------------------------------------------------------------------------
// A minimal zip writer (APPNOTE 6.3 layout), independent of the reader under test.
interface ZipInput {
  name: string;
  /** bytes, or a length of zeros left as a hole in the file (sparse; stored, CRC not computed) */
  data: Uint8Array | number;
  deflate?: boolean;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** The zip as a list of byte chunks and holes (numbers). */
function zipChunks(entries: ZipInput[], options: { zip64?: boolean } = {}): (Buffer | number)[] {
  const zip64 = options.zip64 ?? false;
  const chunks: (Buffer | number)[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const hole = typeof e.data === 'number';
    const size = typeof e.data === 'number' ? e.data : e.data.length;
    const stored = typeof e.data === 'number' ? e.data : e.deflate ? zlib.deflateRawSync(e.data) : Buffer.from(e.data);
    const storedSize = typeof stored === 'number' ? stored : stored.length;
    const crc = typeof e.data === 'number' ? 0 : zlib.crc32(e.data);
    const method = e.deflate && !hole ? 8 : 0;
    const sizeField = (n: number) => (zip64 ? 0xffffffff : n);
    const localExtra = zip64 ? Buffer.concat([u16(1), u16(16), u64(size), u64(storedSize)]) : Buffer.alloc(0);
    const local = Buffer.concat([
      u32(0x04034b50),
      u16(zip64 ? 45 : 20),
      u16(0),
      u16(method),
      u16(0),
      u16(0x21),
      u32(crc),
      u32(sizeField(storedSize)),
      u32(sizeField(size)),
      u16(name.length),
      u16(localExtra.length),
      name,
      localExtra,
    ]);
    const centralExtra = zip64 ? Buffer.concat([u16(1), u16(24), u64(size), u64(storedSize), u64(offset)]) : Buffer.alloc(0);
    centrals.push(
      Buffer.concat([
        u32(0x02014b50),
        u16(zip64 ? 45 : 20),
        u16(zip64 ? 45 : 20),
        u16(0),
        u16(method),
        u16(0),
        u16(0x21),
        u32(crc),
        u32(sizeField(storedSize)),
        u32(sizeField(size)),
        u16(name.length),
        u16(centralExtra.length),
        u16(0),
        u16(0),
        u16(0),
        u32(0),
        u32(zip64 ? 0xffffffff : offset),
        name,
        centralExtra,
      ]),
    );
    chunks.push(local, stored);
    offset += local.length + storedSize;
  }
  const cd = Buffer.concat(centrals);
  const cdOffset = offset;
  chunks.push(cd);
  if (zip64) {
    const z64Offset = cdOffset + cd.length;
    chunks.push(
      Buffer.concat([
        u32(0x06064b50),
        u64(44),
        u16(45),
        u16(45),
        u32(0),
        u32(0),
        u64(entries.length),
        u64(entries.length),
        u64(cd.length),
        u64(cdOffset),
      ]),
      Buffer.concat([u32(0x07064b50), u32(0), u64(z64Offset), u32(1)]),
      Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(0xffff), u16(0xffff), u32(0xffffffff), u32(0xffffffff), u16(0)]),
    );
  } else {
    chunks.push(
      Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(cd.length), u32(cdOffset), u16(0)]),
    );
  }
  return chunks;
}

function buildZip(entries: ZipInput[], options: { zip64?: boolean } = {}): Buffer {
  return Buffer.concat(zipChunks(entries, options).map((c) => (typeof c === 'number' ? Buffer.alloc(c) : c)));
}

/** Writes the zip with its holes left unwritten (a sparse file), so multi-GiB layouts cost no disk. */
function writeSparseZip(file: string, entries: ZipInput[]): void {
  const fd = fs.openSync(file, 'w');
  let position = 0;
  for (const c of zipChunks(entries, { zip64: true })) {
    if (typeof c === 'number') position += c;
    else position += fs.writeSync(fd, c, 0, c.length, position);
  }
  fs.closeSync(fd);
}

// ---------------------------------------------------------------------------------------------------------
// A pickle writer producing what torch.save emits for a state dict (protocol 2), or a protocol-4 variant
// using FRAME / SHORT_BINUNICODE / STACK_GLOBAL / MEMOIZE.
interface TensorSpec {
  name: string;
  storage: string; // e.g. 'FloatStorage'
  key: string;
  numel: number;
  offset: number;
  size: number[];
  stride: number[];
  parameter?: boolean;
}

class PickleWriter {
  private readonly bytes: number[] = [];
  private memo = 0;
  constructor(readonly protocol: 2 | 4) {}
  raw(...xs: number[]): this {
    this.bytes.push(...xs);
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (this.protocol === 4 && b.length < 256) return this.raw(0x8c, b.length, ...b);
    return this.raw(0x58, ...u32(b.length), ...b);
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.raw(0x4b, n);
    if (n >= 0 && n < 65536) return this.raw(0x4d, ...u16(n));
    if (n >= -(2 ** 31) && n < 2 ** 31) {
      const b = Buffer.alloc(4);
      b.writeInt32LE(n);
      return this.raw(0x4a, ...b);
    }
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(n));
    return this.raw(0x8a, 8, ...b); // LONG1
  }
  global(module: string, name: string): this {
    if (this.protocol === 4) return this.str(module).str(name).raw(0x93);
    return this.raw(0x63, ...Buffer.from(`${module}\n${name}\n`, 'latin1'));
  }
  put(): number {
    const index = this.memo++;
    if (this.protocol === 4) this.raw(0x94);
    else if (index < 256) this.raw(0x71, index);
    else this.raw(0x72, ...u32(index));
    return index;
  }
  get(index: number): this {
    return index < 256 ? this.raw(0x68, index) : this.raw(0x6a, ...u32(index));
  }
  tuple(items: (() => void)[]): this {
    if (items.length === 0) return this.raw(0x29);
    if (items.length <= 3) {
      for (const f of items) f();
      return this.raw(0x84 + items.length);
    }
    this.raw(0x28);
    for (const f of items) f();
    return this.raw(0x74);
  }
  build(): Uint8Array {
    const body = Buffer.from(this.bytes);
    if (this.protocol === 2) return Buffer.concat([Buffer.from([0x80, 2]), body]);
    return Buffer.concat([Buffer.from([0x80, 4, 0x95]), u64(body.length), body]);
  }
}

function stateDictPickle(specs: TensorSpec[], protocol: 2 | 4 = 2): Uint8Array {
  const w = new PickleWriter(protocol);
  w.global('collections', 'OrderedDict');
  const odict = w.put();
  w.raw(0x29, 0x52); // EMPTY_TUPLE REDUCE
  w.put();
  w.raw(0x28); // MARK
  let rebuild = -1;
  let rebuildParam = -1;
  const storageTypes = new Map<string, number>();
  for (const s of specs) {
    w.str(s.name);
    if (s.parameter) {
      if (rebuildParam < 0) {
        w.global('torch._utils', '_rebuild_parameter');
        rebuildParam = w.put();
      } else w.get(rebuildParam);
      w.raw(0x28);
    }
    if (rebuild < 0) {
      w.global('torch._utils', '_rebuild_tensor_v2');
      rebuild = w.put();
    } else w.get(rebuild);
    w.raw(0x28); // MARK (args)
    w.raw(0x28).str('storage');
    const st = storageTypes.get(s.storage);
    if (st === undefined) {
      w.global('torch', s.storage);
      storageTypes.set(s.storage, w.put());
    } else w.get(st);
    w.str(s.key).str('cpu').int(s.numel).raw(0x74); // TUPLE
    w.raw(0x51); // BINPERSID
    w.int(s.offset);
    w.tuple(s.size.map((d) => () => w.int(d)));
    w.tuple(s.stride.map((d) => () => w.int(d)));
    w.raw(0x89); // NEWFALSE
    w.get(odict).raw(0x29, 0x52); // OrderedDict()
    w.raw(0x74, 0x52); // TUPLE REDUCE
    if (s.parameter) w.raw(0x89).get(odict).raw(0x29, 0x52, 0x74, 0x52);
  }
  w.raw(0x75, 0x2e); // SETITEMS STOP
  return w.build();
}

function torchZip(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  options: { zip64?: boolean; deflate?: boolean; archive?: string; extra?: ZipInput[] } = {},
): Buffer {
  const archive = options.archive ?? 'archive';
  return buildZip(
    [
      { name: `${archive}/data.pkl`, data: pickle },
      ...Object.entries(storages).map(([key, data]) => ({ name: `${archive}/data/${key}`, data, deflate: options.deflate })),
      { name: `${archive}/version`, data: Buffer.from('3\n') },
      ...(options.extra ?? []),
    ],
    { zip64: options.zip64 },
  );
}

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

// ---------------------------------------------------------------------------------------------------------

describe('golden pytorch_model.bin files', () => {
  it('each -bin twin holds the same tensors as model.safetensors, bit for bit', () => {
    for (const model of GOLDEN_MODELS) {
      const st = openSafetensors(path.join(GOLDENS, model, 'model.safetensors'));
      const binFile = path.join(GOLDENS, `${model}-bin`, 'pytorch_model.bin');
      const bin = openTorchCheckpoint(binFile);
      const stNames = new Set(st.names);
      const binNames = new Set(bin.names);
      // .bin files may carry tied duplicates (lm_head.weight) that safetensors drops; these goldens do not
      const binOnly = [...binNames].filter((n) => !stNames.has(n));
      const stOnly = [...stNames].filter((n) => !binNames.has(n));
      expect(stOnly, model).toEqual([]);
      expect(
        binOnly.every((n) => n === 'lm_head.weight'),
        `${model}: extra .bin tensors ${binOnly}`,
      ).toBe(true);
      expect(binOnly, model).toEqual([]);
      let compared = 0;
      for (const name of st.names) {
        const a = st.get(name);
        const b = bin.get(name);
        expect(b.dtype, name).toBe(a.dtype);
        expect(b.shape, name).toEqual(a.shape);
        expect(Buffer.compare(Buffer.from(bytes(a.data)), Buffer.from(bytes(b.data))), `${model} ${name}`).toBe(0);
        expect(bin.info(name).file).toBe(binFile);
        compared++;
      }
      expect(compared).toBeGreaterThan(30);
      st.close();
      bin.close();
    }
  });

  it('refuses gpt2-tiny-evil (its pickle calls posix.system) and executes nothing', () => {
    // The evil pickle (checked with pickletools): after the OrderedDict it does
    //   GLOBAL 'posix system'; BINUNICODE 'touch /tmp/mexit-pickle-executed'; TUPLE1; REDUCE
    // so a reader that honoured REDUCE would create /tmp/mexit-pickle-executed.
    const marker = '/tmp/mexit-pickle-executed';
    const before = fs.existsSync(marker) ? fs.statSync(marker).mtimeMs : null;
    const file = path.join(GOLDENS, 'gpt2-tiny-evil', 'pytorch_model.bin');
    const err = expectCheckpointError(() => openTorchCheckpoint(file), 'PICKLE_FORBIDDEN_GLOBAL', 'posix.system', file);
    expect(err.message).toContain('byte offset 73'); // the GLOBAL opcode itself, before its argument is even read
    const after = fs.existsSync(marker) ? fs.statSync(marker).mtimeMs : null;
    expect(after).toBe(before);
  });
});

describe('crafted torch checkpoints', () => {
  const f32 = new Float32Array([0, 1, 2, 3, 4, 5]);
  const half = new Uint16Array([0x3c00, 0xc000, 0x7c00]);
  const longs = new BigInt64Array([-1n, 2n ** 40n]);
  const bools = new Uint8Array([1, 0, 1]);
  const param = new Float32Array([7.5]);
  const bf16 = new Uint16Array([0x3f80, 0x4049]);
  const storages = { '0': bytes(f32), '1': bytes(half), '2': bytes(longs), '3': bools, '4': bytes(param), '5': bytes(bf16) };
  const specs: TensorSpec[] = [
    { name: 'w', storage: 'FloatStorage', key: '0', numel: 6, offset: 0, size: [2, 3], stride: [3, 1] },
    { name: 'wT', storage: 'FloatStorage', key: '0', numel: 6, offset: 0, size: [3, 2], stride: [1, 3] },
    { name: 'slice', storage: 'FloatStorage', key: '0', numel: 6, offset: 2, size: [2], stride: [1] },
    { name: 'every3', storage: 'FloatStorage', key: '0', numel: 6, offset: 1, size: [2], stride: [3] },
    { name: 'col', storage: 'FloatStorage', key: '0', numel: 6, offset: 2, size: [2, 1], stride: [3, 99] },
    { name: 'h', storage: 'HalfStorage', key: '1', numel: 3, offset: 0, size: [3], stride: [1] },
    { name: 'ids', storage: 'LongStorage', key: '2', numel: 2, offset: 0, size: [2], stride: [1] },
    { name: 'mask', storage: 'BoolStorage', key: '3', numel: 3, offset: 0, size: [3], stride: [1] },
    { name: 'p', storage: 'FloatStorage', key: '4', numel: 1, offset: 0, size: [1], stride: [1], parameter: true },
    { name: 'scalar', storage: 'FloatStorage', key: '4', numel: 1, offset: 0, size: [], stride: [] },
    { name: 'expanded', storage: 'FloatStorage', key: '4', numel: 1, offset: 0, size: [3], stride: [0] },
    { name: 'empty', storage: 'FloatStorage', key: '4', numel: 1, offset: 0, size: [0, 5], stride: [5, 1] },
    { name: 'b', storage: 'BFloat16Storage', key: '5', numel: 2, offset: 0, size: [2], stride: [1] },
    // non-contiguous views of 2-, 8- and 1-byte elements (the gather copies whole elements)
    { name: 'hEvery2', storage: 'HalfStorage', key: '1', numel: 3, offset: 0, size: [2], stride: [2] },
    { name: 'idsExpand', storage: 'LongStorage', key: '2', numel: 2, offset: 1, size: [2, 2], stride: [0, 0] },
    { name: 'maskEvery2', storage: 'BoolStorage', key: '3', numel: 3, offset: 0, size: [2, 1], stride: [2, 1] },
  ];

  const variants: [string, () => Buffer][] = [
    ['protocol 2, stored', () => torchZip(stateDictPickle(specs, 2), storages)],
    ['protocol 4, deflated storages', () => torchZip(stateDictPickle(specs, 4), storages, { deflate: true })],
    ['zip64 records', () => torchZip(stateDictPickle(specs, 2), storages, { zip64: true, archive: 'pytorch_model' })],
    [
      'byteorder little',
      () => torchZip(stateDictPickle(specs, 2), storages, { extra: [{ name: 'archive/byteorder', data: Buffer.from('little') }] }),
    ],
  ];

  for (const [label, make] of variants) {
    it(`reads every tensor kind (${label})`, () => {
      const file = tmpFile(make());
      const map = openTorchCheckpoint(file);
      expect(map.names).toEqual(specs.map((s) => s.name));
      const f = (name: string) => [...map.getF32(name)];
      expect(map.get('w').shape).toEqual([2, 3]);
      expect(f('w')).toEqual([0, 1, 2, 3, 4, 5]);
      expect(map.get('wT').shape).toEqual([3, 2]);
      expect(f('wT')).toEqual([0, 3, 1, 4, 2, 5]); // the transpose, gathered
      expect(f('slice')).toEqual([2, 3]);
      expect(f('every3')).toEqual([1, 4]);
      expect(f('col')).toEqual([2, 5]);
      const h = map.get('h');
      expect(h.dtype).toBe('F16');
      expect([...(h.data as Uint16Array)]).toEqual([0x3c00, 0xc000, 0x7c00]);
      expect(f('h')).toEqual([1, -2, Infinity]);
      const ids = map.get('ids');
      expect(ids.dtype).toBe('I64');
      expect([...(ids.data as BigInt64Array)]).toEqual([-1n, 2n ** 40n]);
      expect(map.get('mask')).toEqual({ dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) });
      expect(f('p')).toEqual([7.5]);
      expect(map.get('scalar').shape).toEqual([]);
      expect(f('scalar')).toEqual([7.5]);
      expect(f('expanded')).toEqual([7.5, 7.5, 7.5]);
      expect(map.get('empty')).toEqual({ dtype: 'F32', shape: [0, 5], data: new Float32Array(0) });
      expect(f('b')).toEqual([1, 3.140625]);
      expect([...(map.get('hEvery2').data as Uint16Array)]).toEqual([0x3c00, 0x7c00]);
      expect(f('hEvery2')).toEqual([1, Infinity]); // gathered straight into the F32 result's upper half
      expect(map.get('idsExpand')).toEqual({
        dtype: 'I64',
        shape: [2, 2],
        data: new BigInt64Array([2n ** 40n, 2n ** 40n, 2n ** 40n, 2n ** 40n]),
      });
      expect(map.get('maskEvery2')).toEqual({ dtype: 'BOOL', shape: [2, 1], data: new Uint8Array([1, 1]) });
      expect(map.info('wT')).toEqual({ name: 'wT', dtype: 'F32', shape: [3, 2], byteLength: 24, file });
      expectCheckpointError(() => map.get('nope'), 'TENSOR_MISSING', "'nope'", file);
      map.close();
    });
  }

  const one: TensorSpec[] = [{ name: 'x', storage: 'FloatStorage', key: '0', numel: 1, offset: 0, size: [1], stride: [1] }];
  const oneStorage = { '0': bytes(new Float32Array([1])) };
  const withPickle = (pickle: number[] | Uint8Array) => tmpFile(torchZip(Uint8Array.from(pickle), oneStorage));
  const ascii = (s: string) => [...Buffer.from(s, 'latin1')];

  it('control: the one-tensor checkpoint used below is valid', () => {
    const map = openTorchCheckpoint(tmpFile(torchZip(stateDictPickle(one), oneStorage)));
    expect([...map.getF32('x')]).toEqual([1]);
    map.close();
  });

  it('forbidden globals are refused when the GLOBAL opcode is read', () => {
    // GLOBAL os.system, then bytes that are not even valid pickle: the error must come from the GLOBAL
    const osSystem = withPickle([0x80, 2, ...ascii('cos\nsystem\n'), 0xff, 0xff]);
    expectCheckpointError(() => openTorchCheckpoint(osSystem), 'PICKLE_FORBIDDEN_GLOBAL', "'os.system'", 'byte offset 2');
    // STACK_GLOBAL builtins.eval (protocol 4 style)
    const evalPickle = withPickle([
      0x80,
      4,
      0x8c,
      8,
      ...ascii('builtins'),
      0x8c,
      4,
      ...ascii('eval'),
      0x93,
      0x8c,
      1,
      0x31,
      0x85,
      0x52,
      0x2e,
    ]);
    expectCheckpointError(() => openTorchCheckpoint(evalPickle), 'PICKLE_FORBIDDEN_GLOBAL', "'builtins.eval'");
    const popen = withPickle([0x80, 2, ...ascii('csubprocess\nPopen\n'), 0x2e]);
    expectCheckpointError(() => openTorchCheckpoint(popen), 'PICKLE_FORBIDDEN_GLOBAL', "'subprocess.Popen'");
    // an allowed module with a name outside the allow-list
    const torchLoad = withPickle([0x80, 2, ...ascii('ctorch\nload\n'), 0x2e]);
    expectCheckpointError(() => openTorchCheckpoint(torchLoad), 'PICKLE_FORBIDDEN_GLOBAL', "'torch.load'");
  });

  it('unsupported opcodes are named with their byte offset', () => {
    // INT (text protocol 0) 'I42\n' at offset 2
    const textInt = withPickle([0x80, 2, ...ascii('I42\n'), 0x2e]);
    expectCheckpointError(() => openTorchCheckpoint(textInt), 'PICKLE_UNSUPPORTED_OPCODE', '0x49', 'byte offset 2');
    // NEWOBJ (0x81) at offset 3, after EMPTY_DICT
    const newobj = withPickle([0x80, 2, 0x7d, 0x81, 0x2e]);
    expectCheckpointError(() => openTorchCheckpoint(newobj), 'PICKLE_UNSUPPORTED_OPCODE', '0x81', 'byte offset 3');
    const proto0 = withPickle([0x80, 1, 0x7d, 0x2e]);
    expectCheckpointError(() => openTorchCheckpoint(proto0), 'PICKLE_UNSUPPORTED_PROTOCOL');
  });

  it('malformed pickles', () => {
    const full = stateDictPickle(one);
    expectCheckpointError(() => openTorchCheckpoint(withPickle(full.subarray(0, full.length - 1))), 'PICKLE_TRUNCATED', 'STOP');
    expectCheckpointError(() => openTorchCheckpoint(withPickle(full.subarray(0, 40))), 'PICKLE_TRUNCATED');
    expectCheckpointError(() => openTorchCheckpoint(withPickle([0x80, 2, 0x86, 0x2e])), 'PICKLE_INVALID', 'underflow');
    expectCheckpointError(() => openTorchCheckpoint(withPickle([0x80, 2, 0x68, 9, 0x2e])), 'PICKLE_INVALID', 'memo');
    expectCheckpointError(() => openTorchCheckpoint(withPickle([0x80, 2, 0x5d, 0x2e])), 'TORCH_NOT_STATE_DICT', 'list');
    expectCheckpointError(
      () => openTorchCheckpoint(withPickle([0x80, 2, 0x7d, 0x58, ...u32(1), 0x6b, 0x4b, 5, 0x73, 0x2e])),
      'TORCH_NOT_STATE_DICT',
      "'k'",
    );
    // APPEND to a tuple
    expectCheckpointError(() => openTorchCheckpoint(withPickle([0x80, 2, 0x29, 0x4e, 0x61, 0x2e])), 'PICKLE_INVALID', 'list');
  });

  it('storage problems: missing entry, too small, view out of bounds', () => {
    const missing = tmpFile(torchZip(stateDictPickle([{ ...one[0], key: '7' }]), oneStorage));
    expectCheckpointError(() => openTorchCheckpoint(missing), 'TORCH_STORAGE_MISSING', 'archive/data/7');
    const small = tmpFile(torchZip(stateDictPickle([{ ...one[0], numel: 2, size: [2] }]), oneStorage));
    expectCheckpointError(() => openTorchCheckpoint(small), 'TORCH_STORAGE_SIZE', "'0'");
    const outside = tmpFile(torchZip(stateDictPickle([{ ...one[0], offset: 1 }]), oneStorage));
    expectCheckpointError(() => openTorchCheckpoint(outside), 'TORCH_TENSOR_INVALID', '_rebuild_tensor_v2');
    const big = tmpFile(
      torchZip(stateDictPickle([{ name: 'x', storage: 'FloatStorage', key: '0', numel: 6, offset: 0, size: [3, 3], stride: [2, 1] }]), {
        '0': bytes(f32),
      }),
    );
    expectCheckpointError(() => openTorchCheckpoint(big), 'TORCH_TENSOR_INVALID', 'element 6');
    const badType = tmpFile(torchZip(stateDictPickle([{ ...one[0], storage: 'QInt8Storage' }]), oneStorage));
    expectCheckpointError(() => openTorchCheckpoint(badType), 'PICKLE_FORBIDDEN_GLOBAL', 'torch.QInt8Storage');
  });

  it('big-endian storages are refused', () => {
    const file = tmpFile(torchZip(stateDictPickle(one), oneStorage, { extra: [{ name: 'archive/byteorder', data: Buffer.from('big') }] }));
    expectCheckpointError(() => openTorchCheckpoint(file), 'TORCH_BYTEORDER', 'big');
  });

  it('reads a storage that starts past 4 GiB (zip64 offsets, sparse file)', () => {
    const spec: TensorSpec = { name: 'far', storage: 'FloatStorage', key: '1', numel: 2, offset: 0, size: [2], stride: [1] };
    const file = path.join(tmp, 'far.bin');
    writeSparseZip(file, [
      { name: 'archive/data.pkl', data: stateDictPickle([spec]) },
      { name: 'archive/data/0', data: 2 ** 32 + 8 }, // a 4 GiB hole nobody references
      { name: 'archive/data/1', data: bytes(new Float32Array([-3.5, 6])) },
    ]);
    try {
      const map = openTorchCheckpoint(file);
      expect([...map.getF32('far')]).toEqual([-3.5, 6]);
      map.close();
    } finally {
      fs.rmSync(file);
    }
  });

  it('zip without data.pkl', () => {
    const file = tmpFile(
      buildZip([
        { name: 'archive/data/0', data: new Uint8Array(4) },
        { name: 'archive/version', data: Buffer.from('3\n') },
      ]),
    );
    expectCheckpointError(() => openTorchCheckpoint(file), 'TORCH_NO_DATA_PKL', file, 'data.pkl');
  });

  it('files that are not zips, or truncated zips', () => {
    const text = tmpFile(Buffer.from('definitely not a checkpoint'));
    expectCheckpointError(() => openTorchCheckpoint(text), 'TORCH_NOT_ZIP', text);
    expectCheckpointError(() => openTorchCheckpoint(tmpFile(new Uint8Array(0))), 'TORCH_NOT_ZIP');
    const safetensors = path.join(GOLDENS, 'gpt2-tiny', 'model.safetensors');
    expectCheckpointError(() => openTorchCheckpoint(safetensors), 'TORCH_NOT_ZIP');
    // torch < 1.6: a bare pickle stream beginning with the pickled magic number 0x1950a86a20f9469cfc6c
    const legacy = tmpFile(Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]));
    expectCheckpointError(() => openTorchCheckpoint(legacy), 'TORCH_NOT_ZIP', 'legacy');
    const golden = fs.readFileSync(path.join(GOLDENS, 'gpt2-tiny-bin', 'pytorch_model.bin'));
    expectCheckpointError(() => openTorchCheckpoint(tmpFile(golden.subarray(0, golden.length >> 1))), 'TORCH_ZIP_INVALID', 'truncated');
    expectCheckpointError(() => openTorchCheckpoint(path.join(tmp, 'absent.bin')), 'CHECKPOINT_MISSING', 'absent.bin');
  });

  it('unsupported zip features: compression method and encryption', () => {
    const zip = torchZip(stateDictPickle(one), oneStorage);
    // patch the central-directory method of the first entry (data.pkl) to 12 (bzip2)
    const cdStart = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    const bzip = Buffer.from(zip);
    bzip.writeUInt16LE(12, cdStart + 10);
    expectCheckpointError(() => openTorchCheckpoint(tmpFile(bzip)), 'TORCH_ZIP_UNSUPPORTED', 'method 12');
    const encrypted = Buffer.from(zip);
    encrypted.writeUInt16LE(1, cdStart + 8);
    expectCheckpointError(() => openTorchCheckpoint(tmpFile(encrypted)), 'TORCH_ZIP_UNSUPPORTED', 'encrypted');
  });
});
