/**
 * `tessera worker`: a frame worker (src/shuffle/worker.ts): whole frames from the shuffle
 * (config shuffle.frames), the acquisition's whole-frame UDFs, results to the merger (config
 * merger.results). Run as many as there are cores to spare, on any host.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { FrameWorker } from '../shuffle/worker.js';
import { loadConfiguredPlugins } from '../udf/plugins.js';
import { count, waitForSignal } from './shuffle.js';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run the whole-frame UDFs of the merger\'s acquisition on frames from the shuffle (config shuffle.frames) and push the results to the merger (config merger.results)')
    .option('-c, --config <file>', 'config file overlaid on config/default.json')
    .option('--credits <n>', 'frames asked for ahead', '2')
    .option('--delay <ms>', 'wait this long after each frame (tests of back-pressure)', '0')
    .action(async (raw: { config?: string; credits: string; delay: string }) => {
      const config = loadConfig(raw.config);
      const log = createLogger('worker');
      await loadConfiguredPlugins(config);
      const w = FrameWorker.start({ frames: config.shuffle.frames, results: config.merger.results, credits: count('--credits', raw.credits, 1), delayMs: count('--delay', raw.delay, 0), log });
      log.info({ id: w.id, frames: config.shuffle.frames, results: config.merger.results }, 'worker started');
      const stats = setInterval(() => log.info(w.counters, 'worker stats'), 2000);
      await waitForSignal(log);
      clearInterval(stats);
      await w.close();
      log.info(w.counters, 'worker stopped: final counters');
      await new Promise<void>((resolve) => log.flush(() => resolve()));
    });
}
