/**
 * `tessera receiver --sector N`: the per-sector receiver process (receivers/receiver.ts). It
 * always connects to the merger (config merger.control / merger.results), which may come and
 * go: heartbeats, and the live acquisitions it arms. --scan / --continuous set how detector
 * acquisitions are cut until the merger configures them.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { TesseraError } from '../errors.js';
import { createLogger } from '../log.js';
import { runReceiverProcess } from '../../receivers/receiver.js';

export interface RawReceiverOptions {
  sector: string;
  config?: string;
  election: boolean;
  scan?: string;
  continuous?: boolean;
  dumpFrames?: string;
}

export function parseScanShape(text: string): [number, number] {
  const m = /^\s*(\d+)\s*[xX]\s*(\d+)\s*$/.exec(text);
  const h = m ? Number(m[1]) : NaN;
  const w = m ? Number(m[2]) : NaN;
  if (!m || h < 1 || w < 1 || h * w > 0x3fffffff) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--scan', `"${text}" is not HxW (e.g. 32x32)`);
  return [h, w];
}

export function parseSector(text: string, sectors: number): number {
  if (!/^\s*\d+\s*$/.test(text) || Number(text) >= sectors) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--sector', `"${text}" is not a sector in 0..${sectors - 1}`);
  }
  return Number(text);
}

export function registerReceiverCommand(program: Command): void {
  program
    .command('receiver')
    .description('receive one sector\'s UDP stream (port detector.udp.basePort + sector): validate, assemble, find the acquisition start, decode into tiles, run the merger\'s live UDFs (config merger.control / merger.results)')
    .requiredOption('--sector <n>', 'sector index 0..7')
    .option('-c, --config <file>', 'config file overlaid on config/default.json')
    .option('--no-election', 'decide the acquisition start on this sector\'s own first shutter-active frame (single-sector use)')
    .option('--scan <HxW>', 'scan shape: the acquisition ends after H x W positions (default: a time series, until the flag goes off)')
    .option('--continuous', 'with --scan: repeat the scan while the shutter flag stays on (as `tessera simulate --continuous` does)')
    .option('--dump-frames <file>', 'append every decoded sector frame (1860 x 256 uint16 LE, scan order) to FILE and one JSON line per frame to FILE.jsonl')
    .action(async (raw: RawReceiverOptions) => {
      const config = loadConfig(raw.config);
      const sector = parseSector(raw.sector, config.detector.sectors);
      const scan = raw.scan !== undefined ? parseScanShape(raw.scan) : null;
      if (raw.continuous && !scan) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--continuous', 'needs --scan (the length of one repetition)');
      const log = createLogger(`receiver-${sector}`);
      await runReceiverProcess({
        sector,
        config,
        election: raw.election,
        scan,
        continuous: raw.continuous ?? false,
        dumpPath: raw.dumpFrames ?? null,
        merger: true,
        log,
      });
    });
}
