/**
 * Pieces shared by the architectures: the per-stage context (positions, masks, RoPE tables), attention
 * over "cache prefix + new rows", and weight access with shape checks.
 */
import { CheckpointError, type TensorMap } from '@mexit/core';
import { OnnxType } from '../onnx/encoder.js';
import { attr, type GraphBuilder } from '../onnx/builder.js';
import type { ModelConfig } from '../config.js';

/** Float32 finfo.min, as HF uses for masked attention scores. */
const MASK_VALUE = -3.4028234663852886e38;

/** Reads checkpoint tensors into a graph, checking shapes and embedding each one once per graph. */
export class WeightSource {
  constructor(readonly tensors: TensorMap, readonly dir: string) {}

  /** Throws a CheckpointError naming the tensor if it is absent or has another shape. */
  check(name: string, shape: readonly number[]): void {
    if (!this.tensors.has(name)) {
      throw new CheckpointError('TENSOR_MISSING', `tensor "${name}" is missing from the checkpoint in ${this.dir}`);
    }
    const info = this.tensors.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(
        'TENSOR_SHAPE',
        `tensor "${name}" in ${info.file} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`,
      );
    }
  }

  /**
   * Adds tensor `name` as an initializer of `g` (once) and returns its graph name. Read fresh per graph,
   * not cached: ORT copies initializers into each session (the Node binding cannot share them), so a
   * JS-side cache would only hold one more copy.
   */
  add(g: GraphBuilder, name: string, shape: readonly number[]): string {
    if (g.hasWeight(name)) return name;
    this.check(name, shape);
    return g.weight(name, this.tensors.getF32(name), shape);
  }
}

/** Values computed once per stage graph and shared by all of its layers. */
export interface StageContext {
  g: GraphBuilder;
  cfg: ModelConfig;
  w: WeightSource;
  /** int64 [n]: absolute positions of the new rows (cache length .. cache length + n − 1). */
  positions: string;
  /** Additive attention mask [n, T] for a layer (global causal, or GPT-Neo's local window). */
  mask(layer: number): string;
  /** RoPE tables [1, n, headDim/2] (llama only). */
  rope(): { cos: string; sin: string };
}

/**
 * Builds the stage context. `pastLength` is an int64 [1] value (cache rows before this call) and
 * `numNew` an int64 [1] value (rows in this call).
 */
export function createStageContext(
  g: GraphBuilder,
  cfg: ModelConfig,
  w: WeightSource,
  pastLength: string,
  numNew: string,
): StageContext {
  const start = g.squeeze(pastLength, [0]);
  const total = g.add(pastLength, numNew);
  const positions = g.range(start, g.squeeze(total, [0]), g.constI64([1], []));
  const masks = new Map<string, string>();
  let rope: { cos: string; sin: string } | undefined;

  const buildMask = (kind: 'global' | 'local'): string => {
    const keyPositions = g.range(g.constI64([0], []), g.squeeze(total, [0]), g.constI64([1], []));
    const queryColumn = g.unsqueeze(positions, [1]); // [n, 1]
    const keyRow = g.unsqueeze(keyPositions, [0]); // [1, T]
    let masked = g.greater(keyRow, queryColumn); // future keys
    if (kind === 'local') {
      // GPT-Neo local attention: query i sees keys j with i − window < j ≤ i.
      const oldest = g.sub(queryColumn, g.constI64([cfg.windowSize! - 1], [1, 1]));
      masked = g.or(masked, g.less(keyRow, oldest));
    }
    return g.where(masked, g.constF32([MASK_VALUE], []), g.constF32([0], []));
  };

  return {
    g,
    cfg,
    w,
    positions,
    mask(layer: number): string {
      const kind = cfg.attentionLayers?.[layer] ?? 'global';
      let m = masks.get(kind);
      if (!m) {
        m = buildMask(kind);
        masks.set(kind, m);
      }
      return m;
    },
    rope() {
      if (!rope) {
        const invFreq = Array.from(cfg.rope!.invFreq);
        const posF = g.unsqueeze(g.cast(positions, OnnxType.FLOAT), [1]); // [n, 1]
        const freqs = g.unsqueeze(g.mul(posF, g.constF32(invFreq, [1, invFreq.length])), [0]); // [1, n, d/2]
        rope = { cos: g.cos(freqs), sin: g.sin(freqs) };
      }
      return rope;
    },
  };
}

/** HF rotate-half RoPE on rows x [n, heads·headDim]; returns [1, n, heads·headDim]. */
export function applyRope(ctx: StageContext, x: string, numHeads: number): string {
  const { cos, sin } = ctx.rope();
  return ctx.g.op('RotaryEmbedding', [ctx.g.unsqueeze(x, [0]), cos, sin], { interleaved: attr.int(0), num_heads: attr.int(numHeads) });
}

/**
 * Attention of new queries q [1, n, heads·headDim] over the cache prefix plus the new rows:
 * pastK/pastV [1, P, kvHeads·headDim] and newK/newV [1, n, kvHeads·headDim]. Query head h reads kv head
 * ⌊h / groups⌋ (HF repeat_kv); opset-23 Attention does the grouping. Returns [n, heads·headDim].
 */
export function attention(
  ctx: StageContext,
  layer: number,
  q: string,
  pastK: string,
  pastV: string,
  newK: string,
  newV: string,
  scale: number,
): string {
  const { g, cfg } = ctx;
  const kvWidth = cfg.numKvHeads * cfg.headDim;
  const keys = g.concat([pastK, newK], 1);
  const values = g.concat([pastV, newV], 1);
  const out = g.op('Attention', [q, keys, values, ctx.mask(layer)], {
    q_num_heads: attr.int(cfg.numHeads),
    kv_num_heads: attr.int(cfg.numKvHeads),
    scale: attr.float(scale),
  });
  return g.reshape(out, [-1, cfg.numHeads * cfg.headDim]);
}

/** HF `gelu_new`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function geluNew(g: GraphBuilder, x: string): string {
  const cube = g.mul(g.mul(x, x), x);
  const inner = g.mul(g.add(x, g.mul(cube, g.constF32([0.044715], []))), g.constF32([Math.sqrt(2 / Math.PI)], []));
  return g.mul(g.mul(x, g.constF32([0.5], [])), g.add(g.tanh(inner), g.constF32([1], [])));
}

/** One transformer block's outputs: the new residual stream and this call's K/V rows [1, n, kvHeads·headDim]. */
export interface BlockOutput {
  hidden: string;
  newK: string;
  newV: string;
}

/** What every architecture provides to the stage builder. */
export interface Architecture {
  /** Tensor names and shapes a checkpoint must hold (validated before any graph is built). */
  requiredTensors(): { name: string; shape: number[] }[];
  embed(ctx: StageContext, ids: string): string;
  block(ctx: StageContext, layer: number, hidden: string, pastK: string, pastV: string): BlockOutput;
  /** K/V rows of `layer` computed from a hidden state without running attention (CALM state propagation). */
  keyValues(ctx: StageContext, layer: number, hidden: string): { newK: string; newV: string };
  finalNorm(ctx: StageContext, hidden: string): string;
  /** The model's own output projection on normed rows [m, hidden] → [m, vocab]. */
  lmHead(ctx: StageContext, normed: string): string;
}
