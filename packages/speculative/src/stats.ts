/**
 * Generation statistics: the public `GenerationStats` and the recorder that fills it from the blocks a
 * mode commits.
 */
import type { ExitHeadKind } from '@mexit/model';
import type { DecodingMode, ResolvedOptions } from './options.js';
import type { StopReason } from './sink.js';
import type { PhaseTimes, TokenBlock } from './state.js';

export interface GenerationStats {
  mode: DecodingMode;
  /** Self-spec: the draft exit E; early-exit: the exit. */
  exitLayer?: number;
  /** How intermediate exits were read (self-spec, early-exit, ACD, CALM), as resolved for this run. */
  exitHead?: ExitHeadKind;
  /** ACD: the [upper | 'original', lower] pair, as resolved for this run. */
  contrastLayers?: [number | 'original', number];
  numSpeculations?: number;
  /** Self-spec: who drafted. */
  drafter?: ResolvedOptions['drafter'];
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
  /**
   * Self-spec: acceptCounts[k] = rounds in which exactly k drafts were accepted (length d + 1; gpt-fast's
   * accept_counts). Empty for the other modes.
   */
  acceptCounts: number[];
  /** newTokens / total wall time (prefill included). */
  tokensPerSecond: number;
  /** Wall time per phase (see PhaseTimes; `other` is the rest: text decoding, JS glue). */
  timeMs: PhaseTimes & { total: number; other: number };
  /** Per new token: 'draft' = accepted draft / early-exit token, 'target' = produced by the full model. */
  tokenSources: ('draft' | 'target')[];
  /**
   * Self-spec: an upper bound from layer counts, not a measurement — (newTokens·L) / (layers run on the
   * critical path, d·E per draft round + L per verify). The measured speed is tokensPerSecond.
   */
  layerBoundSpeedup?: number;
  /** CALM: layers run per new token, and how many tokens exited at each layer. */
  meanLayersPerToken?: number;
  exitHistogram?: Record<number, number>;
  stopReason: StopReason;
}

/** Counts what the blocks of one generation say; `finish` turns the counts into GenerationStats. */
export class StatsRecorder {
  rounds = 0;
  private drafted = 0;
  private accepted = 0;
  private criticalLayers = 0;
  private layersRun = 0;
  private readonly acceptCounts: number[];
  private readonly exitHistogram: Record<number, number> = {};
  private readonly tokenSources: ('draft' | 'target')[] = [];

  constructor(
    private readonly o: ResolvedOptions,
    private readonly numLayers: number,
  ) {
    this.acceptCounts = o.mode === 'self-spec' ? new Array(o.numSpeculations + 1).fill(0) : [];
  }

  round(block: TokenBlock): void {
    this.rounds++;
    if (block.drafted === undefined) return;
    const accepted = block.accepted ?? block.tokens.length - 1;
    this.drafted += block.drafted;
    this.accepted += accepted;
    this.acceptCounts[accepted]++;
    this.criticalLayers += block.drafted * this.o.exitLayer + this.numLayers;
  }

  token(block: TokenBlock, i: number): void {
    this.tokenSources.push(block.fromDraft[i] ? 'draft' : 'target');
    if (block.exitLayers) {
      const layer = block.exitLayers[i];
      this.exitHistogram[layer] = (this.exitHistogram[layer] ?? 0) + 1;
      this.layersRun += layer;
    }
  }

  finish(promptTokens: number, newTokens: number, totalMs: number, times: PhaseTimes, stopReason: StopReason): GenerationStats {
    const o = this.o;
    const selfSpec = o.mode === 'self-spec';
    const layerDrafts = selfSpec && o.drafter === 'early-exit';
    const phases = times.draft + times.verify + times.forward + times.propagate + times.sampling;
    const stats: GenerationStats = {
      mode: o.mode,
      exitLayer: layerDrafts || o.mode === 'early-exit' ? o.exitLayer : undefined,
      exitHead: o.mode === 'ar' || (selfSpec && !layerDrafts) ? undefined : o.exitHead,
      contrastLayers: o.contrast ? [o.contrast.upper, o.contrast.lower] : undefined,
      numSpeculations: selfSpec ? o.numSpeculations : undefined,
      drafter: selfSpec ? o.drafter : undefined,
      draftQuantization: layerDrafts ? o.draftQuantization : undefined,
      promptTokens,
      newTokens,
      rounds: this.rounds,
      drafted: this.drafted,
      accepted: this.accepted,
      acceptanceRate: this.drafted ? this.accepted / this.drafted : 0,
      acceptCounts: this.acceptCounts,
      tokensPerSecond: newTokens / (totalMs / 1000),
      timeMs: { total: totalMs, ...times, other: Math.max(0, totalMs - phases) },
      tokenSources: this.tokenSources,
      stopReason,
    };
    if (layerDrafts && this.criticalLayers > 0) stats.layerBoundSpeedup = (newTokens * this.numLayers) / this.criticalLayers;
    if (o.mode === 'calm') {
      stats.meanLayersPerToken = newTokens ? this.layersRun / newTokens : 0;
      stats.exitHistogram = this.exitHistogram;
    }
    return stats;
  }
}
