/**
 * Which drafter a self-spec run gets: the one place that reads the draft options. Plain greedy drafts
 * (no sampling, no repetition penalty, no confidence threshold) may be picked inside a chain graph: the
 * argmax there equals LogitsWarper.greedy.
 */
import type { ModelRuntime } from '@mexit/model';
import type { ResolvedOptions } from '../options.js';
import type { Drafter } from './drafter.js';
import { QuantizedDrafter } from './own-cache.js';
import { PromptLookupDrafter } from './prompt-lookup.js';
import { SharedCacheDrafter } from './shared-cache.js';

export type { Draft, Drafter } from './drafter.js';
export { QuantizedDrafter } from './own-cache.js';
export { SharedCacheDrafter } from './shared-cache.js';
export { PromptLookupDrafter, DEFAULT_PROMPT_LOOKUP_NGRAM } from './prompt-lookup.js';

export async function createDrafter(runtime: ModelRuntime, o: ResolvedOptions): Promise<Drafter> {
  if (o.drafter === 'prompt-lookup') return new PromptLookupDrafter(runtime.config.vocabSize, o.doSample);
  const plainGreedy = !o.doSample && o.warper.repetitionPenalty === 1 && o.draftConfidenceThreshold === 0;
  const spec = {
    exitLayer: o.exitLayer,
    exitHead: o.exitHead,
    chainLength: plainGreedy ? o.numSpeculations : undefined,
    confidenceThreshold: o.draftConfidenceThreshold,
  };
  // Drafts at the model's own precision (RuntimeOptions.weights) are exact drafts: they share the cache.
  if (o.draftQuantization !== 'none' && o.draftQuantization !== runtime.options.weights) {
    return QuantizedDrafter.create(runtime, spec, o.draftQuantization, o.doSample);
  }
  return SharedCacheDrafter.create(runtime, { ...spec, feedLast: o.bonusToken }, o.doSample);
}
