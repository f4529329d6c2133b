/**
 * The prompt-lookup drafter (n-gram drafts from the history) behind the same Drafter interface: greedy
 * self-spec with it is token-identical to ar on every golden architecture and on the bundled model, over
 * random prompts built to repeat (so lookups hit) and random options; the lookup itself proposes what
 * followed the latest earlier occurrence of the longest suffix.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LogitsWarper, TokenPicker, type KvCache } from '@mexit/core';
import { MexitGenerator, OptionsError, type GenerateOptions } from '@mexit/speculative';
import { PromptLookupDrafter } from '@mexit/speculative/drafters';
import { newPhaseTimes, TokenHistory, type DecodeState } from '../src/state.js';
import { prng } from './support/prng.js';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));

function stateWith(ids: number[], eos: number[] = []): DecodeState {
  const history = new TokenHistory();
  for (const id of ids) history.push(id);
  return {
    cache: null as unknown as KvCache, // the lookup drafter never touches a cache
    history,
    picker: new TokenPicker(new LogitsWarper(100, {}), false, 0),
    prompt: ids,
    remaining: () => 100,
    times: newPhaseTimes(),
    isEos: (id) => eos.includes(id),
  };
}

describe('PromptLookupDrafter.draft', () => {
  it('proposes what followed the latest earlier occurrence of the longest suffix (3, then 2, then 1 tokens)', async () => {
    const d = new PromptLookupDrafter(100, false);
    // Suffix [7, 8, 9] occurred at 1..3 → continuation 10, 11, 12.
    let draft = await d.draft(stateWith([6, 7, 8, 9, 10, 11, 12, 7, 8, 9]), [9], 3);
    expect(draft.tokens).toEqual([10, 11, 12]);
    expect(draft.fed).toBe(3);
    expect(Array.from(draft.verifyInput)).toEqual([9, 10, 11, 12]);
    // The latest occurrence wins: [5, 1] occurs twice; the later one is followed by 3.
    draft = await d.draft(stateWith([5, 1, 2, 5, 1, 3, 4, 5, 1]), [1], 2);
    expect(draft.tokens).toEqual([3, 4]);
    // Only a 1-gram matches.
    draft = await d.draft(stateWith([4, 2, 9, 3, 2]), [2], 4);
    expect(draft.tokens).toEqual([9, 3, 2]);
    // No earlier occurrence: no drafts, and the verifier still gets the pending token.
    draft = await d.draft(stateWith([1, 2, 3]), [3], 4);
    expect(draft.tokens).toEqual([]);
    expect(Array.from(draft.verifyInput)).toEqual([3]);
  });

  it('stops at n and at an EOS, pushes the drafts onto the history, and gives one-hot q when sampling', async () => {
    const d = new PromptLookupDrafter(20, true);
    const state = stateWith([1, 2, 3, 19, 4, 1, 2], [19]);
    const draft = await d.draft(state, [2], 5);
    expect(draft.tokens).toEqual([3, 19]);
    expect(Array.from(state.history.view())).toEqual([1, 2, 3, 19, 4, 1, 2, 3, 19]);
    expect(draft.probs?.length).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < 2; i++) {
      const q = draft.probs![i];
      expect(q[draft.tokens[i]]).toBe(1);
      expect(q.reduce((a: number, b: number) => a + b, 0)).toBe(1);
    }
    // Reused buffers are reset: the next round's q is one-hot at its own token only.
    const next = await d.draft(stateWith([5, 6, 7, 5, 6]), [6], 1);
    expect(next.tokens).toEqual([7]);
    expect(next.probs![0][7]).toBe(1);
    expect(next.probs![0].reduce((a: number, b: number) => a + b, 0)).toBe(1);
  });
});

const CASES = [
  { dir: 'goldens/gpt2-tiny', seed: 11 },
  { dir: 'goldens/gpt-neo-tiny', seed: 22 },
  { dir: 'goldens/llama2-tiny', seed: 33 },
  { dir: 'goldens/llama32-tiny', seed: 44 },
  { dir: 'models/tinystories-ee', seed: 55 },
];

const generators: MexitGenerator[] = [];
afterAll(async () => {
  for (const g of generators) await g.dispose();
});

for (const c of CASES) {
  describe(`prompt-lookup self-spec greedy is lossless: ${c.dir}`, () => {
    it('matches ar token for token on 60 random repeating prompts and options', async () => {
      const gen = await MexitGenerator.fromPretrained(fixture(c.dir), { threads: 1 });
      generators.push(gen);
      const V = gen.runtime.config.vocabSize;
      const rand = prng(c.seed);
      let accepted = 0;
      const mismatches: unknown[] = [];
      for (let k = 0; k < 60; k++) {
        // A segment repeated with noise between: the lookup finds n-grams of the prompt again.
        const segment = Array.from({ length: rand.int(2, 8) }, () => rand.int(0, V - 1));
        const prompt = [
          ...segment,
          ...Array.from({ length: rand.int(0, 6) }, () => rand.int(0, V - 1)),
          ...segment.slice(0, rand.int(1, segment.length)),
        ];
        const maxNewTokens = rand.int(1, 40);
        const repetitionPenalty = rand.float() < 0.25 ? 1.3 : 1;
        const ar = await gen.generate(prompt, { mode: 'ar', maxNewTokens, repetitionPenalty });
        const options: GenerateOptions = {
          mode: 'self-spec',
          drafter: 'prompt-lookup',
          numSpeculations: rand.int(1, 8),
          maxNewTokens,
          repetitionPenalty,
          adaptiveDraftLength: rand.float() < 0.3,
        };
        const spec = await gen.generate(prompt, options);
        accepted += spec.stats.accepted;
        expect(spec.stats.drafter).toBe('prompt-lookup');
        expect(spec.stats.tokenSources.filter((s) => s === 'draft').length).toBe(spec.stats.accepted);
        if (JSON.stringify(spec.ids) !== JSON.stringify(ar.ids) || spec.stats.stopReason !== ar.stats.stopReason) {
          mismatches.push({ prompt, options, ar: ar.ids, spec: spec.ids });
        }
      }
      expect(mismatches).toEqual([]);
      expect(accepted).toBeGreaterThan(0); // lookups hit and were accepted: the comparison means something
    });
  });
}

describe('prompt-lookup options', () => {
  it('refuses a draft quantization with the lookup drafter, and an unknown drafter, with typed errors', async () => {
    const gen = await MexitGenerator.fromPretrained(fixture('goldens/gpt2-tiny'), { threads: 1 });
    generators.push(gen);
    await expect(gen.generate([1, 2], { drafter: 'prompt-lookup', draftQuantization: 'int8' })).rejects.toMatchObject({
      code: 'CONTRADICTION',
    });
    await expect(gen.generate([1, 2], { drafter: 'medusa' as never })).rejects.toBeInstanceOf(OptionsError);
  });
});
