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
  constructor(
    readonly tensors: TensorMap,
    readonly dir: string,
  ) {}

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
  /** Additive attention mask [n, T] for a layer (global causal, or GPT-Neo's local window); '' = none needed. */
  mask(layer: number): string;
  /** RoPE tables [1, n, headDim/2] (llama only). */
  rope(): { cos: string; sin: string };
}

/**
 * Builds the stage context. `pastLength` is an int64 [1] value (cache rows before this call) and
 * `numNew` an int64 [1] value (rows in this call).
 */
export function createStageContext(g: GraphBuilder, cfg: ModelConfig, w: WeightSource, pastLength: string, numNew: string): StageContext {
  const total = g.add(pastLength, numNew);
  const positions = g.range(g.squeeze(pastLength, [0]), g.squeeze(total, [0]), g.constI64([1], []));
  let rope: { cos: string; sin: string } | undefined;
  return {
    g,
    cfg,
    w,
    positions,
    mask: maskBuilder(
      g,
      cfg,
      () => positions,
      () => total,
      false,
    ),
    rope: () => (rope ??= ropeTables(g, cfg, positions)),
  };
}

/**
 * Contexts for the passes of a chain stage (stages.ts): pass 0 feeds `numNew` rows after `pastLength`,
 * each later pass one row. One position range and one RoPE table serve all passes (a pass slices its
 * rows from the end), and a one-row pass is the newest position, so it sees every key: its global
 * attention layers need no mask. This keeps a pass's fixed work to its layers.
 */
export function createChainContexts(
  g: GraphBuilder,
  cfg: ModelConfig,
  w: WeightSource,
  pastLength: string,
  numNew: string,
  passes: number,
): StageContext[] {
  const firstTotal = g.add(pastLength, numNew);
  const allTotal = passes > 1 ? g.add(firstTotal, g.constI64([passes - 1])) : firstTotal;
  const all = g.range(g.squeeze(pastLength, [0]), g.squeeze(allTotal, [0]), g.constI64([1], []));
  let allRope: { cos: string; sin: string } | undefined;
  return Array.from({ length: passes }, (_, pass) => {
    // Rows of `all` for this pass, counted from the end: pass 0 = [0, −(passes − 1)), pass p = [p − passes, p − passes + 1).
    const from = pass === 0 ? 0 : pass - passes;
    const to = pass === passes - 1 ? undefined : pass === 0 ? 1 - passes : pass - passes + 1;
    const rows = (x: string, axis: number) => (passes === 1 ? x : g.slice(x, axis, from, to));
    let positions: string | undefined;
    let rope: { cos: string; sin: string } | undefined;
    const context: StageContext = {
      g,
      cfg,
      w,
      get positions() {
        positions ??= rows(all, 0);
        return positions;
      },
      mask: maskBuilder(
        g,
        cfg,
        () => context.positions,
        () => (pass === 0 ? firstTotal : g.add(firstTotal, g.constI64([pass]))),
        pass > 0,
      ),
      rope() {
        if (!rope) {
          allRope ??= ropeTables(g, cfg, all);
          rope = { cos: rows(allRope.cos, 1), sin: rows(allRope.sin, 1) };
        }
        return rope;
      },
    };
    return context;
  });
}

/**
 * Additive attention masks [n, T] for queries at `positions` over keys 0 .. total − 1, one per kind
 * (global causal, or GPT-Neo's local window), built on first use. `singleNewest`: the queries are one row
 * at the newest position, which every global key precedes, so global layers get no mask ('').
 */
function maskBuilder(
  g: GraphBuilder,
  cfg: ModelConfig,
  positions: () => string,
  total: () => string,
  singleNewest: boolean,
): (layer: number) => string {
  const masks = new Map<string, string>();
  return (layer) => {
    const kind = cfg.attentionLayers?.[layer] ?? 'global';
    if (kind === 'global' && singleNewest) return '';
    let m = masks.get(kind);
    if (!m) {
      const keyPositions = g.range(g.constI64([0], []), g.squeeze(total(), [0]), g.constI64([1], []));
      const queryColumn = g.unsqueeze(positions(), [1]); // [n, 1]
      const keyRow = g.unsqueeze(keyPositions, [0]); // [1, T]
      let masked = g.greater(keyRow, queryColumn); // future keys
      if (kind === 'local') {
        // GPT-Neo local attention: query i sees keys j with i − window < j ≤ i.
        const oldest = g.sub(queryColumn, g.constI64([cfg.windowSize! - 1], [1, 1]));
        masked = g.or(masked, g.less(keyRow, oldest));
      }
      m = g.where(masked, g.constF32([MASK_VALUE], []), g.constF32([0], []));
      masks.set(kind, m);
    }
    return m;
  };
}

/** RoPE tables [1, n, headDim/2] for int64 `positions` [n]. */
function ropeTables(g: GraphBuilder, cfg: ModelConfig, positions: string): { cos: string; sin: string } {
  const invFreq = Array.from(cfg.rope!.invFreq);
  const posF = g.unsqueeze(g.cast(positions, OnnxType.FLOAT), [1]); // [n, 1]
  const freqs = g.unsqueeze(g.mul(posF, g.constF32(invFreq, [1, invFreq.length])), [0]); // [1, n, d/2]
  return { cos: g.cos(freqs), sin: g.sin(freqs) };
}

/** HF rotate-half RoPE on rows x [1, n, heads·headDim]. */
export function applyRope(ctx: StageContext, x: string, numHeads: number): string {
  const { cos, sin } = ctx.rope();
  return ctx.g.op('RotaryEmbedding', [x, cos, sin], { interleaved: attr.int(0), num_heads: attr.int(numHeads) });
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
  /** The input embedding as tables: hidden = tokens[id] (+ positions[position]); what embed() computes in a graph. */
  embeddingTables: { tokens: string; positions?: string };
  embed(ctx: StageContext, ids: string): string;
  block(ctx: StageContext, layer: number, hidden: string, pastK: string, pastV: string): BlockOutput;
  /** K/V rows of `layer` computed from a hidden state without running attention (CALM state propagation). */
  keyValues(ctx: StageContext, layer: number, hidden: string): { newK: string; newV: string };
  finalNorm(ctx: StageContext, hidden: string): string;
  /** The model's own output projection on normed rows [m, hidden] → [m, vocab]. */
  lmHead(ctx: StageContext, normed: string): string;
}
