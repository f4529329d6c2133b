/**
 * Prometheus metrics on a Registry of this server's own (two servers in one process, or an application's
 * own prom-client metrics, never collide in the global registry).
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { GenerationStats } from '@mexit/speculative';

/** How a generation ended (the `outcome` label). */
export type GenerationOutcome = 'completed' | 'aborted' | 'timeout' | 'shutdown' | 'invalid' | 'error';

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'mexit_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });
  private readonly queueDepth = new Gauge({
    name: 'mexit_queue_depth',
    help: 'Requests waiting for a generation slot',
    registers: [this.registry],
  });
  private readonly inFlight = new Gauge({
    name: 'mexit_generations_in_flight',
    help: 'Generations running now',
    registers: [this.registry],
  });
  private readonly generations = new Counter({
    name: 'mexit_generations_total',
    help: 'Generations by how they ended',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly tokens = new Counter({
    name: 'mexit_tokens_generated_total',
    help: 'New tokens generated',
    registers: [this.registry],
  });
  private readonly promptTokens = new Counter({
    name: 'mexit_prompt_tokens_total',
    help: 'Prompt tokens processed',
    registers: [this.registry],
  });
  private readonly drafted = new Counter({
    name: 'mexit_draft_tokens_total',
    help: 'Self-spec draft tokens proposed',
    registers: [this.registry],
  });
  private readonly accepted = new Counter({
    name: 'mexit_draft_tokens_accepted_total',
    help: 'Self-spec draft tokens accepted by the full model',
    registers: [this.registry],
  });
  private draftedSum = 0;
  private acceptedSum = 0;
  private readonly acceptance = new Gauge({
    name: 'mexit_draft_acceptance_rate',
    help: 'Accepted / drafted tokens since the server started',
    registers: [this.registry],
    collect: () => {
      this.acceptance.set(this.draftedSum ? this.acceptedSum / this.draftedSum : 0);
    },
  });
  readonly timeToFirstToken = new Histogram({
    name: 'mexit_time_to_first_token_seconds',
    help: 'From the request arriving to its first generated token',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly interTokenLatency = new Histogram({
    name: 'mexit_inter_token_latency_seconds',
    help: 'Between successive generated tokens of one request',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  /** Generation outcomes, also for MexitServer.stats(). */
  readonly outcomes: Record<GenerationOutcome, number> = { completed: 0, aborted: 0, timeout: 0, shutdown: 0, invalid: 0, error: 0 };

  request(route: string, status: number): void {
    this.requests.inc({ route, status: String(status) });
  }

  queue(running: number, waiting: number): void {
    this.inFlight.set(running);
    this.queueDepth.set(waiting);
  }

  generationEnded(outcome: GenerationOutcome, stats?: GenerationStats): void {
    this.outcomes[outcome]++;
    this.generations.inc({ outcome });
    if (!stats) return;
    this.tokens.inc(stats.newTokens);
    this.promptTokens.inc(stats.promptTokens);
    this.drafted.inc(stats.drafted);
    this.accepted.inc(stats.accepted);
    this.draftedSum += stats.drafted;
    this.acceptedSum += stats.accepted;
  }

  /** Tokens of a generation that did not finish (aborted): counted as generated all the same. */
  partialTokens(n: number): void {
    if (n > 0) this.tokens.inc(n);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
