/** Text output of the CLI: usage screens, the logits summary, the generation stats line, colours. */
import { softmax, topKIndices } from '@mexit/core';
import type { MexitTokenizer } from '@mexit/model';
import type { GenerationStats } from '@mexit/speculative';
import type { FlagSpec } from './args.js';

/** Where the CLI writes; tests pass collecting fakes. */
export interface CliIo {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
  /** stdout is a terminal (enables colour). */
  isTTY?: boolean;
  /** stderr is a terminal (enables the in-place progress line while a model loads and its stages build). */
  stderrIsTTY?: boolean;
  /** Environment (NO_COLOR); default process.env. */
  env?: Record<string, string | undefined>;
  /** Where `mexit chat` reads its lines; default process.stdin (tests pass a PassThrough). */
  stdin?: NodeJS.ReadableStream;
}

/** Colour only on a terminal, and not when NO_COLOR is set to a non-empty value (no-color.org). */
export function useColour(io: CliIo, json: boolean): boolean {
  const noColor = (io.env ?? process.env).NO_COLOR;
  return !json && io.isTTY === true && (noColor === undefined || noColor === '');
}

export const GREEN = '\x1b[32m';
export const RESET = '\x1b[0m';

/** Usage screen of one command: synopsis, description and every flag with its default, under its group's heading. */
export function commandUsage(command: string, synopsis: string, description: string, flags: readonly FlagSpec[]): string {
  const rows = flags.map((f) => {
    const name = `${f.short ? `-${f.short}, ` : '    '}--${f.name}${f.value ? ` ${f.value}` : ''}${f.multiple ? ' (repeatable)' : ''}`;
    const def = f.default !== undefined ? ` (default: ${f.default})` : f.type === 'boolean' ? ' (default: off)' : '';
    return { group: f.group ?? 'Options', name, help: f.help + def };
  });
  const width = Math.min(36, rows.reduce((w, r) => Math.max(w, r.name.length), 0) + 2);
  const sections: string[] = [];
  for (const group of new Set(rows.map((r) => r.group))) {
    const lines = rows
      .filter((r) => r.group === group)
      .map(({ name, help }) => (name.length + 2 > width ? `  ${name}\n  ${' '.repeat(width)}${help}` : `  ${name.padEnd(width)}${help}`));
    sections.push(`${group}:\n${lines.join('\n')}`);
  }
  return `Usage: mexit ${command} ${synopsis}\n\n${description}\n\n${sections.join('\n\n')}\n`;
}

/** Top-level usage: the commands. */
export function rootUsage(commands: readonly { name: string; summary: string }[]): string {
  const width = commands.reduce((w, c) => Math.max(w, c.name.length), 0) + 4;
  return (
    'Usage: mexit <command> [options]\n\n' +
    'Self-speculative decoding with early exits, on CPU (onnxruntime-node).\n\n' +
    'Commands:\n' +
    commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`).join('\n') +
    '\n\nRun `mexit <command> --help` for the options of a command.\n' +
    'From the repository: `pnpm mexit <command> ...`.\n'
  );
}

/** How a token id reads: decoded text (JSON-quoted) when a tokenizer exists, else the id alone. */
export function tokenLabel(id: number, tokenizer: MexitTokenizer | null): string {
  if (!tokenizer) return '';
  try {
    return JSON.stringify(tokenizer.decode([id]));
  } catch {
    return '?';
  }
}

/**
 * Top-10 summary of one row of scores. `kind` 'logits' shows logit and softmax probability;
 * 'logprobs' shows the log-probability and its exp.
 */
export function scoresSummary(scores: Float32Array, kind: 'logits' | 'logprobs', tokenizer: MexitTokenizer | null, title: string): string {
  const k = Math.min(10, scores.length);
  const top = topKIndices(scores, k, new Int32Array(k));
  const probs = kind === 'logits' ? softmax(scores, new Float32Array(scores.length)) : null;
  const lines = [`${title} — top ${k} of ${scores.length}:`];
  lines.push(
    `  ${'rank'.padStart(4)}  ${'id'.padStart(7)}  ${(kind === 'logits' ? 'logit' : 'logprob').padStart(10)}  ${'prob'.padStart(8)}  token`,
  );
  for (let r = 0; r < k; r++) {
    const id = top[r];
    const p = probs ? probs[id] : Math.exp(scores[id]);
    lines.push(
      `  ${String(r + 1).padStart(4)}  ${String(id).padStart(7)}  ${scores[id].toFixed(4).padStart(10)}  ${p.toFixed(4).padStart(8)}  ${tokenLabel(id, tokenizer)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * One line of generation statistics, e.g.
 * `42 tokens · 118.3 tok/s · mode self-spec E=3 d=4 · 78% accepted · layer bound 1.9×`. The layer bound
 * is an upper limit from layer counts (GenerationStats.layerBoundSpeedup), not a measurement; the
 * measured speed is the tok/s beside it.
 */
export function statsLine(stats: GenerationStats, numLayers: number): string {
  const parts = [`${stats.newTokens} token${stats.newTokens === 1 ? '' : 's'}`, `${formatRate(stats.tokensPerSecond)} tok/s`];
  let mode = `mode ${stats.mode}`;
  const head = stats.mode !== 'ar' && stats.exitHead && stats.exitHead !== 'shared' ? ` (${stats.exitHead} head)` : '';
  const quantized = stats.draftQuantization && stats.draftQuantization !== 'none' ? ` ${stats.draftQuantization} drafts` : '';
  const drafter = stats.drafter && stats.drafter !== 'early-exit' ? ` ${stats.drafter} drafter` : '';
  if (stats.mode === 'self-spec')
    mode += drafter ? ` d=${stats.numSpeculations}${drafter}` : ` E=${stats.exitLayer} d=${stats.numSpeculations}${head}${quantized}`;
  else if (stats.mode === 'early-exit') mode += ` E=${stats.exitLayer}${head}`;
  else if (stats.mode === 'acd' && stats.contrastLayers) mode += ` ${stats.contrastLayers[0]},${stats.contrastLayers[1]}${head}`;
  parts.push(mode);
  if (stats.mode === 'self-spec') {
    parts.push(`${Math.round(stats.acceptanceRate * 100)}% accepted`);
    if (stats.layerBoundSpeedup !== undefined) parts.push(`layer bound ${stats.layerBoundSpeedup.toFixed(1)}×`);
  }
  if (stats.mode === 'calm' && stats.meanLayersPerToken !== undefined) {
    parts.push(`${stats.meanLayersPerToken.toFixed(2)} of ${numLayers} layers/token`);
  }
  parts.push(`stop: ${stats.stopReason}`);
  return parts.join(' · ');
}

function formatRate(x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : '∞';
}
