/**
 * Stop strings on streamed text: they are matched on the whole decoded output (a stop string may span
 * several tokens), and text that could still turn into a stop string is held back until it can't.
 */
export class StopStringMatcher {
  private readonly maxLength: number;

  constructor(private readonly stops: readonly string[]) {
    this.maxLength = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Index of the earliest stop string in `text` at or after `from`, or −1. */
  find(text: string, from: number): number {
    let best = -1;
    const start = Math.max(0, from - this.maxLength + 1);
    for (const s of this.stops) {
      const i = text.indexOf(s, start);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  /** Length of the prefix of `text` that can be emitted: no suffix of it starts a stop string. */
  safeLength(text: string): number {
    for (let k = Math.min(this.maxLength - 1, text.length); k > 0; k--) {
      const tail = text.slice(text.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) return text.length - k;
    }
    return text.length;
  }
}
