/**
 * CALM adaptive exit: per token, run layers in chunks (exit points minExitLayer, +interval, …, L) and stop
 * at the first exit whose confidence passes the decaying threshold λ_t. The skipped layers still get
 * K/V rows for later tokens, projected from the exit hidden state ("state propagation"). Lossy by design.
 * The prompt runs through every layer.
 */
import type { ModelRuntime, Stage } from '@mexit/model';
import { now, type DecodeState, type TokenBlock } from '../state.js';
import { calmThreshold, computeConfidence, type ConfidenceMeasure } from './calm-confidence.js';

export interface CalmSettings {
  threshold: number;
  measure: ConfidenceMeasure;
  minExitLayer: number;
  exitInterval: number;
  decay: number;
  maxNewTokens: number;
}

/** Exit points (1-based layers) and the chunk stages between them, plus propagate stages per exit. */
export class CalmStages {
  private constructor(
    readonly exitPoints: number[],
    readonly chunks: Stage[],
    readonly propagate: Map<number, Stage>,
  ) {}

  static async create(runtime: ModelRuntime, minExitLayer: number, exitInterval: number, exitHead: 'shared' | 'layer-specific' | 'cast'): Promise<CalmStages> {
    const L = runtime.numLayers;
    const exitPoints: number[] = [];
    for (let l = minExitLayer; l < L; l += exitInterval) exitPoints.push(l);
    exitPoints.push(L);
    const chunks: Stage[] = [];
    let from = 0;
    for (const l of exitPoints) {
      const head = l === L ? 'shared' : exitHead;
      chunks.push(await runtime.stage({ from, to: l, exits: [{ layer: l, head }] }));
      from = l;
    }
    const propagate = new Map<number, Stage>();
    for (const l of exitPoints) if (l < L) propagate.set(l, await runtime.stage({ from: l, to: L, propagate: true }));
    return new CalmStages(exitPoints, chunks, propagate);
  }
}

export async function* calm(state: DecodeState, stages: CalmStages, settings: CalmSettings, hiddenSize: number): AsyncGenerator<TokenBlock> {
  const { exitPoints, chunks } = stages;
  let pending = state.prompt;
  const single = [0];
  for (let t = 0; ; t++) {
    const lambda = calmThreshold(settings.threshold, t, settings.maxNewTokens, settings.decay);
    const prefill = pending.length > 1;
    let input: number[] | Float32Array = pending;
    let prevHidden: Float32Array | undefined;
    let logits!: Float32Array;
    let exitIndex = 0;
    for (; exitIndex < chunks.length; exitIndex++) {
      let time = now();
      const out = await chunks[exitIndex].run(state.cache, input, (input.length / (exitIndex === 0 ? 1 : hiddenSize)) - 1);
      state.times.verify += now() - time;
      logits = out.logits[0];
      if (exitIndex === chunks.length - 1) break;
      time = now();
      const lastRow = out.hidden.subarray(out.hidden.length - hiddenSize);
      const confidence = settings.measure === 'saturation'
        ? (prevHidden ? computeConfidence('saturation', { prevHidden, hidden: lastRow }) : 0)
        : computeConfidence(settings.measure, { logits });
      prevHidden = lastRow;
      state.times.sampling += now() - time;
      input = out.hidden;
      if (!prefill && confidence >= lambda) {
        // Skipped layers get K/V rows projected from this exit's hidden state.
        time = now();
        await stages.propagate.get(exitPoints[exitIndex])!.run(state.cache, out.hidden);
        state.times.draft += now() - time;
        break;
      }
    }
    const time = now();
    const token = state.picker.pick(logits, state.history.view());
    state.times.sampling += now() - time;
    yield { tokens: [token], fromDraft: [exitIndex < chunks.length - 1], exitLayers: [exitPoints[exitIndex]] };
    single[0] = token;
    pending = single;
  }
}
