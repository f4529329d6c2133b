/**
 * Generation options: defaults, validation (OptionsError before any model work) and resolution against
 * the loaded model (exit layer and draft length recorded with the model, EOS ids from generation_config).
 */
import { formatValue as formatUserValue, LogitsWarper, OptionsError } from '@mexit/core';
import { MAX_NUM_SPECULATIONS, type ExitHeadKind, type LinearQuantization, type ModelRuntime } from '@mexit/model';
import { resolveAcdOptions, type ContrastFunction } from './modes/acd.js';
import { parseConfidenceMeasure, type ConfidenceMeasure } from './modes/calm-confidence.js';

export type DecodingMode = 'self-spec' | 'ar' | 'early-exit' | 'acd' | 'calm';
/** Self-spec drafters: the model's first layers + an exit head (LayerSkip), or n-gram lookup in the history. */
export type DrafterKind = 'early-exit' | 'prompt-lookup';
export const DRAFTERS: readonly DrafterKind[] = ['early-exit', 'prompt-lookup'];
export const DECODING_MODES: readonly DecodingMode[] = ['self-spec', 'ar', 'early-exit', 'acd', 'calm'];
const EXIT_HEAD_KINDS: readonly ExitHeadKind[] = ['shared', 'layer-specific', 'cast'];

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
  /**
   * Maximum drafts per round, 1 ≤ d ≤ MAX_NUM_SPECULATIONS (64). Default: the model's recommendation, else 4.
   * A round never drafts more than maxNewTokens − 1, so d is cut to that (same tokens, a shorter draft graph).
   */
  numSpeculations?: number;
  /** Default 64; at most the model's max_position_embeddings (with the prompt: CONTEXT_OVERFLOW past it). */
  maxNewTokens?: number;
  /** Sample instead of greedy decoding. Default false. */
  doSample?: boolean;
  /** 0 (greedy) or in [1e-6, 1e6]: smaller would overflow logits / T in float32. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** In [1e-6, 1e6] (the float32 bound of temperature). */
  repetitionPenalty?: number;
  /** PRNG seed for sampling (a non-negative safe integer). Default 0. */
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

/** A user value in a message: core's one bounded, never-throwing formatter, in JavaScript notation. */
export const formatValue = (v: unknown): string => formatUserValue(v, 200, 'js');

export const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/**
 * How each option's type is checked before any value is used: booleans and numbers by type here (a string
 * 'false' is truthy, '4' is not 4), the rest by their own rules in resolveOptions. A key not listed is a typo
 * (OptionsError UNKNOWN_OPTION): a silently ignored maxTokens would generate 64 tokens.
 */
const OPTION_KINDS = {
  mode: 'rule',
  exitLayer: 'number',
  exitHead: 'rule',
  drafter: 'rule',
  numSpeculations: 'number',
  maxNewTokens: 'number',
  doSample: 'boolean',
  temperature: 'number',
  topK: 'number',
  topP: 'number',
  minP: 'number',
  repetitionPenalty: 'number',
  seed: 'number',
  stop: 'rule',
  eosTokenIds: 'rule',
  draftConfidenceThreshold: 'number',
  adaptiveDraftLength: 'boolean',
  bonusToken: 'boolean',
  draftQuantization: 'rule',
  signal: 'signal',
  addSpecialTokens: 'boolean',
  contrastLayers: 'rule',
  alpha: 'number',
  minimumCandidates: 'number',
  contrastFunction: 'function',
  calmThreshold: 'number',
  calmConfidence: 'rule',
  calmMinExitLayer: 'number',
  calmExitInterval: 'number',
  calmDecay: 'number',
} as const satisfies Record<keyof GenerateOptions, 'rule' | 'number' | 'boolean' | 'function' | 'signal'>;

const KIND_NAMES = { number: 'a number', boolean: 'a boolean (true or false)', function: 'a function', signal: 'an AbortSignal' };

/** Range of temperature and repetitionPenalty, [1e-6, 1e6]: beyond it, logits / T (or × penalty) leave float32. */
const SCALE_MIN = 1e-6;
const SCALE_MAX = 1e6;

/** Unknown keys (with the nearest known name) and wrong types; `undefined` means "not given". */
function checkOptionTypes(options: GenerateOptions): void {
  for (const key of Object.keys(options)) {
    if (!Object.hasOwn(OPTION_KINDS, key)) throw unknownOption(key);
    const value: unknown = options[key as keyof GenerateOptions];
    const kind = OPTION_KINDS[key as keyof GenerateOptions];
    if (value === undefined || kind === 'rule') continue;
    const ok =
      kind === 'signal'
        ? typeof value === 'object' && value !== null && typeof (value as AbortSignal).aborted === 'boolean'
        : typeof value === kind;
    if (!ok) throw bad(key, KIND_NAMES[kind], value);
  }
}

function unknownOption(key: string): OptionsError {
  const norm = (k: string) => k.toLowerCase().replace(/[_-]/g, '');
  const known = Object.keys(OPTION_KINDS);
  const a = norm(key);
  let best = '';
  let bestDistance = Infinity;
  // A key far longer than any option name is no typo of one (and a megabyte key must not cost seconds).
  for (const name of a.length <= 64 ? known : []) {
    const b = norm(name);
    const distance = b.startsWith(a) && a.length >= 3 ? 0 : editDistance(a, b);
    if (distance < bestDistance) [best, bestDistance] = [name, distance];
  }
  const hint = bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? `did you mean "${best}"?` : `known options: ${known.join(', ')}`;
  return new OptionsError('UNKNOWN_OPTION', `unknown option ${formatValue(key)}; ${hint}`);
}

/** Levenshtein distance of two short names. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row.push(Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
    previous = row;
  }
  return previous[b.length];
}

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
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw bad('options', 'an object', options);
  checkOptionTypes(options);
  const cfg = runtime.config;
  const L = cfg.numLayers;
  const mode = options.mode ?? 'self-spec';
  if (!DECODING_MODES.includes(mode)) throw bad('mode', `one of ${DECODING_MODES.join(', ')}`, mode);

  const exitHead = options.exitHead ?? defaultExitHead(runtime);
  if (!(EXIT_HEAD_KINDS as unknown[]).includes(exitHead)) {
    throw new OptionsError(
      'EXIT_HEAD_KIND',
      `exitHead: unknown exit head kind ${formatValue(exitHead)}; valid: ${EXIT_HEAD_KINDS.join(', ')}`,
    );
  }
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
  if (!isInt(numSpeculations) || numSpeculations < 1 || numSpeculations > MAX_NUM_SPECULATIONS) {
    throw bad('numSpeculations', `an integer in 1..${MAX_NUM_SPECULATIONS}`, numSpeculations);
  }
  const maxNewTokens = options.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  if (!isInt(maxNewTokens) || maxNewTokens < 1) throw bad('maxNewTokens', 'an integer ≥ 1', maxNewTokens);
  if (maxNewTokens > cfg.maxPositions) {
    throw new OptionsError(
      'CONTEXT_OVERFLOW',
      `maxNewTokens (${maxNewTokens}) exceeds the context of ${cfg.maxPositions} positions (max_position_embeddings)`,
    );
  }
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw bad('seed', 'a non-negative safe integer', seed);
  const doSample = options.doSample ?? false;
  for (const name of ['temperature', 'repetitionPenalty'] as const) {
    const v = options[name];
    // Negative, NaN and ±Infinity are LogitsWarper's to report; 0 is greedy for temperature (and a bad penalty).
    if (v !== undefined && v > 0 && !(v >= SCALE_MIN && v <= SCALE_MAX)) {
      throw bad(name, `${name === 'temperature' ? '0 (greedy) or ' : ''}a number in [1e-6, 1e6]`, v);
    }
  }
  // LogitsWarper validates temperature / topK / topP / minP / repetitionPenalty with OptionsError.
  const warper = new LogitsWarper(cfg.vocabSize, {
    temperature: options.temperature,
    topK: options.topK,
    topP: options.topP,
    minP: options.minP,
    repetitionPenalty: options.repetitionPenalty,
  });
  const stop = options.stop ?? [];
  if (!isListOf(stop, (s) => typeof s === 'string' && s.length > 0)) throw bad('stop', 'a list of non-empty strings', stop);
  if (stop.length && !runtime.tokenizer)
    throw new OptionsError('NO_TOKENIZER', `stop strings need a tokenizer, and ${runtime.dir} has no tokenizer.json`);
  const eos = options.eosTokenIds ?? cfg.eosTokenIds;
  if (!isListOf(eos, (id) => Number.isSafeInteger(id) && (id as number) >= 0))
    throw bad('eosTokenIds', 'a list of non-negative integers', eos);
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
    // A round drafts at most maxNewTokens − 1 (one token is always the full model's), so a longer d would
    // only size the chain graph and the stats for drafts that can never run; the tokens are the same.
    numSpeculations: Math.min(numSpeculations, Math.max(1, maxNewTokens - 1)),
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

/** Every element, holes included (`some` / `every` skip holes), passes `ok`. */
function isListOf(v: unknown, ok: (x: unknown) => boolean): v is unknown[] {
  if (!Array.isArray(v)) return false;
  for (let i = 0; i < v.length; i++) if (!ok(v[i])) return false;
  return true;
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
