/**
 * KvCache sizes are bounded before anything is allocated: absurd, negative, fractional or non-numeric shapes are
 * CacheError KV_OPTIONS at construction and growth past KV_MAX_BYTES is KV_CAPACITY, never a RangeError, an
 * out-of-memory abort or a loop over a billion layers.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CacheError, KV_MAX_BYTES, KV_MAX_LAYERS, KvCache, type KvCacheOptions } from '@mexit/core';

const SHAPE = { numLayers: 2, kvHeads: 2, headDim: 4 };

function cacheError(fn: () => unknown): CacheError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CacheError);
    return error as CacheError;
  }
  throw new Error('expected a CacheError');
}

describe('KvCache construction bounds', () => {
  it('huge layer counts, heads, head sizes and capacities: KV_OPTIONS naming the field, before allocating', () => {
    const cases: [Partial<KvCacheOptions>, RegExp][] = [
      [{ numLayers: 1e8 }, /numLayers must be at most 1024/],
      [{ numLayers: KV_MAX_LAYERS + 1 }, /numLayers/],
      [{ kvHeads: 1e9, headDim: 1e9 }, /KV_MAX_BYTES/],
      [{ headDim: 2 ** 40 }, /KV_MAX_BYTES/],
      [{ initialCapacity: 1e9 }, /KV_MAX_BYTES/],
      [{ initialCapacity: 2 ** 53 }, /KV_MAX_BYTES/],
      [{ numLayers: KV_MAX_LAYERS, kvHeads: 64, headDim: 256, initialCapacity: 1024 }, /KV_MAX_BYTES/],
    ];
    for (const [change, message] of cases) {
      const error = cacheError(() => new KvCache({ ...SHAPE, ...change }));
      expect(error.code, JSON.stringify(change)).toBe('KV_OPTIONS');
      expect(error.message).toMatch(message);
    }
  });

  it('the limits themselves are usable: KV_MAX_LAYERS layers, an unbounded maxCapacity', () => {
    const cache = new KvCache({ numLayers: KV_MAX_LAYERS, kvHeads: 1, headDim: 1, initialCapacity: 1 });
    expect(cache.numLayers).toBe(KV_MAX_LAYERS);
    expect(new KvCache({ ...SHAPE, maxCapacity: 2 ** 53 }).capacity).toBe(256);
  });

  it('property: any hostile value of any field is a CacheError or a cache within the byte limit', () => {
    const hostile = fc.oneof(
      fc.constantFrom(0, -1, -0, 0.5, 1.5, Number.NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, 1e9, 1e15, 1e300),
      fc.integer({ min: 1, max: 64 }),
      fc.double({ noInteger: true }),
      fc.string({ maxLength: 4 }),
      fc.constantFrom(null, true, [], {}, '4', [4], 4n),
    );
    const field = fc.constantFrom('numLayers', 'kvHeads', 'headDim', 'initialCapacity', 'maxCapacity');
    fc.assert(
      fc.property(fc.array(fc.tuple(field, hostile), { minLength: 1, maxLength: 3 }), (changes) => {
        const options: Record<string, unknown> = { ...SHAPE, initialCapacity: 4 };
        for (const [name, value] of changes) options[name] = value;
        let cache: KvCache;
        try {
          cache = new KvCache(options as unknown as KvCacheOptions);
        } catch (error) {
          expect(error).toBeInstanceOf(CacheError);
          expect((error as CacheError).code).toBe('KV_OPTIONS');
          return;
        }
        expect(cache.bytesAllocated()).toBeLessThanOrEqual(KV_MAX_BYTES);
        expect(Number.isInteger(cache.rowSize) && cache.rowSize > 0).toBe(true);
      }),
      { seed: 1, numRuns: 400 },
    );
  });

  it('options that are not an object', () => {
    for (const options of [undefined, null, 5, 'x']) {
      expect(cacheError(() => new KvCache(options as unknown as KvCacheOptions)).code).toBe('KV_OPTIONS');
    }
  });
});

describe('KvCache growth bounds', () => {
  it('appending past the byte limit is KV_CAPACITY, checked before the larger arrays are allocated', () => {
    // 1024 layers of 1-float rows: 8 KiB per row over all layers, so KV_MAX_BYTES holds 2^21 rows.
    const cache = new KvCache({ numLayers: KV_MAX_LAYERS, kvHeads: 1, headDim: 1, initialCapacity: 1 });
    const limitRows = KV_MAX_BYTES / (KV_MAX_LAYERS * 8);
    expect(limitRows).toBe(2 ** 21);
    const rows = new Float32Array(limitRows + 1);
    const error = cacheError(() => cache.append(0, rows, rows));
    expect(error.code).toBe('KV_CAPACITY');
    expect(error.message).toMatch(new RegExp(`needs ${limitRows + 1} rows.*KV_MAX_BYTES`));
    expect([cache.capacity, cache.length(0)]).toEqual([1, 0]);
    // Below the limit it still grows geometrically.
    cache.append(0, new Float32Array(3), new Float32Array(3));
    expect(cache.capacity).toBe(3);
  });
});
