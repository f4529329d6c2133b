/** mulberry32: a tiny seeded PRNG owned by the tests (independent of the engine's Rng). */
export function prng(seed: number): { float(): number; int(lo: number, hi: number): number } {
  let a = seed >>> 0;
  const float = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { float, int: (lo, hi) => lo + Math.floor(float() * (hi - lo + 1)) };
}
