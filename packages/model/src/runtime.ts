/**
 * ModelRuntime: one loaded model directory. Holds the config, the lazily-read checkpoint, the tokenizer
 * and a cache of compiled stages. Stage sessions are created on first use and reused; each session holds
 * its own copy of its layers' weights (ORT sessions cannot share initializers), so callers ask only for
 * the ranges they use: e.g. self-speculation uses [0, E) + [E, L), which together hold each layer once.
 * The stage cache is an LRU of `maxStages` sessions; all stages of a runtime share one run lock, so any
 * number of generators may share a runtime.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { CHECKPOINT_FILES, ConfigError, KvCache, MexitError, openCheckpoint, type TensorMap, formatValue } from '@mexit/core';
import { checkConfigAgainstCheckpoint, loadModelConfig, type ModelConfig } from './config.js';
import { WeightSource, type Architecture } from './arch/common.js';
import { llamaArchitecture } from './arch/llama.js';
import { gpt2Architecture } from './arch/gpt2.js';
import { gptNeoArchitecture } from './arch/gpt-neo.js';
import { availableExits, validateExit, type ExitSpec } from './exits.js';
import { buildStageGraph, RunLock, SessionStage, stageKey, validateStageSpec, type Stage, type StageSpec } from './stages.js';
import { LayeredStage, type LayerParts } from './layered.js';
import { QuantizedBlockCache } from './quantized-cache.js';
import type { LinearQuantization } from './onnx/builder.js';
import { MexitTokenizer } from './tokenizer.js';
import { looksLikeHubId, resolveModelSource } from './hub.js';

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
  /**
   * Precision of every linear layer and LM head, in every stage: 'f32' (default; the checkpoint's values
   * widened exactly), or 'int8' / 'int4' (MatMulNBits, symmetric blocks of 32 with an F32 scale, int8
   * activations), which read 4× / 8× fewer bytes per token. All modes then run on the same quantized weights,
   * so self-speculation stays token-identical to plain decoding *of that model*. Embedding lookups and norms
   * stay F32. With `cacheDir`, the quantized blocks are made once and read back by later loads.
   */
  weights?: WeightPrecision;
  /**
   * How stages map to ORT sessions. 'fused': one session per stage (fewest calls: best for small models).
   * 'layered': one session per layer and per distinct exit head, shared by every stage, and the token
   * embedding read per token from the checkpoint, so each weight is held once whatever stages the modes use
   * and loads peak at one layer's build (see layered.ts). Default 'auto': layered from LAYERED_MIN_BYTES of
   * F32 weights.
   */
  layout?: 'auto' | 'fused' | 'layered';
  /**
   * Most compiled stages (ORT sessions, each with its own copy of its layers' weights) kept at once. Default
   * defaultMaxStages(L) = max(16, 2·L + 8): room for CALM's per-exit chunk and propagation stages plus the
   * other modes', so an evaluation that visits every mode does not rebuild them.
   * Past it, the least recently requested stage is evicted and its session released as soon as no call is
   * running on it, so trying many (exit layer, draft length, quantization) settings on one runtime keeps memory
   * bounded; a stage requested again is rebuilt (same weights, same logits). Stages held by a running
   * generation (see `holdStages`) are never evicted, so while such generations run the count may exceed the
   * bound. A Stage object kept past its eviction rejects calls with MexitError 'STAGE_EVICTED'.
   */
  maxStages?: number;
  /**
   * Called, synchronously, as the model loads and as each stage builds (see ProgressInfo). An exception it throws
   * fails that load or build.
   */
  onProgress?: ProgressCallback;
}

/**
 * Progress of loading a model and building its stages, shaped like transformers.js's `progress_callback` argument.
 * load() reports each file it reads ('initiate' → 'done', with `file`), then 'ready'. Stages are built later, on
 * first use, each reported as 'initiate' → 'progress' (graph built: its weights are read) → 'done' (session
 * created), with `stage`.
 */
export interface ProgressInfo {
  /** 'download': load() of a hub id fetching a file the cache lacks (`file`, `loaded` of `total` bytes; name: the id). */
  status: 'initiate' | 'progress' | 'done' | 'ready' | 'download';
  /** The model: the directory given to ModelRuntime.load. */
  name: string;
  /** File events: the file read, in that directory ('config.json', 'model.safetensors', 'tokenizer.json'). */
  file?: string;
  /** Stage events: the stage's key, e.g. 'layers[0,3)+exit3'. */
  stage?: string;
  /** Stage 'progress': percent of the build's steps done, `loaded` of `total` (graph, then session). */
  progress?: number;
  loaded?: number;
  total?: number;
  /** ms since the matching 'initiate' ('progress', 'done'), or since the load began ('ready'). */
  elapsedMs?: number;
}

export type ProgressCallback = (info: ProgressInfo) => void;

export type WeightPrecision = 'f32' | LinearQuantization;

/** 'auto' layout: models with at least this many bytes of F32 weights run layered (256 MiB). */
export const LAYERED_MIN_BYTES = 256 * 2 ** 20;

/** RuntimeOptions with the defaults filled in. */
export type ResolvedRuntimeOptions = Required<Omit<RuntimeOptions, 'cacheDir' | 'onProgress'>> &
  Pick<RuntimeOptions, 'cacheDir' | 'onProgress'>;

export const DEFAULT_MAX_STAGES = 16;

/** The default stage bound for an L-layer model (see RuntimeOptions.maxStages). */
export function defaultMaxStages(numLayers: number): number {
  return Math.max(DEFAULT_MAX_STAGES, 2 * numLayers + 8);
}

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

/** A cached stage: `holds` counts the running generations that use it (never evicted while > 0). */
interface StageEntry {
  stage: Promise<Stage>;
  holds: number;
}

/** The stages requested inside one holdStages() build; `open` until the build returns. */
interface HoldScope {
  entries: StageEntry[];
  open: boolean;
}

export class ModelRuntime {
  /** The stage LRU: Map order is request order, least recent first. */
  private readonly stages = new Map<string, StageEntry>();
  /** Evicted stages whose session is not released yet (a call was still running). */
  private readonly retiring = new Set<Promise<void>>();
  /** Serialises every stage call of this runtime (stages reuse their feeds; see Stage). */
  private readonly runLock = new RunLock();
  private readonly holdScope = new AsyncLocalStorage<HoldScope>();
  private disposing: Promise<void> | null = null;
  private readonly arch: Architecture;
  private readonly weights: WeightSource;
  /** The quantized-weight cache under `options.cacheDir` (null without one); its counters tell hits from misses. */
  readonly quantizedCache: QuantizedBlockCache | null;
  /** True when stages are compositions of per-layer sessions (RuntimeOptions.layout). */
  readonly layered: boolean;
  /** Layered layout: the per-layer and per-head sessions, built one at a time, kept until dispose. */
  private readonly parts = new Map<string, Promise<Stage>>();
  private partBuilds: Promise<unknown> = Promise.resolve();
  private readonly layerParts: LayerParts;

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
    this.layered = options.layout === 'layered' || (options.layout === 'auto' && checkpointBytes(tensors) >= LAYERED_MIN_BYTES);
    const { tokens, positions } = this.arch.embeddingTables;
    const d = config.hiddenSize;
    let positionRows = new Float32Array(0);
    const positionIndex: number[] = [];
    this.layerParts = {
      layer: (l, quantize, propagate) =>
        this.part({ from: l, to: l + 1, ...(propagate ? { propagate } : { hiddenInput: l === 0 }), ...(quantize ? { quantize } : {}) }),
      // A shared head reads no layer-specific weight: one session serves exits at every layer.
      head: (exit, quantize) => {
        const layer = (exit.head ?? 'shared') === 'shared' ? config.numLayers : exit.layer;
        return this.part({ from: layer, to: layer, exits: [{ ...exit, layer }], ...(quantize ? { quantize } : {}) });
      },
      embed: (ids, first, out) => {
        tensors.getRowsF32(tokens, ids, out);
        if (!positions) return;
        if (positionRows.length < ids.length * d) positionRows = new Float32Array(ids.length * d);
        positionIndex.length = ids.length;
        for (let i = 0; i < ids.length; i++) positionIndex[i] = first + i;
        tensors.getRowsF32(positions, positionIndex, positionRows);
        for (let i = 0; i < ids.length * d; i++) out[i] += positionRows[i];
      },
    };
  }

  /**
   * Loads config, tokenizer and checkpoint index from `dir` and validates every tensor's presence and
   * shape (no weights are read until a stage is built).
   */
  static async load(dir: string, options: RuntimeOptions = {}): Promise<ModelRuntime> {
    if (!existsSync(dir) && looksLikeHubId(dir)) {
      // org/name[@revision]: its snapshot in the Hugging Face cache, downloaded first when missing (HF_* variables apply)
      const name = dir;
      dir = await resolveModelSource(name, { onProgress: (event) => options.onProgress?.({ ...event, name }) });
    }
    if (!existsSync(dir)) throw new ConfigError('MODEL_DIR_MISSING', `model directory not found: ${dir}`);
    const progress = loadProgress(dir, options.onProgress);
    const config = progress.file('config.json', () => loadModelConfig(dir));
    const weights = CHECKPOINT_FILES.find((f) => existsSync(join(dir, f))) ?? CHECKPOINT_FILES[0];
    const tensors = progress.file(weights, () => openCheckpoint(dir));
    const tokenizer = existsSync(join(dir, 'tokenizer.json')) ? progress.file('tokenizer.json', () => MexitTokenizer.load(dir)) : null;
    checkConfigAgainstCheckpoint(dir, config, tensors, tokenizer);
    const threads = options.threads ?? defaultThreads(checkpointBytes(tensors));
    if (!Number.isInteger(threads) || threads < 1)
      throw new ConfigError('RUNTIME_OPTIONS', `threads must be a positive integer, got ${threads}`);
    const maxStages = options.maxStages ?? defaultMaxStages(config.numLayers);
    if (!Number.isInteger(maxStages) || maxStages < 1)
      throw new ConfigError('RUNTIME_OPTIONS', `maxStages must be a positive integer, got ${String(maxStages)}`);
    const { cacheDir, weights: precision = 'f32', layout = 'auto' } = options;
    if (precision !== 'f32' && precision !== 'int8' && precision !== 'int4') {
      throw new ConfigError('RUNTIME_OPTIONS', `weights must be 'f32', 'int8' or 'int4', got ${formatValue(precision, 100, 'js')}`);
    }
    if (layout !== 'auto' && layout !== 'fused' && layout !== 'layered') {
      throw new ConfigError('RUNTIME_OPTIONS', `layout must be 'auto', 'fused' or 'layered', got ${formatValue(layout, 100, 'js')}`);
    }
    if (cacheDir !== undefined && (typeof cacheDir !== 'string' || cacheDir === '')) {
      throw new ConfigError('RUNTIME_OPTIONS', `cacheDir must be a non-empty path, got ${formatValue(cacheDir, 100, 'js')}`);
    }
    const runtime = new ModelRuntime(dir, config, tensors, tokenizer, {
      threads,
      spinning: options.spinning ?? true,
      prepacking: options.prepacking ?? true,
      maxStages,
      weights: precision,
      layout,
      ...(cacheDir === undefined ? {} : { cacheDir }),
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    });
    for (const t of runtime.arch.requiredTensors()) runtime.weights.check(t.name, t.shape);
    try {
      progress.ready();
    } catch (error) {
      await runtime.dispose(); // the caller never gets it
      throw error;
    }
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

  /** true once dispose() was called: stage requests and calls then reject with MexitError 'DISPOSED'. */
  get disposed(): boolean {
    return this.disposing !== null;
  }

  /** Sessions alive now: cached stages (built or building) plus evicted ones still finishing a call. */
  get liveStages(): number {
    return this.stages.size + this.retiring.size;
  }

  /**
   * The compiled stage for `spec`, built on first request and kept in the LRU (RuntimeOptions.maxStages).
   * Inside a holdStages() build the stage is also held until that hold is released.
   */
  stage(spec: StageSpec): Promise<Stage> {
    if (this.disposing) throw disposedError();
    validateStageSpec(this.config, spec);
    for (const e of spec.exits ?? []) this.validateExit(e);
    // RuntimeOptions.weights: stages that do not ask for a precision run at the model's.
    if (spec.quantize === undefined && this.options.weights !== 'f32') spec = { ...spec, quantize: this.options.weights };
    const key = stageKey(spec);
    let entry = this.stages.get(key);
    if (entry) {
      this.stages.delete(key); // re-inserted below as the most recent
    } else {
      const created: StageEntry = {
        stage: this.layered ? LayeredStage.create(spec, this.config, this.layerParts) : this.buildStage(spec),
        holds: 0,
      };
      created.stage.catch(() => {
        if (this.stages.get(key) === created) this.stages.delete(key);
      });
      entry = created;
    }
    this.stages.set(key, entry);
    const scope = this.holdScope.getStore();
    if (scope?.open && !scope.entries.includes(entry)) {
      scope.entries.push(entry);
      entry.holds++;
    }
    this.evict(entry);
    return entry.stage;
  }

  /**
   * Runs `build` and holds every stage it requests, directly or through drafters, verifiers and the like,
   * until `release()`: held stages are never evicted, so a generation's Stage objects stay valid while it runs.
   * If `build` throws, its stages are released at once.
   */
  async holdStages<T>(build: () => Promise<T>): Promise<{ value: T; release: () => void }> {
    const scope: HoldScope = { entries: [], open: true };
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      for (const entry of scope.entries) entry.holds--;
      this.evict();
    };
    try {
      const value = await this.holdScope.run(scope, build);
      return { value, release };
    } catch (error) {
      release();
      throw error;
    } finally {
      scope.open = false;
    }
  }

  /** Evicts the least recently requested unheld stages (never `keep`) while more than maxStages are cached. */
  private evict(keep?: StageEntry): void {
    if (this.disposing) return;
    for (const [key, entry] of this.stages) {
      if (this.stages.size <= this.options.maxStages) return;
      if (entry.holds > 0 || entry === keep) continue;
      this.stages.delete(key);
      const done = entry.stage.then(
        (stage) => stage.release('STAGE_EVICTED', `evicted from the stage cache (maxStages ${this.options.maxStages}); request it again`),
        () => undefined,
      );
      this.retiring.add(done);
      void done.finally(() => this.retiring.delete(done));
    }
  }

  /** A layered-layout part: built once, after the parts requested before it (one build at a time). */
  private part(spec: StageSpec): Promise<Stage> {
    if (this.disposing) return Promise.reject(disposedError());
    const key = stageKey(spec);
    let part = this.parts.get(key);
    if (!part) {
      part = this.partBuilds.then(() => (this.disposing ? Promise.reject(disposedError()) : this.buildStage(spec)));
      this.partBuilds = part.catch(() => undefined);
      const built = part;
      built.catch(() => {
        if (this.parts.get(key) === built) this.parts.delete(key); // a failed build is retried on the next request
      });
      this.parts.set(key, part);
    }
    return part;
  }

  private async buildStage(spec: StageSpec): Promise<Stage> {
    const t0 = performance.now();
    const emit = (info: Omit<ProgressInfo, 'name' | 'stage'>) =>
      this.options.onProgress?.({ ...info, name: this.dir, stage: stageKey(spec) });
    emit({ status: 'initiate' });
    const { bytes, weightBytes, externalData } = buildStageGraph(
      this.config,
      this.arch,
      this.weights,
      spec,
      this.quantizedCache?.quantizer,
    );
    emit({ status: 'progress', progress: 50, loaded: 1, total: 2, elapsedMs: performance.now() - t0 });
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
    const stage = new SessionStage(spec, session, this.config, weightBytes, performance.now() - t0, this.runLock);
    try {
      emit({ status: 'done', elapsedMs: stage.buildMs });
    } catch (error) {
      await stage.release('STAGE_BUILD', 'its progress callback failed'); // the cache drops the failed build
      throw error;
    }
    return stage;
  }

  /**
   * Stages in the stage cache now (for timing and memory reports); in the layered layout also the parts,
   * which hold the weights (the stages made of them report 0 weight bytes).
   */
  async builtStages(): Promise<Stage[]> {
    const stages: Promise<Stage>[] = [...this.parts.values()];
    for (const entry of this.stages.values()) stages.push(entry.stage);
    return Promise.all(stages);
  }

  /** Total bytes of the checkpoint's float weights as F32. */
  weightBytes(): number {
    return checkpointBytes(this.tensors);
  }

  /**
   * Releases every session and closes the checkpoint. Calls already running on a stage finish first; later
   * stage requests and calls, and generations still running, reject with MexitError 'DISPOSED'. Idempotent.
   */
  dispose(): Promise<void> {
    if (!this.disposing) this.disposing = this.releaseAll();
    return this.disposing;
  }

  private async releaseAll(): Promise<void> {
    const entries: Promise<Stage>[] = [...this.parts.values()];
    for (const entry of this.stages.values()) entries.push(entry.stage);
    this.stages.clear();
    this.parts.clear();
    const releases: Promise<void>[] = [...this.retiring];
    for (const s of await Promise.allSettled(entries)) {
      if (s.status === 'fulfilled') releases.push(s.value.release('DISPOSED', 'the runtime was disposed'));
    }
    await Promise.all(releases);
    this.tensors.close();
  }
}

/** load()'s progress: one 'initiate' → 'done' pair per file read, then 'ready'. */
function loadProgress(name: string, onProgress: ProgressCallback | undefined) {
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw new ConfigError('RUNTIME_OPTIONS', `onProgress must be a function, got ${formatValue(onProgress, 100, 'js')}`);
  }
  const emit = onProgress ?? (() => undefined);
  const t0 = performance.now();
  return {
    file<T>(file: string, read: () => T): T {
      const t = performance.now();
      emit({ status: 'initiate', name, file });
      const value = read();
      emit({ status: 'done', name, file, elapsedMs: performance.now() - t });
      return value;
    },
    ready: () => emit({ status: 'ready', name, elapsedMs: performance.now() - t0 }),
  };
}

function disposedError(): MexitError {
  return new MexitError('DISPOSED', 'the model runtime was disposed');
}
