/**
 * RuntimeOptions.cacheDir: quantized draft weights stored on disk. A stage built from the cache must equal,
 * bit for bit, one built without it; a bad cache file must be ignored and rewritten, never used; a changed
 * checkpoint must miss.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, packMsgpack, readMsgpackFile, writeMsgpackFile } from '@mexit/core';
import { ModelRuntime, type LinearQuantization, type RuntimeOptions, type StageSpec } from '@mexit/model';

const LLAMA = fileURLToPath(new URL('../../../fixtures/goldens/llama2-tiny/', import.meta.url));
const prompt = Array.from(openSafetensors(path.join(LLAMA, 'goldens.safetensors')).get('input_ids_0').data as BigInt64Array, Number);
const spec = (quantize: LinearQuantization): StageSpec => ({ from: 0, to: 2, exits: [{ layer: 2 }], quantize });

let tmp: string;
const runtimes: ModelRuntime[] = [];
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-quant-cache-'));
});
afterAll(async () => {
  for (const rt of runtimes) await rt.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A fresh runtime (its own stage map, so the stage is really built again). */
async function load(dir: string, options: RuntimeOptions = {}): Promise<ModelRuntime> {
  const rt = await ModelRuntime.load(dir, { threads: 1, ...options });
  runtimes.push(rt);
  return rt;
}

const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Exit logits, hidden rows and the K/V rows the stage appended, as raw bytes (bit-for-bit comparison). */
async function outputs(rt: ModelRuntime, quantize: LinearQuantization = 'int8'): Promise<Uint8Array[]> {
  const stage = await rt.stage(spec(quantize));
  const cache = rt.createCache();
  const out = await stage.run(cache, prompt);
  const kv = [0, 1].flatMap((l) => [cache.view(l).k, cache.view(l).v]);
  return [...out.logits, out.hidden, ...kv].map((a) => bytes(a).slice());
}

function cacheFiles(cacheDir: string): string[] {
  const dir = path.join(cacheDir, 'quantized');
  return fs.existsSync(dir)
    ? fs
        .readdirSync(dir)
        .sort()
        .map((f) => path.join(dir, f))
    : [];
}

const reference = new Map<LinearQuantization, Uint8Array[]>();
async function referenceOutputs(quantize: LinearQuantization): Promise<Uint8Array[]> {
  if (!reference.has(quantize)) reference.set(quantize, await outputs(await load(LLAMA), quantize));
  return reference.get(quantize)!;
}

describe('quantized weight cache (RuntimeOptions.cacheDir)', () => {
  it('is off by default; a bad cacheDir is a RUNTIME_OPTIONS error', async () => {
    const rt = await load(LLAMA);
    expect(rt.quantizedCache).toBeNull();
    expect(rt.options.cacheDir).toBeUndefined();
    await expect(ModelRuntime.load(LLAMA, { cacheDir: '' })).rejects.toMatchObject({ code: 'RUNTIME_OPTIONS' });
    await expect(ModelRuntime.load(LLAMA, { cacheDir: 42 as unknown as string })).rejects.toMatchObject({ code: 'RUNTIME_OPTIONS' });
  });

  for (const quantize of ['int8', 'int4'] as const) {
    it(`${quantize}: a miss then a hit in a fresh runtime both equal the uncached stage bit for bit`, async () => {
      const cacheDir = path.join(tmp, `roundtrip-${quantize}`);
      const expected = await referenceOutputs(quantize);

      const first = await load(LLAMA, { cacheDir });
      expect(await outputs(first, quantize)).toEqual(expected);
      const miss = first.quantizedCache!;
      expect(miss.misses).toBeGreaterThan(0);
      expect({ hits: miss.hits, rejected: miss.rejected, writes: miss.writes }).toEqual({ hits: 0, rejected: 0, writes: miss.misses });
      const files = cacheFiles(cacheDir);
      expect(files.length).toBe(miss.misses); // one file per quantized weight, no temporary files left
      const mtimes = files.map((f) => fs.statSync(f).mtimeMs);

      const second = await load(LLAMA, { cacheDir });
      expect(await outputs(second, quantize)).toEqual(expected);
      const hit = second.quantizedCache!;
      // Every weight came from disk: quantizeBlocks ran for none of them, nothing was rewritten.
      expect({ hits: hit.hits, misses: hit.misses, rejected: hit.rejected, writes: hit.writes }).toEqual({
        hits: miss.misses,
        misses: 0,
        rejected: 0,
        writes: 0,
      });
      expect(cacheFiles(cacheDir)).toEqual(files);
      expect(files.map((f) => fs.statSync(f).mtimeMs)).toEqual(mtimes);
    });
  }

  it('int8 and int4 of the same weights are separate entries', async () => {
    const cacheDir = path.join(tmp, 'both');
    const rt = await load(LLAMA, { cacheDir });
    expect(await outputs(rt, 'int8')).toEqual(await referenceOutputs('int8'));
    const afterInt8 = rt.quantizedCache!.misses;
    expect(await outputs(rt, 'int4')).toEqual(await referenceOutputs('int4'));
    expect(rt.quantizedCache!.misses).toBe(2 * afterInt8);
    expect(rt.quantizedCache!.hits).toBe(0);
    expect(cacheFiles(cacheDir).length).toBe(2 * afterInt8);
  });

  it('corrupted files (truncated, garbage, empty, wrong lengths, wrong checksum) give identical outputs and are rewritten', async () => {
    const cacheDir = path.join(tmp, 'corrupt');
    const expected = await referenceOutputs('int8');
    await outputs(await load(LLAMA, { cacheDir }));
    const files = cacheFiles(cacheDir);
    const total = files.length;
    expect(total).toBeGreaterThanOrEqual(8);

    type Entry = { data: Uint8Array; scales: Float32Array; sha256: string };
    const entry = (f: string) => readMsgpackFile<Entry>(f);
    const corruptions: ((f: string) => void)[] = [
      (f) => fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 100)), // truncated
      (f) =>
        fs.writeFileSync(
          f,
          Uint8Array.from({ length: 4096 }, (_, i) => (i * 167 + 13) & 255),
        ), // garbage
      (f) => fs.writeFileSync(f, new Uint8Array(0)), // empty
      (f) => fs.writeFileSync(f, packMsgpack(42)), // valid MessagePack, not an entry
      (f) => {
        // One block short, checksum updated to match: only the length check can catch it.
        const e = entry(f);
        const data = e.data.slice(0, e.data.length - 32);
        writeMsgpackFile(f, { ...e, data, sha256: checksum(data, e.scales) });
      },
      (f) => {
        const e = entry(f);
        const scales = e.scales.slice(0, e.scales.length - 1);
        writeMsgpackFile(f, { ...e, scales, sha256: checksum(e.data, scales) });
      },
      (f) => {
        // Right lengths, one quantized value changed: caught by the checksum.
        const e = entry(f);
        const data = e.data.slice();
        data[7] ^= 0x55;
        writeMsgpackFile(f, { ...e, data });
      },
      (f) => {
        const e = entry(f);
        writeMsgpackFile(f, { ...e, data: Array.from(e.data) }); // wrong type
      },
    ];
    corruptions.forEach((corrupt, i) => {
      corrupt(files[i]);
    });

    const rt = await load(LLAMA, { cacheDir });
    expect(await outputs(rt)).toEqual(expected);
    const stats = rt.quantizedCache!;
    expect({ hits: stats.hits, misses: stats.misses, rejected: stats.rejected, writes: stats.writes }).toEqual({
      hits: total - corruptions.length,
      misses: corruptions.length,
      rejected: corruptions.length,
      writes: corruptions.length,
    });
    expect(cacheFiles(cacheDir)).toEqual(files);

    // Rewritten: a further fresh runtime reads every weight from disk again.
    const again = await load(LLAMA, { cacheDir });
    expect(await outputs(again)).toEqual(expected);
    expect({ hits: again.quantizedCache!.hits, misses: again.quantizedCache!.misses }).toEqual({ hits: total, misses: 0 });
  });

  it('a cache directory that cannot be written is skipped: same outputs, no error', async () => {
    const blocker = path.join(tmp, 'not-a-dir');
    fs.writeFileSync(blocker, 'x');
    const rt = await load(LLAMA, { cacheDir: blocker });
    expect(await outputs(rt)).toEqual(await referenceOutputs('int8'));
    expect(rt.quantizedCache!.writes).toBe(0);
    expect(rt.quantizedCache!.misses).toBeGreaterThan(0);
  });

  it('a changed checkpoint (other path, new mtime, new contents) misses and never gets stale blocks', async () => {
    const cacheDir = path.join(tmp, 'changed');
    const expected = await referenceOutputs('int8');
    const original = await load(LLAMA, { cacheDir });
    expect(await outputs(original)).toEqual(expected);
    const weights = original.quantizedCache!.misses;

    // A copy at another path: same bytes, other key.
    const copy = path.join(tmp, 'llama2-tiny-copy');
    fs.cpSync(LLAMA, copy, { recursive: true });
    const copied = await load(copy, { cacheDir });
    expect(await outputs(copied)).toEqual(expected);
    expect({ hits: copied.quantizedCache!.hits, misses: copied.quantizedCache!.misses }).toEqual({ hits: 0, misses: weights });
    await copied.dispose();

    // Touched (new mtime, same bytes): misses again.
    const file = path.join(copy, 'model.safetensors');
    const later = new Date(fs.statSync(file).mtimeMs + 60_000);
    fs.utimesSync(file, later, later);
    const touched = await load(copy, { cacheDir });
    expect(await outputs(touched)).toEqual(expected);
    expect({ hits: touched.quantizedCache!.hits, misses: touched.quantizedCache!.misses }).toEqual({ hits: 0, misses: weights });
    await touched.dispose();

    // New contents, same size: the stage must use the new weights, as an uncached runtime does.
    overwriteF32(file, 'model.layers.0.self_attn.q_proj.weight', 0, 3.5);
    const evenLater = new Date(later.getTime() + 60_000);
    fs.utimesSync(file, evenLater, evenLater);
    const modified = await load(copy, { cacheDir });
    const modifiedOut = await outputs(modified);
    expect(modified.quantizedCache!.hits).toBe(0);
    expect(modifiedOut).toEqual(await outputs(await load(copy)));
    expect(modifiedOut).not.toEqual(expected);
  });
});

/** SHA-256 (hex) of data then scales, as the cache stores it. */
function checksum(data: Uint8Array, scales: Float32Array): string {
  return createHash('sha256')
    .update(data)
    .update(new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength))
    .digest('hex');
}

/** Sets element `index` of F32 tensor `name` in a safetensors file in place (same size). */
function overwriteF32(file: string, name: string, index: number, value: number): void {
  const buf = fs.readFileSync(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; data_offsets: [number, number] }
  >;
  const t = header[name];
  expect(t.dtype).toBe('F32');
  buf.writeFloatLE(value, 8 + headerLength + t.data_offsets[0] + 4 * index);
  fs.writeFileSync(file, buf);
}
