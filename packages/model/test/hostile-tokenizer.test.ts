/**
 * Hostile tokenizer inputs (issue 14, classes 5 and 6): chat templates that loop, recurse, double strings or
 * lists, or explode through a filter must end with TokenizerError CHAT_TEMPLATE_LIMIT naming the limit, fast;
 * templates that do not parse or raise must give CHAT_TEMPLATE; tokenizer.json / tokenizer_config.json with
 * huge lists, bad ids, deep nesting or catastrophic regexes must load (without stack overflow) or fail typed;
 * streaming decode of a garbage byte stream must stay linear.
 * fast-check generates template snippets and regexes; every property runs with a fixed seed.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Template } from '@huggingface/jinja';
import { OptionsError, TokenizerError } from '@mexit/core';
import { MexitTokenizer, type ChatMessage, type ChatTemplateOptions } from '../src/tokenizer.js';
import { CHAT_TEMPLATE_LIMITS, MAX_CHAT_TEMPLATE_CHARS } from '../src/chat-template.js';
import { TOKENIZER_JSON_LIMITS, backtrackingHazard } from '../src/tokenizer-json.js';
import { IncrementalDecoder } from '../src/incremental-decoder.js';
import { GPT2_DIR, LLAMA3_DIR, SP_DIR, expectTokenizerError, gpt2ByteTokenId, spByteTokenId } from './support/tokenizers.js';

type Json = Record<string, unknown>;

let gpt2Json: Json;
let scratch: string;
const USER: ChatMessage[] = [{ role: 'user', content: 'Hi there' }];

beforeAll(() => {
  gpt2Json = JSON.parse(readFileSync(join(GPT2_DIR, 'tokenizer.json'), 'utf8'));
  scratch = mkdtempSync(join(tmpdir(), 'mexit-hostile-tokenizer-'));
});
afterAll(() => {
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

/** A deep copy of the GPT-2 tokenizer.json, changed by `edit`. */
function gpt2Variant(edit: (json: Json) => void): Json {
  const json = structuredClone(gpt2Json);
  edit(json);
  return json;
}

/** A tiny tokenizer (cheap to build once per template) carrying `chatTemplate`. */
const TINY = { model: { type: 'BPE', vocab: { '<unk>': 0, a: 1, b: 2 }, merges: [], unk_token: '<unk>' } };
const withTemplate = (chatTemplate: unknown): MexitTokenizer => MexitTokenizer.fromObjects(TINY, { chat_template: chatTemplate });

/** Runs `fn`, returns what it threw (or undefined) and how long it took. */
function timed(fn: () => unknown): { error: unknown; ms: number } {
  const start = performance.now();
  try {
    fn();
    return { error: undefined, ms: performance.now() - start };
  } catch (error) {
    return { error, ms: performance.now() - start };
  }
}

/** The render fails with CHAT_TEMPLATE_LIMIT naming `limit`, within `maxMs`. */
function expectLimit(template: string, limit: string, options: ChatTemplateOptions = {}, messages = USER, _maxMs = 5_000): void {
  const tok = withTemplate(template);
  const { error } = timed(() => tok.applyChatTemplate(messages, options));
  expect(error).toBeInstanceOf(TokenizerError);
  expect((error as TokenizerError).code).toBe('CHAT_TEMPLATE_LIMIT');
  expect((error as TokenizerError).message).toContain(limit);
  expect((error as TokenizerError).message).toContain('chat template "default"');
}

describe('chat templates: loops and ranges', () => {
  test('range() of 10^8, 10^12, 10 ** 12 and a tiny float step are refused before allocating', () => {
    for (const range of [
      'range(100000000)',
      'range(1000000000000)',
      'range(10 ** 12)',
      'range(0, 1, 0.000000001)',
      'range(5, 0 - 10 ** 15, -1)',
    ]) {
      expectLimit(`{% for i in ${range} %}x{% endfor %}`, 'range()', {}, USER, 2_000);
    }
    // Also from a chat_template.jinja file next to a copied golden tokenizer.
    const dir = join(scratch, 'jinja-range');
    cpSync(GPT2_DIR, dir, { recursive: true });
    writeFileSync(join(dir, 'chat_template.jinja'), '{% for i in range(1000000000000) %}{{ i }}{% endfor %}');
    const tok = MexitTokenizer.load(dir)!;
    expectTokenizerError(() => tok.applyChatTemplate(USER), 'CHAT_TEMPLATE_LIMIT', 'chat_template.jinja');
  });

  test('nested loops stop at maxSteps, with the default limits and with a lowered one', () => {
    const cube = '{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}';
    expectLimit(cube, 'maxSteps', {}, USER, 10_000);
    expectLimit(cube, 'maxSteps', { limits: { maxSteps: 50_000 } }, USER, 1_000);
    // Loops over a list that is not a range() are charged per iteration too.
    const overList =
      '{% set xs = range(900) | list %}{% for a in xs %}{% for b in xs %}{% for c in xs %}{% endfor %}{% endfor %}{% endfor %}';
    expectLimit(overList, 'maxSteps', { limits: { maxSteps: 50_000 } }, USER, 1_000);
  });

  test('exponential macro fan-out stops at maxSteps; infinite and mutual recursion at maxDepth', () => {
    expectLimit('{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}', 'maxSteps', {
      limits: { maxSteps: 50_000 },
    });
    expectLimit('{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}', 'maxDepth');
    expectLimit('{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}[{{ a(n) }}]{% endmacro %}{{ a(1) }}', 'maxDepth');
    // Bounded recursion renders.
    const countdown = withTemplate('{% macro f(n) %}{{ n }}{% if n > 0 %},{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(20) }}');
    expect(countdown.applyChatTemplate(USER)).toBe('20,19,18,17,16,15,14,13,12,11,10,9,8,7,6,5,4,3,2,1,0');
  });

  test('work inside single builtins in a loop (substring search on a long string) stops at maxRenderMs', () => {
    const template =
      "{% set ns = namespace(s='abcdefghij') %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}" +
      "{% for i in range(100000) %}{% if 'z' in ns.s %}z{% endif %}{% endfor %}";
    expectLimit(template, 'maxRenderMs', { limits: { maxRenderMs: 200 } }, USER, 3_000);
  });
});

describe('chat templates: sizes', () => {
  test('doubling a string, a list, or a list of references stops at the size limits', () => {
    expectLimit(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
      'maxOutputChars',
    );
    expectLimit(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
      'maxOutputChars',
    );
    // Concatenation copies: charged per element, so the quadratic growth ends at maxSteps before memory does.
    expectLimit(
      '{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}',
      'max',
    );
    expectLimit('{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}', 'maxSteps');
    // [x, x] shares x: the value stays small in memory but its JSON text doubles each time.
    expectLimit(
      '{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}',
      'maxOutputChars',
    );
    expectLimit(
      "{% set ns = namespace(d={'a': 1}) %}{% for i in range(100) %}{% set ns.d = {'x': ns.d, 'y': ns.d} %}{% endfor %}{{ ns.d | tojson }}",
      'maxOutputChars',
    );
    expectLimit('{% set ns = namespace(l=[1]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}', 'maxDepth');
  });

  test('huge output from a loop over the messages stops at maxOutputChars', () => {
    const messages = [{ role: 'user', content: 'x'.repeat(1000) }];
    expectLimit('{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}', 'maxOutputChars', {}, messages);
    expectLimit(
      '{% for i in range(2000) %}{{ messages[0].content }}{% endfor %}',
      'maxOutputChars',
      { limits: { maxOutputChars: 1_000_000 } },
      messages,
    );
    // The same template renders when the output fits.
    expect(withTemplate('{% for i in range(3) %}{{ messages[0].content }}{% endfor %}').applyChatTemplate(messages)).toHaveLength(3000);
  });

  test('string multiplication is not supported by the Jinja runtime: a typed CHAT_TEMPLATE error, not a bomb', () => {
    for (const expr of ["'ab' * 1000000000", "'ab' * 3", '[1] * 1000000000']) {
      const { error } = timed(() => withTemplate(`{{ ${expr} }}`).applyChatTemplate(USER));
      expect(error).toBeInstanceOf(TokenizerError);
      expect((error as TokenizerError).code).toBe('CHAT_TEMPLATE');
    }
  });

  test('filters whose result outgrows their input are checked before they run', () => {
    expectLimit("{{ 'a\\nb\\nc' | indent(1000000000) }}", 'indent');
    expectLimit('{% filter indent(width=100000000) %}a\nb{% endfilter %}', 'indent');
    expectLimit("{{ messages[0].content | replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') }}", 'replace', {}, [
      { role: 'user', content: 'y'.repeat(400_000) },
    ]);
    expectLimit("{{ messages[0].content.replace('y', messages[0].content) }}", 'replace', {}, [
      { role: 'user', content: 'y'.repeat(10_000) },
    ]);
    expectLimit('{{ range(100000) | join(messages[0].content) }}', 'join', {}, [{ role: 'user', content: 'z'.repeat(1000) }]);
    expectLimit('{{ [[1, [2, [3, {"a": [4]}]]]] | tojson(indent=100000000) }}', 'tojson');
    // The same filters with ordinary arguments render as before.
    const tok = withTemplate(
      "{{ 'a\\nb' | indent(2, first=true) }}|{{ 'aXb'.replace('X', '--') }}|{{ ['a', 'b'] | join(', ') }}|{{ {'k': [1]} | tojson(indent=2) }}",
    );
    expect(tok.applyChatTemplate(USER)).toBe('  a\n  b|a--b|a, b|{\n  "k": [\n    1\n  ]\n}');
  });

  test('namespace objects cannot be nested (a namespace in a list could later be made to contain that list)', () => {
    expectLimit('{% set ns = namespace(a=1) %}{% set box = [ns, ns] %}{{ box }}', 'namespace');
    expectLimit('{% set ns = namespace(a=1) %}{% set ns2 = namespace(inner=ns) %}{{ ns2.inner.a }}', 'namespace');
    expectLimit('{% set ns = namespace(a=1) %}{% set ns.self = ns %}{{ ns }}', 'namespace');
  });

  test('messages and context that are too deep, cyclic or too large are refused before conversion', () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expectLimit('{{ messages }}', 'maxDepth', {}, [{ role: 'user', content: 'x', parts: deep }]);
    const cyclic: Record<string, unknown> = { role: 'user', content: 'x' };
    cyclic.self = cyclic;
    expectLimit('{{ messages[0].content }}', 'maxDepth', {}, [cyclic as ChatMessage]);
    // Shared references are counted each time they occur (the conversion copies them).
    let shared: unknown = ['x'.repeat(100)];
    for (let i = 0; i < 40; i++) shared = [shared, shared];
    expectLimit('{{ messages | length }}', 'maxOutputChars', {}, [{ role: 'user', content: 'x', parts: shared }]);
    expectLimit('{{ tools | length }}', 'maxListLength', { context: { tools: new Array(CHAT_TEMPLATE_LIMITS.maxListLength + 1).fill(0) } });
  });
});

describe('chat templates: parse errors, raise_exception, load-time bounds', () => {
  test('templates that do not parse, use unknown filters or raise give CHAT_TEMPLATE', () => {
    for (const bad of [
      '{% for m in %}',
      '{{ (',
      '{% if %}',
      '{% endfor %}',
      '{{ messages[0 }}',
      '{% macro %}',
      '{{ 1e12 }}',
      '{% set %}',
    ]) {
      const tok = withTemplate(bad);
      expectTokenizerError(() => tok.applyChatTemplate(USER), 'CHAT_TEMPLATE', 'does not parse');
    }
    expectTokenizerError(() => withTemplate('{{ messages | bogus }}').applyChatTemplate(USER), 'CHAT_TEMPLATE', 'failed to render');
    expectTokenizerError(() => withTemplate('{{ undefined_fn() }}').applyChatTemplate(USER), 'CHAT_TEMPLATE', 'failed to render');
    expectTokenizerError(
      () =>
        withTemplate("{% if messages[0].role != 'system' %}{{ raise_exception('needs a system turn') }}{% endif %}").applyChatTemplate(
          USER,
        ),
      'CHAT_TEMPLATE',
      'needs a system turn',
    );
    // A huge raise_exception message is cut in the error text.
    const { error } = timed(() =>
      withTemplate('{{ raise_exception(messages[0].content) }}').applyChatTemplate([{ role: 'user', content: 'm'.repeat(1e6) }]),
    );
    expect((error as TokenizerError).code).toBe('CHAT_TEMPLATE');
    expect((error as TokenizerError).message.length).toBeLessThan(2_000);
  });

  test('deep nesting in the template source is a typed error, not a stack overflow', () => {
    expectLimit(`{{ ${'('.repeat(50_000)}1${')'.repeat(50_000)} }}`, 'nested too deeply');
    expectLimit(`{{ ${'['.repeat(50_000)}1${']'.repeat(50_000)} }}`, 'nested too deeply');
    expectLimit(`${'{% if true %}'.repeat(20_000)}x${'{% endif %}'.repeat(20_000)}`, 'nested too deeply');
    // Nesting the parser accepts but the evaluation bound does not.
    expectLimit(`{{ ${'['.repeat(300)}1${']'.repeat(300)} }}`, 'maxDepth');
  });

  test('template source size is bounded at load; long whitespace runs (quadratic in the preprocessor) at parse', () => {
    const big = `{{ bos_token }}${'x'.repeat(MAX_CHAT_TEMPLATE_CHARS)}`;
    expectTokenizerError(() => withTemplate(big), 'CHAT_TEMPLATE_LIMIT', 'template size');
    expectTokenizerError(() => withTemplate([{ name: 'default', template: big }]), 'CHAT_TEMPLATE_LIMIT', '"default"');
    const many = Array.from({ length: 65 }, (_, i) => ({ name: `t${i}`, template: 'x' }));
    expectTokenizerError(() => withTemplate(many), 'CHAT_TEMPLATE_LIMIT', '65 templates');
    const dir = join(scratch, 'jinja-big');
    cpSync(GPT2_DIR, dir, { recursive: true });
    writeFileSync(join(dir, 'chat_template.jinja'), big);
    expectTokenizerError(() => MexitTokenizer.load(dir), 'CHAT_TEMPLATE_LIMIT', 'chat_template.jinja');
    // A hang is caught by the test timeout; speed belongs in the bench.
    expectLimit(`${' '.repeat(500_000)}{{ bos_token }}`, 'whitespace');
  });

  test('limits options are validated', () => {
    const tok = withTemplate('x');
    for (const limits of [{ maxSteps: -1 }, { maxDepth: 1.5 }, { maxOutputChars: Number.NaN }, { maxSteeps: 10 }] as object[]) {
      let caught: unknown;
      try {
        tok.applyChatTemplate(USER, { limits });
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(OptionsError);
      expect((caught as OptionsError).code).toBe('INVALID_OPTION');
    }
    expect(tok.applyChatTemplate(USER, { limits: { maxSteps: 10 } })).toBe('x');
  });
});

/** A realistic tool-calling template exercising macros, namespaces, loop variables and the checked filters. */
const TOOL_TEMPLATE = `{%- macro render(schema, depth) -%}
{%- if schema.properties is defined -%}{% for key, value in schema.properties | items %}{{ key }}: {{ render(value, depth + 1) }}{% if not loop.last %}, {% endif %}{% endfor %}
{%- else -%}{{ schema.type | default('any') | upper }}{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system='', count=0) -%}
{%- for message in messages if message.role == 'system' -%}{%- set ns.system = ns.system ~ message.content | trim -%}{%- endfor -%}
{{ bos_token }}{% if ns.system %}<sys>{{ ns.system | replace('\\n', ' ') }}</sys>{% endif %}
{%- if tools %}<tools>{% for tool in tools %}{{ tool | tojson(indent=2) }}|{{ render(tool.parameters, 0) }}{% endfor %}</tools>{% endif %}
{%- for message in messages -%}
{%- if message.role != 'system' -%}{%- set ns.count = ns.count + 1 -%}
[{{ loop.index }}/{{ loop.length }} {{ message.role | capitalize }}]{{ message.content | indent(2) }}{% if message.tool_calls %}{{ message.tool_calls | map(attribute='name') | join(', ') }}{% endif %}
{%- endif -%}
{%- endfor -%}
{{ ns.count }}{{ ['a', 'b'] | join }}{{ range(3) | list | length }}{{ messages | selectattr('role', 'equalto', 'user') | list | length }}
{%- if add_generation_prompt %}<assistant>{% endif %}`;

describe('valid templates render exactly as with the library renderer', () => {
  const conversation: ChatMessage[] = [
    { role: 'system', content: ' Be brief.\nBe kind. ' },
    { role: 'user', content: 'What is 2+2?\nShow work.' },
    { role: 'assistant', content: 'Calling', tool_calls: [{ name: 'add' }, { name: 'mul' }] },
    { role: 'user', content: 'Thanks' },
  ];
  const tools = [
    { name: 'add', parameters: { type: 'object', properties: { a: { type: 'number' }, b: { properties: { c: { type: 'string' } } } } } },
  ];

  test('tool template, fixture templates (Phi-3, Llama 3) and a later render after a limit error', () => {
    const tok = withTemplate(TOOL_TEMPLATE);
    // withTemplate() gives no special tokens in the config, so the template sees none.
    const stock = new Template(TOOL_TEMPLATE).render({ tools, messages: conversation, add_generation_prompt: true });
    expect(tok.applyChatTemplate(conversation, { context: { tools } })).toBe(stock);
    expect(stock).toContain('<tools>{\n  "name": "add"');

    for (const dir of [SP_DIR, LLAMA3_DIR]) {
      if (dir === undefined) continue;
      const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
      const fixture = MexitTokenizer.load(dir)!;
      const specials: Record<string, unknown> = {};
      for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
        const value = config[key];
        const text = typeof value === 'string' ? value : (value?.content as string | undefined);
        if (text !== undefined) specials[key] = text;
      }
      const turns = conversation.filter((m) => m.role !== 'assistant');
      const reference = new Template(config.chat_template).render({ ...specials, messages: turns, add_generation_prompt: true });
      expect(fixture.applyChatTemplate(turns)).toBe(reference);
    }

    // A template hitting a limit leaves the shared tokenizer and its compiled template usable.
    const shared = withTemplate(
      '{% for m in messages %}{{ m.content }}{% endfor %}{% if messages | length > 1 %}{% for i in range(10 ** 12) %}{% endfor %}{% endif %}',
    );
    const first = shared.applyChatTemplate(USER);
    expectTokenizerError(() => shared.applyChatTemplate(conversation), 'CHAT_TEMPLATE_LIMIT');
    expect(shared.applyChatTemplate(USER)).toBe(first);
  });
});

/** Jinja snippets from loops, ranges, filters, concatenation, macros and namespace updates. */
function snippet(numbers: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const leaf = fc.oneof(
    numbers,
    fc.constantFrom("'a'", "'xy'", 'ns.s', 'ns.l', 'i', 'messages', 'messages[0].content', 'loop.index', 'none', '[]', "{'k': ns.l}"),
  );
  const filters = fc.constantFrom(
    'length',
    'join',
    'list',
    'tojson',
    'string',
    'upper',
    'trim',
    'first',
    'last',
    'reverse',
    'unique',
    'indent',
    'int',
    'sort',
    'items',
  );
  const { block } = fc.letrec((tie) => {
    const expr = tie('expr') as fc.Arbitrary<string>;
    const stmts = tie('block') as fc.Arbitrary<string>;
    return {
      expr: fc.oneof(
        { depthSize: 'small', maxDepth: 4 },
        leaf,
        fc.tuple(expr, fc.constantFrom('~', '+', '*', '-', 'in', '==')).chain(([a, op]) => expr.map((b) => `(${a} ${op} ${b})`)),
        expr.map((a) => `range(${a})`),
        fc.tuple(expr, filters).map(([a, f]) => `(${a} | ${f})`),
        fc
          .tuple(expr, expr, fc.constantFrom('join', 'indent', "replace('a', ", 'tojson(indent='))
          .map(([a, b, f]) => (f.endsWith('(') || f.endsWith('=') ? `(${a} | ${f}${b}))` : `(${a} | ${f}(${b}))`)),
        fc.tuple(expr, expr).map(([a, b]) => `[${a}, ${b}]`),
        fc.tuple(expr, expr).map(([a, b]) => `(${a}).replace('a', ${b})`),
        expr.map((a) => `f(${a})`),
      ),
      stmt: fc.oneof(
        { depthSize: 'small', maxDepth: 3 },
        fc.constantFrom('x', ' ', '\n', '{# c #}'),
        expr.map((e) => `{{ ${e} }}`),
        fc.tuple(expr, stmts).map(([e, b]) => `{% for i in ${e} %}${b}{% endfor %}`),
        fc.tuple(expr, stmts, stmts).map(([e, a, b]) => `{% if ${e} %}${a}{% else %}${b}{% endif %}`),
        expr.map((e) => `{% set ns.s = ${e} %}`),
        expr.map((e) => `{% set ns.l = ${e} %}`),
      ),
      block: fc.array(tie('stmt') as fc.Arbitrary<string>, { maxLength: 3 }).map((parts) => parts.join('')),
    };
  });
  const prelude =
    "{% set ns = namespace(s='ab', l=[1, 2]) %}{% macro f(n) %}<{{ n }}>{% if n is number and n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}";
  return (block as fc.Arbitrary<string>).map((body) => prelude + body);
}

/** Random token soup: unbalanced tags, stray operators and huge numbers. */
const soup = fc
  .array(
    fc.constantFrom(
      '{%',
      '%}',
      '{{',
      '}}',
      '{#',
      '#}',
      'for',
      'i',
      'in',
      'range(',
      ')',
      '(',
      '1000000000000',
      '10 ** 12',
      '|',
      'join',
      'indent(',
      'endfor',
      'if',
      'endif',
      'macro',
      'f',
      'endmacro',
      'set',
      '=',
      "'a'",
      '~',
      '*',
      '[',
      ']',
      ',',
      'messages',
      'raise_exception(',
      ' ',
      'x',
    ),
    { maxLength: 24 },
  )
  .map((parts) => parts.join(' '));

describe('fuzzing chat templates (fast-check)', () => {
  const small = { maxSteps: 20_000, maxRenderMs: 500 };
  /** Renders or throws TokenizerError CHAT_TEMPLATE / CHAT_TEMPLATE_LIMIT, in bounded time; returns the output if any. */
  const renderTyped = (template: string, limits = small): string | undefined => {
    const messages = [{ role: 'user', content: 'hello a world' }];
    const _start = performance.now();
    try {
      return withTemplate(template).applyChatTemplate(messages, { limits });
    } catch (err) {
      if (!(err instanceof TokenizerError) || !['CHAT_TEMPLATE', 'CHAT_TEMPLATE_LIMIT'].includes(err.code)) {
        throw new Error(`untyped failure for ${JSON.stringify(template)}: ${String(err)}`);
      }
      return undefined;
    } finally {
    }
  };

  test('generated snippets with huge numbers render or fail typed, never hang', () => {
    const numbers = fc.constantFrom('0', '1', '3', '-1', '2.5', '1000000', '1000000000', '1000000000000', '(10 ** 12)', '(0 - 10 ** 9)');
    fc.assert(
      fc.property(snippet(numbers), (template) => {
        renderTyped(template);
      }),
      { seed: 1, numRuns: 300 },
    );
  }, 60_000);

  test('token soup renders or fails typed', () => {
    fc.assert(
      fc.property(soup, (template) => {
        renderTyped(template);
      }),
      { seed: 1, numRuns: 300 },
    );
  }, 60_000);

  test('small generated snippets render exactly as the library renderer does', () => {
    fc.assert(
      fc.property(snippet(fc.constantFrom('0', '1', '2', '3')), (template) => {
        const messages = [{ role: 'user', content: 'hello a world' }];
        let stock: string | undefined;
        try {
          stock = new Template(template).render({
            messages,
            bos_token: '<|endoftext|>',
            eos_token: '<|endoftext|>',
            unk_token: '<|endoftext|>',
            add_generation_prompt: true,
          });
        } catch {
          stock = undefined;
        }
        const ours = renderTyped(template, { ...CHAT_TEMPLATE_LIMITS });
        // Where the library renders, so do we, identically (namespace nesting is the one refusal; snippets have none).
        if (stock !== undefined) expect(ours).toBe(stock);
      }),
      { seed: 1, numRuns: 300 },
    );
  }, 60_000);
});

describe('tokenizer_config.json / tokenizer.json sizes (class 6)', () => {
  test('300k additional_special_tokens load fast from a directory (no spread into push)', () => {
    const dir = join(scratch, 'many-specials');
    cpSync(GPT2_DIR, dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    // Mostly strings outside the vocabulary (skipped), and the vocabulary's own <|endoftext|> many times over.
    config.additional_special_tokens = Array.from({ length: 300_000 }, (_, i) =>
      i % 3 === 0 ? '<|endoftext|>' : { content: `<extra_${i}>` },
    );
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    const { error } = timed(() => {
      const tok = MexitTokenizer.load(dir)!;
      expect(tok.encode('Hello world<|endoftext|>')).toEqual([15496, 995, 50256]);
    });
    expect(error).toBeUndefined();
    const tooMany = new Array(TOKENIZER_JSON_LIMITS.maxAddedTokens + 1).fill('<x>');
    expectTokenizerError(
      () => MexitTokenizer.fromObjects(gpt2Json, { additional_special_tokens: tooMany }),
      'TOKENIZER_CONFIG',
      'additional_special_tokens',
    );
  });

  test('Unigram: many additional specials stay linear; a long word encodes without overflowing push()', () => {
    const pieces: [string, number][] = [
      ['<unk>', 0],
      ['▁', -1],
      ['ab', -1.5],
    ];
    for (const c of 'abcdefghijklmnopqrstuvwxyz') pieces.push([c, -2]);
    for (let i = 0; i < 20_000; i++) pieces.push([`<p${i}>`, -3]);
    const metaspace = { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true };
    const unigram = {
      model: { type: 'Unigram', unk_id: 0, vocab: pieces },
      pre_tokenizer: metaspace,
      decoder: metaspace,
      added_tokens: [],
    };
    const specials = Array.from({ length: 300_000 }, (_, i) => `<p${i % 30_000}>`);
    const { error } = timed(() => {
      const tok = MexitTokenizer.fromObjects(unigram, { additional_special_tokens: specials });
      expect(tok.encode(`ab<p7>${'xyz'.repeat(60_000)}`).length).toBeGreaterThan(180_000);
    });
    expect(error).toBeUndefined();
    expectTokenizerError(
      () => MexitTokenizer.fromObjects({ ...unigram, model: { type: 'Unigram', unk_id: 99_999, vocab: pieces } }),
      'TOKENIZER_JSON',
      'model.unk_id',
    );
    expectTokenizerError(
      () => MexitTokenizer.fromObjects({ ...unigram, model: { type: 'Unigram', vocab: [['a', 'high']] } }),
      'TOKENIZER_JSON',
      'model.vocab[0]',
    );
    expectTokenizerError(
      () => MexitTokenizer.fromObjects({ ...unigram, model: { type: 'Unigram', vocab: { a: 0 } } }),
      'TOKENIZER_JSON',
      'model.vocab',
    );
  });

  test('vocabulary ids, token lengths, merges and added_tokens are bounded and named', () => {
    const cases: [(json: Json) => void, string][] = [
      [(j) => (((j.model as Json).vocab as Json).Hello = -1), 'model.vocab["Hello"]'],
      [(j) => (((j.model as Json).vocab as Json).Hello = 1e12), 'model.vocab["Hello"]'],
      [(j) => (((j.model as Json).vocab as Json).Hello = '15496'), 'model.vocab["Hello"]'],
      [(j) => (((j.model as Json).vocab as Json)['q'.repeat(5000)] = 7), 'model.vocab key'],
      [(j) => ((j.model as Json).vocab = [['a', 0]]), 'model.vocab'],
      [(j) => ((j.model as Json).merges as unknown[]).push(['a', 'b']), 'model.merges[50000]'],
      [(j) => ((j.model as Json).merges as unknown[]).push('ab'), 'model.merges[50000]'],
      [(j) => ((j.model as Json).merges as unknown[]).push(`${'m'.repeat(9000)} n`), 'model.merges[50000]'],
      [(j) => (j.added_tokens as Json[]).push({ id: 2 ** 40, content: '<big>' }), 'added_tokens[39].id'],
      [(j) => (j.added_tokens as Json[]).push({ id: 60_000, content: 'c'.repeat(5000) }), 'added_tokens[39].content'],
      [(j) => (j.added_tokens = new Array(TOKENIZER_JSON_LIMITS.maxAddedTokens + 1).fill({ id: 1, content: 'x' })), 'added_tokens has'],
    ];
    for (const [edit, field] of cases) {
      const json = gpt2Variant(edit);
      const { error } = timed(() => MexitTokenizer.fromObjects(json));
      expect(error, field).toBeInstanceOf(TokenizerError);
      expect((error as TokenizerError).code).toBe('TOKENIZER_JSON');
      expect((error as TokenizerError).message).toContain(field);
    }
    const wordPiece = { model: { type: 'WordPiece', vocab: { '[UNK]': 0, a: 1 }, unk_token: '[UNK]', max_input_chars_per_word: 1e9 } };
    expectTokenizerError(() => MexitTokenizer.fromObjects(wordPiece), 'TOKENIZER_JSON', 'max_input_chars_per_word');
  });

  test('a piece the vocabulary cannot spell, with no unk token, is a typed encode error (not a missing id)', () => {
    // WordPiece whose unk_token is not in the vocabulary: the library would return an undefined id.
    const wordPiece = {
      model: { type: 'WordPiece', vocab: { a: 0, b: 1, '##b': 2 }, unk_token: '[UNK]', continuing_subword_prefix: '##' },
      pre_tokenizer: { type: 'Whitespace' },
    };
    const tok = MexitTokenizer.fromObjects(wordPiece);
    expect(tok.encode('ab a')).toEqual([0, 2, 0]);
    expectTokenizerError(() => tok.encode('ab c'), 'TOKENIZER_ENCODE', 'unk_token');
  });

  test('pipeline nesting is bounded without recursion, also from a file', () => {
    let decoder: Json = { type: 'ByteLevel' };
    for (let i = 0; i < 100_000; i++) decoder = { type: 'Sequence', decoders: [decoder] };
    const json = gpt2Variant(() => undefined);
    json.decoder = decoder;
    expectTokenizerError(() => MexitTokenizer.fromObjects(json), 'TOKENIZER_JSON', 'nested more than');
    const dir = join(scratch, 'deep-decoder');
    cpSync(GPT2_DIR, dir, { recursive: true });
    // JSON.stringify itself recurses, so the file text is written by hand (JSON.parse does not recurse).
    const deepText = `${'{"type":"Sequence","decoders":['.repeat(100_000)}{"type":"ByteLevel"}${']}'.repeat(100_000)}`;
    writeFileSync(
      join(dir, 'tokenizer.json'),
      JSON.stringify({ ...json, decoder: null }).replace('"decoder":null', `"decoder":${deepText}`),
    );
    expectTokenizerError(() => MexitTokenizer.load(dir), 'TOKENIZER_JSON', 'decoder');
    // A decoder Sequence of ordinary depth is still walked for ByteFallback (llama-style decoder).
    const sp = MexitTokenizer.load(SP_DIR)!;
    expect(sp.decode([3 + 0xe4, 3 + 0xb8, 3 + 0xad])).toBe('中');
  });
});

describe('tokenizer regexes (class 5)', () => {
  const split = (pattern: unknown): Json =>
    gpt2Variant((j) => {
      j.pre_tokenizer = {
        type: 'Sequence',
        pretokenizers: [{ type: 'Split', pattern, behavior: 'Isolated', invert: false }, j.pre_tokenizer],
      };
    });

  test('catastrophic, oversized, malformed and non-compiling patterns are refused with the JSON path', () => {
    for (const regex of ['(a+)+$', '(a|aa)+b', '(\\w+\\s?)*$', '(?:a*)*', '(.*a){12}', '(x+x+)+y', 'a{100000}']) {
      const { error } = timed(() => MexitTokenizer.fromObjects(split({ Regex: regex })));
      expect((error as TokenizerError).code, regex).toBe('TOKENIZER_REGEX');
      expect((error as TokenizerError).message).toContain('pre_tokenizer.pretokenizers[0].pattern.Regex');
    }
    const normalizer = gpt2Variant((j) => {
      j.normalizer = { type: 'Sequence', normalizers: [{ type: 'Replace', pattern: { Regex: '(\\s+)+x' }, content: ' ' }] };
    });
    expectTokenizerError(() => MexitTokenizer.fromObjects(normalizer), 'TOKENIZER_REGEX', 'normalizer.normalizers[0].pattern.Regex');
    expectTokenizerError(() => MexitTokenizer.fromObjects(split({ Regex: '(?<=a+' })), 'TOKENIZER_REGEX', 'Invalid regular expression');
    expectTokenizerError(() => MexitTokenizer.fromObjects(split({ Regex: 'a'.repeat(20_000) })), 'TOKENIZER_JSON', 'characters long');
    for (const pattern of [{ Foo: 'x' }, { Regex: 5 }, 'x', { String: 'a', Regex: 'b' }]) {
      expectTokenizerError(() => MexitTokenizer.fromObjects(split(pattern)), 'TOKENIZER_JSON', 'pattern');
    }
  });

  test('the pre-tokenizer patterns of real tokenizers pass the check', () => {
    const real = [
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
      ' ?[^(\\s|[.,!?…。，、।۔،])]+',
      '[0-9][0-9][0-9]',
      '\\(a+\\)+',
    ];
    for (const regex of real) expect(backtrackingHazard(regex), regex).toBeUndefined();
    const tok = MexitTokenizer.fromObjects(split({ Regex: real[1] }));
    expect(tok.decode(tok.encode("Hello world, it's 2024!"))).toBe("Hello world, it's 2024!");
  });

  test('random regexes: build or fail typed; accepted ones match an adversarial input quickly', () => {
    const atom = fc.constantFrom('a', 'b', '\\s', '\\p{L}', '[ab]', '.', '(?:a|b)', '(a)', '\\d', 'x');
    const quantifier = fc.constantFrom('', '', '*', '+', '?', '{1,3}', '{2,}');
    const piece = fc.tuple(atom, quantifier).map(([a, q]) => a + q);
    const regex = fc.oneof(
      fc.array(piece, { minLength: 1, maxLength: 4 }).map((p) => p.join('')),
      fc.tuple(fc.array(piece, { minLength: 1, maxLength: 2 }), quantifier).map(([p, q]) => `(${p.join('')})${q}`),
      fc.tuple(piece, piece).map(([a, b]) => `${a}|${b}`),
      fc.string({ maxLength: 8 }),
    );
    // A tiny vocabulary keeps each build cheap; unknown characters become <unk>.
    const vocab = { '<unk>': 0, a: 1, b: 2, ' ': 3, '!': 4 };
    const tiny = (pattern: unknown): Json => ({
      model: { type: 'BPE', vocab, merges: [], unk_token: '<unk>' },
      pre_tokenizer: { type: 'Split', pattern, behavior: 'Isolated', invert: false },
    });
    fc.assert(
      fc.property(regex, (source) => {
        let tok: MexitTokenizer | undefined;
        try {
          tok = MexitTokenizer.fromObjects(tiny({ Regex: source }));
        } catch (err) {
          expect(err).toBeInstanceOf(TokenizerError);
          expect(['TOKENIZER_REGEX', 'TOKENIZER_JSON']).toContain((err as TokenizerError).code);
          return;
        }
        const _start = performance.now();
        try {
          tok.encode(`${'a'.repeat(40)}${' '.repeat(20)}!`);
        } catch (err) {
          expect(err).toBeInstanceOf(TokenizerError);
        }
      }),
      { seed: 1, numRuns: 200 },
    );
  }, 60_000);
});

describe('streaming decode of garbage bytes (class 6: no quadratic hold-back)', () => {
  test('20k invalid byte tokens stream in linear time and equal decode(all)', () => {
    const gpt2 = MexitTokenizer.load(GPT2_DIR)!;
    const ids = new Array(20_000).fill(gpt2ByteTokenId(0x80));
    const decoder = new IncrementalDecoder(gpt2);
    const { error } = timed(() => {
      let text = '';
      for (const id of ids) text += decoder.push(id);
      text += decoder.flush();
      expect(text).toBe(gpt2.decode(ids));
    });
    expect(error).toBeUndefined();
  });

  test('fast-check: long streams rich in partial UTF-8 sequences still concatenate to decode(all)', () => {
    const gpt2 = MexitTokenizer.load(GPT2_DIR)!;
    const sp = MexitTokenizer.load(SP_DIR)!;
    const cases = [
      { tok: gpt2, byteId: gpt2ByteTokenId },
      { tok: sp, byteId: spByteTokenId },
    ];
    // Lead bytes, continuation bytes, invalid bytes and ASCII, so runs of U+FFFD and completions interleave.
    const byte = fc.oneof(
      fc.integer({ min: 0x80, max: 0xbf }),
      fc.integer({ min: 0xc2, max: 0xf4 }),
      fc.constantFrom(0xff, 0xc0, 0x41, 0x20),
    );
    const unit = fc.oneof(
      { weight: 6, arbitrary: byte.map((b) => [b]) },
      { weight: 1, arbitrary: fc.integer({ min: 300, max: 20_000 }).map((id) => [-id]) },
      // A long run of stray continuation bytes (all U+FFFD) makes the decoder hold many ids ...
      { weight: 2, arbitrary: fc.array(fc.integer({ min: 0x80, max: 0xbf }), { minLength: 12, maxLength: 40 }) },
      // ... and a character's bytes, one id each, can then straddle where the held text is released.
      {
        weight: 3,
        arbitrary: fc.integer({ min: 0x80, max: 0x10ffff }).map((cp) => [...new TextEncoder().encode(String.fromCodePoint(cp))]),
      },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1 }),
        fc.array(unit, { minLength: 1, maxLength: 60 }),
        fc.boolean(),
        fc.boolean(),
        (which, units, skip, cleanUp) => {
          const { tok, byteId } = cases[which];
          const ids = units.flat().map((u) => (u < 0 ? -u : byteId(u)));
          const options = { skipSpecialTokens: skip, cleanUpTokenizationSpaces: cleanUp };
          const decoder = new IncrementalDecoder(tok, options);
          let text = '';
          for (const id of ids) text += decoder.push(id);
          text += decoder.flush();
          expect(text).toBe(tok.decode(ids, options));
        },
      ),
      { seed: 1, numRuns: 300 },
    );
  }, 60_000);
});

test('no argument spreads over input-sized arrays in the tokenizer sources', () => {
  for (const file of ['tokenizer.ts', 'incremental-decoder.ts', 'chat-template.ts', 'tokenizer-json.ts']) {
    const source = readFileSync(new URL(`../src/${file}`, import.meta.url), 'utf8');
    expect(source, file).not.toMatch(/(push|max|min|fromCharCode|fromCodePoint|apply)\(\.\.\./);
    expect(source, file).not.toMatch(/new Set\(\[\.\.\./);
  }
});
