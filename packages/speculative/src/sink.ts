/**
 * Where committed tokens go: one object owns the per-token accounting every mode shares — the ids, the
 * decoded text, EOS, maxNewTokens and stop strings — and answers each push with the text that is safe to
 * show and whether generation is over.
 */
import { IncrementalDecoder, type MexitTokenizer } from '@mexit/model';
import { StopStringMatcher } from './stopping.js';

export type StopReason = 'eos' | 'max-new-tokens' | 'stop-string';

export interface SinkLimits {
  maxNewTokens: number;
  eosTokenIds: ReadonlySet<number>;
  stop: readonly string[];
}

export class TokenSink {
  readonly ids: number[] = [];
  /** Set by the push that ends generation. */
  stopReason: StopReason | undefined;
  private readonly decoder: IncrementalDecoder | null;
  private readonly stops: StopStringMatcher;
  private text = '';
  private emitted = 0;

  constructor(
    tokenizer: MexitTokenizer | null,
    private readonly limits: SinkLimits,
  ) {
    this.decoder = tokenizer ? new IncrementalDecoder(tokenizer, { skipSpecialTokens: true }) : null;
    this.stops = new StopStringMatcher(limits.stop);
  }

  /** The decoded output so far (cut before a stop string); empty without a tokenizer. */
  get output(): string {
    return this.text;
  }

  /**
   * Takes one committed token; returns the text newly safe to show (empty while a multi-byte character or a
   * possible stop string is pending). Check `stopReason` afterwards.
   */
  push(token: number): string {
    const { limits, decoder, stops } = this;
    this.ids.push(token);
    if (decoder) this.text += decoder.push(token);
    if (limits.eosTokenIds.has(token)) this.stopReason = 'eos';
    else if (this.ids.length >= limits.maxNewTokens) this.stopReason = 'max-new-tokens';
    if (limits.stop.length) {
      const at = stops.find(this.text, this.emitted);
      if (at >= 0) {
        this.text = this.text.slice(0, at);
        this.stopReason = 'stop-string';
      }
    }
    if (this.stopReason && decoder && this.stopReason !== 'stop-string') this.text += decoder.flush();
    const safe = this.stopReason ? this.text.length : stops.safeLength(this.text);
    const delta = safe > this.emitted ? this.text.slice(this.emitted, safe) : '';
    this.emitted = Math.max(this.emitted, safe);
    return delta;
  }
}
