/**
 * The front door: load a model for generation. By default the model runs in a worker thread
 * (WorkerGenerator), so an application's event loop stays free while tokens compute; `inProcess: true`
 * gives the in-thread MexitGenerator (its runtime, custom contrast functions, no thread hop).
 */
import { OptionsError } from '@mexit/core';
import { MexitGenerator, type GeneratorOptions } from './generator.js';
import type { TextGenerator } from './text-generator.js';
import { WorkerGenerator, type WorkerGeneratorOptions } from './worker/worker-generator.js';

export interface LoadGeneratorOptions extends WorkerGeneratorOptions {
  /** Run the model in this thread (default false: in `workers` worker threads). */
  inProcess?: boolean;
}

export function loadGenerator(model: string, options: GeneratorOptions & { inProcess: true }): Promise<MexitGenerator>;
export function loadGenerator(model: string, options?: LoadGeneratorOptions & { inProcess?: false }): Promise<WorkerGenerator>;
export function loadGenerator(model: string, options?: LoadGeneratorOptions): Promise<TextGenerator>;
export async function loadGenerator(model: string, options: LoadGeneratorOptions = {}): Promise<TextGenerator> {
  if (typeof options !== 'object' || options === null) throw new OptionsError('INVALID_OPTION', 'options must be an object');
  const { inProcess = false, ...rest } = options;
  if (typeof inProcess !== 'boolean') throw new OptionsError('INVALID_OPTION', `inProcess must be a boolean, got ${String(inProcess)}`);
  if (!inProcess) return WorkerGenerator.load(model, rest);
  const { workers, ...inThread } = rest;
  if (workers !== undefined)
    throw new OptionsError('INVALID_OPTION', 'workers applies to worker threads; it cannot be combined with inProcess: true');
  return MexitGenerator.fromPretrained(model, inThread);
}
