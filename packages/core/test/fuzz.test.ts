/**
 * Seeded mutation fuzzing of the checkpoint readers: every corrupted file must either be refused with a
 * typed MexitError or read into well-formed tensors. Any other exception (TypeError, RangeError, a native
 * fs error) fails the test, and each case is bounded in time.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DTYPE_BYTES, MexitError, type TensorMap, openSafetensors, openTorchCheckpoint, writeSafetensors } from '@mexit/core';
import { mulberry32 } from './support/helpers.js';

// MEXIT_FUZZ_SCALE=N runs N× the iterations (a longer local soak; prints the outcome counts)
const SCALE = Math.max(1, Number(process.env.MEXIT_FUZZ_SCALE ?? 1));
const GOLDENS = fileURLToPath(new URL('../../../fixtures/goldens/', import.meta.url));

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-fuzz-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const EXPECTED_CTOR: Record<string, string> = {
  F32: 'Float32Array',
  F16: 'Uint16Array',
  BF16: 'Uint16Array',
  F64: 'Float64Array',
  I64: 'BigInt64Array',
  I32: 'Int32Array',
  I16: 'Int16Array',
  I8: 'Int8Array',
  U8: 'Uint8Array',
  BOOL: 'Uint8Array',
};

/** Opens and reads everything; returns the error code, or 'ok' after checking every tensor is well-formed. */
function exercise(open: (file: string) => TensorMap, file: string): string {
  try {
    const map = open(file);
    try {
      for (const name of map.names) {
        const info = map.info(name);
        const t = map.get(name);
        const elements = t.shape.reduce((p, d) => p * d, 1);
        if (t.data.length !== elements) throw new Error(`${name}: ${t.data.length} elements for shape [${t.shape}]`);
        if (t.data.byteLength !== elements * DTYPE_BYTES[t.dtype] || t.data.byteLength !== info.byteLength) {
          throw new Error(`${name}: byte length ${t.data.byteLength} does not match dtype ${t.dtype} / info`);
        }
        if (t.data.constructor.name !== EXPECTED_CTOR[t.dtype]) throw new Error(`${name}: ${t.data.constructor.name} for ${t.dtype}`);
        if (['F32', 'F16', 'BF16', 'F64'].includes(t.dtype) && map.getF32(name).length !== elements) {
          throw new Error(`${name}: getF32 length`);
        }
      }
    } finally {
      map.close();
    }
    return 'ok';
  } catch (err) {
    if (err instanceof MexitError) return err.code;
    throw err;
  }
}

/** Applies 1-4 random edits: flips, interesting bytes, or a truncation. `hot` ranges get most edits. */
function mutate(base: Uint8Array, rand: () => number, hot: [number, number][]): Uint8Array {
  let out = Uint8Array.from(base);
  const edits = 1 + Math.floor(rand() * 4);
  for (let e = 0; e < edits; e++) {
    const kind = rand();
    if (kind < 0.12) {
      out = out.subarray(0, Math.floor(rand() * out.length));
      continue;
    }
    let pos: number;
    if (rand() < 0.85 && hot.length > 0) {
      const [from, to] = hot[Math.floor(rand() * hot.length)];
      pos = from + Math.floor(rand() * (to - from));
    } else {
      pos = Math.floor(rand() * out.length);
    }
    if (pos < 0 || pos >= out.length) continue;
    if (kind < 0.6) out[pos] ^= 1 + Math.floor(rand() * 255);
    else out[pos] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x30, 0x39, 0x5d, 0x7d][Math.floor(rand() * 9)];
  }
  return out;
}

function fuzz(
  base: Uint8Array,
  hot: [number, number][],
  iterations: number,
  seed: number,
  open: (file: string) => TensorMap,
): Map<string, number> {
  const rand = mulberry32(seed);
  const file = path.join(tmp, `fuzz-${seed}`);
  const outcomes = new Map<string, number>();
  for (let i = 0; i < iterations * SCALE; i++) {
    fs.writeFileSync(file, mutate(base, rand, hot));
    const started = performance.now();
    let outcome: string;
    try {
      outcome = exercise(open, file);
    } catch (err) {
      throw new Error(`seed ${seed} iteration ${i}: untyped failure ${(err as Error).stack}`);
    }
    const ms = performance.now() - started;
    if (ms > 1000) throw new Error(`seed ${seed} iteration ${i}: took ${ms.toFixed(0)} ms`);
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  if (SCALE > 1) console.log(seed, Object.fromEntries(outcomes));
  return outcomes;
}

describe('fuzzing the checkpoint readers', () => {
  it('small safetensors file with every dtype: typed errors or well-formed tensors', () => {
    const file = path.join(tmp, 'base.safetensors');
    writeSafetensors(
      file,
      {
        a: { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
        b: { dtype: 'F16', shape: [3], data: new Uint16Array([0x3c00, 0x7c00, 1]) },
        c: { dtype: 'BF16', shape: [1, 2], data: new Uint16Array([0x3f80, 0xc000]) },
        d: { dtype: 'I64', shape: [2], data: new BigInt64Array([1n, -1n]) },
        e: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
        f: { dtype: 'F64', shape: [1], data: new Float64Array([0.5]) },
        g: { dtype: 'I8', shape: [0], data: new Int8Array(0) },
      },
      { format: 'pt' },
    );
    const base = fs.readFileSync(file);
    const headerEnd = 8 + Number(base.readBigUInt64LE(0));
    const outcomes = fuzz(base, [[0, headerEnd]], 300, 1234, openSafetensors);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(0);
    expect(outcomes.size).toBeGreaterThan(4); // several distinct error codes were hit
  });

  it('golden pytorch_model.bin: typed errors or well-formed tensors', () => {
    const base = fs.readFileSync(path.join(GOLDENS, 'gpt2-tiny-bin', 'pytorch_model.bin'));
    // the hot spots: the pickle (right after the first local header) and the central directory at the end
    const hot: [number, number][] = [
      [0, 5300],
      [base.length - 5000, base.length],
    ];
    const outcomes = fuzz(base, hot, 200, 99, openTorchCheckpoint);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(0);
    expect(outcomes.size).toBeGreaterThan(4);
  });

  it('golden model.safetensors header region', () => {
    const base = fs.readFileSync(path.join(GOLDENS, 'gpt2-tiny', 'model.safetensors'));
    const headerEnd = 8 + Number(base.readBigUInt64LE(0));
    const outcomes = fuzz(base, [[0, headerEnd]], 100, 7, openSafetensors);
    expect(outcomes.size).toBeGreaterThan(2);
  });
});
