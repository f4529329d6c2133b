/**
 * OpenAI request bodies → what to generate: the prompt (text, ids or chat messages), GenerateOptions and the
 * stream settings. Types and OpenAI's own ranges are checked here (400 naming the field); the engine checks
 * the rest (the mexit extension's values, token ids) with its typed errors. Fields that would change the
 * answer but are not supported (n > 1, logprobs, best_of, echo, tools, …) are refused naming the field;
 * fields that do not change the answer (user, metadata, store, …) and unknown fields are ignored, as OpenAI's
 * own compatible servers do, so newer clients keep working.
 */
import { randomInt } from 'node:crypto';
import { formatValue } from '@mexit/core';
import type { ChatMessage } from '@mexit/model';
import type { GenerateOptions, Prompt } from '@mexit/speculative';
import { badRequest } from './errors.js';

export type Endpoint = 'completions' | 'chat';

export interface ParsedRequest {
  endpoint: Endpoint;
  model: string;
  prompt: Prompt;
  /** `prompt` or `messages`, for errors about the prompt. */
  promptParam: string;
  /** Absent: min(defaultMaxTokens, context left), decided once the prompt's length is known. */
  maxTokens?: number;
  /** Which request field gave maxTokens. */
  maxTokensParam: string;
  options: GenerateOptions;
  stream: boolean;
  includeUsage: boolean;
}

/** The `mexit` request extension: snake_case field → GenerateOptions key (values checked by the engine). */
export const MEXIT_FIELDS: Record<string, keyof GenerateOptions> = {
  mode: 'mode',
  exit_layer: 'exitLayer',
  exit_head: 'exitHead',
  num_speculations: 'numSpeculations',
  drafter: 'drafter',
  draft_confidence_threshold: 'draftConfidenceThreshold',
  adaptive_draft_length: 'adaptiveDraftLength',
  bonus_token: 'bonusToken',
  draft_quantization: 'draftQuantization',
  top_k: 'topK',
  min_p: 'minP',
  repetition_penalty: 'repetitionPenalty',
  contrast_layers: 'contrastLayers',
  alpha: 'alpha',
  minimum_candidates: 'minimumCandidates',
  calm_threshold: 'calmThreshold',
  calm_confidence: 'calmConfidence',
  calm_min_exit_layer: 'calmMinExitLayer',
  calm_exit_interval: 'calmExitInterval',
  calm_decay: 'calmDecay',
};

/** Engine option name → `mexit.*` request field, for the `param` of engine errors. */
export const EXTENSION_PARAMS: Record<string, string> = Object.fromEntries(
  Object.entries(MEXIT_FIELDS).map(([field, key]) => [key, `mexit.${field}`]),
);

const ROLES = new Set(['system', 'developer', 'user', 'assistant']);

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const given = (body: Json, key: string) => body[key] !== undefined && body[key] !== null;
/** A client's value in an error message, bounded (the engine's one formatter). */
const shown = (v: unknown) => formatValue(v, 80, 'js');
const describe = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

function wrongType(param: string, expected: string, value: unknown) {
  return badRequest(`${param} must be ${expected}, got ${describe(value)}`, param, 'invalid_type');
}

function unsupported(param: string, what: string) {
  return badRequest(`${param}: ${what} is not supported by this server`, param, 'unsupported_parameter');
}

/** Parses a JSON body text (400 invalid_json) and checks it is an object. */
export function parseJson(text: string): Json {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw badRequest(`the request body is not valid JSON (${(e as Error).message})`, null, 'invalid_json');
  }
  if (!isObject(body)) throw badRequest(`the request body must be a JSON object, got ${describe(body)}`, null, 'invalid_type');
  return body;
}

export function parseRequest(endpoint: Endpoint, body: Json): ParsedRequest {
  if (typeof body.model !== 'string' || body.model === '') throw wrongType('model', 'a non-empty string', body.model);
  refuseUnsupported(endpoint, body);
  const prompt = endpoint === 'chat' ? parseMessages(body.messages) : parseCompletionPrompt(body.prompt);
  const options: GenerateOptions = {};

  // max_completion_tokens is the chat API's newer name; either is accepted, not both with different values.
  let maxTokens: number | undefined;
  let maxTokensParam = 'max_tokens';
  for (const param of endpoint === 'chat' ? ['max_tokens', 'max_completion_tokens'] : ['max_tokens']) {
    if (!given(body, param)) continue;
    const v = body[param];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
      throw badRequest(`${param} must be an integer ≥ 1, got ${shown(v)}`, param, 'invalid_value');
    }
    if (maxTokens !== undefined && maxTokens !== v) throw badRequest('max_tokens and max_completion_tokens differ', param, 'invalid_value');
    maxTokens = v;
    maxTokensParam = param;
  }

  const temperature = given(body, 'temperature') ? body.temperature : 1; // OpenAI's default
  if (typeof temperature !== 'number' || !(temperature >= 0 && temperature <= 2)) {
    throw badRequest(`temperature must be a number in [0, 2], got ${shown(temperature)}`, 'temperature', 'invalid_value');
  }
  if (given(body, 'top_p')) {
    const topP = body.top_p;
    if (typeof topP !== 'number' || !(topP > 0 && topP <= 1))
      throw badRequest(`top_p must be a number in (0, 1], got ${shown(topP)}`, 'top_p', 'invalid_value');
    if (temperature > 0 && topP < 1) options.topP = topP;
  }
  if (temperature === 0) options.doSample = false;
  else {
    options.doSample = true;
    options.temperature = temperature;
  }
  if (given(body, 'seed')) {
    const seed = body.seed;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
      throw badRequest(`seed must be a non-negative integer, got ${shown(seed)}`, 'seed', 'invalid_value');
    options.seed = seed;
  } else if (options.doSample) {
    options.seed = randomInt(2 ** 47); // OpenAI samples afresh each call unless a seed is given
  }
  const stop = parseStop(body.stop);
  if (stop.length) options.stop = stop;

  if (given(body, 'mexit')) Object.assign(options, parseExtension(body.mexit));

  let stream = false;
  if (given(body, 'stream')) {
    if (typeof body.stream !== 'boolean') throw wrongType('stream', 'a boolean', body.stream);
    stream = body.stream;
  }
  let includeUsage = false;
  if (given(body, 'stream_options')) {
    const so = body.stream_options;
    if (!isObject(so)) throw wrongType('stream_options', 'an object', so);
    if (!stream) throw badRequest('stream_options is only allowed with stream: true', 'stream_options', 'invalid_value');
    if (so.include_usage !== undefined && so.include_usage !== null && typeof so.include_usage !== 'boolean')
      throw wrongType('stream_options.include_usage', 'a boolean', so.include_usage);
    includeUsage = so.include_usage === true;
  }
  return {
    endpoint,
    model: body.model,
    prompt,
    promptParam: endpoint === 'chat' ? 'messages' : 'prompt',
    ...(maxTokens !== undefined && { maxTokens }),
    maxTokensParam,
    options,
    stream,
    includeUsage,
  };
}

/** Known fields whose honest answer this server cannot give. */
function refuseUnsupported(endpoint: Endpoint, body: Json): void {
  if (given(body, 'n')) {
    if (typeof body.n !== 'number') throw wrongType('n', 'an integer', body.n);
    if (body.n !== 1) throw unsupported('n', `n = ${body.n} (one choice per request)`);
  }
  if (endpoint === 'chat') {
    if (given(body, 'logprobs') && body.logprobs !== false) throw unsupported('logprobs', 'logprobs');
    if (given(body, 'top_logprobs') && body.top_logprobs !== 0) throw unsupported('top_logprobs', 'top_logprobs');
  } else if (given(body, 'logprobs')) throw unsupported('logprobs', 'logprobs');
  if (given(body, 'best_of') && body.best_of !== 1) throw unsupported('best_of', 'best_of > 1');
  if (given(body, 'echo') && body.echo !== false) throw unsupported('echo', 'echo');
  if (given(body, 'suffix') && body.suffix !== '') throw unsupported('suffix', 'suffix (insertion)');
  for (const param of ['tools', 'functions']) {
    if (given(body, param) && !(Array.isArray(body[param]) && (body[param] as unknown[]).length === 0))
      throw unsupported(param, 'tool and function calling');
  }
  for (const param of ['tool_choice', 'function_call']) {
    if (given(body, param) && body[param] !== 'none') throw unsupported(param, 'tool and function calling');
  }
  if (given(body, 'response_format')) {
    const rf = body.response_format;
    if (!isObject(rf) || rf.type !== 'text') throw unsupported('response_format', 'a response_format other than {"type": "text"}');
  }
  for (const param of ['presence_penalty', 'frequency_penalty']) {
    if (given(body, param) && body[param] !== 0) throw unsupported(param, `${param} (mexit.repetition_penalty is offered instead)`);
  }
  if (given(body, 'logit_bias') && !(isObject(body.logit_bias) && Object.keys(body.logit_bias).length === 0))
    throw unsupported('logit_bias', 'logit_bias');
}

/** A string, token ids, or a one-element array of either (n = 1: one prompt per request). */
function parseCompletionPrompt(prompt: unknown): Prompt {
  if (typeof prompt === 'string') return prompt;
  if (!Array.isArray(prompt)) throw wrongType('prompt', 'a string or an array of token ids', prompt);
  if (prompt.length === 0) throw badRequest('prompt must not be empty', 'prompt', 'invalid_value');
  if (prompt.every((x) => typeof x === 'number')) return checkIds(prompt as number[], 'prompt');
  if (prompt.length > 1) throw badRequest('only one prompt per request is supported (n = 1)', 'prompt', 'invalid_value');
  const only = prompt[0];
  if (typeof only === 'string') return only;
  if (Array.isArray(only) && only.length > 0 && only.every((x) => typeof x === 'number')) return checkIds(only as number[], 'prompt[0]');
  throw wrongType('prompt[0]', 'a string or an array of token ids', only);
}

function checkIds(ids: number[], param: string): number[] {
  for (const id of ids) {
    if (!Number.isSafeInteger(id) || id < 0)
      throw badRequest(`${param} token ids must be non-negative integers, got ${id}`, param, 'invalid_value');
  }
  return ids;
}

/** Chat messages: {role, content} with string content or text parts; roles the chat template knows. */
function parseMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw wrongType('messages', 'a non-empty array of messages', messages);
  return messages.map((m, i) => {
    const param = `messages[${i}]`;
    if (!isObject(m)) throw wrongType(param, 'a message object', m);
    if (typeof m.role !== 'string' || !ROLES.has(m.role))
      throw badRequest(`${param}.role must be one of ${[...ROLES].join(', ')}, got ${shown(m.role)}`, `${param}.role`, 'invalid_value');
    let content: string;
    if (typeof m.content === 'string') content = m.content;
    else if (Array.isArray(m.content)) {
      content = m.content
        .map((part, j) => {
          if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string')
            throw badRequest(`${param}.content[${j}]: only text parts are supported`, `${param}.content`, 'invalid_value');
          return part.text;
        })
        .join('');
    } else throw wrongType(`${param}.content`, 'a string or an array of text parts', m.content);
    // The developer role is the newer name of system.
    return { role: m.role === 'developer' ? 'system' : m.role, content };
  });
}

function parseStop(stop: unknown): string[] {
  if (stop === undefined || stop === null) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string'))
    throw wrongType('stop', 'a string or an array of up to 4 strings', stop);
  if (list.length > 4) throw badRequest(`stop takes at most 4 strings, got ${list.length}`, 'stop', 'invalid_value');
  if (list.some((s) => s === '')) throw badRequest('stop strings must not be empty', 'stop', 'invalid_value');
  return list as string[];
}

/** The `mexit` object: its own fields only (a typo here is refused: this is our namespace). */
function parseExtension(ext: unknown): GenerateOptions {
  if (!isObject(ext)) throw wrongType('mexit', 'an object', ext);
  const options: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(ext)) {
    const key = Object.hasOwn(MEXIT_FIELDS, field) ? MEXIT_FIELDS[field] : undefined;
    if (!key)
      throw badRequest(
        `mexit.${field} is not a mexit option; known: ${Object.keys(MEXIT_FIELDS).join(', ')}`,
        `mexit.${field}`,
        'unknown_parameter',
      );
    if (value !== null && value !== undefined) options[key] = value;
  }
  return options as GenerateOptions;
}
