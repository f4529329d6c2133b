/**
 * Greedy losslessness of self-speculative decoding: for every golden model, self-spec must produce exactly
 * the tokens of plain autoregressive decoding (`ar`), over hundreds of random (prompt, exit layer, draft
 * length, options) combinations, and must reproduce HF transformers' own greedy ids on the golden prompts.
 * Any mismatch is reported with the full-model logit gap at the first differing position, so a near-tie
 * between the batched verify pass and the one-row ar pass can be told apart from a real bug.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors } from '@mexit/core';
import type { ExitHeadKind } from '@mexit/model';
import { SelfSpeculativeGenerator, type GenerateOptions } from '@mexit/speculative';
import { prng } from './support/prng.js';

const goldenDir = (name: string) => fileURLToPath(new URL(`../../../fixtures/goldens/${name}`, import.meta.url));

interface ModelCase {
  /** Label of the describe block. */
  label: string;
  dir: string;
  exitHead: ExitHeadKind;
  /** Exit layers to draw E from (all of 1..L−1 unless the head exists only at some layers). */
  exitLayers?: number[];
  seed: number;
}

const MODEL_CASES: ModelCase[] = [
  { label: 'gpt2-tiny', dir: 'gpt2-tiny', exitHead: 'shared', seed: 101 },
  { label: 'gpt-neo-tiny (local window 8)', dir: 'gpt-neo-tiny', exitHead: 'shared', seed: 202 },
  { label: 'llama2-tiny', dir: 'llama2-tiny', exitHead: 'shared', seed: 303 },
  { label: 'llama32-tiny (GQA, llama3 rope)', dir: 'llama32-tiny', exitHead: 'shared', seed: 404 },
  { label: 'gpt2-multiexit-tiny, shared head', dir: 'gpt2-multiexit-tiny', exitHead: 'shared', seed: 505 },
  {
    label: 'gpt2-multiexit-tiny, layer-specific head at 2',
    dir: 'gpt2-multiexit-tiny',
    exitHead: 'layer-specific',
    exitLayers: [2],
    seed: 606,
  },
];

/** Prompt groups per model; each group's ar reference is shared by VARIANTS self-spec settings. */
const GROUPS = 50;
const VARIANTS = 4;

interface Mismatch {
  prompt: number[];
  options: GenerateOptions;
  ar: number[];
  spec: number[];
  firstDiff: number;
  /** Full-model (one-row, fresh cache) logits at the first differing position: ar's token, spec's token, gap. */
  logitAr?: number;
  logitSpec?: number;
  gap?: number;
}

const generators = new Map<string, Promise<SelfSpeculativeGenerator>>();
function generatorFor(dir: string): Promise<SelfSpeculativeGenerator> {
  let g = generators.get(dir);
  if (!g) {
    g = SelfSpeculativeGenerator.fromPretrained(goldenDir(dir), { threads: 1 });
    generators.set(dir, g);
  }
  return g;
}

afterAll(async () => {
  for (const g of generators.values()) await (await g).dispose();
});

/**
 * Diagnoses a mismatch: runs the whole model once over prompt + the common prefix with a fresh cache and
 * reads the (penalised) logits of the two competing tokens at the differing position.
 */
async function diagnose(gen: SelfSpeculativeGenerator, m: Mismatch): Promise<void> {
  if (m.firstDiff >= m.ar.length || m.firstDiff >= m.spec.length) return;
  const rt = gen.runtime;
  const L = rt.numLayers;
  const V = rt.config.vocabSize;
  const stage = await rt.stage({ from: 0, to: L, exits: [{ layer: L }] });
  const input = [...m.prompt, ...m.ar.slice(0, m.firstDiff)];
  const out = await stage.run(rt.createCache(input.length), input, input.length - 1);
  const logits = Float32Array.from(out.logits[0].subarray(0, V));
  const penalty = Math.fround(m.options.repetitionPenalty ?? 1);
  if (penalty !== 1) {
    const raw = Float32Array.from(logits);
    for (const id of new Set(input)) logits[id] = raw[id] < 0 ? raw[id] * penalty : raw[id] / penalty;
  }
  m.logitAr = logits[m.ar[m.firstDiff]];
  m.logitSpec = logits[m.spec[m.firstDiff]];
  m.gap = m.logitAr - m.logitSpec;
}

function firstDifference(a: number[], b: number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

for (const mc of MODEL_CASES) {
  describe(`self-spec greedy is lossless: ${mc.label}`, () => {
    let gen: SelfSpeculativeGenerator;
    let L: number;
    let V: number;
    let maxPositions: number;
    beforeAll(async () => {
      gen = await generatorFor(mc.dir);
      L = gen.runtime.numLayers;
      V = gen.runtime.config.vocabSize;
      maxPositions = gen.runtime.config.maxPositions;
    });
    const exitLayersOf = () => mc.exitLayers ?? Array.from({ length: L - 1 }, (_, i) => i + 1);

    it('reproduces HF transformers greedy ids on the golden prompts, for every exit layer and several draft lengths', async () => {
      const goldens = openSafetensors(`${goldenDir(mc.dir)}/goldens.safetensors`);
      const mismatches: Mismatch[] = [];
      try {
        for (let k = 0; k < 3; k++) {
          const prompt = Array.from(goldens.get(`input_ids_${k}`).data as BigInt64Array, Number);
          const hf = Array.from(goldens.get(`greedy_${k}`).data as BigInt64Array, Number);
          const ar = (await gen.generate(prompt, { mode: 'ar', maxNewTokens: hf.length })).ids;
          expect(ar).toEqual(hf);
          for (const exitLayer of exitLayersOf()) {
            for (const numSpeculations of [1, 3, 8]) {
              const options: GenerateOptions = {
                mode: 'self-spec',
                exitHead: mc.exitHead,
                exitLayer,
                numSpeculations,
                maxNewTokens: hf.length,
              };
              const spec = (await gen.generate(prompt, options)).ids;
              const firstDiff = firstDifference(hf, spec);
              if (firstDiff >= 0) mismatches.push({ prompt, options, ar: hf, spec, firstDiff });
            }
          }
        }
      } finally {
        goldens.close();
      }
      for (const m of mismatches) await diagnose(gen, m);
      expect(mismatches).toEqual([]);
    });

    it(`matches ar token for token on ${GROUPS * VARIANTS} random (prompt, E, d, options) combinations`, async () => {
      const rand = prng(mc.seed);
      const exitLayers = exitLayersOf();
      const mismatches: Mismatch[] = [];
      let cases = 0;
      let acceptedDrafts = 0;
      let multiTokenRounds = 0;
      for (let group = 0; group < GROUPS; group++) {
        const prompt = Array.from({ length: rand.int(1, 40) }, () => rand.int(0, V - 1));
        const maxNewTokens = rand.int(1, 40);
        const repetitionPenalty = rand.float() < 0.3 ? [1.3, 0.8, 2][rand.int(0, 2)] : 1;
        const ar = await gen.generate(prompt, { mode: 'ar', maxNewTokens, repetitionPenalty });
        expect(ar.ids.length).toBeLessThanOrEqual(maxNewTokens);
        for (let v = 0; v < VARIANTS; v++) {
          const options: GenerateOptions = {
            mode: 'self-spec',
            exitHead: mc.exitHead,
            exitLayer: exitLayers[rand.int(0, exitLayers.length - 1)],
            numSpeculations: rand.int(1, 8),
            maxNewTokens,
            repetitionPenalty,
            draftConfidenceThreshold: rand.float() < 0.25 ? 0.02 + 0.3 * rand.float() : 0,
            adaptiveDraftLength: rand.float() < 0.3,
            bonusToken: rand.float() < 0.5,
            draftQuantization: (['none', 'none', 'int8', 'int4'] as const)[rand.int(0, 3)],
          };
          const spec = await gen.generate(prompt, options);
          cases++;
          acceptedDrafts += spec.stats.accepted;
          multiTokenRounds += spec.stats.rounds < spec.ids.length ? 1 : 0;
          // Bookkeeping must agree with the ids: accepted drafts are exactly the tokens marked 'draft'.
          expect(spec.stats.newTokens).toBe(spec.ids.length);
          expect(spec.stats.tokenSources.filter((s) => s === 'draft').length).toBe(spec.stats.accepted);
          const firstDiff = firstDifference(ar.ids, spec.ids);
          if (firstDiff >= 0 || spec.stats.stopReason !== ar.stats.stopReason) {
            mismatches.push({ prompt, options, ar: ar.ids, spec: spec.ids, firstDiff });
          }
        }
      }
      for (const m of mismatches) await diagnose(gen, m);
      expect(mismatches).toEqual([]);
      expect(cases).toBe(GROUPS * VARIANTS);
      // The comparison only means something if some drafts were accepted (multi-token blocks committed).
      expect(acceptedDrafts).toBeGreaterThan(0);
      expect(multiTokenRounds).toBeGreaterThan(0);
    });

    it('matches ar when the output fills the context exactly (prompt + maxNewTokens = max positions)', async () => {
      const rand = prng(mc.seed + 7);
      const mismatches: Mismatch[] = [];
      for (const maxNewTokens of [1, 2, 9]) {
        const prompt = Array.from({ length: maxPositions - maxNewTokens }, () => rand.int(0, V - 1));
        const ar = (await gen.generate(prompt, { mode: 'ar', maxNewTokens })).ids;
        for (const exitLayer of exitLayersOf()) {
          const options: GenerateOptions = { mode: 'self-spec', exitHead: mc.exitHead, exitLayer, numSpeculations: 8, maxNewTokens };
          const spec = (await gen.generate(prompt, options)).ids;
          const firstDiff = firstDifference(ar, spec);
          if (firstDiff >= 0) mismatches.push({ prompt, options, ar, spec, firstDiff });
        }
      }
      for (const m of mismatches) await diagnose(gen, m);
      expect(mismatches).toEqual([]);
    });
  });
}

describe('bundled model (tinystories-ee): exact and quantized drafts', () => {
  const dir = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));
  let gen: SelfSpeculativeGenerator;
  beforeAll(async () => {
    gen = await SelfSpeculativeGenerator.fromPretrained(dir, { threads: 1 });
  });
  afterAll(async () => {
    await gen.dispose();
  });

  it('int8 drafts keep the ids of ar and accept about as many drafts as exact ones (their cache is rolled back)', async () => {
    const prompts = ['Once upon a time', 'Tom had a red ball.', 'The sun was hot and the kids went to the lake.'];
    let exact = 0;
    let quantized = 0;
    for (const text of prompts) {
      const prompt = gen.encodePrompt(text);
      const options: GenerateOptions = { maxNewTokens: 48, eosTokenIds: [], exitLayer: 3, numSpeculations: 4 };
      const ar = await gen.generate(prompt, { ...options, mode: 'ar' });
      const spec = await gen.generate(prompt, { ...options, mode: 'self-spec', draftQuantization: 'none' });
      const int8 = await gen.generate(prompt, { ...options, mode: 'self-spec', draftQuantization: 'int8' });
      expect(spec.ids).toEqual(ar.ids);
      expect(int8.ids).toEqual(ar.ids);
      exact += spec.stats.accepted;
      quantized += int8.stats.accepted;
    }
    // A draft cache that kept rejected drafts' rows would draft from a wrong context and accept far fewer.
    expect(exact).toBeGreaterThan(40);
    expect(quantized).toBeGreaterThan(0.85 * exact);
    // Greedy int8 drafts of full length ran as one chain call per round (only the last rounds step singly).
    const chain = await gen.runtime.stage({ from: 0, to: 3, exits: [{ layer: 3 }], quantize: 'int8', chain: 4 });
    const single = await gen.runtime.stage({ from: 0, to: 3, exits: [{ layer: 3 }], quantize: 'int8' });
    expect(chain.calls).toBeGreaterThan(10);
    expect(single.calls).toBeLessThan(chain.calls);
  });

  it('an EOS drafted inside a chain ends the drafts there: ids and stop reason equal ar, exact and int8 drafts', async () => {
    let eosInDrafts = 0;
    for (const text of ['Once upon a time', 'Tom had a red ball.', 'Lily saw a big dog in the park.']) {
      const prompt = gen.encodePrompt(text);
      const free = await gen.generate(prompt, { mode: 'ar', maxNewTokens: 40, eosTokenIds: [] });
      // Each token of the free run, used as EOS, stops generation at its first occurrence.
      for (const position of [4, 9, 15, 23]) {
        const eos = free.ids[position];
        const options: GenerateOptions = { maxNewTokens: 40, eosTokenIds: [eos], exitLayer: 3, numSpeculations: 6 };
        const ar = await gen.generate(prompt, { ...options, mode: 'ar' });
        expect(ar.stats.stopReason).toBe('eos');
        for (const draftQuantization of ['none', 'int8'] as const) {
          for (const bonusToken of [true, false]) {
            const spec = await gen.generate(prompt, { ...options, mode: 'self-spec', draftQuantization, bonusToken });
            expect(spec.ids).toEqual(ar.ids);
            expect(spec.stats.stopReason).toBe('eos');
            eosInDrafts += spec.stats.tokenSources.at(-1) === 'draft' ? 1 : 0;
          }
        }
      }
    }
    expect(eosInDrafts).toBeGreaterThan(10); // the EOS was usually drafted, i.e. cut out of a chain
  });
});
