/**
 * The self-speculative round (REFERENCE §1), all of it:
 *   1. draft   the drafter proposes up to d tokens (layers [0, E) + an exit head, or another Drafter)
 *   2. verify  the full model scores every fed row in one call, from the drafter's verifyFrom layer
 *   3. accept  longest agreeing prefix (greedy) or min(1, p/q) with the residual (sampling): accept.ts
 *   4. commit  history and KV cache back to the committed length; the emitted token is the next pending one
 */
import { DraftAcceptance } from '../accept.js';
import type { Drafter } from '../drafters/drafter.js';
import { now, type DecodeState, type TokenBlock } from '../state.js';
import type { Verifier } from '../verify.js';

export interface SelfSpecSettings {
  numSpeculations: number;
  /** +1 draft after a fully accepted round, −1 after a rejection (1..numSpeculations). */
  adaptiveDraftLength: boolean;
  vocabSize: number;
}

export async function* selfSpeculative(
  state: DecodeState,
  drafter: Drafter,
  verifier: Verifier,
  o: SelfSpecSettings,
): AsyncGenerator<TokenBlock> {
  const acceptance = new DraftAcceptance(o.vocabSize);
  let pending: readonly number[] = state.prompt; // committed tokens the cache has no rows for yet
  let d = o.numSpeculations;
  for (;;) {
    // The history holds prompt + committed tokens; the cache holds rows for all of them but `pending`.
    const committed = state.history.length;
    const draft = await drafter.draft(state, pending, Math.min(d, state.remaining() - 1));
    const logits = await verifier.verify(state, draft);

    const t = now();
    const bonus = draft.fed === draft.tokens.length; // the last draft was fed: its row predicts one more token
    const { accepted, next } = acceptance.accept({
      picker: state.picker,
      history: state.history.view(),
      committed,
      drafts: draft.tokens,
      draftProbs: draft.probs,
      logits,
      bonus,
    });
    state.times.sampling += now() - t;

    commit(state, drafter, committed, accepted, draft.fed);
    if (o.adaptiveDraftLength) d = accepted === draft.tokens.length ? Math.min(d + 1, o.numSpeculations) : Math.max(1, d - 1);

    const tokens = draft.tokens.slice(0, accepted);
    if (next !== null) tokens.push(next);
    yield { tokens, fromDraft: tokens.map((_, i) => i < accepted), drafted: draft.tokens.length, accepted };
    // Without a bonus row a fully accepted round has no next token: its last draft goes in next round.
    pending = [next ?? draft.tokens[draft.tokens.length - 1]];
  }
}

/**
 * Forgets the rejected drafts: the history back to `committed` (the generator pushes the emitted tokens),
 * the shared cache to the rows of the committed tokens that were fed, the drafter's own state likewise.
 */
function commit(state: DecodeState, drafter: Drafter, committed: number, accepted: number, fed: number): void {
  state.history.truncate(committed);
  state.cache.truncate(committed + Math.min(accepted, fed));
  drafter.rollback(committed + accepted);
}
