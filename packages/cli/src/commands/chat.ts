/**
 * `mexit chat`: a multi-turn REPL over the model's chat template. Each line is a user message; the whole
 * conversation (ChatSession) is the prompt, and the answer streams as tokens are committed (draft-accepted
 * tokens in green on a terminal). Piped stdin works the same, without the prompt: a line in, an answer out,
 * exit at EOF. Ctrl-C stops an answer (the interrupted exchange is not kept); at an empty prompt it quits.
 */
import { isAbsolute, relative } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { MexitError, OptionsError, TokenizerError } from '@mexit/core';
import type { ProgressInfo } from '@mexit/model';
import { loadGenerator, type GenerateOptions, type TextGenerator } from '@mexit/speculative';
import { intFlag, parseFlags, resolveModelDir, type FlagSpec } from '../args.js';
import { ProgressReporter } from '../progress.js';
import { GREEN, RESET, commandUsage, statsLine, useColour, type CliIo } from '../render.js';
import { ChatSession } from './chat-session.js';
import { GENERATE_FLAGS, generationOptions } from './generate.js';

const CONVERSATION = 'Conversation';
/** generate's flags that make no sense here: the prompt comes from stdin, the output is a transcript. */
const NOT_FOR_CHAT = new Set(['prompt', 'prompt-ids', 'chat', 'system', 'json']);
const RUNTIME_GROUP = GENERATE_FLAGS.find((f) => f.name === 'model')?.group;

export const CHAT_FLAGS: readonly FlagSpec[] = [
  { group: CONVERSATION, name: 'system', type: 'string', value: 'TEXT', help: 'system message, kept through /reset and context trimming' },
  ...GENERATE_FLAGS.filter((f) => !NOT_FOR_CHAT.has(f.name) && f.name !== 'help'),
  { group: RUNTIME_GROUP, name: 'stats', type: 'boolean', help: 'print a stats line (tok/s, acceptance) on stderr after each answer' },
  { group: RUNTIME_GROUP, name: 'in-process', type: 'boolean', help: 'run the model in this thread instead of a worker thread' },
  ...GENERATE_FLAGS.filter((f) => f.name === 'help'),
];

export const CHAT_SYNOPSIS = '[--model DIR] [--system TEXT] [generation options]';
export const CHAT_DESCRIPTION =
  'Chat with the model through its chat template. Each line you type is a user message; the whole conversation\n' +
  'is the prompt, and the answer streams as it is committed (draft-accepted tokens in green on a terminal).\n' +
  'Commands: /reset forgets the conversation (the system message stays), /exit quits (also Ctrl-D), /help lists\n' +
  'them; a line starting with // sends the rest starting with one /. Ctrl-C stops an answer, and the interrupted\n' +
  'exchange is left out of the conversation; Ctrl-C at an empty prompt quits. When the conversation outgrows\n' +
  "the model's context, its oldest exchanges are dropped. Piped stdin works too: one answer per line, exit at EOF.";

export function chatUsage(): string {
  return commandUsage('chat', CHAT_SYNOPSIS, CHAT_DESCRIPTION, CHAT_FLAGS);
}

export interface ChatRequest {
  modelDir: string;
  system?: string;
  options: GenerateOptions;
  threads?: number;
  verbose: boolean;
  stats: boolean;
  inProcess: boolean;
}

/** Flags → ChatRequest. The generation flags are generate's, read by generate's own rules (generationOptions). */
export function parseChatArgs(argv: string[]): ChatRequest | 'help' {
  const { values } = parseFlags('chat', argv, CHAT_FLAGS, false);
  if (values.help) return 'help';
  const str = (name: string) => values[name] as string | undefined;
  return {
    modelDir: resolveModelDir(str('model')),
    ...(values.system !== undefined && { system: values.system as string }),
    options: generationOptions(values, 'chat'),
    threads: intFlag('threads', str('threads')),
    verbose: values.verbose === true,
    stats: values.stats === true,
    inProcess: values['in-process'] === true,
  };
}

const HELP =
  '/reset   forget the conversation (the system message stays)\n' +
  '/exit    quit (also Ctrl-D, or Ctrl-C at an empty prompt)\n' +
  '/help    this list\n' +
  'Ctrl-C while an answer streams stops it; the interrupted exchange is not kept.\n' +
  'A line starting with // is sent with one / removed.\n';

/** Runs the REPL until /exit, EOF or Ctrl-C at the prompt; returns the exit code. */
export async function runChat(request: ChatRequest, io: CliIo): Promise<number> {
  const progress = new TurnProgress(ProgressReporter.for(io, false, request.verbose));
  const generator = await loadChatGenerator(request, progress);
  try {
    const { info } = generator;
    if (!info.hasTokenizer) throw new OptionsError('NO_TOKENIZER', `mexit chat needs a tokenizer, and ${info.dir} has no tokenizer.json`);
    if (!info.hasChatTemplate) {
      throw new TokenizerError(
        'NO_CHAT_TEMPLATE',
        `${info.dir} has no chat template (tokenizer_config.json chat_template); use mexit generate for plain completion`,
      );
    }
    return await repl(new ChatSession(generator, {}, request.system), generator, request, io, progress);
  } finally {
    progress.pause();
    await generator.dispose();
  }
}

/** The model, its load shown on the status line; the generation options are checked as its defaults. */
async function loadChatGenerator(request: ChatRequest, progress: TurnProgress): Promise<TextGenerator> {
  try {
    // A worker by default: the REPL's loop stays free for Ctrl-C and typed lines while tokens compute.
    return await loadGenerator(request.modelDir, {
      inProcess: request.inProcess,
      ...request.options,
      ...(request.threads !== undefined && { threads: request.threads }),
      onProgress: progress.onProgress,
    });
  } catch (error) {
    progress.pause();
    throw error;
  }
}

/**
 * The status line, shown while the model loads and while an answer is being made, erased before any output. A
 * stage build an interrupted answer left running finishes in the background and must not draw over the prompt.
 */
class TurnProgress {
  private active = true;

  constructor(private readonly reporter: ProgressReporter) {}

  readonly onProgress = (info: ProgressInfo): void => {
    if (this.active) this.reporter.onProgress(info);
  };

  resume(): void {
    this.active = true;
  }

  /** Erases the status line and ignores progress until resume(). */
  pause(): void {
    this.active = false;
    this.reporter.clear();
  }

  /** Erases the status line (before output), still listening. */
  clear(): void {
    this.reporter.clear();
  }
}

async function repl(
  session: ChatSession,
  generator: TextGenerator,
  request: ChatRequest,
  io: CliIo,
  progress: TurnProgress,
): Promise<number> {
  const input = io.stdin ?? process.stdin;
  // Prompt, line editing and history only when a person is at a terminal; piped input gets a clean transcript.
  const interactive = (input as { isTTY?: boolean }).isTTY === true && io.isTTY === true;
  const rl = createInterface({
    input,
    ...(interactive && { output: io.stdout as NodeJS.WritableStream }),
    terminal: interactive,
    prompt: '> ',
  });
  const lines = new LineQueue(rl);
  const colour = useColour(io, false);
  let answering: AbortController | undefined;
  let toldTrimming = false;

  // On a terminal readline turns Ctrl-C into its own 'SIGINT'; from a pipe it is the process's signal.
  const onInterrupt = () => {
    if (answering) answering.abort();
    else if (interactive && rl.line.length > 0) {
      rl.write(null, { ctrl: true, name: 'e' });
      rl.write(null, { ctrl: true, name: 'u' }); // Ctrl-C on a typed line clears it, as shells do
    } else lines.close();
  };
  rl.on('SIGINT', onInterrupt);
  process.on('SIGINT', onInterrupt);

  try {
    if (interactive) {
      const { info } = generator;
      const shown = relative(process.cwd(), info.dir);
      const where = shown === '' || shown.startsWith('..') || isAbsolute(shown) ? info.dir : shown;
      io.stderr.write(
        `mexit chat · ${where} (${info.modelType}, ${info.numLayers} layers, context ${info.maxPositions}) · /help for commands\n`,
      );
    }
    for (;;) {
      progress.pause();
      if (interactive) rl.prompt();
      const line = await lines.next();
      if (line === null) {
        if (interactive) io.stdout.write('\n'); // Ctrl-D / Ctrl-C left the cursor after the prompt
        return 0;
      }
      const trimmed = line.trim();
      if (trimmed === '') continue;
      if (trimmed.startsWith('/') && !trimmed.startsWith('//')) {
        const name = trimmed.split(/\s+/)[0];
        if (name === '/exit' || name === '/quit') return 0;
        if (name === '/reset') {
          session.reset();
          io.stderr.write('mexit: conversation reset\n');
        } else if (name === '/help') io.stdout.write(HELP);
        else io.stderr.write(`mexit: unknown command ${name}; /help lists the commands\n`);
        continue;
      }
      const content = trimmed.startsWith('//') ? line.replace('//', '/') : line;

      answering = new AbortController();
      progress.resume();
      let endsWithNewline = true;
      try {
        const turn = await session.say(
          content,
          (event) => {
            if (!event.text) return;
            progress.clear();
            io.stdout.write(colour && event.fromDraft ? GREEN + event.text + RESET : event.text);
            endsWithNewline = event.text.endsWith('\n');
          },
          answering.signal,
        );
        progress.clear();
        if (!endsWithNewline) io.stdout.write('\n');
        if (turn.dropped > 0 && !toldTrimming) {
          toldTrimming = true;
          io.stderr.write(
            `mexit: the conversation outgrew the context (${generator.info.maxPositions} positions): its oldest exchanges are dropped to fit\n`,
          );
        }
        if (request.stats) io.stderr.write(`${statsLine(turn.result.stats, generator.info.numLayers)}\n`);
      } catch (error) {
        progress.pause();
        if (!endsWithNewline) io.stdout.write('\n');
        if (!(error instanceof MexitError)) throw error;
        if (error.code === 'ABORTED') io.stdout.write('[interrupted]\n');
        else io.stderr.write(`error [${error.code}]: ${error.message}\n`);
      } finally {
        answering = undefined;
      }
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    rl.close();
    // A pipe left open by the other side must not keep the process alive after /exit.
    if (input === process.stdin) process.stdin.pause();
  }
}

/** readline's lines, one at a time, buffered while an answer streams; null once input ends or Ctrl-C quits. */
class LineQueue {
  private readonly queued: string[] = [];
  private closed = false;
  private waiting?: (line: string | null) => void;

  constructor(rl: Interface) {
    rl.on('line', (line) => this.push(line));
    rl.on('close', () => this.close());
  }

  next(): Promise<string | null> {
    if (this.queued.length > 0) return Promise.resolve(this.queued.shift()!);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  close(): void {
    this.closed = true;
    this.wake(null);
  }

  private push(line: string): void {
    if (this.closed) return;
    if (this.waiting) this.wake(line);
    else this.queued.push(line);
  }

  private wake(line: string | null): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.(line);
  }
}
