/**
 * Prompt → token ids: the one home of prompt encoding (the generator and `mexit logits` both use it), so
 * every entry point checks the ids against the vocabulary the same way.
 */
import { OptionsError } from '@mexit/core';
import type { ChatMessage, ModelRuntime } from '@mexit/model';
import { formatValue, invalidOption } from './options.js';

/** A text prompt, token ids, or chat messages (rendered with the model's chat template). */
export type Prompt = string | readonly number[] | readonly ChatMessage[];

/**
 * Text → ids (with the tokenizer; `addSpecialTokens` default true), chat messages → template → ids, ids
 * validated. OptionsError NO_TOKENIZER / INVALID_PROMPT / EMPTY_PROMPT / TOKEN_ID_RANGE. An array is ids when
 * its first element is a number and chat messages when it is an object; every element must then be of that
 * kind (a hole, null, a string or a nested array is INVALID_PROMPT naming its index), never coerced.
 */
export function encodePrompt(runtime: ModelRuntime, prompt: Prompt, addSpecialTokens?: boolean): number[] {
  if (addSpecialTokens !== undefined && typeof addSpecialTokens !== 'boolean') {
    throw invalidOption('addSpecialTokens', 'a boolean (true or false)', addSpecialTokens);
  }
  const tokenizer = runtime.tokenizer;
  let ids: number[];
  if (Array.isArray(prompt) && prompt.length > 0) checkPromptElements(prompt);
  if (typeof prompt === 'string') {
    if (!tokenizer)
      throw new OptionsError(
        'NO_TOKENIZER',
        `a text prompt needs a tokenizer, and ${runtime.dir} has no tokenizer.json; pass token ids instead`,
      );
    ids = tokenizer.encode(prompt, { addSpecialTokens: addSpecialTokens ?? true });
  } else if (Array.isArray(prompt) && prompt.length > 0 && typeof prompt[0] === 'object') {
    // Checked above: every element is a {role, content} message.
    if (!tokenizer) throw new OptionsError('NO_TOKENIZER', `chat messages need a tokenizer, and ${runtime.dir} has no tokenizer.json`);
    ids = tokenizer.encodeChat(prompt as ChatMessage[]);
  } else if (Array.isArray(prompt)) {
    ids = Array.from(prompt as number[]);
  } else {
    throw new OptionsError('INVALID_PROMPT', 'prompt must be a string, an array of token ids or an array of chat messages');
  }
  if (ids.length === 0) throw new OptionsError('EMPTY_PROMPT', 'the prompt is empty');
  const V = runtime.config.vocabSize;
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= V)
      throw new OptionsError('TOKEN_ID_RANGE', `prompt token id ${id} is outside the vocabulary 0..${V - 1}`);
  }
  return ids;
}

/** Ids (numbers; their range is checked after encoding) or chat messages, all of one kind. */
function checkPromptElements(prompt: readonly unknown[]): void {
  const chat = isMessageLike(prompt[0]);
  if (!chat && typeof prompt[0] !== 'number') throw badElement(prompt, 0, 'a token id (number) or a chat message {role, content}');
  for (let i = 0; i < prompt.length; i++) {
    const element = prompt[i];
    if (chat) {
      if (!isMessageLike(element)) throw badElement(prompt, i, 'a chat message {role, content}, like element 0');
      const { role, content } = element as Record<string, unknown>;
      if (typeof role !== 'string' || typeof content !== 'string') {
        throw badElement(prompt, i, 'a chat message with string role and string content');
      }
    } else if (typeof element !== 'number') {
      throw badElement(prompt, i, 'a token id (number), like element 0');
    }
  }
}

const isMessageLike = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);

function badElement(prompt: readonly unknown[], index: number, expected: string): OptionsError {
  const got = index in prompt ? formatValue(prompt[index]) : 'a hole (sparse array)';
  return new OptionsError('INVALID_PROMPT', `prompt[${index}] must be ${expected}, got ${got}`);
}
