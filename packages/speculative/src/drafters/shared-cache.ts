/**
 * LayerSkip's drafter: the model's exact layers [0, E) and an exit head draft on the generation's own KV
 * cache, so the verifier starts at layer E from the drafts' exit hidden states and no early layer runs twice.
 */
import type { ModelRuntime } from '@mexit/model';
import { RowBuffer, type DecodeState } from '../state.js';
import type { Draft, Drafter } from './drafter.js';
import { ExitPasses, type ExitPassesSpec } from './exit-passes.js';

export class SharedCacheDrafter implements Drafter {
  readonly verifyFrom: number;
  private readonly hiddens: RowBuffer;
  private readonly tokens: number[] = [];

  private constructor(
    private readonly passes: ExitPasses,
    private readonly doSample: boolean,
    exitLayer: number,
    hiddenSize: number,
  ) {
    this.verifyFrom = exitLayer;
    this.hiddens = new RowBuffer(hiddenSize);
  }

  static async create(runtime: ModelRuntime, spec: Omit<ExitPassesSpec, 'quantize'>, doSample: boolean): Promise<SharedCacheDrafter> {
    return new SharedCacheDrafter(await ExitPasses.create(runtime, spec), doSample, spec.exitLayer, runtime.config.hiddenSize);
  }

  async draft(state: DecodeState, pending: readonly number[], n: number): Promise<Draft> {
    this.hiddens.reset();
    const { fed, chainHidden } = await this.passes.run(state, state.cache, pending, n, this.tokens, this.hiddens);
    return {
      tokens: this.tokens,
      probs: this.doSample ? this.passes.probs.list : undefined,
      fed,
      verifyInput: chainHidden ?? this.hiddens.view(),
    };
  }

  /** Nothing of its own to forget: the round truncates the shared cache. */
  rollback(): void {}

  dispose(): void {}
}
