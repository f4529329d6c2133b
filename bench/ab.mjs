#!/usr/bin/env node
/**
 * Paired before/after of two checkouts of the engine: `node --expose-gc bench/ab.mjs --before DIR [--after DIR]
 * [--model DIR] [--passes 3] [--tokens 128] [--name NAME]`. DIR is a repository root with built packages
 * (`pnpm build`); --after defaults to this checkout. Per pass and prompt, before and after run back to back
 * (order alternating) for ar and for self-spec with the model's recorded settings, so machine noise hits both
 * alike; half the passes load the before side first, half the after side (load order moves speed by a few
 * percent). Greedy, EOS off: every run makes exactly --tokens tokens, and before/after ids must be equal.
 * Writes bench/results/<name>.md and .json with medians and after ÷ before ratios.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const rootDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

function parseArgs(argv) {
  const o = {
    before: undefined,
    after: rootDir,
    model: path.join(rootDir, 'fixtures/models/tinystories-ee'),
    passes: 3,
    tokens: 128,
    name: 'ab',
  };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[++i];
    if (!(key in o) || value === undefined) {
      console.error(
        'usage: node --expose-gc bench/ab.mjs --before DIR [--after DIR] [--model DIR] [--passes N] [--tokens N] [--name NAME]',
      );
      process.exit(2);
    }
    o[key] = ['passes', 'tokens'].includes(key) ? Number(value) : value;
  }
  if (!o.before) {
    console.error('bench/ab.mjs: --before DIR is required');
    process.exit(2);
  }
  return o;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** The generator class of a checkout (the class was renamed; both names are tried). */
async function load(repo, model) {
  const mod = await import(pathToFileURL(path.join(path.resolve(repo), 'packages/speculative/dist/index.js')).href);
  const Generator = mod.MexitGenerator ?? mod.SelfSpeculativeGenerator;
  return Generator.fromPretrained(model);
}

function storyPrompts(file, count) {
  const stories = fs
    .readFileSync(file, 'utf8')
    .split(/^<\|endoftext\|>\s*$/m)
    .map((s) => s.trim())
    .filter(Boolean);
  return stories.slice(0, count).map((story) => (/^[\s\S]*?[.!?](?=\s|$)/.exec(story)?.[0] ?? story.slice(0, 80)).replace(/\s+/g, ' '));
}

const o = parseArgs(process.argv.slice(2));
const base = { maxNewTokens: o.tokens, eosTokenIds: [], doSample: false };
const modes = { ar: { mode: 'ar' }, 'self-spec': { mode: 'self-spec' } };
const tps = { before: { ar: [], 'self-spec': [] }, after: { ar: [], 'self-spec': [] } };
const ratios = { ar: [], 'self-spec': [] };
let idMismatches = 0;
let prompts;
const load1 = os.loadavg()[0];
// Which side is loaded first changes its speed by a few percent (measured: the first-loaded runtime ran ar
// 5% slower in one order and 4% faster in the other), so each half of the passes loads them the other way.
let pass = 0;
for (const first of ['before', 'after']) {
  const second = first === 'before' ? 'after' : 'before';
  const sides = {};
  sides[first] = await load(o[first], o.model);
  sides[second] = await load(o[second], o.model);
  prompts ??= storyPrompts(path.join(rootDir, 'fixtures/data/valid-small.txt'), 8).map((t) => sides.after.encodePrompt(t));
  for (const side of Object.values(sides))
    for (const m of Object.values(modes)) await side.generate(prompts[0], { ...base, ...m, maxNewTokens: 4 });
  const passes = first === 'before' ? Math.ceil(o.passes / 2) : Math.floor(o.passes / 2);
  for (let half = 0; half < passes; half++, pass++) {
    for (let p = 0; p < prompts.length; p++) {
      for (const [label, m] of Object.entries(modes)) {
        const order = (pass + p) % 2 === 0 ? ['before', 'after'] : ['after', 'before'];
        const out = {};
        for (const side of order) {
          globalThis.gc?.();
          out[side] = await sides[side].generate(prompts[p], { ...base, ...m });
          tps[side][label].push(out[side].stats.tokensPerSecond);
        }
        if (out.before.ids.join() !== out.after.ids.join()) idMismatches++;
        ratios[label].push(out.after.stats.tokensPerSecond / out.before.stats.tokensPerSecond);
      }
    }
    console.log(
      `pass ${pass + 1}/${o.passes} (${first} loaded first): ar after/before ${median(ratios.ar).toFixed(3)}, self-spec ${median(ratios['self-spec']).toFixed(3)}`,
    );
  }
  for (const side of Object.values(sides)) await side.dispose();
}
const rows = Object.keys(modes).map((label) => ({
  mode: label,
  before: median(tps.before[label]),
  after: median(tps.after[label]),
  ratio: median(ratios[label]),
  ratioMin: Math.min(...ratios[label]),
  ratioMax: Math.max(...ratios[label]),
}));
const speedup = (side) => median(tps[side]['self-spec']) / median(tps[side].ar);
const machine = {
  cpu: os.cpus()[0]?.model,
  cores: os.cpus().length,
  node: process.version,
  date: new Date().toISOString(),
  loadavg: [load1, os.loadavg()[0]],
};
const json = {
  machine,
  settings: { ...o, prompts: prompts.length },
  rows,
  selfSpecOverAr: { before: speedup('before'), after: speedup('after') },
  idMismatches,
};
const md = [
  `# Paired before/after: ${path.basename(o.model)}`,
  '',
  `${machine.cpu}, ${machine.cores} cores, node ${machine.node}, ${machine.date}; load ${load1.toFixed(2)} → ${os.loadavg()[0].toFixed(2)}.`,
  `before = \`${o.before}\`, after = \`${o.after}\`; ${o.passes} passes × ${prompts.length} prompts × ${o.tokens} tokens, greedy, EOS off, recorded settings; half the passes load before first, half after first.`,
  '',
  '| mode | before tok/s | after tok/s | after ÷ before (median of pairs) | range |',
  '|---|---:|---:|---:|---|',
  ...rows.map(
    (r) =>
      `| ${r.mode} | ${r.before.toFixed(0)} | ${r.after.toFixed(0)} | **${r.ratio.toFixed(3)}** | ${r.ratioMin.toFixed(2)}–${r.ratioMax.toFixed(2)} |`,
  ),
  '',
  `self-spec ÷ ar: before ${json.selfSpecOverAr.before.toFixed(2)}×, after ${json.selfSpecOverAr.after.toFixed(2)}×. Ids equal between before and after in ${rows.length * o.passes * prompts.length - idMismatches} of ${rows.length * o.passes * prompts.length} pairs.`,
  '',
].join('\n');
fs.mkdirSync(path.join(rootDir, 'bench/results'), { recursive: true });
fs.writeFileSync(path.join(rootDir, `bench/results/${o.name}.md`), md);
fs.writeFileSync(path.join(rootDir, `bench/results/${o.name}.json`), `${JSON.stringify(json, null, 2)}\n`);
console.log(md);
if (idMismatches) process.exit(1);
