/**
 * Per-exit evaluation of one model: perplexity of the full model, of every exit, of ACD pairs and of CALM
 * (teacher-forced), a LAMBADA-style last-word task decoded greedily in every mode, and the generation
 * speed of each mode. Results come back as rows, a markdown report and a JSON object.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OptionsError, logSoftmax } from '@mexit/core';
import { exitKey, type ExitHeadKind, type ExitSpec, type ModelRuntime } from '@mexit/model';
import { SelfSpeculativeGenerator, type GenerationResult } from './generator.js';
import { resolveOptions, type GenerateOptions } from './options.js';
import { AutoContrast } from './modes/acd.js';
import { softmaxMaxConfidence } from './modes/calm-confidence.js';
import { calmExitPoints } from './modes/calm.js';

/** The bundled validation stories (stories separated by lines `<|endoftext|>`). */
export const DEFAULT_EVAL_DATA_PATH = fileURLToPath(new URL('../../../fixtures/data/valid-small.txt', import.meta.url));
export const DEFAULT_CALM_THRESHOLDS: readonly number[] = [0.9, 0.8, 0.6];
/** New tokens decoded per LAMBADA example: the target word plus room for a split into sub-word tokens. */
export const LAMBADA_MAX_NEW_TOKENS = 6;
/** Floats of exit logits held per stage call while computing perplexity (bounds memory on large vocabularies). */
const LOGITS_BUDGET = 1 << 24;

export interface EvaluateOptions {
  /** Stories file (stories separated by lines `<|endoftext|>`). Default: DEFAULT_EVAL_DATA_PATH. */
  dataPath?: string;
  /** Stories as text (instead of dataPath). */
  text?: string;
  /** Token ids for perplexity instead of tokenized stories; the LAMBADA task then needs text or dataPath. */
  ids?: number[];
  /** Tokens evaluated for perplexity. Default 4096. */
  maxTokens?: number;
  /** Stories used for the last-word task (0 skips it). Default 100. */
  lambadaExamples?: number;
  /** ACD pairs [upper | 'original', lower]. Default ['original', ⌊L/2⌋] and ['original', ⌊L/4⌋]. */
  acdPairs?: [number | 'original', number][];
  /** CALM confidence thresholds. Default [0.9, 0.8, 0.6]. */
  calmThresholds?: number[];
  /** New tokens per mode in a separate decode-speed run (EOS ignored; 0 skips it). Default 64. */
  speedTokens?: number;
  /** Progress messages (one per phase / mode). */
  onProgress?: (message: string) => void;
}

export type EvalModeKind = 'original' | 'exit' | 'acd' | 'calm' | 'self-spec';

/** Which decoding a row describes. */
export interface EvalMode {
  label: string;
  kind: EvalModeKind;
  /** Exit layer (exit, self-spec). */
  layer?: number;
  /** Head reading intermediate exits (exit, acd, calm, self-spec). */
  head?: ExitHeadKind;
  contrast?: [number | 'original', number];
  /** CALM confidence threshold λ. */
  threshold?: number;
}

export interface PerplexityRow extends EvalMode {
  /** Predicted tokens. */
  tokens: number;
  /** Summed negative log-likelihood (nats). */
  nll: number;
  /** exp(nll / tokens). */
  perplexity: number;
  /** CALM: mean exit layer over the predicted tokens. */
  meanExitLayer?: number;
}

export interface LambadaRow extends EvalMode {
  examples: number;
  correct: number;
  accuracy: number;
}

export interface SpeedRow extends EvalMode {
  /** Tokens generated and wall time over the LAMBADA runs (prefill included); all 0 without examples. */
  newTokens: number;
  timeMs: number;
  tokensPerSecond: number;
  /** The separate decode-speed run (speedTokens new tokens), when made. */
  decodeTokens?: number;
  decodeTokensPerSecond?: number;
  /** CALM: layers run per token; self-spec: accepted / drafted (over all timed runs). */
  meanLayersPerToken?: number;
  acceptanceRate?: number;
}

export interface LambadaExample {
  context: string;
  target: string;
  /** First word of each mode's continuation, by mode label. */
  predictions: Record<string, string>;
}

export interface EvalReport {
  perplexity: PerplexityRow[];
  lambada: LambadaRow[];
  speed: SpeedRow[];
  lambadaExamples: LambadaExample[];
  markdown: string;
  json: EvalJson;
}

export interface EvalJson {
  model: string;
  perplexity: { tokens: number; windowSize: number; windows: number; rows: PerplexityRow[] };
  lambada: { examples: number; maxNewTokens: number; rows: LambadaRow[] };
  speed: { decodeTokens: number; rows: SpeedRow[] };
  notes: string[];
}

const NOTES = {
  windows: 'Perplexity uses non-overlapping windows of up to max_position_embeddings tokens; each token after the first is predicted once, from the tokens before it in its window.',
  calm: 'CALM perplexity is a teacher-forced estimate: all exits come from one full pass, so every layer\'s K/V is fully computed (no state propagation) and λ is constant (no decay schedule).',
  lambada: 'LAMBADA-style: a story minus its final word is the context; the first word of a greedy continuation must equal the word (punctuation and quotes stripped).',
  speed: 'tokens/s: new tokens over wall time of the LAMBADA generations (prefill included); decode tokens/s: one longer generation per mode with EOS ignored. Stage build time is excluded (a warm-up run precedes each mode).',
};

// ---------------------------------------------------------------------------------------------- text helpers

/** Stories from a file's text: the pieces between lines `<|endoftext|>`, trimmed, empty ones dropped. */
export function splitStories(text: string): string[] {
  return text
    .split(/^[ \t]*<\|endoftext\|>[ \t]*$/m)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const WORD = /^[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/u;

/** The first whole word of generated text: leading whitespace skipped, cut at whitespace or punctuation. */
export function firstWord(text: string): string {
  return WORD.exec(text.trimStart())?.[0] ?? '';
}

/**
 * A last-word example from a story: context = the story up to its final whitespace-separated chunk (trailing
 * space removed), target = that chunk without trailing punctuation / quotes (`dog.` → `dog`). Null when the
 * chunk does not start with a word (e.g. a quoted last word), so the continuation could not start with it.
 */
export function lastWordExample(story: string): { context: string; target: string } | null {
  const text = story.trimEnd();
  const match = /\S+$/.exec(text);
  if (!match) return null;
  const target = WORD.exec(match[0])?.[0];
  const context = text.slice(0, match.index).trimEnd();
  if (!target || context.length === 0) return null;
  return { context, target };
}

// ---------------------------------------------------------------------------------------------- mode plan

interface PlannedMode extends EvalMode {
  options: GenerateOptions;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function invalid(option: string, expected: string, got: unknown): OptionsError {
  return new OptionsError('INVALID_OPTION', `evaluate: ${option} must be ${expected}, got ${JSON.stringify(got)}`);
}

/** Exit layers decoded in the LAMBADA task: every layer below L for L ≤ 12, else about eight spread out. */
function lambadaExitLayers(L: number): number[] {
  if (L <= 12) return Array.from({ length: L - 1 }, (_, i) => i + 1);
  const layers = new Set<number>();
  for (let i = 1; i <= 8; i++) layers.add(Math.max(1, Math.min(L - 1, Math.round((L * i) / 9))));
  return [...layers].sort((a, b) => a - b);
}

/** Head for an ACD pair: the checkpoint's own exit heads when every integer layer has one, else shared. */
function pairHead(runtime: ModelRuntime, pair: [number | 'original', number]): ExitHeadKind {
  const heads = runtime.availableExits().layerSpecific;
  return pair.every((l) => l === 'original' || heads.includes(l)) && heads.length ? 'layer-specific' : 'shared';
}

function acdMode(runtime: ModelRuntime, pair: [number | 'original', number]): PlannedMode {
  const head = pairHead(runtime, pair);
  return {
    label: `ACD ${pair[0]}/${pair[1]} (${head})`,
    kind: 'acd',
    head,
    contrast: pair,
    options: { mode: 'acd', contrastLayers: pair, exitHead: head },
  };
}

interface Plan {
  /** Exits read in the perplexity pass (shared at every layer, then the checkpoint's own heads). */
  exits: ExitSpec[];
  acd: PlannedMode[];
  calm: PlannedMode[];
  calmHead: ExitHeadKind;
  calmPoints: number[];
  /** Modes decoded with the generator. */
  generation: PlannedMode[];
}

function plan(runtime: ModelRuntime, options: EvaluateOptions): Plan {
  const L = runtime.numLayers;
  const { layerSpecific, cast } = runtime.availableExits();
  const exits: ExitSpec[] = [];
  for (let l = 1; l <= L; l++) exits.push({ layer: l, head: 'shared' });
  for (const l of layerSpecific) exits.push({ layer: l, head: 'layer-specific' });
  for (const l of cast) exits.push({ layer: l, head: 'cast' });

  let pairs = options.acdPairs;
  if (pairs === undefined) {
    pairs = [];
    for (const lower of [Math.floor(L / 2), Math.floor(L / 4)]) {
      if (lower >= 1 && lower < L && !pairs.some((p) => p[1] === lower)) pairs.push(['original', lower]);
    }
  }
  if (!Array.isArray(pairs) || pairs.some((pair) => !Array.isArray(pair) || pair.length !== 2)) {
    throw invalid('acdPairs', 'a list of [upper | "original", lower] pairs', pairs);
  }
  const acd = pairs.map((pair) => {
    const mode = acdMode(runtime, pair);
    resolveOptions(runtime, mode.options); // validates the pair (OptionsError naming it)
    return mode;
  });

  const thresholds = options.calmThresholds ?? DEFAULT_CALM_THRESHOLDS;
  if (!Array.isArray(thresholds) || thresholds.some((t) => typeof t !== 'number' || !(t > 0 && t <= 1))) {
    throw invalid('calmThresholds', 'a list of numbers in (0, 1]', thresholds);
  }
  // CALM reads exits as the generator does by default: the checkpoint's own heads where it has them.
  const calmHead: ExitHeadKind = layerSpecific.length ? 'layer-specific' : 'shared';
  const calmPoints = thresholds.length ? calmExitPoints(runtime, 1, 1, calmHead) : [L];
  const calm = thresholds.map<PlannedMode>((threshold) => ({
    label: `CALM λ=${threshold}`,
    kind: 'calm',
    head: calmHead,
    threshold,
    options: { mode: 'calm', calmThreshold: threshold, exitHead: calmHead },
  }));

  const generation: PlannedMode[] = [{ label: 'original', kind: 'original', options: { mode: 'ar' } }];
  for (const l of lambadaExitLayers(L)) {
    generation.push({ label: `exit ${l} (shared)`, kind: 'exit', layer: l, head: 'shared', options: { mode: 'early-exit', exitLayer: l, exitHead: 'shared' } });
  }
  for (const [head, layers] of [['layer-specific', layerSpecific], ['cast', cast]] as const) {
    for (const l of layers) {
      generation.push({ label: `exit ${l} (${head})`, kind: 'exit', layer: l, head, options: { mode: 'early-exit', exitLayer: l, exitHead: head } });
    }
  }
  generation.push(...acd, ...calm);
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

// ---------------------------------------------------------------------------------------------- perplexity

interface PerplexityResult {
  rows: PerplexityRow[];
  tokens: number;
  windows: number;
}

/**
 * Teacher-forced NLL of every exit, ACD pair and CALM threshold over `tokens`, from one stage that reads
 * all exits at every row (chunked through the KV cache so the logits held at once stay bounded).
 */
async function perplexity(runtime: ModelRuntime, tokens: number[], p: Plan): Promise<PerplexityResult> {
  const L = runtime.numLayers;
  const V = runtime.config.vocabSize;
  const W = runtime.config.maxPositions;
  const N = tokens.length;
  const stage = await runtime.stage({ from: 0, to: L, exits: p.exits });
  const index = new Map(p.exits.map((e, i) => [exitKey(e), i]));
  const exitIndex = (layer: number | 'original', head: ExitHeadKind): number =>
    index.get(exitKey(layer === 'original' ? { layer: L, head: 'shared' } : { layer, head }))!;

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
  p.acd.forEach(({ options: _, ...mode }, i) => rows.push(row(mode, acdNll[i])));
  p.calm.forEach(({ options: _, ...mode }, i) => rows.push({ ...row(mode, calmNll[i]), meanExitLayer: calmLayers[i] / predicted }));
  return { rows, tokens: N, windows };
}

// ---------------------------------------------------------------------------------------------- generation

interface GenerationTally {
  correct: number;
  newTokens: number;
  timeMs: number;
  layers: number;
  drafted: number;
  accepted: number;
}

function tally(t: GenerationTally, result: GenerationResult): void {
  const s = result.stats;
  t.newTokens += s.newTokens;
  t.timeMs += s.timeMs.total;
  t.layers += (s.meanLayersPerToken ?? 0) * s.newTokens;
  t.drafted += s.drafted;
  t.accepted += s.accepted;
}

// ---------------------------------------------------------------------------------------------- evaluate

/**
 * Evaluates `runtime` on validation stories: perplexity per mode, last-word accuracy per mode and
 * generation speed per mode. Throws OptionsError for bad options, NO_TOKENIZER when text must be tokenized
 * and the model has no tokenizer.
 */
export async function evaluate(runtime: ModelRuntime, options: EvaluateOptions = {}): Promise<EvalReport> {
  const L = runtime.numLayers;
  const V = runtime.config.vocabSize;
  const W = runtime.config.maxPositions;
  const maxTokens = options.maxTokens ?? 4096;
  if (!isInt(maxTokens) || maxTokens < 2) throw invalid('maxTokens', 'an integer ≥ 2', maxTokens);
  const lambadaCount = options.lambadaExamples ?? 100;
  if (!isInt(lambadaCount) || lambadaCount < 0) throw invalid('lambadaExamples', 'an integer ≥ 0', lambadaCount);
  const speedTokens = options.speedTokens ?? 64;
  if (!isInt(speedTokens) || speedTokens < 0) throw invalid('speedTokens', 'an integer ≥ 0', speedTokens);
  const progress = options.onProgress ?? (() => undefined);
  const p = plan(runtime, options);
  const tokenizer = runtime.tokenizer;

  // Stories: from text, a file, or (without ids) the bundled file.
  let stories: string[] = [];
  if (options.text !== undefined) {
    if (typeof options.text !== 'string') throw invalid('text', 'a string', options.text);
    stories = splitStories(options.text);
  } else if (options.dataPath !== undefined || options.ids === undefined) {
    const path = options.dataPath ?? DEFAULT_EVAL_DATA_PATH;
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new OptionsError('DATA_MISSING', `evaluate: cannot read the stories file ${path} (${(e as Error).message})`, { cause: e });
    }
    stories = splitStories(text);
  }

  // Perplexity tokens: the given ids, or the stories tokenized and joined with EOS.
  let tokens: number[];
  if (options.ids !== undefined) {
    const ids = options.ids;
    if (!Array.isArray(ids) || ids.length < 2) throw invalid('ids', 'a list of at least 2 token ids', ids);
    for (const id of ids) {
      if (!isInt(id) || id < 0 || id >= V) throw new OptionsError('TOKEN_ID_RANGE', `evaluate: token id ${id} is outside the vocabulary 0..${V - 1}`);
    }
    tokens = ids.slice(0, maxTokens);
  } else {
    if (!tokenizer) throw new OptionsError('NO_TOKENIZER', `evaluate: ${runtime.dir} has no tokenizer.json to tokenize the stories; pass ids instead`);
    const eos = tokenizer.eosTokenId ?? runtime.config.eosTokenIds[0];
    if (eos === undefined || eos < 0 || eos >= V) {
      throw new OptionsError('TOKEN_ID_RANGE', `evaluate: the EOS id joining stories (${eos}) is not in the vocabulary 0..${V - 1}`);
    }
    tokens = [];
    for (const story of stories) {
      if (tokens.length >= maxTokens) break;
      tokens.push(...tokenizer.encode(story), eos);
    }
    tokens = tokens.slice(0, maxTokens);
    if (tokens.length < 2) throw new OptionsError('DATA_EMPTY', 'evaluate: the stories hold fewer than 2 tokens');
  }

  progress(`perplexity over ${tokens.length} tokens`);
  const ppl = await perplexity(runtime, tokens, p);

  // Last-word examples whose context leaves room for the continuation.
  const examples: (LambadaExample & { ids: number[] })[] = [];
  if (tokenizer && lambadaCount > 0) {
    for (const story of stories) {
      if (examples.length >= lambadaCount) break;
      const ex = lastWordExample(story);
      if (!ex) continue;
      const ids = tokenizer.encode(ex.context);
      if (ids.length === 0 || ids.length + LAMBADA_MAX_NEW_TOKENS > W) continue;
      examples.push({ ...ex, ids, predictions: {} });
    }
  }

  // Decode-speed prompt: the first example's context, or the start of the perplexity tokens; cut to fit.
  const decodeTokens = Math.min(speedTokens, W - 1);
  const speedPrompt = (examples[0]?.ids ?? tokens.slice(0, 16)).slice(-(W - Math.max(decodeTokens, 1)));

  const generator = new SelfSpeculativeGenerator(runtime);
  const lambada: LambadaRow[] = [];
  const speed: SpeedRow[] = [];
  // Nothing to time without examples or a decode run.
  const generationModes = examples.length || decodeTokens ? p.generation : [];
  for (const m of generationModes) {
    progress(`generation: ${m.label}`);
    const { options: modeOptions, ...mode } = m;
    const greedy: GenerateOptions = { ...modeOptions, doSample: false };
    await generator.generate(speedPrompt, { ...greedy, maxNewTokens: 1 }); // warm-up: builds the stages
    const t: GenerationTally = { correct: 0, newTokens: 0, timeMs: 0, layers: 0, drafted: 0, accepted: 0 };
    for (const ex of examples) {
      const result = await generator.generate(ex.ids, { ...greedy, maxNewTokens: LAMBADA_MAX_NEW_TOKENS });
      tally(t, result);
      const prediction = firstWord(result.text);
      ex.predictions[m.label] = prediction;
      if (prediction === ex.target) t.correct++;
    }
    const row: SpeedRow = { ...mode, newTokens: t.newTokens, timeMs: t.timeMs, tokensPerSecond: t.timeMs > 0 ? t.newTokens / (t.timeMs / 1000) : 0 };
    if (examples.length) lambada.push({ ...mode, examples: examples.length, correct: t.correct, accuracy: t.correct / examples.length });
    if (decodeTokens > 0) {
      const before = t.newTokens;
      const beforeMs = t.timeMs;
      tally(t, await generator.generate(speedPrompt, { ...greedy, maxNewTokens: decodeTokens, eosTokenIds: [] }));
      row.decodeTokens = t.newTokens - before;
      row.decodeTokensPerSecond = row.decodeTokens / ((t.timeMs - beforeMs) / 1000);
    }
    if (m.kind === 'calm' && t.newTokens) row.meanLayersPerToken = t.layers / t.newTokens;
    if (m.kind === 'self-spec') row.acceptanceRate = t.drafted ? t.accepted / t.drafted : 0;
    speed.push(row);
  }

  const lambadaExamples = examples.map(({ ids: _, ...ex }) => ex);
  const json: EvalJson = {
    model: runtime.dir,
    perplexity: { tokens: ppl.tokens, windowSize: W, windows: ppl.windows, rows: ppl.rows },
    lambada: { examples: examples.length, maxNewTokens: LAMBADA_MAX_NEW_TOKENS, rows: lambada },
    speed: { decodeTokens, rows: speed },
    notes: [NOTES.windows, NOTES.calm, NOTES.lambada, NOTES.speed],
  };
  return { perplexity: ppl.rows, lambada, speed, lambadaExamples, markdown: renderMarkdown(json, L), json };
}

// ---------------------------------------------------------------------------------------------- markdown

const num = (x: number | undefined, digits: number) => (x === undefined ? '' : Number.isFinite(x) ? x.toFixed(digits) : String(x));

function headOf(row: EvalMode): string {
  return row.head ?? (row.kind === 'original' ? 'original' : '');
}

/** Three tables (perplexity, last-word accuracy, tokens/s per mode) with the notes that qualify them. */
function renderMarkdown(json: EvalJson, L: number): string {
  const lines: string[] = [`# Evaluation: ${json.model} (${L} layers)`, ''];
  const ppl = json.perplexity;
  lines.push(`## Perplexity (${ppl.rows[0]?.tokens ?? 0} predicted tokens, ${ppl.windows} window(s) of ≤ ${ppl.windowSize})`, '');
  lines.push('| mode | head | perplexity | NLL / token | mean exit layer |', '|---|---|---:|---:|---:|');
  for (const r of ppl.rows) {
    lines.push(`| ${r.label} | ${headOf(r)} | ${num(r.perplexity, 3)} | ${num(r.nll / r.tokens, 4)} | ${num(r.meanExitLayer, 2)} |`);
  }
  lines.push('', `${NOTES.windows} ${NOTES.calm}`, '');

  const lam = json.lambada;
  lines.push(`## LAMBADA-style last word (${lam.examples} examples, greedy, ≤ ${lam.maxNewTokens} new tokens)`, '');
  if (lam.rows.length) {
    lines.push('| mode | head | accuracy | correct |', '|---|---|---:|---:|');
    for (const r of lam.rows) lines.push(`| ${r.label} | ${headOf(r)} | ${num(100 * r.accuracy, 1)}% | ${r.correct}/${r.examples} |`);
    lines.push('', NOTES.lambada, '');
  } else {
    lines.push('Skipped: no stories to draw examples from (or no tokenizer, or lambadaExamples = 0).', '');
  }

  lines.push('## Speed (tokens/s)', '');
  lines.push(`| mode | tokens/s (LAMBADA) | decode tokens/s (${json.speed.decodeTokens} tokens) | layers/token | acceptance |`, '|---|---:|---:|---:|---:|');
  for (const r of json.speed.rows) {
    lines.push(`| ${r.label} | ${r.newTokens ? num(r.tokensPerSecond, 1) : '—'} | ${num(r.decodeTokensPerSecond, 1)} | ${num(r.meanLayersPerToken, 2)} | ${r.acceptanceRate === undefined ? '' : `${num(100 * r.acceptanceRate, 1)}%`} |`);
  }
  lines.push('', NOTES.speed, '');
  return lines.join('\n');
}
