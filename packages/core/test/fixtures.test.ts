import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MexitError, packFixture, readFixture, unpackFixture, writeFixture } from '@mexit/core';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-fixture-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const sample = () => ({
  name: 'gpt2-tiny step',
  logits: new Float32Array([1.5, -2, Infinity, 3.4028234663852886e38]),
  ids: new Int32Array([5, 17, 40]),
  bits: new Uint16Array([0x3c00, 0x7c00]),
  wide: new Float64Array([Math.PI]),
  longs: new BigInt64Array([-(2n ** 63n)]),
  byLayer: new Map<number, number[]>([
    [2, [0.25, 0.5]],
    [4, [1]],
  ]),
  layers: new Set([2, 4]),
  nested: { deep: [1, 'two', null, true, { x: new Int8Array([-128, 127]) }] },
});

describe('fixtures (msgpackr, moreTypes)', () => {
  it('round-trips typed arrays, Maps, Sets and nested objects with their exact types', () => {
    const original = sample();
    const back = unpackFixture<ReturnType<typeof sample>>(packFixture(original));
    expect(back).toEqual(original);
    expect(back.logits).toBeInstanceOf(Float32Array);
    expect(back.logits.byteOffset % 4).toBe(0);
    expect(back.bits).toBeInstanceOf(Uint16Array);
    expect(back.longs).toBeInstanceOf(BigInt64Array);
    expect(back.byLayer).toBeInstanceOf(Map);
    expect(back.layers).toBeInstanceOf(Set);
    expect(back.nested.deep[4]).toEqual({ x: new Int8Array([-128, 127]) });
  });

  it('writes and reads files, creating parent directories', () => {
    const file = path.join(tmp, 'sub', 'dir', 'case.msgpack');
    writeFixture(file, sample());
    expect(fs.statSync(file).size).toBeGreaterThan(50);
    expect(readFixture(file)).toEqual(sample());
  });

  it('typed errors for missing and corrupt fixtures', () => {
    const missing = path.join(tmp, 'absent.msgpack');
    expect(() => readFixture(missing)).toThrow(expect.objectContaining({ code: 'FIXTURE_MISSING' }));
    expect(() => readFixture(missing)).toThrow(MexitError);
    const truncated = path.join(tmp, 'truncated.msgpack');
    const bytes = packFixture(sample());
    fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
    expect(() => readFixture(truncated)).toThrow(expect.objectContaining({ code: 'FIXTURE_INVALID' }));
    expect(() => unpackFixture(Uint8Array.from([0x92]))).toThrow(expect.objectContaining({ code: 'FIXTURE_INVALID' }));
  });
});
