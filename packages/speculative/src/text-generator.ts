/**
 * What every generator offers, in-process (`MexitGenerator`) or in a worker thread (`WorkerGenerator`):
 * the server, the chat REPL and applications code against this, not against one of them.
 */
import type { ModelType } from '@mexit/model';
import type { GenerationEvent, GenerationResult } from './generator.js';
import type { GenerateOptions } from './options.js';
import type { Prompt } from './prompt.js';

/** What a loaded model is, as plain data (it crosses thread boundaries). */
export interface ModelInfo {
  /** The model directory (a hub id resolves to its snapshot directory). */
  dir: string;
  modelType: ModelType;
  numLayers: number;
  vocabSize: number;
  /** Context length: prompt + new tokens never exceed it. */
  maxPositions: number;
  eosTokenIds: number[];
  hasTokenizer: boolean;
  hasChatTemplate: boolean;
  /** Recorded self-spec settings (generation_config.json), if any. */
  recommendedExitLayer?: number;
  recommendedNumSpeculations?: number;
}

export interface TextGenerator {
  readonly info: ModelInfo;
  /** Generation options every call starts from (a call's own options override them). */
  readonly defaults: GenerateOptions;
  /**
   * The ids a prompt runs on (text encoded, chat messages through the chat template, ids checked), with
   * the same typed errors as generate(); no model work. Passing these ids as the prompt skips re-encoding.
   */
  tokenize(prompt: Prompt, addSpecialTokens?: boolean): Promise<number[]>;
  generate(prompt: Prompt, options?: GenerateOptions): Promise<GenerationResult>;
  stream(prompt: Prompt, options?: GenerateOptions): AsyncGenerator<string, GenerationResult>;
  /** One event per committed token; `onDone` receives the result before the iterator ends. */
  events(prompt: Prompt, options?: GenerateOptions, onDone?: (r: GenerationResult) => void): AsyncGenerator<GenerationEvent>;
  dispose(): Promise<void>;
}

/** The events() of a TextGenerator, bound to one prompt and options. */
type EventSource = (onDone: (r: GenerationResult) => void) => AsyncGenerator<GenerationEvent>;

/** generate() on top of events(): run to the end, return the result. */
export async function resultOf(events: EventSource): Promise<GenerationResult> {
  let result: GenerationResult | undefined;
  for await (const _ of events((r) => (result = r))) {
    // consume
  }
  return result!;
}

/** stream() on top of events(): the non-empty text deltas, then the result. */
export async function* textOf(events: EventSource): AsyncGenerator<string, GenerationResult> {
  let result: GenerationResult | undefined;
  for await (const event of events((r) => (result = r))) {
    if (event.text) yield event.text;
  }
  return result!;
}
