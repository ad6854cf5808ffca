#!/usr/bin/env node
/**
 * `tessera <command>`: one entry point, one sub-command per role (simulate, receiver, merger,
 * offline, start, …). Each command lives in src/commands/<name>.ts and registers itself here.
 */
import { Command, CommanderError } from 'commander';
import { isTesseraError } from './errors.js';

type Register = (program: Command) => void;

/**
 * The commands, each loaded only when needed: a role process (a receiver, the merger, the
 * simulator, …) loads its own command's modules, not every role's (fastify, h5wasm, the UDF
 * library: half of a role's start-up time, and `tessera start` spawns ten of them).
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  config: async () => (await import('./commands/config.js')).registerConfigCommand,
  simulate: async () => (await import('./commands/simulate.js')).registerSimulateCommand,
  receiver: async () => (await import('./commands/receiver.js')).registerReceiverCommand,
  start: async () => (await import('./commands/start.js')).registerStartCommand,
  merger: async () => (await import('./commands/merger.js')).registerMergerCommand,
  offline: async () => (await import('./commands/offline.js')).registerOfflineCommand,
  replay: async () => (await import('./commands/replay.js')).registerReplayCommand,
  shuffle: async () => (await import('./commands/shuffle.js')).registerShuffleCommand,
  worker: async () => (await import('./commands/worker.js')).registerWorkerCommand,
};

/** The program with command `only` registered, or every command (help, an unknown command). */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command('tessera')
    .description('Live acquisition and reduction server for sector-split electron detectors (Gatan K2 IS)')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  const names = only !== undefined && Object.hasOwn(COMMANDS, only) ? [only] : Object.keys(COMMANDS);
  for (const register of await Promise.all(names.map((n) => COMMANDS[n]!()))) register(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  const program = await buildProgram(argv[2]);
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
