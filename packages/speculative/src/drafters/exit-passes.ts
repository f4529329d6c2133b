/**
 * The draft passes both early-exit drafters run: layers [0, E) + the exit head, one token per call, or a
 * whole greedy chain in one call (all passes in one session.run, argmax in the graph: on the bundled model
 * a call boundary costs ~0.16 ms inside the loop, most of a draft step).
 */
import type { KvCache } from '@mexit/core';
import type { ExitHeadKind, LinearQuantization, ModelRuntime, Stage } from '@mexit/model';
import { now, type DecodeState, type RowBuffer } from '../state.js';
import { ProbsBuffers } from './drafter.js';

export interface ExitPassesSpec {
  exitLayer: number;
  exitHead: ExitHeadKind;
  quantize?: LinearQuantization;
  /** Plain greedy picking: rounds of this many drafts run as one chain call. */
  chainLength?: number;
  /** Rounds also feed their last draft (the verifier's bonus row needs its exit hidden). */
  feedLast: boolean;
  confidenceThreshold: number;
}

export class ExitPasses {
  readonly probs: ProbsBuffers;
  private readonly single = [0];

  private constructor(
    /**
     * [0, E) with the exit head, one call per draft token. It also feeds the last draft (whose own prediction
     * is never needed) with no logits rows, so per-token rounds use one session only: a second head-less
     * session would hold a copy of the layers, and the copies evict each other from the CPU cache (measured
     * 0.4 ms per round on the bundled model). Greedy runs use it only for rounds shorter than the chain.
     */
    private readonly stage: Stage,
    private readonly chain: Stage | null,
    private readonly spec: ExitPassesSpec,
    private readonly hiddenSize: number,
    vocabSize: number,
  ) {
    this.probs = new ProbsBuffers(vocabSize);
  }

  static async create(runtime: ModelRuntime, spec: ExitPassesSpec): Promise<ExitPasses> {
    const stageSpec = { from: 0, to: spec.exitLayer, exits: [{ layer: spec.exitLayer, head: spec.exitHead }], quantize: spec.quantize };
    const [stage, chain] = await Promise.all([
      runtime.stage(stageSpec),
      spec.chainLength ? runtime.stage({ ...stageSpec, chain: spec.chainLength, chainFeedsLast: spec.feedLast }) : null,
    ]);
    return new ExitPasses(stage, chain, spec, runtime.config.hiddenSize, runtime.config.vocabSize);
  }

  /**
   * Feeds `input` on `cache` and drafts up to `n` tokens onto `state.history` and `drafts`. Stops early on
   * EOS or an unsure draft. Returns how many drafts were fed (all, or all but the last without feedLast).
   * `hiddens` (optional) receives the exit hidden rows of everything fed; a chain call returns its own rows
   * instead (`chainHidden`), saving the copy.
   */
  async run(
    state: DecodeState,
    cache: KvCache,
    input: readonly number[],
    n: number,
    drafts: number[],
    hiddens: RowBuffer | null,
  ): Promise<{ fed: number; chainHidden?: Float32Array }> {
    const { chain, spec } = this;
    drafts.length = 0;
    if (chain && n === chain.spec.chain) return this.runChain(state, chain, cache, input, drafts);
    let feed: readonly number[] = input;
    for (let i = 0; i < n; i++) {
      let t = now();
      const out = await this.stage.run(cache, feed, feed.length - 1);
      state.times.draft += now() - t;
      hiddens?.push(out.hidden);

      t = now();
      const q = this.probs.at(i);
      const token = state.picker.pick(out.logits[0], state.history.view(), q);
      const unsure = spec.confidenceThreshold > 0 && state.picker.confidence(out.logits[0], token, q) < spec.confidenceThreshold;
      state.history.push(token);
      drafts.push(token);
      state.times.sampling += now() - t;

      this.single[0] = token;
      feed = this.single;
      if (unsure || state.isEos(token)) break;
    }
    if (!spec.feedLast && drafts.length > 0) return { fed: drafts.length - 1 };
    // The last draft (or, with none, the pending input): fed for its K/V and exit hidden, no logits needed.
    const t = now();
    const out = await this.stage.run(cache, feed, feed.length);
    state.times.draft += now() - t;
    hiddens?.push(out.hidden);
    return { fed: drafts.length };
  }

  /** One chain call. Drafts after an EOS are cut, and so are the rows fed after it, as the per-token loop would. */
  private async runChain(
    state: DecodeState,
    chain: Stage,
    cache: KvCache,
    input: readonly number[],
    drafts: number[],
  ): Promise<{ fed: number; chainHidden: Float32Array }> {
    const pastBefore = cache.length(0);
    const t = now();
    const { drafts: tokens, hidden } = await chain.runChain(cache, input);
    state.times.draft += now() - t;
    for (let i = 0; i < tokens.length; i++) {
      const token = Number(tokens[i]);
      state.history.push(token);
      drafts.push(token);
      if (state.isEos(token)) break;
    }
    const fed = this.spec.feedLast ? drafts.length : drafts.length - 1;
    const rows = input.length + fed;
    cache.truncate(pastBefore + rows);
    return { fed, chainHidden: hidden.subarray(0, rows * this.hiddenSize) };
  }
}
