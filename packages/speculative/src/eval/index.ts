/**
 * @mexit/speculative/eval: per-exit evaluation of one model. Perplexity of the full model, of every exit,
 * of ACD pairs and of CALM (teacher-forced), a LAMBADA-style last-word task decoded greedily in every mode,
 * and the generation speed of each mode; results as rows, a markdown report and a JSON document.
 *
 *   data.ts        the text: file, stories, pieces of any size
 *   plan.ts        which modes are scored (through IBM's multi-exit configuration)
 *   perplexity.ts  one teacher-forced pass over all exits
 *   lambada.ts     the last-word task's text rules
 *   generation.ts  decoding every mode: accuracy and speed
 *   report.ts      markdown
 */
import { OptionsError } from '@mexit/core';
import type { ModelRuntime } from '@mexit/model';
import { invalidOption, isInt } from '../options.js';
import { DEFAULT_EVAL_DATA_PATH, passages, readEvalText, splitStories, tokenizeStories } from './data.js';
import { decodeModes } from './generation.js';
import { collectExamples, DEFAULT_LAMBADA_EXAMPLES, LAMBADA_MAX_NEW_TOKENS } from './lambada.js';
import { perplexity } from './perplexity.js';
import { plan } from './plan.js';
import { NOTES, renderMarkdown } from './report.js';
import type { EvalJson, EvalReport, EvaluateOptions } from './types.js';

export {
  cutText,
  DEFAULT_EVAL_DATA_PATH,
  PASSAGE_CHARS,
  passages,
  readEvalText,
  splitStories,
  TOKENIZE_CHARS,
  tokenizeStories,
} from './data.js';
export { DEFAULT_LAMBADA_EXAMPLES, firstWord, LAMBADA_MAX_NEW_TOKENS, type LambadaExample, lastWordExample } from './lambada.js';
export { DEFAULT_CALM_THRESHOLDS } from './plan.js';
export type * from './types.js';

/** Tokens evaluated for perplexity by default. */
export const DEFAULT_EVAL_MAX_TOKENS = 4096;
/** New tokens of the decode-speed run per mode by default. */
export const DEFAULT_SPEED_TOKENS = 64;

const where = (option: string) => `evaluate: ${option}`;

/**
 * Evaluates `runtime` on validation text: perplexity per mode, last-word accuracy per mode and generation
 * speed per mode. Throws OptionsError for bad options (before any model work), NO_TOKENIZER when text must
 * be tokenized and the model has no tokenizer, DATA_MISSING / DATA_EMPTY for unreadable or empty data.
 */
export async function evaluate(runtime: ModelRuntime, options: EvaluateOptions = {}): Promise<EvalReport> {
  const L = runtime.numLayers;
  const V = runtime.config.vocabSize;
  const W = runtime.config.maxPositions;
  const maxTokens = options.maxTokens ?? DEFAULT_EVAL_MAX_TOKENS;
  if (!isInt(maxTokens) || maxTokens < 2) throw invalidOption(where('maxTokens'), 'an integer ≥ 2', maxTokens);
  const lambadaCount = options.lambadaExamples ?? DEFAULT_LAMBADA_EXAMPLES;
  if (!isInt(lambadaCount) || lambadaCount < 0) throw invalidOption(where('lambadaExamples'), 'an integer ≥ 0', lambadaCount);
  const speedTokens = options.speedTokens ?? DEFAULT_SPEED_TOKENS;
  if (!isInt(speedTokens) || speedTokens < 0) throw invalidOption(where('speedTokens'), 'an integer ≥ 0', speedTokens);
  const progress = options.onProgress ?? (() => undefined);
  const p = plan(runtime, options);
  const tokenizer = runtime.tokenizer;

  // Stories: from text, a file, or (without ids) the bundled file.
  let stories: string[] = [];
  if (options.text !== undefined) {
    if (typeof options.text !== 'string') throw invalidOption(where('text'), 'a string', options.text);
    stories = splitStories(options.text);
  } else if (options.dataPath !== undefined || options.ids === undefined) {
    stories = splitStories(readEvalText(options.dataPath ?? DEFAULT_EVAL_DATA_PATH));
  }

  // Perplexity tokens: the given ids, or the stories tokenized and joined with EOS.
  let tokens: number[];
  if (options.ids !== undefined) {
    const ids = options.ids;
    if (!Array.isArray(ids) || ids.length < 2) throw invalidOption(where('ids'), 'a list of at least 2 token ids', ids);
    for (const id of ids) {
      if (!isInt(id) || id < 0 || id >= V)
        throw new OptionsError('TOKEN_ID_RANGE', `evaluate: token id ${id} is outside the vocabulary 0..${V - 1}`);
    }
    tokens = ids.slice(0, maxTokens);
  } else {
    if (!tokenizer)
      throw new OptionsError('NO_TOKENIZER', `evaluate: ${runtime.dir} has no tokenizer.json to tokenize the stories; pass ids instead`);
    const eos = tokenizer.eosTokenId ?? runtime.config.eosTokenIds[0];
    if (eos === undefined || eos < 0 || eos >= V) {
      throw new OptionsError('TOKEN_ID_RANGE', `evaluate: the EOS id joining stories (${eos}) is not in the vocabulary 0..${V - 1}`);
    }
    tokens = tokenizeStories(tokenizer, stories, eos, maxTokens);
    if (tokens.length < 2) throw new OptionsError('DATA_EMPTY', 'evaluate: the stories hold fewer than 2 tokens');
  }

  progress(`perplexity over ${tokens.length} tokens`);
  const ppl = await perplexity(runtime, tokens, p);

  const examples = tokenizer ? collectExamples(tokenizer, passages(stories), lambadaCount, W) : [];
  if (examples.length) progress(`last-word task: ${examples.length} examples`);

  // Decode-speed prompt: the first example's context, or the start of the perplexity tokens; cut to fit.
  const decodeTokens = Math.min(speedTokens, W - 1);
  const speedPrompt = (examples[0]?.ids ?? tokens.slice(0, 16)).slice(-(W - Math.max(decodeTokens, 1)));
  const { lambada, speed } = await decodeModes(runtime, p.generation, examples, speedPrompt, decodeTokens, progress);

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
