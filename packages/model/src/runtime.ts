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
import { QuantizedBlockCache } from './quantized-cache.js';
import { MexitTokenizer } from './tokenizer.js';

export interface RuntimeOptions {
  /**
   * Intra-op threads per session. Default: one per 16 MiB of F32 weights, at least 1 and at most the core
   * count (a thread hand-off costs more than it saves on tiny matmuls). Bundled model (36 MiB → 2 threads on
   * 2 cores): 1.58 ms per decode step vs 2.16 ms with 1 thread.
   */
  threads?: number;
  /**
   * Let ORT worker threads spin while a run is in progress (default true). Spinning always stops when a run
   * returns (`session.force_spinning_stop`): every session owns a thread pool, and pools left spinning between
   * runs steal the cores from the session that runs next (self-spec fell to 0.5× of ar that way).
   */
  spinning?: boolean;
  /** Pre-pack weights at session creation (faster matmuls, slower start). Default true. */
  prepacking?: boolean;
  /**
   * Directory for the on-disk cache of quantized draft weights (`StageSpec.quantize`), created on first
   * write. Default: none, every int8 / int4 stage quantizes its weights in JS at build time (seconds at 1B
   * parameters). With a directory, each weight's blocks are stored under `<cacheDir>/quantized/` as
   * MessagePack, keyed by the checkpoint file's path, size and mtime, the tensor name(s), shape and bits, and
   * read back by later builds, in this process or another. A stored file is used only when it passes its
   * length and checksum checks; anything else (missing, truncated, stale) is recomputed and rewritten. The
   * stage's weights are the same either way, bit for bit. Files are never deleted: clear the directory to
   * reclaim space.
   */
  cacheDir?: string;
}

/** RuntimeOptions with the defaults filled in. */
export type ResolvedRuntimeOptions = Required<Omit<RuntimeOptions, 'cacheDir'>> & Pick<RuntimeOptions, 'cacheDir'>;

/** F32 weight bytes per default intra-op thread. */
const BYTES_PER_THREAD = 16 * 2 ** 20;

/** The default thread count for a model of `weightBytes` F32 weights on `cores` cores. */
export function defaultThreads(weightBytes: number, cores = availableParallelism()): number {
  return Math.max(1, Math.min(cores, Math.floor(weightBytes / BYTES_PER_THREAD)));
}

/** Bytes of all tensors as F32. */
function checkpointBytes(tensors: TensorMap): number {
  let total = 0;
  for (const name of tensors.names) total += tensors.info(name).shape.reduce((a, b) => a * b, 1) * 4;
  return total;
}

function createArchitecture(cfg: ModelConfig, w: WeightSource): Architecture {
  switch (cfg.modelType) {
    case 'llama':
      return llamaArchitecture(cfg, w);
    case 'gpt2':
      return gpt2Architecture(cfg, w);
    case 'gpt_neo':
      return gptNeoArchitecture(cfg, w);
  }
}

export class ModelRuntime {
  private readonly stages = new Map<string, Promise<Stage>>();
  private readonly arch: Architecture;
  private readonly weights: WeightSource;
  /** The quantized-weight cache under `options.cacheDir` (null without one); its counters tell hits from misses. */
  readonly quantizedCache: QuantizedBlockCache | null;

  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly tensors: TensorMap,
    readonly tokenizer: MexitTokenizer | null,
    readonly options: ResolvedRuntimeOptions,
  ) {
    this.weights = new WeightSource(tensors, dir);
    this.arch = createArchitecture(config, this.weights);
    this.quantizedCache = options.cacheDir === undefined ? null : new QuantizedBlockCache(options.cacheDir, tensors);
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
    const threads = options.threads ?? defaultThreads(checkpointBytes(tensors));
    if (!Number.isInteger(threads) || threads < 1)
      throw new ConfigError('RUNTIME_OPTIONS', `threads must be a positive integer, got ${threads}`);
    const { cacheDir } = options;
    if (cacheDir !== undefined && (typeof cacheDir !== 'string' || cacheDir === '')) {
      throw new ConfigError('RUNTIME_OPTIONS', `cacheDir must be a non-empty path, got ${JSON.stringify(cacheDir)}`);
    }
    const runtime = new ModelRuntime(dir, config, tensors, tokenizer, {
      threads,
      spinning: options.spinning ?? true,
      prepacking: options.prepacking ?? true,
      ...(cacheDir === undefined ? {} : { cacheDir }),
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
    return new KvCache({
      numLayers,
      kvHeads: numKvHeads,
      headDim,
      initialCapacity: Math.min(initialCapacity, maxPositions),
      maxCapacity: maxPositions,
    });
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
    const { bytes, weightBytes, externalData } = buildStageGraph(
      this.config,
      this.arch,
      this.weights,
      spec,
      this.quantizedCache?.quantizer,
    );
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
          force_spinning_stop: '1',
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
