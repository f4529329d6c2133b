// Measured self-speculative sweep of an exported model, run by `train.py export --sweep` (or by hand):
// loads the directory in the engine (packages/speculative/dist, built by `pnpm build`), generates greedily
// from held-out prompts with autoregressive decoding and with self-spec at every (E, d) asked for, checks
// that every self-spec output equals the autoregressive one (lossless), and picks the (E, d) with the
// highest measured speed (new tokens / wall time, best of --repeats runs over all prompts).
// Usage: node tools/train/sweep.mjs <model-dir> <prompts.json> [--exits 1,2] [--drafts 1,2,3,4,6]
//        [--quantizations none,int8] [--max-new-tokens 48] [--repeats 3] [--threads 1]
// prompts.json: a JSON array of prompts (strings, or arrays of token ids). Output (last stdout line): JSON
// {ar: {tokensPerSecond}, results: [{exitLayer, numSpeculations, draftQuantization, tokensPerSecond, speedup,
// acceptanceRate, tokensPerRound, lossless}], best: {exitLayer, numSpeculations, draftQuantization, ...}}.
// draftQuantization 'none' (default) drafts with the exact weights; 'int8' / 'int4' with quantized draft layers.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { MexitGenerator } = await import(path.join(here, '../../packages/speculative/dist/index.js'));

const [dir, promptsPath, ...rest] = process.argv.slice(2);
if (!dir || !promptsPath) {
  console.error('usage: sweep.mjs <model-dir> <prompts.json> [--exits 1,2] [--drafts 1,2,3,4,6] [--max-new-tokens N] [--repeats N]');
  process.exit(2);
}
const opt = (name, fallback) => {
  const i = rest.indexOf(name);
  return i >= 0 && i + 1 < rest.length ? rest[i + 1] : fallback;
};
const list = (s) => s.split(',').map((x) => Number.parseInt(x, 10));
const prompts = JSON.parse(readFileSync(promptsPath, 'utf8'));
const maxNewTokens = Number.parseInt(opt('--max-new-tokens', '48'), 10);
const repeats = Number.parseInt(opt('--repeats', '3'), 10);
const quantizations = opt('--quantizations', 'none').split(',');
const threads = Number.parseInt(opt('--threads', '1'), 10);

const gen = await MexitGenerator.fromPretrained(dir, { threads });
try {
  const L = gen.runtime.numLayers;
  const exits = list(opt('--exits', String(Math.max(1, Math.round(L / 4)))));
  const drafts = list(opt('--drafts', '1,2,3,4,6'));
  for (const e of exits) if (!(e >= 1 && e < L)) throw new Error(`--exits: ${e} is not in 1..${L - 1}`);

  /** Best-of-repeats wall time over all prompts; ids of the last repeat. */
  async function measure(options) {
    let best = Number.POSITIVE_INFINITY;
    let ids = [];
    let tokens = 0;
    let drafted = 0;
    let accepted = 0;
    let rounds = 0;
    for (let r = 0; r < repeats; r++) {
      ids = [];
      tokens = drafted = accepted = rounds = 0;
      const t0 = performance.now();
      for (const p of prompts) {
        const res = await gen.generate(p, { ...options, maxNewTokens });
        ids.push(res.ids);
        tokens += res.ids.length;
        drafted += res.stats.drafted ?? 0;
        accepted += res.stats.accepted ?? 0;
        rounds += res.stats.rounds ?? 0;
      }
      best = Math.min(best, performance.now() - t0);
    }
    return { ids, tokens, ms: best, tokensPerSecond: tokens / (best / 1000), drafted, accepted, rounds };
  }

  await measure({ mode: 'ar' }); // warm-up: builds the full-model stage
  const ar = await measure({ mode: 'ar' });
  const results = [];
  for (const draftQuantization of quantizations) {
    for (const exitLayer of exits) {
      for (const numSpeculations of drafts) {
        const o = { mode: 'self-spec', exitLayer, numSpeculations, draftQuantization };
        await gen.generate(prompts[0], { ...o, maxNewTokens: 2 }); // warm-up: builds this split's stages
        const m = await measure(o);
        results.push({
          exitLayer,
          numSpeculations,
          draftQuantization,
          tokensPerSecond: m.tokensPerSecond,
          speedup: m.tokensPerSecond / ar.tokensPerSecond,
          acceptanceRate: m.drafted ? m.accepted / m.drafted : 0,
          tokensPerRound: m.rounds ? m.tokens / m.rounds : 0,
          lossless: JSON.stringify(m.ids) === JSON.stringify(ar.ids),
        });
      }
    }
  }
  // ar again after the self-spec runs: the faster of the two measurements is the baseline (a shared machine
  // drifts; this keeps the speed-ups conservative).
  const arAfter = await measure({ mode: 'ar' });
  if (arAfter.tokensPerSecond > ar.tokensPerSecond) ar.tokensPerSecond = arAfter.tokensPerSecond;
  for (const r of results) r.speedup = r.tokensPerSecond / ar.tokensPerSecond;
  const lossless = results.filter((r) => r.lossless);
  if (lossless.length === 0) throw new Error('no self-spec setting reproduced the autoregressive output');
  const best = lossless.reduce((a, b) => (b.tokensPerSecond > a.tokensPerSecond ? b : a));
  console.log(
    JSON.stringify({
      dir,
      numLayers: L,
      prompts: prompts.length,
      maxNewTokens,
      repeats,
      ar: { tokensPerSecond: ar.tokensPerSecond, tokens: ar.tokens },
      results,
      best,
    }),
  );
} finally {
  await gen.dispose();
}
