/**
 * Restricted unpickler. It builds plain data (numbers, strings, bytes, lists, tuples, dicts) and never
 * calls anything itself: GLOBAL/STACK_GLOBAL only name an object, and only names on the caller's
 * allow-list are accepted (anything else throws PICKLE_FORBIDDEN_GLOBAL as soon as the opcode is read).
 * REDUCE and BINPERSID are handed to the caller's hooks, which decide what an allowed global means.
 * What a pickle may build is bounded (PICKLE_LIMITS): nesting depth, memo entries, and objects counted as
 * if every shared reference were copied, so a memo/DUP DAG that would expand exponentially is refused
 * (PICKLE_TOO_DEEP / PICKLE_TOO_LARGE) instead of reaching code that walks it. A list or dict cannot be
 * changed once it sits inside another object, which keeps those counts exact and rules out cycles.
 */
import { CheckpointError } from './errors.js';

/** A reference to an allowed `module.name` global. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python dict (or OrderedDict), insertion-ordered. */
export class PickleDict {
  readonly map = new Map<unknown, unknown>();
}

/** Python tuples are frozen arrays (so APPEND on one is caught); lists are ordinary arrays. */
export type PickleTuple = readonly unknown[];

/** What the unpickler needs from its caller. */
export interface UnpickleHooks {
  /** `module.name` strings that GLOBAL may name. */
  readonly allowedGlobals: ReadonlySet<string>;
  /** REDUCE: `callable(*args)` for an allowed global. */
  reduce(callable: PickleGlobal, args: PickleTuple, offset: number): unknown;
  /** BINPERSID: resolve a persistent id (torch: a storage reference). */
  persistentLoad(pid: unknown, offset: number): unknown;
}

const MAX_LONG_BYTES = 64;

/** What one pickle may build. Honest torch state dicts stay far below each (depth ~5, ~20 objects per tensor). */
export const PICKLE_LIMITS = Object.freeze({
  /** nesting depth of tuples, lists and dicts (also of MARKs) */
  maxDepth: 1000,
  /** values pushed, and the size of any one value counting a shared object once per reference */
  maxObjects: 1 << 22,
  /** memo entries */
  maxMemo: 1 << 20,
});

/** Size and nesting depth of a container, as if shared children were copies; `placed` once it is inside another. */
interface Extent {
  size: number;
  depth: number;
  placed: boolean;
}

const LEAF: Readonly<Extent> = Object.freeze({ size: 1, depth: 0, placed: false });

// opcodes (pickletools names)
const OP = {
  MARK: 0x28,
  STOP: 0x2e,
  POP: 0x30,
  POP_MARK: 0x31,
  DUP: 0x32,
  BINFLOAT: 0x47,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  NONE: 0x4e,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  BINUNICODE: 0x58,
  EMPTY_LIST: 0x5d,
  APPEND: 0x61,
  BUILD: 0x62,
  GLOBAL: 0x63,
  APPENDS: 0x65,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  EMPTY_DICT: 0x7d,
  SETITEM: 0x73,
  TUPLE: 0x74,
  SETITEMS: 0x75,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  EMPTY_TUPLE: 0x29,
  BINBYTES: 0x42,
  SHORT_BINBYTES: 0x43,
  PROTO: 0x80,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  LONG1: 0x8a,
  LONG4: 0x8b,
  SHORT_BINUNICODE: 0x8c,
  BINUNICODE8: 0x8d,
  BINBYTES8: 0x8e,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
} as const;

/**
 * Unpickles `bytes` (protocols 2-5, the binary opcodes torch.save emits) and returns the object STOP
 * leaves on the stack. Every malformed input is a CheckpointError with a PICKLE_* code naming `file` and
 * the byte offset.
 */
export function unpickle(bytes: Uint8Array, hooks: UnpickleHooks, file: string): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const extents = new WeakMap<object, Extent>();
  let pushed = 0;
  let pos = 0;
  let opStart = 0;

  const fail = (code: string, message: string): CheckpointError =>
    new CheckpointError(code, `${file}: pickle ${message} (opcode at byte offset ${opStart})`);
  const need = (n: number): number => {
    if (n > bytes.length - pos) throw fail('PICKLE_TRUNCATED', `data ends inside an opcode argument (needs ${n} more bytes)`);
    const at = pos;
    pos += n;
    return at;
  };
  const u64 = (): number => {
    const at = need(8);
    const value = view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
    if (value > bytes.length) throw fail('PICKLE_TRUNCATED', `length ${value} exceeds the pickle size`);
    return value;
  };
  const text = (length: number): string => {
    const at = need(length);
    try {
      return utf8.decode(bytes.subarray(at, at + length));
    } catch {
      throw fail('PICKLE_INVALID', 'string is not valid UTF-8');
    }
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw fail('PICKLE_TRUNCATED', 'GLOBAL name has no terminating newline');
    const s = text(end - pos);
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length <= marks[marks.length - 1])) {
      throw fail('PICKLE_INVALID', 'stack underflow');
    }
    return stack.pop();
  };
  const push = (value: unknown): void => {
    if (++pushed > PICKLE_LIMITS.maxObjects) throw fail('PICKLE_TOO_LARGE', `builds more than ${PICKLE_LIMITS.maxObjects} objects`);
    stack.push(value);
  };
  // containers are tracked lazily: EMPTY_* and hook results get their extent on first use
  const extentOf = (value: unknown): Extent => {
    if (!Array.isArray(value) && !(value instanceof PickleDict)) return LEAF;
    let extent = extents.get(value);
    if (!extent) {
      extent = { size: 1, depth: 1, placed: false };
      extents.set(value, extent);
    }
    return extent;
  };
  const checkExtent = (size: number, depth: number): void => {
    if (depth > PICKLE_LIMITS.maxDepth) throw fail('PICKLE_TOO_DEEP', `nests containers deeper than ${PICKLE_LIMITS.maxDepth} levels`);
    if (size > PICKLE_LIMITS.maxObjects) {
      throw fail('PICKLE_TOO_LARGE', `builds a value of more than ${PICKLE_LIMITS.maxObjects} objects (counting shared references)`);
    }
  };
  /** Accounts for `items` being put inside `container` (new tuple or a list/dict being filled). */
  const place = (container: object, extent: Extent, items: readonly unknown[]): void => {
    let { size, depth } = extent;
    for (const item of items) {
      if (item === container) throw fail('PICKLE_INVALID', 'a list or dict cannot contain itself (recursive structures are not supported)');
      const child = extentOf(item);
      if (child !== LEAF) child.placed = true;
      size += child.size;
      if (child.depth >= depth) depth = child.depth + 1;
      checkExtent(size, depth);
    }
    extent.size = size;
    extent.depth = depth;
  };
  const top = (): unknown => {
    if (stack.length === 0) throw fail('PICKLE_INVALID', 'stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const mark = marks.pop();
    if (mark === undefined) throw fail('PICKLE_INVALID', 'no MARK on the stack');
    return stack.splice(mark);
  };
  const tuple = (items: unknown[]): PickleTuple => {
    const value = Object.freeze(items);
    place(value, extentOf(value), items);
    return value;
  };
  /** APPEND(S)/SETITEM(S) target: only a list or dict not yet inside anything (so no count above it goes stale). */
  const fillable = (target: object): Extent => {
    const extent = extentOf(target);
    if (extent.placed) {
      throw fail('PICKLE_INVALID', 'fills a list or dict that is already inside another object (recursive structures are not supported)');
    }
    return extent;
  };
  const global = (module: string, name: string): PickleGlobal => {
    const qualified = `${module}.${name}`;
    if (!hooks.allowedGlobals.has(qualified)) {
      throw fail(
        'PICKLE_FORBIDDEN_GLOBAL',
        `references forbidden global ${formatValue(qualified)}; only tensor-rebuilding globals are allowed, nothing was executed`,
      );
    }
    return new PickleGlobal(module, name);
  };
  const memoGet = (index: number): unknown => {
    if (!memo.has(index)) throw fail('PICKLE_INVALID', `memo entry ${index} was never stored`);
    return memo.get(index);
  };
  const memoPut = (index: number): void => {
    if (memo.size >= PICKLE_LIMITS.maxMemo && !memo.has(index)) {
      throw fail('PICKLE_TOO_LARGE', `stores more than ${PICKLE_LIMITS.maxMemo} memo entries`);
    }
    memo.set(index, top());
  };
  const setItems = (dict: unknown, items: unknown[]): void => {
    if (!(dict instanceof PickleDict)) throw fail('PICKLE_INVALID', 'SETITEM(S) target is not a dict');
    if (items.length % 2 !== 0) throw fail('PICKLE_INVALID', 'SETITEMS needs key/value pairs');
    place(dict, fillable(dict), items);
    for (let i = 0; i < items.length; i += 2) dict.map.set(items[i], items[i + 1]);
  };
  const appendItems = (list: unknown, items: unknown[]): void => {
    if (!Array.isArray(list) || Object.isFrozen(list)) throw fail('PICKLE_INVALID', 'APPEND(S) target is not a list');
    place(list, fillable(list), items);
    for (const item of items) list.push(item);
  };
  const signedLE = (at: number, n: number): number | bigint => {
    if (n === 0) return 0;
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i]);
    if (bytes[at + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  while (true) {
    opStart = pos;
    if (pos >= bytes.length) throw fail('PICKLE_TRUNCATED', 'ends without a STOP opcode');
    const op = bytes[pos++];
    switch (op) {
      case OP.PROTO: {
        const version = bytes[need(1)];
        if (version < 2 || version > 5) throw fail('PICKLE_UNSUPPORTED_PROTOCOL', `protocol ${version} is not supported (2-5 are)`);
        break;
      }
      case OP.FRAME:
        u64(); // framing is only a read-ahead hint
        break;
      case OP.STOP:
        if (stack.length !== 1 || marks.length !== 0) throw fail('PICKLE_INVALID', `STOP with ${stack.length} items on the stack`);
        return stack[0];
      case OP.MARK:
        if (marks.length >= PICKLE_LIMITS.maxDepth)
          throw fail('PICKLE_TOO_DEEP', `nests MARKs deeper than ${PICKLE_LIMITS.maxDepth} levels`);
        marks.push(stack.length);
        break;
      case OP.POP:
        pop();
        break;
      case OP.POP_MARK:
        popMark();
        break;
      case OP.DUP:
        push(top());
        break;
      case OP.NONE:
        push(null);
        break;
      case OP.NEWTRUE:
        push(true);
        break;
      case OP.NEWFALSE:
        push(false);
        break;
      case OP.BININT:
        push(view.getInt32(need(4), true));
        break;
      case OP.BININT1:
        push(bytes[need(1)]);
        break;
      case OP.BININT2:
        push(view.getUint16(need(2), true));
        break;
      case OP.LONG1:
      case OP.LONG4: {
        const n = op === OP.LONG1 ? bytes[need(1)] : view.getUint32(need(4), true);
        if (n > MAX_LONG_BYTES) throw fail('PICKLE_INVALID', `${n}-byte integer is too large`);
        push(signedLE(need(n), n));
        break;
      }
      case OP.BINFLOAT:
        push(view.getFloat64(need(8), false)); // big-endian, unlike everything else
        break;
      case OP.BINUNICODE:
        push(text(view.getUint32(need(4), true)));
        break;
      case OP.SHORT_BINUNICODE:
        push(text(bytes[need(1)]));
        break;
      case OP.BINUNICODE8:
        push(text(u64()));
        break;
      case OP.BINBYTES:
      case OP.SHORT_BINBYTES:
      case OP.BINBYTES8: {
        const n = op === OP.SHORT_BINBYTES ? bytes[need(1)] : op === OP.BINBYTES ? view.getUint32(need(4), true) : u64();
        const at = need(n);
        push(bytes.slice(at, at + n));
        break;
      }
      case OP.EMPTY_DICT:
        push(new PickleDict());
        break;
      case OP.EMPTY_LIST:
        push([]);
        break;
      case OP.EMPTY_TUPLE:
        push(tuple([]));
        break;
      case OP.TUPLE:
        push(tuple(popMark()));
        break;
      case OP.TUPLE1: {
        const a = pop();
        push(tuple([a]));
        break;
      }
      case OP.TUPLE2: {
        const b = pop();
        const a = pop();
        push(tuple([a, b]));
        break;
      }
      case OP.TUPLE3: {
        const c = pop();
        const b = pop();
        const a = pop();
        push(tuple([a, b, c]));
        break;
      }
      case OP.SETITEM: {
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case OP.APPEND: {
        const item = pop();
        appendItems(top(), [item]);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        appendItems(top(), items);
        break;
      }
      case OP.BINPUT:
        memoPut(bytes[need(1)]);
        break;
      case OP.LONG_BINPUT:
        memoPut(view.getUint32(need(4), true));
        break;
      case OP.MEMOIZE:
        memoPut(memo.size);
        break;
      case OP.BINGET:
        push(memoGet(bytes[need(1)]));
        break;
      case OP.LONG_BINGET:
        push(memoGet(view.getUint32(need(4), true)));
        break;
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        push(global(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw fail('PICKLE_INVALID', 'STACK_GLOBAL needs two strings');
        push(global(module, name));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        if (!(callable instanceof PickleGlobal)) throw fail('PICKLE_INVALID', 'REDUCE on something that is not a global');
        if (!Array.isArray(args) || !Object.isFrozen(args))
          throw fail('PICKLE_INVALID', `REDUCE arguments for ${callable.qualifiedName} are not a tuple`);
        push(hooks.reduce(callable, args, opStart));
        break;
      }
      case OP.BUILD:
        // __setstate__ data (e.g. a state dict's `_metadata`): not needed for tensors, and applying it would
        // mean running code, so it is dropped
        pop();
        top();
        break;
      case OP.BINPERSID:
        push(hooks.persistentLoad(pop(), opStart));
        break;
      default:
        throw fail(
          'PICKLE_UNSUPPORTED_OPCODE',
          `uses unsupported opcode 0x${op.toString(16).padStart(2, '0')} (${JSON.stringify(String.fromCharCode(op))})`,
        );
    }
  }
}

const FORMAT_MAX_DEPTH = 4;
const FORMAT_MAX_ITEMS = 8;

/**
 * The one rendering of a user value for error messages: at most `maxLength` characters, containers cut to
 * their first few items and a few levels, cycles shown as `<cycle>`, BigInt and typed arrays handled. It
 * never throws and its work is bounded whatever the value. `style` 'python' (unpickled values: None, True,
 * 'text') or 'js' (options and JSON files: null, true, "text").
 */
export function formatValue(value: unknown, maxLength = 120, style: 'python' | 'js' = 'python'): string {
  const parts: string[] = [];
  let length = 0;
  const ancestors = new Set<object>();
  const emit = (s: string): void => {
    parts.push(s.length > maxLength ? s.slice(0, maxLength) : s);
    length += s.length;
  };
  // `count` undefined: not known without walking everything (a plain object)
  const items = (open: string, close: string, count: number | undefined, each: Iterable<unknown>, show: (v: unknown) => void): void => {
    emit(open);
    let shown = 0;
    for (const item of each) {
      if (shown === FORMAT_MAX_ITEMS || length > maxLength) {
        emit(`${shown > 0 ? ', ' : ''}…${count === undefined ? '' : ` ${count - shown} more`}`);
        break;
      }
      if (shown > 0) emit(', ');
      show(item);
      shown++;
    }
    emit(close);
  };
  const visit = (v: unknown, depth: number): void => {
    if (length > maxLength) return;
    const leaf = leafText(v, maxLength, style);
    if (leaf !== undefined) {
      emit(leaf);
      return;
    }
    const obj = v as object;
    const isArray = Array.isArray(obj);
    if (ancestors.has(obj)) emit('<cycle>');
    else if (depth >= FORMAT_MAX_DEPTH) emit(isArray ? (Object.isFrozen(obj) ? '(…)' : '[…]') : '{…}');
    else {
      ancestors.add(obj);
      const entry = (kv: unknown): void => {
        const [k, val] = kv as [unknown, unknown];
        visit(k, depth + 1);
        emit(': ');
        visit(val, depth + 1);
      };
      if (isArray) {
        const arr = obj as unknown[];
        const [open, close] = Object.isFrozen(arr) ? ['(', ')'] : ['[', ']'];
        items(open, close, arr.length, arr, (item) => visit(item, depth + 1));
      } else if (obj instanceof PickleDict) {
        items('{', '}', obj.map.size, obj.map, entry);
      } else {
        items('{', '}', undefined, plainEntries(obj as Record<string, unknown>), entry);
      }
      ancestors.delete(obj);
    }
  };
  try {
    visit(value, 0);
  } catch {
    return '<unprintable value>';
  }
  const text = parts.join('');
  return text.length > maxLength ? `${text.slice(0, maxLength - 1)}…` : text;
}

/** formatValue of anything but a list, tuple, dict or plain object (those return undefined). */
function leafText(v: unknown, maxLength: number, style: 'python' | 'js'): string | undefined {
  const js = style === 'js';
  if (v === null || v === undefined) return js ? String(v) : 'None';
  switch (typeof v) {
    case 'boolean':
      return js ? String(v) : v ? 'True' : 'False';
    case 'number':
      return String(v);
    case 'bigint':
      return js ? `${v}n` : String(v);
    case 'string': {
      const cut = v.length > maxLength;
      const quoted = JSON.stringify(cut ? v.slice(0, maxLength) : v).slice(1, -1);
      return js ? `"${quoted}${cut ? '…' : ''}"` : `'${quoted}${cut ? '…' : ''}'`;
    }
    case 'function':
      return 'a function';
    case 'object':
      break;
    default:
      return `<${typeof v}>`;
  }
  if (v instanceof PickleGlobal) return `${v.module.slice(0, maxLength)}.${v.name.slice(0, maxLength)}`;
  if (ArrayBuffer.isView(v)) return `<${v.constructor.name} of ${v.byteLength} bytes>`;
  if (Array.isArray(v) || v instanceof PickleDict || Object.getPrototypeOf(v) === Object.prototype) return undefined;
  return `<${v.constructor?.name ?? 'object'}>`;
}

/** A plain object's own entries, lazily (Object.entries would copy a million-key object). */
function* plainEntries(obj: Record<string, unknown>): Generator<[string, unknown]> {
  for (const key in obj) if (Object.hasOwn(obj, key)) yield [key, obj[key]];
}
