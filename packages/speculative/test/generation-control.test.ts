/**
 * Generation control on a model with a tokenizer: stop strings spanning several tokens, EOS inside an
 * accepted draft block, exact maxNewTokens, cancellation, chat templates and streaming.
 *
 * The golden models have no tokenizer, so a fixture model directory is assembled at test time: gpt2-tiny's
 * config and weights plus a 512-entry byte-level BPE tokenizer (the 256 byte symbols in GPT-2's
 * byte-to-unicode order, then GPT-2's first 256 merges, ids 256..511 — exactly GPT-2's own ids 0..511).
 * References are always produced by plain `ar` decoding or by the tokenizer, never by the feature under test.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError } from '@mexit/core';
import { MexitTokenizer, type ChatMessage } from '@mexit/model';
import { SelfSpeculativeGenerator, type GenerateOptions, type GenerationResult, type Prompt } from '@mexit/speculative';

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url));

const CHAT_TEMPLATE =
  '{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}';

/** GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100 onwards, in this order. */
function gpt2ByteSymbols(): string[] {
  const bytes: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bytes.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bytes.push(b);
  for (let b = 0xae; b <= 0xff; b++) bytes.push(b);
  const codes = [...bytes];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      codes.push(256 + n++);
    }
  }
  return codes.map((c) => String.fromCodePoint(c));
}

/** Writes gpt2-tiny + the 512-token tokenizer into a fresh temporary directory. */
function buildFixtureModel(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mexit-generation-control-'));
  for (const file of ['config.json', 'model.safetensors']) copyFileSync(join(fixture('goldens/gpt2-tiny'), file), join(dir, file));
  const gpt2 = JSON.parse(readFileSync(fixture('tokenizers/gpt2/tokenizer.json'), 'utf8'));
  const vocab: Record<string, number> = {};
  gpt2ByteSymbols().forEach((symbol, id) => {
    vocab[symbol] = id;
  });
  const merges: string[] = gpt2.model.merges.slice(0, 256);
  merges.forEach((merge, i) => {
    vocab[merge.split(' ').join('')] = 256 + i;
  });
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: gpt2.pre_tokenizer,
    post_processor: gpt2.post_processor,
    decoder: gpt2.decoder,
    model: { ...gpt2.model, vocab, merges },
  };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({
      tokenizer_class: 'GPT2Tokenizer',
      clean_up_tokenization_spaces: false,
      model_max_length: 128,
      chat_template: CHAT_TEMPLATE,
    }),
  );
  return dir;
}

/** Runs stream() to the end, keeping every delta and the final result (the iterator's return value). */
async function streamAll(
  gen: SelfSpeculativeGenerator,
  prompt: Prompt,
  options: GenerateOptions,
): Promise<{ deltas: string[]; result: GenerationResult }> {
  const iterator = gen.stream(prompt, options);
  const deltas: string[] = [];
  for (;;) {
    const step = await iterator.next();
    if (step.done) return { deltas, result: step.value };
    deltas.push(step.value);
  }
}

const PROMPTS = ['Once upon a time', 'The cat sat on', 'hello world'];
/** Self-spec settings used throughout: E = 3 accepts many drafts on gpt2-tiny, E = 1 few. */
const SPEC_SETTINGS: GenerateOptions[] = [
  { mode: 'self-spec', exitLayer: 3, numSpeculations: 4 },
  { mode: 'self-spec', exitLayer: 1, numSpeculations: 8 },
  { mode: 'self-spec', exitLayer: 2, numSpeculations: 3, adaptiveDraftLength: true },
];
const ALL_SETTINGS: GenerateOptions[] = [{ mode: 'ar' }, ...SPEC_SETTINGS];

let dir: string;
let tok: MexitTokenizer;
let gen: SelfSpeculativeGenerator;

beforeAll(async () => {
  dir = buildFixtureModel();
  tok = MexitTokenizer.load(dir)!;
  gen = await SelfSpeculativeGenerator.fromPretrained(dir, { threads: 1 });
});

afterAll(async () => {
  await gen?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Greedy ar reference: ids and decoded text (decoded by the tokenizer, independently of the generator). */
async function reference(prompt: Prompt, maxNewTokens = 40): Promise<{ ids: number[]; text: string }> {
  const { ids } = await gen.generate(prompt, { mode: 'ar', maxNewTokens });
  return { ids, text: tok.decode(ids, { skipSpecialTokens: true }) };
}

describe('fixture tokenizer', () => {
  it('loads with exactly the model vocabulary and round-trips text', () => {
    expect(tok).not.toBeNull();
    expect(tok.vocabSize).toBe(512);
    expect(tok.vocabSize).toBe(gen.runtime.config.vocabSize);
    expect(tok.hasChatTemplate).toBe(true);
    // ids 0..511 are GPT-2's own: byte symbols first, then the merges in rank order.
    const gpt2 = JSON.parse(readFileSync(fixture('tokenizers/gpt2/tokenizer.json'), 'utf8'));
    const gpt2Tokens = new Map<number, string>();
    for (const [token, id] of Object.entries(gpt2.model.vocab as Record<string, number>)) if (id < 512) gpt2Tokens.set(id, token);
    for (let id = 0; id < 512; id++) expect(tok.idToToken(id)).toBe(gpt2Tokens.get(id));
    for (const text of ['Once upon a time, there was a cat.', 'héllo wörld → 世界 🎉', ' two  spaces\nnewline\t']) {
      const ids = tok.encode(text);
      expect(ids.every((id) => id >= 0 && id < 512)).toBe(true);
      expect(tok.decode(ids)).toBe(text);
    }
    // 'Ġt' + 'he' merges exist: ' the' is 2 tokens (Ġt, he) or fewer, not 4 bytes.
    expect(tok.encode(' the').length).toBeLessThan(4);
  });
});

describe('streaming', () => {
  it('stream deltas concatenated equal generate().text and the tokenizer decoding of the ids', async () => {
    for (const prompt of PROMPTS) {
      for (const setting of ALL_SETTINGS) {
        const options = { ...setting, maxNewTokens: 40 };
        const generated = await gen.generate(prompt, options);
        const { deltas, result } = await streamAll(gen, prompt, options);
        expect(result.ids).toEqual(generated.ids);
        expect(deltas.join('')).toBe(generated.text);
        expect(result.text).toBe(generated.text);
        expect(generated.text).toBe(tok.decode(generated.ids, { skipSpecialTokens: true }));
        expect(deltas.every((d) => d.length > 0)).toBe(true);
      }
    }
  });

  it('events carry every committed token once, with non-empty text deltas summing to the text', async () => {
    const prompt = PROMPTS[0];
    const options: GenerateOptions = { ...SPEC_SETTINGS[0], maxNewTokens: 30 };
    const tokens: number[] = [];
    let text = '';
    let done: GenerationResult | undefined;
    for await (const event of gen.events(prompt, options, (r) => (done = r))) {
      tokens.push(event.token);
      text += event.text;
    }
    expect(done).toBeDefined();
    expect(tokens).toEqual(done!.ids);
    expect(text).toBe(done!.text);
    expect(tokens).toEqual((await reference(prompt, 30)).ids);
  });
});

/**
 * Positions k where tokens k, k+1, k+2 each add clean text (no U+FFFD from a split character) and the text
 * of those three tokens first occurs in the whole output right at token k.
 */
function stopCandidates(ids: number[], fullText: string): { k: number; before: number; stop: string; firstTokenLength: number }[] {
  const prefix = (n: number) => tok.decode(ids.slice(0, n), { skipSpecialTokens: true });
  const out: { k: number; before: number; stop: string; firstTokenLength: number }[] = [];
  for (let k = 1; k + 3 <= ids.length; k++) {
    const texts = [prefix(k), prefix(k + 1), prefix(k + 2), prefix(k + 3)];
    if (!texts.every((t) => fullText.startsWith(t))) continue;
    if (!(texts[0].length < texts[1].length && texts[1].length < texts[2].length && texts[2].length < texts[3].length)) continue;
    const stop = texts[3].slice(texts[0].length);
    if (stop.includes('\uFFFD') || fullText.indexOf(stop) !== texts[0].length) continue;
    out.push({ k, before: texts[0].length, stop, firstTokenLength: texts[1].length - texts[0].length });
  }
  return out;
}

describe('stop strings', () => {
  it('a stop string spanning three tokens ends the text right before it, in every mode, and is never streamed', async () => {
    let checked = 0;
    for (const prompt of PROMPTS) {
      const ref = await reference(prompt);
      const candidates = stopCandidates(ref.ids, ref.text);
      for (const { k, before, stop } of candidates.slice(0, 2)) {
        for (const setting of ALL_SETTINGS) {
          const options = { ...setting, maxNewTokens: 40, stop: [stop] };
          const { deltas, result } = await streamAll(gen, prompt, options);
          expect(result.text).toBe(ref.text.slice(0, before));
          expect(result.stats.stopReason).toBe('stop-string');
          // Generation ends on the token that completes the stop string.
          expect(result.ids).toEqual(ref.ids.slice(0, k + 3));
          expect(deltas.join('')).toBe(result.text);
          expect(deltas.some((d) => d.includes(stop))).toBe(false);
          expect(deltas.join('')).not.toContain(stop);
          expect((await gen.generate(prompt, options)).text).toBe(result.text);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(4 * ALL_SETTINGS.length);
  });

  it('a stop string starting inside a token cuts the text inside that token', async () => {
    let checked = 0;
    for (const prompt of PROMPTS) {
      const ref = await reference(prompt);
      const candidate = stopCandidates(ref.ids, ref.text).find(
        (c) => c.firstTokenLength >= 2 && ref.text.indexOf(c.stop.slice(1)) === c.before + 1,
      );
      if (!candidate) continue;
      const stop = candidate.stop.slice(1);
      for (const setting of ALL_SETTINGS) {
        const { deltas, result } = await streamAll(gen, prompt, { ...setting, maxNewTokens: 40, stop: [stop] });
        expect(result.text).toBe(ref.text.slice(0, candidate.before + 1));
        expect(result.ids).toEqual(ref.ids.slice(0, candidate.k + 3));
        expect(deltas.join('')).toBe(result.text);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(0);
  });

  it('with several stop strings the earliest occurrence wins; an absent one changes nothing', async () => {
    const prompt = PROMPTS[0];
    const ref = await reference(prompt);
    const candidates = stopCandidates(ref.ids, ref.text);
    expect(candidates.length).toBeGreaterThanOrEqual(2);
    const [early, late] = [candidates[0], candidates[candidates.length - 1]];
    for (const setting of ALL_SETTINGS) {
      const both = await gen.generate(prompt, { ...setting, maxNewTokens: 40, stop: [late.stop, early.stop] });
      expect(both.text).toBe(ref.text.slice(0, early.before));
      const absent = await gen.generate(prompt, { ...setting, maxNewTokens: 40, stop: ['\u0000never\u0000'] });
      expect(absent.text).toBe(ref.text);
      expect(absent.ids).toEqual(ref.ids);
      expect(absent.stats.stopReason).toBe('max-new-tokens');
    }
  });
});

describe('EOS', () => {
  it('an EOS inside an accepted draft block ends generation exactly there, identically for ar and self-spec', async () => {
    let checked = 0;
    let eosWasAcceptedDraft = 0;
    for (const prompt of PROMPTS) {
      const ref = await reference(prompt);
      for (const setting of SPEC_SETTINGS.slice(0, 2)) {
        const specRef = await gen.generate(prompt, { ...setting, maxNewTokens: 40 });
        expect(specRef.ids).toEqual(ref.ids);
        // Positions whose token appears there for the first time, accepted from a draft in the reference run,
        // and not the last token (so the block could have continued past it).
        const positions = ref.ids
          .map((_id, k) => k)
          .filter((k) => ref.ids.indexOf(ref.ids[k]) === k && specRef.stats.tokenSources[k] === 'draft' && k + 1 < ref.ids.length)
          .slice(0, 3);
        for (const k of positions) {
          const eosTokenIds = [ref.ids[k]];
          const ar = await gen.generate(prompt, { mode: 'ar', maxNewTokens: 40, eosTokenIds });
          const spec = await gen.generate(prompt, { ...setting, maxNewTokens: 40, eosTokenIds });
          expect(ar.ids).toEqual(ref.ids.slice(0, k + 1));
          expect(spec.ids).toEqual(ar.ids);
          expect(ar.stats.stopReason).toBe('eos');
          expect(spec.stats.stopReason).toBe('eos');
          expect(spec.stats.newTokens).toBe(k + 1);
          if (spec.stats.tokenSources[k] === 'draft') eosWasAcceptedDraft++;
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThanOrEqual(3);
    // At least one run really ended on an EOS that was an accepted draft (more tokens were in its block).
    expect(eosWasAcceptedDraft).toBeGreaterThan(0);
  });

  it('an EOS that is the full model’s correction or bonus token also ends generation there', async () => {
    const prompt = PROMPTS[1];
    const ref = await reference(prompt);
    const setting = SPEC_SETTINGS[0];
    const specRef = await gen.generate(prompt, { ...setting, maxNewTokens: 40 });
    const k = ref.ids.findIndex((id, i) => ref.ids.indexOf(id) === i && specRef.stats.tokenSources[i] === 'target' && i > 0);
    expect(k).toBeGreaterThan(0);
    const spec = await gen.generate(prompt, { ...setting, maxNewTokens: 40, eosTokenIds: [ref.ids[k]] });
    expect(spec.ids).toEqual(ref.ids.slice(0, k + 1));
    expect(spec.stats.stopReason).toBe('eos');
  });
});

describe('maxNewTokens', () => {
  it('is exact for 1..30 in ar and self-spec (d = 8 never overshoots), with the ar tokens', async () => {
    const prompt = PROMPTS[2];
    const ref = await reference(prompt, 30);
    expect(ref.ids.length).toBe(30); // gpt2-tiny's EOS (50256) is outside its vocabulary
    for (let maxNewTokens = 1; maxNewTokens <= 30; maxNewTokens++) {
      for (const setting of [
        { mode: 'ar' as const },
        { mode: 'self-spec' as const, exitLayer: 3, numSpeculations: 8 },
        { mode: 'self-spec' as const, exitLayer: 1, numSpeculations: 8 },
      ]) {
        const result = await gen.generate(prompt, { ...setting, maxNewTokens });
        expect(result.ids).toEqual(ref.ids.slice(0, maxNewTokens));
        expect(result.stats.newTokens).toBe(maxNewTokens);
        expect(result.stats.stopReason).toBe('max-new-tokens');
      }
    }
  });
});

describe('cancellation', () => {
  it('aborting from inside the stream loop rejects with AbortError; the same generator then serves new requests exactly', async () => {
    const options: GenerateOptions = { mode: 'self-spec', exitLayer: 3, numSpeculations: 4, maxNewTokens: 60 };
    const controller = new AbortController();
    const deltas: string[] = [];
    const consume = async () => {
      for await (const delta of gen.stream(PROMPTS[0], { ...options, signal: controller.signal })) {
        deltas.push(delta);
        if (deltas.length === 3) controller.abort();
      }
    };
    const error = await consume().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AbortError);
    expect((error as AbortError).code).toBe('ABORTED');
    // Nothing is streamed after the abort, even though the round had committed more tokens.
    expect(deltas.length).toBe(3);

    const fresh = await SelfSpeculativeGenerator.fromPretrained(dir, { threads: 1 });
    try {
      for (const prompt of [PROMPTS[1], PROMPTS[0]]) {
        const expected = await fresh.generate(prompt, options);
        const again = await gen.generate(prompt, options);
        expect(again.ids).toEqual(expected.ids);
        expect(again.text).toBe(expected.text);
      }
    } finally {
      await fresh.dispose();
    }
  });

  it('aborting while a generation awaits the model rejects it; an already-aborted signal rejects before any token', async () => {
    const options: GenerateOptions = { mode: 'self-spec', exitLayer: 2, numSpeculations: 8, maxNewTokens: 100 };
    const controller = new AbortController();
    const running = gen.generate(PROMPTS[2], { ...options, signal: controller.signal });
    setTimeout(() => controller.abort(), 1);
    await expect(running).rejects.toMatchObject({ code: 'ABORTED' });

    let tokens = 0;
    const consume = async () => {
      for await (const _ of gen.events(PROMPTS[2], { ...options, signal: AbortSignal.abort() })) tokens++;
    };
    await expect(consume()).rejects.toBeInstanceOf(AbortError);
    expect(tokens).toBe(0);

    const after = await gen.generate(PROMPTS[2], { ...options, maxNewTokens: 20 });
    expect(after.ids).toEqual((await reference(PROMPTS[2], 20)).ids);
  });
});

describe('chat messages', () => {
  const messages: ChatMessage[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Tell me a story about a cat.' },
  ];
  // What the template must produce, written out by hand.
  const rendered = '<|system|>\nBe brief.\n<|user|>\nTell me a story about a cat.\n<|assistant|>\n';

  it('are rendered through the chat template and encoded without special tokens', async () => {
    expect(tok.applyChatTemplate(messages)).toBe(rendered);
    const ids = tok.encode(rendered, { addSpecialTokens: false });
    expect(gen.encodePrompt(messages)).toEqual(ids);
    for (const setting of [{ mode: 'ar' as const }, SPEC_SETTINGS[0]]) {
      const fromChat = await gen.generate(messages, { ...setting, maxNewTokens: 20 });
      const fromIds = await gen.generate(ids, { ...setting, maxNewTokens: 20 });
      expect(fromChat.stats.promptTokens).toBe(ids.length);
      expect(fromChat.ids).toEqual(fromIds.ids);
      expect(fromChat.text).toBe(fromIds.text);
    }
  });
});
