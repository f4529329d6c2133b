/**
 * GraphBuilder's fusions against their unfused form: joined linear layers (linearsT) and the residual
 * add + RMSNorm pair (SkipSimplifiedLayerNormalization). The goldens test the whole models against HF;
 * these pin each fusion on its own, with random data, and check when it must not apply.
 */
import { describe, expect, it } from 'vitest';
import ort from 'onnxruntime-node';
import { GraphBuilder, OnnxType, type LinearQuantization } from '@mexit/model/onnx';

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

async function run(
  g: GraphBuilder,
  feeds: Record<string, Float32Array>,
  dims: Record<string, number[]>,
): Promise<Record<string, Float32Array>> {
  const bytes = g.toBytes();
  const session = await ort.InferenceSession.create(bytes, { externalData: g.externalData, executionProviders: ['cpu'] });
  const inputs = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new ort.Tensor('float32', v, dims[k])]));
  const out = await session.run(inputs);
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
}

const text = (g: GraphBuilder) => Buffer.from(g.toBytes()).toString('latin1');

describe('GraphBuilder.linearsT', () => {
  for (const quantize of [undefined, 'int8', 'int4'] as (LinearQuantization | undefined)[]) {
    it(`one joined matmul equals the separate layers bit for bit (${quantize ?? 'f32'}, 1 and 5 rows)`, async () => {
      const K = 64;
      const widths = [96, 32, 32];
      const weights = widths.map((n, i) => random(n * K, 11 + i));
      for (const rows of [1, 5]) {
        const build = (joined: boolean) => {
          const g = new GraphBuilder('t', quantize);
          const x = g.input('x', OnnxType.FLOAT, [rows, K]);
          const names = weights.map((w, i) => g.weight(`w${i}`, w, [widths[i], K]));
          const outs = joined ? g.split(g.linearsT(x, names), 1, widths) : names.map((n) => g.linearT(x, n));
          outs.forEach((o, i) => {
            g.output(o, `y${i}`, OnnxType.FLOAT, [rows, widths[i]]);
          });
          return g;
        };
        const x = random(rows * K, 7);
        const separate = await run(build(false), { x }, { x: [rows, K] });
        const joined = await run(build(true), { x }, { x: [rows, K] });
        for (let i = 0; i < widths.length; i++) expect(joined[`y${i}`]).toEqual(separate[`y${i}`]);
      }
    });
  }

  it('rejects weights of different input widths', () => {
    const g = new GraphBuilder('t');
    const x = g.input('x', OnnxType.FLOAT, [1, 8]);
    const a = g.weight('a', random(16, 1), [2, 8]);
    const b = g.weight('b', random(8, 2), [2, 4]);
    expect(() => g.linearsT(x, [a, b])).toThrow(/different input widths/);
  });
});

describe('GraphBuilder: residual add + RMSNorm', () => {
  const d = 32;
  const rows = 3;
  const eps = 1e-5;
  const gamma = random(d, 5).map((v) => 1 + v);

  it('fuses into SkipSimplifiedLayerNormalization; norm and sum match a direct computation', async () => {
    const g = new GraphBuilder('t');
    const a = g.input('a', OnnxType.FLOAT, [rows, d]);
    const b = g.input('b', OnnxType.FLOAT, [rows, d]);
    const sum = g.add(a, b);
    const normed = g.rmsNorm(sum, g.weight('gamma', gamma, [d]), eps);
    g.output(normed, 'normed', OnnxType.FLOAT, [rows, d]);
    g.output(g.mul(sum, sum), 'sum_sq', OnnxType.FLOAT, [rows, d]); // the sum is still read after the norm
    const av = random(rows * d, 1);
    const bv = random(rows * d, 2);
    const fused = text(g);
    expect(fused).toContain('SkipSimplifiedLayerNormalization');
    expect(fused).not.toContain('RMSNormalization');
    const out = await run(g, { a: av, b: bv }, { a: [rows, d], b: [rows, d] });
    for (let r = 0; r < rows; r++) {
      let ms = 0;
      for (let j = 0; j < d; j++) ms += (av[r * d + j] + bv[r * d + j]) ** 2;
      const inv = 1 / Math.sqrt(ms / d + eps);
      for (let j = 0; j < d; j++) {
        const s = Math.fround(av[r * d + j] + bv[r * d + j]);
        expect(out.normed[r * d + j]).toBeCloseTo(s * inv * gamma[j], 5);
        expect(out.sum_sq[r * d + j]).toBe(Math.fround(s * s));
      }
    }
  });

  it('leaves an add with a constant operand (which could broadcast) unfused', () => {
    const g = new GraphBuilder('t');
    const a = g.input('a', OnnxType.FLOAT, [rows, d]);
    const normed = g.rmsNorm(g.add(a, g.constF32([1], [])), g.weight('gamma', gamma, [d]), eps);
    g.output(normed, 'normed', OnnxType.FLOAT, [rows, d]);
    const graph = text(g);
    expect(graph).not.toContain('SkipSimplifiedLayerNormalization');
    expect(graph).toContain('RMSNormalization');
  });
});
