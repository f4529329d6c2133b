/**
 * The verify stage: the full model's logits for every row a draft fed, in one call against the shared KV
 * cache — layers [E, L) + the head from the drafts' exit hiddens, or [0, L) over their ids.
 */
import type { ModelRuntime, Stage } from '@mexit/model';
import type { Draft } from './drafters/drafter.js';
import { now, type DecodeState } from './state.js';

export class Verifier {
  private constructor(
    private readonly stage: Stage,
    private readonly rowWidth: number,
  ) {}

  /** `fromLayer`: the drafter's verifyFrom (E: input is exit hidden rows; 0: input is ids). */
  static async create(runtime: ModelRuntime, fromLayer: number): Promise<Verifier> {
    const L = runtime.numLayers;
    const stage = await runtime.stage({ from: fromLayer, to: L, exits: [{ layer: L }] });
    return new Verifier(stage, fromLayer === 0 ? 1 : runtime.config.hiddenSize);
  }

  /** Full-model logits [fed + 1, vocab]: after the last pending token and after each fed draft. */
  async verify(state: DecodeState, draft: Draft): Promise<Float32Array> {
    const t = now();
    const inputRows = draft.verifyInput.length / this.rowWidth;
    const out = await this.stage.run(state.cache, draft.verifyInput, inputRows - (draft.fed + 1));
    state.times.verify += now() - t;
    return out.logits[0];
  }
}
