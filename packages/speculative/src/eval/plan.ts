/**
 * Which modes an evaluation scores: the exits read in the perplexity pass, the ACD pairs, the CALM
 * thresholds and the modes decoded with the generator. Exits are enumerated per vocabulary projection
 * (multiExitLayers) and mapped onto generator options through IBM's multi-exit configuration
 * (multiExitOptions), so evaluation reads exits exactly as a MultiExitConfiguration would.
 */
import type { ExitHeadKind, ExitSpec, ModelRuntime } from '@mexit/model';
import { calmExitPoints } from '../modes/calm.js';
import {
  describeMultiExit,
  multiExitLayers,
  multiExitOptions,
  vocabProjectionModeOf,
  type MultiExitConfiguration,
  type VocabProjectionMode,
} from '../multi-exit.js';
import { checkContrastPair, defaultExitHead, invalidOption, resolveOptions, type GenerateOptions } from '../options.js';
import type { EvalMode, EvaluateOptions } from './types.js';

export const DEFAULT_CALM_THRESHOLDS: readonly number[] = [0.9, 0.8, 0.6];

export interface PlannedMode extends EvalMode {
  options: GenerateOptions;
}

export interface Plan {
  /** Exits read in the perplexity pass (shared at every layer, then the checkpoint's own heads, then cast). */
  exits: ExitSpec[];
  acd: PlannedMode[];
  calm: PlannedMode[];
  calmHead: ExitHeadKind;
  calmPoints: number[];
  /** Modes decoded with the generator. */
  generation: PlannedMode[];
}

/** Exit layers decoded in the LAMBADA task: every layer below L for L ≤ 12, else about eight spread out. */
function lambadaExitLayers(L: number): number[] {
  if (L <= 12) return Array.from({ length: L - 1 }, (_, i) => i + 1);
  const layers = new Set<number>();
  for (let i = 1; i <= 8; i++) layers.add(Math.max(1, Math.min(L - 1, Math.round((L * i) / 9))));
  return [...layers].sort((a, b) => a - b);
}

/** Intermediate exits under `projection`: the layers below L (L is the original row). */
function exitsBelowTop(runtime: ModelRuntime, projection: VocabProjectionMode): number[] {
  return multiExitLayers(runtime, projection).filter((l) => l < runtime.numLayers || projection === 'layer-specific');
}

function multiExitMode(runtime: ModelRuntime, config: MultiExitConfiguration): { multiExit: string; options: GenerateOptions } {
  return { multiExit: describeMultiExit(config), options: multiExitOptions(runtime, config) };
}

function exitMode(runtime: ModelRuntime, layer: number, projection: VocabProjectionMode): PlannedMode {
  const planned = multiExitMode(runtime, { useOriginalHead: false, outputLayerIndex: layer, vocabProjectionMode: projection });
  const head = planned.options.exitHead!;
  return { label: `exit ${layer} (${head})`, kind: 'exit', layer, head, ...planned };
}

/**
 * Head for an ACD pair: as the generator reads exits by default (defaultExitHead), except that a pair
 * with a layer lacking its own head falls back to the shared head.
 */
function pairHead(runtime: ModelRuntime, pair: [number | 'original', number]): ExitHeadKind {
  const head = defaultExitHead(runtime);
  if (head !== 'layer-specific') return head;
  const headed = multiExitLayers(runtime, 'layer-specific');
  return pair.every((l) => l === 'original' || headed.includes(l)) ? 'layer-specific' : 'shared';
}

function acdMode(runtime: ModelRuntime, pair: [number | 'original', number]): PlannedMode {
  const head = pairHead(runtime, pair);
  const planned = multiExitMode(runtime, {
    useOriginalHead: false,
    contrastLayerIndices: pair,
    vocabProjectionMode: vocabProjectionModeOf(head),
  });
  return { label: `ACD ${pair[0]}/${pair[1]} (${head})`, kind: 'acd', head, contrast: pair, ...planned };
}

/** The plan for `runtime` and `options`; OptionsError for bad acdPairs / calmThresholds. */
export function plan(runtime: ModelRuntime, options: EvaluateOptions): Plan {
  const L = runtime.numLayers;
  const exits: ExitSpec[] = [];
  for (const l of multiExitLayers(runtime, 'shared-direct')) exits.push({ layer: l, head: 'shared' });
  for (const l of multiExitLayers(runtime, 'layer-specific')) exits.push({ layer: l, head: 'layer-specific' });
  for (const l of exitsBelowTop(runtime, 'shared-cast')) exits.push({ layer: l, head: 'cast' });

  let pairs = options.acdPairs;
  if (pairs === undefined) {
    pairs = [];
    for (const lower of [Math.floor(L / 2), Math.floor(L / 4)]) {
      if (lower >= 1 && lower < L && !pairs.some((p) => p[1] === lower)) pairs.push(['original', lower]);
    }
  }
  if (!Array.isArray(pairs)) throw invalidOption('evaluate: acdPairs', 'a list of [upper | "original", lower] pairs', pairs);
  const acd = pairs.map((pair, i) => acdMode(runtime, checkContrastPair(L, pair, `evaluate: acdPairs[${i}]`)));

  const thresholds = options.calmThresholds ?? DEFAULT_CALM_THRESHOLDS;
  if (!Array.isArray(thresholds) || thresholds.some((t) => typeof t !== 'number' || !(t > 0 && t <= 1))) {
    throw invalidOption('evaluate: calmThresholds', 'a list of numbers in (0, 1]', thresholds);
  }
  // CALM reads exits as the generator does by default.
  const calmHead = defaultExitHead(runtime);
  const calmPoints = thresholds.length ? calmExitPoints(runtime, 1, 1, calmHead) : [L];
  const calm = thresholds.map<PlannedMode>((threshold) => ({
    label: `CALM λ=${threshold}`,
    kind: 'calm',
    head: calmHead,
    threshold,
    options: { mode: 'calm', calmThreshold: threshold, exitHead: calmHead },
  }));

  const generation: PlannedMode[] = [{ label: 'original', kind: 'original', ...multiExitMode(runtime, {}) }];
  for (const l of lambadaExitLayers(L)) generation.push(exitMode(runtime, l, 'shared-direct'));
  for (const projection of ['layer-specific', 'shared-cast'] as const) {
    for (const l of exitsBelowTop(runtime, projection)) generation.push(exitMode(runtime, l, projection));
  }
  for (const m of acd) generation.push(m);
  for (const m of calm) generation.push(m);
  if (L >= 2) {
    const resolved = resolveOptions(runtime, { mode: 'self-spec' });
    generation.push({
      label: `self-spec E=${resolved.exitLayer} d=${resolved.numSpeculations} (${resolved.exitHead})`,
      kind: 'self-spec',
      layer: resolved.exitLayer,
      head: resolved.exitHead,
      options: { mode: 'self-spec' },
    });
  }
  for (const m of generation) resolveOptions(runtime, m.options);
  return { exits, acd, calm, calmHead, calmPoints, generation };
}
