/**
 * The generator: prompt → tokens, in one of five modes over one model runtime.
 *
 * Self-speculative round (the heart, REFERENCE §1):
 *   draft   layers [0, E) + exit head, one token at a time, up to d tokens   (draft.ts)
 *   verify  layers [E, L) + head over all d+1 rows from their exit hiddens   (verify.ts)
 *   accept  longest agreeing prefix (greedy) or min(1, p/q) + residual      (accept.ts)
 *   rollback  truncate every layer's KV to the committed length; the emitted token is the next pending one.
 */
import { AbortError, OptionsError, type KvCache } from '@mexit/core';
import { IncrementalDecoder, ModelRuntime, type ChatMessage, type RuntimeOptions } from '@mexit/model';
import { Drafter } from './draft.js';
import { Verifier } from './verify.js';
import { stepwise } from './modes/baselines.js';
import { contrastive } from './modes/contrastive.js';
import { calm, CalmStages } from './modes/calm.js';
import { AutoContrast } from './modes/acd.js';
import { resolveOptions, type DecodingMode, type GenerateOptions, type ResolvedOptions } from './options.js';
import { StopStringMatcher } from './stopping.js';
import { now, RowBuffer, TokenHistory, TokenPicker, type DecodeState, type TokenBlock } from './state.js';

/** A text prompt, token ids, or chat messages (rendered with the model's chat template). */
export type Prompt = string | readonly number[] | readonly ChatMessage[];

export type StopReason = 'eos' | 'max-new-tokens' | 'stop-string';

export interface GenerationStats {
  mode: DecodingMode;
  exitLayer?: number;
  numSpeculations?: number;
  /** Self-spec: how the draft layers ran ('none' = exact weights on the shared cache). */
  draftQuantization?: ResolvedOptions['draftQuantization'];
  promptTokens: number;
  newTokens: number;
  /** Self-spec rounds (one per committed block); equals newTokens for one-token modes. */
  rounds: number;
  drafted: number;
  accepted: number;
  /** accepted / drafted (self-spec), else 0. */
  acceptanceRate: number;
  /** newTokens / total wall time (prefill included). */
  tokensPerSecond: number;
  timeMs: { total: number; draft: number; verify: number; sampling: number; other: number };
  /** Per new token: 'draft' = accepted draft / early-exit token, 'target' = produced by the full model. */
  tokenSources: ('draft' | 'target')[];
  /** Sequential layer passes saved vs ar: (newTokens·L) / (layer passes on the critical path). */
  estimatedSpeedup?: number;
  /** CALM: layers run per new token, and how many tokens exited at each layer. */
  meanLayersPerToken?: number;
  exitHistogram?: Record<number, number>;
  stopReason: StopReason;
}

export interface GenerationResult {
  /** New token ids (EOS included when generation stopped on it). */
  ids: number[];
  /** Decoded new text (special tokens skipped; cut before a stop string). Empty without a tokenizer. */
  text: string;
  stats: GenerationStats;
}

/** Streamed as tokens are committed. */
export interface GenerationEvent {
  token: number;
  fromDraft: boolean;
  /** Text newly safe to show (may be empty while a multi-byte character or a possible stop string is pending). */
  text: string;
}

export interface GeneratorOptions extends RuntimeOptions, GenerateOptions {}

export class SelfSpeculativeGenerator {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly runtime: ModelRuntime, readonly defaults: GenerateOptions = {}) {}

  /** Loads a model directory; `options` holds runtime settings and default generation options. */
  static async fromPretrained(dir: string, options: GeneratorOptions = {}): Promise<SelfSpeculativeGenerator> {
    const { threads, spinning, prepacking, ...defaults } = options;
    const runtime = await ModelRuntime.load(dir, { threads, spinning, prepacking });
    const generator = new SelfSpeculativeGenerator(runtime, defaults);
    resolveOptions(runtime, defaults); // fail fast on bad defaults
    return generator;
  }

  /** Generates a completion and returns ids, text and statistics. */
  async generate(prompt: Prompt, options: GenerateOptions = {}): Promise<GenerationResult> {
    let result: GenerationResult | undefined;
    const events = this.events(prompt, options, (r) => (result = r));
    for await (const _ of events) {
      // consume
    }
    return result!;
  }

  /** Async iterator of text deltas, emitted as tokens are committed. */
  async *stream(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<string, GenerationResult> {
    let result: GenerationResult | undefined;
    for await (const event of this.events(prompt, options, (r) => (result = r))) {
      if (event.text) yield event.text;
    }
    return result!;
  }

  /**
   * The event stream behind generate() and stream(): one event per committed token. `onDone` receives
   * the final result. Calls on one generator run one at a time (they share sessions and buffers).
   */
  async *events(prompt: Prompt, options: GenerateOptions = {}, onDone?: (r: GenerationResult) => void): AsyncGenerator<GenerationEvent> {
    const merged = { ...this.defaults, ...options };
    const resolved = resolveOptions(this.runtime, merged);
    const promptIds = this.encodePrompt(prompt, merged.addSpecialTokens);
    const maxPositions = this.runtime.config.maxPositions;
    if (promptIds.length + resolved.maxNewTokens > maxPositions) {
      throw new OptionsError(
        'CONTEXT_OVERFLOW',
        `prompt (${promptIds.length} tokens) + maxNewTokens (${resolved.maxNewTokens}) exceeds the context of ${maxPositions} positions`,
      );
    }
    // Serialise generations on this instance.
    const previous = this.queue;
    let release!: () => void;
    this.queue = new Promise<void>((r) => (release = r));
    await previous.catch(() => undefined);
    try {
      yield* this.run(promptIds, resolved, onDone);
    } finally {
      release();
    }
  }

  /** Text → ids (with the tokenizer), chat messages → template → ids, ids validated. */
  encodePrompt(prompt: Prompt, addSpecialTokens?: boolean): number[] {
    const tokenizer = this.runtime.tokenizer;
    let ids: number[];
    if (typeof prompt === 'string') {
      if (!tokenizer) throw new OptionsError('NO_TOKENIZER', `a text prompt needs a tokenizer, and ${this.runtime.dir} has no tokenizer.json; pass token ids instead`);
      ids = tokenizer.encode(prompt, { addSpecialTokens: addSpecialTokens ?? true });
    } else if (Array.isArray(prompt) && prompt.length > 0 && typeof prompt[0] === 'object') {
      if (!tokenizer) throw new OptionsError('NO_TOKENIZER', `chat messages need a tokenizer, and ${this.runtime.dir} has no tokenizer.json`);
      ids = tokenizer.encodeChat(prompt as ChatMessage[]);
    } else if (Array.isArray(prompt)) {
      ids = [...(prompt as number[])];
    } else {
      throw new OptionsError('INVALID_PROMPT', 'prompt must be a string, an array of token ids or an array of chat messages');
    }
    if (ids.length === 0) throw new OptionsError('EMPTY_PROMPT', 'the prompt is empty');
    const V = this.runtime.config.vocabSize;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new OptionsError('TOKEN_ID_RANGE', `prompt token id ${id} is outside the vocabulary 0..${V - 1}`);
    }
    return ids;
  }

  private async modeBlocks(o: ResolvedOptions, state: DecodeState): Promise<AsyncGenerator<TokenBlock>> {
    const rt = this.runtime;
    const L = rt.numLayers;
    switch (o.mode) {
      case 'ar':
        return stepwise(state, await rt.stage({ from: 0, to: L, exits: [{ layer: L }] }), false);
      case 'early-exit':
        return stepwise(state, await rt.stage({ from: 0, to: o.exitLayer, exits: [{ layer: o.exitLayer, head: o.exitHead }] }), true);
      case 'self-spec': {
        const quantize = o.draftQuantization === 'none' ? undefined : o.draftQuantization;
        // Plain greedy drafts can be picked inside the graph: the argmax there equals LogitsWarper.greedy.
        const plainGreedy = !o.doSample && o.warper.repetitionPenalty === 1 && o.draftConfidenceThreshold === 0;
        const [drafter, verifier] = await Promise.all([
          Drafter.create(rt, o.exitLayer, o.exitHead, quantize, plainGreedy ? o.numSpeculations : undefined, o.bonusToken),
          Verifier.create(rt, quantize ? 0 : o.exitLayer),
        ]);
        return selfSpeculative(state, drafter, verifier, o, rt.config.hiddenSize);
      }
      case 'acd': {
        const c = o.contrast!;
        const upper = c.upper === 'original' ? { layer: L } : { layer: c.upper, head: o.exitHead };
        const stage = await rt.stage({ from: 0, to: L, exits: [upper, { layer: c.lower, head: o.exitHead }] });
        const fn = c.fn ?? new AutoContrast(rt.config.vocabSize, { alpha: c.alpha, minimumCandidates: c.minimumCandidates }).contrast;
        return contrastive(state, stage, fn, rt.config.vocabSize);
      }
      case 'calm': {
        const c = o.calm!;
        const stages = await CalmStages.create(rt, c.minExitLayer, c.exitInterval, o.exitHead);
        return calm(state, stages, { ...c, maxNewTokens: o.maxNewTokens }, rt.config.hiddenSize);
      }
    }
  }

  private async *run(promptIds: number[], o: ResolvedOptions, onDone?: (r: GenerationResult) => void): AsyncGenerator<GenerationEvent> {
    const rt = this.runtime;
    const L = rt.numLayers;
    const cache: KvCache = rt.createCache(promptIds.length + o.maxNewTokens + o.numSpeculations + 1);
    const history = new TokenHistory();
    for (const id of promptIds) history.push(id);
    const ids: number[] = [];
    const tokenSources: ('draft' | 'target')[] = [];
    const exitHistogram: Record<number, number> = {};
    let layersRun = 0;
    const state: DecodeState = {
      cache,
      history,
      picker: new TokenPicker(o.warper, o.doSample, o.seed),
      prompt: promptIds,
      remaining: () => o.maxNewTokens - ids.length,
      times: { draft: 0, verify: 0, sampling: 0 },
      isEos: (id) => o.eosTokenIds.has(id),
    };
    const tokenizer = rt.tokenizer;
    const decoder = tokenizer ? new IncrementalDecoder(tokenizer, { skipSpecialTokens: true }) : null;
    const stops = new StopStringMatcher(o.stop);
    let text = '';
    let emitted = 0;
    let rounds = 0;
    let drafted = 0;
    let accepted = 0;
    let criticalPasses = 0;
    let stopReason: StopReason | undefined;

    const checkAbort = () => {
      if (o.signal?.aborted) throw new AbortError();
    };
    checkAbort();
    const blocks = await this.modeBlocks(o, state); // builds sessions on first use: not counted as generation time
    const started = now();
    try {
      while (!stopReason) {
        checkAbort();
        const { value: block, done } = await blocks.next();
        if (done) break;
        rounds++;
        if (block.drafted !== undefined) {
          drafted += block.drafted;
          accepted += block.accepted ?? block.tokens.length - 1;
          criticalPasses += block.drafted * o.exitLayer + L;
        }
        for (let i = 0; i < block.tokens.length && !stopReason; i++) {
          // Per token, not only per block: a consumer that aborts mid-block gets no further tokens.
          checkAbort();
          const token = block.tokens[i];
          ids.push(token);
          history.push(token);
          tokenSources.push(block.fromDraft[i] ? 'draft' : 'target');
          if (block.exitLayers) {
            exitHistogram[block.exitLayers[i]] = (exitHistogram[block.exitLayers[i]] ?? 0) + 1;
            layersRun += block.exitLayers[i];
          }
          if (decoder) text += decoder.push(token);
          if (o.eosTokenIds.has(token)) stopReason = 'eos';
          else if (ids.length >= o.maxNewTokens) stopReason = 'max-new-tokens';
          if (o.stop.length) {
            const at = stops.find(text, emitted);
            if (at >= 0) {
              text = text.slice(0, at);
              stopReason = 'stop-string';
            }
          }
          if (stopReason && decoder && stopReason !== 'stop-string') text += decoder.flush();
          const safe = stopReason ? text.length : stops.safeLength(text);
          const delta = safe > emitted ? text.slice(emitted, safe) : '';
          emitted = Math.max(emitted, safe);
          yield { token, fromDraft: block.fromDraft[i], text: delta };
        }
      }
    } finally {
      await blocks.return(undefined);
    }
    checkAbort();

    const total = now() - started;
    const { draft, verify, sampling } = state.times;
    const stats: GenerationStats = {
      mode: o.mode,
      exitLayer: o.mode === 'self-spec' || o.mode === 'early-exit' ? o.exitLayer : undefined,
      numSpeculations: o.mode === 'self-spec' ? o.numSpeculations : undefined,
      draftQuantization: o.mode === 'self-spec' ? o.draftQuantization : undefined,
      promptTokens: promptIds.length,
      newTokens: ids.length,
      rounds,
      drafted,
      accepted,
      acceptanceRate: drafted ? accepted / drafted : 0,
      tokensPerSecond: ids.length / (total / 1000),
      timeMs: { total, draft, verify, sampling, other: Math.max(0, total - draft - verify - sampling) },
      tokenSources,
      stopReason: stopReason ?? 'max-new-tokens',
    };
    if (o.mode === 'self-spec' && criticalPasses > 0) stats.estimatedSpeedup = (ids.length * L) / criticalPasses;
    if (o.mode === 'calm') {
      stats.meanLayersPerToken = ids.length ? layersRun / ids.length : 0;
      stats.exitHistogram = exitHistogram;
    }
    onDone?.({ ids, text, stats });
  }

  async dispose(): Promise<void> {
    await this.runtime.dispose();
  }
}

/** The self-speculative loop: draft → verify → accept → rollback, one committed block per round. */
async function* selfSpeculative(state: DecodeState, drafter: Drafter, verifier: Verifier, o: ResolvedOptions, hiddenSize: number): AsyncGenerator<TokenBlock> {
  const exitHiddens = new RowBuffer(hiddenSize);
  let pending = state.prompt;
  let numSpeculations = o.numSpeculations;
  for (;;) {
    const committed = state.history.length;
    const cachedRows = state.cache.length(0);
    const maxDrafts = Math.min(numSpeculations, state.remaining() - 1);
    const drafts = await drafter.draft(state, pending, maxDrafts, o.draftConfidenceThreshold, exitHiddens, o.bonusToken);
    // Without the bonus row the last draft is not fed yet: it becomes the next round's pending input if accepted.
    // Quantized drafts: the verifier feeds every draft through the full model, so the bonus row is always there.
    const bonus = o.bonusToken || drafts.length === 0 || drafter.ownsCache;
    const fedDrafts = bonus ? drafts.length : drafts.length - 1;
    const logits = drafter.ownsCache
      ? await verifier.verifyIds(state, pending, drafts)
      : await verifier.verify(state, exitHiddens, fedDrafts + 1);
    const { accepted, next } = verifier.accept(state, drafts, logits, drafter.draftProbs, committed, bonus);
    state.history.truncate(committed);
    state.cache.truncate(cachedRows + pending.length + Math.min(accepted, fedDrafts));
    drafter.rollback(committed + accepted);
    if (o.adaptiveDraftLength) {
      numSpeculations = accepted === drafts.length ? Math.min(numSpeculations + 1, o.numSpeculations) : Math.max(1, numSpeculations - 1);
    }
    const tokens = drafts.slice(0, accepted);
    if (next !== null) tokens.push(next);
    const fromDraft = tokens.map((_, i) => i < accepted);
    yield { tokens, fromDraft, drafted: drafts.length, accepted };
    pending = [next ?? drafts[drafts.length - 1]];
  }
}
