/**
 * The public generator: prompt → tokens in one of five modes over one model runtime. This file holds the
 * API (generate / stream / events), the mode dispatch and the loop that hands committed tokens to the sink.
 * Each mode is a generator of token blocks in modes/; the self-speculative round is modes/self-spec.ts.
 */
import { AbortError, MexitError, OptionsError, TokenPicker } from '@mexit/core';
import { ModelRuntime, type RuntimeOptions } from '@mexit/model';
import { createDrafter } from './drafters/index.js';
import { Verifier } from './verify.js';
import { stepwise } from './modes/stepwise.js';
import { calm, CalmStages } from './modes/calm.js';
import { AutoContrast } from './modes/acd.js';
import { selfSpeculative } from './modes/self-spec.js';
import { resolveOptions, type GenerateOptions, type ResolvedOptions } from './options.js';
import { encodePrompt, type Prompt } from './prompt.js';
import { TokenSink } from './sink.js';
import { resultOf, textOf, type ModelInfo, type TextGenerator } from './text-generator.js';
import { StatsRecorder, type GenerationStats } from './stats.js';
import { newPhaseTimes, now, TokenHistory, type DecodeState, type TokenBlock } from './state.js';

export type { Prompt } from './prompt.js';
export type { StopReason } from './sink.js';
export type { GenerationStats } from './stats.js';

export interface GenerationResult {
  /** New token ids (EOS included when generation stopped on it). */
  ids: number[];
  /** Decoded new text (special tokens skipped; cut before a stop string). Empty without a tokenizer. */
  text: string;
  stats: GenerationStats;
}

/** Streamed as tokens are committed. */
export interface GenerationEvent {
  token: number;
  fromDraft: boolean;
  /** Text newly safe to show (may be empty while a multi-byte character or a possible stop string is pending). */
  text: string;
}

export interface GeneratorOptions extends RuntimeOptions, GenerateOptions {}

/** Where a generation puts the release of its held stages, for `abandoned` to find. */
interface StageHold {
  release?: () => void;
}

/** An events() iterator dropped unfinished (never run to the end nor return()ed) releases its stages when collected. */
const abandoned = new FinalizationRegistry<StageHold>((hold) => hold.release?.());

/**
 * The generator in this thread: stage runs block the event loop while they compute (use `WorkerGenerator`,
 * or `loadGenerator`'s default, to keep the loop free).
 */
export class MexitGenerator implements TextGenerator {
  constructor(
    readonly runtime: ModelRuntime,
    readonly defaults: GenerateOptions = {},
  ) {
    if (!(runtime instanceof ModelRuntime)) {
      throw new OptionsError(
        'INVALID_RUNTIME',
        'MexitGenerator needs a ModelRuntime (ModelRuntime.load, or use MexitGenerator.fromPretrained)',
      );
    }
    if (typeof defaults !== 'object' || defaults === null) throw new OptionsError('INVALID_OPTION', 'default options must be an object');
  }

  get info(): ModelInfo {
    return modelInfo(this.runtime);
  }

  /** Loads a model directory; `options` holds runtime settings and default generation options. */
  static async fromPretrained(dir: string, options: GeneratorOptions = {}): Promise<MexitGenerator> {
    const { threads, spinning, prepacking, cacheDir, maxStages, onProgress, weights, layout, ...defaults } = options;
    const runtime = await ModelRuntime.load(dir, { threads, spinning, prepacking, cacheDir, maxStages, onProgress, weights, layout });
    try {
      resolveOptions(runtime, defaults); // fail fast on bad defaults
    } catch (e) {
      await runtime.dispose(); // nothing to hand back: do not leak the loaded runtime
      throw e;
    }
    return new MexitGenerator(runtime, defaults);
  }

  /** Generates a completion and returns ids, text and statistics. */
  async generate(prompt: Prompt, options: GenerateOptions = {}): Promise<GenerationResult> {
    return resultOf((onDone) => this.events(prompt, options, onDone));
  }

  /** Async iterator of text deltas, emitted as tokens are committed. */
  stream(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<string, GenerationResult> {
    return textOf((onDone) => this.events(prompt, options, onDone));
  }

  /**
   * The event stream behind generate() and stream(): one event per committed token. `onDone` receives
   * the final result. Generations may overlap, on one generator or on several sharing a runtime: each has its
   * own cache and decoding state and the runtime serialises stage calls, so each gives exactly the tokens it
   * gives alone. An iterator that is never finished blocks no other generation.
   */
  events(prompt: Prompt, options: GenerateOptions = {}, onDone?: (r: GenerationResult) => void): AsyncGenerator<GenerationEvent> {
    const hold: StageHold = {};
    const iterator = this.eventStream(prompt, options, onDone, hold);
    abandoned.register(iterator, hold, hold);
    return iterator;
  }

  private async *eventStream(
    prompt: Prompt,
    options: GenerateOptions,
    onDone: ((r: GenerationResult) => void) | undefined,
    hold: StageHold,
  ): AsyncGenerator<GenerationEvent> {
    if (this.runtime.disposed) throw disposedError();
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw new OptionsError('INVALID_OPTION', 'options must be an object of generation options');
    }
    const merged = { ...this.defaults, ...options };
    const resolved = resolveOptions(this.runtime, merged);
    const promptIds = this.encodePrompt(prompt, merged.addSpecialTokens);
    const maxPositions = this.runtime.config.maxPositions;
    if (promptIds.length + resolved.maxNewTokens > maxPositions) {
      throw new OptionsError(
        'CONTEXT_OVERFLOW',
        `prompt (${promptIds.length} tokens) + maxNewTokens (${resolved.maxNewTokens}) exceeds the context of ${maxPositions} positions`,
      );
    }
    try {
      yield* this.run(promptIds, resolved, hold, onDone);
    } finally {
      abandoned.unregister(hold);
      hold.release?.();
    }
  }

  /** Text → ids (with the tokenizer), chat messages → template → ids, ids validated (see prompt.ts). */
  encodePrompt(prompt: Prompt, addSpecialTokens?: boolean): number[] {
    return encodePrompt(this.runtime, prompt, addSpecialTokens);
  }

  async tokenize(prompt: Prompt, addSpecialTokens?: boolean): Promise<number[]> {
    return this.encodePrompt(prompt, addSpecialTokens);
  }

  private async modeBlocks(o: ResolvedOptions, state: DecodeState): Promise<AsyncGenerator<TokenBlock>> {
    const rt = this.runtime;
    const L = rt.numLayers;
    switch (o.mode) {
      case 'ar':
        return stepwise(state, await rt.stage({ from: 0, to: L, exits: [{ layer: L }] }), false);
      case 'early-exit':
        return stepwise(state, await rt.stage({ from: 0, to: o.exitLayer, exits: [{ layer: o.exitLayer, head: o.exitHead }] }), true);
      case 'self-spec': {
        const drafter = await createDrafter(rt, o);
        const verifier = await Verifier.create(rt, drafter.verifyFrom);
        return selfSpeculative(state, drafter, verifier, { ...o, vocabSize: rt.config.vocabSize });
      }
      case 'acd': {
        const c = o.contrast!;
        const upper = c.upper === 'original' ? { layer: L } : { layer: c.upper, head: o.exitHead };
        const stage = await rt.stage({ from: 0, to: L, exits: [upper, { layer: c.lower, head: o.exitHead }] });
        const fn = c.fn ?? new AutoContrast(rt.config.vocabSize, { alpha: c.alpha, minimumCandidates: c.minimumCandidates }).contrast;
        const logProbs = new Float32Array(rt.config.vocabSize); // reused every token
        return stepwise(state, stage, false, ([upperLogits, lowerLogits]) => {
          fn(upperLogits, lowerLogits, logProbs);
          return logProbs;
        });
      }
      case 'calm': {
        const c = o.calm!;
        const stages = await CalmStages.create(rt, c.minExitLayer, c.exitInterval, o.exitHead);
        return calm(state, stages, { ...c, maxNewTokens: o.maxNewTokens }, rt.config.hiddenSize);
      }
    }
  }

  /** One generation: build the mode's blocks, hand every committed token to the sink, then the stats. */
  private async *run(
    promptIds: number[],
    o: ResolvedOptions,
    hold: StageHold,
    onDone?: (r: GenerationResult) => void,
  ): AsyncGenerator<GenerationEvent> {
    const rt = this.runtime;
    const sink = new TokenSink(rt.tokenizer, o);
    const history = new TokenHistory();
    for (const id of promptIds) history.push(id);
    const state: DecodeState = {
      cache: rt.createCache(promptIds.length + o.maxNewTokens + o.numSpeculations + 1),
      history,
      picker: new TokenPicker(o.warper, o.doSample, o.seed),
      prompt: promptIds,
      remaining: () => o.maxNewTokens - sink.ids.length,
      times: newPhaseTimes(),
      isEos: (id) => o.eosTokenIds.has(id),
    };
    const stats = new StatsRecorder(o, rt.numLayers);
    const checkAbort = () => {
      if (o.signal?.aborted) throw new AbortError();
      if (rt.disposed) throw disposedError();
    };
    checkAbort();
    // Builds sessions on first use (not counted as generation time) and holds them until the generation ends.
    const building = rt.holdStages(() => this.modeBlocks(o, state));
    const { value: blocks, release } = await untilAborted(building, o.signal, (built) => built.release());
    hold.release = release;
    const started = now();
    try {
      while (!sink.stopReason) {
        checkAbort();
        const { value: block, done } = await blocks.next();
        if (done) break;
        stats.round(block);
        for (let i = 0; i < block.tokens.length && !sink.stopReason; i++) {
          // Per token, not only per block: a consumer that aborts mid-block gets no further tokens.
          checkAbort();
          const token = block.tokens[i];
          history.push(token);
          stats.token(block, i);
          const text = sink.push(token);
          yield { token, fromDraft: block.fromDraft[i], text };
        }
      }
    } finally {
      await blocks.return(undefined);
    }
    checkAbort();
    const total = now() - started;
    const result = stats.finish(promptIds.length, sink.ids.length, total, state.times, sink.stopReason ?? 'max-new-tokens');
    onDone?.({ ids: sink.ids, text: sink.output, stats: result });
  }

  /** Disposes the runtime: running generations end with MexitError 'DISPOSED', and so do later calls. */
  async dispose(): Promise<void> {
    await this.runtime.dispose();
  }
}

/** A runtime's ModelInfo (plain data: the worker posts it to the main thread). */
export function modelInfo(rt: ModelRuntime): ModelInfo {
  const c = rt.config;
  return {
    dir: rt.dir,
    modelType: c.modelType,
    numLayers: c.numLayers,
    vocabSize: c.vocabSize,
    maxPositions: c.maxPositions,
    eosTokenIds: [...c.eosTokenIds],
    hasTokenizer: rt.tokenizer !== null,
    hasChatTemplate: rt.tokenizer?.hasChatTemplate ?? false,
    ...(c.recommendedExitLayer !== undefined && { recommendedExitLayer: c.recommendedExitLayer }),
    ...(c.recommendedNumSpeculations !== undefined && { recommendedNumSpeculations: c.recommendedNumSpeculations }),
  };
}

function disposedError(): MexitError {
  return new MexitError('DISPOSED', 'the generator (its model runtime) was disposed');
}

/**
 * `promise`, or AbortError as soon as `signal` aborts (a first-use session build can take seconds). An
 * abandoned `promise` still settles; its value then goes to `drop`.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, drop: (value: T) => void): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      reject(new AbortError());
      promise.then(drop, () => undefined);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * The old name, kept as an alias: the generator runs every mode, not only self-speculation.
 * @alias
 */
export const SelfSpeculativeGenerator = MexitGenerator;
export type SelfSpeculativeGenerator = MexitGenerator;
