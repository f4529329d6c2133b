/**
 * The conversation behind `mexit chat`: the history of turns and one answer at a time, rendered through the
 * model's chat template. It keeps what the REPL must not get wrong: a turn enters the history only when its
 * answer completes, and a history that outgrows the context loses its oldest exchanges (never the system
 * message) until the prompt plus maxNewTokens fits.
 */
import { MexitError, OptionsError } from '@mexit/core';
import type { ChatMessage } from '@mexit/model';
import type { GenerateOptions, GenerationEvent, GenerationResult, TextGenerator } from '@mexit/speculative';

export interface ChatTurn {
  result: GenerationResult;
  /** Oldest exchanges (user message + answer) dropped so that this turn fits the context. */
  dropped: number;
}

export class ChatSession {
  /** User and assistant messages, alternating, oldest first (the system message is kept apart). */
  private turns: ChatMessage[] = [];

  constructor(
    private readonly generator: TextGenerator,
    private readonly options: GenerateOptions = {},
    readonly system?: string,
  ) {}

  /** The system message (if any), then `turns`: what the chat template renders. */
  private withSystem(turns: ChatMessage[]): ChatMessage[] {
    return this.system !== undefined ? [{ role: 'system', content: this.system }, ...turns] : turns;
  }

  /** Forgets the turns; the system message stays. */
  reset(): void {
    this.turns = [];
  }

  /**
   * Answers `content` given the history, calling `onEvent` per committed token. On success the user message
   * and the answer join the history (minus any exchanges dropped to fit); on any error, an abort included,
   * the history is left as it was, so an interrupted answer never becomes context for the next one.
   */
  async say(content: string, onEvent: (event: GenerationEvent) => void, signal?: AbortSignal): Promise<ChatTurn> {
    let turns: ChatMessage[] = [...this.turns, { role: 'user', content }];
    let dropped = 0;
    for (;;) {
      const messages = this.withSystem(turns);
      let result: GenerationResult | undefined;
      try {
        for await (const event of this.generator.events(messages, { ...this.options, signal }, (r) => (result = r))) onEvent(event);
      } catch (error) {
        // The engine refuses an overflowing prompt before any model work, so nothing was streamed yet.
        if (!(error instanceof MexitError) || error.code !== 'CONTEXT_OVERFLOW') throw error;
        if (turns.length === 1) {
          throw new OptionsError(
            'CONTEXT_OVERFLOW',
            `the message does not fit the context even without the earlier turns${this.system !== undefined ? ' (the system message is kept)' : ''}: ${error.message}`,
          );
        }
        turns = turns.slice(2); // the oldest user message and its answer
        dropped++;
        continue;
      }
      this.turns = [...turns, { role: 'assistant', content: result!.text }];
      return { result: result!, dropped };
    }
  }
}
