/** The public types of `evaluate()`: its options, the rows it reports and the JSON document. */
import type { ExitHeadKind } from '@mexit/model';
import type { LambadaExample } from './lambada.js';

export interface EvaluateOptions {
  /**
   * Text file to evaluate on: stories separated by lines `<|endoftext|>`, or any plain text (a story longer
   * than TOKENIZE_CHARS characters is running text, tokenized in pieces, its passages used as last-word
   * examples). Default: DEFAULT_EVAL_DATA_PATH.
   */
  dataPath?: string;
  /** Stories as text (instead of dataPath). */
  text?: string;
  /** Token ids for perplexity instead of tokenized stories; the LAMBADA task then needs text or dataPath. */
  ids?: number[];
  /** Tokens evaluated for perplexity. Default DEFAULT_EVAL_MAX_TOKENS (4096). */
  maxTokens?: number;
  /** Stories used for the last-word task (0 skips it). Default DEFAULT_LAMBADA_EXAMPLES (100). */
  lambadaExamples?: number;
  /** ACD pairs [upper | 'original', lower]. Default ['original', ⌊L/2⌋] and ['original', ⌊L/4⌋]. */
  acdPairs?: [number | 'original', number][];
  /** CALM confidence thresholds. Default DEFAULT_CALM_THRESHOLDS ([0.9, 0.8, 0.6]). */
  calmThresholds?: number[];
  /** New tokens per mode in a separate decode-speed run (EOS ignored; 0 skips it). Default DEFAULT_SPEED_TOKENS (64). */
  speedTokens?: number;
  /** Progress messages (one per phase / mode). */
  onProgress?: (message: string) => void;
}

export type EvalModeKind = 'original' | 'exit' | 'acd' | 'calm' | 'self-spec';

/** Which decoding a row describes. */
export interface EvalMode {
  label: string;
  kind: EvalModeKind;
  /** Exit layer (exit, self-spec). */
  layer?: number;
  /** Head reading intermediate exits (exit, acd, calm, self-spec). */
  head?: ExitHeadKind;
  contrast?: [number | 'original', number];
  /** CALM confidence threshold λ. */
  threshold?: number;
  /**
   * Original, exit and ACD rows: the run's name in IBM autocontrastive-gen (describeMultiExit):
   * 'original_head', 'layer_<l>' or '<upper>_vs_<lower>'.
   */
  multiExit?: string;
}

export interface PerplexityRow extends EvalMode {
  /** Predicted tokens. */
  tokens: number;
  /** Summed negative log-likelihood (nats). */
  nll: number;
  /** exp(nll / tokens). */
  perplexity: number;
  /** CALM: mean exit layer over the predicted tokens. */
  meanExitLayer?: number;
}

export interface LambadaRow extends EvalMode {
  examples: number;
  correct: number;
  accuracy: number;
}

export interface SpeedRow extends EvalMode {
  /** Tokens generated and wall time over the LAMBADA runs (prefill included); all 0 without examples. */
  newTokens: number;
  timeMs: number;
  tokensPerSecond: number;
  /** The separate decode-speed run (speedTokens new tokens), when made. */
  decodeTokens?: number;
  decodeTokensPerSecond?: number;
  /** CALM: layers run per token; self-spec: accepted / drafted (over all timed runs). */
  meanLayersPerToken?: number;
  acceptanceRate?: number;
}

export interface EvalReport {
  perplexity: PerplexityRow[];
  lambada: LambadaRow[];
  speed: SpeedRow[];
  lambadaExamples: LambadaExample[];
  markdown: string;
  json: EvalJson;
}

export interface EvalJson {
  model: string;
  perplexity: { tokens: number; windowSize: number; windows: number; rows: PerplexityRow[] };
  lambada: { examples: number; maxNewTokens: number; rows: LambadaRow[] };
  speed: { decodeTokens: number; rows: SpeedRow[] };
  notes: string[];
}
