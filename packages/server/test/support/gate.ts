/**
 * A real generator whose generations can be held: each generation's events pass through unchanged, except
 * that after `holdAfter` events it waits until the gate opens or its own AbortSignal fires (then the real
 * engine sees the aborted signal on its next step). Lets tests keep a generation in flight for exactly as
 * long as they need — no timing guesses — while the model, the tokens and the abort path stay real.
 */
import type { GenerateOptions, GenerationEvent, GenerationResult, Prompt, TextGenerator } from '@mexit/speculative';

export class HeldGenerator implements TextGenerator {
  private opened = false;
  private waiters: (() => void)[] = [];
  /** Generations that reached the hold point. */
  held = 0;
  private heldWaiters: { n: number; resolve: () => void }[] = [];

  constructor(
    private readonly inner: TextGenerator,
    private readonly holdAfter = 1,
  ) {}

  get info() {
    return this.inner.info;
  }
  get defaults() {
    return this.inner.defaults;
  }
  tokenize(prompt: Prompt, addSpecialTokens?: boolean) {
    return this.inner.tokenize(prompt, addSpecialTokens);
  }
  generate(prompt: Prompt, options?: GenerateOptions): Promise<GenerationResult> {
    return this.inner.generate(prompt, options);
  }
  stream(prompt: Prompt, options?: GenerateOptions) {
    return this.inner.stream(prompt, options);
  }
  dispose() {
    return this.inner.dispose();
  }

  /** Lets every held and later generation run to its end. */
  open(): void {
    this.opened = true;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once `n` generations have reached the hold point. */
  untilHeld(n: number): Promise<void> {
    if (this.held >= n) return Promise.resolve();
    return new Promise((resolve) => this.heldWaiters.push({ n, resolve }));
  }

  async *events(prompt: Prompt, options: GenerateOptions = {}, onDone?: (r: GenerationResult) => void): AsyncGenerator<GenerationEvent> {
    let count = 0;
    for await (const event of this.inner.events(prompt, options, onDone)) {
      yield event;
      if (++count === this.holdAfter && !this.opened) {
        this.held++;
        for (const w of this.heldWaiters.filter((h) => this.held >= h.n)) w.resolve();
        await new Promise<void>((resolve) => {
          this.waiters.push(resolve);
          options.signal?.addEventListener('abort', () => resolve(), { once: true });
        });
      }
    }
  }
}

/** Polls `check` on the event loop until it holds (the test's timeout catches a condition that never comes). */
export async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
}
