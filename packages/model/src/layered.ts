/**
 * The layered layout, for models whose weights are large: one ORT session ("part") per layer, one per distinct
 * exit head, and the token embedding read row by row from the checkpoint as tokens arrive. A stage over any
 * range [from, to) is a composition of parts, so every weight is held once whichever stages the modes ask for:
 * the drafter's [0, E) + exit and the verifier's [E, L) + head share the one head session (LayerSkip's exit
 * head is the model's own), early exit at any layer reuses the same layer sessions, and nothing is copied per
 * stage. Parts build one at a time, so a load peaks at the loaded weights plus one layer's build. A session
 * call costs ~20 µs: a fraction of a percent of a 1B-parameter model's layer, but most of a tiny model's, which
 * is why small models keep the fused layout (one session per stage, stages.ts).
 */
import { MexitError, OptionsError, argmax, type KvCache } from '@mexit/core';
import type { ModelConfig } from './config.js';
import type { ExitSpec } from './exits.js';
import type { LinearQuantization } from './onnx/builder.js';
import { checkTokenIds, stageKey, type Stage, type StageResult, type StageSpec } from './stages.js';

/** What a layered stage is made of; the runtime owns and shares them. */
export interface LayerParts {
  /** The session of layer `l` alone (hidden rows in, hidden rows and the layer's new K/V out). */
  layer(l: number, quantize: LinearQuantization | undefined, propagate: boolean): Promise<Stage>;
  /** The session of one exit head over hidden rows (one per distinct head: all shared exits use the same one). */
  head(exit: ExitSpec, quantize: LinearQuantization | undefined): Promise<Stage>;
  /** Writes the input embedding of `ids` at positions first, first + 1, … into out [ids.length, d]. */
  embed(ids: ArrayLike<number>, first: number, out: Float32Array): void;
}

/** A stage of the layered layout: the same calls and results as a fused Stage. */
export class LayeredStage {
  runMs = 0;
  calls = 0;
  /** Weights are the parts' (shared), not the stage's. */
  readonly weightBytes = 0;
  private closed: { code: string; reason: string } | null = null;

  private constructor(
    readonly spec: StageSpec,
    private readonly cfg: ModelConfig,
    private readonly parts: LayerParts,
    private readonly layers: Stage[],
    private readonly heads: Stage[],
    readonly buildMs: number,
  ) {}

  static async create(spec: StageSpec, cfg: ModelConfig, parts: LayerParts): Promise<LayeredStage> {
    const t0 = performance.now();
    const layers: Stage[] = [];
    for (let l = spec.from; l < spec.to; l++) layers.push(await parts.layer(l, spec.quantize, spec.propagate ?? false));
    const heads: Stage[] = [];
    for (const exit of spec.exits ?? []) heads.push(await parts.head(exit, spec.quantize));
    return new LayeredStage(spec, cfg, parts, layers, heads, performance.now() - t0);
  }

  get released(): boolean {
    return this.closed !== null;
  }

  /** As Stage.run: ids (from = 0) or hidden rows in; the hidden state after `to` and the exits' logits out. */
  async run(cache: KvCache, input: ArrayLike<number> | Float32Array, logitsStart = 0): Promise<StageResult> {
    if (this.spec.chain) throw new OptionsError('STAGE_CHAIN', `stage ${stageKey(this.spec)} drafts a chain: call runChain`);
    return this.pass(cache, input, logitsStart);
  }

  /**
   * As Stage.runChain, pass by pass: feeds `ids`, then drafts `spec.chain` tokens greedily (argmax, first index on
   * ties, as the fused chain graph), feeding each but the last (all with chainFeedsLast).
   */
  async runChain(cache: KvCache, ids: ArrayLike<number>): Promise<{ drafts: BigInt64Array; hidden: Float32Array }> {
    const { chain, chainFeedsLast } = this.spec;
    if (!chain) throw new OptionsError('STAGE_CHAIN', `stage ${stageKey(this.spec)} is not a chain stage`);
    const { hiddenSize: d } = this.cfg;
    const passes = chain + (chainFeedsLast ? 1 : 0);
    const maxRows = ids.length + passes - 1;
    const hidden = new Float32Array(maxRows * d);
    const drafts = new BigInt64Array(chain);
    const single = [0];
    let feed: ArrayLike<number> = ids;
    let rows = 0;
    for (let pass = 0; pass < passes; pass++) {
      const wantsDraft = pass < chain;
      const out = await this.pass(cache, feed, wantsDraft ? feed.length - 1 : feed.length);
      hidden.set(out.hidden, rows * d);
      rows += feed.length;
      if (!wantsDraft) break;
      single[0] = argmax(out.logits[0]);
      drafts[pass] = BigInt(single[0]);
      feed = single;
    }
    return { drafts, hidden };
  }

  /** One pass over the layers, reading each exit's logits where its layer is reached. */
  private async pass(cache: KvCache, input: ArrayLike<number> | Float32Array, logitsStart: number): Promise<StageResult> {
    if (this.closed) throw new MexitError(this.closed.code, `stage ${stageKey(this.spec)}: ${this.closed.reason}`);
    const { from, to, exits = [], propagate } = this.spec;
    const d = this.cfg.hiddenSize;
    let hidden: Float32Array;
    if (from === 0 && !propagate) {
      if (!(Array.isArray(input) || (ArrayBuffer.isView(input) && !(input instanceof DataView))) || input.length < 1) {
        throw new OptionsError('STAGE_INPUT', `stage ${stageKey(this.spec)} takes token ids (a non-empty array of integers)`);
      }
      checkTokenIds(input, this.cfg.vocabSize);
      const first = cache.length(0);
      if (first + input.length > this.cfg.maxPositions) {
        throw new OptionsError(
          'CONTEXT_OVERFLOW',
          `positions up to ${first + input.length} exceed max_position_embeddings ${this.cfg.maxPositions}`,
        );
      }
      // A fresh buffer per call: overlapping calls (generators sharing a runtime) must not share their inputs.
      hidden = new Float32Array(input.length * d);
      this.parts.embed(input, first, hidden);
    } else {
      if (!(input instanceof Float32Array)) {
        throw new OptionsError('STAGE_INPUT', `stage ${stageKey(this.spec)} takes hidden rows (a Float32Array of n × ${d})`);
      }
      hidden = input;
    }
    const n = hidden.length / d;
    if (exits.length && (!Number.isInteger(logitsStart) || logitsStart < 0 || logitsStart > n)) {
      throw new OptionsError('STAGE_INPUT', `logitsStart ${logitsStart} must lie in 0..${n}`);
    }
    const t0 = performance.now();
    const logits: Float32Array[] = new Array(exits.length);
    const readExits = async (layer: number) => {
      for (let i = 0; i < exits.length; i++) {
        if (exits[i].layer !== layer) continue;
        const rows = hidden.subarray(logitsStart * d);
        logits[i] = rows.length ? (await this.heads[i].run(cache, rows, 0)).logits[0] : new Float32Array(0);
      }
    };
    await readExits(from);
    for (let l = from; l < to; l++) {
      const out = await this.layers[l - from].run(cache, hidden);
      if (!propagate) hidden = out.hidden;
      await readExits(l + 1);
    }
    this.runMs += performance.now() - t0;
    this.calls++;
    return { hidden, logits };
  }

  /** Refuses later calls; the parts stay (the runtime releases them on dispose). */
  release(code = 'DISPOSED', reason = 'the stage was released'): Promise<void> {
    this.closed ??= { code, reason };
    return Promise.resolve();
  }
}
