/**
 * ModelRuntime costs for one model directory (built packages: packages/model/dist):
 *   (a) per-token decode step of the full model vs the raw ORT time inside session.run → overhead ratio
 *   (b) prefill tokens/s for a 128-token prompt
 *   (c) session build time per stage (full stage; the self-spec draft / verify stages)
 *   (d) RSS vs weight bytes for: load only; full stage; self-spec split; both (each in a fresh child process)
 *   (e) session options: threads × spinning × prepacking → decode step and build time
 * `benchModelRuntime(Bench, dir, { quick })` returns a report for bench/run.mjs to render.
 * Run as a script with `--rss-probe '<json>'` it is the child process of (d): it prints one JSON line.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { argmax, Rng } from '../packages/core/dist/index.js';
import { ModelRuntime } from '../packages/model/dist/index.js';
import { resolveOptions } from '../packages/speculative/dist/index.js';

const thisFile = fileURLToPath(import.meta.url);
const DECODE_CONTEXT = 64;
const PREFILL_TOKENS = 128;

const gc = () => {
  if (typeof globalThis.gc === 'function') {
    globalThis.gc();
    globalThis.gc();
  }
};

/** Repository-relative path when inside the repository, else absolute. */
const displayPath = (dir) => {
  const rel = path.relative(process.cwd(), path.resolve(dir));
  return rel && !rel.startsWith('..') ? rel : path.resolve(dir);
};

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Deterministic token ids (timings do not depend on which ids, only on how many). */
function promptIds(n, vocabSize, seed) {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.nextU32() % vocabSize);
}

/** The stage specs of the full model and of self-speculation at exit `exitLayer` (as the generator builds them). */
function stageSpecs(L, exitLayer, exitHead) {
  return {
    full: { from: 0, to: L, exits: [{ layer: L }] },
    draft: { from: 0, to: exitLayer, exits: [{ layer: exitLayer, head: exitHead }] },
    verify: { from: exitLayer, to: L, exits: [{ layer: L }] },
  };
}

const SPEC_LABEL = {
  full: (L) => `full [0,${L}) + head@${L}`,
  draft: (_L, E) => `draft [0,${E}) + exit@${E}`,
  verify: (L, E) => `verify [${E},${L}) + head@${L}`,
};

/** The self-spec exit the generator would use by default (recommended exit, else ⌊L/4⌋) and its head kind. */
function defaultExit(runtime) {
  const o = resolveOptions(runtime, { mode: 'self-spec' });
  return { exitLayer: o.exitLayer, exitHead: o.exitHead };
}

/**
 * Decode steps of `stage` at a fixed context: each step feeds 1 token at position `context`, picks the
 * next greedily (argmax) and truncates the cache back, so every sample sees the same context length.
 * tinybench drives the sampling; each call also records its own step time and the ORT time inside it
 * (`Stage.runMs` difference), so the overhead is computed from paired per-step numbers.
 */
async function measureDecode(Bench, runtime, stage, { context, time, iterations }) {
  const cache = runtime.createCache(context + 8);
  const prompt = promptIds(context, runtime.config.vocabSize, 11);
  const first = await stage.run(cache, prompt, context - 1);
  let token = argmax(first.logits[0]);
  let stepTimes = [];
  let ortTimes = [];
  const bench = new Bench({ name: 'decode step', time, iterations, warmupTime: Math.min(200, time), warmupIterations: 5 });
  bench.add(
    'decode step',
    async () => {
      const t0 = performance.now();
      const ort0 = stage.runMs;
      const out = await stage.run(cache, [token], 0);
      token = argmax(out.logits[0]);
      cache.truncate(context);
      stepTimes.push(performance.now() - t0);
      ortTimes.push(stage.runMs - ort0);
    },
    {
      async: true,
      // Runs before the warmup phase and again before the measured phase: only measured steps remain.
      beforeAll() {
        stepTimes = [];
        ortTimes = [];
      },
    },
  );
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed') throw r.error ?? new Error(`decode bench ended in state ${r.state}`);
  const stepTotal = stepTimes.reduce((a, b) => a + b, 0);
  const ortTotal = ortTimes.reduce((a, b) => a + b, 0);
  const jsTimes = stepTimes.map((t, i) => t - ortTimes[i]);
  const ortP50 = median(ortTimes);
  return {
    stepMs: stepTotal / stepTimes.length,
    stepP50Ms: median(stepTimes),
    ortMs: ortTotal / ortTimes.length,
    ortP50Ms: ortP50,
    jsP50Ms: median(jsTimes),
    // mean: total JS time / total ORT time; p50: median JS time per step / median ORT time per step (robust to preemption spikes)
    overheadMean: (stepTotal - ortTotal) / ortTotal,
    overhead: median(jsTimes) / ortP50,
    tinybenchMs: r.latency.mean,
    rmePct: r.latency.rme,
    samples: stepTimes.length,
  };
}

/** Prefill of an n-token prompt into an empty cache (logits of the last row only, as the generator asks). */
async function measurePrefill(Bench, runtime, stage, { tokens, time, iterations }) {
  const cache = runtime.createCache(tokens);
  const prompt = promptIds(tokens, runtime.config.vocabSize, 12);
  let ortAtStart = 0;
  let callsAtStart = 0;
  const bench = new Bench({ name: 'prefill', time, iterations, warmupTime: Math.min(200, time), warmupIterations: 2 });
  bench.add(
    'prefill',
    async () => {
      cache.reset();
      await stage.run(cache, prompt, tokens - 1);
    },
    {
      async: true,
      beforeAll() {
        ortAtStart = stage.runMs;
        callsAtStart = stage.calls;
      },
    },
  );
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed') throw r.error ?? new Error(`prefill bench ended in state ${r.state}`);
  const ortMs = (stage.runMs - ortAtStart) / (stage.calls - callsAtStart);
  return {
    ms: r.latency.mean,
    p50Ms: r.latency.p50,
    ortMs,
    tokensPerSecond: tokens / (r.latency.mean / 1000),
    tokensPerSecondP50: tokens / (r.latency.p50 / 1000),
    samples: r.latency.samplesCount,
    rmePct: r.latency.rme,
  };
}

/** Runs this file as a child process measuring RSS for one set of stages (clean heap per configuration). */
function rssProbe(dir, which) {
  const child = spawnSync(process.execPath, ['--expose-gc', thisFile, '--rss-probe', JSON.stringify({ dir, which })], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (child.status !== 0)
    throw new Error(`rss probe "${which}" failed (exit ${child.status}): ${child.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  const line = child.stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

/** Child side of rssProbe: RSS before loading, after loading, after building the requested stages. */
async function rssProbeMain({ dir, which }) {
  gc();
  const rssBefore = process.memoryUsage().rss;
  const runtime = await ModelRuntime.load(dir);
  gc();
  const rssLoaded = process.memoryUsage().rss;
  const L = runtime.numLayers;
  const { exitLayer, exitHead } = defaultExit(runtime);
  const specs = stageSpecs(L, exitLayer, exitHead);
  const names = { load: [], full: ['full'], split: ['draft', 'verify'], both: ['full', 'draft', 'verify'] }[which];
  const stages = [];
  for (const name of names) stages.push(await runtime.stage(specs[name]));
  gc();
  const rssBuilt = process.memoryUsage().rss;
  const out = {
    which,
    exitLayer,
    rssBefore,
    rssLoaded,
    rssBuilt,
    weightBytes: runtime.weightBytes(),
    stageWeightBytes: stages.reduce((a, s) => a + s.weightBytes, 0),
  };
  await runtime.dispose();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

/**
 * All runtime measurements for the model in `dir`.
 * @param {typeof import('tinybench').Bench} Bench
 */
export async function benchModelRuntime(Bench, dir, { quick = false } = {}) {
  const modelName = path.basename(path.resolve(dir));
  const time = quick ? 100 : 2000;
  const iterations = quick ? 5 : 50;
  const runtime = await ModelRuntime.load(dir);
  const cfg = runtime.config;
  const L = runtime.numLayers;
  const { exitLayer: E, exitHead } = defaultExit(runtime);
  const specs = stageSpecs(L, E, exitHead);
  const threads = runtime.options.threads;
  const context = Math.min(DECODE_CONTEXT, cfg.maxPositions - 1);
  const prefillTokens = Math.min(PREFILL_TOKENS, cfg.maxPositions);
  const report = {
    name: `${modelName}-runtime`,
    title: `model runtime: ${modelName} (${cfg.modelType}, ${L} layers, hidden ${cfg.hiddenSize}, vocab ${cfg.vocabSize})`,
    threads,
    notes: [
      `Model: \`${displayPath(dir)}\`, ${(runtime.weightBytes() / 1e6).toFixed(2)} MB of weights as F32. ` +
        `Runtime defaults: ${threads} intra-op threads, spinning ${runtime.options.spinning ? 'on' : 'off'}, prepacking ${runtime.options.prepacking ? 'on' : 'off'}. ` +
        `Self-spec split at the default exit E = ${E} (${exitHead} head).`,
    ],
    sections: [],
    warnings: [],
    summary: { model: modelName, numLayers: L, exitLayer: E, threads },
  };
  const section = (s) => {
    report.sections.push(s);
    return s;
  };

  try {
    // (a) decode step vs ORT time
    const full = await runtime.stage(specs.full);
    const decode = await measureDecode(Bench, runtime, full, { context, time, iterations });
    section({
      id: 'decode',
      title: `(a) Decode step, full model, context ${context} tokens, 1 new token per step`,
      notes: [
        'step = one decode step as the generator does it: `Stage.run` (feeds, session.run, K/V append) + argmax over the logits + cache truncate, ' +
          'timed inside the tinybench task. ORT = wall time inside `session.run` alone (`Stage.runMs` difference) in the same step. ' +
          'JS = step − ORT. overhead (p50) = median JS time per step / median ORT time per step — robust to preemption spikes on a busy machine — ' +
          'and is what the goal (≤ 10%) is judged on; overhead (mean) = total JS time / total ORT time.',
      ],
      columns: [
        { key: 'stage', label: 'stage' },
        { key: 'stepP50Ms', label: 'step ms (p50)', fmt: 'f3' },
        { key: 'ortP50Ms', label: 'ORT ms (p50)', fmt: 'f3' },
        { key: 'jsP50Ms', label: 'JS ms (p50)', fmt: 'f3' },
        { key: 'overhead', label: 'overhead (p50)', fmt: 'signedpct' },
        { key: 'goal', label: 'goal ≤ 10%' },
        { key: 'stepMs', label: 'step ms (mean)', fmt: 'f3' },
        { key: 'ortMs', label: 'ORT ms (mean)', fmt: 'f3' },
        { key: 'overheadMean', label: 'overhead (mean)', fmt: 'signedpct' },
        { key: 'tokensPerSecond', label: 'tokens/s (p50)', fmt: 'f0' },
        { key: 'samples', label: 'samples', fmt: 'int' },
      ],
      rows: [
        {
          stage: SPEC_LABEL.full(L),
          ...decode,
          goal: decode.overhead <= 0.1 ? 'met' : 'MISSED',
          tokensPerSecond: 1000 / decode.stepP50Ms,
        },
      ],
    });
    Object.assign(report.summary, {
      decodeStepP50Ms: decode.stepP50Ms,
      decodeOrtP50Ms: decode.ortP50Ms,
      overheadRatio: decode.overhead,
      overheadRatioMean: decode.overheadMean,
    });

    // (b) prefill
    const prefill = await measurePrefill(Bench, runtime, full, { tokens: prefillTokens, time, iterations: quick ? 3 : 20 });
    section({
      id: 'prefill',
      title: `(b) Prefill, ${prefillTokens}-token prompt, full model`,
      notes: [
        'One `Stage.run` over the whole prompt into an empty cache (logits of the last row only). tokens/s = prompt tokens / mean (or median) latency; ORT = mean time inside `session.run`.',
      ],
      columns: [
        { key: 'stage', label: 'stage' },
        { key: 'tokens', label: 'tokens', fmt: 'int' },
        { key: 'ms', label: 'ms (mean)', fmt: 'f2' },
        { key: 'p50Ms', label: 'ms (p50)', fmt: 'f2' },
        { key: 'ortMs', label: 'ORT ms (mean)', fmt: 'f2' },
        { key: 'tokensPerSecond', label: 'tokens/s (mean)', fmt: 'f0' },
        { key: 'tokensPerSecondP50', label: 'tokens/s (p50)', fmt: 'f0' },
        { key: 'samples', label: 'samples', fmt: 'int' },
      ],
      rows: [{ stage: SPEC_LABEL.full(L), tokens: prefillTokens, ...prefill }],
    });
    report.summary.prefillTokensPerSecond = prefill.tokensPerSecond;
    report.summary.prefillTokensPerSecondP50 = prefill.tokensPerSecondP50;
  } finally {
    await runtime.dispose();
  }

  // (c) build times: a fresh runtime per repeat (stages are cached per runtime); built one after another.
  const repeats = quick ? 1 : 3;
  const builds = { full: [], draft: [], verify: [] };
  const stageWeights = {};
  for (let rep = 0; rep < repeats; rep++) {
    const rt = await ModelRuntime.load(dir);
    try {
      for (const name of Object.keys(builds)) {
        const stage = await rt.stage(specs[name]);
        builds[name].push(stage.buildMs);
        stageWeights[name] = stage.weightBytes;
      }
    } finally {
      await rt.dispose();
    }
  }
  section({
    id: 'build',
    title: `(c) Session build time per stage (self-spec split at E = ${E})`,
    notes: [
      `\`Stage.buildMs\`: ONNX graph construction (weights read from the checkpoint) + \`InferenceSession.create\` (graph optimisation, prepacking). Median of ${repeats} fresh runtime(s); stages built one at a time. ` +
        'Self-spec needs the draft and verify stages (the draft stage also feeds the last draft, with no logits rows), so each layer is held once.',
    ],
    columns: [
      { key: 'stage', label: 'stage' },
      { key: 'buildMs', label: 'build ms (median)', fmt: 'f1' },
      { key: 'minMs', label: 'min', fmt: 'f1' },
      { key: 'maxMs', label: 'max', fmt: 'f1' },
      { key: 'weightMB', label: 'stage weights MB', fmt: 'f2' },
    ],
    rows: [
      ...Object.entries(builds).map(([name, ms]) => ({
        stage: SPEC_LABEL[name](L, E),
        buildMs: median(ms),
        minMs: Math.min(...ms),
        maxMs: Math.max(...ms),
        weightMB: stageWeights[name] / 1e6,
      })),
      {
        stage: 'self-spec total (draft + verify)',
        buildMs: median(builds.draft) + median(builds.verify),
        weightMB: (stageWeights.draft + stageWeights.verify) / 1e6,
      },
    ],
  });
  report.summary.buildMs = Object.fromEntries(Object.entries(builds).map(([k, v]) => [k, median(v)]));

  // (d) memory, each configuration in a fresh child process
  const memRows = [];
  const memory = section({
    id: 'memory',
    title: '(d) Resident memory vs weight bytes',
    notes: [
      'Each row is a fresh child process (`node --expose-gc`): RSS before `ModelRuntime.load`, after it, and after building the listed stages (after `global.gc()`). ' +
        'Δ RSS = after build − before load. checkpoint weights = `runtime.weightBytes()` (every tensor as F32); stage weights = the initializers the sessions hold. ' +
        'Δ RSS − stage weights = what the sessions cost beyond their initializers (ORT arenas, prepacked copies, graph bytes, the checkpoint reader). ' +
        'Δ RSS / checkpoint weights ≈ copies of the model the process holds; for tiny models the fixed per-session cost dominates.',
      `split = draft [0,${E}) + exit, verify [${E},${L}) + head — the sessions self-spec builds.`,
    ],
    columns: [
      { key: 'config', label: 'stages built' },
      { key: 'rssBefore', label: 'RSS before MiB', fmt: 'mib' },
      { key: 'rssLoaded', label: 'after load MiB', fmt: 'mib' },
      { key: 'rssBuilt', label: 'after build MiB', fmt: 'mib' },
      { key: 'deltaRss', label: 'Δ RSS MiB', fmt: 'mib' },
      { key: 'weightBytes', label: 'checkpoint weights MiB', fmt: 'mib' },
      { key: 'stageWeightBytes', label: 'stage weights MiB', fmt: 'mib' },
      { key: 'nonWeight', label: 'Δ RSS − stage weights MiB', fmt: 'mib' },
      { key: 'ratio', label: 'Δ RSS / checkpoint weights', fmt: 'x' },
    ],
    rows: memRows,
  });
  for (const which of ['load', 'full', 'split', 'both']) {
    try {
      const m = rssProbe(dir, which);
      const deltaRss = m.rssBuilt - m.rssBefore;
      memRows.push({
        config: { load: 'none (load only)', full: 'full', split: `split (E = ${m.exitLayer})`, both: 'full + split' }[which],
        ...m,
        deltaRss,
        nonWeight: deltaRss - m.stageWeightBytes,
        ratio: deltaRss / m.weightBytes,
      });
    } catch (err) {
      memory.notes.push(`**${which}: FAILED** ${String(err.message ?? err)}`);
      report.warnings.push(`memory probe ${which} failed`);
    }
  }
  report.summary.memory = Object.fromEntries(memRows.map((r) => [r.which, { deltaRssBytes: r.deltaRss, ratio: r.ratio }]));

  // (e) session options
  const optRows = [];
  const threadChoices = [1, 2];
  for (const t of threadChoices) {
    for (const spinning of [false, true]) {
      for (const prepacking of [true, false]) {
        const rt = await ModelRuntime.load(dir, { threads: t, spinning, prepacking });
        try {
          const stage = await rt.stage(specs.full);
          const d = await measureDecode(Bench, rt, stage, { context, time: quick ? 100 : 1000, iterations: quick ? 5 : 30 });
          optRows.push({
            threads: t,
            spinning: spinning ? 'on' : 'off',
            prepacking: prepacking ? 'on' : 'off',
            buildMs: stage.buildMs,
            ...d,
          });
        } finally {
          await rt.dispose();
        }
      }
    }
  }
  const bestOpt = optRows.reduce((a, b) => (b.stepP50Ms < a.stepP50Ms ? b : a));
  for (const r of optRows) r.vsBest = r.stepP50Ms / bestOpt.stepP50Ms;
  section({
    id: 'sessionOptions',
    title: `(e) Session options → decode step (context ${context}) and build time, full stage`,
    notes: [
      'One fresh runtime per row; build ms is a single build. step/ORT/overhead as in (a). "vs fastest" = step ms (p50) / the fastest row\'s. ' +
        'The machine has few cores and may be shared: with more threads than idle cores, spinning threads compete with each other and with JS.',
    ],
    columns: [
      { key: 'threads', label: 'threads', fmt: 'int' },
      { key: 'spinning', label: 'spinning' },
      { key: 'prepacking', label: 'prepacking' },
      { key: 'stepP50Ms', label: 'step ms (p50)', fmt: 'f3' },
      { key: 'ortP50Ms', label: 'ORT ms (p50)', fmt: 'f3' },
      { key: 'overhead', label: 'overhead (p50)', fmt: 'signedpct' },
      { key: 'stepMs', label: 'step ms (mean)', fmt: 'f3' },
      { key: 'vsBest', label: 'vs fastest', fmt: 'x' },
      { key: 'buildMs', label: 'build ms', fmt: 'f1' },
    ],
    rows: optRows,
  });
  report.summary.fastestSessionOptions = {
    threads: bestOpt.threads,
    spinning: bestOpt.spinning,
    prepacking: bestOpt.prepacking,
    stepP50Ms: bestOpt.stepP50Ms,
  };
  return report;
}

if (process.argv[1] === thisFile && process.argv[2] === '--rss-probe') {
  await rssProbeMain(JSON.parse(process.argv[3]));
}
