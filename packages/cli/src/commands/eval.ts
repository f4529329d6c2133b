/**
 * `mexit eval`: a thin wrapper over `evaluate()` of @mexit/speculative (@mexit/speculative/eval), which scores the model
 * on a text file (perplexity per exit / ACD / CALM, last-word accuracy, tokens/s per mode).
 */
import { existsSync } from 'node:fs';
import { OptionsError } from '@mexit/core';
import { DEFAULT_EVAL_DATA_PATH, DEFAULT_EVAL_MAX_TOKENS, DEFAULT_LAMBADA_EXAMPLES, evaluate } from '@mexit/speculative/eval';
import { COMMON_FLAGS, intFlag, parseFlags, resolveModelDir, type FlagSpec } from '../args.js';
import { ProgressReporter } from '../progress.js';
import { commandUsage, type CliIo } from '../render.js';

export const EVAL_FLAGS: readonly FlagSpec[] = [
  {
    name: 'data',
    type: 'string',
    value: 'FILE',
    default: 'the bundled TinyStories validation stories',
    help: 'text file to evaluate on: stories separated by lines <|endoftext|>, or any plain text',
  },
  {
    name: 'max-tokens',
    type: 'string',
    value: 'N',
    default: String(DEFAULT_EVAL_MAX_TOKENS),
    help: 'perplexity over at most N tokens of the data',
  },
  {
    name: 'lambada-examples',
    type: 'string',
    value: 'N',
    default: String(DEFAULT_LAMBADA_EXAMPLES),
    help: 'stories used for the last-word task',
  },
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
  lambadaExamples?: number;
  threads?: number;
  json: boolean;
  verbose: boolean;
}

export function parseEvalArgs(argv: string[]): EvalRequest | 'help' {
  const { values } = parseFlags('eval', argv, EVAL_FLAGS, false);
  if (values.help) return 'help';
  return {
    modelDir: resolveModelDir(values.model as string | undefined),
    dataPath: (values.data as string | undefined) ?? DEFAULT_EVAL_DATA_PATH,
    maxTokens: intFlag('max-tokens', values['max-tokens'] as string | undefined),
    lambadaExamples: intFlag('lambada-examples', values['lambada-examples'] as string | undefined),
    threads: intFlag('threads', values.threads as string | undefined),
    json: values.json === true,
    verbose: values.verbose === true,
  };
}

export async function runEval(request: EvalRequest, io: CliIo): Promise<number> {
  if (!existsSync(request.dataPath)) throw new OptionsError('DATA_MISSING', `evaluation data not found: ${request.dataPath}`);
  const progress = ProgressReporter.for(io, request.json, request.verbose);
  const runtime = await progress.load(request.modelDir, { threads: request.threads });
  try {
    const report = await evaluate(runtime, {
      dataPath: request.dataPath,
      maxTokens: request.maxTokens,
      lambadaExamples: request.lambadaExamples,
      // Progress goes to stderr, so stdout stays one document.
      onProgress: (message) => progress.line(`eval: ${message}`),
    });
    io.stdout.write(
      request.json ? `${JSON.stringify(report.json)}\n` : report.markdown.endsWith('\n') ? report.markdown : `${report.markdown}\n`,
    );
    await progress.sessions(runtime);
    return 0;
  } finally {
    progress.clear();
    await runtime.dispose();
  }
}
