/**
 * The quantized drafter: block-quantized copies of layers [0, E) and the exit head draft on a small KV cache
 * of their own (their K/V are approximations and must never reach the exact cache). It catches up on the
 * committed tokens itself; the verifier then runs the full model over the pending tokens and the drafts.
 */
import type { KvCache } from '@mexit/core';
import type { LinearQuantization, ModelRuntime } from '@mexit/model';
import type { DecodeState } from '../state.js';
import type { Draft, Drafter } from './drafter.js';
import { ExitPasses, type ExitPassesSpec } from './exit-passes.js';

export class QuantizedDrafter implements Drafter {
  readonly verifyFrom = 0;
  private readonly tokens: number[] = [];
  private readonly catchUp: number[] = [];
  private readonly verifyIds: number[] = [];

  private constructor(
    private readonly passes: ExitPasses,
    private readonly ownCache: KvCache,
    private readonly doSample: boolean,
  ) {}

  static async create(
    runtime: ModelRuntime,
    spec: Omit<ExitPassesSpec, 'quantize' | 'feedLast'>,
    quantize: LinearQuantization,
    doSample: boolean,
  ): Promise<QuantizedDrafter> {
    // The last draft is never fed here: the verifier runs the full model over it anyway.
    const passes = await ExitPasses.create(runtime, { ...spec, quantize, feedLast: false });
    return new QuantizedDrafter(passes, runtime.createCache(), doSample);
  }

  async draft(state: DecodeState, pending: readonly number[], n: number): Promise<Draft> {
    // Committed tokens the draft cache lacks: usually the last round's last accepted draft and the verifier's token.
    const history = state.history.view();
    this.catchUp.length = 0;
    for (let i = this.ownCache.length(0); i < history.length; i++) this.catchUp.push(history[i]);
    this.tokens.length = 0;
    if (n > 0) await this.passes.run(state, this.ownCache, this.catchUp, n, this.tokens, null);
    this.verifyIds.length = 0;
    for (const id of pending) this.verifyIds.push(id);
    for (const id of this.tokens) this.verifyIds.push(id);
    return {
      tokens: this.tokens,
      probs: this.doSample ? this.passes.probs.list : undefined,
      fed: this.tokens.length, // the verifier feeds every draft through the full model
      verifyInput: this.verifyIds,
    };
  }

  /** Drops the draft cache's rows beyond the `committed` history tokens (rejected drafts). */
  rollback(committed: number): void {
    if (this.ownCache.length(0) > committed) this.ownCache.truncate(committed);
  }

  dispose(): void {
    this.ownCache.truncate(0);
  }
}
