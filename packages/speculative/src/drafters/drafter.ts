/**
 * The drafter interface (the shape of node-llama-cpp's TokenPredictor): a drafter proposes tokens, says
 * where the verifier must start and what it feeds, and forgets what was rejected. The self-spec round
 * (modes/self-spec.ts) only ever talks to this interface.
 */
import type { DecodeState } from '../state.js';

export interface Draft {
  /** The drafted tokens, already pushed onto `state.history` (the round truncates it again). */
  tokens: number[];
  /** Sampling: q_i, the distribution tokens[i] was drawn from (exactly). Absent for greedy decoding. */
  probs?: readonly Float32Array[];
  /**
   * How many of `tokens` the shared KV cache now has rows for. The verifier scores fed + 1 rows (the last
   * pending token and each fed draft); fed === tokens.length means the round has a bonus row.
   */
  fed: number;
  /**
   * What the verifier feeds from layer `verifyFrom`: the exit hidden rows of the pending tokens and the fed
   * drafts (verifyFrom = E), or their ids (verifyFrom = 0).
   */
  verifyInput: ArrayLike<number> | Float32Array;
}

export interface Drafter {
  /** First layer the verifier runs: E (drafts ran layers [0, E) on the shared cache) or 0 (the full model). */
  readonly verifyFrom: number;
  /**
   * Feeds `pending` (committed tokens the shared cache lacks) and drafts up to `n` tokens (n may be 0: then
   * it only prepares the verifier's input).
   */
  draft(state: DecodeState, pending: readonly number[], n: number): Promise<Draft>;
  /** The history now holds `committed` tokens: drop any state beyond them (rejected drafts). */
  rollback(committed: number): void;
  dispose(): void;
}

/** Reusable per-draft-position distribution buffers (q_i). */
export class ProbsBuffers {
  readonly list: Float32Array[] = [];

  constructor(private readonly vocabSize: number) {}

  at(i: number): Float32Array {
    while (this.list.length <= i) this.list.push(new Float32Array(this.vocabSize));
    return this.list[i];
  }
}
