/**
 * Streaming detokenization. A generator emits one token id at a time, but decoding ids one by one does not
 * give text that is safe to show: a multi-byte character can span several byte-level or byte-fallback
 * tokens (its first tokens decode to U+FFFD), SentencePiece drops a word's leading space when the word is
 * decoded alone, and `clean_up_tokenization_spaces` (" ." → ".") can change text across a token boundary.
 * IncrementalDecoder returns only text deltas that no later token can change, so printing them as they
 * come gives exactly decode(all ids).
 */
import { cleanUpTokenizationSpaces, type MexitTokenizer } from './tokenizer.js';

/** Held-back ids (tail decoding to U+FFFD) beyond which releaseHeld() tries to emit all but the last HELD_TAIL. */
const HELD_MAX = 16;
/** Ids kept held: at least 3 bytes, enough to complete or break any UTF-8 sequence begun before them. */
const HELD_TAIL = 4;

/**
 * Whether cleanUp(a + b) === cleanUp(a) + cleanUp(b) for every a ending in `before` and b starting with `after`.
 * Every replacement deletes one space and nothing else, so two adjacent non-space characters stay adjacent
 * through all passes; a match can then straddle them only if they are consecutive inside a pattern. The
 * non-space pairs inside patterns are n', 't, 'm, 's, 'v, 've, 'r, 're: any pair with a quote, plus "ve" and "re".
 */
function isSafeCleanupCut(before: number, after: number): boolean {
  if (before === 0x20 || after === 0x20 || before === 0x27 || after === 0x27) return false; // ' ' or "'"
  if (after === 0x65 && (before === 0x76 || before === 0x72)) return false; // "ve", "re"
  return !(before >= 0xd800 && before <= 0xdbff); // never split a surrogate pair
}

/** Largest safe cut 0 < p < text.length (see isSafeCleanupCut), or 0 when there is none. */
function lastSafeCleanupCut(text: string): number {
  for (let p = text.length - 1; p > 0; p--) {
    if (isSafeCleanupCut(text.charCodeAt(p - 1), text.charCodeAt(p))) return p;
  }
  return 0;
}

/**
 * Streaming detokenizer: push ids as they are generated, get back only the newly finalised text.
 * The concatenation of all push() results and the final flush() equals tok.decode(allIds, same options).
 *
 * Method (text-generation-inference's decode_token / HF TextStreamer): decode a small window of ids starting at
 * a prefix offset; the delta is decode(window) minus decode(window up to the read offset). Decoding from a
 * window start rather than each token alone keeps SentencePiece's leading-space strip consistent (it applies
 * equally to both decodes). Text is held back while
 *  - its tail is U+FFFD: a byte-level token may end mid-character and the next one completes it;
 *  - the last id is a <0xXX> byte-fallback token: transformers turns a whole invalid byte run into U+FFFDs,
 *    so a later byte can still change how the earlier bytes of the run decode.
 * The window slides forward after every emission, so each push costs O(window), not O(sequence). A model that
 * keeps emitting invalid bytes would keep the tail at U+FFFD and grow the window without bound (quadratic time),
 * so past HELD_MAX held ids the text up to the last HELD_TAIL ids is released once it is final (see releaseHeld).
 */
export class IncrementalDecoder {
  private readonly tok: MexitTokenizer;
  private readonly skipSpecialTokens: boolean;
  private readonly cleanUp: boolean;
  /** Ids from the prefix offset onwards. */
  private window: number[] = [];
  /** Index in `window` of the first id whose text has not been emitted. */
  private readIndex = 0;
  /** decode(window[0:readIndex]), cached because it only changes when the window slides. */
  private prefixText = '';
  /** Raw decoded text not yet passed through clean-up (only used when clean-up is on). */
  private cleanupPending = '';
  /** Ids pushed since the last reset, for error messages. */
  private pushed = 0;

  constructor(tok: MexitTokenizer, options: { skipSpecialTokens?: boolean; cleanUpTokenizationSpaces?: boolean } = {}) {
    this.tok = tok;
    this.skipSpecialTokens = options.skipSpecialTokens ?? false;
    this.cleanUp = options.cleanUpTokenizationSpaces ?? tok.cleanUpByDefault;
  }

  /** Ids currently held in the decode window (stays small; exposed for diagnostics and tests). */
  get windowLength(): number {
    return this.window.length;
  }

  /** Add one generated id; returns the text it finalises (often '', e.g. while a character is incomplete). */
  push(id: number): string {
    this.tok.checkId(id, this.pushed++);
    // decode(skipSpecialTokens) filters special tokens before decoding, so dropping them here is identical.
    if (this.skipSpecialTokens && this.tok.isSpecialTokenId(id)) return '';
    this.window.push(id);
    if (this.tok.isByteFallbackTokenId(id)) return '';
    const text = this.decodeRaw(this.window);
    if (text.length <= this.prefixText.length) return '';
    if (text.endsWith('\uFFFD')) return this.releaseHeld(text);
    return this.slideTo(this.window.length, text);
  }

  /**
   * Emit decode(window[0:cut]) beyond what was emitted, then slide: the new window starts at the old read position
   * (so the next decode keeps some context) and reads on from `cut`.
   */
  private slideTo(cut: number, textToCut: string): string {
    const delta = textToCut.slice(this.prefixText.length);
    const start = this.readIndex;
    this.window = this.window.slice(start);
    this.readIndex = cut - start;
    this.prefixText = this.decodeRaw(this.readIndex === this.window.length ? this.window : this.window.slice(0, this.readIndex));
    return this.emit(delta);
  }

  /**
   * With more than HELD_MAX ids held, release the text before the last HELD_TAIL of them when it is final: its
   * decode is a prefix of the whole window's, and the cut is not inside a byte-fallback run (a run decodes as a
   * whole). The tail's bytes settle any UTF-8 sequence started before the cut, so later ids cannot change it.
   */
  private releaseHeld(text: string): string {
    const cut = this.window.length - HELD_TAIL;
    if (cut - this.readIndex <= HELD_MAX - HELD_TAIL || this.tok.isByteFallbackTokenId(this.window[cut - 1])) return '';
    const head = this.decodeRaw(this.window.slice(0, cut));
    if (head.length <= this.prefixText.length || !text.startsWith(head)) return '';
    return this.slideTo(cut, head);
  }

  /** End of stream: returns all text still held back (an unfinished character decodes to U+FFFD) and resets. */
  flush(): string {
    const text = this.window.length > 0 ? this.decodeRaw(this.window) : '';
    let out = text.length > this.prefixText.length ? this.emit(text.slice(this.prefixText.length)) : '';
    if (this.cleanUp && this.cleanupPending.length > 0) out += cleanUpTokenizationSpaces(this.cleanupPending);
    this.reset();
    return out;
  }

  /** Forget all state and start a new stream. */
  reset(): void {
    this.window = [];
    this.readIndex = 0;
    this.prefixText = '';
    this.cleanupPending = '';
    this.pushed = 0;
  }

  private decodeRaw(ids: number[]): string {
    return this.tok.decode(ids, { skipSpecialTokens: this.skipSpecialTokens, cleanUpTokenizationSpaces: false });
  }

  /** Pass raw text through clean-up, holding back a tail that a later character could still change. */
  private emit(rawDelta: string): string {
    if (!this.cleanUp) return rawDelta;
    const pending = this.cleanupPending + rawDelta;
    const cut = lastSafeCleanupCut(pending);
    if (cut === 0) {
      this.cleanupPending = pending;
      return '';
    }
    this.cleanupPending = pending.slice(cut);
    return cleanUpTokenizationSpaces(pending.slice(0, cut));
  }
}
