import { describe, expect, it } from 'vitest';
import { CacheError, KvCache } from '@mexit/core';

function expectCacheError(fn: () => unknown, code: string, ...messageParts: string[]): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(CacheError);
  expect((thrown as CacheError).code).toBe(code);
  for (const part of messageParts) expect((thrown as CacheError).message).toContain(part);
}

/** rows x rowSize floats whose values encode (tag, row, column) so any misplaced copy is visible. */
function rows(tag: number, firstRow: number, count: number, rowSize: number): Float32Array {
  const out = new Float32Array(count * rowSize);
  for (let r = 0; r < count; r++) {
    for (let c = 0; c < rowSize; c++) out[r * rowSize + c] = tag * 10000 + (firstRow + r) * 100 + c;
  }
  return out;
}

const SHAPE = { numLayers: 4, kvHeads: 2, headDim: 3 }; // rowSize 6

describe('KvCache construction', () => {
  it('derives rowSize and allocates initialCapacity rows per layer', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 8 });
    expect(cache.numLayers).toBe(4);
    expect(cache.rowSize).toBe(6);
    expect(cache.capacity).toBe(8);
    expect(cache.bytesAllocated()).toBe(4 * 8 * 6 * 4 * 2);
    expect(cache.bytesUsed()).toBe(0);
    for (let layer = 0; layer < 4; layer++) expect(cache.length(layer)).toBe(0);
  });

  it('rejects non-positive or non-integer shapes with KV_OPTIONS', () => {
    expectCacheError(() => new KvCache({ ...SHAPE, numLayers: 0 }), 'KV_OPTIONS', 'numLayers');
    expectCacheError(() => new KvCache({ ...SHAPE, kvHeads: 1.5 }), 'KV_OPTIONS', 'kvHeads');
    expectCacheError(() => new KvCache({ ...SHAPE, headDim: -3 }), 'KV_OPTIONS', 'headDim');
    expectCacheError(() => new KvCache({ ...SHAPE, initialCapacity: 0 }), 'KV_OPTIONS', 'initialCapacity');
    expectCacheError(() => new KvCache({ ...SHAPE, maxCapacity: 2.5 }), 'KV_OPTIONS', 'maxCapacity');
    expectCacheError(() => new KvCache({ ...SHAPE, initialCapacity: 10, maxCapacity: 5 }), 'KV_OPTIONS', 'initialCapacity');
  });

  it('defaults initialCapacity to at most maxCapacity', () => {
    expect(new KvCache({ ...SHAPE, maxCapacity: 3 }).capacity).toBe(3);
  });
});

describe('KvCache append / view', () => {
  it('appends rows per layer and views exactly the first n rows', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 8 });
    cache.append(0, rows(1, 0, 2, 6), rows(2, 0, 2, 6));
    cache.append(0, rows(1, 2, 1, 6), rows(2, 2, 1, 6));
    expect(cache.length(0)).toBe(3);
    expect(cache.length(1)).toBe(0);
    const all = cache.view(0);
    expect(Array.from(all.k)).toEqual(Array.from(rows(1, 0, 3, 6)));
    expect(Array.from(all.v)).toEqual(Array.from(rows(2, 0, 3, 6)));
    const first = cache.view(0, 1);
    expect(Array.from(first.k)).toEqual(Array.from(rows(1, 0, 1, 6)));
    expect(cache.view(0, 0).k.length).toBe(0);
    expect(cache.view(1).k.length).toBe(0);
  });

  it('views are zero-copy aliases of the storage', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 8 });
    cache.append(2, rows(1, 0, 2, 6), rows(2, 0, 2, 6));
    const a = cache.view(2);
    const b = cache.view(2, 1);
    expect(a.k.buffer).toBe(b.k.buffer);
    a.k[3] = -42;
    a.v[0] = -7;
    expect(b.k[3]).toBe(-42);
    expect(cache.view(2).v[0]).toBe(-7);
    // An append that fits the capacity writes into the same storage: an older view of the full capacity
    // region sees it through the shared buffer.
    cache.append(2, rows(1, 2, 1, 6), rows(2, 2, 1, 6));
    const whole = new Float32Array(a.k.buffer, a.k.byteOffset, 3 * 6);
    expect(whole[2 * 6]).toBe(10000 + 200);
  });

  it('rejects mismatched or ragged k/v, bad layers and out-of-range views', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 4 });
    expectCacheError(() => cache.append(0, new Float32Array(6), new Float32Array(12)), 'KV_SHAPE', '6', '12');
    expectCacheError(() => cache.append(0, new Float32Array(7), new Float32Array(7)), 'KV_SHAPE', 'rowSize = 6');
    expectCacheError(() => cache.append(0, null as never, new Float32Array(6)), 'KV_SHAPE', 'Float32Arrays');
    expectCacheError(() => cache.append(0, [1, 2, 3, 4, 5, 6] as never, new Float32Array(6)), 'KV_SHAPE', 'Float32Arrays');
    expectCacheError(() => cache.append(4, new Float32Array(6), new Float32Array(6)), 'KV_LAYER');
    expectCacheError(() => cache.append(-1, new Float32Array(6), new Float32Array(6)), 'KV_LAYER');
    expectCacheError(() => cache.length(1.5), 'KV_LAYER');
    cache.append(0, new Float32Array(12), new Float32Array(12));
    expectCacheError(() => cache.view(0, 3), 'KV_RANGE', '3', '[0, 2]');
    expectCacheError(() => cache.view(0, -1), 'KV_RANGE');
    expectCacheError(() => cache.view(0, 1.5), 'KV_RANGE');
    expect(cache.length(0)).toBe(2); // failed calls changed nothing
  });

  it('accepts an empty append', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 1 });
    cache.append(0, new Float32Array(0), new Float32Array(0));
    expect(cache.length(0)).toBe(0);
    expect(cache.capacity).toBe(1);
  });
});

describe('KvCache growth', () => {
  it('grows geometrically and preserves every layer', () => {
    const cache = new KvCache({ numLayers: 2, kvHeads: 1, headDim: 4, initialCapacity: 2 });
    for (let t = 0; t < 5; t++) cache.append(0, rows(1, t, 1, 4), rows(2, t, 1, 4));
    cache.append(1, rows(3, 0, 1, 4), rows(4, 0, 1, 4));
    expect(cache.capacity).toBe(8); // 2 -> 4 -> 8
    expect(cache.bytesAllocated()).toBe(2 * 8 * 4 * 4 * 2);
    expect(Array.from(cache.view(0).k)).toEqual(Array.from(rows(1, 0, 5, 4)));
    expect(Array.from(cache.view(0).v)).toEqual(Array.from(rows(2, 0, 5, 4)));
    expect(Array.from(cache.view(1).k)).toEqual(Array.from(rows(3, 0, 1, 4)));
    // A big append jumps straight to the needed size.
    cache.append(1, rows(3, 1, 20, 4), rows(4, 1, 20, 4));
    expect(cache.capacity).toBe(21);
    expect(Array.from(cache.view(1).v)).toEqual(Array.from(rows(4, 0, 21, 4)));
    expect(Array.from(cache.view(0).k)).toEqual(Array.from(rows(1, 0, 5, 4)));
  });

  it('throws KV_CAPACITY past maxCapacity without changing state', () => {
    const cache = new KvCache({ numLayers: 1, kvHeads: 1, headDim: 2, initialCapacity: 2, maxCapacity: 3 });
    cache.append(0, rows(1, 0, 3, 2), rows(2, 0, 3, 2));
    expect(cache.capacity).toBe(3); // growth capped at maxCapacity
    expectCacheError(() => cache.append(0, rows(1, 3, 1, 2), rows(2, 3, 1, 2)), 'KV_CAPACITY', '4', '3');
    expect(cache.length(0)).toBe(3);
    expect(Array.from(cache.view(0).k)).toEqual(Array.from(rows(1, 0, 3, 2)));
  });
});

describe('KvCache truncate / reset / bytes', () => {
  it('rolls back a speculative round with layers at different lengths', () => {
    // Layers 0-1 = draft stage, 2-3 = verify stage. 5 committed tokens everywhere.
    const cache = new KvCache({ ...SHAPE, initialCapacity: 16 });
    for (let layer = 0; layer < 4; layer++) cache.append(layer, rows(layer, 0, 5, 6), rows(layer + 50, 0, 5, 6));
    // Mid-round: the draft layers have run t0 + 3 draft tokens (5 -> 9) while the verify layers have
    // only stored 2 new rows so far (5 -> 7).
    for (let layer = 0; layer < 2; layer++) cache.append(layer, rows(layer, 5, 4, 6), rows(layer + 50, 5, 4, 6));
    for (let layer = 2; layer < 4; layer++) cache.append(layer, rows(layer, 5, 2, 6), rows(layer + 50, 5, 2, 6));
    expect([0, 1, 2, 3].map((l) => cache.length(l))).toEqual([9, 9, 7, 7]);
    expect(cache.bytesUsed()).toBe((9 + 9 + 7 + 7) * 6 * 4 * 2);
    // The first draft is rejected: only t0 is committed, so every layer rolls back to 6 rows.
    cache.truncate(6);
    expect([0, 1, 2, 3].map((l) => cache.length(l))).toEqual([6, 6, 6, 6]);
    for (let layer = 0; layer < 4; layer++) {
      expect(Array.from(cache.view(layer).k)).toEqual(Array.from(rows(layer, 0, 6, 6)));
      expect(Array.from(cache.view(layer).v)).toEqual(Array.from(rows(layer + 50, 0, 6, 6)));
    }
    // The next round overwrites the rejected rows.
    cache.append(0, rows(9, 6, 1, 6), rows(9, 6, 1, 6));
    expect(Array.from(cache.view(0).k.subarray(6 * 6))).toEqual(Array.from(rows(9, 6, 1, 6)));
    // Truncating above every length is a no-op; below keeps only a prefix.
    cache.truncate(100);
    expect([0, 1, 2, 3].map((l) => cache.length(l))).toEqual([7, 6, 6, 6]);
    cache.truncate(2);
    expect([0, 1, 2, 3].map((l) => cache.length(l))).toEqual([2, 2, 2, 2]);
    expect(cache.bytesUsed()).toBe(4 * 2 * 6 * 4 * 2);
  });

  it('only shortens layers that are longer', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 8 });
    cache.append(0, new Float32Array(5 * 6), new Float32Array(5 * 6));
    cache.append(3, new Float32Array(1 * 6), new Float32Array(1 * 6));
    cache.truncate(3);
    expect([0, 1, 2, 3].map((l) => cache.length(l))).toEqual([3, 0, 0, 1]);
  });

  it('rejects a bad truncate length', () => {
    const cache = new KvCache(SHAPE);
    expectCacheError(() => cache.truncate(-1), 'KV_RANGE');
    expectCacheError(() => cache.truncate(0.5), 'KV_RANGE');
  });

  it('reset empties every layer and keeps the allocation', () => {
    const cache = new KvCache({ ...SHAPE, initialCapacity: 2 });
    for (let layer = 0; layer < 4; layer++) cache.append(layer, new Float32Array(3 * 6), new Float32Array(3 * 6));
    const allocated = cache.bytesAllocated();
    expect(cache.capacity).toBe(4);
    cache.reset();
    expect([0, 1, 2, 3].map((l) => cache.length(l))).toEqual([0, 0, 0, 0]);
    expect(cache.bytesUsed()).toBe(0);
    expect(cache.bytesAllocated()).toBe(allocated);
    cache.append(1, rows(5, 0, 1, 6), rows(6, 0, 1, 6));
    expect(Array.from(cache.view(1).k)).toEqual(Array.from(rows(5, 0, 1, 6)));
  });
});
