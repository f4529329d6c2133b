/**
 * Flag tables and value parsing for the CLI. Every command declares its flags once (name, value
 * placeholder, default, help); the same table drives node:util parseArgs and the --help text.
 * Bad flags become UsageError (an OptionsError), so the CLI exits 2 without a stack trace.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { OptionsError } from '@mexit/core';
import type { ExitHeadKind } from '@mexit/model';
import { modelDir as bundledModelDir } from '@mexit/tinystories-ee';

/** A bad command line (unknown flag, bad flag value, missing argument): exit 2 with a usage hint. */
export class UsageError extends OptionsError {
  constructor(
    code: string,
    message: string,
    readonly command?: string,
  ) {
    super(code, message);
  }
}

export interface FlagSpec {
  name: string;
  /** Boolean flags take no value. */
  type: 'string' | 'boolean';
  /** May be given several times (values are collected in order). */
  multiple?: boolean;
  /** Value placeholder in the usage text, e.g. 'N'. */
  value?: string;
  /** The default as shown in the usage text. */
  default?: string;
  help: string;
  short?: string;
  /** Heading the flag is listed under in --help (flags without one are listed under "Options"). */
  group?: string;
}

export interface ParsedFlags {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** `--model` if given, else the bundled model; UsageError MODEL_MISSING when the bundled one is absent. */
export function resolveModelDir(given: string | undefined): string {
  if (given !== undefined) return given;
  // The data package's own path, so the default holds wherever the packages are installed.
  if (!existsSync(join(bundledModelDir, 'config.json'))) {
    throw new UsageError(
      'MODEL_MISSING',
      `no --model given and the bundled model is missing (${bundledModelDir} has no config.json); pass --model DIR`,
    );
  }
  return bundledModelDir;
}

/** parseArgs over `specs` (plus --help/--json handled by the caller's table); parse failures → UsageError. */
export function parseFlags(command: string, argv: string[], specs: readonly FlagSpec[], allowPositionals: boolean): ParsedFlags {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const s of specs)
    options[s.name] = { type: s.type, ...(s.multiple ? { multiple: true } : {}), ...(s.short ? { short: s.short } : {}) };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: joinNegativeValues(argv, specs), options, allowPositionals, strict: true });
  } catch (err) {
    const e = err as { code?: string; message: string };
    if (!e.code?.startsWith('ERR_PARSE_ARGS_')) throw err;
    const code =
      e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
        ? 'UNKNOWN_FLAG'
        : e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL'
          ? 'UNEXPECTED_ARGUMENT'
          : 'INVALID_FLAG';
    // Node's messages run over several lines; the first one says what is wrong.
    throw new UsageError(code, `mexit ${command}: ${e.message.split('\n')[0]}`, command);
  }
  return { values: parsed.values as ParsedFlags['values'], positionals: parsed.positionals };
}

/**
 * `--seed -1` → `--seed=-1`: parseArgs takes a value starting with '-' for a flag of its own and refuses it,
 * so a negative number would never reach its range check. Only values that read as numbers are joined
 * ('-1', '-0.5', '-.5', '-1,2' for lists), for flags that take a value; the rest stays as typed.
 */
function joinNegativeValues(argv: string[], specs: readonly FlagSpec[]): string[] {
  const takesValue = new Set(specs.filter((s) => s.type === 'string').map((s) => `--${s.name}`));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') return out.concat(argv.slice(i));
    const next = argv[i + 1];
    if (takesValue.has(arg) && next !== undefined && /^-\.?\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

const badValue = (flag: string, expected: string, raw: string) =>
  new UsageError('INVALID_FLAG', `--${flag} must be ${expected}, got ${JSON.stringify(raw)}`);

/** Integer flag value (decimal, optional sign). */
export function intFlag(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\s*[+-]?\d+\s*$/.test(raw)) throw badValue(flag, 'an integer', raw);
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw badValue(flag, 'a safe integer', raw);
  return n;
}

/** Finite number flag value. */
export function numberFlag(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n)) throw badValue(flag, 'a number', raw);
  return n;
}

/** Comma- (or space-) separated integers: "1,2,3", "[1, 2, 3]"; an empty string is an empty list. */
export function intListFlag(flag: string, raw: string | undefined): number[] | undefined {
  if (raw === undefined) return undefined;
  const body = raw
    .trim()
    .replace(/^\[(.*)\]$/s, '$1')
    .trim();
  if (body === '') return [];
  return body.split(/\s*,\s*|\s+/).map((part) => {
    if (!/^[+-]?\d+$/.test(part)) throw badValue(flag, 'a comma-separated list of integers', raw);
    return Number(part);
  });
}

/** `--contrast U,L`: U an integer or 'original', L an integer (range checks happen against the model). */
export function contrastFlag(raw: string | undefined): [number | 'original', number] | undefined {
  if (raw === undefined) return undefined;
  const parts = raw.split(',').map((s) => s.trim());
  const isInt = (s: string) => /^[+-]?\d+$/.test(s);
  if (parts.length !== 2 || !(parts[0] === 'original' || isInt(parts[0])) || !isInt(parts[1])) {
    throw badValue('contrast', 'UPPER,LOWER (UPPER an integer or "original", LOWER an integer), e.g. 4,2', raw);
  }
  return [parts[0] === 'original' ? 'original' : Number(parts[0]), Number(parts[1])];
}

export const EXIT_HEAD_KINDS: readonly ExitHeadKind[] = ['shared', 'layer-specific', 'cast'];

/** `--exit-head`: a layer number (that layer's own head), a head kind, or 'original' where allowed. */
export function exitHeadFlag(
  raw: string | undefined,
  allowOriginal: boolean,
): { layer: number } | { kind: ExitHeadKind } | 'original' | undefined {
  if (raw === undefined) return undefined;
  const value = raw.trim();
  if (/^[+-]?\d+$/.test(value)) return { layer: Number(value) };
  if (allowOriginal && value === 'original') return 'original';
  if ((EXIT_HEAD_KINDS as readonly string[]).includes(value)) return { kind: value as ExitHeadKind };
  const choices = `a layer number${allowOriginal ? ', "original"' : ''} or one of ${EXIT_HEAD_KINDS.join(', ')}`;
  throw badValue('exit-head', choices, raw);
}

/** One-of flag value. */
export function choiceFlag<T extends string>(flag: string, raw: string | undefined, choices: readonly T[]): T | undefined {
  if (raw === undefined) return undefined;
  if (!(choices as readonly string[]).includes(raw)) throw badValue(flag, `one of ${choices.join(', ')}`, raw);
  return raw as T;
}

/** The prompt given as exactly one of: positional words, --prompt TEXT, --prompt-ids LIST. */
export function promptFlag(values: ParsedFlags['values'], positionals: string[], command: string): string | number[] {
  const text = values.prompt as string | undefined;
  const ids = intListFlag('prompt-ids', values['prompt-ids'] as string | undefined);
  const positional = positionals.length ? positionals.join(' ') : undefined;
  const given = [text !== undefined, ids !== undefined, positional !== undefined].filter(Boolean).length;
  if (given > 1)
    throw new UsageError('CONTRADICTION', `mexit ${command}: give the prompt once (positional PROMPT, --prompt or --prompt-ids)`, command);
  if (given === 0)
    throw new UsageError('MISSING_PROMPT', `mexit ${command}: a prompt is required (--prompt TEXT or --prompt-ids 1,2,3)`, command);
  if (ids !== undefined) {
    if (ids.length === 0) throw new UsageError('INVALID_FLAG', '--prompt-ids must list at least one token id', command);
    return ids;
  }
  return (text ?? positional)!;
}

/** Flags shared by the model commands. */
export const COMMON_FLAGS: readonly FlagSpec[] = [
  {
    name: 'model',
    type: 'string',
    value: 'DIR',
    default: 'the bundled tinystories-ee model',
    help: 'model directory (config.json + weights [+ tokenizer.json]), or hub id org/name[@revision] (HF cache, fetched if missing)',
  },
  { name: 'threads', type: 'string', value: 'N', default: '1 per 16 MiB of weights', help: 'ONNX Runtime intra-op threads per session' },
  { name: 'json', type: 'boolean', help: 'print exactly one JSON document on stdout' },
  { name: 'verbose', type: 'boolean', help: 'print load and stage build times and session counts to stderr (also MEXIT_LOG=debug)' },
  { name: 'help', type: 'boolean', short: 'h', help: 'show this help' },
];
