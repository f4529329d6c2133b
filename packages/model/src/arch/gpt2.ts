/** GPT-2 (and IBM multi-exit GPT-2): pre-LN blocks, Conv1D [in, out] weights, learned positions, gelu_new. */
import type { ModelConfig } from '../config.js';
import { attention, geluNew, type Architecture, type StageContext, type WeightSource } from './common.js';

export function gpt2Architecture(cfg: ModelConfig, w: WeightSource): Architecture {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  // Some checkpoints (the original `gpt2`) store names without the `transformer.` prefix.
  const pre = w.tensors.has('transformer.wte.weight') || !w.tensors.has('wte.weight') ? 'transformer.' : '';
  const p = (l: number) => `${pre}h.${l}`;

  const ln = (ctx: StageContext, x: string, name: string) =>
    ctx.g.layerNorm(x, w.add(ctx.g, `${name}.weight`, [d]), w.add(ctx.g, `${name}.bias`, [d]), cfg.normEps);
  const conv1d = (ctx: StageContext, x: string, name: string, inDim: number, outDim: number) =>
    ctx.g.add(ctx.g.matmul(x, w.add(ctx.g, `${name}.weight`, [inDim, outDim])), w.add(ctx.g, `${name}.bias`, [outDim]));
  const qkv = (ctx: StageContext, l: number, hidden: string) => {
    const { g } = ctx;
    const packed = conv1d(ctx, ln(ctx, hidden, `${p(l)}.ln_1`), `${p(l)}.attn.c_attn`, d, 3 * d);
    const heads = (part: number) => g.unsqueeze(g.slice(packed, 1, part * d, (part + 1) * d), [0]);
    return { q: heads(0), k: heads(1), v: heads(2) };
  };

  return {
    requiredTensors() {
      const t = [
        { name: `${pre}wte.weight`, shape: [cfg.vocabSize, d] },
        { name: `${pre}wpe.weight`, shape: [cfg.maxPositions, d] },
        { name: `${pre}ln_f.weight`, shape: [d] },
        { name: `${pre}ln_f.bias`, shape: [d] },
      ];
      for (let l = 0; l < cfg.numLayers; l++) {
        for (const n of ['ln_1', 'ln_2']) t.push({ name: `${p(l)}.${n}.weight`, shape: [d] }, { name: `${p(l)}.${n}.bias`, shape: [d] });
        t.push(
          { name: `${p(l)}.attn.c_attn.weight`, shape: [d, 3 * d] },
          { name: `${p(l)}.attn.c_attn.bias`, shape: [3 * d] },
          { name: `${p(l)}.attn.c_proj.weight`, shape: [d, d] },
          { name: `${p(l)}.attn.c_proj.bias`, shape: [d] },
          { name: `${p(l)}.mlp.c_fc.weight`, shape: [d, ff] },
          { name: `${p(l)}.mlp.c_fc.bias`, shape: [ff] },
          { name: `${p(l)}.mlp.c_proj.weight`, shape: [ff, d] },
          { name: `${p(l)}.mlp.c_proj.bias`, shape: [d] },
        );
      }
      return t;
    },
    embeddingTables: { tokens: `${pre}wte.weight`, positions: `${pre}wpe.weight` },
    embed(ctx, ids) {
      const { g } = ctx;
      const tokens = g.gather(w.add(g, `${pre}wte.weight`, [cfg.vocabSize, d]), ids);
      return g.add(tokens, g.gather(w.add(g, `${pre}wpe.weight`, [cfg.maxPositions, d]), ctx.positions));
    },
    block(ctx, l, hidden, pastK, pastV) {
      const { g } = ctx;
      const { q, k, v } = qkv(ctx, l, hidden);
      const attn = attention(ctx, l, q, pastK, pastV, k, v, 1 / Math.sqrt(cfg.headDim));
      const h1 = g.add(hidden, conv1d(ctx, attn, `${p(l)}.attn.c_proj`, d, d));
      const mlp = conv1d(ctx, geluNew(g, conv1d(ctx, ln(ctx, h1, `${p(l)}.ln_2`), `${p(l)}.mlp.c_fc`, d, ff)), `${p(l)}.mlp.c_proj`, ff, d);
      return { hidden: g.add(h1, mlp), newK: k, newV: v };
    },
    keyValues(ctx, l, hidden) {
      const { k, v } = qkv(ctx, l, hidden);
      return { newK: k, newV: v };
    },
    finalNorm(ctx, hidden) {
      return ln(ctx, hidden, `${pre}ln_f`);
    },
    lmHead(ctx, normed) {
      return ctx.g.linearT(normed, w.add(ctx.g, `${pre}wte.weight`, [cfg.vocabSize, d]));
    },
  };
}
