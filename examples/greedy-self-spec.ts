/**
 * Greedy self-speculative decoding (LayerSkip) in one function, to read top to bottom like llama2.c's
 * generate(): prefill, then rounds of draft → verify → accept → roll back, on nothing but two stages of
 * the model runtime, one KV cache and an argmax. Read greedySelfSpec() from the top: the numbered comments
 * are the steps of a round. Its test, greedy-self-spec.test.ts, runs under `pnpm test` (alone:
 * `npx vitest run examples/`) and checks that these ids are exactly generate()'s in 'ar' and 'self-spec' modes.
 *
 * Variant: the shared cache, as generate() runs self-spec with draftQuantization 'none' (REFERENCE §1).
 * The draft layers [0, E) and the verify layers [E, L) write their K/V rows into one cache, and the
 * verifier starts from the exit hidden states the drafts left behind, so no layer runs twice for a token.
 * What generate() does on top, none of which changes the ids: the prompt is the first round's pending
 * input (here a separate prefill emits the first token), full-length greedy drafts run as one chain call
 * (ExitPasses), and it adds EOS and stop strings, sampling, penalties, adaptive d and statistics.
 */
import { argmax } from '@mexit/core';
import type { ModelRuntime } from '@mexit/model';

export interface GreedySelfSpecOptions {
  /** E, 1 ≤ E < L: drafts read the output of block E through the shared head (final norm + LM head). */
  exitLayer: number;
  /** d ≥ 1: drafts per round. */
  numSpeculations: number;
  /** Exactly this many new tokens are returned (no EOS). */
  maxNewTokens: number;
}

/** The new token ids greedy decoding of the full model emits after `promptIds`, found by self-speculation. */
export async function greedySelfSpec(runtime: ModelRuntime, promptIds: number[], options: GreedySelfSpecOptions): Promise<number[]> {
  const { exitLayer: E, numSpeculations: d, maxNewTokens } = options;
  const { numLayers: L, hiddenSize, vocabSize } = runtime.config;

  // Two stages, holding each layer once. The drafter: embeddings, layers [0, E) and the head on block E's
  // output. The verifier: layers [E, L) and the model's head, fed hidden rows instead of ids.
  const drafter = await runtime.stage({ from: 0, to: E, exits: [{ layer: E }] });
  const verifier = await runtime.stage({ from: E, to: L, exits: [{ layer: L }] });
  // One cache for both: layer l holds a K/V row for every token that has gone through layer l. A stage runs
  // its input at the positions after its own layers' rows and appends the new rows.
  const cache = runtime.createCache(promptIds.length + maxNewTokens + d + 1);
  const logitsRow = (logits: Float32Array, i: number) => logits.subarray(i * vocabSize, (i + 1) * vocabSize);

  // Prefill: the prompt through all layers, [0, E) then [E, L) from its hidden rows. The third argument,
  // logitsStart, says from which row on a stage computes logits: none for the drafter (n of n rows),
  // only the last row's for the verifier. That row's argmax is the first new token.
  const promptHiddens = (await drafter.run(cache, promptIds, promptIds.length)).hidden;
  const prefill = await verifier.run(cache, promptHiddens, promptIds.length - 1);
  const newIds = [argmax(prefill.logits[0])];

  while (newIds.length < maxNewTokens) {
    // Invariant: the cache has rows for every token but the last one emitted, the round's pending token.
    // A round emits its accepted drafts plus one token of the full model: draft no more than fits.
    const numDrafts = Math.min(d, maxNewTokens - newIds.length - 1);

    // 1. Draft: feed the pending token, then each draft, through [0, E), one token per call; the exit
    //    head's argmax is the next draft. Keep every fed token's exit hidden (block E's output).
    const exitHiddens = new Float32Array((numDrafts + 1) * hiddenSize);
    const drafts: number[] = [];
    let token = newIds[newIds.length - 1];
    for (let i = 0; i < numDrafts; i++) {
      const step = await drafter.run(cache, [token]);
      exitHiddens.set(step.hidden, i * hiddenSize);
      token = argmax(step.logits[0]);
      drafts.push(token);
    }
    // The last draft is fed too, for its rows and exit hidden only (logitsStart 1 of 1 row: no logits), so
    // that the verifier also predicts the token after it: the bonus of a fully accepted round.
    exitHiddens.set((await drafter.run(cache, [token], 1)).hidden, numDrafts * hiddenSize);

    // 2. Verify: layers [E, L) run once over all numDrafts + 1 exit hiddens, attending to their own layers'
    //    rows of the committed tokens. Row i holds the full model's logits after the pending token + i drafts.
    const verified = (await verifier.run(cache, exitHiddens, 0)).logits[0];
    const fullModelToken = (i: number) => argmax(logitsRow(verified, i));

    // 3. Accept the longest prefix of drafts the full model agrees with, then emit the full model's own
    //    token after it: the correction at the first mismatch, or the bonus when every draft matched.
    let accepted = 0;
    while (accepted < numDrafts && drafts[accepted] === fullModelToken(accepted)) accepted++;
    newIds.push(...drafts.slice(0, accepted), fullModelToken(accepted));

    // 4. Roll back: drop the rows of rejected drafts in every layer. What stays is the prompt, the pending
    //    token and the accepted drafts, i.e. every token but the one just emitted: the invariant again.
    cache.truncate(promptIds.length + newIds.length - 1);
  }
  return newIds;
}
