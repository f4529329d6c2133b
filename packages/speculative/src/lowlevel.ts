/**
 * @mexit/speculative/lowlevel: the building blocks the generator is made of, for tools and tests: the pure
 * acceptance rules, the verifier, the token sink and stop-string matcher, prompt encoding, option checks,
 * and the ACD and CALM pieces.
 */
export * from './accept.js';
export { Verifier } from './verify.js';
export { StopStringMatcher } from './stopping.js';
export { TokenSink } from './sink.js';
export { encodePrompt } from './prompt.js';
export { checkContrastPair, formatValue, invalidOption, isInt } from './options.js';
export * from './modes/acd.js';
export * from './modes/calm-confidence.js';
export { CalmStages, calmExitPoints } from './modes/calm.js';
