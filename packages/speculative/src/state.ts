/**
 * What every decoding mode shares during one generation (`DecodeState`) and what a mode hands back
 * (`TokenBlock`), with the two growable buffers they use.
 */
import type { KvCache, TokenPicker } from '@mexit/core';

/** Growable Int32 history; `view(n)` gives the first n ids without copying. */
export class TokenHistory {
  private buf = new Int32Array(256);
  length = 0;

  push(id: number): void {
    if (this.length === this.buf.length) {
      const next = new Int32Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = id;
  }

  truncate(length: number): void {
    this.length = Math.min(this.length, length);
  }

  view(n = this.length): Int32Array {
    return this.buf.subarray(0, n);
  }
}

/** Rows of hidden states collected across stage calls (exit hiddens awaiting verification). */
export class RowBuffer {
  private buf: Float32Array;
  rows = 0;

  constructor(
    readonly width: number,
    initialRows = 64,
  ) {
    this.buf = new Float32Array(width * initialRows);
  }

  reset(): void {
    this.rows = 0;
  }

  push(rows: Float32Array): void {
    const need = this.rows * this.width + rows.length;
    if (need > this.buf.length) {
      const next = new Float32Array(Math.max(need, this.buf.length * 2));
      next.set(this.buf.subarray(0, this.rows * this.width));
      this.buf = next;
    }
    this.buf.set(rows, this.rows * this.width);
    this.rows += rows.length / this.width;
  }

  view(): Float32Array {
    return this.buf.subarray(0, this.rows * this.width);
  }
}

/**
 * Milliseconds per phase of one generation. Each timer means the same in every mode (0 where a mode has
 * no such phase).
 */
export interface PhaseTimes {
  /** Self-spec drafting: layers [0, E) + the exit head (or the drafter's own work). */
  draft: number;
  /** Self-spec verification: layers [E, L) + the head, or the full model over the drafts. */
  verify: number;
  /** One-token modes' model passes: ar, early-exit, ACD, CALM's layer chunks. */
  forward: number;
  /** CALM: K/V of the skipped layers, projected from the exit hidden state. */
  propagate: number;
  /** Picking tokens: warping, sampling, the acceptance rule, ACD's contrast, CALM's confidence. */
  sampling: number;
}

export function newPhaseTimes(): PhaseTimes {
  return { draft: 0, verify: 0, forward: 0, propagate: 0, sampling: 0 };
}

/** Per-generation state handed to a decoding mode. */
export interface DecodeState {
  cache: KvCache;
  /** Prompt + committed tokens (+ a round's drafts until it commits). The repetition penalty reads it. */
  history: TokenHistory;
  picker: TokenPicker;
  /** Prompt ids, not yet fed through any layer. */
  prompt: number[];
  /** Tokens still allowed (maxNewTokens − committed). */
  remaining(): number;
  times: PhaseTimes;
  isEos(id: number): boolean;
}

/** A block of tokens a mode commits at once, with where each came from. */
export interface TokenBlock {
  tokens: number[];
  /** true: a draft/early-exit token accepted as is; false: produced by the full model. */
  fromDraft: boolean[];
  /** Drafted tokens examined in this round (self-spec), for acceptance statistics. */
  drafted?: number;
  /** Of those, how many the full model accepted (self-spec). */
  accepted?: number;
  /** Layers run for each token (CALM). */
  exitLayers?: number[];
}

export function now(): number {
  return performance.now();
}
