#!/usr/bin/env node
/**
 * `tessera <command>`: one entry point, one sub-command per role (simulate, receiver, merger,
 * offline, start, …). Each command lives in src/commands/<name>.ts and registers itself here.
 */
import { Command, CommanderError } from 'commander';
import { isTesseraError } from './errors.js';
import { registerConfigCommand } from './commands/config.js';
import { registerSimulateCommand } from './commands/simulate.js';
import { registerReceiverCommand } from './commands/receiver.js';
import { registerStartCommand } from './commands/start.js';
import { registerMergerCommand } from './commands/merger.js';
import { registerOfflineCommand } from './commands/offline.js';
import { registerReplayCommand } from './commands/replay.js';
import { registerShuffleCommand } from './commands/shuffle.js';
import { registerWorkerCommand } from './commands/worker.js';

export function buildProgram(): Command {
  const program = new Command('tessera')
    .description('Live acquisition and reduction server for sector-split electron detectors (Gatan K2 IS)')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  registerConfigCommand(program);
  registerSimulateCommand(program);
  registerReceiverCommand(program);
  registerStartCommand(program);
  registerMergerCommand(program);
  registerOfflineCommand(program);
  registerReplayCommand(program);
  registerShuffleCommand(program);
  registerWorkerCommand(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (isTesseraError(err)) {
      process.stderr.write(`tessera: error ${err.code}: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
}

await main(process.argv);
