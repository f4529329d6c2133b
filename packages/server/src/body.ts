/**
 * Request body reading: at most `limitBytes` (413 without reading on when Content-Length says more), within
 * `timeoutMs` of the first byte we wait for (408: a client that sends headers and dribbles or withholds its
 * body), decoded as strict UTF-8 (400: invalid bytes are an error, not U+FFFD in the prompt).
 */
import type { IncomingMessage } from 'node:http';
import { HttpError, badRequest } from './errors.js';

export interface BodyLimits {
  limitBytes: number;
  timeoutMs: number;
}

/** Thrown when the client went away while sending: nobody is left to answer. */
export class ClientGone extends Error {}

export function readBody(req: IncomingMessage, { limitBytes, timeoutMs }: BodyLimits): Promise<string> {
  const tooLarge = () => new HttpError(413, 'invalid_request_error', `the request body exceeds ${limitBytes} bytes`, 'request_too_large');
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limitBytes) return Promise.reject(tooLarge());
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (error: Error | null, text?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (error) {
        req.resume(); // discard the rest; the connection is closed after the answer
        reject(error);
      } else resolve(text!);
    };
    const timer = setTimeout(
      () => finish(new HttpError(408, 'invalid_request_error', `the request body did not arrive within ${timeoutMs} ms`, 'body_timeout')),
      timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) finish(tooLarge());
      else chunks.push(chunk);
    };
    const onEnd = () => {
      try {
        finish(null, new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)));
      } catch {
        finish(badRequest('the request body is not valid UTF-8', null, 'invalid_encoding'));
      }
    };
    const onError = () => finish(new ClientGone());
    const onClose = () => finish(new ClientGone());
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}
