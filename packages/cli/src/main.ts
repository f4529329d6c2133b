#!/usr/bin/env node
/**
 * The `mexit` command line. `runCli(argv, io)` does all the work and returns the exit code, so tests
 * run it in-process; the bottom of this file runs it when the file is executed.
 *
 * Exit codes: 0 success; 2 user error (any MexitError: bad flags, bad model directory, bad options),
 * printed as `error [CODE]: message` without a stack; 1 unexpected failure (message and stack).
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MexitError } from '@mexit/core';
import { UsageError } from './args.js';
import { rootUsage, type CliIo } from './render.js';
import { generateUsage, parseGenerateArgs, runGenerate } from './commands/generate.js';
import { logitsUsage, parseLogitsArgs, runLogits } from './commands/logits.js';
import { evalUsage, parseEvalArgs, runEval } from './commands/eval.js';
import { chatUsage, parseChatArgs, runChat } from './commands/chat.js';
import { parseServeArgs, runServe, serveUsage } from './commands/serve.js';

export type { CliIo } from './render.js';

interface Command {
  name: string;
  summary: string;
  usage(): string;
  /** Parses and runs; 'help' prints the usage. */
  main(argv: string[], io: CliIo): Promise<number>;
}

/** parse → 'help' | request → run. */
function command<R>(
  name: string,
  summary: string,
  usage: () => string,
  parse: (argv: string[]) => R | 'help',
  run: (request: R, io: CliIo) => Promise<number>,
): Command {
  return {
    name,
    summary,
    usage,
    async main(argv, io) {
      const request = parse(argv);
      if (request === 'help') {
        io.stdout.write(usage());
        return 0;
      }
      return run(request, io);
    },
  };
}

const COMMANDS: readonly Command[] = [
  command('generate', 'generate a completion (self-spec, ar, early-exit, acd, calm)', generateUsage, parseGenerateArgs, runGenerate),
  command('logits', 'next-token logits of the full model, an exit, or ACD log-probs', logitsUsage, parseLogitsArgs, runLogits),
  command('eval', 'evaluate the model on a text file and print the report', evalUsage, parseEvalArgs, runEval),
  command('chat', 'chat with the model through its chat template (a REPL; piped stdin works)', chatUsage, parseChatArgs, runChat),
  command('serve', 'serve the model over an OpenAI-compatible HTTP API', serveUsage, parseServeArgs, runServe),
];

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** The CLI's streams when run as a program. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    isTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
    env: process.env,
  };
}

/** Runs `mexit <argv...>` and returns the exit code. Never throws. */
export async function runCli(argv: string[], io: CliIo = processIo()): Promise<number> {
  // Known before parsing, so even a flag error is reported as JSON when --json was asked for.
  const json = argv.includes('--json');
  let commandName: string | undefined;
  try {
    const [first, ...rest] = argv;
    if (first === undefined) {
      io.stderr.write(rootUsage(COMMANDS));
      return 2;
    }
    if (first === '--help' || first === '-h') {
      io.stdout.write(rootUsage(COMMANDS));
      return 0;
    }
    if (first === '--version' || first === '-v') {
      io.stdout.write(`${version()}\n`);
      return 0;
    }
    if (first === 'help') {
      const target = COMMANDS.find((c) => c.name === rest[0]);
      io.stdout.write(target ? target.usage() : rootUsage(COMMANDS));
      return 0;
    }
    const cmd = COMMANDS.find((c) => c.name === first);
    if (!cmd) {
      throw new UsageError(
        'UNKNOWN_COMMAND',
        `unknown command ${JSON.stringify(first)}; commands: ${COMMANDS.map((c) => c.name).join(', ')}`,
      );
    }
    commandName = cmd.name;
    return await cmd.main(rest, io);
  } catch (err) {
    return reportError(err, io, json, commandName);
  }
}

/** User errors → `error [CODE]: message` and 2; anything else → message + stack and 1. */
function reportError(err: unknown, io: CliIo, json: boolean, commandName: string | undefined): number {
  // A failing stdout (the cause of some errors) must not turn error reporting into a crash.
  const writeJson = (code: string, message: string) => {
    try {
      if (json) io.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`);
    } catch {
      // reported on stderr below
    }
  };
  if (err instanceof MexitError) {
    writeJson(err.code, err.message);
    io.stderr.write(`error [${err.code}]: ${err.message}\n`);
    if (err instanceof UsageError) {
      const name = err.command ?? commandName;
      io.stderr.write(`run \`mexit ${name ? `${name} ` : ''}--help\` for usage\n`);
    }
    return 2;
  }
  const message = err instanceof Error ? err.message : String(err);
  writeJson('INTERNAL_ERROR', message);
  io.stderr.write(`error: ${message}\n${err instanceof Error && err.stack ? `${err.stack}\n` : ''}`);
  return 1;
}

/** True when this file is the program being run (directly, through the bin link, or `node dist/main.js`). */
function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/** Runs the CLI as this process: its arguments, its streams, its exit code (this file's bin and the `mexit` package's). */
export function runProgram(): void {
  // `mexit ... | head` closes the pipe early: stop quietly instead of crashing on EPIPE.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  void runCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

if (isMain()) runProgram();
