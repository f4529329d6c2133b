/**
 * @mexit/speculative: the generator, its options, results and errors. Lower-level pieces (acceptance
 * rules, drafters, ACD, CALM, multi-exit configuration) are exported too, for tools and tests; evaluation
 * lives at the `@mexit/speculative/eval` subpath.
 */
export { MexitGenerator, SelfSpeculativeGenerator, type GenerationEvent, type GenerationResult, type GeneratorOptions, type Prompt, type StopReason } from './generator.js';
export type { GenerationStats } from './stats.js';
export type { PhaseTimes } from './state.js';
export {
  resolveOptions, defaultExitHead, defaultExitLayer, checkContrastPair, parseConfidenceMeasure, DECODING_MODES, DRAFTERS, type DrafterKind,
  DEFAULT_MAX_NEW_TOKENS, DEFAULT_NUM_SPECULATIONS, type DecodingMode, type GenerateOptions, type ResolvedOptions,
} from './options.js';
export { encodePrompt } from './prompt.js';
export { MexitError, OptionsError, AbortError, ConfigError, CacheError, CheckpointError, TokenizerError } from '@mexit/core';
export * from './accept.js';
export * from './drafters/index.js';
export { Verifier } from './verify.js';
export { StopStringMatcher } from './stopping.js';
export { TokenSink } from './sink.js';
export * from './modes/acd.js';
export * from './modes/calm-confidence.js';
export { CalmStages, calmExitPoints } from './modes/calm.js';
export * from './multi-exit.js';
