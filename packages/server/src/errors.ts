/**
 * OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status, and the one
 * mapping of engine errors onto them (bad input → 400 naming the request field; a real fault → 500).
 */
import { MexitError, OptionsError, TokenizerError } from '@mexit/core';

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'timeout_error'
  | 'server_error'
  | 'service_unavailable';

/** An error answer: status, OpenAI body fields, and extra headers (Retry-After, Allow). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 invalid_request_error naming the request field. */
export const badRequest = (message: string, param: string | null = null, code = 'invalid_value'): HttpError =>
  new HttpError(400, 'invalid_request_error', message, code, param);

/** Engine option names → the request field they came from (for `param`). */
const OPTION_PARAMS: Record<string, string> = {
  maxNewTokens: 'max_tokens',
  temperature: 'temperature',
  topP: 'top_p',
  seed: 'seed',
  stop: 'stop',
};

/**
 * An engine error → the HTTP answer. OptionsError and TokenizerError are the caller's input (400, the engine's
 * code, `param` from the option the message names); CONTEXT_OVERFLOW is OpenAI's context_length_exceeded.
 * `extensionParams` maps engine option names to `mexit.*` request fields. Anything else is a server fault.
 */
export function fromEngineError(err: unknown, extensionParams: Record<string, string>, promptParam: string): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof OptionsError || err instanceof TokenizerError) {
    if (err.code === 'CONTEXT_OVERFLOW') return badRequest(err.message, 'max_tokens', 'context_length_exceeded');
    const name = /^([A-Za-z]+)/.exec(err.message)?.[1] ?? '';
    const promptCodes = ['EMPTY_PROMPT', 'INVALID_PROMPT', 'TOKEN_ID_RANGE', 'NO_TOKENIZER', 'NO_CHAT_TEMPLATE'];
    const own = (table: Record<string, string>) => (Object.hasOwn(table, name) ? table[name] : undefined);
    const param =
      own(extensionParams) ?? own(OPTION_PARAMS) ?? (promptCodes.includes(err.code) || err instanceof TokenizerError ? promptParam : null);
    return badRequest(err.message, param, err.code);
  }
  const message = err instanceof MexitError ? `${err.code}: ${err.message}` : 'internal server error';
  return new HttpError(500, 'server_error', message, 'internal_error');
}

export const retryAfter = (seconds: number): Record<string, string> => ({ 'Retry-After': String(seconds) });

export const shuttingDown = (): HttpError =>
  new HttpError(503, 'service_unavailable', 'the server is shutting down', 'shutting_down', null, retryAfter(1));
