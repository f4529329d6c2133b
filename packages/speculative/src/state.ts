/**
 * What every decoding mode shares during one generation: the KV cache, the token history (prompt +
 * committed tokens, used by the repetition penalty), the token picker, and the stage timers.
 */
import { Rng, sampleCategorical, softmax, type KvCache, type LogitsWarper } from '@mexit/core';

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

  constructor(readonly width: number, initialRows = 64) {
    this.buf = new Float32Array(width * initialRows);
  }

  reset(): void {
    this.rows = 0;
  }

  push(rows: Float32Array): void {
    const need = (this.rows * this.width) + rows.length;
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

/** Greedy or sampled choice of the next token through one shared warper (same warp for p and q). */
export class TokenPicker {
  readonly rng: Rng;
  private readonly scratch: Float32Array;

  constructor(readonly warper: LogitsWarper, readonly doSample: boolean, seed: number) {
    this.rng = new Rng(seed);
    this.scratch = new Float32Array(warper.vocabSize);
  }

  /**
   * Picks from `logits` given `history`. When sampling, the warped distribution is written to `probsOut`
   * (kept by the caller as the draft distribution q) before the draw.
   */
  pick(logits: Float32Array, history: Int32Array, probsOut: Float32Array = this.scratch): number {
    if (!this.doSample) return this.warper.greedy(logits, history);
    this.warper.probs(logits, history, probsOut);
    return sampleCategorical(probsOut, this.rng);
  }

  /** Probability the picker gave `token` (sampled: q(token) from `probs`; greedy: softmax max of logits). */
  confidence(logits: Float32Array, token: number, probs: Float32Array): number {
    if (this.doSample) return probs[token];
    softmax(logits, this.scratch);
    return this.scratch[token];
  }
}

export interface StageTimes {
  draft: number;
  verify: number;
  sampling: number;
}

/** Per-generation state handed to a decoding mode. */
export interface DecodeState {
  cache: KvCache;
  history: TokenHistory;
  picker: TokenPicker;
  /** Prompt ids, not yet fed through any layer. */
  prompt: number[];
  /** Tokens still allowed (maxNewTokens − committed). */
  remaining(): number;
  times: StageTimes;
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
