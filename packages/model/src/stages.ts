/**
 * A stage is one ORT session over a contiguous layer range [from, to) of one model:
 *   inputs   ids [n] (from = 0) or hidden [n, d]; past_k_l / past_v_l [1, P, kvHeads·headDim] per layer
 *            (zero-copy views of the KvCache); logits_start [1] when the stage has exits
 *   outputs  hidden_out [n, d] (raw residual after block `to`); logits_i [n − logits_start, vocab] per
 *            exit; new_k_l / new_v_l [1, n, kvHeads·headDim] — only the new rows, appended to the cache.
 * Returning the whole cache would make ORT copy it on every call; we never do.
 * `propagate` stages compute only K/V of their layers from the input hidden state (CALM state propagation).
 */
import ort from 'onnxruntime-node';
import { CacheError, KvCache, MexitError, OptionsError, formatValue } from '@mexit/core';
import { attr, GraphBuilder, type BlockQuantizer, type LinearQuantization } from './onnx/builder.js';
import { OnnxType } from './onnx/encoder.js';
import { createChainContexts, createStageContext, type Architecture, type WeightSource } from './arch/common.js';
import { buildExit, exitKey, type ExitSpec } from './exits.js';
import { MAX_NUM_SPECULATIONS, type ModelConfig } from './config.js';

export interface StageSpec {
  from: number;
  to: number;
  /** Exits read inside the stage; each layer must lie in [max(from, 1), to]. */
  exits?: ExitSpec[];
  /** K/V-only stage: writes the layers' K/V computed from the input hidden, runs no attention/MLP. */
  propagate?: boolean;
  /**
   * Block-quantized linear layers (MatMulNBits, int8 activations): an approximation of the model, for drafts
   * only. Its K/V rows must not enter a cache that exact stages read.
   */
  quantize?: LinearQuantization;
  /**
   * Greedy draft chain of this many tokens in one call: from = 0, exactly one exit at layer `to`. Pass i
   * feeds pass i−1's argmax (first index on ties, as LogitsWarper.greedy); the last draft is not fed unless
   * `chainFeedsLast`. It saves
   * the per-call cost of ORT and the JS round trip, which dominate a draft step of a small model.
   */
  chain?: number;
  /** Chain stages: also feed the last draft (one more pass, no head), as the verify stage's bonus row needs. */
  chainFeedsLast?: boolean;
  /** A stage from layer 0 that takes hidden rows: the embedding is done outside it (the layered layout's layer 0). */
  hiddenInput?: boolean;
}

export function stageKey(spec: StageSpec): string {
  const exits = (spec.exits ?? []).map(exitKey).join(',');
  return `${spec.propagate ? 'kv' : 'layers'}${spec.hiddenInput ? '(hidden)' : ''}[${spec.from},${spec.to})${exits ? `+${exits}` : ''}${spec.quantize ? `:${spec.quantize}` : ''}${spec.chain ? `×${spec.chain}${spec.chainFeedsLast ? '+fed' : ''}` : ''}`;
}

export interface StageResult {
  /** [n, hiddenSize]: residual stream after block `to` (the input itself for propagate stages). */
  hidden: Float32Array;
  /** One [rows, vocab] array per exit, rows = n − logitsStart. */
  logits: Float32Array[];
}

/**
 * Builds the ONNX graph of a stage. Exported for tests and graph inspection. `quantizer` makes the quantized
 * weights of a `quantize` stage (default quantizeBlocks; the runtime passes its on-disk cache's).
 */
export function buildStageGraph(
  cfg: ModelConfig,
  arch: Architecture,
  w: WeightSource,
  spec: StageSpec,
  quantizer?: BlockQuantizer,
): { bytes: Uint8Array; weightBytes: number; externalData: { path: string; data: Uint8Array }[] } {
  if (spec.chain) return buildChainGraph(cfg, arch, w, spec, quantizer);
  const g = new GraphBuilder(stageKey(spec), spec.quantize, quantizer);
  const { hiddenSize: d, numKvHeads, headDim } = cfg;
  const embeds = spec.from === 0 && !spec.propagate && !spec.hiddenInput;
  const input = embeds ? g.input('ids', OnnxType.INT64, ['n']) : g.input('hidden', OnnxType.FLOAT, ['n', d]);
  const pasts: { k: string; v: string }[] = [];
  for (let l = spec.from; l < spec.to; l++) {
    pasts.push({
      k: g.input(`past_k_${l}`, OnnxType.FLOAT, [1, 'past', numKvHeads * headDim]),
      v: g.input(`past_v_${l}`, OnnxType.FLOAT, [1, 'past', numKvHeads * headDim]),
    });
  }
  const exits = spec.exits ?? [];
  const logitsStart = exits.length ? g.input('logits_start', OnnxType.INT64, [1]) : '';
  const pastLength = pasts.length ? g.slice(g.shape(pasts[0].k), 0, 1, 2) : g.constI64([0]);
  const numNew = g.slice(g.shape(input), 0, 0, 1);
  const ctx = createStageContext(g, cfg, w, pastLength, numNew);

  const exitOutputs = new Map<number, string>();
  const readExits = (layer: number, h: string) => {
    exits.forEach((e, i) => {
      if (e.layer === layer) exitOutputs.set(i, buildExit(ctx, arch, e, g.slice(h, 0, logitsStart)));
    });
  };

  let hidden = embeds ? arch.embed(ctx, input) : input;
  readExits(spec.from, hidden);
  for (let l = spec.from; l < spec.to; l++) {
    let out: { newK: string; newV: string };
    if (spec.propagate) {
      out = arch.keyValues(ctx, l, hidden);
    } else {
      const block = arch.block(ctx, l, hidden, pasts[l - spec.from].k, pasts[l - spec.from].v);
      hidden = block.hidden;
      out = block;
    }
    g.output(out.newK, `new_k_${l}`, OnnxType.FLOAT, [1, 'n', numKvHeads * headDim]);
    g.output(out.newV, `new_v_${l}`, OnnxType.FLOAT, [1, 'n', numKvHeads * headDim]);
    readExits(l + 1, hidden);
  }
  if (!spec.propagate) g.output(hidden, 'hidden_out', OnnxType.FLOAT, ['n', d]);
  exits.forEach((_, i) => {
    g.output(exitOutputs.get(i)!, `logits_${i}`, OnnxType.FLOAT, ['rows', cfg.vocabSize]);
  });
  return { bytes: g.toBytes(), weightBytes: g.weightBytes, externalData: g.externalData };
}

/** The graph of a `chain` stage: `spec.chain` passes over [0, to), each ending in the exit's argmax. */
function buildChainGraph(cfg: ModelConfig, arch: Architecture, w: WeightSource, spec: StageSpec, quantizer?: BlockQuantizer) {
  const g = new GraphBuilder(stageKey(spec), spec.quantize, quantizer);
  const { hiddenSize: d, numKvHeads, headDim } = cfg;
  const width = numKvHeads * headDim;
  const exit = spec.exits![0];
  const numDrafts = spec.chain!;
  const passes = numDrafts + (spec.chainFeedsLast ? 1 : 0);
  const ids = g.input('ids', OnnxType.INT64, ['n']);
  const keys: string[] = [];
  const values: string[] = [];
  for (let l = 0; l < spec.to; l++) {
    keys.push(g.input(`past_k_${l}`, OnnxType.FLOAT, [1, 'past', width]));
    values.push(g.input(`past_v_${l}`, OnnxType.FLOAT, [1, 'past', width]));
  }
  const newKeys: string[][] = keys.map(() => []);
  const newValues: string[][] = keys.map(() => []);
  const hiddens: string[] = [];
  const drafts: string[] = [];
  const contexts = createChainContexts(g, cfg, w, g.slice(g.shape(keys[0]), 0, 1, 2), g.slice(g.shape(ids), 0, 0, 1), passes);
  let tokens = ids;
  for (let pass = 0; pass < passes; pass++) {
    // Pass p feeds the ids (p = 0) or draft p, and (p < numDrafts) predicts draft p + 1.
    const ctx = contexts[pass];
    let hidden = arch.embed(ctx, tokens);
    for (let l = 0; l < spec.to; l++) {
      const block = arch.block(ctx, l, hidden, keys[l], values[l]);
      hidden = block.hidden;
      newKeys[l].push(block.newK);
      newValues[l].push(block.newV);
      if (pass === passes - 1) continue;
      keys[l] = g.concat([keys[l], block.newK], 1);
      values[l] = g.concat([values[l], block.newV], 1);
    }
    hiddens.push(hidden);
    if (pass === numDrafts) break;
    const logits = buildExit(ctx, arch, exit, g.slice(hidden, 0, -1));
    tokens = g.op('ArgMax', [logits], { axis: attr.int(1), keepdims: attr.int(0) }); // int64 [1]
    drafts.push(tokens);
  }
  const joined = (parts: string[], axis: number) => (parts.length > 1 ? g.concat(parts, axis) : parts[0]);
  g.output(joined(drafts, 0), 'drafts', OnnxType.INT64, [numDrafts]);
  g.output(joined(hiddens, 0), 'hidden_out', OnnxType.FLOAT, ['rows', d]);
  for (let l = 0; l < spec.to; l++) {
    g.output(joined(newKeys[l], 1), `new_k_${l}`, OnnxType.FLOAT, [1, 'rows', width]);
    g.output(joined(newValues[l], 1), `new_v_${l}`, OnnxType.FLOAT, [1, 'rows', width]);
  }
  return { bytes: g.toBytes(), weightBytes: g.weightBytes, externalData: g.externalData };
}

export function validateStageSpec(cfg: ModelConfig, spec: StageSpec): void {
  if (typeof spec !== 'object' || spec === null)
    throw new OptionsError('STAGE_SPEC', `a stage spec must be an object, got ${formatValue(spec, 100, 'js')}`);
  const { from, to } = spec;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > cfg.numLayers || from > to) {
    throw new OptionsError('STAGE_RANGE', `layer range [${from}, ${to}) is invalid for a ${cfg.numLayers}-layer model`);
  }
  // Each layer has at most three heads (shared, layer-specific, cast): more exits can only be repeats.
  const maxExits = 3 * cfg.numLayers;
  if (spec.exits !== undefined && (!Array.isArray(spec.exits) || spec.exits.length > maxExits)) {
    throw new OptionsError('STAGE_EXIT', `exits must be a list of at most ${maxExits} exits, got ${formatValue(spec.exits, 100, 'js')}`);
  }
  for (const key of ['propagate', 'chainFeedsLast', 'hiddenInput'] as const) {
    if (spec[key] !== undefined && typeof spec[key] !== 'boolean') {
      throw new OptionsError('STAGE_SPEC', `${key} must be a boolean, got ${formatValue(spec[key], 100, 'js')}`);
    }
  }
  for (const e of spec.exits ?? []) {
    if (typeof e !== 'object' || e === null || !Number.isInteger(e.layer)) {
      throw new OptionsError('STAGE_EXIT', `an exit must be { layer: integer, head? }, got ${formatValue(e, 100, 'js')}`);
    }
    if (e.head !== undefined && e.head !== 'shared' && e.head !== 'layer-specific' && e.head !== 'cast') {
      throw new OptionsError('STAGE_EXIT', `exit head must be 'shared', 'layer-specific' or 'cast', got ${formatValue(e.head, 100, 'js')}`);
    }
    if (e.layer < Math.max(from, 1) || e.layer > to) {
      throw new OptionsError('STAGE_EXIT', `exit at layer ${e.layer} is outside stage [${from}, ${to})`);
    }
  }
  if (spec.propagate && spec.exits?.length) throw new OptionsError('STAGE_EXIT', 'propagate stages have no exits');
  if (spec.chain !== undefined) {
    // The graph unrolls one pass per draft: bounded like numSpeculations, before the builder sees it.
    if (!Number.isInteger(spec.chain) || spec.chain < 1 || spec.chain > MAX_NUM_SPECULATIONS)
      throw new OptionsError('STAGE_CHAIN', `chain must be an integer in 1..${MAX_NUM_SPECULATIONS}, got ${spec.chain}`);
    if (from !== 0 || spec.propagate || spec.exits?.length !== 1 || spec.exits[0].layer !== to) {
      throw new OptionsError('STAGE_CHAIN', 'a chain stage starts at layer 0 and has exactly one exit, at its last layer');
    }
  }
  if (spec.chainFeedsLast && !spec.chain) throw new OptionsError('STAGE_CHAIN', 'chainFeedsLast needs a chain');
  if (spec.hiddenInput && spec.chain)
    throw new OptionsError('STAGE_CHAIN', 'a chain stage embeds its own drafts: hiddenInput does not apply');
  if (spec.quantize !== undefined && spec.quantize !== 'int8' && spec.quantize !== 'int4') {
    throw new OptionsError('STAGE_QUANTIZE', `quantize must be 'int8' or 'int4', got ${formatValue(spec.quantize, 100, 'js')}`);
  }
}

/**
 * A FIFO async mutex. Taking a free lock allocates nothing and needs no await (`acquire` returns undefined),
 * so an uncontended call pays one branch.
 */
export class RunLock {
  private busy = false;
  private readonly waiters: (() => void)[] = [];

  /** undefined: the caller holds the lock now; else a promise that resolves once it does. */
  acquire(): Promise<void> | undefined {
    if (!this.busy) {
      this.busy = true;
      return undefined;
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Hands the lock to the next waiter, in call order. */
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.busy = false;
  }
}

/**
 * What the modes call: a stage of either layout (SessionStage here, LayeredStage in layered.ts). Calls see the
 * cache as it is when their turn comes; a released stage rejects every call.
 */
export interface Stage {
  readonly spec: StageSpec;
  /** Accumulated wall time inside the stage's session calls (ms) and number of calls. */
  readonly runMs: number;
  readonly calls: number;
  /** Bytes of weights this stage's own sessions hold (0 for a layered stage: its parts are shared). */
  readonly weightBytes: number;
  readonly buildMs: number;
  readonly released: boolean;
  /**
   * Runs `input` (token ids for stages starting at layer 0, else hidden rows [n, d]) at the positions
   * following the cache, appends the new K/V rows of this stage's layers to `cache`, and returns the
   * hidden state and exit logits for rows logitsStart..n−1 (none when logitsStart = n).
   */
  run(cache: KvCache, input: ArrayLike<number> | Float32Array, logitsStart?: number): Promise<StageResult>;
  /**
   * Chain stages: feeds `ids`, then drafts `spec.chain` tokens greedily, feeding all but the last (all with
   * `chainFeedsLast`). Appends the fed tokens' K/V rows to `cache`; returns the drafts and the hidden rows
   * [fed, d] after block `to`.
   */
  runChain(cache: KvCache, ids: ArrayLike<number>): Promise<{ drafts: BigInt64Array; hidden: Float32Array }>;
  /** Refuses new calls from now on (MexitError `code`, with `reason`); resolves once running calls are done. */
  release(code?: string, reason?: string): Promise<void>;
}

/**
 * One compiled stage (one ORT session) with reusable input buffers. Calls are serialised on `lock` (the runtime passes one
 * lock to all its stages): the feeds and id buffers are reused, and onnxruntime-node reads them only on a
 * later turn of the event loop, so overlapping calls would otherwise run on each other's inputs. Each call
 * still sees its cache as it is when the call's turn comes, as if the calls had been awaited one by one.
 */
export class SessionStage implements Stage {
  /** Accumulated wall time inside session.run (ms) and number of calls, for overhead reports. */
  runMs = 0;
  calls = 0;
  private idsBuffer = new BigInt64Array(64);
  private readonly startBuffer = new BigInt64Array(1);
  private readonly feeds: Record<string, ort.Tensor> = {};
  /** Rows the cache held when the current feeds were set. */
  private pastRows = 0;
  /** Calls entered and not yet returned (waiting for the lock or running). */
  private inFlight = 0;
  /** Set once released: new calls are refused with this code and reason. */
  private closed: { code: string; reason: string } | null = null;
  private drained: (() => void) | null = null;
  private releasing: Promise<void> | null = null;

  constructor(
    readonly spec: StageSpec,
    private readonly session: ort.InferenceSession,
    private readonly cfg: ModelConfig,
    readonly weightBytes: number,
    readonly buildMs: number,
    private readonly lock = new RunLock(),
  ) {}

  /** true once release() was called: every later call rejects. */
  get released(): boolean {
    return this.closed !== null;
  }

  /**
   * Runs `input` (token ids for stages starting at layer 0, else hidden rows [n, d]) at the positions
   * following the cache, appends the new K/V rows of this stage's layers to `cache`, and returns the
   * hidden state and exit logits for rows logitsStart..n−1 (none when logitsStart = n).
   */
  async run(cache: KvCache, input: ArrayLike<number> | Float32Array, logitsStart = 0): Promise<StageResult> {
    if (this.spec.chain) throw new OptionsError('STAGE_CHAIN', `stage ${stageKey(this.spec)} drafts a chain: call runChain`);
    const out = await this.call(cache, input, 0, logitsStart);
    const numExits = this.spec.exits?.length ?? 0;
    const logits: Float32Array[] = [];
    for (let i = 0; i < numExits; i++) logits.push(out[`logits_${i}`].data as Float32Array);
    const hidden = this.spec.propagate ? (input as Float32Array) : (out.hidden_out.data as Float32Array);
    return { hidden, logits };
  }

  /**
   * Chain stages: feeds `ids`, then drafts `spec.chain` tokens greedily, feeding all but the last (all with
   * `chainFeedsLast`). Appends the fed tokens' K/V rows to `cache`; returns the drafts and the hidden rows
   * [fed, d] after block `to`.
   */
  async runChain(cache: KvCache, ids: ArrayLike<number>): Promise<{ drafts: BigInt64Array; hidden: Float32Array }> {
    if (!this.spec.chain) throw new OptionsError('STAGE_CHAIN', `stage ${stageKey(this.spec)} is not a chain stage`);
    const out = await this.call(cache, ids, this.spec.chain - (this.spec.chainFeedsLast ? 0 : 1), 0);
    return { drafts: out.drafts.data as BigInt64Array, hidden: out.hidden_out.data as Float32Array };
  }

  /**
   * One session call under the lock: validates and sets the feeds, runs, appends the new K/V rows to `cache`.
   * The outputs are fresh arrays, safe to read after the lock is handed on.
   */
  private async call(
    cache: KvCache,
    input: ArrayLike<number> | Float32Array,
    extraRows: number,
    logitsStart: number,
  ): Promise<ort.InferenceSession.OnnxValueMapType> {
    if (this.closed) throw new MexitError(this.closed.code, `stage ${stageKey(this.spec)}: ${this.closed.reason}`);
    this.inFlight++;
    try {
      const wait = this.lock.acquire();
      if (wait) await wait;
      try {
        const n = this.setFeeds(cache, input, extraRows);
        if (this.spec.exits?.length && !this.spec.chain) {
          // logitsStart = n asks for no logits rows: the exit heads then cost nothing (the drafter feeds its last
          // draft this way instead of keeping a second, head-less session with a copy of the same layers).
          if (!Number.isInteger(logitsStart) || logitsStart < 0 || logitsStart > n) {
            throw new OptionsError('STAGE_INPUT', `logitsStart ${logitsStart} must lie in 0..${n}`);
          }
          this.startBuffer[0] = BigInt(logitsStart);
          this.feeds.logits_start = new ort.Tensor('int64', this.startBuffer, [1]);
        }
        const t0 = performance.now();
        const out = await this.session.run(this.feeds);
        this.runMs += performance.now() - t0;
        this.calls++;
        const { from, to } = this.spec;
        for (let l = from; l < to; l++) {
          // This runtime's calls hold the lock, so only another runtime's stage or a direct truncate/append
          // while the call ran can change the cache: refuse rather than append the rows at the wrong place.
          if (cache.length(l) !== this.pastRows) {
            throw new CacheError(
              'KV_CONCURRENT_USE',
              `layer ${l} of the KvCache changed from ${this.pastRows} to ${cache.length(l)} rows while stage ` +
                `${stageKey(this.spec)} ran on it; a cache must not change during a call`,
            );
          }
        }
        for (let l = from; l < to; l++) {
          cache.append(l, out[`new_k_${l}`].data as Float32Array, out[`new_v_${l}`].data as Float32Array);
        }
        return out;
      } finally {
        this.lock.release();
      }
    } finally {
      if (--this.inFlight === 0) this.drained?.();
    }
  }

  /** Validates the input against the cache and sets the ids/hidden and past feeds; returns the row count. */
  private setFeeds(cache: KvCache, input: ArrayLike<number> | Float32Array, extraRows = 0): number {
    const { from, to } = this.spec;
    const { hiddenSize: d, numKvHeads, headDim } = this.cfg;
    const embeds = from === 0 && !this.spec.propagate && !this.spec.hiddenInput;
    // Ids: an array or typed array of integers; hidden rows: a Float32Array of whole rows.
    const shaped = embeds
      ? Array.isArray(input) || (ArrayBuffer.isView(input) && !(input instanceof DataView))
      : input instanceof Float32Array;
    if (!shaped) {
      throw new OptionsError(
        'STAGE_INPUT',
        `stage ${stageKey(this.spec)} takes ${embeds ? 'token ids (an array of integers)' : `hidden rows (a Float32Array of n × ${d})`}, got ${typeName(input)}`,
      );
    }
    const n = embeds ? input.length : input.length / d;
    if (!Number.isInteger(n) || n < 1)
      throw new OptionsError('STAGE_INPUT', `stage ${stageKey(this.spec)} got an empty or misshapen input`);
    this.checkCache(cache);
    const past = from < to ? cache.length(from) : 0;
    for (let l = from; l < to; l++) {
      if (cache.length(l) !== past) {
        throw new CacheError(
          'KV_LAYER_MISMATCH',
          `layer ${l} holds ${cache.length(l)} rows but layer ${from} holds ${past}; a stage's layers must be in step`,
        );
      }
    }
    if (past + n + extraRows > this.cfg.maxPositions) {
      throw new OptionsError(
        'CONTEXT_OVERFLOW',
        `positions up to ${past + n + extraRows} exceed max_position_embeddings ${this.cfg.maxPositions}`,
      );
    }
    if (from < to && past + n + extraRows > cache.maxCapacity) {
      // Checked before the run: an append failing afterwards would leave the stage's layers out of step.
      throw new CacheError(
        'KV_CAPACITY',
        `stage ${stageKey(this.spec)} appends ${n + extraRows} rows to ${past}, but the cache has maxCapacity ${cache.maxCapacity}`,
      );
    }
    this.pastRows = past;
    const feeds = this.feeds;
    if (embeds) {
      checkTokenIds(input, this.cfg.vocabSize);
      if (this.idsBuffer.length < n) this.idsBuffer = new BigInt64Array(Math.max(n, this.idsBuffer.length * 2));
      for (let i = 0; i < n; i++) this.idsBuffer[i] = BigInt(input[i]);
      feeds.ids = new ort.Tensor('int64', this.idsBuffer.subarray(0, n), [n]);
    } else {
      feeds.hidden = new ort.Tensor('float32', input as Float32Array, [n, d]);
    }
    for (let l = from; l < to; l++) {
      const view = cache.view(l, past);
      // The cache's token-major rows are already [1, P, kvHeads·headDim] (no Reshape node in the graph).
      feeds[`past_k_${l}`] = new ort.Tensor('float32', view.k, [1, past, numKvHeads * headDim]);
      feeds[`past_v_${l}`] = new ort.Tensor('float32', view.v, [1, past, numKvHeads * headDim]);
    }
    return n;
  }

  /** CacheError KV_MODEL_MISMATCH unless `cache` is a KvCache shaped for this stage's model. */
  private checkCache(cache: KvCache): void {
    if (!(cache instanceof KvCache)) {
      throw new CacheError(
        'KV_MODEL_MISMATCH',
        `stage ${stageKey(this.spec)} needs a KvCache (runtime.createCache()), got ${typeName(cache)}`,
      );
    }
    const { numLayers, numKvHeads, headDim } = this.cfg;
    if (cache.numLayers === numLayers && cache.kvHeads === numKvHeads && cache.headDim === headDim) return;
    const differ: string[] = [];
    if (cache.numLayers !== numLayers) differ.push(`numLayers ${cache.numLayers} (model: ${numLayers})`);
    if (cache.kvHeads !== numKvHeads) differ.push(`kvHeads ${cache.kvHeads} (model: ${numKvHeads})`);
    if (cache.headDim !== headDim) differ.push(`headDim ${cache.headDim} (model: ${headDim})`);
    throw new CacheError('KV_MODEL_MISMATCH', `the KvCache was made for another model: ${differ.join(', ')}`);
  }

  /**
   * Refuses new calls from now on (MexitError `code`, with `reason`) and releases the session once the calls
   * already made have returned. Idempotent: later calls return the first release.
   */
  release(code = 'DISPOSED', reason = 'the stage was released'): Promise<void> {
    if (!this.releasing) {
      this.closed = { code, reason };
      const idle = this.inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.drained = resolve));
      this.releasing = idle.then(() => this.session.release());
    }
    return this.releasing;
  }
}

/** OptionsError TOKEN_ID_RANGE unless every id is an integer in 0..vocabSize − 1. */
export function checkTokenIds(ids: ArrayLike<number>, vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new OptionsError('TOKEN_ID_RANGE', `token id ${id} is outside the vocabulary 0..${vocabSize - 1}`);
    }
  }
}

function typeName(value: unknown): string {
  return value === null ? 'null' : typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
}
