/**
 * @mexit/server: an OpenAI-compatible HTTP server (completions, chat, SSE streaming, bounded queue,
 * Prometheus metrics, graceful shutdown) over any mexit TextGenerator.
 */
export { startServer, type MexitServer, type ServerOptions, type ServerStats } from './server.js';
export { ServerMetrics, type GenerationOutcome } from './metrics.js';
export { HttpError, type ErrorType } from './errors.js';
export { MEXIT_FIELDS } from './requests.js';
export type { MexitStats, FinishReason, Usage } from './responses.js';
