/**
 * Baselines on the same sessions and cache: `ar` (full model, one token per step) and `early-exit`
 * (layers [0, E) and an exit head, no verification: lossy, for comparison).
 */
import type { Stage } from '@mexit/model';
import { now, type DecodeState, type TokenBlock } from '../state.js';

/** One token per call of `stage` (whose single exit supplies the logits). */
export async function* stepwise(state: DecodeState, stage: Stage, fromDraft: boolean): AsyncGenerator<TokenBlock> {
  let pending = state.prompt;
  const single = [0];
  for (;;) {
    let t = now();
    const out = await stage.run(state.cache, pending, pending.length - 1);
    state.times.forward += now() - t;
    t = now();
    const token = state.picker.pick(out.logits[0], state.history.view());
    state.times.sampling += now() - t;
    yield { tokens: [token], fromDraft: [fromDraft] };
    single[0] = token;
    pending = single;
  }
}
