/**
 * The server through the official `openai` client, over the bundled model in this thread: completions and
 * chat, JSON and streamed, greedy answers equal to the generator's own, stop strings, usage, finish reasons,
 * the mexit extension, errors as the SDK's classes, concurrency, and a client abort that frees its slot.
 */
import { fileURLToPath } from 'node:url';
import { MexitGenerator } from '@mexit/speculative';
import { startServer, type MexitServer } from '@mexit/server';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeldGenerator, until } from './support/gate.js';

const MODEL = fileURLToPath(new URL('../../../fixtures/models/tinystories-ee', import.meta.url));
const PROMPT = 'Once upon a time, there was a little girl named';

let generator: MexitGenerator;
let held: HeldGenerator;
let server: MexitServer;
let client: OpenAI;

beforeAll(async () => {
  generator = await MexitGenerator.fromPretrained(MODEL);
  held = new HeldGenerator(generator, 2);
  held.open(); // only the abort test holds generations
  server = await startServer({ generator: held, modelId: 'tiny', port: 0, maxConcurrent: 2, log: () => {} });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterAll(async () => {
  await server?.close(0);
  await generator?.dispose();
});

describe('completions', () => {
  it('greedy: the text and usage of generator.generate on the same ids', async () => {
    const ids = await generator.tokenize(PROMPT);
    const expected = await generator.generate(ids, { maxNewTokens: 12 });
    const r = await client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 12, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.id).toMatch(/^cmpl-/);
    expect(r.model).toBe('tiny');
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0].text).toBe(expected.text);
    expect(r.choices[0].index).toBe(0);
    expect(r.choices[0].logprobs).toBeNull();
    expect(r.choices[0].finish_reason).toBe(expected.stats.stopReason === 'max-new-tokens' ? 'length' : 'stop');
    expect(r.usage).toEqual({
      prompt_tokens: ids.length,
      completion_tokens: expected.ids.length,
      total_tokens: ids.length + expected.ids.length,
    });
  });

  it('token-id prompts, and a one-element array of either form', async () => {
    const ids = await generator.tokenize(PROMPT);
    const expected = (await generator.generate(ids, { maxNewTokens: 6 })).text;
    for (const prompt of [ids, [ids], [PROMPT]]) {
      const r = await client.completions.create({ model: 'tiny', prompt, max_tokens: 6, temperature: 0 });
      expect(r.choices[0].text).toBe(expected);
    }
  });

  it("finish_reason 'length' at max_tokens, 'stop' at a stop string (cut before it)", async () => {
    const ids = await generator.tokenize(PROMPT);
    const free = await generator.generate(ids, { maxNewTokens: 20 });
    expect(free.stats.stopReason).toBe('max-new-tokens');
    const r = await client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 20, temperature: 0 });
    expect(r.choices[0].finish_reason).toBe('length');
    expect(r.usage?.completion_tokens).toBe(20);
    // A stop string taken from the middle of the free answer.
    const words = free.text.trim().split(/\s+/);
    const stop = ` ${words[Math.min(3, words.length - 1)]}`;
    const cut = free.text.slice(0, free.text.indexOf(stop));
    const s = await client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 20, temperature: 0, stop: [stop, 'zzzz'] });
    expect(s.choices[0].finish_reason).toBe('stop');
    expect(s.choices[0].text).toBe(cut);
  });

  it('streams text deltas whose concatenation is the JSON answer, then usage', async () => {
    const plain = await client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 10, temperature: 0 });
    const stream = await client.completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: 10,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(plain.usage);
    const withChoices = chunks.slice(0, -1);
    expect(withChoices.map((c) => c.choices[0].text).join('')).toBe(plain.choices[0].text);
    expect(withChoices.at(-1)!.choices[0].finish_reason).toBe('length');
    expect(withChoices.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect((withChoices.at(-1) as unknown as { mexit: { mode: string } }).mexit.mode).toBe('self-spec');
  });

  it('the same seed samples the same text; the mexit extension reaches the engine and reports back', async () => {
    const ask = (seed: number) => client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 12, temperature: 0.9, seed });
    const [a, b] = [await ask(7), await ask(7)];
    expect(a.choices[0].text).toBe(b.choices[0].text);
    const ids = await generator.tokenize(PROMPT);
    const expected = await generator.generate(ids, { maxNewTokens: 8, mode: 'ar' });
    const r = (await client.completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      // @ts-expect-error the mexit request extension
      mexit: { mode: 'ar' },
    })) as unknown as { choices: { text: string }[]; mexit: Record<string, unknown> };
    expect(r.choices[0].text).toBe(expected.text);
    expect(r.mexit.mode).toBe('ar');
    const spec = (await client.completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      // @ts-expect-error the mexit request extension
      mexit: { exit_layer: 2, num_speculations: 3 },
    })) as unknown as { choices: { text: string }[]; mexit: Record<string, unknown> };
    expect(spec.choices[0].text).toBe(expected.text); // self-spec is exact
    expect(spec.mexit).toMatchObject({ mode: 'self-spec', exit_layer: 2, num_speculations: 3 });
    expect((spec.mexit.token_sources as string[]).length).toBe(8);
    expect(spec.mexit.accepted).toBeLessThanOrEqual(spec.mexit.drafted as number);
  });
});

describe('chat', () => {
  const messages = [
    { role: 'system' as const, content: 'You tell short stories.' },
    { role: 'user' as const, content: 'Tell me about a dog.' },
  ];

  it("greedy: the chat template's answer, as generator.generate(messages) gives it", async () => {
    const expected = await generator.generate(messages, { maxNewTokens: 12 });
    const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0 });
    expect(r.object).toBe('chat.completion');
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.choices[0].message.role).toBe('assistant');
    expect(r.choices[0].message.content).toBe(expected.text);
    expect(r.usage?.prompt_tokens).toBe(expected.stats.promptTokens);
    expect(r.usage?.completion_tokens).toBe(expected.ids.length);
  });

  it('streams: a role chunk, content deltas, a closing chunk with finish_reason, usage', async () => {
    const plain = await client.chat.completions.create({ model: 'tiny', messages, max_completion_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({
      model: 'tiny',
      messages,
      max_completion_tokens: 10,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const usage = chunks.at(-1)!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual(plain.usage);
    const closing = chunks.at(-2)!;
    expect(closing.choices[0].finish_reason).toBe(plain.choices[0].finish_reason);
    const text = chunks
      .slice(1, -1)
      .map((c) => c.choices[0].delta.content ?? '')
      .join('');
    expect(text).toBe(plain.choices[0].message.content);
  });
});

describe('errors as the SDK classes', () => {
  it('bad fields, unsupported fields and engine errors are BadRequestError with code and param', async () => {
    const bad = async (body: Record<string, unknown>) => {
      const e = await client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 4, ...body } as never).catch((x) => x);
      expect(e).toBeInstanceOf(OpenAI.BadRequestError);
      return e as InstanceType<typeof OpenAI.BadRequestError>;
    };
    expect((await bad({ n: 2 })).param).toBe('n');
    expect((await bad({ logprobs: 2 })).param).toBe('logprobs');
    expect((await bad({ echo: true })).param).toBe('echo');
    expect((await bad({ best_of: 3 })).param).toBe('best_of');
    expect((await bad({ temperature: 3 })).param).toBe('temperature');
    expect((await bad({ prompt: ['a', 'b'] })).param).toBe('prompt');
    const context = await bad({ max_tokens: 100_000 });
    expect(context.code).toBe('context_length_exceeded');
    expect(context.param).toBe('max_tokens');
    const engine = await bad({ mexit: { exit_layer: 99 } });
    expect(engine.code).toBe('INVALID_OPTION');
    expect(engine.param).toBe('mexit.exit_layer');
    expect(engine.message).toMatch(/exitLayer/);
    const range = await bad({ prompt: [999_999] });
    expect(range.code).toBe('TOKEN_ID_RANGE');
    expect(range.param).toBe('prompt');
    const chat = await client.chat.completions
      .create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }] })
      .catch((x) => x);
    expect(chat).toBeInstanceOf(OpenAI.BadRequestError);
    expect(chat.param).toBe('tools');
  });

  it('unknown model → NotFoundError; /v1/models lists the one model', async () => {
    const e = await client.completions.create({ model: 'gpt-4', prompt: PROMPT, max_tokens: 2 }).catch((x) => x);
    expect(e).toBeInstanceOf(OpenAI.NotFoundError);
    expect(e.code).toBe('model_not_found');
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(['tiny']);
    expect((await client.models.retrieve('tiny')).id).toBe('tiny');
    expect(await client.models.retrieve('other').catch((x) => x)).toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe('concurrency and aborts', () => {
  it('concurrent greedy requests each answer what they answer alone', async () => {
    const prompts = ['The cat', 'A big red ball', 'Tom and Sue went to the park', 'One day'];
    const ask = (prompt: string) =>
      client.completions.create({ model: 'tiny', prompt, max_tokens: 8, temperature: 0 }).then((r) => r.choices[0].text);
    const alone = [];
    for (const p of prompts) alone.push(await ask(p));
    const together = await Promise.all(prompts.map(ask));
    expect(together).toEqual(alone);
  });

  it('a client abort mid-stream stops the generation (outcome aborted) and frees its slot', async () => {
    const s = new HeldGenerator(generator, 2);
    const local = await startServer({ generator: s, modelId: 'tiny', port: 0, log: () => {} });
    try {
      const c = new OpenAI({ baseURL: `${local.url}/v1`, apiKey: 'x', maxRetries: 0 });
      const controller = new AbortController();
      const stream = await c.completions.create(
        { model: 'tiny', prompt: PROMPT, max_tokens: 50, temperature: 0, stream: true },
        { signal: controller.signal },
      );
      const seen: string[] = [];
      const reading = (async () => {
        for await (const chunk of stream) seen.push(chunk.choices[0].text);
      })().catch((e) => e);
      await s.untilHeld(1);
      expect(local.stats().inFlight).toBe(1);
      controller.abort();
      await reading; // the SDK ends an aborted stream quietly or with an abort error
      await until(() => local.stats().generations.aborted === 1);
      expect(local.stats()).toMatchObject({ inFlight: 0, queued: 0 });
      expect(local.stats().generations.completed).toBe(0);
      // The freed slot serves the next request.
      s.open();
      const r = await c.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 3, temperature: 0 });
      expect(r.usage?.completion_tokens).toBe(3);
      const metrics = await (await fetch(`${local.url}/metrics`)).text();
      expect(metrics).toMatch(/mexit_generations_total\{outcome="aborted"\} 1/);
      expect(metrics).toMatch(/mexit_generations_total\{outcome="completed"\} 1/);
    } finally {
      await local.close(0);
    }
  });
});
