import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MexitError, MsgpackStore, packMsgpack, readMsgpackFile, unpackMsgpack, writeMsgpackFile } from '@mexit/core';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-msgpack-'));
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

describe('MessagePack (msgpackr, moreTypes)', () => {
  it('round-trips typed arrays, Maps, Sets and nested objects with their exact types', () => {
    const original = sample();
    const back = unpackMsgpack<ReturnType<typeof sample>>(packMsgpack(original));
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
    writeMsgpackFile(file, sample());
    expect(fs.statSync(file).size).toBeGreaterThan(50);
    expect(readMsgpackFile(file)).toEqual(sample());
  });

  it('typed errors for missing and corrupt files', () => {
    const missing = path.join(tmp, 'absent.msgpack');
    expect(() => readMsgpackFile(missing)).toThrow(expect.objectContaining({ code: 'MSGPACK_MISSING' }));
    expect(() => readMsgpackFile(missing)).toThrow(MexitError);
    const truncated = path.join(tmp, 'truncated.msgpack');
    const bytes = packMsgpack(sample());
    fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
    expect(() => readMsgpackFile(truncated)).toThrow(expect.objectContaining({ code: 'MSGPACK_INVALID' }));
    expect(() => unpackMsgpack(Uint8Array.from([0x92]))).toThrow(expect.objectContaining({ code: 'MSGPACK_INVALID' }));
  });

  it('a file written here decodes in a fresh process (nothing depends on the writer instance)', () => {
    const file = path.join(tmp, 'cross-process.msgpack');
    writeMsgpackFile(file, [sample(), sample()]);
    const msgpackr = createRequire(import.meta.url).resolve('msgpackr');
    const script = `
      const { Unpackr } = require(${JSON.stringify(msgpackr)});
      const [a, b] = new Unpackr({ moreTypes: true }).unpack(require('fs').readFileSync(${JSON.stringify(file)}));
      process.stdout.write(JSON.stringify([a.name, Array.from(a.logits), a.byLayer instanceof Map, b.nested.deep[4].x instanceof Int8Array]));
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
    expect(out).toEqual(['gpt2-tiny step', [1.5, -2, null, 3.4028234663852886e38], true, true]);
  });

  it('writes atomically: no temporary file is left behind, a failed write keeps the old file and throws MSGPACK_WRITE', () => {
    const dir = path.join(tmp, 'atomic');
    const file = path.join(dir, 'value.msgpack');
    writeMsgpackFile(file, { v: 1 });
    writeMsgpackFile(file, { v: 2 });
    expect(fs.readdirSync(dir)).toEqual(['value.msgpack']);
    expect(readMsgpackFile(file)).toEqual({ v: 2 });
    // The target is a directory: the rename fails, the temporary file is removed.
    fs.mkdirSync(path.join(dir, 'blocked.msgpack'));
    expect(() => writeMsgpackFile(path.join(dir, 'blocked.msgpack'), { v: 3 })).toThrow(expect.objectContaining({ code: 'MSGPACK_WRITE' }));
    expect(fs.readdirSync(dir).sort()).toEqual(['blocked.msgpack', 'value.msgpack']);
    // The parent is a file: the directory cannot be created.
    expect(() => writeMsgpackFile(path.join(file, 'below.msgpack'), {})).toThrow(expect.objectContaining({ code: 'MSGPACK_WRITE' }));
  });
});

describe('MsgpackStore', () => {
  it('stores values by key under its directory, created on first write', () => {
    const store = new MsgpackStore(path.join(tmp, 'store', 'nested'));
    expect(() => store.read('abc123')).toThrow(expect.objectContaining({ code: 'MSGPACK_MISSING' }));
    store.write('abc123', { data: new Uint8Array([1, 2, 3]), scales: new Float32Array([0.5]) });
    expect(store.file('abc123')).toBe(path.join(tmp, 'store', 'nested', 'abc123.msgpack'));
    const back = store.read<{ data: Uint8Array; scales: Float32Array }>('abc123');
    expect(Array.from(back.data)).toEqual([1, 2, 3]);
    expect(back.data).toBeInstanceOf(Uint8Array);
    expect(back.scales).toEqual(new Float32Array([0.5]));
  });

  it('rejects keys that are not plain file names', () => {
    const store = new MsgpackStore(tmp);
    for (const key of ['', '../escape', 'a/b', '.hidden', 'a b', 'x'.repeat(201)]) {
      expect(() => store.file(key)).toThrow(expect.objectContaining({ code: 'MSGPACK_KEY' }));
    }
  });
});
