/**
 * ModelRuntime: one loaded model directory. Holds the config, the lazily-read checkpoint, the tokenizer
 * and a cache of compiled stages. Stage sessions are created on first use and reused; each session holds
 * its own copy of its layers' weights (ORT sessions cannot share initializers), so callers ask only for
 * the ranges they use: e.g. self-speculation uses [0, E) + [E, L), which together hold each layer once.
 */
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import ort from 'onnxruntime-node';
import { ConfigError, KvCache, openCheckpoint, type TensorMap } from '@mexit/core';
import { loadModelConfig, type ModelConfig } from './config.js';
import { WeightSource, type Architecture } from './arch/common.js';
import { llamaArchitecture } from './arch/llama.js';
import { gpt2Architecture } from './arch/gpt2.js';
import { gptNeoArchitecture } from './arch/gpt-neo.js';
import { availableExits, validateExit, type ExitSpec } from './exits.js';
import { buildStageGraph, Stage, stageKey, validateStageSpec, type StageSpec } from './stages.js';
import { MexitTokenizer } from './tokenizer.js';

export interface RuntimeOptions {
  /**
   * Intra-op threads per session. Default: 1 for models under 256 MiB of F32 weights (thread hand-off costs
   * more than it saves at that size: measured on the bundled model), else all available cores.
   */
  threads?: number;
  /**
   * Let ORT worker threads spin between runs. Default false: every session owns a thread pool, and spinning
   * pools of idle sessions steal the cores from the running one. With one session (ar) spinning measured 2.0 vs
   * 3.1 ms per step, but self-spec (three sessions taking turns) fell to 0.4–0.6× of ar (bench/results).
   */
  spinning?: boolean;
  /** Pre-pack weights at session creation (faster matmuls, slower start). Default true. */
  prepacking?: boolean;
}

const SMALL_MODEL_BYTES = 256 * 2 ** 20;

/** Bytes of all tensors as F32. */
function checkpointBytes(tensors: TensorMap): number {
  let total = 0;
  for (const name of tensors.names) total += tensors.info(name).shape.reduce((a, b) => a * b, 1) * 4;
  return total;
}

function createArchitecture(cfg: ModelConfig, w: WeightSource): Architecture {
  switch (cfg.modelType) {
    case 'llama': return llamaArchitecture(cfg, w);
    case 'gpt2': return gpt2Architecture(cfg, w);
    case 'gpt_neo': return gptNeoArchitecture(cfg, w);
  }
}

export class ModelRuntime {
  private readonly stages = new Map<string, Promise<Stage>>();
  private readonly arch: Architecture;
  private readonly weights: WeightSource;

  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly tensors: TensorMap,
    readonly tokenizer: MexitTokenizer | null,
    readonly options: Required<RuntimeOptions>,
  ) {
    this.weights = new WeightSource(tensors, dir);
    this.arch = createArchitecture(config, this.weights);
  }

  /**
   * Loads config, tokenizer and checkpoint index from `dir` and validates every tensor's presence and
   * shape (no weights are read until a stage is built).
   */
  static async load(dir: string, options: RuntimeOptions = {}): Promise<ModelRuntime> {
    if (!existsSync(dir)) throw new ConfigError('MODEL_DIR_MISSING', `model directory not found: ${dir}`);
    const config = loadModelConfig(dir);
    const tensors = openCheckpoint(dir);
    const tokenizer = MexitTokenizer.load(dir);
    const threads = options.threads ?? (checkpointBytes(tensors) < SMALL_MODEL_BYTES ? 1 : availableParallelism());
    if (!Number.isInteger(threads) || threads < 1) throw new ConfigError('RUNTIME_OPTIONS', `threads must be a positive integer, got ${threads}`);
    const runtime = new ModelRuntime(dir, config, tensors, tokenizer, {
      threads,
      spinning: options.spinning ?? false,
      prepacking: options.prepacking ?? true,
    });
    for (const t of runtime.arch.requiredTensors()) runtime.weights.check(t.name, t.shape);
    return runtime;
  }

  get numLayers(): number {
    return this.config.numLayers;
  }

  /** Exits present in the checkpoint besides the shared head (usable at any layer). */
  availableExits(): { layerSpecific: number[]; cast: number[] } {
    return availableExits(this.config, this.tensors);
  }

  /** OptionsError if `spec` is not an exit of this checkpoint. */
  validateExit(spec: ExitSpec): void {
    validateExit(this.config, this.tensors, spec);
  }

  /** A fresh KV cache shaped for this model, bounded by its context length. */
  createCache(initialCapacity = 256): KvCache {
    const { numLayers, numKvHeads, headDim, maxPositions } = this.config;
    return new KvCache({ numLayers, kvHeads: numKvHeads, headDim, initialCapacity: Math.min(initialCapacity, maxPositions), maxCapacity: maxPositions });
  }

  /** The compiled stage for `spec`, built on first request. */
  stage(spec: StageSpec): Promise<Stage> {
    validateStageSpec(this.config, spec);
    for (const e of spec.exits ?? []) this.validateExit(e);
    const key = stageKey(spec);
    let stage = this.stages.get(key);
    if (!stage) {
      stage = this.buildStage(spec);
      this.stages.set(key, stage);
      stage.catch(() => this.stages.delete(key));
    }
    return stage;
  }

  private async buildStage(spec: StageSpec): Promise<Stage> {
    const t0 = performance.now();
    const { bytes, weightBytes, externalData } = buildStageGraph(this.config, this.arch, this.weights, spec);
    const session = await ort.InferenceSession.create(bytes, {
      externalData,
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: this.options.threads,
      interOpNumThreads: 1,
      enableCpuMemArena: true,
      enableMemPattern: true,
      extra: {
        session: {
          intra_op: { allow_spinning: this.options.spinning ? '1' : '0' },
          disable_prepacking: this.options.prepacking ? '0' : '1',
        },
      },
    });
    return new Stage(spec, session, this.config, weightBytes, performance.now() - t0);
  }

  /** Stages built so far (for timing and memory reports). */
  async builtStages(): Promise<Stage[]> {
    return Promise.all(this.stages.values());
  }

  /** Total bytes of the checkpoint's float weights as F32. */
  weightBytes(): number {
    return checkpointBytes(this.tensors);
  }

  async dispose(): Promise<void> {
    const stages = await Promise.allSettled(this.stages.values());
    this.stages.clear();
    for (const s of stages) if (s.status === 'fulfilled') await s.value.release();
    this.tensors.close();
  }
}
