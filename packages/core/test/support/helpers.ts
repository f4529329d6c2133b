import { expect } from 'vitest';
import { CheckpointError, MexitError } from '@mexit/core';

/** mulberry32: a tiny seeded PRNG for test data, independent of the code under test (failures reproduce). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs `fn`, asserting it throws a MexitError with `code` whose message contains every part. */
export function expectMexitError(fn: () => unknown, code: string, ...messageParts: string[]): MexitError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected MexitError ${code}`).toBeInstanceOf(MexitError);
  const err = caught as MexitError;
  expect(err.code, err.message).toBe(code);
  for (const part of messageParts) expect(err.message).toContain(part);
  return err;
}

/** As expectMexitError, and the error must be a CheckpointError. */
export function expectCheckpointError(fn: () => unknown, code: string, ...messageParts: string[]): CheckpointError {
  const err = expectMexitError(fn, code, ...messageParts);
  expect(err).toBeInstanceOf(CheckpointError);
  return err as CheckpointError;
}
