/**
 * Evaluation text: reading the data file, splitting it into stories, and cutting text of any size into
 * pieces small enough to tokenize in one call and to draw last-word examples from. Nothing here spreads
 * an array into a call, so a file of any length works (one 1 MB story without separators included).
 */
import { OptionsError, readTextFile } from '@mexit/core';
import type { MexitTokenizer } from '@mexit/model';
import { evalStoriesPath } from '@mexit/tinystories-ee';

/** The bundled validation stories (stories separated by lines `<|endoftext|>`), from the data package wherever it is installed. */
export const DEFAULT_EVAL_DATA_PATH = evalStoriesPath;

/**
 * Characters per tokenizer call. A story longer than this is running text (e.g. a file without
 * `<|endoftext|>` lines): it is tokenized in pieces of at most this size and its last-word examples come
 * from its passages (see `passages`).
 */
export const TOKENIZE_CHARS = 16_384;
/** Longest passage a last-word example is drawn from when a long story is cut into passages. */
export const PASSAGE_CHARS = 1_024;

/** Largest evaluation file read (V8 strings stop at about 512 Mi characters). */
export const MAX_EVAL_FILE_BYTES = 256 * 2 ** 20;

/**
 * The file's text (a leading byte-order mark dropped). A regular file under MAX_EVAL_FILE_BYTES only (a FIFO
 * or a device would never end): OptionsError DATA_MISSING when it cannot be read, FILE_NOT_REGULAR /
 * FILE_TOO_LARGE otherwise.
 */
export function readEvalText(path: string): string {
  const text = readTextFile(path, {
    what: 'evaluate: the stories file',
    maxBytes: MAX_EVAL_FILE_BYTES,
    error: OptionsError,
    missingCode: 'DATA_MISSING',
  });
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** Stories from a file's text: the pieces between lines `<|endoftext|>`, trimmed, empty ones dropped. */
export function splitStories(text: string): string[] {
  return text
    .split(/^[ \t]*<\|endoftext\|>[ \t]*$/m)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * `text` cut into consecutive pieces of at most `maxChars` characters whose concatenation is `text`. Each
 * cut falls, by preference, after a blank line, after a line break, after whitespace (each only in the
 * second half of the piece, so pieces stay large), else at `maxChars` (never inside a surrogate pair).
 * Handles LF and CRLF line endings alike.
 */
export function* cutText(text: string, maxChars: number): Generator<string> {
  let start = 0;
  while (text.length - start > maxChars) {
    const end = cutPoint(text, start, start + maxChars);
    yield text.slice(start, end);
    start = end;
  }
  if (start < text.length) yield text.slice(start);
}

const isSpace = (c: number) => c === 32 || c === 9 || c === 10 || c === 13 || c === 0xa0 || c === 0x3000 || (c >= 0x2000 && c <= 0x200a);

/** Where to end the piece starting at `start` that may reach `limit` (exclusive): see cutText. */
function cutPoint(text: string, start: number, limit: number): number {
  const floor = start + Math.floor((limit - start) / 2);
  let lineBreak = -1;
  for (let i = text.lastIndexOf('\n', limit - 1); i >= floor; i = text.lastIndexOf('\n', i - 1)) {
    if (lineBreak < 0) lineBreak = i;
    // A paragraph break: the line before this newline holds only spaces, tabs or a CR.
    let j = i - 1;
    while (j > start && (text[j] === '\r' || text[j] === ' ' || text[j] === '\t')) j--;
    if (j > start && text[j] === '\n') return i + 1;
  }
  if (lineBreak >= 0) return lineBreak + 1;
  for (let i = limit - 1; i >= floor; i--) if (isSpace(text.charCodeAt(i))) return i + 1;
  const last = text.charCodeAt(limit - 1);
  return last >= 0xd800 && last < 0xdc00 ? limit - 1 : limit;
}

/**
 * Perplexity tokens: each story tokenized and followed by `eos`, until `maxTokens` (the result is cut to
 * it). A story longer than TOKENIZE_CHARS is tokenized piece by piece (cutText), the later pieces without
 * special tokens, so one BOS starts it and one EOS ends it as for a short story.
 */
export function tokenizeStories(tokenizer: MexitTokenizer, stories: Iterable<string>, eos: number, maxTokens: number): number[] {
  const tokens: number[] = [];
  for (const story of stories) {
    if (tokens.length >= maxTokens) break;
    let first = true;
    for (const piece of cutText(story, TOKENIZE_CHARS)) {
      if (tokens.length >= maxTokens) break;
      const ids = first ? tokenizer.encode(piece) : tokenizer.encode(piece, { addSpecialTokens: false });
      for (const id of ids) tokens.push(id);
      first = false;
    }
    tokens.push(eos);
  }
  if (tokens.length > maxTokens) tokens.length = maxTokens;
  return tokens;
}

/**
 * The texts last-word examples are drawn from, lazily: each story, except that a story longer than
 * TOKENIZE_CHARS (running text) gives its passages of at most PASSAGE_CHARS, cut at paragraph, line or
 * word boundaries and trimmed.
 */
export function* passages(stories: Iterable<string>): Generator<string> {
  for (const story of stories) {
    if (story.length <= TOKENIZE_CHARS) {
      yield story;
      continue;
    }
    for (const piece of cutText(story, PASSAGE_CHARS)) {
      const passage = piece.trim();
      if (passage.length > 0) yield passage;
    }
  }
}
