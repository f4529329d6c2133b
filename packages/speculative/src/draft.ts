/**
 * Draft stage: layers [0, E) + the exit head, one token at a time.
 *
 * Shared cache (the default, LayerSkip): the draft runs the model's exact layers [0, E) against the
 * generation's KV cache and keeps every fed row's exit hidden state (output of block E), so the verify
 * stage starts at layer E without recomputing early layers.
 *
 * Quantized draft: the draft runs block-quantized copies of layers [0, E) on a KV cache of its own (their
 * K/V are approximations and must not reach the exact cache); it catches up on committed tokens itself,
 * and the verifier runs the full model.
 *
 * Plain greedy rounds of the full draft length run as one chain stage (all passes in one session.run, argmax
 * in the graph): on the bundled model a call boundary costs ~0.16 ms inside the loop, most of a draft step.
 */
import type { KvCache } from '@mexit/core';
import type { ExitHeadKind, LinearQuantization, ModelRuntime, Stage } from '@mexit/model';
import { now, type DecodeState, type RowBuffer } from './state.js';

export class Drafter {
  /** q_i: the distribution draft i was sampled from (sampling mode only). */
  readonly draftProbs: Float32Array[] = [];
  private readonly single = [0];
  private catchUp: number[] = [];

  private constructor(
    /**
     * [0, E) with the exit head: one call per draft token. It also feeds the last draft (whose own
     * prediction is never needed) with no logits rows, so per-token rounds use one session only: a second
     * head-less session would hold a copy of the layers, and the copies evict each other from the CPU cache
     * (measured 0.4 ms per round on the bundled model). Greedy runs use it only for rounds shorter than the
     * chain (the last ones), so the chain's own copy of the layers does not compete with it.
     */
    private readonly draftStage: Stage,
    private readonly vocabSize: number,
    /** Quantized drafts only: the draft layers' own cache, row i = history token i. */
    private readonly ownCache: KvCache | null,
    /** Plain greedy drafts: d passes in one call, used whenever a round asks for d = chain.spec.chain drafts. */
    private readonly chain: Stage | null,
  ) {}

  /**
   * `chainLength`: drafts of that length are picked by argmax inside one chain stage. Only for plain greedy
   * picking (no sampling, no repetition penalty, no confidence threshold): the caller checks. `feedLast`
   * (shared cache): the rounds feed their last draft too (the verifier's bonus row).
   */
  static async create(
    runtime: ModelRuntime,
    exitLayer: number,
    exitHead: ExitHeadKind,
    quantize?: LinearQuantization,
    chainLength?: number,
    feedLast = true,
  ): Promise<Drafter> {
    const spec = { from: 0, to: exitLayer, exits: [{ layer: exitLayer, head: exitHead }], quantize };
    const [draftStage, chain] = await Promise.all([
      runtime.stage(spec),
      chainLength ? runtime.stage({ ...spec, chain: chainLength, chainFeedsLast: !quantize && feedLast }) : null,
    ]);
    return new Drafter(draftStage, runtime.config.vocabSize, quantize ? runtime.createCache() : null, chain);
  }

  /** True when drafts come from quantized layers on their own cache (the verifier must run all layers). */
  get ownsCache(): boolean {
    return this.ownCache !== null;
  }

  private probsBuffer(i: number): Float32Array {
    while (this.draftProbs.length <= i) this.draftProbs.push(new Float32Array(this.vocabSize));
    return this.draftProbs[i];
  }

  /**
   * Feeds `pending` through [0, E) and drafts up to `maxDrafts` tokens, pushing each onto the history
   * (the caller truncates it after acceptance). Stops early on EOS or when the draft's probability falls
   * below `confidenceThreshold`. On return `exitHiddens` holds the rows pending + drafts, all fed, or with
   * `feedLast` false pending + all drafts but the last (which is never fed when there is at least one).
   * With its own cache the drafter ignores `pending` and feeds the committed tokens its cache lacks.
   */
  async draft(state: DecodeState, pending: number[], maxDrafts: number, confidenceThreshold: number, exitHiddens: RowBuffer, feedLast = true): Promise<number[]> {
    exitHiddens.reset();
    const cache = this.ownCache ?? state.cache;
    if (this.ownCache) {
      // Committed tokens not yet in the draft cache: usually the last round's last accepted draft and the
      // verifier's token. The last draft is never fed (the verifier runs the full model over it).
      const history = state.history.view();
      this.catchUp.length = 0;
      for (let i = this.ownCache.length(0); i < history.length; i++) this.catchUp.push(history[i]);
      pending = this.catchUp;
      feedLast = false;
      if (maxDrafts === 0) return [];
    }
    const chain = this.chain;
    if (chain && maxDrafts === chain.spec.chain && feedLast === !!chain.spec.chainFeedsLast) {
      return this.draftChain(state, chain, cache, pending, exitHiddens);
    }
    const drafts: number[] = [];
    let input: number[] = pending;
    for (let i = 0; i < maxDrafts; i++) {
      let t = now();
      const out = await this.draftStage.run(cache, input, input.length - 1);
      state.times.draft += now() - t;
      exitHiddens.push(out.hidden);

      t = now();
      const q = this.probsBuffer(i);
      const token = state.picker.pick(out.logits[0], state.history.view(), q);
      const unsure = confidenceThreshold > 0 && state.picker.confidence(out.logits[0], token, q) < confidenceThreshold;
      state.history.push(token);
      drafts.push(token);
      state.times.sampling += now() - t;

      this.single[0] = token;
      input = this.single;
      if (unsure || state.isEos(token)) break;
    }
    if (!feedLast && drafts.length > 0) return drafts;
    const t = now();
    const out = await this.draftStage.run(cache, input, input.length);
    state.times.draft += now() - t;
    exitHiddens.push(out.hidden);
    return drafts;
  }

  /**
   * One chain call: feeds `input` and drafts d tokens. Drafts after an EOS are cut, and so are the rows fed
   * after it, leaving the cache and `exitHiddens` as the per-token loop would.
   */
  private async draftChain(state: DecodeState, chain: Stage, cache: KvCache, input: number[], exitHiddens: RowBuffer): Promise<number[]> {
    const pastBefore = cache.length(0);
    const t = now();
    const { drafts: tokens, hidden } = await chain.runChain(cache, input);
    state.times.draft += now() - t;
    const drafts: number[] = [];
    for (let i = 0; i < tokens.length; i++) {
      const token = Number(tokens[i]);
      state.history.push(token);
      drafts.push(token);
      if (state.isEos(token)) break;
    }
    const fed = input.length + drafts.length - (chain.spec.chainFeedsLast ? 0 : 1);
    cache.truncate(pastBefore + fed);
    exitHiddens.push(hidden.subarray(0, fed * exitHiddens.width));
    return drafts;
  }

  /** Quantized drafts: drops the draft cache's rows beyond the `committed` history tokens (rejected drafts). */
  rollback(committed: number): void {
    if (this.ownCache && this.ownCache.length(0) > committed) this.ownCache.truncate(committed);
  }
}
