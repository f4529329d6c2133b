/** The markdown report of an evaluation: three tables and the notes that qualify them. */
import type { EvalJson, EvalMode } from './types.js';

export const NOTES = {
  windows:
    'Perplexity uses non-overlapping windows of up to max_position_embeddings tokens; each token after the first is predicted once, from the tokens before it in its window.',
  calm: "CALM perplexity is a teacher-forced estimate: all exits come from one full pass, so every layer's K/V is fully computed (no state propagation) and λ is constant (no decay schedule).",
  lambada:
    'LAMBADA-style: a story minus its final word is the context; the first word of a greedy continuation must equal the word (punctuation and quotes stripped).',
  speed:
    'tokens/s: new tokens over wall time of the LAMBADA generations (prefill included); decode tokens/s: one longer generation per mode with EOS ignored. Stage build time is excluded (a warm-up run precedes each mode).',
};

const num = (x: number | undefined, digits: number) => (x === undefined ? '' : Number.isFinite(x) ? x.toFixed(digits) : String(x));

function headOf(row: EvalMode): string {
  return row.head ?? (row.kind === 'original' ? 'original' : '');
}

/** Perplexity, last-word accuracy and tokens/s per mode, for a model of `L` layers. */
export function renderMarkdown(json: EvalJson, L: number): string {
  const lines: string[] = [`# Evaluation: ${json.model} (${L} layers)`, ''];
  const ppl = json.perplexity;
  lines.push(`## Perplexity (${ppl.rows[0]?.tokens ?? 0} predicted tokens, ${ppl.windows} window(s) of ≤ ${ppl.windowSize})`, '');
  lines.push('| mode | head | perplexity | NLL / token | mean exit layer |', '|---|---|---:|---:|---:|');
  for (const r of ppl.rows) {
    lines.push(`| ${r.label} | ${headOf(r)} | ${num(r.perplexity, 3)} | ${num(r.nll / r.tokens, 4)} | ${num(r.meanExitLayer, 2)} |`);
  }
  lines.push('', `${NOTES.windows} ${NOTES.calm}`, '');

  const lam = json.lambada;
  lines.push(`## LAMBADA-style last word (${lam.examples} examples, greedy, ≤ ${lam.maxNewTokens} new tokens)`, '');
  if (lam.rows.length) {
    lines.push('| mode | head | accuracy | correct |', '|---|---|---:|---:|');
    for (const r of lam.rows) lines.push(`| ${r.label} | ${headOf(r)} | ${num(100 * r.accuracy, 1)}% | ${r.correct}/${r.examples} |`);
    lines.push('', NOTES.lambada, '');
  } else {
    lines.push('Skipped: no stories to draw examples from (or no tokenizer, or lambadaExamples = 0).', '');
  }

  lines.push('## Speed (tokens/s)', '');
  lines.push(
    `| mode | tokens/s (LAMBADA) | decode tokens/s (${json.speed.decodeTokens} tokens) | layers/token | acceptance |`,
    '|---|---:|---:|---:|---:|',
  );
  for (const r of json.speed.rows) {
    const acceptance = r.acceptanceRate === undefined ? '' : `${num(100 * r.acceptanceRate, 1)}%`;
    lines.push(
      `| ${r.label} | ${r.newTokens ? num(r.tokensPerSecond, 1) : '—'} | ${num(r.decodeTokensPerSecond, 1)} | ${num(r.meanLayersPerToken, 2)} | ${acceptance} |`,
    );
  }
  lines.push('', NOTES.speed, '');
  return lines.join('\n');
}
