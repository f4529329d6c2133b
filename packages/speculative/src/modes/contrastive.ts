/**
 * Auto-contrastive decoding as a mode: one stage over all layers reads the upper and lower exits, the
 * contrast turns them into log-probabilities, and the picker treats those as logits (so temperature,
 * top-k/p and sampling apply to the contrasted distribution).
 */
import type { Stage } from '@mexit/model';
import { now, type DecodeState, type TokenBlock } from '../state.js';
import type { ContrastFunction } from './acd.js';

export async function* contrastive(state: DecodeState, stage: Stage, contrast: ContrastFunction, vocabSize: number): AsyncGenerator<TokenBlock> {
  const logProbs = new Float32Array(vocabSize);
  let pending = state.prompt;
  const single = [0];
  for (;;) {
    let t = now();
    const out = await stage.run(state.cache, pending, pending.length - 1);
    state.times.forward += now() - t;
    t = now();
    contrast(out.logits[0], out.logits[1], logProbs);
    const token = state.picker.pick(logProbs, state.history.view());
    state.times.sampling += now() - t;
    yield { tokens: [token], fromDraft: [false] };
    single[0] = token;
    pending = single;
  }
}
