/**
 * Load and build progress of a command, on stderr. On a terminal, and without --json, one status line rewritten
 * in place (`loading model: tokenizer.json…`, `building stage 2: layers[0,3)+exit3…`) and erased once the work is
 * done, so it never mixes with the output. With --verbose or MEXIT_LOG=debug: one line per load and per stage
 * build, and one with the session count, wherever stderr goes.
 */
import { ModelRuntime, stageKey, type ProgressInfo, type RuntimeOptions } from '@mexit/model';
import type { CliIo } from './render.js';

/** Carriage return + erase to the end of the line: the status line is redrawn over itself. */
const ERASE = '\r\x1b[K';

const ms = (x: number | undefined) => `${Math.round(x ?? 0)} ms`;

export class ProgressReporter {
  private shown = false;
  private built = 0;
  /** Stages building now → their status text (two may build at once). */
  private readonly building = new Map<string, string>();
  private readonly graphMs = new Map<string, number>();
  private readonly files: string[] = [];

  constructor(
    private readonly io: CliIo,
    /** Show the in-place status line. */
    readonly live: boolean,
    readonly verbose: boolean,
  ) {}

  /** The status line on a terminal without --json; debug lines with --verbose or MEXIT_LOG=debug. */
  static for(io: CliIo, json: boolean, verbose: boolean): ProgressReporter {
    const env = io.env ?? process.env;
    return new ProgressReporter(io, !json && io.stderrIsTTY === true, verbose || env.MEXIT_LOG === 'debug');
  }

  /** ModelRuntime.load reporting here; the status line is erased when it fails, before the error is printed. */
  async load(dir: string, options: RuntimeOptions): Promise<ModelRuntime> {
    try {
      return await ModelRuntime.load(dir, { ...options, onProgress: this.onProgress });
    } catch (error) {
      this.clear();
      throw error;
    }
  }

  readonly onProgress = (info: ProgressInfo): void => {
    const { stage } = info;
    if (stage === undefined) {
      if (info.status === 'download') {
        const total = info.total ?? 0;
        const percent = total > 0 ? Math.floor((100 * (info.loaded ?? 0)) / total) : 0;
        this.status(`downloading ${info.name}: ${info.file} ${percent}% of ${(total / 2 ** 20).toFixed(1)} MiB…`);
      } else if (info.status === 'initiate') this.status(`loading model: ${info.file}…`);
      else if (info.status === 'done') this.files.push(`${info.file} ${ms(info.elapsedMs)}`);
      else if (info.status === 'ready') {
        this.clear();
        this.debug(`loaded ${info.name} in ${ms(info.elapsedMs)} (${this.files.join(', ')})`);
      }
      return;
    }
    if (info.status === 'initiate') {
      this.building.set(stage, `building stage ${++this.built}: ${stage}`);
      this.status(`${this.building.get(stage)}…`);
    } else if (info.status === 'progress') {
      this.graphMs.set(stage, info.elapsedMs ?? 0);
      this.status(`${this.building.get(stage)}, creating its session…`);
    } else if (info.status === 'done') {
      this.building.delete(stage);
      const graph = this.graphMs.get(stage) ?? 0;
      this.debug(`built stage ${stage} in ${ms(info.elapsedMs)} (graph ${ms(graph)}, session ${ms((info.elapsedMs ?? 0) - graph)})`);
      const next = [...this.building.values()].pop();
      if (next) this.status(`${next}…`);
      else this.clear();
    }
  };

  /** A line of its own on stderr (the status line is erased first). */
  line(text: string): void {
    this.clear();
    this.io.stderr.write(`${text}\n`);
  }

  /** Debug only: the sessions the runtime holds now (each has its own copy of its layers' weights). */
  async sessions(runtime: ModelRuntime): Promise<void> {
    if (!this.verbose) return;
    const stages = await runtime.builtStages();
    const mib = stages.reduce((sum, s) => sum + s.weightBytes, 0) / 2 ** 20;
    const keys = stages.map((s) => stageKey(s.spec)).join(', ');
    this.debug(`${runtime.liveStages} session${runtime.liveStages === 1 ? '' : 's'}, ${mib.toFixed(1)} MiB of weights: ${keys}`);
  }

  /** Erases the status line, if one is shown. */
  clear(): void {
    if (!this.shown) return;
    this.io.stderr.write(ERASE);
    this.shown = false;
  }

  private status(text: string): void {
    if (!this.live) return;
    this.io.stderr.write(ERASE + text);
    this.shown = true;
  }

  private debug(text: string): void {
    if (this.verbose) this.line(`mexit: ${text}`);
  }
}
