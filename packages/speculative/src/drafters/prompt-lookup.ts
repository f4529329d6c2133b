/**
 * Prompt lookup (n-gram) drafting: no model at all. The longest suffix of the history (up to `maxNgram`
 * tokens) that occurred earlier proposes the tokens that followed it there. Costs nothing to draft, so any
 * accepted token is a win; the verifier runs the full model over the drafts (verifyFrom = 0). Good on
 * inputs that repeat: code edits, summaries, retrieval answers, and the repetitive tails of small models.
 * Under sampling a draft is deterministic, so its distribution q is one-hot, which the acceptance rule
 * handles exactly.
 */
import type { DecodeState } from '../state.js';
import { ProbsBuffers, type Draft, type Drafter } from './drafter.js';

export const DEFAULT_PROMPT_LOOKUP_NGRAM = 3;

export class PromptLookupDrafter implements Drafter {
  readonly verifyFrom = 0;
  private readonly tokens: number[] = [];
  private readonly verifyIds: number[] = [];
  private readonly probs: ProbsBuffers;
  /** The token each probs buffer is currently one-hot at (−1: all zero). */
  private readonly hot: number[] = [];

  constructor(
    vocabSize: number,
    private readonly doSample: boolean,
    private readonly maxNgram = DEFAULT_PROMPT_LOOKUP_NGRAM,
  ) {
    this.probs = new ProbsBuffers(vocabSize);
  }

  async draft(state: DecodeState, pending: readonly number[], n: number): Promise<Draft> {
    const history = state.history.view();
    this.tokens.length = 0;
    const from = n > 0 ? this.lookup(history) : -1;
    if (from >= 0) {
      for (let i = 0; i < n && from + i < history.length; i++) {
        const token = history[from + i];
        this.tokens.push(token);
        if (state.isEos(token)) break;
      }
      for (const token of this.tokens) state.history.push(token);
    }
    if (this.doSample) this.setOneHot();
    this.verifyIds.length = 0;
    for (const id of pending) this.verifyIds.push(id);
    for (const id of this.tokens) this.verifyIds.push(id);
    return {
      tokens: this.tokens,
      probs: this.doSample ? this.probs.list : undefined,
      fed: this.tokens.length,
      verifyInput: this.verifyIds,
    };
  }

  /**
   * Start of the continuation of the most recent earlier occurrence of the longest history suffix of
   * length maxNgram..1, or −1. Scans backwards, so recent context wins.
   */
  private lookup(history: Int32Array): number {
    const len = history.length;
    for (let g = Math.min(this.maxNgram, len - 1); g >= 1; g--) {
      const suffix = len - g;
      for (let start = suffix - 1; start >= 0; start--) {
        let k = 0;
        while (k < g && history[start + k] === history[suffix + k]) k++;
        if (k === g) return start + g;
      }
    }
    return -1;
  }

  private setOneHot(): void {
    for (let i = 0; i < this.tokens.length; i++) {
      const q = this.probs.at(i);
      if (this.hot[i] !== undefined && this.hot[i] >= 0) q[this.hot[i]] = 0;
      q[this.tokens[i]] = 1;
      this.hot[i] = this.tokens[i];
    }
  }

  rollback(): void {}

  dispose(): void {}
}
