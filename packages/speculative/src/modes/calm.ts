/**
 * CALM adaptive exit: per token, run layers in chunks (exit points minExitLayer, +interval, …, L) and stop
 * at the first exit whose confidence passes the decaying threshold λ_t. The skipped layers still get
 * K/V rows for later tokens, projected from the exit hidden state ("state propagation"). Lossy by design.
 * The prompt runs through every layer (its K/V is needed in full), but the first new token, read off the
 * last prompt row, takes the first confident exit like every later token.
 */
import { OptionsError } from '@mexit/core';
import type { ExitHeadKind, ModelRuntime, Stage } from '@mexit/model';
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

/**
 * CALM's exit points: the layers minExitLayer, minExitLayer + interval, … below L that have an exit of kind
 * `exitHead` in this checkpoint, then L (the model's own head). Shared exits exist at every layer; with
 * 'layer-specific' or 'cast' heads only the layers that have one are used, and OptionsError
 * EXIT_NOT_IN_CHECKPOINT (naming the available ones) is thrown when the schedule hits none of them.
 */
export function calmExitPoints(
  runtime: ModelRuntime,
  minExitLayer: number,
  exitInterval: number,
  exitHead: ExitHeadKind = 'shared',
): number[] {
  const L = runtime.numLayers;
  const available =
    exitHead === 'shared' ? null : exitHead === 'layer-specific' ? runtime.availableExits().layerSpecific : runtime.availableExits().cast;
  const points: number[] = [];
  for (let l = minExitLayer; l < L; l += exitInterval) if (!available || available.includes(l)) points.push(l);
  if (available && points.length === 0 && minExitLayer < L) {
    const below = available.filter((l) => l < L);
    throw new OptionsError(
      'EXIT_NOT_IN_CHECKPOINT',
      `CALM exit points ${minExitLayer}, ${minExitLayer + exitInterval}, … below layer ${L} include no ${exitHead} exit of this checkpoint; available ${exitHead} exits: ${below.length ? below.join(', ') : 'none'}`,
    );
  }
  points.push(L);
  return points;
}

/** Exit points (1-based layers) and the chunk stages between them, plus propagate stages per exit. */
export class CalmStages {
  private constructor(
    readonly exitPoints: number[],
    readonly chunks: Stage[],
    readonly propagate: Map<number, Stage>,
  ) {}

  static async create(runtime: ModelRuntime, minExitLayer: number, exitInterval: number, exitHead: ExitHeadKind): Promise<CalmStages> {
    const L = runtime.numLayers;
    const exitPoints = calmExitPoints(runtime, minExitLayer, exitInterval, exitHead);
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

/** The CALM decode loop: one token per block, with the layer it exited at in `exitLayers`. */
export async function* calm(
  state: DecodeState,
  stages: CalmStages,
  settings: CalmSettings,
  hiddenSize: number,
): AsyncGenerator<TokenBlock> {
  const { exitPoints, chunks } = stages;
  const last = chunks.length - 1;
  let pending = state.prompt;
  const single = [0];
  for (let t = 0; ; t++) {
    const lambda = calmThreshold(settings.threshold, t, settings.maxNewTokens, settings.decay);
    const prefill = pending.length > 1;
    let input: number[] | Float32Array = pending;
    let prevHidden: Float32Array | undefined;
    let logits: Float32Array | undefined;
    let exitIndex = -1;
    for (let i = 0; i <= last; i++) {
      let time = now();
      const out = await chunks[i].run(state.cache, input, input.length / (i === 0 ? 1 : hiddenSize) - 1);
      state.times.forward += now() - time;
      input = out.hidden;
      if (i === last) {
        if (exitIndex < 0) {
          exitIndex = last;
          logits = out.logits[0];
        }
        break;
      }
      if (exitIndex >= 0) continue; // prefill after the exit: finishing the prompt's K/V only
      time = now();
      const lastRow = out.hidden.subarray(out.hidden.length - hiddenSize);
      const confidence =
        settings.measure === 'saturation'
          ? prevHidden
            ? computeConfidence('saturation', { prevHidden, hidden: lastRow })
            : 0
          : computeConfidence(settings.measure, { logits: out.logits[0] });
      prevHidden = lastRow;
      state.times.sampling += now() - time;
      if (confidence >= lambda) {
        exitIndex = i;
        logits = out.logits[0];
        if (prefill) continue; // every prompt row still needs every layer's K/V
        // Skipped layers get K/V rows projected from this exit's hidden state.
        time = now();
        await stages.propagate.get(exitPoints[i])!.run(state.cache, out.hidden);
        state.times.propagate += now() - time;
        break;
      }
    }
    const time = now();
    const token = state.picker.pick(logits!, state.history.view());
    state.times.sampling += now() - time;
    yield { tokens: [token], fromDraft: [exitIndex < last], exitLayers: [exitPoints[exitIndex]] };
    single[0] = token;
    pending = single;
  }
}
