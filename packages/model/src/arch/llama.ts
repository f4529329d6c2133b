/** Llama (and LayerSkip / Llama-3.x): RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU MLP. */
import type { ModelConfig } from '../config.js';
import type { GraphBuilder } from '../onnx/builder.js';
import { applyRope, attention, type Architecture, type WeightSource } from './common.js';

export function llamaArchitecture(cfg: ModelConfig, w: WeightSource): Architecture {
  const d = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const p = (l: number) => `model.layers.${l}`;
  const headName = cfg.tieWordEmbeddings || !w.tensors.has('lm_head.weight') ? 'model.embed_tokens.weight' : 'lm_head.weight';

  const rmsNorm = (g: GraphBuilder, x: string, weight: string): string => g.rmsNorm(x, weight, cfg.normEps);

  const k = (g: GraphBuilder, l: number) => w.add(g, `${p(l)}.self_attn.k_proj.weight`, [kvDim, d]);
  const v = (g: GraphBuilder, l: number) => w.add(g, `${p(l)}.self_attn.v_proj.weight`, [kvDim, d]);

  return {
    requiredTensors() {
      const t = [
        { name: 'model.embed_tokens.weight', shape: [cfg.vocabSize, d] },
        { name: 'model.norm.weight', shape: [d] },
      ];
      if (headName === 'lm_head.weight') t.push({ name: 'lm_head.weight', shape: [cfg.vocabSize, d] });
      for (let l = 0; l < cfg.numLayers; l++) {
        t.push(
          { name: `${p(l)}.input_layernorm.weight`, shape: [d] },
          { name: `${p(l)}.post_attention_layernorm.weight`, shape: [d] },
          { name: `${p(l)}.self_attn.q_proj.weight`, shape: [qDim, d] },
          { name: `${p(l)}.self_attn.k_proj.weight`, shape: [kvDim, d] },
          { name: `${p(l)}.self_attn.v_proj.weight`, shape: [kvDim, d] },
          { name: `${p(l)}.self_attn.o_proj.weight`, shape: [d, qDim] },
          { name: `${p(l)}.mlp.gate_proj.weight`, shape: [cfg.intermediateSize, d] },
          { name: `${p(l)}.mlp.up_proj.weight`, shape: [cfg.intermediateSize, d] },
          { name: `${p(l)}.mlp.down_proj.weight`, shape: [d, cfg.intermediateSize] },
        );
      }
      return t;
    },
    embeddingTables: { tokens: 'model.embed_tokens.weight' },
    embed(ctx, ids) {
      return ctx.g.gather(w.add(ctx.g, 'model.embed_tokens.weight', [cfg.vocabSize, d]), ids);
    },
    block(ctx, l, hidden, pastK, pastV) {
      const { g } = ctx;
      const x = rmsNorm(g, hidden, w.add(g, `${p(l)}.input_layernorm.weight`, [d]));
      // Q, K and V in one matmul, as rows [1, n, q + 2·kv] for RoPE and attention.
      const q = w.add(g, `${p(l)}.self_attn.q_proj.weight`, [qDim, d]);
      const [qRows, kRows, newV] = g.split(g.unsqueeze(g.linearsT(x, [q, k(g, l), v(g, l)]), [0]), 2, [qDim, kvDim, kvDim]);
      const newK = applyRope(ctx, kRows, cfg.numKvHeads);
      const attn = attention(ctx, l, applyRope(ctx, qRows, cfg.numHeads), pastK, pastV, newK, newV, 1 / Math.sqrt(cfg.headDim));
      const h1 = g.add(hidden, g.linearT(attn, w.add(g, `${p(l)}.self_attn.o_proj.weight`, [d, qDim])));
      const x2 = rmsNorm(g, h1, w.add(g, `${p(l)}.post_attention_layernorm.weight`, [d]));
      const gateUp = g.linearsT(x2, [
        w.add(g, `${p(l)}.mlp.gate_proj.weight`, [cfg.intermediateSize, d]),
        w.add(g, `${p(l)}.mlp.up_proj.weight`, [cfg.intermediateSize, d]),
      ]);
      const [gate, up] = g.split(gateUp, 1, [cfg.intermediateSize, cfg.intermediateSize]);
      const act = g.mul(g.mul(gate, g.sigmoid(gate)), up);
      const down = g.linearT(act, w.add(g, `${p(l)}.mlp.down_proj.weight`, [d, cfg.intermediateSize]));
      return { hidden: g.add(h1, down), newK, newV };
    },
    keyValues(ctx, l, hidden) {
      const { g } = ctx;
      const x = rmsNorm(g, hidden, w.add(g, `${p(l)}.input_layernorm.weight`, [d]));
      const [kRows, newV] = g.split(g.unsqueeze(g.linearsT(x, [k(g, l), v(g, l)]), [0]), 2, [kvDim, kvDim]);
      return { newK: applyRope(ctx, kRows, cfg.numKvHeads), newV };
    },
    finalNorm(ctx, hidden) {
      return rmsNorm(ctx.g, hidden, w.add(ctx.g, 'model.norm.weight', [d]));
    },
    lmHead(ctx, normed) {
      return ctx.g.linearT(normed, w.add(ctx.g, headName, [cfg.vocabSize, d]));
    },
  };
}
