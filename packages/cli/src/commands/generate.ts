/**
 * `mexit generate`: one completion in any decoding mode, streamed as tokens are committed (draft-accepted
 * tokens coloured on a terminal), then a stats line on stderr; or one JSON document with --json.
 */
import { MAX_NUM_SPECULATIONS, type ChatMessage } from '@mexit/model';
import {
  CONFIDENCE_MEASURES,
  DECODING_MODES,
  DEFAULT_ACD_ALPHA,
  DEFAULT_ACD_MINIMUM_CANDIDATES,
  DEFAULT_CALM_THRESHOLD,
  DEFAULT_MAX_NEW_TOKENS,
  DEFAULT_NUM_SPECULATIONS,
  DRAFTERS,
  MexitGenerator,
  type GenerateOptions,
  type GenerationResult,
  type Prompt,
} from '@mexit/speculative';
import {
  COMMON_FLAGS,
  UsageError,
  choiceFlag,
  contrastFlag,
  exitHeadFlag,
  intFlag,
  intListFlag,
  numberFlag,
  parseFlags,
  promptFlag,
  resolveModelDir,
  type FlagSpec,
  type ParsedFlags,
} from '../args.js';
import { ProgressReporter } from '../progress.js';
import { GREEN, RESET, commandUsage, statsLine, useColour, type CliIo } from '../render.js';

const PROMPT = 'Prompt';
const SAMPLING = 'Sampling (greedy unless --do-sample)';
const SELF_SPEC = 'Self-speculative decoding (--mode self-spec) and exits (early-exit)';
const ACD = 'Auto-contrastive decoding (--mode acd)';
const CALM = 'CALM per-token exit (--mode calm)';
const RUNTIME = 'Model, runtime and output';

export const GENERATE_FLAGS: readonly FlagSpec[] = [
  { group: PROMPT, name: 'prompt', type: 'string', value: 'TEXT', help: 'prompt text (instead of the positional PROMPT)' },
  { group: PROMPT, name: 'prompt-ids', type: 'string', value: '1,2,3', help: 'prompt token ids (no tokenizer needed)' },
  { group: PROMPT, name: 'chat', type: 'boolean', help: "render the prompt as a user message through the model's chat template" },
  { group: PROMPT, name: 'system', type: 'string', value: 'TEXT', help: 'system message (with --chat)' },
  { group: PROMPT, name: 'mode', type: 'string', value: DECODING_MODES.join('|'), default: DECODING_MODES[0], help: 'decoding mode' },
  {
    group: PROMPT,
    name: 'max-new-tokens',
    type: 'string',
    value: 'N',
    default: String(DEFAULT_MAX_NEW_TOKENS),
    help: 'maximum tokens to generate',
  },
  {
    group: PROMPT,
    name: 'stop',
    type: 'string',
    multiple: true,
    value: 'STR',
    default: 'none',
    help: 'stop before this string (needs a tokenizer)',
  },
  {
    group: PROMPT,
    name: 'eos-ids',
    type: 'string',
    value: '1,2',
    default: 'generation_config.json eos_token_id',
    help: "end-of-sequence ids ('' for none)",
  },
  { group: SAMPLING, name: 'do-sample', type: 'boolean', help: 'sample instead of greedy decoding' },
  { group: SAMPLING, name: 'temperature', type: 'string', value: 'T', default: '1', help: 'sampling temperature' },
  { group: SAMPLING, name: 'top-k', type: 'string', value: 'K', default: '0 (off)', help: 'keep the K most probable tokens' },
  { group: SAMPLING, name: 'top-p', type: 'string', value: 'P', default: '1 (off)', help: 'nucleus sampling mass' },
  { group: SAMPLING, name: 'min-p', type: 'string', value: 'P', default: '0 (off)', help: 'drop tokens below P × the top probability' },
  { group: SAMPLING, name: 'repetition-penalty', type: 'string', value: 'R', default: '1 (off)', help: 'HF repetition penalty' },
  { group: SAMPLING, name: 'seed', type: 'string', value: 'S', default: '0', help: 'sampling seed' },
  {
    group: SELF_SPEC,
    name: 'exit-layer',
    type: 'string',
    value: 'E',
    default: "the model's recommendation (generation_config.json), else ⌊L/4⌋ (on multi-exit checkpoints a layer with its own head)",
    help: 'draft exit (self-spec) or exit (early-exit), 1-based block index',
  },
  {
    group: SELF_SPEC,
    name: 'exit-head',
    type: 'string',
    value: 'KIND|l',
    default: 'layer-specific on multi-exit checkpoints, else shared',
    help: 'head that reads exits: shared, layer-specific or cast; a layer number l means exit layer l through its own layer-specific head',
  },
  {
    group: SELF_SPEC,
    name: 'num-speculations',
    type: 'string',
    value: 'd',
    default: `the model's recommendation, else ${DEFAULT_NUM_SPECULATIONS}`,
    help: `maximum drafts per self-spec round, 1..${MAX_NUM_SPECULATIONS}`,
  },
  {
    group: SELF_SPEC,
    name: 'drafter',
    type: 'string',
    value: DRAFTERS.join('|'),
    default: DRAFTERS[0],
    help: "who drafts: the model's first E layers, or n-gram lookup in the prompt and output",
  },
  {
    group: SELF_SPEC,
    name: 'draft-threshold',
    type: 'string',
    value: 'X',
    default: '0 (off)',
    help: "stop drafting when the draft token's probability is below X",
  },
  { group: SELF_SPEC, name: 'adaptive-draft', type: 'boolean', help: 'adapt the draft length between rounds' },
  {
    group: SELF_SPEC,
    name: 'draft-quantization',
    type: 'string',
    value: 'none|int8|int4',
    default: "the model's recommendation, else none",
    help: 'draft with quantized layers [0, E) on their own cache (the full model verifies)',
  },
  {
    group: SELF_SPEC,
    name: 'no-bonus-token',
    type: 'boolean',
    help: 'leave the last draft for the next round instead of verifying the bonus position',
  },
  { group: ACD, name: 'contrast', type: 'string', value: 'U,L', help: "upper exit U (or 'original') and lower exit L" },
  { group: ACD, name: 'alpha', type: 'string', value: 'A', default: String(DEFAULT_ACD_ALPHA), help: 'head-set threshold' },
  {
    group: ACD,
    name: 'minimum-candidates',
    type: 'string',
    value: 'K',
    default: String(DEFAULT_ACD_MINIMUM_CANDIDATES),
    help: 'minimum head-set size',
  },
  {
    group: CALM,
    name: 'calm-threshold',
    type: 'string',
    value: 'X',
    default: String(DEFAULT_CALM_THRESHOLD),
    help: 'confidence threshold λ',
  },
  {
    group: CALM,
    name: 'calm-confidence',
    type: 'string',
    value: CONFIDENCE_MEASURES.join('|'),
    default: CONFIDENCE_MEASURES[0],
    help: 'confidence measure',
  },
  { group: CALM, name: 'calm-min-exit-layer', type: 'string', value: 'l', default: '1', help: 'first layer allowed to exit' },
  { group: CALM, name: 'calm-exit-interval', type: 'string', value: 'k', default: '1', help: 'spacing of the exits' },
  ...COMMON_FLAGS.map((f) => ({ ...f, group: RUNTIME })),
];

export const GENERATE_SYNOPSIS = '[PROMPT] [--model DIR] [--mode MODE] [options]';
export const GENERATE_DESCRIPTION =
  'Generate a completion. Text streams to stdout as tokens are committed (draft-accepted tokens in green\n' +
  'on a terminal), statistics go to stderr. With --json: one document {"ids": [...], "text": "...", "stats": {...}}.\n' +
  'The prompt is one of: positional PROMPT, --prompt TEXT, --prompt-ids 1,2,3.';

export function generateUsage(): string {
  return commandUsage('generate', GENERATE_SYNOPSIS, GENERATE_DESCRIPTION, GENERATE_FLAGS);
}

export interface GenerateRequest {
  modelDir: string;
  prompt: Prompt;
  options: GenerateOptions;
  threads?: number;
  json: boolean;
  verbose: boolean;
}

/** Flags → GenerateOptions (value syntax checked here; ranges by resolveOptions against the model). */
export function parseGenerateArgs(argv: string[]): GenerateRequest | 'help' {
  const { values, positionals } = parseFlags('generate', argv, GENERATE_FLAGS, true);
  if (values.help) return 'help';
  const str = (name: string) => values[name] as string | undefined;
  const text = promptFlag(values, positionals, 'generate');

  let prompt: Prompt = text;
  const system = str('system');
  if (values.chat) {
    if (typeof text !== 'string') throw new UsageError('CONTRADICTION', '--chat needs a text prompt, not --prompt-ids', 'generate');
    const messages: ChatMessage[] = [];
    if (system !== undefined) messages.push({ role: 'system', content: system });
    messages.push({ role: 'user', content: text });
    prompt = messages;
  } else if (system !== undefined) {
    throw new UsageError('CONTRADICTION', '--system only applies with --chat', 'generate');
  }

  const options = generationOptions(values, 'generate');

  return {
    modelDir: resolveModelDir(str('model')),
    prompt,
    options,
    threads: intFlag('threads', str('threads')),
    json: values.json === true,
    verbose: values.verbose === true,
  };
}

/**
 * The generation flags (mode, exits, drafting, sampling, stopping, ACD, CALM) → GenerateOptions: the one home
 * of the flag → option rules, used by generate, chat and serve. `command` names the command in errors.
 */
export function generationOptions(values: ParsedFlags['values'], command: string): GenerateOptions {
  const str = (name: string) => values[name] as string | undefined;
  const options: GenerateOptions = {};
  const set = <K extends keyof GenerateOptions>(key: K, value: GenerateOptions[K] | undefined) => {
    if (value !== undefined) options[key] = value;
  };
  const mode = choiceFlag('mode', str('mode'), DECODING_MODES);
  set('mode', mode);
  set('exitLayer', intFlag('exit-layer', str('exit-layer')));
  const exitHead = exitHeadFlag(str('exit-head'), false);
  if (exitHead && exitHead !== 'original') {
    if ('kind' in exitHead) options.exitHead = exitHead.kind;
    else {
      // `--exit-head l`: exit layer l read through its own layer-specific head.
      if (options.exitLayer !== undefined && options.exitLayer !== exitHead.layer) {
        throw new UsageError(
          'CONTRADICTION',
          `--exit-head ${exitHead.layer} names exit layer ${exitHead.layer} but --exit-layer is ${options.exitLayer}`,
          command,
        );
      }
      options.exitLayer = exitHead.layer;
      options.exitHead = 'layer-specific';
    }
  }
  set('numSpeculations', intFlag('num-speculations', str('num-speculations')));
  set('drafter', choiceFlag('drafter', str('drafter'), DRAFTERS));
  set('maxNewTokens', intFlag('max-new-tokens', str('max-new-tokens')));
  if (values['do-sample']) options.doSample = true;
  set('temperature', numberFlag('temperature', str('temperature')));
  set('topK', intFlag('top-k', str('top-k')));
  set('topP', numberFlag('top-p', str('top-p')));
  set('minP', numberFlag('min-p', str('min-p')));
  set('repetitionPenalty', numberFlag('repetition-penalty', str('repetition-penalty')));
  set('seed', intFlag('seed', str('seed')));
  set('stop', values.stop as string[] | undefined);
  set('eosTokenIds', intListFlag('eos-ids', str('eos-ids')));
  set('draftConfidenceThreshold', numberFlag('draft-threshold', str('draft-threshold')));
  if (values['adaptive-draft']) options.adaptiveDraftLength = true;
  if (values['no-bonus-token']) options.bonusToken = false;
  set('draftQuantization', choiceFlag('draft-quantization', str('draft-quantization'), ['none', 'int8', 'int4'] as const));
  set('contrastLayers', contrastFlag(str('contrast')));
  set('alpha', numberFlag('alpha', str('alpha')));
  set('minimumCandidates', intFlag('minimum-candidates', str('minimum-candidates')));
  set('calmThreshold', numberFlag('calm-threshold', str('calm-threshold')));
  set('calmConfidence', choiceFlag('calm-confidence', str('calm-confidence'), CONFIDENCE_MEASURES));
  set('calmMinExitLayer', intFlag('calm-min-exit-layer', str('calm-min-exit-layer')));
  set('calmExitInterval', intFlag('calm-exit-interval', str('calm-exit-interval')));

  // resolveOptions ignores these outside their mode; a silently ignored flag would mislead.
  const effectiveMode = mode ?? DECODING_MODES[0];
  const onlyFor: [string, string][] = [
    ['alpha', 'acd'],
    ['minimum-candidates', 'acd'],
    ['calm-threshold', 'calm'],
    ['calm-confidence', 'calm'],
    ['calm-min-exit-layer', 'calm'],
    ['calm-exit-interval', 'calm'],
    ['drafter', 'self-spec'],
  ];
  for (const [flag, needs] of onlyFor) {
    if (values[flag] !== undefined && effectiveMode !== needs) {
      throw new UsageError('CONTRADICTION', `--${flag} only applies to --mode ${needs}, not ${effectiveMode}`, command);
    }
  }
  if (values.contrast !== undefined && effectiveMode !== 'acd') {
    throw new UsageError('CONTRADICTION', `--contrast only applies to --mode acd, not ${effectiveMode}`, command);
  }
  if (effectiveMode === 'acd' && values.contrast === undefined) {
    throw new UsageError('MISSING_FLAG', '--mode acd needs --contrast U,L', command);
  }

  return options;
}

/** Runs the request; returns the exit code. */
export async function runGenerate(request: GenerateRequest, io: CliIo): Promise<number> {
  const progress = ProgressReporter.for(io, request.json, request.verbose);
  const runtime = await progress.load(request.modelDir, { threads: request.threads });
  try {
    // The generator checks the options before it builds anything; the stats carry what was resolved.
    const generator = new MexitGenerator(runtime);
    const colour = useColour(io, request.json);
    const hasTokenizer = runtime.tokenizer !== null;
    let result: GenerationResult | undefined;
    let printed = false;
    let endsWithNewline = true;
    try {
      for await (const event of generator.events(request.prompt, request.options, (r) => (result = r))) {
        if (request.json) continue;
        // Without a tokenizer there is no text: stream the ids instead.
        const chunk = hasTokenizer ? event.text : `${printed ? ' ' : ''}${event.token}`;
        if (!chunk) continue;
        io.stdout.write(colour && event.fromDraft ? GREEN + chunk + RESET : chunk);
        printed = true;
        endsWithNewline = chunk.endsWith('\n');
      }
    } finally {
      if (printed && !endsWithNewline) io.stdout.write('\n');
    }
    const done = result!;
    if (request.json) {
      io.stdout.write(`${JSON.stringify({ ids: done.ids, text: done.text, stats: done.stats })}\n`);
    } else {
      io.stderr.write(`${statsLine(done.stats, runtime.numLayers)}\n`);
    }
    await progress.sessions(runtime);
    return 0;
  } finally {
    progress.clear(); // a build that failed must not leave its status line under the error
    await runtime.dispose();
  }
}
