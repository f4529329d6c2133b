/**
 * Typed errors. Every failure caused by user input (files, configs, options) is a MexitError subclass
 * with a stable `code`, so callers can branch on it and the CLI can print it without a stack trace.
 */
export class MexitError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A checkpoint file (safetensors, pytorch_model.bin, index json) is missing, malformed or unsafe. */
export class CheckpointError extends MexitError {}
/** config.json / generation_config.json missing a field, contradictory or unsupported. */
export class ConfigError extends MexitError {}
/** tokenizer.json / tokenizer_config.json missing or malformed, or a text prompt without a tokenizer. */
export class TokenizerError extends MexitError {}
/** Bad user options (generation settings, exit layers, CLI flags). Raised before any model work. */
export class OptionsError extends MexitError {}
/** KV cache misuse: capacity exceeded, out-of-order append, bad shapes. */
export class CacheError extends MexitError {}
/** Generation was cancelled through an AbortSignal. */
export class AbortError extends MexitError {
  constructor(message = 'generation aborted') {
    super('ABORTED', message);
  }
}
