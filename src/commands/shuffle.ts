/**
 * `tessera shuffle`: the shuffle service (src/shuffle/shuffle-service.ts): whole frames from
 * the receivers' sector slices (config shuffle.slices) to the workers (config shuffle.frames).
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { TesseraError } from '../errors.js';
import { createLogger } from '../log.js';
import { parseSelection } from '../shuffle/selection.js';
import { ShuffleService } from '../shuffle/shuffle-service.js';
import { parseScanShape } from './receiver.js';
import { onParentExit } from '../parent-watch.js';

export function registerShuffleCommand(program: Command): void {
  program
    .command('shuffle')
    .description('gather the sector slices of the selected frames from the receivers (config shuffle.slices), reassemble whole frames and hand them to `tessera worker` processes by credit (config shuffle.frames)')
    .option('-c, --config <file>', 'config file overlaid on config/default.json')
    .option('--select <rule>', 'frames of each acquisition: all, every:N, list:P1,P2,… (scan positions) or rect:Y,X,H,W (with --scan)', 'all')
    .option('--scan <HxW>', 'scan shape for --select rect:…')
    .option('--fixed-rate', 'never lower the selection rate (skipped frames are still counted)')
    .option('--frame-timeout <ms>', 'complete a frame with zeros this long after its first slice (receivers on a loaded machine can lag each other by a second)', '2000')
    .option('--max-frames <n>', 'frames being assembled at most (7.6 MB each); the oldest is completed with zeros to make room', '16')
    .option('--max-queued <n>', 'whole frames (7.6 MB each) waiting for a worker at most; more are skipped', '4')
    .action(async (raw: { config?: string; select: string; scan?: string; fixedRate?: boolean; frameTimeout: string; maxFrames: string; maxQueued: string }) => {
      const config = loadConfig(raw.config);
      const log = createLogger('shuffle');
      const select = parseSelection(raw.select, raw.scan ? parseScanShape(raw.scan) : undefined);
      const s = await ShuffleService.start({ slices: config.shuffle.slices, frames: config.shuffle.frames, select, fixedRate: raw.fixedRate ?? false, frameTimeoutMs: count('--frame-timeout', raw.frameTimeout, 1), maxFrames: count('--max-frames', raw.maxFrames, 1), maxQueued: count('--max-queued', raw.maxQueued, 0), log });
      log.info({ slices: s.slicesEndpoint, frames: s.framesEndpoint, select: select.kind }, 'shuffle listening');
      const stats = setInterval(() => log.info(s.counters(), 'shuffle stats'), 2000);
      await waitForSignal(log);
      clearInterval(stats);
      log.info(s.counters(), 'shuffle stopped: final counters');
      await s.close();
      await new Promise<void>((resolve) => log.flush(() => resolve()));
    });
}

/** A whole number >= min from an option, or TESSERA_ERR_BAD_ARGUMENT. */
export function count(option: string, text: string, min: number): number {
  const n = Number(text);
  if (!/^\s*\d+\s*$/.test(text) || n < min) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', option, `"${text}" is not a whole number >= ${min}`);
  return n;
}

export function waitForSignal(log: { info: (o: object, m: string) => void }): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping');
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    onParentExit(stop);
  });
}
