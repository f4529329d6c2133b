/**
 * startServer: the HTTP server — routing, authentication, admission, generation and lifecycle. Request
 * bodies (body.ts), OpenAI request and response shapes (requests.ts, responses.ts), errors (errors.ts), the
 * queue (queue.ts), SSE (sse.ts) and metrics (metrics.ts) each live in their own module.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { MexitError, OptionsError, formatValue } from '@mexit/core';
import { DEFAULT_MAX_NEW_TOKENS, type GenerationResult, type TextGenerator } from '@mexit/speculative';
import { ClientGone, readBody } from './body.js';
import { HttpError, badRequest, fromEngineError, retryAfter, shuttingDown } from './errors.js';
import { ServerMetrics, type GenerationOutcome } from './metrics.js';
import { AdmissionQueue, QueueClosed, QueueFull } from './queue.js';
import { EXTENSION_PARAMS, parseJson, parseRequest, type Endpoint, type ParsedRequest } from './requests.js';
import { chunk, fullResponse, modelObject, responseHead, usageChunk } from './responses.js';
import { SseWriter } from './sse.js';

export interface ServerOptions {
  /**
   * The model; the server never disposes it (the caller owns it). A promise (e.g. `loadGenerator(...)` not
   * awaited) opens the port at once: /health answers, /ready and /v1 generation answer 503 with Retry-After
   * until it resolves. A rejected load is logged and they keep answering 503 (the caller decides: `mexit serve` exits).
   */
  generator: TextGenerator | Promise<TextGenerator>;
  /** The model name /v1/models lists and requests must name. */
  modelId: string;
  /** Default '127.0.0.1'. */
  host?: string;
  /** Default 8080; 0 picks a free port (see MexitServer.port). */
  port?: number;
  /** When set, /v1/* and /metrics need `Authorization: Bearer <apiKey>`; /health and /ready stay open. */
  apiKey?: string;
  /** Generations at once. Default 1. */
  maxConcurrent?: number;
  /** Requests waiting for a slot; more get 429. Default 16. */
  queueDepth?: number;
  /** Per request, queue wait included; past it the generation is aborted (504). Default 300 000 ms; 0 = none. */
  requestTimeoutMs?: number;
  /** Default 1 MiB (413 past it). */
  bodyLimitBytes?: number;
  /** Time to receive the request headers (node's headersTimeout; 408). Default 10 000 ms. */
  headersTimeoutMs?: number;
  /** Time to receive the body once headers are in (408). Default 10 000 ms. */
  bodyTimeoutMs?: number;
  /** close() lets in-flight generations finish this long, then aborts them. Default 10 000 ms. */
  shutdownGraceMs?: number;
  /** max_tokens when a request gives none (capped by the context left). Default: the generator's maxNewTokens, else 64. */
  defaultMaxTokens?: number;
  /** Log lines (startup, server faults). Default: stderr. */
  log?: (line: string) => void;
}

export interface ServerStats {
  /** Generations running now. */
  inFlight: number;
  /** Requests waiting for a slot. */
  queued: number;
  /** Generations so far by how they ended. */
  generations: Record<GenerationOutcome, number>;
  ready: boolean;
}

export interface MexitServer {
  /** `http://host:port`, with the real port when started on port 0. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** The node:http server (for embedding; do not close it directly, use close()). */
  readonly http: Server;
  /** This server's own prom-client metrics. */
  readonly metrics: ServerMetrics;
  stats(): ServerStats;
  /** Stops accepting, refuses queued requests (503), lets in-flight ones finish within `graceMs`, aborts the rest. */
  close(graceMs?: number): Promise<void>;
}

/** Why a generation's signal aborted. */
type AbortCause = 'client' | 'timeout' | 'shutdown';

interface Route {
  name: string;
  method: 'GET' | 'POST';
  match: (path: string) => string[] | null;
  /** Needs the API key (when one is set). */
  protected: boolean;
}

const exact = (p: string) => (path: string) => (path === p ? [] : null);
const ROUTES: Route[] = [
  { name: '/health', method: 'GET', match: exact('/health'), protected: false },
  { name: '/ready', method: 'GET', match: exact('/ready'), protected: false },
  { name: '/metrics', method: 'GET', match: exact('/metrics'), protected: true },
  { name: '/v1/models', method: 'GET', match: exact('/v1/models'), protected: true },
  {
    name: '/v1/models/:id',
    method: 'GET',
    match: (path) => {
      const m = /^\/v1\/models\/(.+)$/.exec(path);
      return m ? [m[1]] : null;
    },
    protected: true,
  },
  { name: '/v1/completions', method: 'POST', match: exact('/v1/completions'), protected: true },
  { name: '/v1/chat/completions', method: 'POST', match: exact('/v1/chat/completions'), protected: true },
];

function checkOptions(o: ServerOptions): void {
  const bad = (name: string, expected: string, v: unknown) =>
    new OptionsError('INVALID_OPTION', `server option ${name} must be ${expected}, got ${formatValue(v, 80, 'js')}`);
  if (typeof o !== 'object' || o === null) throw new OptionsError('INVALID_OPTION', 'server options must be an object');
  const g = o.generator as unknown as Record<string, unknown> | null;
  if (typeof g !== 'object' || g === null || (typeof g.events !== 'function' && typeof g.then !== 'function'))
    throw new OptionsError(
      'INVALID_OPTION',
      'server option generator must be a TextGenerator (loadGenerator / MexitGenerator) or a promise of one',
    );
  if (typeof o.modelId !== 'string' || o.modelId === '') throw bad('modelId', 'a non-empty string', o.modelId);
  if (o.port !== undefined && !(Number.isInteger(o.port) && o.port >= 0 && o.port <= 65535))
    throw bad('port', 'an integer in 0..65535', o.port);
  if (o.apiKey !== undefined && (typeof o.apiKey !== 'string' || o.apiKey === '')) throw bad('apiKey', 'a non-empty string', o.apiKey);
  const ints: [keyof ServerOptions, number][] = [
    ['maxConcurrent', 1],
    ['queueDepth', 0],
    ['requestTimeoutMs', 0],
    ['bodyLimitBytes', 1],
    ['headersTimeoutMs', 1],
    ['bodyTimeoutMs', 1],
    ['shutdownGraceMs', 0],
    ['defaultMaxTokens', 1],
  ];
  for (const [name, min] of ints) {
    const v = o[name];
    if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= min)) throw bad(name, `an integer ≥ ${min}`, v);
  }
}

/** Starts listening; resolves once the port is bound. Bad options: OptionsError; a port in use: MexitError LISTEN_FAILED. */
export async function startServer(options: ServerOptions): Promise<MexitServer> {
  checkOptions(options);
  const { modelId } = options;
  /** The model once loaded; `loadFailed` once its load has rejected. */
  let loaded: TextGenerator | undefined;
  let loadFailed = false;
  if (options.generator instanceof Promise) {
    options.generator.then(
      (g) => (loaded = g),
      (err: unknown) => {
        loadFailed = true;
        // A typed error is the user's to fix (one line); anything else is a fault (with its stack).
        log(`mexit serve: the model failed to load: ${err instanceof MexitError ? `[${err.code}] ${err.message}` : describeFault(err)}`);
      },
    );
  } else loaded = options.generator;
  const notReady = () =>
    loadFailed
      ? new HttpError(503, 'service_unavailable', 'the model failed to load', 'model_load_failed', null, retryAfter(60))
      : new HttpError(503, 'service_unavailable', 'the model is still loading', 'model_loading', null, retryAfter(5));
  /** The loaded model, or 503 while it loads. */
  const model = (): TextGenerator => {
    if (!loaded) throw notReady();
    return loaded;
  };
  const host = options.host ?? '127.0.0.1';
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const requestTimeoutMs = options.requestTimeoutMs ?? 300_000;
  const bodyLimits = { limitBytes: options.bodyLimitBytes ?? 1 << 20, timeoutMs: options.bodyTimeoutMs ?? 10_000 };
  const headersTimeout = options.headersTimeoutMs ?? 10_000;
  const defaultMaxTokens = () => options.defaultMaxTokens ?? model().defaults.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  const keyDigest = options.apiKey === undefined ? undefined : sha256(options.apiKey);
  const created = Math.floor(Date.now() / 1000);
  const metrics = new ServerMetrics();
  const queue = new AdmissionQueue(options.maxConcurrent ?? 1, options.queueDepth ?? 16, (r, w) => metrics.queue(r, w));
  metrics.queue(0, 0);
  /** Admitted generations (past body parsing), for close() to wait on and abort. */
  const generations = new Set<{ done: Promise<void>; abort: (cause: AbortCause) => void }>();
  let closing = false;

  const server = createServer({
    headersTimeout,
    // Node's own limit on receiving a whole request; our body timer is the finer one.
    requestTimeout: headersTimeout + bodyLimits.timeoutMs + 1000,
    // How often node checks those limits: often enough that a slow client is cut near its deadline.
    connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(headersTimeout / 4))),
  });

  const sendJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(text),
      ...(closing && { Connection: 'close' }),
      ...headers,
    });
    res.end(text);
  };
  const sendError = (res: ServerResponse, err: HttpError) => {
    // A body left unread (413, 408, early refusals) would be parsed as the next request: close the connection.
    const unread = !res.req.complete;
    sendJson(res, err.status, err.body(), { ...err.headers, ...(unread && { Connection: 'close' }) });
  };

  const authorized = (req: IncomingMessage): boolean => {
    if (!keyDigest) return true;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(sha256(m[1].trim()), keyDigest);
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let routeName = 'unmatched';
    // A client gone before its answer is counted as nginx does, 499.
    res.on('close', () => metrics.request(routeName, res.writableFinished ? res.statusCode : 499));
    try {
      const path = (req.url ?? '/').split('?')[0];
      const candidates = ROUTES.filter((r) => r.match(path) !== null);
      const route = candidates.find((r) => r.method === req.method) ?? candidates[0];
      if (!route) throw new HttpError(404, 'not_found_error', `no route ${req.method} ${path}`, 'unknown_route');
      routeName = route.name;
      const params = route.match(path)!;
      if (route.method !== req.method) {
        throw new HttpError(
          405,
          'invalid_request_error',
          `${route.name} takes ${route.method}, not ${req.method}`,
          'method_not_allowed',
          null,
          {
            Allow: route.method,
          },
        );
      }
      if (route.protected && !authorized(req)) {
        throw new HttpError(
          401,
          'authentication_error',
          'missing or invalid API key (send Authorization: Bearer <key>)',
          'invalid_api_key',
          null,
          { 'WWW-Authenticate': 'Bearer' },
        );
      }
      switch (route.name) {
        case '/health':
          return sendJson(res, 200, { status: 'ok' });
        case '/ready':
          if (closing) return sendJson(res, 503, { status: 'shutting down' }, retryAfter(1));
          if (!loaded) {
            const e = notReady();
            return sendJson(res, 503, { status: loadFailed ? 'load failed' : 'loading' }, e.headers);
          }
          return sendJson(res, 200, { status: 'ready', model: modelId });
        case '/metrics': {
          const text = await metrics.text();
          res.writeHead(200, { 'Content-Type': metrics.contentType });
          res.end(text);
          return;
        }
        case '/v1/models':
          return sendJson(res, 200, { object: 'list', data: [modelObject(modelId, created)] });
        case '/v1/models/:id': {
          const id = decodeURIComponentSafe(params[0]);
          if (id !== modelId) throw modelNotFound(id);
          return sendJson(res, 200, modelObject(modelId, created));
        }
        case '/v1/completions':
          return await generate('completions', req, res);
        case '/v1/chat/completions':
          return await generate('chat', req, res);
      }
    } catch (err) {
      if (err instanceof ClientGone) return;
      const httpError = err instanceof HttpError ? err : fromEngineError(err, EXTENSION_PARAMS, 'prompt');
      if (httpError.status >= 500 && !(err instanceof HttpError)) log(`mexit serve: ${req.method} ${req.url}: ${describeFault(err)}`);
      sendError(res, httpError);
    }
  }

  const modelNotFound = (id: string) =>
    new HttpError(
      404,
      'not_found_error',
      `the model ${formatValue(id, 80, 'js')} does not exist; this server serves ${JSON.stringify(modelId)}`,
      'model_not_found',
      'model',
    );

  /** POST /v1/completions and /v1/chat/completions: validate, admit, generate, answer. */
  async function generate(endpoint: Endpoint, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (closing) throw shuttingDown();
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/json') {
      throw new HttpError(
        415,
        'invalid_request_error',
        `Content-Type must be application/json, got ${formatValue(type, 80, 'js')}`,
        'unsupported_media_type',
      );
    }
    const parsed = parseRequest(endpoint, parseJson(await readBody(req, bodyLimits)));
    if (parsed.model !== modelId) throw modelNotFound(parsed.model);
    if (closing) throw shuttingDown();
    const generator = model();

    const arrived = performance.now();
    const controller = new AbortController();
    let cause: AbortCause | undefined;
    const abort = (why: AbortCause) => {
      if (cause) return;
      cause = why;
      controller.abort(new Error(`aborted: ${why}`));
    };
    const onClose = () => {
      if (!res.writableFinished) abort('client');
    };
    res.on('close', onClose);
    const timer = requestTimeoutMs > 0 ? setTimeout(() => abort('timeout'), requestTimeoutMs) : undefined;
    let settle!: () => void;
    const entry = { done: new Promise<void>((r) => (settle = r)), abort };
    generations.add(entry);
    let release: (() => void) | undefined;
    try {
      const ids = await engine(() => generator.tokenize(parsed.prompt), parsed);
      const maxNewTokens = tokenBudget(parsed, ids.length);
      try {
        release = await queue.acquire(controller.signal);
      } catch (err) {
        if (err instanceof QueueFull)
          throw new HttpError(
            429,
            'rate_limit_error',
            `the server is busy: ${queue.depth} requests are already waiting`,
            'queue_full',
            null,
            retryAfter(1),
          );
        if (err instanceof QueueClosed) throw shuttingDown();
        throw abortedError(cause);
      }
      await run(endpoint, parsed, ids, maxNewTokens, controller.signal, res, arrived, () => cause);
    } finally {
      clearTimeout(timer);
      res.off('close', onClose);
      release?.();
      // close() destroys the remaining sockets once every entry settles: let this answer flush first.
      if (res.writableFinished || res.destroyed) settle();
      else {
        res.once('finish', settle);
        res.once('close', settle);
      }
      void entry.done.then(() => generations.delete(entry));
    }
  }

  /** An engine call whose typed errors become 400s naming this request's fields. */
  async function engine<T>(call: () => Promise<T>, parsed: ParsedRequest): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw fromEngineError(err, EXTENSION_PARAMS, parsed.promptParam);
    }
  }

  /** max_tokens checked against the context, or min(defaultMaxTokens, context left). */
  function tokenBudget(parsed: ParsedRequest, promptTokens: number): number {
    const context = model().info.maxPositions;
    const left = context - promptTokens;
    if (left < 1) {
      throw badRequest(
        `the prompt is ${promptTokens} tokens, and the model's context is ${context}: no room for a completion`,
        parsed.promptParam,
        'context_length_exceeded',
      );
    }
    if (parsed.maxTokens === undefined) return Math.min(defaultMaxTokens(), left);
    if (parsed.maxTokens > left) {
      throw badRequest(
        `the prompt (${promptTokens} tokens) + ${parsed.maxTokensParam} (${parsed.maxTokens}) exceeds the model's context of ${context} tokens`,
        parsed.maxTokensParam,
        'context_length_exceeded',
      );
    }
    return parsed.maxTokens;
  }

  /** Runs the admitted generation and writes the answer (JSON, or SSE opened at the first token). */
  async function run(
    endpoint: Endpoint,
    parsed: ParsedRequest,
    ids: number[],
    maxNewTokens: number,
    signal: AbortSignal,
    res: ServerResponse,
    arrived: number,
    cause: () => AbortCause | undefined,
  ): Promise<void> {
    const head = responseHead(endpoint, modelId);
    const sse = parsed.stream ? new SseWriter(res) : undefined;
    const openStream = () => {
      if (!sse || sse.opened) return;
      sse.open();
      if (endpoint === 'chat') sse.send(chunk(endpoint, head, { role: true }, parsed.includeUsage));
    };
    let result: GenerationResult | undefined;
    let tokens = 0;
    let last = 0;
    try {
      const events = model().events(ids, { ...parsed.options, maxNewTokens, signal }, (r) => (result = r));
      for await (const event of events) {
        const now = performance.now();
        if (tokens === 0) metrics.timeToFirstToken.observe((now - arrived) / 1000);
        else metrics.interTokenLatency.observe((now - last) / 1000);
        last = now;
        tokens++;
        if (!sse) continue;
        openStream();
        // An empty delta: nothing safe to show yet (a pending character or a possible stop string).
        if (event.text) sse.send(chunk(endpoint, head, { text: event.text }, parsed.includeUsage));
      }
    } catch (err) {
      const why = cause();
      const outcome: GenerationOutcome = why === 'client' ? 'aborted' : (why ?? (isAbort(err) ? 'aborted' : 'error'));
      metrics.partialTokens(tokens);
      const httpError = why ? abortedError(why) : fromEngineError(err, EXTENSION_PARAMS, parsed.promptParam);
      metrics.generationEnded(httpError.status === 400 ? 'invalid' : outcome);
      if (httpError.status >= 500 && !why) log(`mexit serve: generation failed: ${describeFault(err)}`);
      if (why === 'client') throw new ClientGone();
      if (sse?.opened) {
        // Mid-stream: the status is sent; OpenAI reports the error as one more event.
        sse.send(httpError.body());
        res.end();
        return;
      }
      throw httpError;
    }
    const final = result!;
    metrics.generationEnded('completed', final.stats);
    if (!sse) {
      sendJson(res, 200, fullResponse(endpoint, head, final.text, final.stats));
      return;
    }
    openStream();
    sse.send(chunk(endpoint, head, { finish: final.stats }, parsed.includeUsage));
    if (parsed.includeUsage) sse.send(usageChunk(endpoint, head, final.stats));
    sse.done();
  }

  server.on('request', (req, res) => {
    void handle(req, res);
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new MexitError('LISTEN_FAILED', `cannot listen on ${host}:${options.port ?? 8080}: ${err.code ?? err.message}`));
    };
    server.once('error', onError);
    server.listen(options.port ?? 8080, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log(`mexit serve: server error: ${describeFault(err)}`));
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closed: Promise<void> | undefined;
  return {
    url,
    host,
    port,
    http: server,
    metrics,
    stats: () => ({
      inFlight: queue.inFlight,
      queued: queue.queued,
      generations: { ...metrics.outcomes },
      ready: loaded !== undefined && !closing,
    }),
    close(graceMs = options.shutdownGraceMs ?? 10_000) {
      closed ??= (async () => {
        closing = true;
        queue.close(); // waiters get 503 now
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const all = () => Promise.all([...generations].map((g) => g.done));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([all(), new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
        for (const g of generations) g.abort('shutdown');
        await all();
        server.closeAllConnections(); // clients still sending (slow bodies) or holding keep-alive sockets
        await serverClosed;
      })();
      return closed;
    },
  };
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

const isAbort = (err: unknown) => err instanceof MexitError && err.code === 'ABORTED';

function abortedError(cause: AbortCause | undefined): HttpError {
  if (cause === 'timeout')
    return new HttpError(504, 'timeout_error', 'the request timed out before the generation finished', 'request_timeout');
  if (cause === 'shutdown') return shuttingDown();
  return new HttpError(499, 'invalid_request_error', 'the client closed the request', 'client_closed');
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A fault for the log: message and stack (never sent to the client). */
function describeFault(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
