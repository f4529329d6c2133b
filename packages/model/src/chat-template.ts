/**
 * Chat templates (Jinja, from tokenizer_config.json or chat_template.jinja) rendered under limits. A template is
 * code from the model directory: `range(10**12)`, nested loops, doubling a string or list in a loop, macro
 * recursion or `indent(10**9)` would otherwise allocate until the process dies or run for hours. @huggingface/jinja
 * has no limits, so rendering goes through a subclass of its Interpreter that counts every evaluation step,
 * bounds nesting depth, the size of every string, list and dict it produces and the time spent, replaces `range`
 * with a bounded one, and checks the filters whose output can outgrow their input (indent, tojson, join,
 * replace) before they run. Valid templates render exactly as with the library's own Template.render.
 * Failures are TokenizerError: CHAT_TEMPLATE_LIMIT naming the limit, CHAT_TEMPLATE for parse/render errors.
 */
import { Environment as JinjaEnvironment, Interpreter, Template } from '@huggingface/jinja';
import { MexitError, OptionsError, TokenizerError, formatValue } from '@mexit/core';

/** Bounds on one render. Defaults in CHAT_TEMPLATE_LIMITS; any of them can be raised per call. */
export interface ChatTemplateLimits {
  /** Characters of the rendered prompt, of any string built while rendering, and of the inputs (JSON-size estimate). */
  maxOutputChars: number;
  /** Elements of any list built while rendering (range(), concatenation, split) or passed in. */
  maxListLength: number;
  /**
   * Work in evaluation steps: one per expression or statement evaluated, per loop iteration and per element of each
   * new list or dict (range() included). Bounds loops, nested loops and recursion (about 1 µs each).
   */
  maxSteps: number;
  /** Nesting of evaluation (macro recursion, nested expressions) and of list/dict values, the inputs included. */
  maxDepth: number;
  /** Wall-clock time of one render: a backstop for work inside single builtins (e.g. `in` on a long string in a loop). */
  maxRenderMs: number;
}

export const CHAT_TEMPLATE_LIMITS: Readonly<ChatTemplateLimits> = Object.freeze({
  maxOutputChars: 16 * 1024 * 1024,
  maxListLength: 1024 * 1024,
  maxSteps: 1_000_000,
  maxDepth: 256,
  maxRenderMs: 5_000,
});

/** Largest chat template source accepted at load, in characters (real templates are under 50 KB). */
export const MAX_CHAT_TEMPLATE_CHARS = 1024 * 1024;
/** Most named templates in a chat_template list. */
export const MAX_CHAT_TEMPLATES = 64;
/**
 * The library's preprocessor runs /(\s*){%.../ over the source, quadratic in each run of whitespace; the sum of
 * squared run lengths is bounded so parsing stays under ~0.1 s (real templates are far below: short indents).
 */
const MAX_WHITESPACE_COST = 64 * 1024 * 1024;

/** Merge per-call overrides into the defaults; OptionsError INVALID_OPTION for a value that is not a positive integer. */
export function resolveChatTemplateLimits(overrides: Partial<ChatTemplateLimits> | undefined): ChatTemplateLimits {
  const limits: ChatTemplateLimits = { ...CHAT_TEMPLATE_LIMITS };
  if (overrides === undefined) return limits;
  if (typeof overrides !== 'object' || overrides === null) {
    throw new OptionsError('INVALID_OPTION', `chat template limits must be an object, got ${typeof overrides}`);
  }
  for (const [key, value] of Object.entries(overrides)) {
    if (!Object.hasOwn(CHAT_TEMPLATE_LIMITS, key)) {
      throw new OptionsError(
        'INVALID_OPTION',
        `unknown chat template limit ${formatValue(key, 100, 'js')} (known: ${Object.keys(limits).join(', ')})`,
      );
    }
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new OptionsError('INVALID_OPTION', `chat template limit ${key} must be a positive integer, got ${String(value)}`);
    }
    limits[key as keyof ChatTemplateLimits] = value as number;
  }
  return limits;
}

/**
 * The parts of the library's runtime this module uses, typed here: its .d.ts files import './runtime' without an
 * extension, which does not resolve under NodeNext, and its value classes are not exported.
 */
interface Value {
  type: string;
  value: unknown;
}
interface Node {
  type: string;
  [field: string]: unknown;
}
interface Environment {
  set(name: string, value: unknown): Value;
}
interface LibInterpreter {
  global: Environment;
  run(program: unknown): Value;
  evaluate(statement: Node | undefined, environment: Environment): Value;
}
const InterpreterBase = Interpreter as unknown as new (env: Environment) => LibInterpreter;
const newEnvironment = (): Environment => new (JinjaEnvironment as unknown as new () => Environment)();
type ApplyFilter = (operand: Value, filter: Node, environment: Environment) => Value;
type EvaluateCall = (expr: Node, environment: Environment) => Value;
/** The library's private hooks this module wraps (plain methods in its build). */
interface InterpreterInternals {
  applyFilter: ApplyFilter;
  evaluateCallExpression: EvaluateCall;
}

/** An AST node standing for an already evaluated value, so a checked argument is not evaluated twice. */
const VALUE_NODE = 'MexitEvaluatedValue';
const valueNode = (value: Value): Node => ({ type: VALUE_NODE, value });

/** Filters whose output can be far larger than their input, checked before they run. */
const GROWING_FILTERS = new Set(['indent', 'tojson', 'join', 'replace']);
/** JSON-size estimate of a number, boolean or null (the estimate only has to be within a small factor). */
const SCALAR_WEIGHT = 8;

function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 1000 ? `${text.slice(0, 1000)}…` : text;
}

/** V8's own out-of-stack / out-of-memory errors, thrown before one of our checks saw the value. */
function isResourceError(err: unknown): boolean {
  return err instanceof RangeError && /call stack|string length|array length|allocation failed/i.test(err.message);
}

function limitError(where: string, limit: keyof ChatTemplateLimits | 'template size', bound: number, detail: string): TokenizerError {
  return new TokenizerError('CHAT_TEMPLATE_LIMIT', `${where}: ${detail} exceeds the ${limit} limit of ${bound}`);
}

/** Load-time bound on one template source. */
export function checkChatTemplateSource(source: string, where: string): void {
  if (source.length > MAX_CHAT_TEMPLATE_CHARS) {
    throw limitError(where, 'template size', MAX_CHAT_TEMPLATE_CHARS, `a template of ${source.length} characters`);
  }
}

/** Parse a template; CHAT_TEMPLATE when it does not parse, CHAT_TEMPLATE_LIMIT when it is too big or too deep to. */
export function compileChatTemplate(source: string, where: string): Template {
  checkChatTemplateSource(source, where);
  let cost = 0;
  for (const match of source.matchAll(/\s+/g)) {
    cost += match[0].length * match[0].length;
    if (cost > MAX_WHITESPACE_COST) {
      throw new TokenizerError(
        'CHAT_TEMPLATE_LIMIT',
        `${where}: runs of whitespace too long to parse (sum of squared run lengths over ${MAX_WHITESPACE_COST}; longest here ${match[0].length})`,
      );
    }
  }
  try {
    return new Template(source);
  } catch (err) {
    if (isResourceError(err)) {
      throw new TokenizerError('CHAT_TEMPLATE_LIMIT', `${where} is nested too deeply to parse: ${errorText(err)}`, { cause: err });
    }
    throw new TokenizerError('CHAT_TEMPLATE', `${where} does not parse: ${errorText(err)}`, { cause: err });
  }
}

/**
 * Render a compiled template with `variables` (messages, add_generation_prompt, special tokens, user context).
 * `where` names the template in error messages.
 */
export function renderChatTemplate(
  template: Template,
  variables: Record<string, unknown>,
  where: string,
  limits: ChatTemplateLimits,
): string {
  checkInputs(variables, where, limits);
  const interpreter = new BoundedInterpreter(newEnvironment(), limits, where);
  try {
    setGlobals(interpreter);
    for (const [key, value] of Object.entries(variables)) interpreter.global.set(key, value);
    const result = interpreter.run(template.parsed);
    return result.value as string;
  } catch (err) {
    if (err instanceof MexitError) throw err;
    if (isResourceError(err)) {
      throw new TokenizerError('CHAT_TEMPLATE_LIMIT', `${where} ran out of stack or memory while rendering: ${errorText(err)}`, {
        cause: err,
      });
    }
    throw new TokenizerError('CHAT_TEMPLATE', `${where} failed to render: ${errorText(err)}`, { cause: err });
  }
}

/**
 * The inputs are converted to template values by recursion over their nesting and copied per reference, so a deep,
 * cyclic or heavily shared object must be refused first: one iterative walk, counting shared parts each time.
 */
function checkInputs(variables: Record<string, unknown>, where: string, limits: ChatTemplateLimits): void {
  const stack: [unknown, number][] = [[variables, 0]];
  let weight = 0;
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (typeof value === 'string') weight += value.length + 2;
    else if (typeof value !== 'object' || value === null) weight += SCALAR_WEIGHT;
    else {
      if (depth >= limits.maxDepth)
        throw limitError(where, 'maxDepth', limits.maxDepth, 'the nesting of messages / context (or a cycle in them)');
      if (Array.isArray(value)) {
        if (value.length > limits.maxListLength) {
          throw limitError(where, 'maxListLength', limits.maxListLength, `a list of ${value.length} elements in messages / context`);
        }
        weight += 2 + 2 * value.length;
        for (const item of value) stack.push([item, depth + 1]);
      } else {
        for (const [key, item] of Object.entries(value)) {
          weight += key.length + 6;
          stack.push([item, depth + 1]);
        }
      }
    }
    if (weight > limits.maxOutputChars) {
      throw limitError(where, 'maxOutputChars', limits.maxOutputChars, 'the size of messages / context (shared parts counted each time)');
    }
  }
}

/** transformers' globals as the library's setupGlobals() declares them, with range() bounded. */
function setGlobals(interpreter: BoundedInterpreter): void {
  const env = interpreter.global;
  for (const [name, value] of [
    ['false', false],
    ['true', true],
    ['none', null],
    ['True', true],
    ['False', false],
    ['None', null],
  ] as const) {
    env.set(name, value);
  }
  env.set('raise_exception', (message: string) => {
    throw new Error(message);
  });
  env.set('range', (start: number, stop?: number, step = 1) => interpreter.range(start, stop, step));
  env.set('strftime_now', (format: string) => strftime(new Date(), format));
}

/** The library's strftime() (utils.ts): %Y %m %d %b %B %H %M %% in the default locale. */
function strftime(date: Date, format: string): string {
  const pad2 = (n: number): string => (n < 10 ? `0${n}` : n.toString());
  return format.replace(/%[YmdbBHM%]/g, (token) => {
    switch (token) {
      case '%Y':
        return date.getFullYear().toString();
      case '%m':
        return pad2(date.getMonth() + 1);
      case '%d':
        return pad2(date.getDate());
      case '%b':
        return new Intl.DateTimeFormat(undefined, { month: 'short' }).format(date);
      case '%B':
        return new Intl.DateTimeFormat(undefined, { month: 'long' }).format(date);
      case '%H':
        return pad2(date.getHours());
      case '%M':
        return pad2(date.getMinutes());
      default:
        return '%';
    }
  });
}

/** JSON-size estimate, element count and nesting depth of a value: what serializing or copying it costs. */
interface Measure {
  weight: number;
  nodes: number;
  depth: number;
}
const SCALAR: Measure = { weight: SCALAR_WEIGHT, nodes: 1, depth: 0 };

const isList = (v: Value): boolean => v.type === 'ArrayValue' || v.type === 'TupleValue';
const isMapping = (v: Value): boolean => v.type === 'ObjectValue' || v.type === 'KeywordArgumentsValue' || v.type === 'NamespaceValue';
const sizeOf = (v: Value): number => (isMapping(v) ? (v.value as Map<string, Value>).size : 0);

class BoundedInterpreter extends InterpreterBase {
  private readonly limits: ChatTemplateLimits;
  private readonly where: string;
  private readonly deadline: number;
  private steps = 0;
  private depth = 0;
  /** Lists and dicts never change once built (only namespaces do), so their measure is computed once. */
  private readonly measures = new WeakMap<object, Measure>();
  /** Iterable expressions of the loops being entered: their length is charged, one step per iteration. */
  private readonly loopIterables = new WeakSet<object>();

  constructor(env: Environment, limits: ChatTemplateLimits, where: string) {
    super(env);
    this.limits = limits;
    this.where = where;
    this.deadline = performance.now() + limits.maxRenderMs;
    const internals = this as unknown as InterpreterInternals;
    const applyFilter = internals.applyFilter;
    const evaluateCall = internals.evaluateCallExpression;
    if (typeof applyFilter !== 'function' || typeof evaluateCall !== 'function') {
      throw new Error('@huggingface/jinja changed its Interpreter internals; chat-template.ts needs updating');
    }
    internals.applyFilter = (operand, filter, environment) => this.guardFilter(operand, filter, environment, applyFilter.bind(this));
    internals.evaluateCallExpression = (expr, environment) => this.guardCall(expr, environment, evaluateCall.bind(this));
  }

  override evaluate(statement: Node | undefined, environment: Environment): Value {
    if (statement === undefined) return super.evaluate(statement, environment);
    if (statement.type === VALUE_NODE) return statement.value as Value;
    this.charge(1);
    if (this.depth >= this.limits.maxDepth) {
      this.exceeded('maxDepth', this.limits.maxDepth, 'the evaluation depth (macro recursion or nesting)');
    }
    this.depth++;
    try {
      if (statement.type === 'For') {
        const iterable = statement.iterable as Node;
        this.loopIterables.add(iterable.type === 'SelectExpression' ? (iterable.lhs as Node) : iterable);
      }
      const result = super.evaluate(statement, environment);
      if (this.loopIterables.has(statement)) this.charge(isList(result) ? (result.value as Value[]).length : sizeOf(result));
      this.check(result);
      return result;
    } finally {
      this.depth--;
    }
  }

  /** Python's range() as the library implements it, refusing more elements than the step budget has left. */
  range(start: number, stop: number | undefined, step: number): number[] {
    if (stop === undefined) {
      stop = start;
      start = 0;
    }
    if (step === 0) throw new Error('range() step must not be zero');
    const cap = Math.min(this.limits.maxListLength, this.limits.maxSteps - this.steps);
    const result: number[] = [];
    for (let i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (result.length >= cap) {
        if (cap === this.limits.maxListLength) this.exceeded('maxListLength', cap, `a range() of more than ${cap} elements`);
        this.exceeded('maxSteps', this.limits.maxSteps, `a range() of more than ${cap} elements after ${this.steps} steps`);
      }
      result.push(i);
    }
    return result;
  }

  private charge(steps: number): void {
    const before = this.steps;
    this.steps += steps;
    if (this.steps > this.limits.maxSteps)
      this.exceeded('maxSteps', this.limits.maxSteps, 'the number of evaluation steps (loops, recursion)');
    if (Math.floor(before / 1024) !== Math.floor(this.steps / 1024) && performance.now() > this.deadline) {
      this.exceeded('maxRenderMs', this.limits.maxRenderMs, `rendering time (after ${this.steps} steps)`);
    }
  }

  private exceeded(limit: keyof ChatTemplateLimits, bound: number, detail: string): never {
    throw limitError(this.where, limit, bound, detail);
  }

  /** Every value the template produces or reads stays within the size limits. */
  private check(value: Value): void {
    if (value.type === 'StringValue') {
      const length = (value.value as string).length;
      if (length > this.limits.maxOutputChars)
        this.exceeded('maxOutputChars', this.limits.maxOutputChars, `a string of ${length} characters`);
    } else if (isList(value) || isMapping(value)) {
      this.measure(value);
    }
  }

  private measure(value: Value): Measure {
    if (!isList(value) && !isMapping(value)) {
      return value.type === 'StringValue' ? { weight: (value.value as string).length + 2, nodes: 1, depth: 0 } : SCALAR;
    }
    const known = this.measures.get(value);
    if (known !== undefined) return known;
    const total: Measure = { weight: 2, nodes: 1, depth: 1 };
    const add = (child: Value, extra: number): void => {
      // A namespace is mutable: inside a list it could later be made to hold that list, so nesting is refused.
      if (child.type === 'NamespaceValue') {
        throw new TokenizerError(
          'CHAT_TEMPLATE_LIMIT',
          `${this.where}: a namespace() object cannot be stored in a list, dict or namespace`,
        );
      }
      const m = this.measure(child);
      total.weight += m.weight + extra;
      total.nodes += m.nodes;
      if (m.depth + 1 > total.depth) total.depth = m.depth + 1;
    };
    if (isList(value)) {
      const items = value.value as Value[];
      if (items.length > this.limits.maxListLength)
        this.exceeded('maxListLength', this.limits.maxListLength, `a list of ${items.length} elements`);
      for (const item of items) add(item, 2);
    } else {
      for (const [key, item] of value.value as Map<string, Value>) add(item, key.length + 6);
    }
    if (total.depth > this.limits.maxDepth) this.exceeded('maxDepth', this.limits.maxDepth, 'the nesting of lists and dicts');
    if (total.weight > this.limits.maxOutputChars) {
      this.exceeded('maxOutputChars', this.limits.maxOutputChars, `a list or dict of about ${total.weight} characters as JSON`);
    }
    // Building a list or dict costs one step per element; a namespace is re-measured on each use, so not charged.
    if (value.type !== 'NamespaceValue') {
      this.measures.set(value, total);
      this.charge(isList(value) ? (value.value as Value[]).length : sizeOf(value));
    }
    return total;
  }

  /** Evaluate call arguments once, in the library's order (positional, then keyword), into value nodes. */
  private evaluateArgs(args: Node[], environment: Environment): { nodes: Node[]; positional: Value[]; keywords: Map<string, Value> } {
    const nodes = args.slice();
    const positional: Value[] = [];
    const keywords = new Map<string, Value>();
    args.forEach((arg, i) => {
      if (arg.type === 'KeywordArgumentExpression' || arg.type === 'KeywordSpreadExpression') return;
      const target = (arg.type === 'SpreadExpression' ? arg.argument : arg) as Node;
      const value = this.evaluate(target, environment);
      if (arg.type === 'SpreadExpression') {
        nodes[i] = { ...arg, argument: valueNode(value) };
        if (isList(value)) for (const item of value.value as Value[]) positional.push(item);
      } else {
        nodes[i] = valueNode(value);
        positional.push(value);
      }
    });
    args.forEach((arg, i) => {
      if (arg.type === 'KeywordArgumentExpression') {
        const value = this.evaluate(arg.value as Node, environment);
        nodes[i] = { ...arg, value: valueNode(value) };
        keywords.set((arg.key as Value).value as string, value);
      } else if (arg.type === 'KeywordSpreadExpression') {
        const value = this.evaluate(arg.argument as Node, environment);
        nodes[i] = { ...arg, argument: valueNode(value) };
        if (value.type === 'ObjectValue') for (const [key, item] of value.value as Map<string, Value>) keywords.set(key, item);
      }
    });
    return { nodes, positional, keywords };
  }

  private guardFilter(operand: Value, filter: Node, environment: Environment, original: ApplyFilter): Value {
    const node = filter;
    const callee = node.callee as Value | undefined;
    if (node.type !== 'CallExpression' || callee?.type !== 'Identifier' || !GROWING_FILTERS.has(callee.value as string)) {
      return original(operand, filter, environment);
    }
    const name = callee.value as string;
    const input = operand;
    const applies = name === 'tojson' || input.type === 'StringValue' || (name === 'join' && isList(input));
    if (!applies) return original(operand, filter, environment);
    const { nodes, positional, keywords } = this.evaluateArgs(node.args as Node[], environment);
    this.checkGrowth(name, input, positional, keywords);
    return original(operand, { ...node, args: nodes }, environment);
  }

  /** `text.replace(old, new)` is the one method whose result can outgrow its input. */
  private guardCall(expr: Node, environment: Environment, original: EvaluateCall): Value {
    const node = expr;
    const callee = node.callee as Node;
    const property = callee.property as Value | undefined;
    if (callee.type !== 'MemberExpression' || callee.computed === true || property?.type !== 'Identifier' || property.value !== 'replace') {
      return original(expr, environment);
    }
    const { nodes, positional, keywords } = this.evaluateArgs(node.args as Node[], environment);
    const object = this.evaluate(callee.object as Node, environment);
    if (object.type === 'StringValue') this.checkGrowth('replace', object, positional, keywords);
    const call = { ...node, args: nodes, callee: { ...callee, object: valueNode(object) } };
    return original(call, environment);
  }

  /** Upper bound of the filter's output size, refused before it is built. */
  private checkGrowth(name: string, input: Value, positional: Value[], keywords: Map<string, Value>): void {
    const int = (v: Value | undefined, fallback: number): number =>
      v?.type === 'IntegerValue' ? Math.max(0, v.value as number) : fallback;
    const str = (v: Value | undefined): string => (v?.type === 'StringValue' ? (v.value as string) : '');
    const text = input.type === 'StringValue' ? (input.value as string) : '';
    let bound: number;
    if (name === 'indent') {
      let lines = 1;
      for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) lines++;
      bound = text.length + lines * int(positional[0] ?? keywords.get('width'), 4);
    } else if (name === 'replace') {
      const from = str(positional[0]);
      const to = str(positional[1]);
      const countArg = positional[2] ?? keywords.get('count');
      const max = countArg?.type === 'IntegerValue' && (countArg.value as number) >= 0 ? (countArg.value as number) : Infinity;
      let hits = 0;
      if (from.length === 0) hits = text.length + 1;
      else for (let i = text.indexOf(from); i >= 0 && hits < max; i = text.indexOf(from, i + from.length)) hits++;
      bound = text.length + Math.min(hits, max) * to.length;
    } else if (name === 'join') {
      const separator = str(positional[0] ?? keywords.get('separator'));
      const count = isList(input) ? (input.value as Value[]).length : text.length;
      bound = this.measure(input).weight + count * separator.length;
    } else {
      const m = this.measure(input);
      const indent = int(keywords.get('indent'), 0);
      const separators = keywords.get('separators');
      const separatorChars =
        separators !== undefined && isList(separators) ? (separators.value as Value[]).reduce((n, v) => n + str(v).length, 0) : 0;
      const ascii = keywords.get('ensure_ascii')?.value === true ? 6 : 1;
      bound = ascii * m.weight + m.nodes * (separatorChars + (indent > 0 ? 2 * (1 + indent * (m.depth + 1)) : 0));
    }
    if (bound > this.limits.maxOutputChars) {
      this.exceeded('maxOutputChars', this.limits.maxOutputChars, `the ${name} filter's result (up to ${bound} characters)`);
    }
  }
}
