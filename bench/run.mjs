#!/usr/bin/env node
/**
 * Benchmark runner: `node --expose-gc bench/run.mjs [--suite core|model|speculative|serve|all] [--model DIR] [--quick]`
 * (`pnpm bench` builds first and runs every suite). Benches import the BUILT packages (packages/* /dist).
 *
 * Each suite produces one or more reports; every report is printed to stdout as Markdown and written to
 * bench/results/<name>.md and bench/results/<name>.json (same numbers, plus machine information).
 * A report is { name, title, notes[], sections[{ title, notes[], columns[{ key, label, fmt }], rows[] }],
 * summary{}, warnings[], figures?(json) → [{ file, svg }] }; the bench modules build them and this file renders them
 * (`figures` gets the report's JSON as written, machine included; its SVGs go to bench/results/ too).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { clock, section } from './progress.mjs';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const rootDir = path.dirname(benchDir);
const resultsDir = path.join(benchDir, 'results');
const BUNDLED_MODEL = path.join(rootDir, 'fixtures/models/tinystories-ee');
const GOLDEN_MODEL = path.join(rootDir, 'fixtures/goldens/gpt2-tiny');
const SUITES = ['core', 'model', 'speculative', 'serve'];

function usage(message) {
  if (message) console.error(`bench/run.mjs: ${message}`);
  console.error('usage: node --expose-gc bench/run.mjs [--suite core|model|speculative|serve|all] [--model DIR] [--quick]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { suite: 'all', model: undefined, quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    if (a === '--suite') opts.suite = value();
    else if (a.startsWith('--suite=')) opts.suite = a.slice(8);
    else if (a === '--model') opts.model = value();
    else if (a.startsWith('--model=')) opts.model = a.slice(8);
    else if (a === '--quick') opts.quick = true;
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  if (opts.suite !== 'all' && !SUITES.includes(opts.suite)) usage(`unknown suite "${opts.suite}"`);
  if (opts.model) {
    opts.model = path.resolve(opts.model);
    if (!fs.existsSync(path.join(opts.model, 'config.json'))) usage(`--model ${opts.model} has no config.json`);
  }
  return opts;
}

/** True when `dir` holds a loadable checkpoint (config + weights), e.g. once the bundled model is trained. */
function hasModel(dir) {
  if (!fs.existsSync(path.join(dir, 'config.json'))) return false;
  return ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json'].some((f) =>
    fs.existsSync(path.join(dir, f)),
  );
}

function readVersion(pkgJson) {
  try {
    return JSON.parse(fs.readFileSync(pkgJson, 'utf8')).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model?.trim() ?? 'unknown',
    cores: os.availableParallelism(),
    logicalCpus: cpus.length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    onnxruntime: readVersion(path.join(rootDir, 'packages/model/node_modules/onnxruntime-node/package.json')),
    tinybench: readVersion(path.join(rootDir, 'node_modules/tinybench/package.json')),
    loadAverage1m: +os.loadavg()[0].toFixed(2),
    exposeGc: typeof globalThis.gc === 'function',
  };
}

// ---------------------------------------------------------------- formatting

/** Formats one cell: numbers by `fmt` ('int', 'f1'..'f4', 'pct', 'x', 'mb', 'mib'), anything else as text. */
function formatCell(value, fmt) {
  if (value === undefined || value === null || (typeof value === 'number' && Number.isNaN(value))) return '–';
  if (typeof value !== 'number') return String(value);
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '−∞';
  switch (fmt) {
    case 'int':
      return Math.round(value).toLocaleString('en-US');
    case 'f0':
      return value.toFixed(0);
    case 'f1':
      return value.toFixed(1);
    case 'f2':
      return value.toFixed(2);
    case 'f3':
      return value.toFixed(3);
    case 'f4':
      return value.toFixed(4);
    case 'pct':
      return `${(value * 100).toFixed(1)}%`;
    case 'x':
      return `${value.toFixed(2)}×`;
    case 'signedpct':
      return `${value >= 0 ? '+' : ''}${(value * 100).toFixed(1)}%`;
    case 'mib':
      return (value / 2 ** 20).toFixed(1);
    default:
      return Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 1 ? value.toFixed(2) : value.toPrecision(3);
  }
}

function markdownTable(columns, rows) {
  const header = columns.map((c) => c.label);
  const body = rows.map((r) => columns.map((c) => formatCell(r[c.key], c.fmt).replace(/\|/g, '\\|')));
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length), 3));
  const numeric = columns.map((c) => c.fmt !== undefined && c.fmt !== 'text');
  const line = (cells) => `| ${cells.map((cell, i) => (numeric[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

function renderMarkdown(report, machine) {
  const out = [`# ${report.title}`, ''];
  const env = [
    ['date', machine.date],
    ['CPU', `${machine.cpu} (${machine.cores} cores available, ${machine.logicalCpus} logical CPUs, ${machine.memoryGiB} GiB RAM)`],
    ['OS', machine.platform],
    ['node / onnxruntime-node / tinybench', `${machine.node} / ${machine.onnxruntime} / ${machine.tinybench}`],
    ['ORT intra-op threads', report.threads ?? '–'],
    ['load average (1 min) at start → end', `${machine.loadAverage1m} → ${report.loadAverageEnd ?? '–'}`],
    ['mode', machine.quick ? '--quick (smoke run: few samples, numbers are rough)' : 'full'],
    ['suite duration', `${report.durationS?.toFixed(1) ?? '–'} s`],
  ];
  out.push(
    markdownTable(
      [
        { key: 0, label: 'machine' },
        { key: 1, label: '' },
      ],
      env.map(([k, v]) => [k, String(v)]),
    ),
    '',
  );
  for (const w of report.warnings ?? []) out.push(`> **WARNING:** ${w}`, '');
  for (const n of report.notes ?? []) out.push(n, '');
  for (const s of report.sections) {
    out.push(`## ${s.title}`, '');
    for (const n of s.notes ?? []) out.push(n, '');
    if (s.error) out.push(`**FAILED:** ${s.error}`, '');
    if (s.rows?.length) out.push(markdownTable(s.columns, s.rows), '');
  }
  return out.join('\n');
}

function writeReport(report, machine) {
  fs.mkdirSync(resultsDir, { recursive: true });
  const markdown = renderMarkdown(report, machine);
  fs.writeFileSync(path.join(resultsDir, `${report.name}.md`), markdown);
  const json = {
    name: report.name,
    title: report.title,
    machine: { ...machine, threads: report.threads, loadAverageEnd: report.loadAverageEnd },
    durationS: report.durationS,
    notes: report.notes ?? [],
    warnings: report.warnings ?? [],
    summary: report.summary ?? {},
    sections: Object.fromEntries(
      report.sections.map((s) => [s.id, { title: s.title, notes: s.notes ?? [], error: s.error, rows: s.rows ?? [] }]),
    ),
  };
  fs.writeFileSync(path.join(resultsDir, `${report.name}.json`), `${JSON.stringify(json, null, 2)}\n`);
  // Figures (SVG) are drawn from the JSON just written, so `node bench/figures.mjs` can redraw them later.
  const figures = [];
  try {
    for (const { file, svg } of report.figures?.(json) ?? []) {
      fs.writeFileSync(path.join(resultsDir, file), svg);
      figures.push(file);
    }
  } catch (err) {
    console.error(`figures of ${report.name} failed:`, err);
  }
  console.log(`\n${markdown}`);
  console.log(`→ wrote bench/results/${report.name}.md and .json${figures.length ? `, ${figures.join(', ')}` : ''}\n`);
}

// ---------------------------------------------------------------- core suite

/** In --quick mode every Bench gets a small time/iteration budget, whatever its creator asked for. */
function benchClass(quick) {
  if (!quick) return Bench;
  return class QuickBench extends Bench {
    constructor(options = {}) {
      super({ ...options, time: 50, iterations: 2, warmupTime: 20, warmupIterations: 1 });
    }
  };
}

const taskStats = (task) => {
  const r = task.result;
  if (r.state !== 'completed') return { error: r.error ? String(r.error.stack ?? r.error) : `task ended in state ${r.state}` };
  return r;
};

async function runCoreSuite(opts) {
  const started = performance.now();
  const BenchClass = benchClass(opts.quick);
  const report = {
    name: 'core',
    title: 'core: numerics over a 50,257-entry vocabulary and safetensors load throughput',
    threads: 'n/a (pure JS)',
    sections: [],
    warnings: [],
    summary: {},
  };

  const numerics = {
    id: 'numerics',
    title: 'Numerics (one call = one full pass over the 50,257 logits)',
    notes: [
      'ops/s and µs/op are means over tinybench samples; p50 is the median latency; ±rme is the relative margin of error of the mean (95%).',
      'The top-p / top-k rows are the whole HF warping pipeline (`LogitsWarper.probs`: penalty → temperature → top-k/top-p → renormalised probs).',
    ],
    columns: [
      { key: 'task', label: 'task' },
      { key: 'opsPerSecond', label: 'ops/s', fmt: 'int' },
      { key: 'usPerOp', label: 'µs/op (mean)', fmt: 'f1' },
      { key: 'usPerOpP50', label: 'µs/op (p50)', fmt: 'f1' },
      { key: 'rmePct', label: '±rme %', fmt: 'f1' },
      { key: 'samples', label: 'samples', fmt: 'int' },
    ],
    rows: [],
  };
  console.error(`bench: core › numerics (${clock(performance.now() - started)} elapsed)`);
  try {
    const { benchCoreNumerics } = await import('./core-numerics.bench.mjs');
    const bench = await benchCoreNumerics(BenchClass);
    for (const task of bench.tasks) {
      const r = taskStats(task);
      if (r.error) numerics.rows.push({ task: `${task.name} — FAILED: ${r.error.split('\n')[0]}` });
      else {
        numerics.rows.push({
          task: task.name,
          opsPerSecond: r.throughput.mean,
          usPerOp: r.latency.mean * 1000,
          usPerOpP50: r.latency.p50 * 1000,
          rmePct: r.latency.rme,
          samples: r.latency.samplesCount,
        });
      }
    }
  } catch (err) {
    numerics.error = `bench/core-numerics.bench.mjs failed: ${err?.stack ?? err}`;
    report.warnings.push(numerics.error.split('\n')[0]);
  }
  report.sections.push(numerics);

  const load = {
    id: 'checkpointLoad',
    title: 'safetensors load (open + every tensor read as F32)',
    notes: [
      'F32 MB/s = MB of F32 weights delivered per second (the same ~100 MB for both rows); file MB/s = MB of the file read per second. MB = 10⁶ bytes.',
      'The files are written to the OS temp directory first, so they are usually in the page cache: this measures parsing + conversion, not the disk.',
    ],
    columns: [
      { key: 'task', label: 'task' },
      { key: 'msPerLoad', label: 'ms/load (mean)', fmt: 'f1' },
      { key: 'msPerLoadP50', label: 'ms/load (p50)', fmt: 'f1' },
      { key: 'f32MBps', label: 'F32 MB/s', fmt: 'f0' },
      { key: 'fileMBps', label: 'file MB/s', fmt: 'f0' },
      { key: 'fileMB', label: 'file MB', fmt: 'f1' },
      { key: 'samples', label: 'samples', fmt: 'int' },
    ],
    rows: [],
  };
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mexit-bench-'));
  console.error(`bench: core › safetensors load (${clock(performance.now() - started)} elapsed)`);
  try {
    const { benchCheckpointLoad } = await import('./core-checkpoint.bench.mjs');
    const { bench, bytes, bytesByTask = {} } = await benchCheckpointLoad(BenchClass, tmpDir);
    for (const task of bench.tasks) {
      const r = taskStats(task);
      if (r.error) load.rows.push({ task: `${task.name} — FAILED: ${r.error.split('\n')[0]}` });
      else {
        const seconds = r.latency.mean / 1000;
        const fileBytes = bytesByTask[task.name];
        load.rows.push({
          task: task.name,
          msPerLoad: r.latency.mean,
          msPerLoadP50: r.latency.p50,
          f32MBps: bytes / seconds / 1e6,
          fileMBps: fileBytes ? fileBytes / seconds / 1e6 : undefined,
          fileMB: fileBytes ? fileBytes / 1e6 : undefined,
          samples: r.latency.samplesCount,
        });
      }
    }
  } catch (err) {
    load.error = `bench/core-checkpoint.bench.mjs failed: ${err?.stack ?? err}`;
    report.warnings.push(load.error.split('\n')[0]);
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
  report.sections.push(load);
  report.summary = {
    numerics: Object.fromEntries(
      numerics.rows.filter((r) => r.opsPerSecond).map((r) => [r.task, { opsPerSecond: r.opsPerSecond, usPerOp: r.usPerOp }]),
    ),
    checkpointLoad: Object.fromEntries(
      load.rows.filter((r) => r.f32MBps).map((r) => [r.task, { f32MBps: r.f32MBps, fileMBps: r.fileMBps }]),
    ),
  };
  report.durationS = (performance.now() - started) / 1000;
  report.loadAverageEnd = +os.loadavg()[0].toFixed(2);
  return [report];
}

// ---------------------------------------------------------------- model and speculative suites

async function runModelSuite(opts) {
  const { benchModelRuntime } = await import('./model-runtime.bench.mjs');
  const dirs = opts.model
    ? [opts.model]
    : [BUNDLED_MODEL, GOLDEN_MODEL].filter((d) => {
        if (hasModel(d)) return true;
        console.log(`(model suite: ${path.relative(rootDir, d)} has no checkpoint yet; skipped)`);
        return false;
      });
  const reports = [];
  const models = section('bench: model › runtime of', dirs.length);
  for (const dir of dirs) {
    models.next(path.basename(dir));
    const started = performance.now();
    const report = await benchModelRuntime(benchClass(opts.quick), dir, { quick: opts.quick });
    report.durationS = (performance.now() - started) / 1000;
    report.loadAverageEnd = +os.loadavg()[0].toFixed(2);
    reports.push(report);
  }
  return reports;
}

async function runSpeculativeSuite(opts) {
  const { benchSpeculative } = await import('./speculative.bench.mjs');
  let dir = opts.model;
  if (!dir) dir = hasModel(BUNDLED_MODEL) ? BUNDLED_MODEL : GOLDEN_MODEL;
  if (!opts.model && dir === GOLDEN_MODEL)
    console.log('(speculative suite: bundled model absent; falling back to the random golden model gpt2-tiny)');
  const started = performance.now();
  const golden = path.resolve(dir).startsWith(path.join(rootDir, 'fixtures/goldens'));
  const report = await benchSpeculative(dir, { quick: opts.quick, golden, dataFile: path.join(rootDir, 'fixtures/data/valid-small.txt') });
  report.durationS = (performance.now() - started) / 1000;
  report.loadAverageEnd = +os.loadavg()[0].toFixed(2);
  return [report];
}

async function runServeSuite(opts) {
  const { benchServe } = await import('./serve.bench.mjs');
  const started = performance.now();
  const report = await benchServe(opts.model ?? BUNDLED_MODEL, { quick: opts.quick });
  report.durationS = (performance.now() - started) / 1000;
  report.loadAverageEnd = +os.loadavg()[0].toFixed(2);
  return [report];
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (typeof globalThis.gc !== 'function')
    console.warn('note: run with `node --expose-gc` for stable memory numbers (global.gc is unavailable)');
  const machine = { ...machineInfo(), date: new Date().toISOString(), quick: opts.quick };
  const started = performance.now();
  const suites = opts.suite === 'all' ? SUITES : [opts.suite];
  const runners = { core: runCoreSuite, model: runModelSuite, speculative: runSpeculativeSuite, serve: runServeSuite };
  const failures = [];
  for (const [i, suite] of suites.entries()) {
    console.log(`=== suite ${suite}${opts.quick ? ' (quick)' : ''} ===`);
    console.error(`bench: suite ${suite} (${i + 1}/${suites.length}, ${clock(performance.now() - started)} elapsed)`);
    try {
      for (const report of await runners[suite](opts)) writeReport(report, machine);
    } catch (err) {
      failures.push(suite);
      console.error(`suite ${suite} failed:`, err);
    }
  }
  const totalS = (performance.now() - started) / 1000;
  console.log(
    `bench finished in ${totalS.toFixed(1)} s (${Math.floor(totalS / 60)} min ${(totalS % 60).toFixed(0)} s)${failures.length ? `; FAILED suites: ${failures.join(', ')}` : ''}`,
  );
  if (failures.length) process.exitCode = 1;
}

await main();
