/**
 * Self-speculative decoding vs autoregressive decoding on one model (built packages: packages/speculative/dist).
 *
 * Every measurement is paired: for each prompt, `ar` and the configuration under test run back to back
 * (alternating which goes first), and speedup = median over prompts of (tokens/s of the configuration /
 * tokens/s of its paired ar run). Machine noise then hits both sides alike. Greedy decoding throughout;
 * EOS is disabled (`eosTokenIds: []`) so every run produces exactly maxNewTokens tokens. Every self-spec
 * run's ids are compared with ar's ids for the same prompt (greedy self-spec is lossless).
 * `benchSpeculative(dir, { quick, golden, dataFile })` returns a report for bench/run.mjs to render.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Rng } from '../packages/core/dist/index.js';
import { MexitGenerator, resolveOptions } from '../packages/speculative/dist/index.js';
import { acceptFigureName, acceptStats, addCounts, gridFigureName, speculativeFigures } from './figures.mjs';
import { section } from './progress.mjs';

const D_GRID = [1, 2, 3, 4, 5, 6, 7, 8];

/** Repository-relative path when inside the repository, else absolute. */
const displayPath = (dir) => {
  const rel = path.relative(process.cwd(), path.resolve(dir));
  return rel && !rel.startsWith('..') ? rel : path.resolve(dir);
};

const median = (xs) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
/** Element-wise sum of the runs' `stats.acceptCounts` (rounds with exactly k accepted drafts; [] outside self-spec). */
const sumAcceptCounts = (stats) => stats.reduce((acc, s) => addCounts(acc, s.acceptCounts), []);

/** Exit layers to try: all of 1..L−1 for small models, else 1, 2, 3, 4, 6, L/2 (and the model's recommendation). */
function exitGrid(L, recommended, quick) {
  let grid;
  if (quick) grid = [1, Math.floor(L / 2)];
  else if (L <= 6) grid = Array.from({ length: L - 1 }, (_, i) => i + 1);
  else grid = [1, 2, 3, 4, 6, Math.floor(L / 2)];
  if (!quick && recommended) grid.push(recommended);
  return [...new Set(grid.filter((e) => e >= 1 && e < L))].sort((a, b) => a - b);
}

/** First sentences of the first `count` stories (stories are separated by `<|endoftext|>` lines). */
function storyPrompts(dataFile, count) {
  const text = fs.readFileSync(dataFile, 'utf8');
  const stories = text
    .split(/^<\|endoftext\|>\s*$/m)
    .map((s) => s.trim())
    .filter(Boolean);
  return stories.slice(0, count).map((story) => {
    const m = /^[\s\S]*?[.!?](?=\s|$)/.exec(story);
    return (m ? m[0] : story.slice(0, 80)).replace(/\s+/g, ' ');
  });
}

function commonPrefix(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

const shortList = (ids, n = 12) => `[${ids.slice(0, n).join(', ')}${ids.length > n ? ', …' : ''}]`;

/**
 * @param {string} dir model directory
 * @param {{ quick?: boolean, golden?: boolean, dataFile: string }} options
 */
export async function benchSpeculative(dir, { quick = false, golden = false, dataFile }) {
  const modelName = path.basename(path.resolve(dir));
  const generator = await MexitGenerator.fromPretrained(dir);
  const rt = generator.runtime;
  const cfg = rt.config;
  const L = rt.numLayers;
  const defaults = resolveOptions(rt, { mode: 'self-spec' });
  const warnings = [];

  // ---- prompts
  const numPrompts = quick ? 2 : 8;
  let prompts;
  if (rt.tokenizer) {
    prompts = storyPrompts(dataFile, numPrompts).map((text) => ({ label: text, ids: generator.encodePrompt(text) }));
  } else {
    // No tokenizer (the golden models): fixed pseudo-random prompts of 8–16 ids.
    const rng = new Rng(1234);
    prompts = Array.from({ length: numPrompts }, (_, p) => {
      const ids = Array.from({ length: 8 + ((p * 5) % 9) }, () => rng.nextU32() % cfg.vocabSize);
      return { label: `random ids ${shortList(ids, 6)}`, ids };
    });
  }
  const longestPrompt = Math.max(...prompts.map((p) => p.ids.length));
  const maxNewTokens = Math.min(quick ? 16 : golden ? 64 : 128, cfg.maxPositions - longestPrompt);
  const base = { maxNewTokens, eosTokenIds: [], doSample: false };

  const generate = (p, options) => generator.generate(prompts[p].ids, { ...base, ...options });
  const log = (line) => console.log(`  [speculative ${modelName}] ${line}`);
  const progress = (name, total) => section(`[speculative ${modelName}] ${name}`, total);

  // ---- reference ar ids (also warms up the JIT and builds the full stage)
  const arIds = [];
  const arProgress = progress('ar reference', prompts.length);
  for (let p = 0; p < prompts.length; p++) {
    arProgress.next(`prompt ${p}`);
    arIds.push((await generate(p, { mode: 'ar' })).ids);
  }
  const mismatches = [];
  let idChecks = 0;

  /**
   * Runs `options` on every prompt, each paired with an ar run (order alternating by prompt).
   * `checkIds`: the configuration must reproduce ar's ids exactly (self-spec, greedy).
   */
  async function paired(label, options, checkIds) {
    await generator.generate(prompts[0].ids, { ...base, ...options, maxNewTokens: 2 }); // builds this config's stages
    globalThis.gc?.();
    const runs = [];
    for (let p = 0; p < prompts.length; p++) {
      let ar;
      let test;
      if (p % 2 === 0) {
        ar = await generate(p, { mode: 'ar' });
        test = await generate(p, options);
      } else {
        test = await generate(p, options);
        ar = await generate(p, { mode: 'ar' });
      }
      if (commonPrefix(ar.ids, arIds[p]) !== arIds[p].length || ar.ids.length !== arIds[p].length) {
        mismatches.push({
          config: 'ar (repeat)',
          prompt: p,
          expected: arIds[p],
          got: ar.ids,
          firstDifference: commonPrefix(ar.ids, arIds[p]),
        });
        console.error(`!!! [speculative ${modelName}] ar is not deterministic: prompt ${p} ids differ from the first ar run`);
      }
      const prefix = commonPrefix(test.ids, arIds[p]);
      const same = prefix === arIds[p].length && test.ids.length === arIds[p].length;
      if (checkIds) {
        idChecks++;
        if (!same) {
          mismatches.push({ config: label, prompt: p, expected: arIds[p], got: test.ids, firstDifference: prefix });
          console.error(`!!! [speculative ${modelName}] ${label}: prompt ${p} ids differ from ar at token ${prefix}`);
        }
      }
      runs.push({ ar: ar.stats, test: test.stats, speedup: test.stats.tokensPerSecond / ar.stats.tokensPerSecond, prefix, same });
    }
    return summarise(runs);
  }

  function summarise(runs) {
    const t = runs.map((r) => r.test);
    const rounds = sum(t.map((s) => s.rounds));
    const drafted = sum(t.map((s) => s.drafted));
    const perRound = (key) => sum(t.map((s) => s.timeMs[key])) / rounds;
    const bound = t.map((s) => s.layerBoundSpeedup).filter((x) => x !== undefined);
    return {
      tokensPerSecond: median(t.map((s) => s.tokensPerSecond)),
      arTokensPerSecond: median(runs.map((r) => r.ar.tokensPerSecond)),
      speedup: median(runs.map((r) => r.speedup)),
      speedupMin: Math.min(...runs.map((r) => r.speedup)),
      speedupMax: Math.max(...runs.map((r) => r.speedup)),
      acceptance: drafted ? sum(t.map((s) => s.accepted)) / drafted : undefined,
      tokensPerRound: sum(t.map((s) => s.newTokens)) / rounds,
      msDraft: perRound('draft'),
      msVerify: perRound('verify'),
      msSampling: perRound('sampling'),
      msOther: perRound('other'),
      msRound: perRound('total'),
      layerBoundSpeedup: bound.length ? median(bound) : undefined,
      acceptCounts: sumAcceptCounts(t),
      agreement: median(runs.map((r) => r.prefix / maxNewTokens)),
      idsMatch: runs.every((r) => r.same),
      prompts: runs.length,
    };
  }

  // ---- E × d grid
  const exits = exitGrid(L, cfg.recommendedExitLayer, quick);
  const dGrid = quick ? [1, 4] : D_GRID;
  const grid = [];
  const gridProgress = progress('grid cell', exits.length * dGrid.length);
  for (const E of exits) {
    for (const d of dGrid) {
      gridProgress.next(`E=${E} d=${d}`);
      const s = await paired(`self-spec E=${E} d=${d}`, { mode: 'self-spec', exitLayer: E, numSpeculations: d }, true);
      grid.push({ E, d, ...s, check: s.idsMatch ? 'ok' : '**MISMATCH**' });
      log(
        `E=${E} d=${d}: ${s.tokensPerSecond.toFixed(1)} tok/s, ar ${s.arTokensPerSecond.toFixed(1)}, speedup ${s.speedup.toFixed(2)}×, acceptance ${(s.acceptance * 100).toFixed(1)}%`,
      );
    }
  }
  const valid = grid.filter((g) => g.idsMatch);
  const best = (valid.length ? valid : grid).reduce((a, b) => (b.speedup > a.speedup ? b : a));

  // ---- early exit at each E
  const earlyExit = [];
  const earlyProgress = progress('early exit', exits.length);
  for (const E of exits) {
    earlyProgress.next(`E=${E}`);
    const s = await paired(`early-exit E=${E}`, { mode: 'early-exit', exitLayer: E }, false);
    earlyExit.push({ E, ...s });
    log(
      `early-exit E=${E}: ${s.tokensPerSecond.toFixed(1)} tok/s, speedup ${s.speedup.toFixed(2)}×, agreement ${(s.agreement * 100).toFixed(0)}%`,
    );
  }

  // ---- draft confidence threshold and adaptive draft length at the best (E, d)
  const knobs = [];
  // [threshold, adaptive, d]: the threshold matters most with long drafts, so it is also tried at d = 8.
  const combos = quick
    ? [
        [0, false, best.d],
        [0.5, false, best.d],
        [0, true, best.d],
      ]
    : [
        [0, false, best.d],
        [0.3, false, best.d],
        [0.5, false, best.d],
        [0, true, best.d],
        [0.3, true, best.d],
        [0.5, true, best.d],
        [0.5, false, 8],
        [0.7, false, 8],
        [0.9, false, 8],
      ];
  const knobProgress = progress('draft controls', combos.length);
  for (const [threshold, adaptive, d] of combos) {
    knobProgress.next(`E=${best.E} d=${d} threshold=${threshold} adaptive=${adaptive}`);
    const s = await paired(
      `self-spec E=${best.E} d=${d} threshold=${threshold} adaptive=${adaptive}`,
      {
        mode: 'self-spec',
        exitLayer: best.E,
        numSpeculations: d,
        draftConfidenceThreshold: threshold,
        adaptiveDraftLength: adaptive,
      },
      true,
    );
    knobs.push({ d, threshold, adaptive: adaptive ? 'on' : 'off', ...s, check: s.idsMatch ? 'ok' : '**MISMATCH**' });
    log(`threshold=${threshold} adaptive=${adaptive}: speedup ${s.speedup.toFixed(2)}×, acceptance ${(s.acceptance * 100).toFixed(1)}%`);
  }
  // ---- draft variants: quantized draft layers (own cache, full-model verify) and no bonus row
  const variants = [];
  const variantExits = quick
    ? [best.E]
    : [...new Set([Math.max(1, best.E - 1), best.E, best.E + 1, Math.floor(L / 2)])].filter((e) => e >= 1 && e < L);
  const variantDs = quick ? [best.d] : [...new Set([3, 4, 5, best.d, 6, 7, 8])].sort((a, b) => a - b);
  const variantConfigs = [];
  for (const E of variantExits) for (const d of variantDs) variantConfigs.push({ E, d, quantization: 'int8', bonus: true });
  // int4 halves the draft weights again at a small cost in acceptance, so it may pay at a deeper exit.
  const int4Cells = quick
    ? [[best.E, best.d]]
    : [
        [best.E, best.d],
        [best.E, 6],
        [best.E + 1, best.d],
        [best.E + 1, 6],
      ];
  const int4Seen = new Set();
  for (const [E, d] of int4Cells) {
    if (E >= L || int4Seen.has(`${E},${d}`)) continue;
    int4Seen.add(`${E},${d}`);
    variantConfigs.push({ E, d, quantization: 'int4', bonus: true });
  }
  variantConfigs.push({ E: best.E, d: best.d, quantization: 'none', bonus: false });
  const variantProgress = progress('draft variant', variantConfigs.length);
  for (const v of variantConfigs) {
    variantProgress.next(`E=${v.E} d=${v.d} draft ${v.quantization}${v.bonus ? '' : ' no bonus'}`);
    const s = await paired(
      `self-spec E=${v.E} d=${v.d} draft ${v.quantization}${v.bonus ? '' : ' no bonus'}`,
      {
        mode: 'self-spec',
        exitLayer: v.E,
        numSpeculations: v.d,
        draftQuantization: v.quantization,
        bonusToken: v.bonus,
      },
      true,
    );
    variants.push({ ...v, bonus: v.bonus ? 'on' : 'off', ...s, check: s.idsMatch ? 'ok' : '**MISMATCH**' });
    log(
      `E=${v.E} d=${v.d} draft ${v.quantization} bonus ${v.bonus}: speedup ${s.speedup.toFixed(2)}×, acceptance ${(s.acceptance * 100).toFixed(1)}%`,
    );
  }
  const bestVariant = variants.filter((v) => v.idsMatch).reduce((a, b) => (a && a.speedup >= b.speedup ? a : b), undefined);

  // ---- confirmation: the leaders above were picked from noisy single passes (winner's curse), so the top
  // configurations are re-measured together, interleaved with ar, over several passes; speedup here is
  // total ar time ÷ total configuration time for the same tokens.
  const byRank = (rows) => rows.filter((r) => r.idsMatch).sort((a, b) => b.speedup - a.speedup);
  const leaders = [
    ...byRank(grid)
      .slice(0, quick ? 1 : 3)
      .map((g) => ({ E: g.E, d: g.d, quantization: 'none', bonus: 'on', firstPass: g.speedup })),
    ...byRank(variants)
      .slice(0, quick ? 1 : 2)
      .map((v) => ({ E: v.E, d: v.d, quantization: v.quantization, bonus: v.bonus, firstPass: v.speedup })),
  ];
  // The default configuration is always confirmed: it is what users get. resolveOptions takes it from the model's
  // recorded settings (generation_config.json) when it has them, else from the library's defaults.
  const byDefault = {
    E: defaults.exitLayer,
    d: defaults.numSpeculations,
    quantization: defaults.draftQuantization,
    bonus: defaults.bonusToken ? 'on' : 'off',
  };
  const hasRecorded = Boolean(cfg.recommendedExitLayer && cfg.recommendedNumSpeculations);
  const isDefault = (c) => ['E', 'd', 'quantization', 'bonus'].every((key) => c[key] === byDefault[key]);
  if (!leaders.some(isDefault)) {
    const firstPass = [...grid.map((g) => ({ ...g, quantization: 'none', bonus: 'on' })), ...variants].find(isDefault)?.speedup;
    leaders.push({ ...byDefault, firstPass });
  }
  const optionsOf = (c) => ({
    mode: 'self-spec',
    exitLayer: c.E,
    numSpeculations: c.d,
    draftQuantization: c.quantization,
    bonusToken: c.bonus === 'on',
  });
  const passes = quick ? 1 : 3;
  const totals = [{ ms: 0, tokens: 0 }, ...leaders.map(() => ({ ms: 0, tokens: 0 }))];
  // accept_counts of the first pass only (one run per prompt, like the rows above): greedy passes repeat it exactly.
  const confirmedAcceptCounts = leaders.map(() => []);
  let turn = 0;
  const confirmProgress = progress('confirmation', passes * prompts.length);
  for (let pass = 0; pass < passes; pass++) {
    for (let p = 0; p < prompts.length; p++) {
      confirmProgress.next(`pass ${pass + 1}, prompt ${p}: ar and ${leaders.length} configurations`);
      const runs = [{ mode: 'ar' }, ...leaders.map(optionsOf)];
      for (let k = 0; k < runs.length; k++) {
        const i = (k + turn) % runs.length; // rotate who goes first
        const out = await generate(p, runs[i]);
        totals[i].ms += out.stats.timeMs.total;
        totals[i].tokens += out.stats.newTokens;
        if (i > 0 && pass === 0) confirmedAcceptCounts[i - 1] = addCounts(confirmedAcceptCounts[i - 1], out.stats.acceptCounts);
        if (i > 0 && (commonPrefix(out.ids, arIds[p]) !== arIds[p].length || out.ids.length !== arIds[p].length)) {
          mismatches.push({
            config: `confirmation ${JSON.stringify(runs[i])}`,
            prompt: p,
            expected: arIds[p],
            got: out.ids,
            firstDifference: commonPrefix(out.ids, arIds[p]),
          });
        }
      }
      turn++;
    }
  }
  const arRate = totals[0].tokens / totals[0].ms;
  const confirmed = leaders.map((c, i) => ({
    ...c,
    tokensPerSecond: (totals[i + 1].tokens / totals[i + 1].ms) * 1000,
    arTokensPerSecond: arRate * 1000,
    speedup: totals[i + 1].tokens / totals[i + 1].ms / arRate,
    acceptCounts: confirmedAcceptCounts[i],
  }));
  for (const c of confirmed) {
    const first = c.firstPass === undefined ? '–' : `${c.firstPass.toFixed(2)}×`;
    log(`confirmed E=${c.E} d=${c.d} ${c.quantization} bonus ${c.bonus}: ${c.speedup.toFixed(2)}× (first pass ${first})`);
  }
  const bestConfirmed = confirmed.reduce((a, b) => (b.speedup > a.speedup ? b : a));
  const defaultConfirmed = confirmed.find(isDefault);
  const recordedConfirmed = hasRecorded ? defaultConfirmed : undefined;
  const exactConfirmed = confirmed.filter((c) => c.quantization === 'none' && c.bonus === 'on');
  const bestExactConfirmed = exactConfirmed.length ? exactConfirmed.reduce((a, b) => (b.speedup > a.speedup ? b : a)) : undefined;
  // One row per confirmed configuration, the default first; `role` names the ones the accept-lengths figure shows.
  const acceptRows = [defaultConfirmed, ...confirmed.filter((c) => c !== defaultConfirmed)].map((c) => {
    const roles = [];
    if (c === defaultConfirmed) roles.push(hasRecorded ? 'default (recorded settings)' : 'default');
    if (c === bestConfirmed) roles.push('best confirmed');
    if (c === bestExactConfirmed && c !== bestConfirmed) roles.push('best exact drafts (LayerSkip)');
    const st = acceptStats(c.acceptCounts);
    const row = { role: roles.join(', '), E: c.E, d: c.d, quantization: c.quantization, bonus: c.bonus, speedup: c.speedup, ...st };
    row.acceptCounts = c.acceptCounts;
    for (const [k, n] of c.acceptCounts.entries()) row[`k${k}`] = `${n} (${st.rounds ? Math.round((100 * n) / st.rounds) : 0}%)`;
    return row;
  });
  const maxAcceptK = Math.max(0, ...acceptRows.map((r) => r.acceptCounts.length - 1));
  await generator.dispose();

  // ---- report
  for (const m of mismatches) {
    warnings.push(
      `IDS MISMATCH: ${m.config}, prompt ${m.prompt}: self-spec/ar ids differ${m.firstDifference !== undefined ? ` from token ${m.firstDifference}` : ''}`,
    );
  }
  const arAll = median(grid.map((g) => g.arTokensPerSecond));
  const notes = [
    `Model \`${displayPath(dir)}\`: ${cfg.modelType}, ${L} layers, hidden ${cfg.hiddenSize}, vocab ${cfg.vocabSize}; ` +
      `default self-spec settings E = ${byDefault.E} (${defaults.exitHead} head), d = ${byDefault.d}, ` +
      `draft weights ${byDefault.quantization} (${hasRecorded ? "the model's recorded settings" : 'library defaults'}). ` +
      `${prompts.length} prompts, greedy, ${maxNewTokens} new tokens each (EOS disabled so every run has the same length).`,
  ];
  if (golden) {
    notes.push(
      '**This is a random-weight golden test model, not trained for early exit**: its intermediate layers do not predict the final ' +
        "layer's tokens, so drafts are almost always rejected and self-speculation is *slower* than ar here. These numbers exercise the " +
        'machinery (and its lossless-ness), they say nothing about the speedup on a trained early-exit model.',
    );
  }
  notes.push(
    'Each configuration is measured paired with ar: per prompt, ar and the configuration run back to back (order alternating). ' +
      'tokens/s are medians over prompts (prefill included, as in `stats.tokensPerSecond`); speedup = median over prompts of the per-prompt ratio ' +
      'configuration tokens/s ÷ paired ar tokens/s (range = min–max over prompts). acceptance = accepted drafts / drafted tokens over all prompts; ' +
      'tokens/round = new tokens / rounds. ms/round = `stats.timeMs` summed over prompts ÷ rounds: draft = layers [0,E) incl. ' +
      "exit head; verify = the full model over the drafts (layers [E,L) + head); the prompt's prefill falls in the first " +
      "round's draft and verify; sampling = token picks and the acceptance rule; other = the rest (rollback, text decoding, JS glue). " +
      "layer bound = `stats.layerBoundSpeedup`, an upper bound from layer counts (ar's L layers per token ÷ the layers self-spec runs " +
      'in sequence: d·E per draft round + L per verify), not a measurement: the gap to speedup is per-call overhead.',
  );
  const promptRows = prompts.map((p, i) => ({
    prompt: i,
    tokens: p.ids.length,
    text: p.label.length > 90 ? `${p.label.slice(0, 87)}…` : p.label,
  }));
  const gridColumns = [
    { key: 'E', label: 'E', fmt: 'int' },
    { key: 'd', label: 'd', fmt: 'int' },
    { key: 'tokensPerSecond', label: 'tok/s', fmt: 'f1' },
    { key: 'arTokensPerSecond', label: 'ar tok/s', fmt: 'f1' },
    { key: 'speedup', label: 'speedup', fmt: 'x' },
    { key: 'range', label: 'range' },
    { key: 'acceptance', label: 'acceptance', fmt: 'pct' },
    { key: 'tokensPerRound', label: 'tok/round', fmt: 'f2' },
    { key: 'msDraft', label: 'draft ms/rd', fmt: 'f3' },
    { key: 'msVerify', label: 'verify ms/rd', fmt: 'f3' },
    { key: 'msSampling', label: 'sampling ms/rd', fmt: 'f3' },
    { key: 'msOther', label: 'other ms/rd', fmt: 'f3' },
    { key: 'layerBoundSpeedup', label: 'layer bound', fmt: 'x' },
    { key: 'check', label: 'ids = ar' },
  ];
  const withRange = (r) => ({ ...r, range: `${r.speedupMin.toFixed(2)}–${r.speedupMax.toFixed(2)}` });
  const matrixRows = exits.map((E) => {
    const row = { E };
    for (const d of dGrid) row[`d${d}`] = grid.find((g) => g.E === E && g.d === d)?.speedup;
    return row;
  });

  const sections = [
    {
      id: 'prompts',
      title: 'Prompts',
      columns: [
        { key: 'prompt', label: '#', fmt: 'int' },
        { key: 'tokens', label: 'tokens', fmt: 'int' },
        { key: 'text', label: 'prompt' },
      ],
      rows: promptRows,
    },
    {
      id: 'correctness',
      title: 'Correctness: self-spec ids = ar ids (greedy)',
      notes: [
        mismatches.length
          ? `**${mismatches.length} MISMATCH(ES)** — greedy self-speculation must reproduce ar exactly; see the rows below.`
          : `All ${idChecks} self-spec runs reproduced the ar ids exactly (and every repeated ar run matched the reference).`,
      ],
      columns: [
        { key: 'config', label: 'configuration' },
        { key: 'prompt', label: 'prompt', fmt: 'int' },
        { key: 'firstDifference', label: 'first differing token', fmt: 'int' },
        { key: 'expected', label: 'ar ids' },
        { key: 'got', label: 'got' },
      ],
      rows: mismatches.map((m) => ({ ...m, config: `⚠️ MISMATCH ${m.config}`, expected: shortList(m.expected), got: shortList(m.got) })),
    },
    {
      id: 'speedupMatrix',
      title: 'Speedup vs ar (rows: exit layer E, columns: draft length d)',
      notes: [
        `ar baseline: ${arAll.toFixed(1)} tokens/s (median over the grid's paired ar runs). ` +
          `Best: **E = ${best.E}, d = ${best.d}: ${best.speedup.toFixed(2)}×** at ${(best.acceptance * 100).toFixed(1)}% acceptance.`,
        `![E × d speedup heatmap: exact drafts and the quantized draft variants](${gridFigureName(modelName)})`,
      ],
      columns: [{ key: 'E', label: 'E \\ d', fmt: 'int' }, ...dGrid.map((d) => ({ key: `d${d}`, label: `d=${d}`, fmt: 'x' }))],
      rows: matrixRows,
    },
    { id: 'grid', title: 'Self-spec grid (greedy)', columns: gridColumns, rows: grid.map(withRange) },
    {
      id: 'earlyExit',
      title: 'Early-exit mode (layers [0,E) + exit head only; lossy) at each E',
      notes: ['agreement = median fraction of the generated tokens before the first divergence from ar.'],
      columns: [
        { key: 'E', label: 'E', fmt: 'int' },
        { key: 'tokensPerSecond', label: 'tok/s', fmt: 'f1' },
        { key: 'arTokensPerSecond', label: 'ar tok/s', fmt: 'f1' },
        { key: 'speedup', label: 'speedup', fmt: 'x' },
        { key: 'range', label: 'range' },
        { key: 'agreement', label: 'agreement with ar', fmt: 'pct' },
      ],
      rows: earlyExit.map(withRange),
    },
    {
      id: 'draftControls',
      title: `Draft confidence threshold and adaptive draft length at the best E = ${best.E} (d = ${best.d}, and 8)`,
      notes: [
        "threshold: drafting stops when the draft token's probability falls below it (0 = off). adaptive: d grows by 1 after a fully accepted round (up to d) and shrinks by 1 after a rejection.",
      ],
      columns: [
        { key: 'd', label: 'd', fmt: 'int' },
        { key: 'threshold', label: 'threshold', fmt: 'f1' },
        { key: 'adaptive', label: 'adaptive' },
        ...gridColumns.slice(2),
      ],
      rows: knobs.map(withRange),
    },
    {
      id: 'draftVariants',
      title: 'Draft variants: quantized draft layers (int8 / int4, own cache, full-model verify) and no bonus row',
      notes: [
        'quantization: `draftQuantization` — layers [0,E) and the exit head as MatMulNBits blocks (32 weights per F32 scale, int8 activations) on a ' +
          'KV cache of their own; the verify pass then runs all L layers over the pending token and the drafts (verify ms includes layers [0,E)). ' +
          "bonus off: `bonusToken: false`, the last draft is not fed and waits as the next round's input." +
          (bestVariant
            ? ` Best here: **E = ${bestVariant.E}, d = ${bestVariant.d}, ${bestVariant.quantization}, bonus ${bestVariant.bonus}: ${bestVariant.speedup.toFixed(2)}×**.`
            : ''),
      ],
      columns: [
        { key: 'E', label: 'E', fmt: 'int' },
        { key: 'd', label: 'd', fmt: 'int' },
        { key: 'quantization', label: 'draft weights' },
        { key: 'bonus', label: 'bonus' },
        ...gridColumns.slice(2),
      ],
      rows: variants.map(withRange),
    },
    {
      id: 'confirmation',
      title: `Confirmation: the leaders re-measured together (${passes} pass${passes === 1 ? '' : 'es'} × ${prompts.length} prompts, interleaved with ar)`,
      notes: [
        'The best cells above are maxima of noisy single passes. Here the top grid cells, the top draft variants and the default ' +
          'configuration run again, in turn with ar ' +
          'on every prompt (the first to run rotates); speedup = total ar time ÷ total configuration time for the same number of tokens. ' +
          `Best: **E = ${bestConfirmed.E}, d = ${bestConfirmed.d}, draft weights ${bestConfirmed.quantization}, bonus ${bestConfirmed.bonus}: ${bestConfirmed.speedup.toFixed(2)}×**` +
          (bestExactConfirmed
            ? `; best with exact drafts on the shared cache (LayerSkip): **E = ${bestExactConfirmed.E}, d = ${bestExactConfirmed.d}: ${bestExactConfirmed.speedup.toFixed(2)}×**`
            : '') +
          `; the default${hasRecorded ? " (the model's recorded settings)" : ''}: ` +
          `**E = ${defaultConfirmed.E}, d = ${defaultConfirmed.d}, draft weights ${defaultConfirmed.quantization}: ` +
          `${defaultConfirmed.speedup.toFixed(2)}×**.`,
      ],
      columns: [
        { key: 'E', label: 'E', fmt: 'int' },
        { key: 'd', label: 'd', fmt: 'int' },
        { key: 'quantization', label: 'draft weights' },
        { key: 'bonus', label: 'bonus' },
        { key: 'tokensPerSecond', label: 'tok/s', fmt: 'f1' },
        { key: 'arTokensPerSecond', label: 'ar tok/s', fmt: 'f1' },
        { key: 'speedup', label: 'speedup', fmt: 'x' },
        { key: 'firstPass', label: 'first pass', fmt: 'x' },
      ],
      rows: confirmed,
    },
    {
      id: 'acceptCounts',
      title: 'Accepted drafts per round (accept_counts) of the confirmed configurations',
      notes: [
        'Counts are `stats.acceptCounts` (k = rounds in which exactly k of the d drafts were accepted; k = d: all of them) ' +
          `summed over the ${prompts.length} prompts of the first confirmation pass (greedy: every pass repeats them); ` +
          'each cell is rounds (share of rounds). mean accepted = Σ k·count ÷ rounds; tokens per round = mean accepted + 1 ' +
          'with the bonus row. The figure shows the rows named under "shown as".',
        `![accepted drafts per round](${acceptFigureName(modelName)})`,
      ],
      columns: [
        { key: 'role', label: 'shown as' },
        { key: 'E', label: 'E', fmt: 'int' },
        { key: 'd', label: 'd', fmt: 'int' },
        { key: 'quantization', label: 'draft weights' },
        { key: 'bonus', label: 'bonus' },
        { key: 'speedup', label: 'speedup', fmt: 'x' },
        { key: 'rounds', label: 'rounds', fmt: 'int' },
        { key: 'meanAccepted', label: 'mean accepted', fmt: 'f2' },
        ...Array.from({ length: maxAcceptK + 1 }, (_, k) => ({ key: `k${k}`, label: `k=${k}` })),
      ],
      rows: acceptRows,
    },
  ];

  const bestKnob = knobs.filter((k) => k.idsMatch).reduce((a, b) => (a && a.speedup >= b.speedup ? a : b), undefined);
  return {
    name: `${modelName}-speculative`,
    title: `self-speculative decoding: ${modelName}${golden ? ' (random golden model — not trained for early exit)' : ''}`,
    threads: rt.options.threads,
    notes,
    warnings,
    sections,
    figures: speculativeFigures,
    summary: {
      model: modelName,
      golden,
      numLayers: L,
      prompts: prompts.length,
      maxNewTokens,
      arTokensPerSecond: arAll,
      best: {
        exitLayer: best.E,
        numSpeculations: best.d,
        speedup: best.speedup,
        tokensPerSecond: best.tokensPerSecond,
        acceptance: best.acceptance,
        tokensPerRound: best.tokensPerRound,
      },
      // recorded: the default configuration when it comes from the model's generation_config.json (the model card quotes it).
      confirmed: { best: bestConfirmed, bestExact: bestExactConfirmed, default: defaultConfirmed, recorded: recordedConfirmed, passes },
      bestDraftVariant: bestVariant && {
        exitLayer: bestVariant.E,
        numSpeculations: bestVariant.d,
        draftQuantization: bestVariant.quantization,
        bonusToken: bestVariant.bonus === 'on',
        speedup: bestVariant.speedup,
        tokensPerSecond: bestVariant.tokensPerSecond,
        acceptance: bestVariant.acceptance,
        tokensPerRound: bestVariant.tokensPerRound,
      },
      bestDraftControls: bestKnob && {
        d: bestKnob.d,
        threshold: bestKnob.threshold,
        adaptive: bestKnob.adaptive,
        speedup: bestKnob.speedup,
        acceptance: bestKnob.acceptance,
      },
      idsMismatches: mismatches.length,
      idChecks,
    },
  };
}
