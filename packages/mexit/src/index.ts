/**
 * mexit: the package users install. The generator API of @mexit/speculative (generators, options, results,
 * typed errors, multi-exit configuration), the model runtime and tokenizer of @mexit/model, and the bundled
 * model's directory. Subpaths: `mexit/eval`, `mexit/drafters`, `mexit/lowlevel`, `mexit/server`, `mexit/cli`.
 */
export * from '@mexit/speculative';
export {
  ModelRuntime,
  MexitTokenizer,
  type ModelConfig,
  type RuntimeOptions,
  type ProgressInfo,
  type ProgressCallback,
  type ChatMessage,
  resolveModelSource,
  HubError,
  type HubOptions,
  type HubProgress,
} from '@mexit/model';
export { modelDir as bundledModelDir } from '@mexit/tinystories-ee';
