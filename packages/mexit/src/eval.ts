/** mexit/eval: per-exit evaluation (perplexity, last-word task, speed), as `@mexit/speculative/eval`. */
export * from '@mexit/speculative/eval';
