/**
 * Prompt → token ids: the one home of prompt encoding (the generator and `mexit logits` both use it), so
 * every entry point checks the ids against the vocabulary the same way.
 */
import { OptionsError } from '@mexit/core';
import type { ChatMessage, ModelRuntime } from '@mexit/model';

/** A text prompt, token ids, or chat messages (rendered with the model's chat template). */
export type Prompt = string | readonly number[] | readonly ChatMessage[];

/**
 * Text → ids (with the tokenizer; `addSpecialTokens` default true), chat messages → template → ids, ids
 * validated. OptionsError NO_TOKENIZER / INVALID_PROMPT / EMPTY_PROMPT / TOKEN_ID_RANGE.
 */
export function encodePrompt(runtime: ModelRuntime, prompt: Prompt, addSpecialTokens?: boolean): number[] {
  const tokenizer = runtime.tokenizer;
  let ids: number[];
  if (typeof prompt === 'string') {
    if (!tokenizer)
      throw new OptionsError(
        'NO_TOKENIZER',
        `a text prompt needs a tokenizer, and ${runtime.dir} has no tokenizer.json; pass token ids instead`,
      );
    ids = tokenizer.encode(prompt, { addSpecialTokens: addSpecialTokens ?? true });
  } else if (Array.isArray(prompt) && prompt.length > 0 && typeof prompt[0] === 'object') {
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
