/**
 * `mexit eval`: a thin wrapper over `evaluate()` of @mexit/speculative (eval.ts), which scores the model
 * on a text file and writes a report. The function is looked up at run time so that the CLI builds and
 * reports a clear error while that module is absent.
 */
import { existsSync } from 'node:fs';
import { MexitError, OptionsError } from '@mexit/core';
import { ModelRuntime } from '@mexit/model';
import { COMMON_FLAGS, DEFAULT_DATA_FILE, intFlag, parseFlags, repoPath, resolveModelDir, type FlagSpec } from '../args.js';
import { commandUsage, type CliIo } from '../render.js';

export const EVAL_FLAGS: readonly FlagSpec[] = [
  { name: 'data', type: 'string', value: 'FILE', default: DEFAULT_DATA_FILE, help: 'text file to evaluate on' },
  { name: 'max-tokens', type: 'string', value: 'N', default: "evaluate()'s default", help: 'evaluate at most N tokens of the data' },
  ...COMMON_FLAGS,
];

export function evalUsage(): string {
  return commandUsage(
    'eval',
    '[--model DIR] [--data FILE] [--max-tokens N] [--json]',
    'Evaluate the model (and its exits) on a text file and print the report (markdown, or JSON with --json).',
    EVAL_FLAGS,
  );
}

export interface EvalRequest {
  modelDir: string;
  dataPath: string;
  maxTokens?: number;
  threads?: number;
  json: boolean;
}

/** The part of the evaluate() contract the CLI relies on. */
type Evaluate = (runtime: ModelRuntime, options: { dataPath: string; maxTokens?: number }) => Promise<{ markdown: string }>;

export function parseEvalArgs(argv: string[]): EvalRequest | 'help' {
  const { values } = parseFlags('eval', argv, EVAL_FLAGS, false);
  if (values.help) return 'help';
  return {
    modelDir: resolveModelDir(values.model as string | undefined),
    dataPath: (values.data as string | undefined) ?? repoPath(DEFAULT_DATA_FILE),
    maxTokens: intFlag('max-tokens', values['max-tokens'] as string | undefined),
    threads: intFlag('threads', values.threads as string | undefined),
    json: values.json === true,
  };
}

/** Looks up evaluate() in @mexit/speculative; MexitError EVAL_UNAVAILABLE when it is not there. */
export async function loadEvaluate(): Promise<Evaluate> {
  const speculative: Record<string, unknown> = await import('@mexit/speculative');
  const evaluate = speculative.evaluate;
  if (typeof evaluate !== 'function') {
    throw new MexitError('EVAL_UNAVAILABLE', '@mexit/speculative has no evaluate() yet (packages/speculative/src/eval.ts); `mexit eval` needs it');
  }
  return evaluate as Evaluate;
}

export async function runEval(request: EvalRequest, io: CliIo): Promise<number> {
  const evaluate = await loadEvaluate();
  if (!existsSync(request.dataPath)) throw new OptionsError('DATA_MISSING', `evaluation data not found: ${request.dataPath}`);
  const runtime = await ModelRuntime.load(request.modelDir, { threads: request.threads });
  try {
    const options: { dataPath: string; maxTokens?: number } = { dataPath: request.dataPath };
    if (request.maxTokens !== undefined) options.maxTokens = request.maxTokens;
    const report = await evaluate(runtime, options);
    io.stdout.write(request.json ? JSON.stringify(report) + '\n' : report.markdown.endsWith('\n') ? report.markdown : report.markdown + '\n');
    return 0;
  } finally {
    await runtime.dispose();
  }
}
