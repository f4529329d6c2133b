import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DType, type Tensor, bf16BitsToF32, f16BitsToF32, f32ToBf16, halfToF32, openSafetensors, writeSafetensors } from '@mexit/core';
import { expectCheckpointError } from './support/helpers.js';

const GOLDENS = fileURLToPath(new URL('../../../fixtures/goldens/', import.meta.url));
const GOLDEN_MODELS = ['gpt2-tiny', 'gpt-neo-tiny', 'llama2-tiny', 'llama32-tiny', 'gpt2-multiexit-tiny'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-st-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A safetensors file assembled by hand (independent of writeSafetensors). */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: number): Buffer {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLength ?? json.length));
  return Buffer.concat([len, json, data]);
}

let fileCounter = 0;
function tmpFile(bytes: Uint8Array): string {
  const file = path.join(tmp, `t${fileCounter++}.safetensors`);
  fs.writeFileSync(file, bytes);
  return file;
}

function openAndReadAll(file: string): void {
  const map = openSafetensors(file);
  try {
    for (const n of map.names) map.get(n);
  } finally {
    map.close();
  }
}

describe('half-precision conversion', () => {
  it('decodes F16 bit patterns to the hand-computed values', () => {
    const cases: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x3555, 0.333251953125], // 1.0101010101b × 2^-2
      [0x7bff, 65504], // largest finite half
      [0x0400, 2 ** -14], // smallest normal
      [0x0001, 2 ** -24], // smallest subnormal ≈ 5.96e-8
      [0x03ff, 1023 * 2 ** -24], // largest subnormal
      [0x8001, -(2 ** -24)],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
      [0x0000, 0],
    ];
    for (const [bits, value] of cases) expect(f16BitsToF32(bits), `0x${bits.toString(16)}`).toBe(value);
    expect(f16BitsToF32(0x0001)).toBeCloseTo(5.96e-8, 10);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0x7c01)).toBeNaN();
    expect(f16BitsToF32(0xfe00)).toBeNaN();
  });

  it('decodes BF16 bit patterns to the hand-computed values', () => {
    const cases: [number, number][] = [
      [0x3f80, 1],
      [0xc000, -2],
      [0x4049, 3.140625], // 1.1001001b × 2^1
      [0x7f80, Infinity],
      [0xff80, -Infinity],
      [0x0080, 2 ** -126], // smallest normal
      [0x0001, 2 ** -133], // smallest subnormal: mantissa bit 16 of an f32 subnormal
      [0x7f7f, (2 - 2 ** -7) * 2 ** 127], // largest finite
    ];
    for (const [bits, value] of cases) expect(bf16BitsToF32(bits), `0x${bits.toString(16)}`).toBe(value);
    expect(Object.is(bf16BitsToF32(0x8000), -0)).toBe(true);
    expect(bf16BitsToF32(0x7fc0)).toBeNaN();
    expect(bf16BitsToF32(0xffc1)).toBeNaN();
  });

  it('array conversion matches the scalar decoders for every F16 and BF16 pattern', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    for (const dtype of ['F16', 'BF16'] as const) {
      const out = halfToF32(dtype, all, new Float32Array(65536));
      const scalar = dtype === 'F16' ? f16BitsToF32 : bf16BitsToF32;
      for (let i = 0; i < 65536; i += 1) {
        const expected = scalar(i);
        if (Number.isNaN(expected)) expect(out[i]).toBeNaN();
        else if (out[i] !== expected) expect.fail(`${dtype} 0x${i.toString(16)}: ${out[i]} != ${expected}`);
      }
    }
  });

  it('f32ToBf16 rounds to nearest even', () => {
    // 1 + 2^-8 is exactly halfway between bf16 1.0 (0x3f80) and 1.0078125 (0x3f81): ties go to even 0x3f80
    const input = new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2, Infinity, NaN]);
    const bits = f32ToBf16(input);
    expect([...bits.subarray(0, 6)]).toEqual([0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc000, 0x7f80]);
    expect(bf16BitsToF32(bits[6])).toBeNaN();
  });
});

describe('writeSafetensors / openSafetensors round trip', () => {
  const tensors: Record<string, Tensor> = {
    'f32.scalar': { dtype: 'F32', shape: [], data: new Float32Array([1.5]) },
    'f32.m': { dtype: 'F32', shape: [2, 3], data: new Float32Array([0, -1, 2.5, 1e-30, -0, 3.4028234663852886e38]) },
    f16: { dtype: 'F16', shape: [5], data: new Uint16Array([0x3c00, 0xc000, 0x7c00, 0x0001, 0x7e00]) },
    bf16: { dtype: 'BF16', shape: [2, 2], data: new Uint16Array([0x3f80, 0xc000, 0xff80, 0x0001]) },
    f64: { dtype: 'F64', shape: [3], data: new Float64Array([Math.PI, -1e300, 5e-324]) },
    i64: { dtype: 'I64', shape: [3], data: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 42n]) },
    i32: { dtype: 'I32', shape: [3], data: new Int32Array([-(2 ** 31), 2 ** 31 - 1, 7]) },
    i16: { dtype: 'I16', shape: [2], data: new Int16Array([-32768, 32767]) },
    i8: { dtype: 'I8', shape: [3], data: new Int8Array([-128, 127, 0]) },
    u8: { dtype: 'U8', shape: [1, 3], data: new Uint8Array([0, 255, 9]) },
    bool: { dtype: 'BOOL', shape: [4], data: new Uint8Array([1, 0, 0, 1]) },
    empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  };

  it('writes the layout the spec prescribes (checked from raw bytes)', () => {
    const file = path.join(tmp, 'layout.safetensors');
    writeSafetensors(file, { b: tensors['f32.scalar'], a: tensors.f16 }, { format: 'pt' });
    const raw = fs.readFileSync(file);
    const headerLength = Number(raw.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const headerText = raw.subarray(8, 8 + headerLength).toString('utf8');
    expect(headerText.trimEnd().length).toBeGreaterThan(headerLength - 8);
    expect(headerText.slice(headerText.trimEnd().length)).toMatch(/^ *$/);
    const header = JSON.parse(headerText);
    expect(header).toEqual({
      __metadata__: { format: 'pt' },
      a: { dtype: 'F16', shape: [5], data_offsets: [0, 10] },
      b: { dtype: 'F32', shape: [], data_offsets: [10, 14] },
    });
    expect(Object.keys(header)).toEqual(['__metadata__', 'a', 'b']);
    const data = raw.subarray(8 + headerLength);
    expect([...data]).toEqual([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c, 0x01, 0x00, 0x00, 0x7e, 0x00, 0x00, 0xc0, 0x3f]);
  });

  it('reads back every dtype bit-exactly, with metadata and sorted names', () => {
    const file = path.join(tmp, 'all.safetensors');
    writeSafetensors(file, tensors, { format: 'pt', note: 'ü' });
    const map = openSafetensors(file);
    expect(map.metadata).toEqual({ format: 'pt', note: 'ü' });
    expect(map.names).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const got = map.get(name);
      expect(got.dtype).toBe(t.dtype);
      expect(got.shape).toEqual(t.shape);
      expect(got.data.constructor).toBe(t.data.constructor);
      expect(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength)).toEqual(
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      );
      const info = map.info(name);
      expect(info).toEqual({ name, dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength, file });
    }
    expect([...map.getF32('f16')].slice(0, 4)).toEqual([1, -2, Infinity, 2 ** -24]);
    expect(map.getF32('f16')[4]).toBeNaN();
    expect([...map.getF32('bf16')]).toEqual([1, -2, -Infinity, 2 ** -133]);
    expect([...map.getF32('f64')]).toEqual([Math.fround(Math.PI), -Infinity, 0]);
    expect(map.getF32('f32.m')).toEqual(tensors['f32.m'].data);
    expect(map.getF32('empty').length).toBe(0);
    expectCheckpointError(() => map.getF32('i32'), 'TENSOR_DTYPE', 'i32', 'I32');
    expectCheckpointError(() => map.info('nope'), 'TENSOR_MISSING', "'nope'", file);
    expectCheckpointError(() => map.get('nope'), 'TENSOR_MISSING', "'nope'", file);
    expect(map.has('bool')).toBe(true);
    expect(map.has('nope')).toBe(false);
    map.close();
    expectCheckpointError(() => map.get('bool'), 'CHECKPOINT_CLOSED');
  });

  it('writes no __metadata__ when none is given', () => {
    const file = path.join(tmp, 'nometa.safetensors');
    writeSafetensors(file, { x: tensors.i8 });
    const raw = fs.readFileSync(file);
    expect(JSON.parse(raw.subarray(8, 8 + Number(raw.readBigUInt64LE(0))).toString())).not.toHaveProperty('__metadata__');
    const map = openSafetensors(file);
    expect(map.metadata).toEqual({});
    map.close();
  });

  it('refuses inconsistent tensors when writing', () => {
    const file = path.join(tmp, 'bad-write.safetensors');
    expect(() => writeSafetensors(file, { x: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).toThrow(
      expect.objectContaining({ code: 'TENSOR_SHAPE' }),
    );
    expect(() => writeSafetensors(file, { x: { dtype: 'F16', shape: [2], data: new Float32Array(2) } })).toThrow(
      expect.objectContaining({ code: 'TENSOR_DTYPE' }),
    );
    expect(() => writeSafetensors(file, { x: { dtype: 'Q4' as DType, shape: [2], data: new Uint8Array(2) } })).toThrow(
      expect.objectContaining({ code: 'TENSOR_DTYPE' }),
    );
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe('reading hand-made files', () => {
  it('copies tensors at unaligned offsets into aligned arrays', () => {
    const data = new Uint8Array(3 + 8 + 8);
    data.set([7, 8, 9], 0);
    const dv = new DataView(data.buffer);
    dv.setFloat32(3, -1.25, true);
    dv.setFloat32(7, 1024.5, true);
    dv.setFloat64(11, 2 ** -1074, true);
    // header of length 5 + JSON: the data section itself starts at an odd file offset
    const header = {
      a: { dtype: 'U8', shape: [3], data_offsets: [0, 3] },
      b: { dtype: 'F32', shape: [2], data_offsets: [3, 11] },
      c: { dtype: 'F64', shape: [1], data_offsets: [11, 19] },
    };
    const file = tmpFile(craft(header, data));
    const map = openSafetensors(file);
    const b = map.get('b');
    expect(b.data).toBeInstanceOf(Float32Array);
    expect(b.data.byteOffset % 4).toBe(0);
    expect([...(b.data as Float32Array)]).toEqual([-1.25, 1024.5]);
    expect([...(map.get('c').data as Float64Array)]).toEqual([2 ** -1074]);
    expect([...(map.get('a').data as Uint8Array)]).toEqual([7, 8, 9]);
    expect(map.names).toEqual(['a', 'b', 'c']);
    map.close();
  });

  it('accepts gaps between tensors and zero-size tensors', () => {
    const data = new Uint8Array(12);
    new DataView(data.buffer).setInt32(8, -5, true);
    const header = {
      z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
      x: { dtype: 'I32', shape: [1], data_offsets: [8, 12] },
    };
    const map = openSafetensors(tmpFile(craft(header, data)));
    expect([...(map.get('x').data as Int32Array)]).toEqual([-5]);
    expect(map.get('z').data.length).toBe(0);
    map.close();
  });

  it('reads a tensor stored past 4 GiB (sparse file; positions beyond 32 bits)', () => {
    const big = 2 ** 32 + 16;
    const header = {
      big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
      tail: { dtype: 'F32', shape: [2], data_offsets: [big, big + 8] },
    };
    const prefix = craft(header);
    const file = path.join(tmp, 'sparse.safetensors');
    const fd = fs.openSync(file, 'w');
    fs.writeSync(fd, prefix, 0, prefix.length, 0);
    const tail = Buffer.alloc(8);
    tail.writeFloatLE(3.5, 0);
    tail.writeFloatLE(-7, 4);
    fs.writeSync(fd, tail, 0, 8, prefix.length + big);
    fs.closeSync(fd);
    try {
      const map = openSafetensors(file);
      expect(map.info('big').byteLength).toBe(big);
      expect([...map.getF32('tail')]).toEqual([3.5, -7]);
      map.close();
    } finally {
      fs.rmSync(file);
    }
  });

  it('reads every golden model.safetensors: header, metadata and bytes match an independent parse', () => {
    for (const model of GOLDEN_MODELS) {
      const file = path.join(GOLDENS, model, 'model.safetensors');
      const raw = fs.readFileSync(file);
      const headerLength = Number(raw.readBigUInt64LE(0));
      const header = JSON.parse(raw.subarray(8, 8 + headerLength).toString('utf8'));
      const dataStart = 8 + headerLength;
      const map = openSafetensors(file);
      expect(map.metadata).toEqual({ format: 'pt' });
      const expectedNames = Object.keys(header).filter((k) => k !== '__metadata__');
      expect([...map.names].sort()).toEqual(expectedNames.sort());
      for (const name of expectedNames) {
        const {
          dtype,
          shape,
          data_offsets: [begin, end],
        } = header[name];
        const t = map.get(name);
        expect(t.dtype).toBe(dtype);
        expect(t.shape).toEqual(shape);
        const expected = raw.subarray(dataStart + begin, dataStart + end);
        expect(Buffer.compare(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), expected), name).toBe(0);
      }
      map.close();
    }
    const gpt2 = openSafetensors(path.join(GOLDENS, 'gpt2-tiny', 'model.safetensors'));
    expect(gpt2.info('transformer.wte.weight').shape).toEqual([512, 64]);
    expect(gpt2.info('transformer.h.0.attn.c_attn.weight').shape).toEqual([64, 192]); // Conv1D [in, out]
    expect(gpt2.has('lm_head.weight')).toBe(false); // tied, not stored
    gpt2.close();
  });
});

describe('malformed safetensors files', () => {
  const goodHeader = {
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'I16', shape: [2, 2], data_offsets: [8, 16] },
  };
  const goodData = new Uint8Array(16).map((_, i) => i);

  it('control: the base file is valid', () => {
    expect(() => openAndReadAll(tmpFile(craft(goodHeader, goodData)))).not.toThrow();
  });

  it('truncated file', () => {
    const full = craft(goodHeader, goodData);
    const cut = tmpFile(full.subarray(0, full.length - 3));
    expectCheckpointError(() => openSafetensors(cut), 'SAFETENSORS_TRUNCATED', cut, "'b'", 'truncated');
    const tiny = tmpFile(full.subarray(0, 5));
    expectCheckpointError(() => openSafetensors(tiny), 'SAFETENSORS_TRUNCATED', tiny);
    const empty = tmpFile(new Uint8Array(0));
    expectCheckpointError(() => openSafetensors(empty), 'SAFETENSORS_TRUNCATED');
  });

  it('header length past the end of the file, or absurdly large', () => {
    const json = JSON.stringify(goodHeader);
    const past = tmpFile(craft(goodHeader, goodData, json.length + goodData.length + 1));
    expectCheckpointError(() => openSafetensors(past), 'SAFETENSORS_HEADER_LENGTH', past);
    const huge = tmpFile(craft(goodHeader, goodData, 2 ** 40));
    expectCheckpointError(() => openSafetensors(huge), 'SAFETENSORS_HEADER_LENGTH', 'limit');
    // a header cut mid-way by truncation reads as a length past the end too
    const full = craft(goodHeader, goodData);
    const cutHeader = tmpFile(full.subarray(0, 20));
    expectCheckpointError(() => openSafetensors(cutHeader), 'SAFETENSORS_HEADER_LENGTH');
  });

  it('header that is not a JSON object', () => {
    expectCheckpointError(() => openSafetensors(tmpFile(craft('{"a": {"dtype": "F32",', goodData))), 'SAFETENSORS_HEADER_JSON');
    expectCheckpointError(() => openSafetensors(tmpFile(craft('[1, 2]'))), 'SAFETENSORS_HEADER_JSON', 'object');
    expectCheckpointError(() => openSafetensors(tmpFile(craft('null'))), 'SAFETENSORS_HEADER_JSON');
    const badUtf8 = Buffer.concat([Buffer.from('{"a\xff'), Buffer.from([0xff, 0xfe]), Buffer.from('": 1}')]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(badUtf8.length));
    expectCheckpointError(() => openSafetensors(tmpFile(Buffer.concat([len, badUtf8]))), 'SAFETENSORS_HEADER_JSON', 'UTF-8');
    expectCheckpointError(() => openSafetensors(tmpFile(craft({ ...goodHeader, a: 'F32' }, goodData))), 'SAFETENSORS_ENTRY', "'a'");
  });

  it('unknown dtype', () => {
    const file = tmpFile(craft({ ...goodHeader, a: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, goodData));
    expectCheckpointError(() => openSafetensors(file), 'SAFETENSORS_DTYPE', file, "'a'", 'F8_E4M3');
  });

  it('overlapping offsets', () => {
    const header = { ...goodHeader, b: { dtype: 'I16', shape: [2, 2], data_offsets: [4, 12] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(header, goodData))), 'SAFETENSORS_OVERLAP', "'a'", "'b'");
  });

  it('out-of-range and malformed offsets', () => {
    const outside = { ...goodHeader, b: { dtype: 'I16', shape: [2, 2], data_offsets: [100, 108] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(outside, goodData))), 'SAFETENSORS_OFFSETS', "'b'", '[100, 108]');
    const reversed = { ...goodHeader, b: { dtype: 'I16', shape: [0], data_offsets: [16, 8] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(reversed, goodData))), 'SAFETENSORS_OFFSETS', "'b'");
    const negative = { ...goodHeader, b: { dtype: 'I16', shape: [2, 2], data_offsets: [-8, 0] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(negative, goodData))), 'SAFETENSORS_OFFSETS');
    const notPair = { ...goodHeader, b: { dtype: 'I16', shape: [2, 2], data_offsets: [8] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(notPair, goodData))), 'SAFETENSORS_OFFSETS');
  });

  it('shape / byte-count mismatch and bad shapes', () => {
    const mismatch = { ...goodHeader, b: { dtype: 'I16', shape: [2, 3], data_offsets: [8, 16] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(mismatch, goodData))), 'SAFETENSORS_SHAPE_MISMATCH', "'b'", '12 bytes', '8');
    const negative = { ...goodHeader, b: { dtype: 'I16', shape: [-2, -2], data_offsets: [8, 16] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(negative, goodData))), 'SAFETENSORS_SHAPE', "'b'");
    const fractional = { ...goodHeader, b: { dtype: 'U8', shape: [2.5, 3.2], data_offsets: [8, 16] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(fractional, goodData))), 'SAFETENSORS_SHAPE');
    const overflow = { ...goodHeader, b: { dtype: 'F64', shape: [2 ** 40, 2 ** 40], data_offsets: [8, 16] } };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(overflow, goodData))), 'SAFETENSORS_SHAPE_MISMATCH');
  });

  it('non-string metadata', () => {
    const header = { __metadata__: { format: 1 }, ...goodHeader };
    expectCheckpointError(() => openSafetensors(tmpFile(craft(header, goodData))), 'SAFETENSORS_METADATA', 'format');
  });

  it('missing file and directory', () => {
    expectCheckpointError(() => openSafetensors(path.join(tmp, 'absent.safetensors')), 'CHECKPOINT_MISSING', 'absent.safetensors');
    expectCheckpointError(() => openSafetensors(tmp), 'CHECKPOINT_IO');
  });
});
