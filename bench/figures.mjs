#!/usr/bin/env node
/**
 * SVG figures of a speculative report, built from its JSON (bench/results/<model>-speculative.json):
 *   <model>-speculative-grid.svg   heatmap of the E × d speedup grid (exact drafts, and one panel per quantized variant)
 *   <model>-accept-lengths.svg     histogram of drafts accepted per round (accept_counts): the default configuration,
 *                                  and the best confirmed ones when they differ
 *
 * bench/run.mjs calls `speculativeFigures` right after writing the JSON. To redraw from existing results:
 *   node bench/figures.mjs [bench/results/<model>-speculative.json ...] [--out DIR]
 * (default: every bench/results/*-speculative.json, figures written next to it). A report written before the
 * bench recorded accept_counts gets the heatmap only.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { heatmapSvg, histogramSvg } from './svg.mjs';

export const gridFigureName = (model) => `${model}-speculative-grid.svg`;
export const acceptFigureName = (model) => `${model}-accept-lengths.svg`;

const QUANT_TITLES = {
  none: 'Exact drafts: layers [0,E) + shared exit head on the shared KV cache (LayerSkip)',
  int8: 'int8 draft weights: quantized layers [0,E) + head on their own KV cache, full-model verify',
  int4: 'int4 draft weights: quantized layers [0,E) + head on their own KV cache, full-model verify',
};
const weightsLabel = (q) => (q === 'none' ? 'exact drafts' : `${q} draft weights`);
const configLabel = (c) => `E = ${c.E}, d = ${c.d}, ${weightsLabel(c.quantization)}${c.bonus === 'off' ? ', no bonus row' : ''}`;
const modelOf = (report) => report.summary?.model ?? report.name.replace(/-speculative$/, '');
const goldenPrefix = (s) => (s.golden ? 'RANDOM GOLDEN MODEL (not trained for early exit) · ' : '');

/** "2026-11-24 05:39 UTC · AMD EPYC, 2 cores · node v20 · onnxruntime-node 1.30.0 · 2 ORT threads · load 0.5 → 1.5" */
function machineLine(machine = {}) {
  const parts = [
    machine.date ? `${machine.date.slice(0, 16).replace('T', ' ')} UTC` : 'date unknown',
    `${machine.cpu ?? 'unknown CPU'}, ${machine.cores ?? '?'} cores`,
    `node ${machine.node ?? '?'}`,
    `onnxruntime-node ${machine.onnxruntime ?? '?'}`,
  ];
  if (machine.threads !== undefined) parts.push(`${machine.threads} ORT threads`);
  if (machine.loadAverage1m !== undefined) parts.push(`load ${machine.loadAverage1m} → ${machine.loadAverageEnd ?? '?'}`);
  if (machine.quick) parts.push('--quick smoke run');
  return parts.join(' · ');
}

/** Element-wise sum of count vectors of possibly different lengths. */
export function addCounts(a = [], b = []) {
  return Array.from({ length: Math.max(a.length, b.length) }, (_, i) => (a[i] ?? 0) + (b[i] ?? 0));
}

/** rounds, mean accepted drafts per round, and share of fully accepted rounds of an accept_counts vector. */
export function acceptStats(counts = []) {
  const rounds = counts.reduce((a, b) => a + b, 0);
  const accepted = counts.reduce((a, c, k) => a + c * k, 0);
  return {
    rounds,
    meanAccepted: rounds ? accepted / rounds : undefined,
    fullRounds: rounds ? (counts[counts.length - 1] ?? 0) / rounds : undefined,
  };
}

/** The default configuration of a report (`recorded`: reports from before the bench always confirmed the default). */
const defaultOf = (summary) => summary.confirmed?.default ?? summary.confirmed?.recorded;

/** Heatmap spec (see svg.mjs) of a speculative report's JSON, or undefined when it has no grid. */
function gridFigureSpec(report) {
  const s = report.summary ?? {};
  const grid = report.sections?.grid?.rows ?? [];
  if (!grid.length) return undefined;
  const variants = report.sections?.draftVariants?.rows ?? [];
  const def = defaultOf(s);
  const groups = [{ quantization: 'none', rows: grid.map((r) => ({ ...r, quantization: 'none', bonus: 'on' })) }];
  for (const q of new Set(variants.filter((v) => v.bonus === 'on' && v.quantization !== 'none').map((v) => v.quantization))) {
    groups.push({ quantization: q, rows: variants.filter((v) => v.bonus === 'on' && v.quantization === q) });
  }
  const columns = [...new Set(groups.flatMap((g) => g.rows.map((r) => r.d)))].sort((a, b) => a - b);
  const panels = groups.map((g) => {
    const ok = g.rows.filter((r) => r.idsMatch !== false && Number.isFinite(r.speedup));
    const best = ok.length ? ok.reduce((a, b) => (b.speedup > a.speedup ? b : a)) : undefined;
    return {
      title: QUANT_TITLES[g.quantization] ?? weightsLabel(g.quantization),
      rows: [...new Set(g.rows.map((r) => r.E))].sort((a, b) => a - b),
      cells: g.rows.map((r) => ({
        row: r.E,
        col: r.d,
        value: r.speedup,
        acceptance: r.acceptance,
        best: r === best,
        mismatch: r.idsMatch === false,
        marked: !!def && def.E === r.E && def.d === r.d && def.quantization === g.quantization && def.bonus === 'on',
      })),
    };
  });
  const footnotes = [];
  for (const v of variants.filter((r) => r.bonus === 'off' && Number.isFinite(r.speedup))) {
    const acceptance = Number.isFinite(v.acceptance) ? `, acceptance ${Math.round(v.acceptance * 100)}%` : '';
    footnotes.push(`Also measured: ${configLabel(v)}: ${v.speedup.toFixed(2)}×${acceptance}.`);
  }
  footnotes.push(
    'Each cell is one paired pass over the prompts (noisy: ±15 % on a shared machine); ' +
      'the best cells are re-measured in the report\'s "Confirmation" section.',
  );
  const c = s.confirmed;
  if (c?.best) {
    footnotes.push(
      `Confirmed (${c.passes} pass${c.passes === 1 ? '' : 'es'}, total-time ratio): ` +
        `best ${configLabel(c.best)}: ${c.best.speedup.toFixed(2)}×` +
        (def ? `; default ${configLabel(def)}: ${def.speedup.toFixed(2)}×.` : '.'),
    );
  }
  return {
    title: `Self-speculative speedup vs autoregressive decoding: ${s.model ?? report.name}`,
    subtitle: [
      `${goldenPrefix(s)}${s.numLayers} layers · ${s.prompts} prompts × ${s.maxNewTokens} new tokens, greedy · ` +
        'speedup = median over prompts of tok/s ÷ paired ar tok/s' +
        (s.arTokensPerSecond ? ` (ar ≈ ${s.arTokensPerSecond.toFixed(0)} tok/s)` : ''),
      machineLine(report.machine),
    ],
    rowLabel: 'exit layer E',
    colLabel: 'draft length d',
    columns,
    panels,
    legendLabel: 'speedup vs ar (log scale)',
    markLabel: c?.recorded ? "default: the model's recorded settings" : 'default settings',
    footnotes,
  };
}

/** Histogram spec of the report's acceptCounts section (the rows with a role), or undefined when it has none. */
function acceptFigureSpec(report) {
  const s = report.summary ?? {};
  const rows = (report.sections?.acceptCounts?.rows ?? []).filter((r) => r.role && r.acceptCounts?.length);
  if (!rows.length) return undefined;
  return {
    title: `Drafts accepted per self-speculative round: ${s.model ?? report.name}`,
    subtitle: [
      `${goldenPrefix(s)}${s.prompts} prompts × ${s.maxNewTokens} new tokens, greedy · ` +
        'each round drafts d tokens with layers [0,E), the full model verifies them',
      machineLine(report.machine),
    ],
    xLabel: 'k = drafts accepted in the round (gpt-fast accept_counts)',
    yLabel: 'share of rounds',
    panels: rows.map((r) => {
      const st = acceptStats(r.acceptCounts);
      const full = st.fullRounds !== undefined ? Math.round(st.fullRounds * 100) : '–';
      return {
        title: `${r.role}: ${configLabel(r)}${Number.isFinite(r.speedup) ? ` (${r.speedup.toFixed(2)}× confirmed)` : ''}`,
        notes: [
          `${st.rounds} rounds · mean ${st.meanAccepted?.toFixed(2) ?? '–'} of ${r.d} drafts accepted per round · ` +
            `${full}% of rounds accept all ${r.d}`,
        ],
        counts: r.acceptCounts,
      };
    }),
    footnotes: [
      `Counts summed over the ${s.prompts} prompts of the first confirmation pass (one run per prompt); ` +
        'k = d (dark bar): every draft accepted (with the bonus row such a round commits d + 1 tokens).',
      'Bars share one axis: equal heights are equal shares of rounds.',
    ],
  };
}

/** [{ file, svg }] for a speculative report's JSON (as written by bench/run.mjs): the figures its data allows. */
export function speculativeFigures(report) {
  const model = modelOf(report);
  const out = [];
  const grid = gridFigureSpec(report);
  if (grid) out.push({ file: gridFigureName(model), svg: heatmapSvg(grid) });
  const accept = acceptFigureSpec(report);
  if (accept) out.push({ file: acceptFigureName(model), svg: histogramSvg(accept) });
  return out;
}

// ---------------------------------------------------------------- CLI

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  let outDir;
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--out') outDir = args[++i];
    else if (args[i].startsWith('--out=')) outDir = args[i].slice(6);
    else files.push(args[i]);
  }
  if (!files.length) {
    const results = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
    for (const f of fs.readdirSync(results)) if (f.endsWith('-speculative.json')) files.push(path.join(results, f));
  }
  for (const file of files) {
    const report = JSON.parse(fs.readFileSync(file, 'utf8'));
    const dir = outDir ?? path.dirname(file);
    fs.mkdirSync(dir, { recursive: true });
    const figures = speculativeFigures(report);
    for (const { file: name, svg } of figures) {
      fs.writeFileSync(path.join(dir, name), svg);
      console.log(`wrote ${path.join(dir, name)}`);
    }
    const model = modelOf(report);
    for (const name of [gridFigureName(model), acceptFigureName(model)]) {
      if (figures.some((f) => f.file === name)) continue;
      const missing = name === gridFigureName(model) ? 'no E × d grid rows' : 'no accept_counts (written before the bench recorded them)';
      console.log(`skipped ${name}: ${file} has ${missing}; rerun \`pnpm bench --suite speculative\` to get it`);
    }
  }
}
