/**
 * The messages between a WorkerGenerator (main thread) and its model worker (entry.ts), and how typed errors
 * cross the boundary: structured clone keeps an Error's message but not its class or `code`, so errors travel
 * as plain data and are rebuilt as the same MexitError subclass on the other side.
 */
import { AbortError, CacheError, CheckpointError, ConfigError, MexitError, OptionsError, TokenizerError } from '@mexit/core';
import { HubError, type ProgressInfo, type RuntimeOptions } from '@mexit/model';
import type { GenerationEvent, GenerationResult } from '../generator.js';
import type { GenerateOptions } from '../options.js';
import type { Prompt } from '../prompt.js';
import type { ModelInfo } from '../text-generator.js';

/** What a worker is started with (workerData). */
export interface WorkerInit {
  model: string;
  runtime: Omit<RuntimeOptions, 'onProgress'>;
  /** Generation defaults, checked by the worker as fromPretrained checks them. */
  defaults: GenerateOptions;
  /** Forward load / stage-build progress (only when the caller gave onProgress). */
  progress: boolean;
}

/** Options as they cross: no AbortSignal (an abort is a message), no functions. */
export type WireOptions = Omit<GenerateOptions, 'signal' | 'contrastFunction'>;

export type ToWorker =
  | { type: 'generate'; id: number; prompt: Prompt; options: WireOptions }
  | { type: 'tokenize'; id: number; prompt: Prompt; addSpecialTokens?: boolean }
  | { type: 'abort'; id: number }
  | { type: 'dispose' }
  /** Fault injection: an uncaught exception in the worker, as a bug would throw (the crash-recovery test). */
  | { type: 'crash' };

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'load-error'; error: WireError }
  | { type: 'progress'; info: ProgressInfo }
  | { type: 'event'; id: number; event: GenerationEvent }
  | { type: 'done'; id: number; result: GenerationResult }
  | { type: 'tokens'; id: number; ids: number[] }
  | { type: 'error'; id: number; error: WireError };

export interface WireError {
  name: string;
  code?: string;
  message: string;
  stack?: string;
}

export function toWire(error: unknown): WireError {
  if (error instanceof MexitError) return { name: error.name, code: error.code, message: error.message, stack: error.stack };
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack };
  return { name: 'Error', message: String(error) };
}

const TYPED: Record<string, new (code: string, message: string) => MexitError> = {
  MexitError,
  OptionsError,
  ConfigError,
  CheckpointError,
  TokenizerError,
  CacheError,
  HubError,
};

/** The same class (typed errors), code and message; the worker's stack is kept below this side's. */
export function fromWire(wire: WireError): Error {
  let error: Error;
  if (wire.name === 'AbortError') error = new AbortError(wire.message);
  else if (wire.code !== undefined && wire.name in TYPED) error = new TYPED[wire.name](wire.code, wire.message);
  else {
    error = new Error(wire.message);
    error.name = wire.name;
  }
  if (wire.stack) error.stack = `${error.stack}\n    --- in the model worker ---\n${wire.stack}`;
  return error;
}
