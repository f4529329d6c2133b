/**
 * The one-token modes on the same sessions and cache: `ar` (full model), `early-exit` (layers [0, E) and an
 * exit head, no verification: lossy, for comparison) and ACD (one stage reads two exits; `score` contrasts
 * them).
 */
import type { Stage } from '@mexit/model';
import { now, type DecodeState, type TokenBlock } from '../state.js';

/** The scores a token is picked from, given the stage's exit logits (default: its only exit's). */
export type StepScore = (logits: readonly Float32Array[]) => Float32Array;
const onlyExit: StepScore = (logits) => logits[0];

/** One token per call of `stage`. */
export async function* stepwise(
  state: DecodeState,
  stage: Stage,
  fromDraft: boolean,
  score: StepScore = onlyExit,
): AsyncGenerator<TokenBlock> {
  let pending = state.prompt;
  const single = [0];
  for (;;) {
    let t = now();
    const out = await stage.run(state.cache, pending, pending.length - 1);
    state.times.forward += now() - t;
    t = now();
    const token = state.picker.pick(score(out.logits), state.history.view());
    state.times.sampling += now() - t;
    yield { tokens: [token], fromDraft: [fromDraft] };
    single[0] = token;
    pending = single;
  }
}
