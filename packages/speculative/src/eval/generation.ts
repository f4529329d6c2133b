/**
 * The decoded part of an evaluation: every planned mode runs the last-word examples greedily (accuracy and
 * tokens/s over those runs), then one longer decode with EOS ignored (decode tokens/s). A one-token warm-up
 * per mode builds its stages first, so build time is not timed.
 */
import type { ModelRuntime } from '@mexit/model';
import { MexitGenerator, type GenerationResult } from '../generator.js';
import type { GenerateOptions } from '../options.js';
import { firstWord, LAMBADA_MAX_NEW_TOKENS, type TokenizedExample } from './lambada.js';
import type { PlannedMode } from './plan.js';
import type { LambadaRow, SpeedRow } from './types.js';

interface Tally {
  correct: number;
  newTokens: number;
  timeMs: number;
  layers: number;
  drafted: number;
  accepted: number;
}

function add(t: Tally, result: GenerationResult): void {
  const s = result.stats;
  t.newTokens += s.newTokens;
  t.timeMs += s.timeMs.total;
  t.layers += (s.meanLayersPerToken ?? 0) * s.newTokens;
  t.drafted += s.drafted;
  t.accepted += s.accepted;
}

export interface GenerationRows {
  lambada: LambadaRow[];
  speed: SpeedRow[];
}

/**
 * Decodes `examples` (their predictions filled in, by mode label) and a `decodeTokens`-token run from
 * `speedPrompt` in each mode.
 */
export async function decodeModes(
  runtime: ModelRuntime,
  modes: readonly PlannedMode[],
  examples: TokenizedExample[],
  speedPrompt: number[],
  decodeTokens: number,
  progress: (message: string) => void,
): Promise<GenerationRows> {
  const generator = new MexitGenerator(runtime);
  const lambada: LambadaRow[] = [];
  const speed: SpeedRow[] = [];
  if (!examples.length && !decodeTokens) return { lambada, speed }; // nothing to time
  for (const m of modes) {
    progress(`generation: ${m.label}`);
    const { options: modeOptions, ...mode } = m;
    const greedy: GenerateOptions = { ...modeOptions, doSample: false };
    await generator.generate(speedPrompt, { ...greedy, maxNewTokens: 1 });
    const t: Tally = { correct: 0, newTokens: 0, timeMs: 0, layers: 0, drafted: 0, accepted: 0 };
    for (const ex of examples) {
      const result = await generator.generate(ex.ids, { ...greedy, maxNewTokens: LAMBADA_MAX_NEW_TOKENS });
      add(t, result);
      const prediction = firstWord(result.text);
      ex.predictions[m.label] = prediction;
      if (prediction === ex.target) t.correct++;
    }
    const row: SpeedRow = {
      ...mode,
      newTokens: t.newTokens,
      timeMs: t.timeMs,
      tokensPerSecond: t.timeMs > 0 ? t.newTokens / (t.timeMs / 1000) : 0,
    };
    if (examples.length) lambada.push({ ...mode, examples: examples.length, correct: t.correct, accuracy: t.correct / examples.length });
    if (decodeTokens > 0) {
      const before = t.newTokens;
      const beforeMs = t.timeMs;
      add(t, await generator.generate(speedPrompt, { ...greedy, maxNewTokens: decodeTokens, eosTokenIds: [] }));
      row.decodeTokens = t.newTokens - before;
      row.decodeTokensPerSecond = row.decodeTokens / ((t.timeMs - beforeMs) / 1000);
    }
    if (m.kind === 'calm' && t.newTokens) row.meanLayersPerToken = t.layers / t.newTokens;
    if (m.kind === 'self-spec') row.acceptanceRate = t.drafted ? t.accepted / t.drafted : 0;
    speed.push(row);
  }
  return { lambada, speed };
}
