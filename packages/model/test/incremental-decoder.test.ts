/**
 * IncrementalDecoder: the streamed deltas concatenate to decode(all ids), each delta is printable on its own
 * (no split characters or surrogate pairs), and the decode window stays small.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { IncrementalDecoder as PublicIncrementalDecoder } from '@mexit/model';
import { IncrementalDecoder } from '../src/incremental-decoder.js';
import { MexitTokenizer, cleanUpTokenizationSpaces } from '../src/tokenizer.js';
import {
  GPT2_DIR,
  LLAMA3_DIR,
  SP_DIR,
  expectTokenizerError,
  gpt2ByteTokenId,
  makeRng,
  pick,
  randomText,
  spByteTokenId,
  storyLines,
} from './support/tokenizers.js';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function streamDecode(
  tok: MexitTokenizer,
  ids: number[],
  options: { skipSpecialTokens?: boolean; cleanUpTokenizationSpaces?: boolean },
): string[] {
  const decoder = new IncrementalDecoder(tok, options);
  const deltas = ids.map((id) => decoder.push(id));
  deltas.push(decoder.flush());
  // Each delta must be printable on its own: no surrogate pair split between two deltas.
  for (const delta of deltas) expect(LONE_SURROGATE.test(delta), JSON.stringify(deltas)).toBe(false);
  return deltas;
}

let gpt2: MexitTokenizer;
let sp: MexitTokenizer;
let llama3: MexitTokenizer | undefined;

beforeAll(() => {
  gpt2 = MexitTokenizer.load(GPT2_DIR)!;
  sp = MexitTokenizer.load(SP_DIR)!;
  llama3 = LLAMA3_DIR === undefined ? undefined : MexitTokenizer.load(LLAMA3_DIR)!;
});

describe('IncrementalDecoder', () => {
  test("is exported from '@mexit/model'", () => {
    expect(PublicIncrementalDecoder).toBe(IncrementalDecoder);
  });

  test('SentencePiece: words keep their leading space (per-token decode would drop it)', () => {
    expect(sp.decode([3186])).toBe('world');
    expect(streamDecode(sp, [15043, 3186], {})).toEqual(['Hello', ' world', '']);
    expect(streamDecode(sp, [1, 15043, 3186], {})).toEqual(['<s>', ' Hello', ' world', '']);
    expect(streamDecode(sp, [1, 15043, 3186], { skipSpecialTokens: true })).toEqual(['', 'Hello', ' world', '']);
  });

  test('multibyte characters split across tokens are held back until complete', () => {
    const emojiBytes = [...new TextEncoder().encode('😀')];
    // GPT-2: byte-level tokens; the character appears once its last byte arrives.
    expect(streamDecode(gpt2, [15496, ...emojiBytes.map(gpt2ByteTokenId), 995], {})).toEqual(['Hello', '', '', '', '😀', ' world', '']);
    // An unfinished character at the end of the stream comes out as U+FFFD on flush, like decode().
    expect(streamDecode(gpt2, emojiBytes.slice(0, 2).map(gpt2ByteTokenId), {})).toEqual(['', '', '\uFFFD']);
    // SentencePiece byte fallback: held until a non-byte token ends the byte run.
    expect(streamDecode(sp, [15043, ...emojiBytes.map(spByteTokenId), 3186], {})).toEqual(['Hello', '', '', '', '', '😀 world', '']);
    expect(streamDecode(sp, [15043, ...emojiBytes.map(spByteTokenId)], {})).toEqual(['Hello', '', '', '', '', '😀']);
  });

  test('an invalid byte run turns into one U+FFFD per byte, even across a skipped special token', () => {
    // C3 A9 is 'é'; C3 A9 E2 is not valid UTF-8, so transformers (Rust ByteFallback) gives three U+FFFD.
    const ids = [15043, spByteTokenId(0xc3), spByteTokenId(0xa9), 32007, spByteTokenId(0xe2), 3186];
    expect(sp.decode(ids)).toBe('Helloé<|end|>\uFFFD world');
    expect(sp.decode(ids, { skipSpecialTokens: true })).toBe('Hello\uFFFD\uFFFD\uFFFD world');
    expect(streamDecode(sp, ids, {}).join('')).toBe('Helloé<|end|>\uFFFD world');
    expect(streamDecode(sp, ids, { skipSpecialTokens: true }).join('')).toBe('Hello\uFFFD\uFFFD\uFFFD world');
  });

  function randomIdSequence(rng: () => number, tok: MexitTokenizer, byteId: (b: number) => number, specials: number[]): number[] {
    const ids: number[] = [];
    const length = 1 + Math.floor(rng() * 30);
    while (ids.length < length) {
      const r = rng();
      if (r < 0.3) ids.push(...tok.encode(randomText(rng, false), { addSpecialTokens: false }).slice(0, 6));
      else if (r < 0.6) ids.push(byteId(Math.floor(rng() * 256)));
      else if (r < 0.9) ids.push(Math.floor(rng() * Math.min(tok.vocabSize, 50000)));
      else ids.push(pick(rng, specials));
    }
    return ids.filter((id) => tok.idToToken(id) !== undefined);
  }

  const cases: [string, () => MexitTokenizer | undefined, (b: number) => number, number[]][] = [
    ['gpt2', () => gpt2, gpt2ByteTokenId, [50256]],
    ['sentencepiece', () => sp, spByteTokenId, [1, 2, 32000, 32007, 32010]],
    ['llama3', () => llama3, gpt2ByteTokenId, [128000, 128006, 128009]],
  ];
  for (const [name, getTok, byteId, specials] of cases) {
    test.skipIf(name === 'llama3' && LLAMA3_DIR === undefined)(
      `${name}: concatenated deltas equal decode(all) on random id sequences`,
      () => {
        const tok = getTok()!;
        const rng = makeRng(name.length * 7919);
        for (let trial = 0; trial < 60; trial++) {
          const ids = randomIdSequence(rng, tok, byteId, specials);
          for (const skipSpecialTokens of [false, true]) {
            const streamed = streamDecode(tok, ids, { skipSpecialTokens }).join('');
            expect(streamed, JSON.stringify(ids)).toBe(tok.decode(ids, { skipSpecialTokens }));
          }
        }
      },
    );
  }

  test('with clean-up on, streaming equals decode(all) with clean-up', () => {
    const rng = makeRng(99);
    const cleanupPieces = [
      ' ',
      '.',
      ',',
      '!',
      '?',
      "'",
      'n',
      't',
      'm',
      's',
      'v',
      'e',
      'r',
      "n't",
      " 's",
      " ' ",
      " 've",
      " 're",
      'x',
      'xy',
      'é',
      '中文',
      '😀',
    ];
    for (let trial = 0; trial < 80; trial++) {
      let text = '';
      const pieces = 1 + Math.floor(rng() * 25);
      for (let i = 0; i < pieces; i++) text += pick(rng, cleanupPieces);
      // Once as real BPE tokens, once one byte token per byte so that every character boundary is a delta boundary.
      const bpeIds = gpt2.encode(text);
      const byteIds = [...new TextEncoder().encode(text)].map(gpt2ByteTokenId);
      for (const ids of [bpeIds, byteIds]) {
        const streamed = streamDecode(gpt2, ids, { cleanUpTokenizationSpaces: true }).join('');
        expect(streamed, JSON.stringify(text)).toBe(gpt2.decode(ids, { cleanUpTokenizationSpaces: true }));
      }
      expect(gpt2.decode(byteIds, { cleanUpTokenizationSpaces: true })).toBe(cleanUpTokenizationSpaces(text));
    }
  });

  test('the decode window stays small over a long stream', () => {
    const ids = sp.encode(storyLines.slice(0, 20).join('\n'));
    expect(ids.length).toBeGreaterThan(500);
    const decoder = new IncrementalDecoder(sp);
    let maxWindow = 0;
    let text = '';
    for (const id of ids) {
      text += decoder.push(id);
      maxWindow = Math.max(maxWindow, decoder.windowLength);
    }
    text += decoder.flush();
    expect(text).toBe(sp.decode(ids));
    expect(maxWindow).toBeLessThanOrEqual(4);
  });

  test('bad ids are rejected without corrupting the stream', () => {
    const decoder = new IncrementalDecoder(gpt2);
    expect(decoder.push(15496)).toBe('Hello');
    expectTokenizerError(() => decoder.push(-3), 'TOKEN_ID_RANGE');
    expectTokenizerError(() => decoder.push(gpt2.vocabSize), 'TOKEN_ID_RANGE');
    expect(decoder.push(995)).toBe(' world');
    expect(decoder.flush()).toBe('');
  });
});
