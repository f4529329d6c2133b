/**
 * Generation options: defaults, validation (OptionsError before any model work) and resolution against
 * the loaded model (exit layer and draft length recorded with the model, EOS ids from generation_config).
 */
import { LogitsWarper, OptionsError } from '@mexit/core';
import type { ExitHeadKind, LinearQuantization, ModelRuntime } from '@mexit/model';
import { resolveAcdOptions, type ContrastFunction } from './modes/acd.js';
import { parseConfidenceMeasure, type ConfidenceMeasure } from './modes/calm-confidence.js';

export type DecodingMode = 'self-spec' | 'ar' | 'early-exit' | 'acd' | 'calm';
/** Self-spec drafters: the model's first layers + an exit head (LayerSkip), or n-gram lookup in the history. */
export type DrafterKind = 'early-exit' | 'prompt-lookup';
export const DRAFTERS: readonly DrafterKind[] = ['early-exit', 'prompt-lookup'];
export const DECODING_MODES: readonly DecodingMode[] = ['self-spec', 'ar', 'early-exit', 'acd', 'calm'];

export interface GenerateOptions {
  /** Default 'self-spec'. */
  mode?: DecodingMode;
  /** Draft exit for self-spec / exit for early-exit (1-based block index, 1 ≤ E < L). Default: the model's recommendation, else ⌊L/4⌋. */
  exitLayer?: number;
  /** Which head reads the exit: 'shared' (final norm + LM head, default), 'layer-specific', 'cast'. */
  exitHead?: ExitHeadKind;
  /**
   * Self-spec: who drafts. 'early-exit' (default): layers [0, E) and an exit head. 'prompt-lookup': the
   * tokens that followed the latest earlier occurrence of the history's last 1–3 tokens (no model work;
   * wins on repetitive text); the full model verifies them, so the output is unchanged either way.
   */
  drafter?: DrafterKind;
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
  /** CALM: confidence threshold λ in (0, 1]. Default DEFAULT_CALM_THRESHOLD (0.9). */
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
  drafter: DrafterKind;
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

/** OptionsError INVALID_OPTION: "`option` must be `expected`, got `got`" (any value, safely formatted). */
export function invalidOption(option: string, expected: string, got: unknown): OptionsError {
  return new OptionsError('INVALID_OPTION', `${option} must be ${expected}, got ${formatValue(got)}`);
}
const bad = invalidOption;

/** A short, never-throwing rendering of a user value for error messages. */
export function formatValue(v: unknown): string {
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'bigint') return `${v}n`;
  try {
    const s = JSON.stringify(v);
    if (s === undefined) return String(v);
    return s.length > 200 ? `${s.slice(0, 200)}…` : s;
  } catch {
    return Object.prototype.toString.call(v);
  }
}

export const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** CALM's default confidence threshold λ. */
export const DEFAULT_CALM_THRESHOLD = 0.9;

/** Default draft length d when neither the options nor the model record one. */
export const DEFAULT_NUM_SPECULATIONS = 4;
export const DEFAULT_MAX_NEW_TOKENS = 64;

/**
 * How exits are read unless told otherwise: a multi-exit checkpoint's own per-layer heads (as IBM's library
 * does), else the model's final norm + LM head. The one home of this rule (CLI, eval and multi-exit use it).
 */
export function defaultExitHead(runtime: ModelRuntime): ExitHeadKind {
  return runtime.availableExits().layerSpecific.length ? 'layer-specific' : 'shared';
}

/**
 * The exit used when neither the options nor the model record one: ⌊L/4⌋, or with layer-specific heads the
 * first headed layer at or above it (below L, so self-spec can draft there).
 */
export function defaultExitLayer(runtime: ModelRuntime, exitHead: ExitHeadKind = defaultExitHead(runtime)): number {
  const L = runtime.numLayers;
  const fallback = Math.max(1, Math.floor(L / 4));
  const headed = exitHead === 'layer-specific' ? runtime.availableExits().layerSpecific.filter((l) => l < L) : [];
  return headed.length ? (headed.find((l) => l >= fallback) ?? headed[headed.length - 1]) : fallback;
}

/** Validates `options` for `runtime` and fills in defaults. Throws OptionsError naming the option. */
export function resolveOptions(runtime: ModelRuntime, options: GenerateOptions = {}): ResolvedOptions {
  const cfg = runtime.config;
  const L = cfg.numLayers;
  const mode = options.mode ?? 'self-spec';
  if (!DECODING_MODES.includes(mode)) throw bad('mode', `one of ${DECODING_MODES.join(', ')}`, mode);

  const exitHead = options.exitHead ?? defaultExitHead(runtime);
  const exitLayer = options.exitLayer ?? cfg.recommendedExitLayer ?? defaultExitLayer(runtime, exitHead);
  if (!isInt(exitLayer) || exitLayer <= 0 || exitLayer > L || (mode === 'self-spec' && exitLayer >= L)) {
    throw bad(
      'exitLayer',
      mode === 'self-spec' ? `an integer in 1..${L - 1} (the draft must skip at least one layer)` : `an integer in 1..${L}`,
      exitLayer,
    );
  }
  if (mode === 'self-spec' || mode === 'early-exit') runtime.validateExit({ layer: exitLayer, head: exitHead });

  const numSpeculations = options.numSpeculations ?? cfg.recommendedNumSpeculations ?? DEFAULT_NUM_SPECULATIONS;
  if (!isInt(numSpeculations) || numSpeculations < 1) throw bad('numSpeculations', 'an integer ≥ 1', numSpeculations);
  const maxNewTokens = options.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
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
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0))
    throw bad('stop', 'a list of non-empty strings', stop);
  if (stop.length && !runtime.tokenizer)
    throw new OptionsError('NO_TOKENIZER', `stop strings need a tokenizer, and ${runtime.dir} has no tokenizer.json`);
  const eos = options.eosTokenIds ?? cfg.eosTokenIds;
  if (!Array.isArray(eos) || !eos.every((id) => isInt(id) && id >= 0)) throw bad('eosTokenIds', 'a list of non-negative integers', eos);
  const draftConfidenceThreshold = options.draftConfidenceThreshold ?? 0;
  if (typeof draftConfidenceThreshold !== 'number' || !(draftConfidenceThreshold >= 0 && draftConfidenceThreshold < 1)) {
    throw bad('draftConfidenceThreshold', 'a number in [0, 1)', draftConfidenceThreshold);
  }

  const drafter = options.drafter ?? 'early-exit';
  if (!DRAFTERS.includes(drafter)) throw bad('drafter', `one of ${DRAFTERS.join(', ')}`, drafter);
  if (drafter === 'prompt-lookup' && options.draftQuantization !== undefined && options.draftQuantization !== 'none') {
    throw new OptionsError(
      'CONTRADICTION',
      `draftQuantization ${formatValue(options.draftQuantization)} applies to the early-exit drafter, not "prompt-lookup"`,
    );
  }
  const draftQuantization =
    drafter === 'prompt-lookup' ? 'none' : (options.draftQuantization ?? cfg.recommendedDraftQuantization ?? 'none');
  if (!(['none', 'int8', 'int4'] as unknown[]).includes(draftQuantization))
    throw bad('draftQuantization', "'none', 'int8' or 'int4'", draftQuantization);

  const resolved: ResolvedOptions = {
    mode,
    exitLayer,
    exitHead,
    drafter,
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
    const threshold = options.calmThreshold ?? DEFAULT_CALM_THRESHOLD;
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
  const [upper, lower] = checkContrastPair(runtime.numLayers, options.contrastLayers);
  const { alpha, minimumCandidates } = resolveAcdOptions(options);
  return { upper, lower, alpha, minimumCandidates, fn: options.contrastFunction };
}

/**
 * The one check of an ACD layer pair [upper | 'original', lower] against L layers: lower in 1..L, upper
 * 'original' or above lower. `name` is the option being checked, for the message.
 */
export function checkContrastPair(numLayers: number, pair: unknown, name = 'contrastLayers'): [number | 'original', number] {
  const L = numLayers;
  if (!Array.isArray(pair) || pair.length !== 2) throw bad(name, '[upper | "original", lower]', pair);
  const [upper, lower] = pair as unknown[];
  if (lower === 'original') throw new OptionsError('INVALID_OPTION', `${name}: "original" is only allowed as the upper contrast layer`);
  if (!isInt(lower) || lower < 1 || lower > L) throw bad(`${name}[1] (lower)`, `an integer in 1..${L}`, lower);
  if (upper !== 'original' && (!isInt(upper) || upper <= lower || upper > L)) {
    throw bad(`${name}[0] (upper)`, `"original" or an integer in ${lower + 1}..${L} (above the lower layer)`, upper);
  }
  return [upper as number | 'original', lower];
}
