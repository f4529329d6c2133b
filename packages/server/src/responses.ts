/** Response and stream-chunk shapes, exactly as OpenAI's, plus the `mexit` statistics extension. */
import { randomBytes } from 'node:crypto';
import type { GenerationStats } from '@mexit/speculative';
import type { Endpoint } from './requests.js';

export type FinishReason = 'stop' | 'length';

/** EOS or a stop string → 'stop'; the token budget → 'length'. */
export const finishReason = (stats: GenerationStats): FinishReason => (stats.stopReason === 'max-new-tokens' ? 'length' : 'stop');

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export const usageOf = (stats: GenerationStats): Usage => ({
  prompt_tokens: stats.promptTokens,
  completion_tokens: stats.newTokens,
  total_tokens: stats.promptTokens + stats.newTokens,
});

/** How the answer was made: the `mexit` field of a response (of the final chunk when streaming). */
export interface MexitStats {
  mode: GenerationStats['mode'];
  exit_layer: number | null;
  num_speculations: number | null;
  drafter: string | null;
  drafted: number;
  accepted: number;
  acceptance_rate: number;
  /** Per new token: 'draft' (an accepted draft) or 'target' (the full model's own). */
  token_sources: ('draft' | 'target')[];
  tokens_per_second: number;
  stop_reason: GenerationStats['stopReason'];
}

export const mexitStats = (s: GenerationStats): MexitStats => ({
  mode: s.mode,
  exit_layer: s.exitLayer ?? null,
  num_speculations: s.numSpeculations ?? null,
  drafter: s.drafter ?? null,
  drafted: s.drafted,
  accepted: s.accepted,
  acceptance_rate: s.acceptanceRate,
  token_sources: s.tokenSources,
  tokens_per_second: Number.isFinite(s.tokensPerSecond) ? s.tokensPerSecond : 0,
  stop_reason: s.stopReason,
});

/** One response's identity, shared by all chunks of a stream. */
export interface ResponseHead {
  id: string;
  created: number;
  model: string;
}

export function responseHead(endpoint: Endpoint, model: string): ResponseHead {
  const prefix = endpoint === 'chat' ? 'chatcmpl-' : 'cmpl-';
  return { id: prefix + randomBytes(12).toString('hex'), created: Math.floor(Date.now() / 1000), model };
}

const OBJECTS = {
  completions: { full: 'text_completion', chunk: 'text_completion' },
  chat: { full: 'chat.completion', chunk: 'chat.completion.chunk' },
} as const;

/** The fields every response and chunk starts with. */
function envelope(endpoint: Endpoint, head: ResponseHead, kind: 'full' | 'chunk') {
  return { id: head.id, object: OBJECTS[endpoint][kind], created: head.created, model: head.model };
}

export function fullResponse(endpoint: Endpoint, head: ResponseHead, text: string, stats: GenerationStats) {
  const finish_reason = finishReason(stats);
  const choice =
    endpoint === 'chat'
      ? { index: 0, message: { role: 'assistant' as const, content: text, refusal: null }, finish_reason, logprobs: null }
      : { index: 0, text, finish_reason, logprobs: null };
  return {
    ...envelope(endpoint, head, 'full'),
    choices: [choice],
    usage: usageOf(stats),
    mexit: mexitStats(stats),
  };
}

/**
 * A stream chunk. `text` undefined with `role` → chat's opening chunk; `finish` → the closing chunk (empty
 * delta, finish_reason, and the mexit stats). With include_usage every chunk carries `usage: null` (OpenAI).
 */
export function chunk(
  endpoint: Endpoint,
  head: ResponseHead,
  part: { text?: string; role?: boolean; finish?: GenerationStats },
  includeUsage: boolean,
) {
  const finish_reason = part.finish ? finishReason(part.finish) : null;
  const choice =
    endpoint === 'chat'
      ? {
          index: 0,
          delta: part.role ? { role: 'assistant' as const, content: '' } : part.text !== undefined ? { content: part.text } : {},
          finish_reason,
          logprobs: null,
        }
      : { index: 0, text: part.text ?? '', finish_reason, logprobs: null };
  return {
    ...envelope(endpoint, head, 'chunk'),
    choices: [choice],
    ...(includeUsage && { usage: null }),
    ...(part.finish && { mexit: mexitStats(part.finish) }),
  };
}

/** stream_options.include_usage: the extra last chunk with no choices. */
export function usageChunk(endpoint: Endpoint, head: ResponseHead, stats: GenerationStats) {
  return { ...envelope(endpoint, head, 'chunk'), choices: [], usage: usageOf(stats) };
}

export function modelObject(id: string, created: number) {
  return { id, object: 'model' as const, created, owned_by: 'mexit' };
}
