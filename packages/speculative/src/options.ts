/**
 * Generation options: defaults, validation (OptionsError before any model work) and resolution against
 * the loaded model (exit layer and draft length recorded with the model, EOS ids from generation_config).
 */
import { LogitsWarper, OptionsError } from '@mexit/core';
import type { ExitHeadKind, LinearQuantization, ModelRuntime } from '@mexit/model';
import type { ContrastFunction } from './modes/acd.js';
import { parseConfidenceMeasure, type ConfidenceMeasure } from './modes/calm-confidence.js';

export type DecodingMode = 'self-spec' | 'ar' | 'early-exit' | 'acd' | 'calm';
export const DECODING_MODES: readonly DecodingMode[] = ['self-spec', 'ar', 'early-exit', 'acd', 'calm'];

export interface GenerateOptions {
  /** Default 'self-spec'. */
  mode?: DecodingMode;
  /** Draft exit for self-spec / exit for early-exit (1-based block index, 1 ≤ E < L). Default: the model's recommendation, else ⌊L/4⌋. */
  exitLayer?: number;
  /** Which head reads the exit: 'shared' (final norm + LM head, default), 'layer-specific', 'cast'. */
  exitHead?: ExitHeadKind;
  /** Maximum drafts per round (d ≥ 1). Default: the model's recommendation, else 4. */
  numSpeculations?: number;
  /** Default 64. */
  maxNewTokens?: number;
  /** Sample instead of greedy decoding. Default false. */
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  /** PRNG seed for sampling. Default 0. */
  seed?: number;
  /** Generation ends before the first occurrence of any of these strings (matched on the decoded text). */
  stop?: string[];
  /** End-of-sequence ids. Default: generation_config.json's eos_token_id. */
  eosTokenIds?: number[];
  /** Stop drafting when the draft token's probability falls below this (0 = off, the default). */
  draftConfidenceThreshold?: number;
  /** Adapt the draft length between rounds (+1 after full acceptance, −1 after a rejection). Default false. */
  adaptiveDraftLength?: boolean;
  /**
   * Feed the last draft of a round too and verify one more row, so a fully accepted round also emits the full
   * model's next token (the "bonus"). Default true. false: the last draft instead waits as the next round's
   * first input, which saves one draft-stage call and one verify row in every round with a rejection but
   * needs more rounds (same tokens). Measured on the bundled model: no faster at d = 4 (1.46× vs 1.43× on an
   * earlier checkpoint), slower at d = 2 (1.22× vs 1.80×).
   * Quantized drafts always verify the bonus position (the full model runs over every draft anyway).
   */
  bonusToken?: boolean;
  /**
   * Draft with block-quantized copies of layers [0, E) and the exit head ('int8' or 'int4', MatMulNBits),
   * on a small KV cache of their own; the verifier then runs the full model over the pending token and the
   * drafts (exact, so the output is unchanged). 'none': drafts run the exact layers and share the cache with
   * the verifier, which starts at layer E (LayerSkip). Default: the model's `mexit_draft_quantization`
   * (generation_config.json), else 'none'. Quantized layers apply to `linear` weights
   * of Llama / GPT-Neo checkpoints (GPT-2's Conv1D layers stay F32).
   */
  draftQuantization?: 'none' | LinearQuantization;
  /** Cancels generation; the promise rejects with AbortError and the generator stays usable. */
  signal?: AbortSignal;
  /** Encode text prompts with the tokenizer's special tokens (e.g. BOS). Default true (false for chat). */
  addSpecialTokens?: boolean;
  // ---- multi-exit modes ----
  /** ACD: [upper, lower] exits; upper may be 'original' (the model's own head on the last layer). */
  contrastLayers?: [number | 'original', number];
  /** ACD head-set threshold α in (0, 1]. Default 0.1. */
  alpha?: number;
  /** ACD minimum head-set size (integer ≥ 1). Default 1. */
  minimumCandidates?: number;
  /** ACD: custom contrast of upper/lower logits into log-probs. */
  contrastFunction?: ContrastFunction;
  /** CALM: confidence threshold λ in (0, 1]. Default 0.9. */
  calmThreshold?: number;
  /** CALM: 'softmax' (default), 'top-gap' or 'saturation'. */
  calmConfidence?: ConfidenceMeasure;
  /** CALM: first layer allowed to exit (default 1) and the spacing of exits (default 1). */
  calmMinExitLayer?: number;
  calmExitInterval?: number;
  /** CALM: decay τ of the threshold schedule (default 4). */
  calmDecay?: number;
}

export interface ResolvedOptions {
  mode: DecodingMode;
  exitLayer: number;
  exitHead: ExitHeadKind;
  numSpeculations: number;
  maxNewTokens: number;
  doSample: boolean;
  warper: LogitsWarper;
  seed: number;
  stop: string[];
  eosTokenIds: Set<number>;
  draftConfidenceThreshold: number;
  adaptiveDraftLength: boolean;
  bonusToken: boolean;
  draftQuantization: 'none' | LinearQuantization;
  signal?: AbortSignal;
  contrast?: { upper: number | 'original'; lower: number; alpha: number; minimumCandidates: number; fn?: ContrastFunction };
  calm?: { threshold: number; measure: ConfidenceMeasure; minExitLayer: number; exitInterval: number; decay: number };
}

function bad(option: string, expected: string, got: unknown): OptionsError {
  return new OptionsError('INVALID_OPTION', `${option} must be ${expected}, got ${JSON.stringify(got)}`);
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** Validates `options` for `runtime` and fills in defaults. Throws OptionsError naming the option. */
export function resolveOptions(runtime: ModelRuntime, options: GenerateOptions = {}): ResolvedOptions {
  const cfg = runtime.config;
  const L = cfg.numLayers;
  const mode = options.mode ?? 'self-spec';
  if (!DECODING_MODES.includes(mode)) throw bad('mode', `one of ${DECODING_MODES.join(', ')}`, mode);

  // Multi-exit checkpoints read exits through their own heads unless told otherwise (as IBM's library does).
  const layerSpecific = runtime.availableExits().layerSpecific;
  const exitHead = options.exitHead ?? (layerSpecific.length ? 'layer-specific' : 'shared');
  // Default exit: ⌊L/4⌋, but with layer-specific heads one that has a head (below L, so self-spec can draft there).
  const fallbackExit = Math.max(1, Math.floor(L / 4));
  const headed = exitHead === 'layer-specific' ? layerSpecific.filter((l) => l < L) : [];
  const defaultExit = headed.length ? (headed.find((l) => l >= fallbackExit) ?? headed[headed.length - 1]) : fallbackExit;
  const exitLayer = options.exitLayer ?? cfg.recommendedExitLayer ?? defaultExit;
  if (!isInt(exitLayer) || exitLayer <= 0 || exitLayer > L || (mode === 'self-spec' && exitLayer >= L)) {
    throw bad('exitLayer', mode === 'self-spec' ? `an integer in 1..${L - 1} (the draft must skip at least one layer)` : `an integer in 1..${L}`, exitLayer);
  }
  if (mode === 'self-spec' || mode === 'early-exit') runtime.validateExit({ layer: exitLayer, head: exitHead });

  const numSpeculations = options.numSpeculations ?? cfg.recommendedNumSpeculations ?? 4;
  if (!isInt(numSpeculations) || numSpeculations < 1) throw bad('numSpeculations', 'an integer ≥ 1', numSpeculations);
  const maxNewTokens = options.maxNewTokens ?? 64;
  if (!isInt(maxNewTokens) || maxNewTokens < 1) throw bad('maxNewTokens', 'an integer ≥ 1', maxNewTokens);
  const seed = options.seed ?? 0;
  if (!isInt(seed)) throw bad('seed', 'an integer', seed);
  const doSample = options.doSample ?? false;
  // LogitsWarper validates temperature / topK / topP / minP / repetitionPenalty with OptionsError.
  const warper = new LogitsWarper(cfg.vocabSize, {
    temperature: options.temperature,
    topK: options.topK,
    topP: options.topP,
    minP: options.minP,
    repetitionPenalty: options.repetitionPenalty,
  });
  const stop = options.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0)) throw bad('stop', 'a list of non-empty strings', stop);
  if (stop.length && !runtime.tokenizer) throw new OptionsError('NO_TOKENIZER', `stop strings need a tokenizer, and ${runtime.dir} has no tokenizer.json`);
  const eos = options.eosTokenIds ?? cfg.eosTokenIds;
  if (!Array.isArray(eos) || !eos.every((id) => isInt(id) && id >= 0)) throw bad('eosTokenIds', 'a list of non-negative integers', eos);
  const draftConfidenceThreshold = options.draftConfidenceThreshold ?? 0;
  if (typeof draftConfidenceThreshold !== 'number' || !(draftConfidenceThreshold >= 0 && draftConfidenceThreshold < 1)) {
    throw bad('draftConfidenceThreshold', 'a number in [0, 1)', draftConfidenceThreshold);
  }

  const draftQuantization = options.draftQuantization ?? cfg.recommendedDraftQuantization ?? 'none';
  if (!(['none', 'int8', 'int4'] as unknown[]).includes(draftQuantization)) throw bad('draftQuantization', "'none', 'int8' or 'int4'", draftQuantization);

  const resolved: ResolvedOptions = {
    mode,
    exitLayer,
    exitHead,
    numSpeculations,
    maxNewTokens,
    doSample,
    warper,
    seed,
    stop,
    eosTokenIds: new Set(eos),
    draftConfidenceThreshold,
    adaptiveDraftLength: options.adaptiveDraftLength ?? false,
    bonusToken: options.bonusToken ?? true,
    draftQuantization,
    signal: options.signal,
  };

  if (mode === 'acd') resolved.contrast = resolveContrast(runtime, options);
  else if (options.contrastLayers) throw new OptionsError('CONTRADICTION', `contrastLayers only applies to mode "acd", not "${mode}"`);
  if (mode === 'calm') {
    const threshold = options.calmThreshold ?? 0.9;
    if (typeof threshold !== 'number' || !(threshold > 0 && threshold <= 1)) throw bad('calmThreshold', 'a number in (0, 1]', threshold);
    const minExitLayer = options.calmMinExitLayer ?? 1;
    if (!isInt(minExitLayer) || minExitLayer < 1 || minExitLayer > L) throw bad('calmMinExitLayer', `an integer in 1..${L}`, minExitLayer);
    const exitInterval = options.calmExitInterval ?? 1;
    if (!isInt(exitInterval) || exitInterval < 1) throw bad('calmExitInterval', 'an integer ≥ 1', exitInterval);
    const decay = options.calmDecay ?? 4;
    if (typeof decay !== 'number' || !(decay >= 0) || !Number.isFinite(decay)) throw bad('calmDecay', 'a finite number ≥ 0', decay);
    resolved.calm = { threshold, measure: parseConfidenceMeasure(options.calmConfidence ?? 'softmax'), minExitLayer, exitInterval, decay };
  }
  return resolved;
}

function resolveContrast(runtime: ModelRuntime, options: GenerateOptions): NonNullable<ResolvedOptions['contrast']> {
  const L = runtime.numLayers;
  const pair = options.contrastLayers;
  if (!Array.isArray(pair) || pair.length !== 2) throw bad('contrastLayers', '[upper | "original", lower]', pair);
  const [upper, lower] = pair;
  if (lower === ('original' as unknown)) throw new OptionsError('INVALID_OPTION', `"original" is only allowed as the upper contrast layer`);
  if (!isInt(lower) || lower < 1 || lower > L) throw bad('contrastLayers[1] (lower)', `an integer in 1..${L}`, lower);
  if (upper !== 'original' && (!isInt(upper) || upper <= lower || upper > L)) {
    throw bad('contrastLayers[0] (upper)', `"original" or an integer in ${lower + 1}..${L} (above the lower layer)`, upper);
  }
  const alpha = options.alpha ?? 0.1;
  if (typeof alpha !== 'number' || !(alpha > 0 && alpha <= 1)) throw bad('alpha', 'a number in (0, 1]', alpha);
  const minimumCandidates = options.minimumCandidates ?? 1;
  if (!isInt(minimumCandidates) || minimumCandidates < 1) throw bad('minimumCandidates', 'an integer ≥ 1', minimumCandidates);
  return { upper, lower, alpha, minimumCandidates, fn: options.contrastFunction };
}

/** CALM confidence name → measure (re-exported for the CLI). */
export { parseConfidenceMeasure };
