#!/usr/bin/env node
// The `mexit` command of the package users install: @mexit/cli's program.
import { runProgram } from '@mexit/cli';

runProgram();
