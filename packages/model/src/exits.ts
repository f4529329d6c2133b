/**
 * Exit heads: how logits are read off the residual stream after block l (1-based, "output of block l").
 * - shared: final norm + the model's own LM head (LayerSkip, logit lens). {layer: L, head: 'shared'} is
 *   the ordinary full model ('original').
 * - layer-specific: final norm + `name_to_lm_exit_head.lm_head_<l>.weight` (IBM multi-exit checkpoints).
 * - cast: final norm, then `name_to_conv_matrix.<l>_to_<L>.weight`, then the LM head (Din et al.).
 */
import { OptionsError, type TensorMap } from '@mexit/core';
import type { ModelConfig } from './config.js';
import type { Architecture, StageContext } from './arch/common.js';

export type ExitHeadKind = 'shared' | 'layer-specific' | 'cast';

export interface ExitSpec {
  /** 1-based block index whose output is read (1..numLayers). */
  layer: number;
  /** Default 'shared'. */
  head?: ExitHeadKind;
}

export const exitHeadWeight = (layer: number) => `name_to_lm_exit_head.lm_head_${layer}.weight`;
export const castWeight = (layer: number, numLayers: number) => `name_to_conv_matrix.${layer}_to_${numLayers}.weight`;

export function exitKey(spec: ExitSpec): string {
  return `${spec.head ?? 'shared'}@${spec.layer}`;
}

/** Layers that have a layer-specific head / a cast matrix in this checkpoint. */
export function availableExits(cfg: ModelConfig, tensors: TensorMap): { layerSpecific: number[]; cast: number[] } {
  const layerSpecific: number[] = [];
  const cast: number[] = [];
  for (let l = 1; l <= cfg.numLayers; l++) {
    if (tensors.has(exitHeadWeight(l))) layerSpecific.push(l);
    if (tensors.has(castWeight(l, cfg.numLayers))) cast.push(l);
  }
  return { layerSpecific, cast };
}

/** Throws an OptionsError naming the valid choices when `spec` is not an exit of this checkpoint. */
export function validateExit(cfg: ModelConfig, tensors: TensorMap, spec: ExitSpec): void {
  const head = spec.head ?? 'shared';
  if (!Number.isInteger(spec.layer) || spec.layer < 1 || spec.layer > cfg.numLayers) {
    throw new OptionsError('EXIT_LAYER_RANGE', `exit layer ${spec.layer} is out of range: valid layers are 1..${cfg.numLayers}`);
  }
  if (head === 'shared') return;
  const avail = availableExits(cfg, tensors);
  const list = head === 'layer-specific' ? avail.layerSpecific : avail.cast;
  if (head !== 'layer-specific' && head !== 'cast') {
    throw new OptionsError('EXIT_HEAD_KIND', `unknown exit head kind "${head}"; valid: shared, layer-specific, cast`);
  }
  if (!list.includes(spec.layer)) {
    throw new OptionsError(
      'EXIT_NOT_IN_CHECKPOINT',
      `the checkpoint has no ${head} exit at layer ${spec.layer}; available ${head} exits: ${list.length ? list.join(', ') : 'none'}`,
    );
  }
}

/** Logits [m, vocab] of exit `spec` for raw residual rows `hidden` [m, d]. */
export function buildExit(ctx: StageContext, arch: Architecture, spec: ExitSpec, hidden: string): string {
  const { g, w, cfg } = ctx;
  const d = cfg.hiddenSize;
  const normed = arch.finalNorm(ctx, hidden);
  switch (spec.head ?? 'shared') {
    case 'shared':
      return arch.lmHead(ctx, normed);
    case 'layer-specific':
      return g.linearT(normed, w.add(g, exitHeadWeight(spec.layer), [cfg.vocabSize, d]));
    case 'cast':
      return arch.lmHead(ctx, g.linearT(normed, w.add(g, castWeight(spec.layer, cfg.numLayers), [d, d])));
  }
}
