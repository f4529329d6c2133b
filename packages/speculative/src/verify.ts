/**
 * Verify stage: layers [E, L) + the model's head, once over all rows the draft fed (pending token and
 * drafts), from their stored exit hiddens, against the same KV cache. With quantized drafts (which never
 * touch this cache) it is the full model [0, L) over the pending token and the draft ids instead. Then the
 * acceptance rule decides how many drafts the full model agrees with.
 */
import type { ModelRuntime, Stage } from '@mexit/model';
import { acceptGreedy, SpeculativeSampler } from './accept.js';
import { now, type DecodeState, type RowBuffer } from './state.js';

export class Verifier {
  private readonly sampler: SpeculativeSampler;
  private readonly targetProbs: Float32Array[] = [];
  private targets = new Int32Array(16);
  private readonly ids: number[] = [];

  private constructor(private readonly stage: Stage, private readonly vocabSize: number) {
    this.sampler = new SpeculativeSampler(vocabSize);
  }

  /** `fromLayer`: E (verify from the drafts' exit hiddens) or 0 (full model over ids, for quantized drafts). */
  static async create(runtime: ModelRuntime, fromLayer: number): Promise<Verifier> {
    const L = runtime.numLayers;
    return new Verifier(await runtime.stage({ from: fromLayer, to: L, exits: [{ layer: L }] }), runtime.config.vocabSize);
  }

  /** Full model over `pending` + `drafts` (ids): logits [drafts + 1, vocab] after the last pending token. */
  async verifyIds(state: DecodeState, pending: readonly number[], drafts: readonly number[]): Promise<Float32Array> {
    const t = now();
    this.ids.length = 0;
    for (const id of pending) this.ids.push(id);
    for (const id of drafts) this.ids.push(id);
    const out = await this.stage.run(state.cache, this.ids, pending.length - 1);
    state.times.verify += now() - t;
    return out.logits[0];
  }

  /**
   * Full-model logits [rows, vocab] for the last `rows` fed positions: the pending token and each fed draft
   * (rows = drafts + 1 when the last draft was fed, else drafts).
   */
  async verify(state: DecodeState, exitHiddens: RowBuffer, rows: number): Promise<Float32Array> {
    const t = now();
    const out = await this.stage.run(state.cache, exitHiddens.view(), exitHiddens.rows - rows);
    state.times.verify += now() - t;
    return out.logits[0];
  }

  /**
   * Applies the acceptance rule. `committed` is the history length before the drafts (the history holds
   * the drafts after it). Greedy: longest prefix matching the target's choices, then the target's token.
   * Sampling: min(1, p/q) acceptance with the residual, p warped exactly like q. `bonus`: the logits have a
   * row after the last draft; without it a fully accepted round has no next token (`next` null).
   */
  accept(state: DecodeState, drafts: number[], logits: Float32Array, draftProbs: Float32Array[], committed: number, bonus = true): { accepted: number; next: number | null } {
    const t = now();
    const V = this.vocabSize;
    const rows = drafts.length + (bonus ? 1 : 0);
    let result: { accepted: number; next: number | null };
    if (!state.picker.doSample) {
      if (this.targets.length < rows) this.targets = new Int32Array(rows * 2);
      for (let i = 0; i < rows; i++) {
        this.targets[i] = state.picker.warper.greedy(logits.subarray(i * V, (i + 1) * V), state.history.view(committed + i));
      }
      const accepted = acceptGreedy(drafts, this.targets);
      result = { accepted, next: accepted < rows ? this.targets[accepted] : null };
    } else {
      while (this.targetProbs.length < rows) this.targetProbs.push(new Float32Array(V));
      for (let i = 0; i < rows; i++) {
        state.picker.warper.probs(logits.subarray(i * V, (i + 1) * V), state.history.view(committed + i), this.targetProbs[i]);
      }
      const r = this.sampler.acceptSampled({ draftTokens: drafts, draftProbs, targetProbs: this.targetProbs, rng: state.picker.rng, bonus });
      result = { accepted: r.accepted, next: r.nextToken };
    }
    state.times.sampling += now() - t;
    return result;
  }
}
