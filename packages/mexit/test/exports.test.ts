/**
 * The `mexit` package against the sources: it re-exports the packages it stands for (same objects, nothing
 * left out), and the default model and eval stories are the data package's files.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as cli from '@mexit/cli';
import * as server from '@mexit/server';
import * as model from '@mexit/model';
import * as speculative from '@mexit/speculative';
import * as speculativeDrafters from '@mexit/speculative/drafters';
import * as speculativeEval from '@mexit/speculative/eval';
import * as speculativeLowlevel from '@mexit/speculative/lowlevel';
import { evalStoriesPath, modelDir } from '@mexit/tinystories-ee';
import * as mexit from 'mexit';
import * as mexitCli from 'mexit/cli';
import * as mexitDrafters from 'mexit/drafters';
import * as mexitEval from 'mexit/eval';
import * as mexitLowlevel from 'mexit/lowlevel';
import * as mexitServer from 'mexit/server';
import { describe, expect, it } from 'vitest';
import { resolveModelDir } from '../../cli/src/args.js';

describe('mexit re-exports', () => {
  it.each([
    ['mexit', mexit, speculative],
    ['mexit/eval', mexitEval, speculativeEval],
    ['mexit/drafters', mexitDrafters, speculativeDrafters],
    ['mexit/lowlevel', mexitLowlevel, speculativeLowlevel],
    ['mexit/cli', mexitCli, cli],
    ['mexit/server', mexitServer, server],
  ])('%s holds every export of the package it mirrors, as the same object', (_, ours, theirs) => {
    expect(Object.keys(theirs).length).toBeGreaterThan(0);
    for (const [key, value] of Object.entries(theirs)) expect(ours[key as keyof typeof ours], key).toBe(value);
  });

  it('the root adds the model runtime, the tokenizer, the typed errors and the bundled model', () => {
    expect(mexit.ModelRuntime).toBe(model.ModelRuntime);
    expect(mexit.MexitTokenizer).toBe(model.MexitTokenizer);
    expect(mexit.SelfSpeculativeGenerator).toBe(mexit.MexitGenerator);
    for (const error of [mexit.OptionsError, mexit.ConfigError, mexit.CheckpointError, mexit.TokenizerError, mexit.AbortError])
      expect(error.prototype).toBeInstanceOf(mexit.MexitError);
    expect(mexit.bundledModelDir).toBe(modelDir);
  });
});

describe('package data comes from @mexit/tinystories-ee', () => {
  it('the default model directory and eval stories are its files', () => {
    expect(existsSync(join(modelDir, 'config.json'))).toBe(true);
    expect(existsSync(join(modelDir, 'model.safetensors'))).toBe(true);
    expect(existsSync(evalStoriesPath)).toBe(true);
    expect(resolveModelDir(undefined)).toBe(modelDir);
    expect(resolveModelDir('elsewhere')).toBe('elsewhere');
    expect(speculativeEval.DEFAULT_EVAL_DATA_PATH).toBe(evalStoriesPath);
  });
});
