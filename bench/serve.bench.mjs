/**
 * Serving: the event loop during generation (in-process vs worker thread) and a bounded load run against
 * `mexit serve`'s server on a local port, driven by the official `openai` client (built packages).
 *
 * - Event-loop delay: `monitorEventLoopDelay` while one generation of N tokens runs, in-process
 *   (MexitGenerator) and in a worker (loadGenerator's default), alternating which goes first.
 * - Load: C concurrent streaming clients for T seconds (greedy, so every answer is deterministic), then a
 *   burst of more simultaneous requests than the queue holds. Every completed answer is compared with the
 *   same request made alone before the run: nothing may be lost or mixed up. Reports completed / rejected /
 *   failed requests, time to first token and inter-token latency p50 / p99, tokens/s and RSS.
 * `benchServe(dir, { quick })` returns a report for bench/run.mjs to render.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import OpenAI from 'openai';
import { startServer } from '../packages/server/dist/index.js';
import { loadGenerator, MexitGenerator } from '../packages/speculative/dist/index.js';
import { section } from './progress.mjs';

const PROMPTS = [
  'Once upon a time',
  'The little dog',
  'Lily went to the park',
  'Tom had a red ball',
  'One day, a cat',
  'The sun was hot',
  'A bird sang',
  'Ben and Mia',
];

const quantile = (xs, q) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const ms = (ns) => ns / 1e6;
const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

/** One generation under monitorEventLoopDelay (1 ms resolution): the loop's delay while tokens compute. */
async function loopDelayDuring(generator, options) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const r = await generator.generate('Once upon a time', options);
  h.disable();
  return { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), tps: r.stats.tokensPerSecond };
}

async function eventLoopSection(dir, quick) {
  const rows = [];
  const tokens = quick ? 64 : 256;
  const repeats = quick ? 2 : 6;
  const inProcess = await MexitGenerator.fromPretrained(dir);
  const worker = await loadGenerator(dir);
  const progress = section('bench: serve › event loop', 2 * repeats * 2);
  try {
    for (const mode of ['ar', 'self-spec']) {
      const options = { mode, maxNewTokens: tokens, eosTokenIds: [] };
      await inProcess.generate('Hi', { ...options, maxNewTokens: 4 }); // stages built outside the measurement
      await worker.generate('Hi', { ...options, maxNewTokens: 4 });
      const runs = { 'in-process': [], worker: [] };
      for (let i = 0; i < repeats; i++) {
        const order = i % 2 ? ['worker', 'in-process'] : ['in-process', 'worker'];
        for (const where of order) {
          progress.next(`${mode} ${where} ${i + 1}/${repeats}`);
          runs[where].push(await loopDelayDuring(where === 'worker' ? worker : inProcess, options));
        }
      }
      for (const [where, xs] of Object.entries(runs)) {
        rows.push({
          mode,
          where,
          p50: quantile(
            xs.map((x) => x.p50),
            0.5,
          ),
          p99: quantile(
            xs.map((x) => x.p99),
            0.5,
          ),
          max: Math.max(...xs.map((x) => x.max)),
          tps: quantile(
            xs.map((x) => x.tps),
            0.5,
          ),
        });
      }
    }
  } finally {
    await worker.dispose();
    await inProcess.dispose();
  }
  return {
    id: 'eventLoop',
    title: `Event-loop delay of the calling thread during one ${tokens}-token generation (bundled model)`,
    notes: [
      `monitorEventLoopDelay (1 ms resolution) while \`generate()\` runs; medians over ${repeats} runs per row (max: the worst run), in-process and worker alternating. ` +
        'In-process, each ONNX Runtime stage run blocks the loop for its whole duration; in a worker only the token messages reach it.',
    ],
    columns: [
      { key: 'mode', label: 'mode' },
      { key: 'where', label: 'generator' },
      { key: 'p50', label: 'delay p50 (ms)', fmt: 'f2' },
      { key: 'p99', label: 'delay p99 (ms)', fmt: 'f2' },
      { key: 'max', label: 'delay max (ms)', fmt: 'f2' },
      { key: 'tps', label: 'tok/s', fmt: 'f0' },
    ],
    rows,
  };
}

/** One streaming completion: its text, tokens (usage), time to first text and the gaps between text chunks (ms). */
async function streamOnce(client, prompt, maxTokens) {
  const started = performance.now();
  const stream = await client.completions.create({
    model: 'bench',
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let ttft;
  let last;
  let tokens = 0;
  const gaps = [];
  for await (const chunk of stream) {
    if (chunk.usage) tokens = chunk.usage.completion_tokens;
    const delta = chunk.choices[0]?.text ?? '';
    if (!delta) continue;
    const t = performance.now();
    if (ttft === undefined) ttft = t - started;
    else gaps.push(t - last);
    last = t;
    text += delta;
  }
  return { text, ttft, gaps, tokens };
}

async function loadSection(dir, quick) {
  const clients = 16;
  const seconds = quick ? 8 : 60;
  const maxTokens = 48;
  const queueDepth = 16;
  const generator = await loadGenerator(dir);
  const server = await startServer({ generator, modelId: 'bench', port: 0, queueDepth });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
  const rows = [];
  const notes = [];
  try {
    // What each prompt gives alone, before any load.
    const solo = new Map();
    for (const p of PROMPTS) solo.set(p, (await streamOnce(client, p, maxTokens)).text);
    const rssBefore = rssMiB();
    const progress = section('bench: serve › load', 2);

    progress.next(`${clients} streaming clients for ${seconds} s`);
    const tally = () => ({
      completed: 0,
      rejected: 0,
      failed: 0,
      mismatched: 0,
      tokens: 0,
      ttft: [],
      gaps: [],
      errors: new Set(),
      retryAfter: new Set(),
    });
    /** One streaming request, counted in `t`: completed (and compared with its solo answer), rejected or failed. */
    const request = async (t, prompt) => {
      try {
        const r = await streamOnce(client, prompt, maxTokens);
        t.completed++;
        t.tokens += r.tokens;
        if (r.ttft !== undefined) t.ttft.push(r.ttft);
        t.gaps.push(...r.gaps);
        if (r.text !== solo.get(prompt)) t.mismatched++;
      } catch (err) {
        if (err instanceof OpenAI.RateLimitError) {
          t.rejected++;
          t.retryAfter.add(err.headers?.get?.('retry-after') ?? err.headers?.['retry-after']);
        } else {
          t.failed++;
          t.errors.add(String(err?.message ?? err).slice(0, 120));
        }
      }
    };
    const steady = tally();
    const deadline = performance.now() + seconds * 1000;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        for (let i = c; performance.now() < deadline; i += clients) {
          await request(steady, PROMPTS[i % PROMPTS.length]);
        }
      }),
    );
    const steadyS = (performance.now() - started) / 1000;
    rows.push(loadRow(`${clients} streaming clients, ${seconds} s`, steady, steadyS));

    const burstSize = queueDepth + 16;
    progress.next(`burst of ${burstSize} simultaneous requests (queue depth ${queueDepth})`);
    const burst = tally();
    const burstStarted = performance.now();
    await Promise.all(
      Array.from({ length: burstSize }, async (_, i) => {
        await request(burst, PROMPTS[i % PROMPTS.length]);
      }),
    );
    rows.push(loadRow(`burst of ${burstSize} at once`, burst, (performance.now() - burstStarted) / 1000));
    const rssAfter = rssMiB();
    notes.push(
      `Server: \`startServer\` over \`loadGenerator\` (one model worker), defaults except queue depth ${queueDepth}; clients: the official \`openai\` package, streaming \`/v1/completions\`, temperature 0, max_tokens ${maxTokens}, prompts cycling over ${PROMPTS.length} story openings.`,
      'TTFT: request sent → first text chunk. Inter-token: gaps between text chunks; a self-speculative round commits several tokens at once, so most gaps inside a round are near 0 and p99 shows the rounds (and the queue). tokens/s: usage.completion_tokens of all completed answers over the phase.',
      `mismatched = completed answers whose text differs from the same request made alone before the run (must be 0). RSS of the bench process (server, worker and clients): ${rssBefore.toFixed(0)} MiB before the load, ${rssAfter.toFixed(0)} MiB after.`,
    );
    if (burst.retryAfter.size) notes.push(`Retry-After on the 429 answers: ${[...burst.retryAfter].join(', ')} s.`);
    for (const e of [...steady.errors, ...burst.errors]) notes.push(`failure: ${e}`);
    return {
      section: {
        id: 'load',
        title: 'Load run against the local server',
        notes,
        columns: [
          { key: 'phase', label: 'phase' },
          { key: 'completed', label: 'completed', fmt: 'int' },
          { key: 'rejected', label: 'rejected (429)', fmt: 'int' },
          { key: 'failed', label: 'failed', fmt: 'int' },
          { key: 'mismatched', label: 'mismatched', fmt: 'int' },
          { key: 'ttftP50', label: 'TTFT p50 (ms)', fmt: 'f0' },
          { key: 'ttftP99', label: 'TTFT p99 (ms)', fmt: 'f0' },
          { key: 'itlP50', label: 'inter-token p50 (ms)', fmt: 'f2' },
          { key: 'itlP99', label: 'inter-token p99 (ms)', fmt: 'f2' },
          { key: 'tps', label: 'tokens/s (all clients)', fmt: 'f0' },
        ],
        rows,
      },
      summary: { rssBeforeMiB: rssBefore, rssAfterMiB: rssAfter, lost: rows.reduce((a, r) => a + r.failed + r.mismatched, 0) },
    };
  } finally {
    await server.close();
    await generator.dispose();
  }
}

function loadRow(phase, r, seconds) {
  return {
    phase,
    completed: r.completed,
    rejected: r.rejected,
    failed: r.failed,
    mismatched: r.mismatched,
    ttftP50: quantile(r.ttft, 0.5),
    ttftP99: quantile(r.ttft, 0.99),
    itlP50: quantile(r.gaps, 0.5),
    itlP99: quantile(r.gaps, 0.99),
    tps: r.tokens / seconds,
  };
}

/**
 * @param {string} dir model directory
 * @param {{ quick?: boolean }} options
 */
export async function benchServe(dir, { quick = false } = {}) {
  const eventLoop = await eventLoopSection(dir, quick);
  const load = await loadSection(dir, quick);
  const summary = { ...load.summary };
  for (const r of eventLoop.rows) summary[`loopDelayP99Ms_${r.mode}_${r.where}`] = r.p99;
  return {
    name: 'serve',
    title: 'serve: event loop during generation, and a load run against the OpenAI-compatible server',
    threads: 'engine default',
    sections: [eventLoop, load.section],
    summary,
    warnings: load.summary.lost > 0 ? [`${load.summary.lost} requests were lost or mixed up`] : [],
  };
}
