// Writes the bundled model's card (fixtures/models/<name>/README.md) from measurements by the engine:
//   per exit layer: validation perplexity, early-exit tokens/s, self-spec acceptance and speedup vs ar
//   (from bench/results/<name>-speculative.json, produced by `pnpm bench --suite speculative` in the same
//   session), the evaluation tables of `evaluate()` (perplexity / last-word task / tokens/s per mode),
//   and sample stories.
// Usage: pnpm build && node bench/model-card.mjs [--model fixtures/models/tinystories-ee] [--max-tokens N]
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { ModelRuntime } from '../packages/model/dist/index.js';
import { MexitGenerator } from '../packages/speculative/dist/index.js';
import { evaluate } from '../packages/speculative/dist/eval/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'fixtures/models/tinystories-ee' },
    data: { type: 'string', default: 'fixtures/data/valid-small.txt' },
    'max-tokens': { type: 'string', default: '32768' },
    'lambada-examples': { type: 'string', default: '100' },
    training: { type: 'string', default: '' },
  },
});
const dir = values.model;
const name = basename(dir);
const specPath = `bench/results/${name}-speculative.json`;
if (!existsSync(specPath)) throw new Error(`${specPath} is missing: run \`pnpm bench --suite speculative\` first`);
const spec = JSON.parse(readFileSync(specPath, 'utf8'));
const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
const generation = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8'));
const L = config.num_hidden_layers;

const runtime = await ModelRuntime.load(dir);
const report = await evaluate(runtime, {
  dataPath: values.data,
  maxTokens: Number(values['max-tokens']),
  lambadaExamples: Number(values['lambada-examples']),
});

const pct = (x) => `${(100 * x).toFixed(1)}%`;
const fix = (x, d = 2) => (x === undefined || x === null || Number.isNaN(x) ? '–' : Number(x).toFixed(d));
// Perplexity per shared exit, by layer (the full model is layer L).
const pplByLayer = new Map();
for (const row of report.json.perplexity.rows) {
  if (row.kind === 'exit' && (row.head ?? 'shared') === 'shared') pplByLayer.set(row.layer, row.perplexity);
  if (row.kind === 'original') pplByLayer.set(L, row.perplexity);
}
const grid = spec.sections.grid.rows;
const early = new Map(spec.sections.earlyExit.rows.map((r) => [r.E, r]));
const bestByE = new Map();
const singleDraft = new Map(); // d = 1: acceptance = per-token agreement of the draft exit with the full model
for (const r of grid) {
  if (!bestByE.has(r.E) || r.speedup > bestByE.get(r.E).speedup) bestByE.set(r.E, r);
  if (r.d === 1) singleDraft.set(r.E, r);
}

const exitRows = [];
for (let l = 1; l <= L; l++) {
  const b = bestByE.get(l);
  const e = early.get(l);
  const one = singleDraft.get(l);
  exitRows.push(
    `| ${l}${l === L ? ' (full model)' : ''} | ${fix(pplByLayer.get(l))} | ${e ? fix(e.tokensPerSecond, 0) : l === L ? `${fix(spec.summary.arTokensPerSecond, 0)} (ar)` : '–'} | ${one ? pct(one.acceptance) : '–'} | ${b ? `${pct(b.acceptance)} (d = ${b.d})` : '–'} | ${b ? `${fix(b.speedup)}× (d = ${b.d})` : '–'} |`,
  );
}

const generator = new MexitGenerator(runtime);
const story = await generator.generate('Once upon a time', { maxNewTokens: 160 });
const sampled = await generator.generate('Tom and Lily went to the park.', {
  maxNewTokens: 160,
  doSample: true,
  temperature: 0.8,
  topP: 0.95,
  seed: 7,
});
const best = spec.summary.best;
const variant = spec.summary.bestDraftVariant;
const confirmed = spec.summary.confirmed;
const m = spec.machine;
const draftWeights = generation.mexit_draft_quantization ?? 'none';
const recordedNote =
  draftWeights === 'none'
    ? ' (drafts run the exact layers [0, E) on the shared KV cache, LayerSkip)'
    : ` (drafts run ${draftWeights} block-quantized copies of layers [0, E) and the head on a small cache of their own; the full model verifies every draft, so the output is unchanged)`;
const rec = confirmed?.recorded;

const card = `# ${name}: a TinyStories early-exit model for self-speculative decoding

A ${L}-layer Llama-architecture model (hidden ${config.hidden_size}, ${config.num_attention_heads} heads / ${config.num_key_value_heads} kv heads,
SwiGLU ${config.intermediate_size}, vocabulary ${config.vocab_size}, tied embeddings, ${(readFileSync(join(dir, 'model.safetensors')).length / 2 ** 20).toFixed(1)} MiB of f16 weights) trained by
mexit's own recipe (\`tools/train/\`: "llama3-earlyexit" layer dropout p_l = 0.5·(l/L)² and early-exit loss
through the shared final norm + head, strengthened and then combined with self-distillation to the full model:
see the training line below) on TinyStories (\`../shared/data/tinystories/train.txt\`).
Saved under HF \`LlamaForCausalLM\` names, so it loads like any LayerSkip/Llama checkpoint.
${values.training ? `\nTraining: ${values.training}\n` : ''}
Recommended self-speculative settings (in \`generation_config.json\`, used by \`pnpm mexit generate\` by default):
**exit layer E = ${generation.mexit_exit_layer}, draft length d = ${generation.mexit_num_speculations}, draft weights ${draftWeights}**${recordedNote}.

## Per exit (measured by the engine)

Validation perplexity on ${report.json.perplexity.tokens} tokens of \`${values.data}\` (TinyStories valid.txt, first stories),
shared exit (final norm + LM head) after block l. Speed: greedy, ${spec.summary.prompts} prompts × ${spec.summary.maxNewTokens} new tokens,
ORT intra-op threads ${m.threads}, ${m.cpu} (${m.cores} cores), ${m.date.slice(0, 10)}; each configuration paired with ar in the same run
(\`bench/results/${name}-speculative.md\`). Self-spec is lossless: its ids equal ar's in all ${spec.summary.idChecks} bench runs.

Acceptance = accepted drafts ÷ drafted tokens. At d = 1 it is the per-token agreement of exit E with the full
model on its own greedy output; at larger d every draft after the first mismatch counts as rejected, so it is lower.

| exit layer | validation perplexity | early-exit tokens/s | self-spec acceptance, d = 1 | acceptance at best d | self-spec speedup vs ar (best d) |
|---:|---:|---:|---:|---:|---:|
${exitRows.join('\n')}

Best cell of the grid: **E = ${best.exitLayer}, d = ${best.numSpeculations}: ${fix(best.speedup)}× vs ar** (${fix(best.tokensPerSecond, 0)} vs ${fix(spec.summary.arTokensPerSecond, 0)} tokens/s), ${pct(best.acceptance)} of drafts accepted, ${fix(best.tokensPerRound)} tokens per round.
${confirmed ? `\nThe best cells above are maxima of single noisy passes; the leaders re-measured together (${confirmed.passes} passes, interleaved with ar, total-time ratio):${rec ? ` **the recorded settings (E = ${rec.E}, d = ${rec.d}, draft weights ${rec.quantization}): ${fix(rec.speedup)}×** (${fix(rec.tokensPerSecond, 0)} vs ${fix(rec.arTokensPerSecond, 0)} tokens/s);` : ''} best of all **E = ${confirmed.best.E}, d = ${confirmed.best.d}, draft weights ${confirmed.best.quantization}: ${fix(confirmed.best.speedup)}×**; best with exact drafts on the shared cache (LayerSkip) **E = ${confirmed.bestExact?.E}, d = ${confirmed.bestExact?.d}: ${fix(confirmed.bestExact?.speedup)}×** (\`bench/results/${name}-speculative.md\`, "Confirmation").\n` : ''}${variant ? `\nBest draft variant in its single pass (quantized draft layers on their own cache with a full-model verify, or no bonus row; still lossless): **E = ${variant.exitLayer}, d = ${variant.numSpeculations}, draft weights ${variant.draftQuantization}, bonus ${variant.bonusToken ? 'on' : 'off'}: ${fix(variant.speedup)}×** (${pct(variant.acceptance)} accepted, ${fix(variant.tokensPerRound)} tokens per round).\n` : ''}
${report.markdown.replace(/^# .*\n/, '').replace(/^## /gm, '### ')}

## Sample stories

Greedy, self-spec (identical to the full model's greedy output), prompt "Once upon a time":

> Once upon a time${story.text.replace(/\n+/g, ' ')}

(${story.stats.newTokens} tokens, ${pct(story.stats.acceptanceRate)} of drafts accepted)

Sampled (temperature 0.8, top-p 0.95, seed 7), prompt "Tom and Lily went to the park.":

> Tom and Lily went to the park.${sampled.text.replace(/\n+/g, ' ')}

## Use

\`\`\`sh
pnpm mexit generate "Once upon a time"                # self-spec at E = ${generation.mexit_exit_layer}, d = ${generation.mexit_num_speculations}, draft weights ${draftWeights}
pnpm mexit generate --mode ar "Once upon a time"      # the full model, for comparison
pnpm mexit eval                                       # regenerates the evaluation tables
\`\`\`

Regenerate this card: \`pnpm bench --suite speculative && node bench/model-card.mjs\`.
`;
writeFileSync(join(dir, 'README.md'), card);
writeFileSync(
  `bench/results/${name}-card.json`,
  JSON.stringify({ exits: exitRows, eval: report.json, best, story: story.text, sampled: sampled.text }, null, 2),
);
console.log(card);
await generator.dispose();
