/**
 * Teacher-forced perplexity of every exit, ACD pair and CALM threshold, from one stage that reads all exits
 * at every row. Tokens go through in non-overlapping windows of max_position_embeddings, each window in
 * chunks sized so the exit logits held at once stay bounded on large vocabularies.
 */
import { logSoftmax } from '@mexit/core';
import { exitKey, type ExitHeadKind, type ModelRuntime } from '@mexit/model';
import { AutoContrast } from '../modes/acd.js';
import { softmaxMaxConfidence } from '../modes/calm-confidence.js';
import type { Plan } from './plan.js';
import type { EvalMode, PerplexityRow } from './types.js';

/** Floats of exit logits held per stage call. */
const LOGITS_BUDGET = 1 << 24;

export interface PerplexityResult {
  rows: PerplexityRow[];
  tokens: number;
  windows: number;
}

export async function perplexity(runtime: ModelRuntime, tokens: readonly number[], p: Plan): Promise<PerplexityResult> {
  const L = runtime.numLayers;
  const V = runtime.config.vocabSize;
  const W = runtime.config.maxPositions;
  const N = tokens.length;
  const stage = await runtime.stage({ from: 0, to: L, exits: p.exits });
  const index = new Map(p.exits.map((e, i) => [exitKey(e), i]));
  const exitIndex = (layer: number | 'original', head: ExitHeadKind): number => {
    const i = index.get(exitKey(layer === 'original' ? { layer: L, head: 'shared' } : { layer, head }));
    if (i === undefined) throw new Error(`perplexity: exit ${layer} (${head}) is not in the plan`);
    return i;
  };

  const acd = p.acd.map((m) => ({
    upper: exitIndex(m.contrast![0], m.head!),
    lower: exitIndex(m.contrast![1], m.head!),
    contrast: new AutoContrast(V),
  }));
  // CALM exit points below L read their head; L is the model's own head.
  const calmExits = p.calmPoints.map((l) => exitIndex(l === L ? 'original' : l, p.calmHead));
  const thresholds = p.calm.map((m) => m.threshold!);

  const exitNll = new Float64Array(p.exits.length);
  const acdNll = new Float64Array(acd.length);
  const calmNll = new Float64Array(thresholds.length);
  const calmLayers = new Float64Array(thresholds.length);
  const rowLogProb = new Float64Array(p.exits.length);
  const confidence = new Float64Array(calmExits.length);
  const scratch = new Float32Array(V);
  const chunkRows = Math.max(1, Math.min(W, Math.floor(LOGITS_BUDGET / (p.exits.length * V))));
  const cache = runtime.createCache(W);
  let predicted = 0;
  let windows = 0;

  for (let start = 0; start < N - 1; start += W) {
    windows++;
    cache.reset();
    const end = Math.min(start + W, N);
    for (let chunk = start; chunk < end; chunk += chunkRows) {
      const chunkEnd = Math.min(chunk + chunkRows, end);
      const out = await stage.run(cache, tokens.slice(chunk, chunkEnd), 0);
      for (let r = 0; r < chunkEnd - chunk; r++) {
        const position = chunk + r;
        if (position + 1 >= N) break;
        const target = tokens[position + 1];
        const row = (e: number) => out.logits[e].subarray(r * V, (r + 1) * V);
        for (let e = 0; e < p.exits.length; e++) {
          logSoftmax(row(e), scratch);
          rowLogProb[e] = scratch[target];
          exitNll[e] -= scratch[target];
        }
        for (let i = 0; i < acd.length; i++) {
          acd[i].contrast.logProbs(row(acd[i].upper), row(acd[i].lower), scratch);
          acdNll[i] -= scratch[target];
        }
        if (thresholds.length) {
          for (let j = 0; j < calmExits.length - 1; j++) confidence[j] = softmaxMaxConfidence(row(calmExits[j]));
          for (let i = 0; i < thresholds.length; i++) {
            let j = 0;
            while (j < calmExits.length - 1 && confidence[j] < thresholds[i]) j++;
            calmNll[i] -= rowLogProb[calmExits[j]];
            calmLayers[i] += p.calmPoints[j];
          }
        }
        predicted++;
      }
    }
  }

  const row = (mode: EvalMode, nll: number): PerplexityRow => ({ ...mode, tokens: predicted, nll, perplexity: Math.exp(nll / predicted) });
  const rows: PerplexityRow[] = [];
  p.exits.forEach((e, i) => {
    const head = e.head ?? 'shared';
    if (e.layer === L && head === 'shared') rows.unshift(row({ label: 'original', kind: 'original' }, exitNll[i]));
    else rows.push(row({ label: `exit ${e.layer} (${head})`, kind: 'exit', layer: e.layer, head }, exitNll[i]));
  });
  p.acd.forEach(({ options: _, ...mode }, i) => {
    rows.push(row(mode, acdNll[i]));
  });
  p.calm.forEach(({ options: _, ...mode }, i) => {
    rows.push({ ...row(mode, calmNll[i]), meanExitLayer: calmLayers[i] / predicted });
  });
  return { rows, tokens: N, windows };
}
