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
