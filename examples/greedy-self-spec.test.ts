/**
 * The reading version of self-speculation must emit exactly what the engine emits: generate() in 'ar' mode
 * (plain greedy decoding) and in 'self-spec' mode with exact shared-cache drafts, for several prompts and
 * (E, d) pairs from E = 1 to E = L − 1 and d = 1 to d longer than most rounds can use. On the HF goldens it
 * must also equal HF transformers' own greedy ids.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors } from '@mexit/core';
import { ModelRuntime } from '@mexit/model';
import { MexitGenerator } from '@mexit/speculative';
import { greedySelfSpec } from './greedy-self-spec.js';

const fixture = (path: string) => fileURLToPath(new URL(`../fixtures/${path}`, import.meta.url));

/** (E, d) pairs for an L-layer model: both ends of E, d = 1 and a d longer than most rounds accept. */
function exitDraftPairs(L: number): [number, number][] {
  const middle = Math.floor(L / 2);
  return [
    [1, 1],
    [1, 12],
    [middle, 4],
    [L - 1, 1],
    [L - 1, 12],
  ];
}

interface Case {
  prompt: number[];
  maxNewTokens: number;
  /** HF transformers' greedy ids, where the fixture has them. */
  hf?: number[];
}

function checkAgainstGenerate(label: string, dir: string, cases: (runtime: ModelRuntime) => Case[]): void {
  describe(label, () => {
    let runtime: ModelRuntime;
    beforeAll(async () => {
      runtime = await ModelRuntime.load(dir, { threads: 1 });
    });
    afterAll(async () => {
      await runtime?.dispose();
    });

    it('greedySelfSpec ids equal generate() ar and self-spec ids for every prompt and (E, d)', async () => {
      const generator = new MexitGenerator(runtime);
      const pairs = exitDraftPairs(runtime.numLayers);
      expect(pairs.map(([E]) => E)).toContain(runtime.numLayers - 1);
      let acceptedBySpec = 0;
      for (const { prompt, maxNewTokens, hf } of cases(runtime)) {
        const ar = (await generator.generate(prompt, { mode: 'ar', maxNewTokens, eosTokenIds: [] })).ids;
        expect(ar).toHaveLength(maxNewTokens);
        // A constant output would make the comparison weak (gpt2-tiny's golden ids cycle through 3 tokens).
        expect(new Set(ar).size).toBeGreaterThan(1);
        if (hf) expect(ar).toEqual(hf);
        for (const [exitLayer, numSpeculations] of pairs) {
          const where = `prompt of ${prompt.length} tokens, E = ${exitLayer}, d = ${numSpeculations}`;
          const mine = await greedySelfSpec(runtime, prompt, { exitLayer, numSpeculations, maxNewTokens });
          const spec = await generator.generate(prompt, {
            mode: 'self-spec',
            exitLayer,
            numSpeculations,
            maxNewTokens,
            draftQuantization: 'none',
            exitHead: 'shared',
            eosTokenIds: [],
          });
          expect(mine, `${where}: vs ar`).toEqual(ar);
          expect(mine, `${where}: vs self-spec`).toEqual(spec.ids);
          acceptedBySpec += spec.stats.accepted;
        }
      }
      // Drafts were accepted, so multi-token rounds (and their roll-back) were compared, not only rejections.
      expect(acceptedBySpec).toBeGreaterThan(0);
    });
  });
}

checkAgainstGenerate('bundled model (tinystories-ee)', fixture('models/tinystories-ee'), (runtime) => {
  const texts = ['Once upon a time', 'Tom had a red ball.', 'The sun was hot and the kids went to the lake.'];
  const generator = new MexitGenerator(runtime);
  return texts.map((text) => ({ prompt: generator.encodePrompt(text), maxNewTokens: 40 }));
});

for (const name of ['llama2-tiny', 'llama32-tiny', 'gpt2-tiny', 'gpt-neo-tiny']) {
  checkAgainstGenerate(`HF golden ${name}`, fixture(`goldens/${name}`), () => {
    const goldens = openSafetensors(fixture(`goldens/${name}/goldens.safetensors`));
    try {
      // The golden prompts have 5, 17 and 40 tokens; greedy_k holds HF generate()'s greedy continuation.
      return [0, 1, 2].map((k) => {
        const prompt = Array.from(goldens.get(`input_ids_${k}`).data as BigInt64Array, Number);
        const hf = Array.from(goldens.get(`greedy_${k}`).data as BigInt64Array, Number);
        return { prompt, maxNewTokens: hf.length, hf };
      });
    } finally {
      goldens.close();
    }
  });
}
