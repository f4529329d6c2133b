/**
 * IBM autocontrastive-gen's `MultiExitConfiguration` in TypeScript idiom (REFERENCE §3): choose between the
 * model's own head, one exit, or a contrast of two exits, and map the choice onto generator options.
 * Validation follows the library: contrast together with the original head is a contradiction, and every
 * requested layer must be an exit of the checkpoint under the chosen vocabulary projection.
 */
import { OptionsError } from '@mexit/core';
import type { ExitHeadKind, ModelRuntime } from '@mexit/model';
import { resolveAcdOptions, type ContrastFunction } from './modes/acd.js';
import { defaultExitHead, formatValue, invalidOption as invalid, isInt, type GenerateOptions } from './options.js';

/** How exit hidden states are projected onto the vocabulary (IBM's VocabularyProjectionMode). */
export type VocabProjectionMode = 'layer-specific' | 'shared-cast' | 'shared-direct';
export const VOCAB_PROJECTION_MODES: readonly VocabProjectionMode[] = ['layer-specific', 'shared-cast', 'shared-direct'];

/** The runtime head each projection mode reads intermediate exits with. */
const HEAD_OF_MODE: Record<VocabProjectionMode, ExitHeadKind> = {
  'layer-specific': 'layer-specific',
  'shared-cast': 'cast',
  'shared-direct': 'shared',
};

export interface MultiExitConfiguration {
  /** Use the model's own LM head on the last layer (exits off). Default true, as in the library. */
  useOriginalHead?: boolean;
  /** Generate from this exit alone (needs useOriginalHead: false). */
  outputLayerIndex?: number;
  /** ACD between [upper, lower] exits; upper may be 'original' (needs useOriginalHead: false). */
  contrastLayerIndices?: [number | 'original', number];
  /** Replaces the ACD contrast (then alpha / minimumCandidates do not apply). */
  contrastFunction?: ContrastFunction;
  /** ACD head-set threshold in (0, 1]. Default 0.1. */
  alpha?: number;
  /** ACD minimum head-set size, integer ≥ 1. Default 1. */
  minimumCandidates?: number;
  /** Default: 'layer-specific' when the checkpoint has exit heads, else 'shared-direct'. */
  vocabProjectionMode?: VocabProjectionMode;
  /** Restricts the usable exits to these layers (the library's lm_head_layer_indices). */
  lmHeadLayerIndices?: number[];
}

function contradiction(message: string): OptionsError {
  return new OptionsError('CONTRADICTION', `Contradiction in multi-exit configuration: ${message}`);
}

/** The projection mode that reads exits with `head` (the inverse of HEAD_OF_MODE). */
export function vocabProjectionModeOf(head: ExitHeadKind): VocabProjectionMode {
  return head === 'layer-specific' ? 'layer-specific' : head === 'cast' ? 'shared-cast' : 'shared-direct';
}

/** The projection mode `config` asks for, or the one matching the generator's default head. OptionsError lists the valid ones. */
export function resolveVocabProjectionMode(runtime: ModelRuntime, mode?: unknown): VocabProjectionMode {
  if (mode === undefined) return vocabProjectionModeOf(defaultExitHead(runtime));
  if (typeof mode === 'string' && (VOCAB_PROJECTION_MODES as readonly string[]).includes(mode)) return mode as VocabProjectionMode;
  throw invalid('vocabProjectionMode', `one of ${VOCAB_PROJECTION_MODES.map((m) => `'${m}'`).join(', ')}`, mode);
}

/**
 * Layers usable as exits under `mode`: the checkpoint's lm_head_<l> heads (layer-specific), the layers with
 * a cast matrix plus L (shared-cast; L is the model's own output there), or every layer 1..L (shared-direct);
 * restricted to `lmHeadLayerIndices` when given.
 */
export function multiExitLayers(runtime: ModelRuntime, mode: VocabProjectionMode, lmHeadLayerIndices?: readonly number[]): number[] {
  const L = runtime.numLayers;
  const exits = runtime.availableExits();
  let layers: number[];
  if (mode === 'layer-specific') layers = [...exits.layerSpecific];
  else if (mode === 'shared-cast') layers = [...exits.cast.filter((l) => l < L), L];
  else layers = Array.from({ length: L }, (_, i) => i + 1);
  return lmHeadLayerIndices ? layers.filter((l) => lmHeadLayerIndices.includes(l)) : layers;
}

/**
 * Validates a multi-exit configuration against `runtime` and maps it onto generator options:
 * original head → mode 'ar'; outputLayerIndex → 'early-exit' at that exit; contrastLayerIndices → 'acd'.
 * Throws OptionsError: CONTRADICTION (contrast or an output layer together with the original head, both an
 * output layer and a contrast, ACD settings without a contrast), EXIT_NOT_IN_CHECKPOINT (naming the
 * available exits), INVALID_OPTION (anything else malformed, naming the valid choices).
 */
export function multiExitOptions(runtime: ModelRuntime, config: MultiExitConfiguration = {}): GenerateOptions {
  if (typeof config !== 'object' || config === null) throw invalid('multi-exit configuration', 'an object', config);
  const L = runtime.numLayers;
  const useOriginalHead = config.useOriginalHead ?? true;
  if (typeof useOriginalHead !== 'boolean') throw invalid('useOriginalHead', 'a boolean', useOriginalHead);
  const mode = resolveVocabProjectionMode(runtime, config.vocabProjectionMode);
  const head = HEAD_OF_MODE[mode];

  const indices = config.lmHeadLayerIndices;
  if (indices !== undefined) {
    if (!Array.isArray(indices) || indices.some((l) => !isInt(l) || l < 1 || l > L)) {
      throw invalid('lmHeadLayerIndices', `a list of integer layers in 1..${L}`, indices);
    }
    const present = multiExitLayers(runtime, mode);
    const missing = indices.filter((l) => !present.includes(l));
    if (missing.length) {
      throw new OptionsError(
        'EXIT_NOT_IN_CHECKPOINT',
        `lmHeadLayerIndices ${missing.join(', ')} are not ${mode} exits of this checkpoint; available: ${present.length ? present.join(', ') : 'none'}`,
      );
    }
  }
  const available = multiExitLayers(runtime, mode, indices);
  const requireExit = (option: string, layer: unknown): number => {
    if (!isInt(layer)) throw invalid(option, `an integer layer (available ${mode} exits: ${available.join(', ') || 'none'})`, layer);
    if (!available.includes(layer)) {
      throw new OptionsError(
        'EXIT_NOT_IN_CHECKPOINT',
        `${option} ${layer} is not a ${mode} exit of this checkpoint${indices ? ' (restricted to lmHeadLayerIndices)' : ''}; available: ${available.length ? available.join(', ') : 'none'}`,
      );
    }
    return layer;
  };

  const contrast = config.contrastLayerIndices;
  const output = config.outputLayerIndex;
  const acdSettings = (['alpha', 'minimumCandidates', 'contrastFunction'] as const).filter((k) => config[k] !== undefined);
  if (contrast !== undefined && useOriginalHead) {
    throw contradiction(
      `contrastLayerIndices ${formatValue(contrast)} with useOriginalHead true (the default); set useOriginalHead: false`,
    );
  }
  if (output !== undefined && useOriginalHead) {
    throw contradiction(`outputLayerIndex ${formatValue(output)} with useOriginalHead true (the default); set useOriginalHead: false`);
  }
  if (output !== undefined && contrast !== undefined) {
    throw contradiction(`both outputLayerIndex ${formatValue(output)} and contrastLayerIndices ${formatValue(contrast)}; choose one`);
  }
  if (contrast === undefined && acdSettings.length) {
    throw contradiction(`${acdSettings.join(', ')} only apply with contrastLayerIndices`);
  }

  if (useOriginalHead) return { mode: 'ar' };
  if (output !== undefined) {
    const layer = requireExit('outputLayerIndex', output);
    // Under shared-cast, layer L is the model's own output (there is no L→L matrix).
    return { mode: 'early-exit', exitLayer: layer, exitHead: mode === 'shared-cast' && layer === L ? 'shared' : head };
  }
  if (contrast === undefined) {
    throw new OptionsError('INVALID_OPTION', 'useOriginalHead is false but neither outputLayerIndex nor contrastLayerIndices is set');
  }

  if (!Array.isArray(contrast) || contrast.length !== 2) throw invalid('contrastLayerIndices', '[upper | "original", lower]', contrast);
  const [upperIn, lowerIn] = contrast;
  if (lowerIn === ('original' as unknown)) {
    throw new OptionsError(
      'INVALID_OPTION',
      `contrastLayerIndices: "original" is only allowed as the upper layer, got ${formatValue(contrast)}`,
    );
  }
  const lower = requireExit('contrastLayerIndices[1] (lower)', lowerIn);
  let upper: number | 'original';
  if (upperIn === 'original') {
    upper = 'original';
  } else {
    upper = requireExit('contrastLayerIndices[0] (upper)', upperIn);
    if (upper <= lower) {
      throw new OptionsError(
        'INVALID_OPTION',
        `contrastLayerIndices: the upper layer must lie above the lower one (or be "original"), got ${formatValue(contrast)}`,
      );
    }
    if (mode === 'shared-cast' && upper === L) upper = 'original';
  }
  if (mode === 'shared-cast' && lower === L) {
    throw new OptionsError(
      'INVALID_OPTION',
      `contrastLayerIndices: under shared-cast layer ${L} is the model's own output; the lower layer must be a cast exit below it`,
    );
  }

  const options: GenerateOptions = { mode: 'acd', contrastLayers: [upper, lower], exitHead: head };
  if (config.contrastFunction !== undefined) {
    if (config.alpha !== undefined || config.minimumCandidates !== undefined) {
      throw contradiction('alpha / minimumCandidates configure the built-in contrast and do not apply with a contrastFunction');
    }
    if (typeof config.contrastFunction !== 'function')
      throw invalid('contrastFunction', 'a function (upper, lower, out) => void', config.contrastFunction);
    options.contrastFunction = config.contrastFunction;
    return options;
  }
  return { ...options, ...resolveAcdOptions(config) };
}

/** The library's run description: 'original_head', 'layer_<l>' or '<upper>_vs_<lower>'. */
export function describeMultiExit(config: MultiExitConfiguration = {}): string {
  if (config.useOriginalHead ?? true) return 'original_head';
  if (config.contrastLayerIndices) return `${config.contrastLayerIndices[0]}_vs_${config.contrastLayerIndices[1]}`;
  return `layer_${config.outputLayerIndex}`;
}
