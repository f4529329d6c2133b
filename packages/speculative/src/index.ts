/**
 * @mexit/speculative: the generator, its options, results and errors, and IBM's multi-exit configuration.
 * Subpaths hold the rest: `@mexit/speculative/eval` (evaluate), `@mexit/speculative/drafters` (the Drafter
 * interface and its implementations), `@mexit/speculative/lowlevel` (acceptance rules, verifier, sink,
 * ACD and CALM building blocks) for tools and tests.
 */
export {
  MexitGenerator,
  SelfSpeculativeGenerator,
  type GenerationEvent,
  type GenerationResult,
  type GeneratorOptions,
  type Prompt,
  type StopReason,
} from './generator.js';
export type { GenerationStats } from './stats.js';
export type { ModelInfo, TextGenerator } from './text-generator.js';
export { loadGenerator, type LoadGeneratorOptions } from './load.js';
export { WorkerGenerator, MAX_WORKERS, type WorkerGeneratorOptions } from './worker/worker-generator.js';
export type { PhaseTimes } from './state.js';
export {
  resolveOptions,
  defaultExitHead,
  defaultExitLayer,
  DECODING_MODES,
  DRAFTERS,
  type DrafterKind,
  DEFAULT_CALM_THRESHOLD,
  DEFAULT_MAX_NEW_TOKENS,
  DEFAULT_NUM_SPECULATIONS,
  type DecodingMode,
  type GenerateOptions,
  type ResolvedOptions,
} from './options.js';
export { type ContrastFunction, DEFAULT_ACD_ALPHA, DEFAULT_ACD_MINIMUM_CANDIDATES } from './modes/acd.js';
export { CONFIDENCE_MEASURES, DEFAULT_CALM_DECAY_TAU, type ConfidenceMeasure } from './modes/calm-confidence.js';
export { MexitError, OptionsError, AbortError, ConfigError, CacheError, CheckpointError, TokenizerError } from '@mexit/core';
export * from './multi-exit.js';
