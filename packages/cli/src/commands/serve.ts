/**
 * `mexit serve`: the model behind an OpenAI-compatible HTTP API (@mexit/server). Loads the model (a worker
 * thread by default), prints one `listening on` line when ready, and on SIGTERM / SIGINT closes gracefully
 * (in-flight requests finish within the grace period), disposes the model and exits 0.
 */
import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { startServer, type MexitServer } from '@mexit/server';
import { loadGenerator, type GenerateOptions } from '@mexit/speculative';
import { UsageError, intFlag, numberFlag, parseFlags, resolveModelDir, type FlagSpec } from '../args.js';
import { ProgressReporter } from '../progress.js';
import { commandUsage, type CliIo } from '../render.js';
import { GENERATE_FLAGS, generationOptions } from './generate.js';

const SERVING = 'Serving';
const DEFAULTS = 'Generation defaults (a request’s own fields and its "mexit" object override them)';
/** generate's flags that serve keeps as server-wide defaults (sampling and stop strings are per request in the API). */
const KEPT = new Set([
  'mode',
  'max-new-tokens',
  'exit-layer',
  'exit-head',
  'num-speculations',
  'drafter',
  'draft-threshold',
  'adaptive-draft',
  'draft-quantization',
  'no-bonus-token',
  'eos-ids',
]);
const RUNTIME_FLAGS = new Set(['model', 'threads', 'verbose']);

export const SERVE_FLAGS: readonly FlagSpec[] = [
  { group: SERVING, name: 'host', type: 'string', value: 'HOST', default: '127.0.0.1', help: 'address to listen on' },
  {
    group: SERVING,
    name: 'port',
    type: 'string',
    value: 'PORT',
    default: '8080',
    help: 'port (0: any free port, shown in the listening line)',
  },
  {
    group: SERVING,
    name: 'api-key',
    type: 'string',
    value: 'KEY',
    default: 'env MEXIT_API_KEY, else none',
    help: 'require Authorization: Bearer KEY on /v1/* and /metrics (/health and /ready stay open)',
  },
  {
    group: SERVING,
    name: 'model-id',
    type: 'string',
    value: 'NAME',
    default: 'the model directory name (tinystories-ee for the bundled one), or the hub id',
    help: 'the model name clients send',
  },
  { group: SERVING, name: 'parallel', type: 'string', value: 'N', default: 'the worker count (1)', help: 'generations run at once' },
  { group: SERVING, name: 'queue-depth', type: 'string', value: 'N', default: '16', help: 'requests waiting for a slot (more get 429)' },
  {
    group: SERVING,
    name: 'request-timeout',
    type: 'string',
    value: 'S',
    default: '300',
    help: 'seconds per request, queue wait included (504 past it)',
  },
  {
    group: SERVING,
    name: 'grace',
    type: 'string',
    value: 'S',
    default: '10',
    help: 'seconds in-flight requests get to finish on SIGTERM / SIGINT',
  },
  {
    group: SERVING,
    name: 'workers',
    type: 'string',
    value: 'N',
    default: '1',
    help: 'model worker threads, each with its own copy of the model',
  },
  { group: SERVING, name: 'in-process', type: 'boolean', help: 'run the model in the server thread instead of worker threads' },
  ...GENERATE_FLAGS.filter((f) => KEPT.has(f.name)).map((f) =>
    f.name === 'max-new-tokens'
      ? { ...f, group: DEFAULTS, help: 'max_tokens when a request gives none (capped by the context left)' }
      : { ...f, group: DEFAULTS },
  ),
  ...GENERATE_FLAGS.filter((f) => RUNTIME_FLAGS.has(f.name) || f.name === 'help'),
];

export const SERVE_SYNOPSIS = '[--model DIR|hub-id] [--host 127.0.0.1] [--port 8080] [--api-key KEY] [options]';
export const SERVE_DESCRIPTION =
  'Serve the model over an OpenAI-compatible HTTP API: POST /v1/completions and /v1/chat/completions (JSON or\n' +
  'stream: true), GET /v1/models; GET /health, /ready and /metrics (Prometheus). Prints\n' +
  '"mexit serve: listening on http://HOST:PORT (model NAME)" on stderr when ready. SIGTERM / SIGINT: stop\n' +
  'accepting, let in-flight requests finish (--grace), exit 0. Stateless per request: scale out as replicas\n' +
  'behind a load balancer that checks /ready.';

export function serveUsage(): string {
  return commandUsage('serve', SERVE_SYNOPSIS, SERVE_DESCRIPTION, SERVE_FLAGS);
}

export interface ServeRequest {
  modelDir: string;
  modelId: string;
  host: string;
  port: number;
  /** --api-key; runServe falls back to env MEXIT_API_KEY. */
  apiKey?: string;
  parallel: number;
  queueDepth: number;
  requestTimeoutMs: number;
  graceMs: number;
  workers?: number;
  inProcess: boolean;
  options: GenerateOptions;
  threads?: number;
  verbose: boolean;
}

/** Flags → ServeRequest; the generation defaults are read by generate's own rules (generationOptions). */
export function parseServeArgs(argv: string[]): ServeRequest | 'help' {
  const { values } = parseFlags('serve', argv, SERVE_FLAGS, false);
  if (values.help) return 'help';
  const str = (name: string) => values[name] as string | undefined;
  const positive = (flag: string, n: number | undefined, min: number) => {
    if (n !== undefined && !(n >= min)) throw new UsageError('INVALID_FLAG', `--${flag} must be ≥ ${min}, got ${n}`, 'serve');
    return n;
  };
  const port = positive('port', intFlag('port', str('port')), 0) ?? 8080;
  if (port > 65535) throw new UsageError('INVALID_FLAG', `--port must be at most 65535, got ${port}`, 'serve');
  const workers = positive('workers', intFlag('workers', str('workers')), 1);
  const inProcess = values['in-process'] === true;
  if (inProcess && workers !== undefined)
    throw new UsageError('CONTRADICTION', '--workers applies to worker threads, not --in-process', 'serve');
  const seconds = (flag: string, fallback: number) => Math.round((positive(flag, numberFlag(flag, str(flag)), 0) ?? fallback) * 1000);
  const apiKey = str('api-key');
  if (apiKey === '') throw new UsageError('INVALID_FLAG', '--api-key must not be empty', 'serve');
  return {
    modelDir: resolveModelDir(str('model')),
    modelId: str('model-id') ?? defaultModelId(str('model')),
    host: str('host') ?? '127.0.0.1',
    port,
    ...(apiKey !== undefined && { apiKey }),
    parallel: positive('parallel', intFlag('parallel', str('parallel')), 1) ?? workers ?? 1,
    queueDepth: positive('queue-depth', intFlag('queue-depth', str('queue-depth')), 0) ?? 16,
    requestTimeoutMs: seconds('request-timeout', 300),
    graceMs: seconds('grace', 10),
    ...(workers !== undefined && { workers }),
    inProcess,
    options: generationOptions(values, 'serve'),
    threads: intFlag('threads', str('threads')),
    verbose: values.verbose === true,
  };
}

/** The bundled model: its package's name; a directory: its name; a hub id: the id without @revision. */
function defaultModelId(given: string | undefined): string {
  if (given === undefined) return 'tinystories-ee';
  if (existsSync(given)) return basename(resolve(given)) || 'mexit';
  return given.replace(/@[^/]*$/, '');
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

/** Loads, serves until SIGTERM / SIGINT, closes gracefully; returns the exit code. */
export async function runServe(request: ServeRequest, io: CliIo): Promise<number> {
  const env = io.env ?? process.env;
  const apiKey = request.apiKey ?? (env.MEXIT_API_KEY || undefined);
  if (!apiKey && !LOOPBACK.test(request.host)) {
    io.stderr.write(
      `mexit serve: warning: listening on ${request.host} without an API key; anyone who can reach it can use the model (--api-key or MEXIT_API_KEY)\n`,
    );
  }
  const progress = ProgressReporter.for(io, false, request.verbose || env.MEXIT_LOG === 'debug');
  // The port opens while the model loads, so a load balancer sees /health at once and /ready when it can route.
  const loading = loadGenerator(request.modelDir, {
    inProcess: request.inProcess,
    ...(request.workers !== undefined && { workers: request.workers }),
    ...request.options,
    ...(request.threads !== undefined && { threads: request.threads }),
    onProgress: progress.onProgress,
  });
  const dispose = () =>
    loading.then(
      (g) => g.dispose(),
      () => undefined,
    );
  let server: MexitServer;
  try {
    server = await startServer({
      generator: loading,
      modelId: request.modelId,
      host: request.host,
      port: request.port,
      ...(apiKey !== undefined && { apiKey }),
      maxConcurrent: request.parallel,
      queueDepth: request.queueDepth,
      requestTimeoutMs: request.requestTimeoutMs,
      shutdownGraceMs: request.graceMs,
      log: (line) => io.stderr.write(`${line}\n`),
    });
  } catch (err) {
    await dispose(); // a load cannot be stopped halfway; let it finish, then release it
    throw err;
  }
  let onSignal: ((s: NodeJS.Signals) => void) | undefined;
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    onSignal = (s) => resolve(s);
    process.on('SIGTERM', onSignal).on('SIGINT', onSignal);
  });
  try {
    const first = await Promise.race([loading.finally(() => progress.clear()), stopped]);
    if (typeof first === 'string') {
      io.stderr.write(`mexit serve: ${first} while loading: stopping\n`);
      return 0;
    }
    io.stderr.write(`mexit serve: listening on ${server.url} (model ${request.modelId})\n`);
    const signal = await stopped;
    io.stderr.write(`mexit serve: ${signal}: finishing in-flight requests (up to ${request.graceMs / 1000} s)\n`);
    await server.close(request.graceMs);
    io.stderr.write('mexit serve: stopped\n');
    return 0;
  } finally {
    process.off('SIGTERM', onSignal!).off('SIGINT', onSignal!);
    await server.close(0);
    await dispose();
  }
}
