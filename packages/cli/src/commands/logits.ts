/**
 * `mexit logits`: next-token scores at the last prompt position: the full model, one exit (shared
 * exit on block l, or a checkpoint's layer-specific head), or ACD log-probs contrasting two exits.
 */
import type { ExitHeadKind, ExitSpec } from '@mexit/model';
import { DEFAULT_ACD_ALPHA, DEFAULT_ACD_MINIMUM_CANDIDATES, defaultExitHead } from '@mexit/speculative';
import { AutoContrast, checkContrastPair, encodePrompt } from '@mexit/speculative/lowlevel';
import {
  COMMON_FLAGS,
  UsageError,
  contrastFlag,
  exitHeadFlag,
  intFlag,
  numberFlag,
  parseFlags,
  promptFlag,
  resolveModelDir,
  type FlagSpec,
} from '../args.js';
import { ProgressReporter } from '../progress.js';
import { commandUsage, scoresSummary, type CliIo } from '../render.js';

export const LOGITS_FLAGS: readonly FlagSpec[] = [
  { name: 'prompt', type: 'string', value: 'TEXT', help: 'prompt text (needs a tokenizer; encoded with special tokens)' },
  { name: 'prompt-ids', type: 'string', value: '1,2,3', help: 'prompt token ids' },
  {
    name: 'exit-layer',
    type: 'string',
    value: 'l',
    default: 'the last layer (full model)',
    help: 'read block l through the shared exit (final norm + LM head)',
  },
  {
    name: 'exit-head',
    type: 'string',
    value: 'l|original|KIND',
    help: "a layer l: block l through the checkpoint's own head lm_head_l; 'original': the model's own head (full model); with --exit-layer or --contrast a head kind (shared, layer-specific, cast)",
  },
  {
    name: 'contrast',
    type: 'string',
    value: 'U,L',
    help: "print ACD log-probs contrasting upper exit U (or 'original') with lower exit L; read through layer-specific heads when the checkpoint has them",
  },
  {
    name: 'alpha',
    type: 'string',
    value: 'A',
    default: String(DEFAULT_ACD_ALPHA),
    help: 'ACD head-set threshold (fraction of the top upper probability)',
  },
  {
    name: 'minimum-candidates',
    type: 'string',
    value: 'K',
    default: String(DEFAULT_ACD_MINIMUM_CANDIDATES),
    help: 'ACD minimum head-set size',
  },
  ...COMMON_FLAGS,
];

export const LOGITS_SYNOPSIS = '(--prompt TEXT | --prompt-ids 1,2,3) [--exit-layer l | --exit-head l|original] [--contrast U,L] [--json]';
export const LOGITS_DESCRIPTION =
  'Print the next-token logits at the last prompt position (full model by default).\n' +
  'With --json: {"logits": [...]} (one number per vocabulary entry), or {"logprobs": [...]} with --contrast.';

export function logitsUsage(): string {
  return commandUsage('logits', LOGITS_SYNOPSIS, LOGITS_DESCRIPTION, LOGITS_FLAGS);
}

/** What the flags ask for, checked before the model is loaded. */
export interface LogitsRequest {
  modelDir: string;
  prompt: string | number[];
  threads?: number;
  /** Plain logits through one exit ('full' = the model's own head on the last layer). */
  exit: { layer: number; head: ExitHeadKind } | 'full';
  contrast?: { upper: number | 'original'; lower: number; alpha: number; minimumCandidates: number; head?: ExitHeadKind };
  json: boolean;
  verbose: boolean;
}

/** Flags → request (UsageError on contradictions); model-dependent checks happen in runLogits. */
export function parseLogitsArgs(argv: string[]): LogitsRequest | 'help' {
  const { values, positionals } = parseFlags('logits', argv, LOGITS_FLAGS, false);
  if (values.help) return 'help';
  const prompt = promptFlag(values, positionals, 'logits');
  const exitLayer = intFlag('exit-layer', values['exit-layer'] as string | undefined);
  const exitHead = exitHeadFlag(values['exit-head'] as string | undefined, true);
  const contrast = contrastFlag(values.contrast as string | undefined);
  const alpha = numberFlag('alpha', values.alpha as string | undefined);
  const minimumCandidates = intFlag('minimum-candidates', values['minimum-candidates'] as string | undefined);
  const headKind = exitHead && typeof exitHead === 'object' && 'kind' in exitHead ? exitHead.kind : undefined;

  if (!contrast && (alpha !== undefined || minimumCandidates !== undefined)) {
    throw new UsageError('CONTRADICTION', '--alpha and --minimum-candidates only apply with --contrast', 'logits');
  }
  let exit: LogitsRequest['exit'] = 'full';
  if (contrast) {
    if (exitLayer !== undefined || (exitHead !== undefined && headKind === undefined)) {
      throw new UsageError(
        'CONTRADICTION',
        '--contrast names its own exits; it takes no --exit-layer, and --exit-head only as a head kind',
        'logits',
      );
    }
  } else if (exitLayer !== undefined) {
    if (exitHead !== undefined && headKind === undefined) {
      throw new UsageError(
        'CONTRADICTION',
        'give either --exit-layer l or --exit-head l|original, or --exit-layer l with --exit-head KIND',
        'logits',
      );
    }
    exit = { layer: exitLayer, head: headKind ?? 'shared' };
  } else if (exitHead !== undefined) {
    if (headKind !== undefined) {
      throw new UsageError('MISSING_FLAG', `--exit-head ${headKind} needs --exit-layer l (which block to read)`, 'logits');
    }
    if (exitHead !== 'original') exit = { layer: (exitHead as { layer: number }).layer, head: 'layer-specific' };
  }
  return {
    modelDir: resolveModelDir(values.model as string | undefined),
    prompt,
    threads: intFlag('threads', values.threads as string | undefined),
    exit,
    contrast: contrast && {
      upper: contrast[0],
      lower: contrast[1],
      alpha: alpha ?? DEFAULT_ACD_ALPHA,
      minimumCandidates: minimumCandidates ?? DEFAULT_ACD_MINIMUM_CANDIDATES,
      head: headKind,
    },
    json: values.json === true,
    verbose: values.verbose === true,
  };
}

/** Runs the request; returns the exit code. */
export async function runLogits(request: LogitsRequest, io: CliIo): Promise<number> {
  // Validate the ACD options before loading anything (AutoContrast checks alpha / minimumCandidates).
  if (request.contrast) new AutoContrast(1, request.contrast);
  const progress = ProgressReporter.for(io, request.json, request.verbose);
  const runtime = await progress.load(request.modelDir, { threads: request.threads });
  try {
    const L = runtime.numLayers;
    const ids = encodePrompt(runtime, request.prompt);
    let exits: ExitSpec[];
    let title: string;
    if (request.contrast) {
      const c = request.contrast;
      checkContrastPair(L, [c.upper, c.lower], '--contrast');
      // As the generator's ACD mode reads exits (the one rule: defaultExitHead).
      const head = c.head ?? defaultExitHead(runtime);
      const upper: ExitSpec = c.upper === 'original' ? { layer: L, head: 'shared' } : { layer: c.upper, head };
      exits = [upper, { layer: c.lower, head }];
      title = `ACD log-probs, upper ${c.upper === 'original' ? 'original' : `${c.upper} (${head})`} vs lower ${c.lower} (${head})`;
    } else if (request.exit === 'full') {
      exits = [{ layer: L, head: 'shared' }];
      title = `logits of the full model (${L} layers)`;
    } else {
      exits = [request.exit];
      title = `logits of exit ${request.exit.layer} (${request.exit.head} head)`;
    }
    // The stage only needs to run up to the highest exit it reads.
    const to = exits.reduce((top, e) => Math.max(top, e.layer), 0);
    const stage = await runtime.stage({ from: 0, to, exits });
    const out = await stage.run(runtime.createCache(ids.length), ids, ids.length - 1);

    let scores: Float32Array;
    let key: 'logits' | 'logprobs';
    if (request.contrast) {
      const acd = new AutoContrast(runtime.config.vocabSize, request.contrast);
      scores = acd.logProbs(out.logits[0], out.logits[1], new Float32Array(runtime.config.vocabSize));
      key = 'logprobs';
    } else {
      scores = out.logits[0];
      key = 'logits';
    }
    if (request.json) io.stdout.write(`${JSON.stringify({ [key]: Array.from(scores) })}\n`);
    else io.stdout.write(`prompt: ${ids.length} tokens\n${scoresSummary(scores, key, runtime.tokenizer, title)}`);
    await progress.sessions(runtime);
    return 0;
  } finally {
    progress.clear();
    await runtime.dispose();
  }
}
