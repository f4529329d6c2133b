/**
 * WorkerGenerator: the generator API with the model in worker threads, so the caller's event loop stays free
 * while stages compute (onnxruntime-node's session.run is synchronous). Tokens come back over the worker's
 * port as they are committed; an abort is a message that lands between stage calls; a worker that dies
 * rejects the calls it was running with MexitError 'WORKER_CRASHED' and is started again, so the generator
 * stays usable. With `workers: n`, n workers each hold a copy of the model and calls go to the least busy.
 */
import { Worker } from 'node:worker_threads';
import { AbortError, MexitError, OptionsError } from '@mexit/core';
import type { ProgressCallback, RuntimeOptions } from '@mexit/model';
import type { GenerationEvent, GenerationResult } from '../generator.js';
import type { GenerateOptions } from '../options.js';
import type { Prompt } from '../prompt.js';
import { resultOf, textOf, type ModelInfo, type TextGenerator } from '../text-generator.js';
import { fromWire, type FromWorker, type ToWorker, type WireOptions, type WorkerInit } from './protocol.js';

export interface WorkerGeneratorOptions extends RuntimeOptions, GenerateOptions {
  /** Model workers, each with its own copy of the model (default 1, at most MAX_WORKERS). */
  workers?: number;
}

export const MAX_WORKERS = 64;

const RUNTIME_KEYS = ['threads', 'spinning', 'prepacking', 'cacheDir', 'maxStages', 'weights', 'layout'] as const;

/** A request message before its id is assigned. */
type Call = { type: 'generate'; prompt: Prompt; options: WireOptions } | { type: 'tokenize'; prompt: Prompt; addSpecialTokens?: boolean };

/** A call in flight on one worker: generate (events, then done) or tokenize (tokens). */
interface Pending {
  event?(event: GenerationEvent): void;
  done(value: GenerationResult | number[]): void;
  fail(error: Error): void;
}

/** One worker thread with one model copy, and the calls it is running. */
class ModelWorker {
  readonly ready: Promise<ModelInfo>;
  state: 'loading' | 'ready' | 'dead' = 'loading';
  /** Reached 'ready': only a worker that once served is restarted when it dies (a broken model is not retried in a loop). */
  private served = false;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly thread: Worker;
  private disposing: (() => void) | undefined;

  constructor(init: WorkerInit, onProgress: ProgressCallback | undefined, onDeath: (worker: ModelWorker) => void) {
    this.thread = startThread(init);
    let settle!: { resolve: (info: ModelInfo) => void; reject: (error: Error) => void };
    this.ready = new Promise<ModelInfo>((resolve, reject) => (settle = { resolve, reject }));
    this.ready.catch(() => undefined); // observed by whoever awaits it
    this.thread.on('message', (message: FromWorker) => {
      switch (message.type) {
        case 'ready':
          this.state = 'ready';
          this.served = true;
          this.updateRef();
          settle.resolve(message.info);
          break;
        case 'load-error':
          this.state = 'dead'; // the thread ends itself
          settle.reject(fromWire(message.error));
          break;
        case 'progress':
          onProgress?.(message.info);
          break;
        case 'event':
          this.pending.get(message.id)?.event?.(message.event);
          break;
        case 'done':
        case 'tokens':
          this.settle(message.id)?.done(message.type === 'done' ? message.result : message.ids);
          break;
        case 'error':
          this.settle(message.id)?.fail(fromWire(message.error));
          break;
      }
    });
    let crash: Error | undefined;
    this.thread.on('error', (error) => (crash = error));
    this.thread.on('exit', (code) => {
      this.state = 'dead';
      if (this.disposing) {
        this.disposing();
        return;
      }
      const why = crash ? `: ${crash.message}` : ` (exit code ${code})`;
      const error = new MexitError(
        'WORKER_CRASHED',
        `the model worker stopped${why}; its calls in flight were rejected and it is restarted`,
        {
          cause: crash,
        },
      );
      settle.reject(error);
      this.failAll(error);
      if (this.served) onDeath(this);
    });
  }

  get load(): number {
    return this.pending.size;
  }

  /** Starts a call; returns its id (for abort). Throws OptionsError when the prompt or options cannot be sent. */
  request(message: Call, pending: Pending): number {
    const id = this.nextId++;
    try {
      this.thread.postMessage({ ...message, id });
    } catch (error) {
      throw new OptionsError('NOT_TRANSFERABLE', `the prompt or options cannot be sent to the model worker: ${(error as Error).message}`);
    }
    this.pending.set(id, pending);
    this.updateRef();
    return id;
  }

  abort(id: number): void {
    if (this.pending.has(id)) this.thread.postMessage({ type: 'abort', id } satisfies ToWorker);
  }

  /** Lets the worker abort its calls (they end with DISPOSED) and release its sessions; resolves when the thread has ended. */
  async dispose(): Promise<void> {
    await this.ready.catch(() => undefined); // a loading worker finishes loading first (it cannot be stopped mid-build)
    if (this.state === 'dead') return;
    const ended = new Promise<void>((resolve) => (this.disposing = resolve));
    this.thread.ref();
    this.failAll(disposedError());
    this.thread.postMessage({ type: 'dispose' } satisfies ToWorker);
    await ended;
  }

  /** Fault injection for the crash-recovery test: the worker throws an uncaught exception. */
  crash(): void {
    this.thread.postMessage({ type: 'crash' } satisfies ToWorker);
  }

  private settle(id: number): Pending | undefined {
    const pending = this.pending.get(id);
    this.pending.delete(id);
    this.updateRef();
    return pending;
  }

  private failAll(error: Error): void {
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const call of calls) call.fail(error);
  }

  /** An idle worker does not keep the process alive; one loading or running a call does. */
  private updateRef(): void {
    if (this.state === 'loading' || this.pending.size > 0) this.thread.ref();
    else this.thread.unref();
  }
}

/** Events arriving from the worker, handed to one consumer in order. */
class EventChannel implements Pending {
  private readonly queue: GenerationEvent[] = [];
  private wake: (() => void) | undefined;
  result: GenerationResult | undefined;
  error: Error | undefined;
  ended = false;

  event(event: GenerationEvent): void {
    this.queue.push(event);
    this.wake?.();
  }
  done(value: GenerationResult | number[]): void {
    if (this.ended) return;
    this.result = value as GenerationResult;
    this.ended = true;
    this.wake?.();
  }
  fail(error: Error): void {
    if (this.ended) return;
    this.error = error;
    this.ended = true;
    this.wake?.();
  }

  /** An abort ends the stream at once, as in-process: events already on their way are dropped. */
  abort(): void {
    if (this.ended) return;
    this.queue.length = 0;
    this.fail(new AbortError());
  }

  /** The next event, or undefined once the generation has ended (throws its error). */
  async next(): Promise<GenerationEvent | undefined> {
    while (this.queue.length === 0 && !this.ended) await new Promise<void>((resolve) => (this.wake = resolve));
    this.wake = undefined;
    if (this.queue.length > 0) return this.queue.shift();
    if (this.error) throw this.error;
    return undefined;
  }
}

export class WorkerGenerator implements TextGenerator {
  private disposed = false;

  private constructor(
    readonly info: ModelInfo,
    readonly defaults: GenerateOptions,
    private readonly workers: ModelWorker[],
    private readonly spawn: () => ModelWorker,
  ) {}

  /** Starts the workers and loads the model in each; rejects with the load's typed error (nothing left running). */
  static async load(model: string, options: WorkerGeneratorOptions = {}): Promise<WorkerGenerator> {
    if (typeof options !== 'object' || options === null) throw new OptionsError('INVALID_OPTION', 'options must be an object');
    const { workers: count = 1, onProgress, ...rest } = options;
    if (!Number.isInteger(count) || count < 1 || count > MAX_WORKERS) {
      throw new OptionsError('INVALID_OPTION', `workers must be an integer from 1 to ${MAX_WORKERS}, got ${String(count)}`);
    }
    const runtime: Record<string, unknown> = {};
    const defaults: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(rest)) {
      if ((RUNTIME_KEYS as readonly string[]).includes(key)) runtime[key] = value;
      else defaults[key] = value;
    }
    const { wire } = wireOptions(defaults as GenerateOptions, 'default options');
    const init: WorkerInit = { model, runtime, defaults: wire, progress: onProgress !== undefined };
    const slots: ModelWorker[] = [];
    let generator: WorkerGenerator | undefined;
    const spawn = (): ModelWorker =>
      new ModelWorker(init, onProgress, (dead) => {
        // Restart in place; calls wait for it in pick().
        const i = generator?.workers.indexOf(dead) ?? -1;
        if (i >= 0 && !generator!.disposed) generator!.workers[i] = spawn();
      });
    for (let i = 0; i < count; i++) slots.push(spawn());
    const loads = await Promise.allSettled(slots.map((s) => s.ready));
    const failed = loads.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(slots.map((s) => s.dispose()));
      throw failed.reason;
    }
    generator = new WorkerGenerator((loads[0] as PromiseFulfilledResult<ModelInfo>).value, wire, slots, spawn);
    return generator;
  }

  async tokenize(prompt: Prompt, addSpecialTokens?: boolean): Promise<number[]> {
    const worker = await this.pick();
    return new Promise<number[]>((resolve, reject) => {
      worker.request({ type: 'tokenize', prompt, addSpecialTokens }, { done: (ids) => resolve(ids as number[]), fail: reject });
    });
  }

  async generate(prompt: Prompt, options: GenerateOptions = {}): Promise<GenerationResult> {
    return resultOf((onDone) => this.events(prompt, options, onDone));
  }

  stream(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<string, GenerationResult> {
    return textOf((onDone) => this.events(prompt, options, onDone));
  }

  /** As MexitGenerator.events: one event per committed token; leaving the loop early aborts the generation. */
  async *events(prompt: Prompt, options: GenerateOptions = {}, onDone?: (r: GenerationResult) => void): AsyncGenerator<GenerationEvent> {
    const { signal, wire } = wireOptions(options, 'options');
    if (signal?.aborted) throw new AbortError();
    const worker = await this.pick();
    if (signal?.aborted) throw new AbortError();
    const channel = new EventChannel();
    const id = worker.request({ type: 'generate', prompt, options: wire }, channel);
    const onAbort = () => {
      worker.abort(id); // its place on the worker is freed when the worker confirms
      channel.abort();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (let event = await channel.next(); event !== undefined; event = await channel.next()) yield event;
      onDone?.(channel.result!);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!channel.ended) worker.abort(id); // the consumer stopped early
    }
  }

  /** Ends every worker: running calls end with MexitError 'DISPOSED', and so do later calls. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await Promise.all(this.workers.map((w) => w.dispose()));
  }

  /** The least busy ready worker; waits for one that is (re)starting. */
  private async pick(): Promise<ModelWorker> {
    if (this.disposed) throw disposedError();
    const ready = this.workers.filter((w) => w.state === 'ready');
    if (ready.length > 0) return ready.reduce((a, b) => (b.load < a.load ? b : a));
    for (let i = 0; i < this.workers.length; i++) if (this.workers[i].state === 'dead') this.workers[i] = this.spawn();
    try {
      return await Promise.any(this.workers.map((w) => w.ready.then(() => w)));
    } catch (error) {
      throw (error as AggregateError).errors[0];
    }
  }
}

/** Splits off the signal; options that cannot cross to the worker are an OptionsError now, not a clone error later. */
function wireOptions(options: GenerateOptions, what: string): { signal?: AbortSignal; wire: WireOptions } {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new OptionsError('INVALID_OPTION', `${what} must be an object of generation options`);
  }
  const { signal, ...wire } = options;
  for (const [key, value] of Object.entries(wire)) {
    if (typeof value === 'function') {
      throw new OptionsError(
        'NOT_TRANSFERABLE',
        `${key} is a function, which cannot run in the model worker; load with inProcess: true to use it`,
      );
    }
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new OptionsError('INVALID_OPTION', 'signal must be an AbortSignal');
  return { signal, wire };
}

function disposedError(): MexitError {
  return new MexitError('DISPOSED', 'the generator (its model workers) was disposed');
}

/**
 * The worker thread, with the caller's node flags except --input-type / --eval / --print, which belong to the
 * caller's own entry. A list given explicitly is validated, and per-process flags (V8's --expose-gc, …) are
 * refused there; they apply to every thread anyway, so the list is then dropped.
 */
function startThread(workerData: WorkerInit): Worker {
  const execArgv = process.execArgv.filter((arg) => !/^--(input-type|eval|print)\b|^-[ep]$/.test(arg));
  if (execArgv.length === process.execArgv.length) return new Worker(entryUrl(), { workerData });
  try {
    return new Worker(entryUrl(), { workerData, execArgv });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw error;
    return new Worker(entryUrl(), { workerData, execArgv: [] });
  }
}

/** The built worker entry. Under vitest these sources run as .ts; the worker then runs the built file (the test setup builds). */
function entryUrl(): URL {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return new URL(here.replace(/\/src\/worker\/[^/]+\.ts$/, '/dist/worker/entry.js'));
  return new URL('./entry.js', here);
}
