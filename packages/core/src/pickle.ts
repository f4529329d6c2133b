/**
 * Restricted unpickler. It builds plain data (numbers, strings, bytes, lists, tuples, dicts) and never
 * calls anything itself: GLOBAL/STACK_GLOBAL only name an object, and only names on the caller's
 * allow-list are accepted (anything else throws PICKLE_FORBIDDEN_GLOBAL as soon as the opcode is read).
 * REDUCE and BINPERSID are handed to the caller's hooks, which decide what an allowed global means.
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
  const top = (): unknown => {
    if (stack.length === 0) throw fail('PICKLE_INVALID', 'stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const mark = marks.pop();
    if (mark === undefined) throw fail('PICKLE_INVALID', 'no MARK on the stack');
    return stack.splice(mark);
  };
  const tuple = (items: unknown[]): PickleTuple => Object.freeze(items);
  const global = (module: string, name: string): PickleGlobal => {
    const qualified = `${module}.${name}`;
    if (!hooks.allowedGlobals.has(qualified)) {
      throw fail(
        'PICKLE_FORBIDDEN_GLOBAL',
        `references forbidden global '${qualified}'; only tensor-rebuilding globals are allowed, nothing was executed`,
      );
    }
    return new PickleGlobal(module, name);
  };
  const memoGet = (index: number): unknown => {
    if (!memo.has(index)) throw fail('PICKLE_INVALID', `memo entry ${index} was never stored`);
    return memo.get(index);
  };
  const setItems = (dict: unknown, items: unknown[]): void => {
    if (!(dict instanceof PickleDict)) throw fail('PICKLE_INVALID', 'SETITEM(S) target is not a dict');
    if (items.length % 2 !== 0) throw fail('PICKLE_INVALID', 'SETITEMS needs key/value pairs');
    for (let i = 0; i < items.length; i += 2) dict.map.set(items[i], items[i + 1]);
  };
  const appendItems = (list: unknown, items: unknown[]): void => {
    if (!Array.isArray(list) || Object.isFrozen(list)) throw fail('PICKLE_INVALID', 'APPEND(S) target is not a list');
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
        marks.push(stack.length);
        break;
      case OP.POP:
        pop();
        break;
      case OP.POP_MARK:
        popMark();
        break;
      case OP.DUP:
        stack.push(top());
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT:
        stack.push(view.getInt32(need(4), true));
        break;
      case OP.BININT1:
        stack.push(bytes[need(1)]);
        break;
      case OP.BININT2:
        stack.push(view.getUint16(need(2), true));
        break;
      case OP.LONG1:
      case OP.LONG4: {
        const n = op === OP.LONG1 ? bytes[need(1)] : view.getUint32(need(4), true);
        if (n > MAX_LONG_BYTES) throw fail('PICKLE_INVALID', `${n}-byte integer is too large`);
        stack.push(signedLE(need(n), n));
        break;
      }
      case OP.BINFLOAT:
        stack.push(view.getFloat64(need(8), false)); // big-endian, unlike everything else
        break;
      case OP.BINUNICODE:
        stack.push(text(view.getUint32(need(4), true)));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(text(bytes[need(1)]));
        break;
      case OP.BINUNICODE8:
        stack.push(text(u64()));
        break;
      case OP.BINBYTES:
      case OP.SHORT_BINBYTES:
      case OP.BINBYTES8: {
        const n = op === OP.SHORT_BINBYTES ? bytes[need(1)] : op === OP.BINBYTES ? view.getUint32(need(4), true) : u64();
        const at = need(n);
        stack.push(bytes.slice(at, at + n));
        break;
      }
      case OP.EMPTY_DICT:
        stack.push(new PickleDict());
        break;
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.EMPTY_TUPLE:
        stack.push(tuple([]));
        break;
      case OP.TUPLE:
        stack.push(tuple(popMark()));
        break;
      case OP.TUPLE1: {
        const a = pop();
        stack.push(tuple([a]));
        break;
      }
      case OP.TUPLE2: {
        const b = pop();
        const a = pop();
        stack.push(tuple([a, b]));
        break;
      }
      case OP.TUPLE3: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push(tuple([a, b, c]));
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
        memo.set(bytes[need(1)], top());
        break;
      case OP.LONG_BINPUT:
        memo.set(view.getUint32(need(4), true), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
        stack.push(memoGet(bytes[need(1)]));
        break;
      case OP.LONG_BINGET:
        stack.push(memoGet(view.getUint32(need(4), true)));
        break;
      case OP.GLOBAL: {
        const module = line();
        const name = line();
        stack.push(global(module, name));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw fail('PICKLE_INVALID', 'STACK_GLOBAL needs two strings');
        stack.push(global(module, name));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const callable = pop();
        if (!(callable instanceof PickleGlobal)) throw fail('PICKLE_INVALID', 'REDUCE on something that is not a global');
        if (!Array.isArray(args) || !Object.isFrozen(args))
          throw fail('PICKLE_INVALID', `REDUCE arguments for ${callable.qualifiedName} are not a tuple`);
        stack.push(hooks.reduce(callable, args, opStart));
        break;
      }
      case OP.BUILD:
        // __setstate__ data (e.g. a state dict's `_metadata`): not needed for tensors, and applying it would
        // mean running code, so it is dropped
        pop();
        top();
        break;
      case OP.BINPERSID:
        stack.push(hooks.persistentLoad(pop(), opStart));
        break;
      default:
        throw fail(
          'PICKLE_UNSUPPORTED_OPCODE',
          `uses unsupported opcode 0x${op.toString(16).padStart(2, '0')} (${JSON.stringify(String.fromCharCode(op))})`,
        );
    }
  }
}
