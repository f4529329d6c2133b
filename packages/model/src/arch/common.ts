/**
 * Pieces shared by the architectures: the per-stage context (positions, masks, RoPE tables), attention
 * over "cache prefix + new rows", and weight access with shape checks.
 */
import { CheckpointError, type TensorMap } from '@mexit/core';
import { OnnxType } from '../onnx/encoder.js';
import type { GraphBuilder } from '../onnx/builder.js';
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

  /** Adds tensor `name` as an initializer of `g` (once) and returns its graph name. */
  add(g: GraphBuilder, name: string, shape: readonly number[]): string {
    if (g.hasWeight(name)) return name;
    this.check(name, shape);
    return g.weight(name, this.tensors.getF32(name), shape);
  }

  /** Adds a [in, out] matrix built by transposing the checkpoint's [out, in] tensor. */
  addTransposed(g: GraphBuilder, name: string, outDim: number, inDim: number): string {
    const graphName = `${name}.T`;
    if (g.hasWeight(graphName)) return graphName;
    this.check(name, [outDim, inDim]);
    const w = this.tensors.getF32(name);
    const t = new Float32Array(w.length);
    for (let o = 0; o < outDim; o++) for (let i = 0; i < inDim; i++) t[i * outDim + o] = w[o * inDim + i];
    return g.weight(graphName, t, [inDim, outDim]);
  }
}

/** Values computed once per stage graph and shared by all of its layers. */
export interface StageContext {
  g: GraphBuilder;
  cfg: ModelConfig;
  w: WeightSource;
  /** int64 [n]: absolute positions of the new rows (cache length .. cache length + n − 1). */
  positions: string;
  /** Additive attention mask [groups·n, T] for a layer (global causal or GPT-Neo local window). */
  mask(layer: number): string;
  /** RoPE tables [n, 1, headDim] (llama only). */
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
  const groups = cfg.numHeads / cfg.numKvHeads;
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
    let additive = g.where(masked, g.constF32([MASK_VALUE], []), g.constF32([0], []));
    // Scores are laid out [kvHeads, groups·n, T]: repeat the mask once per query group.
    if (groups > 1) additive = g.op('Tile', [additive, g.constI64([groups, 1])]);
    return additive;
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
        const freqs = g.mul(posF, g.constF32(invFreq, [1, invFreq.length])); // [n, d/2]
        const emb = g.unsqueeze(g.concat([freqs, freqs], 1), [1]); // [n, 1, d]
        rope = { cos: g.cos(emb), sin: g.sin(emb) };
      }
      return rope;
    },
  };
}

/** HF rotate-half RoPE on x [n, heads, headDim]. */
export function applyRope(ctx: StageContext, x: string): string {
  const { g } = ctx;
  const half = ctx.cfg.headDim / 2;
  const { cos, sin } = ctx.rope();
  const x1 = g.slice(x, 2, 0, half);
  const x2 = g.slice(x, 2, half);
  const rotated = g.concat([g.neg(x2), x1], 2);
  return g.add(g.mul(x, cos), g.mul(rotated, sin));
}

/**
 * Scaled dot-product attention of new queries q [n, heads, headDim] over keys/values
 * [T, kvHeads, headDim] (cache prefix + new rows). Query head h reads kv head ⌊h / groups⌋ (HF repeat_kv).
 * Returns [n, heads·headDim].
 */
export function attention(
  ctx: StageContext,
  layer: number,
  q: string,
  keys: string,
  values: string,
  scale: number | null,
): string {
  const { g, cfg } = ctx;
  const { numHeads, numKvHeads, headDim } = cfg;
  const groups = numHeads / numKvHeads;
  // [n, H, d] → [kvH, groups·n, d], rows ordered (group, position) to match the tiled mask.
  let qg = g.reshape(q, [0, numKvHeads, groups, headDim]);
  qg = g.transpose(qg, [1, 2, 0, 3]);
  qg = g.reshape(qg, [numKvHeads, -1, headDim]);
  const kT = g.transpose(keys, [1, 2, 0]); // [kvH, d, T]
  let scores = g.matmul(qg, kT); // [kvH, groups·n, T]
  if (scale !== null) scores = g.mul(scores, g.constF32([scale], []));
  const probs = g.softmax(g.add(scores, ctx.mask(layer)), -1);
  const vT = g.transpose(values, [1, 0, 2]); // [kvH, T, d]
  let out = g.matmul(probs, vT); // [kvH, groups·n, d]
  out = g.reshape(out, [numKvHeads, groups, -1, headDim]);
  out = g.transpose(out, [2, 0, 1, 3]); // [n, kvH, groups, d]
  return g.reshape(out, [-1, numHeads * headDim]);
}

/** HF `gelu_new`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function geluNew(g: GraphBuilder, x: string): string {
  const cube = g.mul(g.mul(x, x), x);
  const inner = g.mul(g.add(x, g.mul(cube, g.constF32([0.044715], []))), g.constF32([Math.sqrt(2 / Math.PI)], []));
  return g.mul(g.mul(x, g.constF32([0.5], [])), g.add(g.tanh(inner), g.constF32([1], [])));
}

/** One transformer block's outputs: the new residual stream and this call's K/V rows. */
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
