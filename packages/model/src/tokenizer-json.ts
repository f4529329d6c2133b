/**
 * Bounds and shape checks on a tokenizer.json before the tokenizer library builds anything from it: sizes of
 * the vocabulary, merges and added tokens, token string lengths, id ranges, the nesting of the normalizer /
 * pre-tokenizer / post-processor / decoder pipeline, and the regular expressions in it. The library trusts the
 * file: ids index arrays, a huge `{n}` or a nested quantifier is compiled as given, an unknown pattern kind is
 * only a console warning that silently drops all text. Every problem is a TokenizerError naming the field.
 */
import { TokenizerError, formatValue } from '@mexit/core';

export const TOKENIZER_JSON_LIMITS = Object.freeze({
  /** Entries of model.vocab; every id (vocabulary and added tokens) must also be below it. */
  maxVocabEntries: 10_000_000,
  /** Entries of model.merges. */
  maxMerges: 10_000_000,
  /** Entries of added_tokens, and of tokenizer_config's additional_special_tokens. */
  maxAddedTokens: 1_000_000,
  /** Characters of one vocabulary or added token (real vocabularies stay under 300). */
  maxTokenChars: 4096,
  /** Nesting of the normalizer / pre_tokenizer / post_processor / decoder objects (real files: under 8). */
  maxPipelineDepth: 32,
  /** Characters of one Split / Replace pattern. */
  maxPatternChars: 16_384,
  /** Largest repetition count in a regex quantifier such as {2,1000}. */
  maxRepeatCount: 10_000,
  /** WordPiece's max_input_chars_per_word (default 100): the library spreads a word's pieces into one call. */
  maxInputCharsPerWord: 65_536,
});

type JsonObject = Record<string, unknown>;

const PIPELINE_KEYS = ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'] as const;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function fail(name: string, field: string, expected: string): never {
  throw new TokenizerError('TOKENIZER_JSON', `${name}: ${field} ${expected}`);
}

function checkTokenString(token: unknown, name: string, field: string): void {
  if (typeof token !== 'string') fail(name, field, `must be a string, found ${typeof token}`);
  if (token.length > TOKENIZER_JSON_LIMITS.maxTokenChars) {
    fail(name, field, `is ${token.length} characters long, more than the limit of ${TOKENIZER_JSON_LIMITS.maxTokenChars}`);
  }
}

function checkId(id: unknown, name: string, field: string): void {
  if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= TOKENIZER_JSON_LIMITS.maxVocabEntries) {
    fail(name, field, `must be an integer id in [0, ${TOKENIZER_JSON_LIMITS.maxVocabEntries}), found ${formatValue(id, 100, 'js')}`);
  }
}

function checkCount(length: number, limit: number, name: string, field: string): void {
  if (length > limit) fail(name, field, `has ${length} entries, more than the limit of ${limit}`);
}

/** model.vocab, model.merges and added_tokens (the model's type and the presence of vocab are checked by the caller). */
function checkModel(json: JsonObject, name: string): void {
  const model = json.model as JsonObject;
  const vocab = model.vocab;
  if (model.type === 'Unigram') {
    if (!Array.isArray(vocab)) fail(name, 'model.vocab', 'must be a list of [piece, score] for a Unigram model');
    checkCount(vocab.length, TOKENIZER_JSON_LIMITS.maxVocabEntries, name, 'model.vocab');
    for (let i = 0; i < vocab.length; i++) {
      const entry = vocab[i];
      if (!Array.isArray(entry) || entry.length !== 2 || !Number.isFinite(entry[1])) {
        fail(name, `model.vocab[${i}]`, 'must be a [piece, score] pair with a finite score');
      }
      checkTokenString(entry[0], name, `model.vocab[${i}][0]`);
    }
    const unkId = model.unk_id;
    if (unkId !== undefined && unkId !== null && (!Number.isInteger(unkId) || (unkId as number) < 0 || (unkId as number) >= vocab.length)) {
      fail(
        name,
        'model.unk_id',
        `must be null or an index into model.vocab (size ${vocab.length}), found ${formatValue(unkId, 100, 'js')}`,
      );
    }
  } else {
    if (!isObject(vocab)) fail(name, 'model.vocab', `must be an object of token → id for a ${String(model.type)} model`);
    const tokens = Object.keys(vocab);
    checkCount(tokens.length, TOKENIZER_JSON_LIMITS.maxVocabEntries, name, 'model.vocab');
    for (const token of tokens) {
      checkTokenString(token, name, 'a model.vocab key');
      checkId(vocab[token], name, `model.vocab[${formatValue(token, 100, 'js')}]`);
    }
  }
  const wordChars = model.max_input_chars_per_word;
  if (
    model.type === 'WordPiece' &&
    wordChars !== undefined &&
    (!Number.isInteger(wordChars) || (wordChars as number) < 1 || (wordChars as number) > TOKENIZER_JSON_LIMITS.maxInputCharsPerWord)
  ) {
    fail(
      name,
      'model.max_input_chars_per_word',
      `must be an integer in [1, ${TOKENIZER_JSON_LIMITS.maxInputCharsPerWord}], found ${formatValue(wordChars, 100, 'js')}`,
    );
  }
  if (model.type === 'BPE') {
    const merges = model.merges as unknown[];
    checkCount(merges.length, TOKENIZER_JSON_LIMITS.maxMerges, name, 'model.merges');
    // The library picks the format from the first entry, so a mixed list would silently lose merges.
    const pairs = Array.isArray(merges[0]);
    for (let i = 0; i < merges.length; i++) {
      const merge = merges[i];
      if (pairs) {
        if (!Array.isArray(merge) || merge.length !== 2)
          fail(name, `model.merges[${i}]`, 'must be a [left, right] pair like model.merges[0]');
        checkTokenString(merge[0], name, `model.merges[${i}][0]`);
        checkTokenString(merge[1], name, `model.merges[${i}][1]`);
      } else {
        if (typeof merge !== 'string' || !merge.includes(' '))
          fail(name, `model.merges[${i}]`, 'must be a "left right" string like model.merges[0]');
        if (merge.length > 2 * TOKENIZER_JSON_LIMITS.maxTokenChars + 1) {
          fail(
            name,
            `model.merges[${i}]`,
            `is ${merge.length} characters long, longer than two tokens of the limit of ${TOKENIZER_JSON_LIMITS.maxTokenChars}`,
          );
        }
      }
    }
  }
  const added = (json.added_tokens ?? []) as JsonObject[];
  checkCount(added.length, TOKENIZER_JSON_LIMITS.maxAddedTokens, name, 'added_tokens');
  for (let i = 0; i < added.length; i++) {
    checkTokenString(added[i].content, name, `added_tokens[${i}].content`);
    checkId(added[i].id, name, `added_tokens[${i}].id`);
  }
}

/**
 * Why `source` can backtrack exponentially, or undefined: a group repeated by `*`, `+` or `{n,m}` (m > 1) that
 * contains a quantifier or an alternation, e.g. `(a+)+`, `(a|aa)*`; or a repetition count above maxRepeatCount.
 * Conservative (it also refuses some safe patterns) and blind to polynomial cases such as `\s*\s*$`; the
 * pre-tokenizer patterns of GPT-2, Llama 3, Qwen, tiktoken and their kin have no repeated groups at all.
 */
export function backtrackingHazard(source: string): string | undefined {
  interface Group {
    quantified: boolean;
    alternation: boolean;
  }
  const stack: Group[] = [{ quantified: false, alternation: false }];
  const top = (): Group => stack[stack.length - 1];
  const braces = /\{(\d*)(,?)(\d*)\}/y;
  let hazard: string | undefined;
  /** Skip the quantifier at `i`, if any, applied to an atom (a group when `group` is given); returns the next index. */
  const quantifier = (i: number, group?: Group): number => {
    let repeats: boolean;
    let end: number;
    const c = source[i];
    if (c === '*' || c === '+' || c === '?') {
      repeats = c !== '?';
      end = i + 1;
    } else {
      braces.lastIndex = i;
      const m = c === '{' ? braces.exec(source) : null;
      if (m === null || (m[1] === '' && m[3] === '')) return i;
      const max = m[2] === '' ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
      const largest = Math.max(Number(m[1] || 0), Number(m[3] || 0));
      if (largest > TOKENIZER_JSON_LIMITS.maxRepeatCount) {
        hazard ??= `repetition count ${largest} above ${TOKENIZER_JSON_LIMITS.maxRepeatCount}`;
      }
      repeats = max > 1;
      end = i + m[0].length;
    }
    if (group !== undefined && repeats && (group.quantified || group.alternation)) {
      hazard ??= `a repeated group containing ${group.quantified ? 'a quantifier' : 'an alternation'} (nested quantifiers)`;
    }
    top().quantified = true;
    // Lazy (?) or possessive (+) suffix.
    return source[end] === '?' || source[end] === '+' ? end + 1 : end;
  };
  let i = 0;
  while (i < source.length && hazard === undefined) {
    const c = source[i];
    if (c === '\\') {
      const next = source[i + 1];
      const close = (next === 'p' || next === 'P' || next === 'u' || next === 'x') && source[i + 2] === '{' ? source.indexOf('}', i) : -1;
      i = quantifier(close >= 0 ? close + 1 : i + 2);
    } else if (c === '[') {
      // Character class, possibly nested (Oniguruma); its contents are not syntax here.
      let depth = 0;
      for (; i < source.length; i++) {
        if (source[i] === '\\') i++;
        else if (source[i] === '[') depth++;
        else if (source[i] === ']' && --depth === 0) break;
      }
      i = quantifier(i + 1);
    } else if (c === '(') {
      stack.push({ quantified: false, alternation: false });
      i++;
    } else if (c === ')') {
      const group = stack.length > 1 ? stack.pop()! : top();
      i = quantifier(i + 1, group);
      top().quantified ||= group.quantified;
      top().alternation ||= group.alternation;
    } else if (c === '|') {
      top().alternation = true;
      i++;
    } else {
      i = quantifier(i + 1);
    }
  }
  return hazard;
}

/** The pipeline objects: nesting depth and every `pattern` (Split and Replace steps). Iterative, no recursion. */
function checkPipeline(json: JsonObject, name: string): void {
  const stack: [unknown, string, number][] = [];
  for (const key of PIPELINE_KEYS) stack.push([json[key], key, 1]);
  while (stack.length > 0) {
    const [value, path, depth] = stack.pop()!;
    if (typeof value !== 'object' || value === null) continue;
    if (depth > TOKENIZER_JSON_LIMITS.maxPipelineDepth) {
      fail(name, path, `is nested more than ${TOKENIZER_JSON_LIMITS.maxPipelineDepth} levels deep`);
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) stack.push([value[i], `${path}[${i}]`, depth + 1]);
      continue;
    }
    if ('pattern' in value) checkPattern(value.pattern, name, `${path}.pattern`);
    for (const [key, child] of Object.entries(value)) stack.push([child, `${path}.${key}`, depth + 1]);
  }
}

function checkPattern(pattern: unknown, name: string, path: string): void {
  const kind = isObject(pattern) ? Object.keys(pattern) : [];
  if (kind.length !== 1 || (kind[0] !== 'String' && kind[0] !== 'Regex') || typeof (pattern as JsonObject)[kind[0]] !== 'string') {
    fail(name, path, 'must be {"String": "..."} or {"Regex": "..."}');
  }
  const source = (pattern as JsonObject)[kind[0]] as string;
  if (source.length > TOKENIZER_JSON_LIMITS.maxPatternChars) {
    fail(
      name,
      `${path}.${kind[0]}`,
      `is ${source.length} characters long, more than the limit of ${TOKENIZER_JSON_LIMITS.maxPatternChars}`,
    );
  }
  if (kind[0] === 'String') return;
  const hazard = backtrackingHazard(source);
  if (hazard !== undefined) {
    throw new TokenizerError(
      'TOKENIZER_REGEX',
      `${name}: ${path}.Regex ${formatValue(source.slice(0, 200), 100, 'js')} can take exponential time to match (${hazard}); refused`,
    );
  }
}

/** All checks, in the order a reader would look: model, added tokens, pipeline. */
export function checkTokenizerJson(json: JsonObject, name: string): void {
  checkModel(json, name);
  checkPipeline(json, name);
}
