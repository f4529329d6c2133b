/**
 * The LAMBADA-style last-word task: a passage minus its final word is the context, and the first word of a
 * greedy continuation must equal that word. Only the text rules live here; decoding is in generation.ts.
 */
import type { MexitTokenizer } from '@mexit/model';

/** New tokens decoded per example: the target word plus room for a split into sub-word tokens. */
export const LAMBADA_MAX_NEW_TOKENS = 6;
/** Examples drawn by default. */
export const DEFAULT_LAMBADA_EXAMPLES = 100;

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

export interface LambadaExample {
  context: string;
  target: string;
  /** First word of each mode's continuation, by mode label. */
  predictions: Record<string, string>;
}

/** An example with its tokenized context. */
export interface TokenizedExample extends LambadaExample {
  ids: number[];
}

/**
 * Up to `count` examples from `texts` whose tokenized context leaves room for LAMBADA_MAX_NEW_TOKENS in a
 * window of `window` positions.
 */
export function collectExamples(tokenizer: MexitTokenizer, texts: Iterable<string>, count: number, window: number): TokenizedExample[] {
  const examples: TokenizedExample[] = [];
  if (count <= 0) return examples;
  for (const text of texts) {
    const ex = lastWordExample(text);
    if (!ex) continue;
    const ids = tokenizer.encode(ex.context);
    if (ids.length === 0 || ids.length + LAMBADA_MAX_NEW_TOKENS > window) continue;
    examples.push({ ...ex, ids, predictions: {} });
    if (examples.length >= count) break;
  }
  return examples;
}
