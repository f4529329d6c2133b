import { expect } from 'vitest';
import { CheckpointError } from '@mexit/core';

/** Runs `fn`, asserting it throws a CheckpointError with `code` whose message contains every part. */
export function expectCheckpointError(fn: () => unknown, code: string, ...messageParts: string[]): CheckpointError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected CheckpointError ${code}`).toBeInstanceOf(CheckpointError);
  const err = caught as CheckpointError;
  expect(err.code, err.message).toBe(code);
  for (const part of messageParts) expect(err.message).toContain(part);
  return err;
}
