/**
 * GPT-Neo: alternating global / local (windowed) attention, no 1/√headDim score scaling, q/k/v without
 * bias, nn.Linear [out, in] weights, learned positions, gelu_new.
 */
import type { ModelConfig } from '../config.js';
import { attention, geluNew, type Architecture, type StageContext, type WeightSource } from './common.js';

export function gptNeoArchitecture(cfg: ModelConfig, w: WeightSource): Architecture {
  const d = cfg.hiddenSize;
  const ff = cfg.intermediateSize;
  const p = (l: number) => `transformer.h.${l}`;

  const ln = (ctx: StageContext, x: string, name: string) =>
    ctx.g.layerNorm(x, w.add(ctx.g, `${name}.weight`, [d]), w.add(ctx.g, `${name}.bias`, [d]), cfg.normEps);
  const linear = (ctx: StageContext, x: string, name: string, outDim: number, inDim: number, bias: boolean) =>
    ctx.g.linearT(x, w.add(ctx.g, `${name}.weight`, [outDim, inDim]), bias ? w.add(ctx.g, `${name}.bias`, [outDim]) : undefined);
  const heads = (ctx: StageContext, x: string) => ctx.g.unsqueeze(x, [0]);
  const kv = (ctx: StageContext, l: number, x: string) => ({
    newK: heads(ctx, linear(ctx, x, `${p(l)}.attn.attention.k_proj`, d, d, false)),
    newV: heads(ctx, linear(ctx, x, `${p(l)}.attn.attention.v_proj`, d, d, false)),
  });

  return {
    requiredTensors() {
      const t = [
        { name: 'transformer.wte.weight', shape: [cfg.vocabSize, d] },
        { name: 'transformer.wpe.weight', shape: [cfg.maxPositions, d] },
        { name: 'transformer.ln_f.weight', shape: [d] },
        { name: 'transformer.ln_f.bias', shape: [d] },
      ];
      for (let l = 0; l < cfg.numLayers; l++) {
        for (const n of ['ln_1', 'ln_2']) t.push({ name: `${p(l)}.${n}.weight`, shape: [d] }, { name: `${p(l)}.${n}.bias`, shape: [d] });
        for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) t.push({ name: `${p(l)}.attn.attention.${n}.weight`, shape: [d, d] });
        t.push(
          { name: `${p(l)}.attn.attention.out_proj.bias`, shape: [d] },
          { name: `${p(l)}.mlp.c_fc.weight`, shape: [ff, d] },
          { name: `${p(l)}.mlp.c_fc.bias`, shape: [ff] },
          { name: `${p(l)}.mlp.c_proj.weight`, shape: [d, ff] },
          { name: `${p(l)}.mlp.c_proj.bias`, shape: [d] },
        );
      }
      return t;
    },
    embeddingTables: { tokens: 'transformer.wte.weight', positions: 'transformer.wpe.weight' },
    embed(ctx, ids) {
      const { g } = ctx;
      const tokens = g.gather(w.add(g, 'transformer.wte.weight', [cfg.vocabSize, d]), ids);
      return g.add(tokens, g.gather(w.add(g, 'transformer.wpe.weight', [cfg.maxPositions, d]), ctx.positions));
    },
    block(ctx, l, hidden, pastK, pastV) {
      const { g } = ctx;
      const x = ln(ctx, hidden, `${p(l)}.ln_1`);
      const q = heads(ctx, linear(ctx, x, `${p(l)}.attn.attention.q_proj`, d, d, false));
      const { newK, newV } = kv(ctx, l, x);
      // GPT-Neo does not scale scores by 1/√headDim.
      const attn = attention(ctx, l, q, pastK, pastV, newK, newV, 1);
      const h1 = g.add(hidden, linear(ctx, attn, `${p(l)}.attn.attention.out_proj`, d, d, true));
      const x2 = ln(ctx, h1, `${p(l)}.ln_2`);
      const mlp = linear(ctx, geluNew(g, linear(ctx, x2, `${p(l)}.mlp.c_fc`, ff, d, true)), `${p(l)}.mlp.c_proj`, d, ff, true);
      return { hidden: g.add(h1, mlp), newK, newV };
    },
    keyValues(ctx, l, hidden) {
      return kv(ctx, l, ln(ctx, hidden, `${p(l)}.ln_1`));
    },
    finalNorm(ctx, hidden) {
      return ln(ctx, hidden, 'transformer.ln_f');
    },
    lmHead(ctx, normed) {
      return ctx.g.linearT(normed, w.add(ctx.g, 'transformer.wte.weight', [cfg.vocabSize, d]));
    },
  };
}
