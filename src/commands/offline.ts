/**
 * `tessera offline`: run UDFs over a recorded K2 IS dataset (8 sector .bin files + .gtg) in one
 * pass and write every result buffer to a reduced-data HDF5 file ("tessera-reduced/1", see
 * src/io/reduced-file.ts). Everything that can be checked before reading the data is checked
 * first (UDF names and params, the recording, the output path), so a mistake costs seconds, not
 * a long run; the output appears only when the run succeeded.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { TesseraError } from '../errors.js';
import { FRAME_PIXELS } from '../k2is/constants.js';
import { createLogger, flushLog, type Logger } from '../log.js';
import { type NamedUdfResults, ReducedFileWriter, REDUCED_FORMAT, toJson } from '../io/reduced-file.js';
import { K2ISDataSet } from '../udf/k2is-dataset.js';
import { loadConfiguredPlugins } from '../udf/plugins.js';
import { createUdf, registeredUdfNames } from '../udf/registry.js';
import { runUdfIter, type RunProgress, type RunStep } from '../udf/runner.js';
import type { UDF, UDFSpec } from '../udf/udf.js';

export interface RawOfflineOptions {
  config?: string;
  input?: string;
  scan?: string;
  udf?: string[];
  output?: string;
  syncOffset?: string;
  workers?: string;
  gzip?: string;
  allowBlankFrames?: boolean;
  progress?: boolean;
  partitionFrames?: string;
}

/** One `--udf` argument, resolved: the group id in the file and the spec to build the UDF from. */
export interface OfflineUdfSpec {
  id: string;
  spec: UDFSpec;
}

const BYTES_PER_FRAME = FRAME_PIXELS * 2;

/** The run was stopped by SIGINT or SIGTERM; nothing was written. */
export class OfflineInterrupted extends Error {
  constructor(readonly signalName: string) {
    super(`interrupted by ${signalName}: nothing written`);
    this.name = 'OfflineInterrupted';
  }
}

function badArg(option: string, why: string): never {
  throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', option, why);
}

function parseScan(text: string): [number, number] {
  const m = /^\s*(\d+)\s*[xX]\s*(\d+)\s*$/.exec(text);
  if (!m) badArg('--scan', `"${text}" is not HxW (e.g. 32x32)`);
  const h = Number(m[1]);
  const w = Number(m[2]);
  if (h < 1 || w < 1 || h * w > 0x3fffffff) badArg('--scan', `${h}x${w} is not a usable scan shape`);
  return [h, w];
}

function parseInteger(option: string, text: string, min: number, max: number): number {
  if (!/^\s*[+-]?\d+\s*$/.test(text)) badArg(option, `"${text}" is not an integer`);
  const v = Number(text);
  if (v < min || v > max) badArg(option, `${v} is outside [${min}, ${max}]`);
  return v;
}

/** A registry name as typed, or without the UDF suffix, or in other case ("Sum", "sumsig"). */
function resolveUdfName(name: string): string {
  const known = registeredUdfNames();
  if (known.includes(name)) return name;
  if (known.includes(`${name}UDF`)) return `${name}UDF`;
  const lower = name.toLowerCase();
  const hit = known.filter((k) => k.toLowerCase() === lower || k.toLowerCase() === `${lower}udf`);
  if (hit.length === 1) return hit[0]!;
  throw new TesseraError('TESSERA_ERR_UNKNOWN_UDF', name, known.join(', '));
}

/**
 * Parse `--udf [ID=]NAME[:JSON_PARAMS]` arguments. ID defaults to the UDF's registry name; a
 * second UDF of the same class without an id gets `<name>_2`, `<name>_3`, ...
 */
export function parseUdfArgs(args: readonly string[]): OfflineUdfSpec[] {
  if (args.length === 0) badArg('--udf', 'give at least one UDF, e.g. --udf Sum --udf \'ApplyMasks:{"masks":[{"type":"disk","cy":930,"cx":1024,"r":50}]}\'');
  const out: OfflineUdfSpec[] = [];
  const ids = new Set<string>();
  for (const arg of args) {
    const m = /^(?:([A-Za-z0-9_][A-Za-z0-9_.+-]*)=)?([A-Za-z_$][\w$.-]*)(?::([\s\S]*))?$/.exec(arg.trim());
    if (!m) badArg('--udf', `"${arg}" is not [ID=]NAME[:JSON_PARAMS]`);
    const name = resolveUdfName(m[2]!);
    let params: Record<string, unknown> = {};
    if (m[3] !== undefined && m[3].trim() !== '') {
      let parsed: unknown;
      try {
        parsed = JSON.parse(m[3]);
      } catch (err) {
        badArg('--udf', `parameters of ${m[2]} are not valid JSON (${(err as Error).message}): ${m[3]}`);
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) badArg('--udf', `parameters of ${m[2]} must be a JSON object, got ${m[3]}`);
      params = parsed as Record<string, unknown>;
    }
    let id = m[1];
    if (id === undefined) {
      id = name;
      for (let k = 2; ids.has(id); k++) id = `${name}_${k}`;
    } else if (ids.has(id)) {
      badArg('--udf', `the id "${id}" is used twice`);
    }
    ids.add(id);
    out.push({ id, spec: { name, params } });
  }
  return out;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/**
 * Progress of a run: a bar redrawn on stderr when a person watches (TTY), otherwise one pino
 * line about every second, so that logs of long runs show they are alive.
 */
export class OfflineProgress {
  private lastReport = 0;
  private drawn = false;
  private readonly started = performance.now();

  constructor(
    private readonly log: Logger,
    private readonly tty: boolean,
    private readonly intervalMs: number = tty ? 100 : 1000,
  ) {}

  figures(p: RunProgress): { framesDone: number; framesTotal: number; gbPerSecond: number; etaSeconds: number; elapsedSeconds: number } {
    const elapsed = (performance.now() - this.started) / 1000;
    const rate = elapsed > 0 ? p.framesDone / elapsed : 0;
    return {
      framesDone: p.framesDone,
      framesTotal: p.framesTotal,
      gbPerSecond: elapsed > 0 ? (p.framesDone * BYTES_PER_FRAME) / elapsed / 1e9 : 0,
      etaSeconds: rate > 0 ? (p.framesTotal - p.framesDone) / rate : Infinity,
      elapsedSeconds: elapsed,
    };
  }

  update(p: RunProgress, force = false): void {
    const now = performance.now();
    if (!force && now - this.lastReport < this.intervalMs) return;
    this.lastReport = now;
    const f = this.figures(p);
    if (this.tty) {
      const width = 30;
      const frac = f.framesTotal > 0 ? f.framesDone / f.framesTotal : 1;
      const full = Math.round(frac * width);
      const bar = '#'.repeat(full) + '-'.repeat(width - full);
      process.stderr.write(
        `\r[${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${f.framesDone}/${f.framesTotal} frames  ${f.gbPerSecond.toFixed(2)} GB/s  ETA ${formatDuration(f.etaSeconds)}  `,
      );
      this.drawn = true;
    } else {
      this.log.info(
        { framesDone: f.framesDone, framesTotal: f.framesTotal, gbPerSecond: Number(f.gbPerSecond.toFixed(3)), etaSeconds: Number.isFinite(f.etaSeconds) ? Number(f.etaSeconds.toFixed(1)) : null },
        'progress',
      );
    }
  }

  /** End the bar's line (TTY) so that what follows starts on a line of its own. */
  end(): void {
    if (this.drawn) process.stderr.write('\n');
    this.drawn = false;
  }
}

export interface OfflineSummary {
  output: string;
  frames: number;
  decodedBytes: number;
  seconds: number;
  gbPerSecond: number;
  udfs: string[];
}

/** Run the offline command with parsed options (the CLI action; also callable from code). */
export async function runOffline(raw: RawOfflineOptions, argv: readonly string[] = process.argv.slice(2)): Promise<OfflineSummary> {
  if (raw.input === undefined) badArg('--input', 'is required: the recording directory, one of its .bin files or its .gtg');
  if (raw.output === undefined) badArg('--output', 'is required: the HDF5 file to write, e.g. result.h5');
  const config = loadConfig(raw.config);
  const scanShape = raw.scan !== undefined ? parseScan(raw.scan) : undefined;
  const syncOffset = raw.syncOffset !== undefined ? parseInteger('--sync-offset', raw.syncOffset, -(2 ** 31), 2 ** 31 - 1) : undefined;
  const workers = raw.workers === undefined || raw.workers === 'auto' ? 'auto' : parseInteger('--workers', raw.workers, 0, 256);
  const gzip = raw.gzip !== undefined ? parseInteger('--gzip', raw.gzip, 0, 9) : 0;
  const partitionFrames = raw.partitionFrames !== undefined ? parseInteger('--partition-frames', raw.partitionFrames, 1, 2 ** 30) : undefined;

  await loadConfiguredPlugins(config);
  const specs = parseUdfArgs(raw.udf ?? []);
  const udfs: UDF[] = specs.map((s) => createUdf(s.spec));

  const input = resolve(raw.input);
  if (!existsSync(input)) throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `input ${input} does not exist`);
  const log = createLogger('offline');
  const dataset = K2ISDataSet.open(input, { ...(scanShape ? { scanShape } : {}), ...(syncOffset !== undefined ? { syncOffset } : {}) });
  let writer: ReducedFileWriter | null = null;
  const ac = new AbortController();
  const onSigint = (): void => ac.abort(new OfflineInterrupted('SIGINT'));
  const onSigterm = (): void => ac.abort(new OfflineInterrupted('SIGTERM'));
  process.once('SIGINT', onSigint);
  process.once('SIGTERM', onSigterm);
  const tty = raw.progress !== false && process.stderr.isTTY === true;
  const progress = new OfflineProgress(log, tty);
  try {
    const rec = dataset.recording;
    const info = rec.getSyncOffsetInfo();
    const blank = info.frames_inserted_start + info.frames_inserted_end;
    if (blank > 0 && !raw.allowBlankFrames) {
      const sizes = rec.fileSet.files.map((f) => f.size);
      const uneven = Math.min(...sizes) !== Math.max(...sizes) ? `; sector file sizes differ (${Math.min(...sizes)} .. ${Math.max(...sizes)} bytes)` : '';
      throw new TesseraError(
        'TESSERA_ERR_SECTOR_FILES',
        `the scan ${rec.navShape.join('x')} needs ${rec.frameCount} frames but the recording has only ${rec.frameCount - blank} from scan position 0 ` +
          `(sync offset ${rec.syncOffset}, ${rec.imageCount} complete frames in all)${uneven}; --allow-blank-frames reads the missing positions as zeros`,
      );
    }
    if (blank > 0) log.warn({ ...info }, 'scan positions outside the recording are read as blank frames');
    const navShape = [...dataset.navShape];
    const sigShape = [...dataset.sigShape];
    writer = await ReducedFileWriter.create(raw.output, {
      atomic: true,
      compression: gzip,
      attrs: {
        format: REDUCED_FORMAT,
        nav_shape: navShape,
        sig_shape: sigShape,
        command: toJson(['tessera', ...argv]),
        definition: toJson(specs.map((s) => ({ id: s.id, name: s.spec.name, params: s.spec.params ?? {} }))),
        input,
        sector_files: toJson(rec.files),
        sync_offset: rec.syncOffset,
        native_sync_offset: rec.nativeSyncOffset,
        sync_offset_info: toJson(info),
      },
    });
    log.info(
      { input, navShape, frames: rec.frameCount, syncOffset: rec.syncOffset, udfs: specs.map((s) => s.id), workers, output: writer.path },
      'offline run starting',
    );

    const t0 = performance.now();
    let last: RunStep | null = null;
    for await (const step of runUdfIter(dataset, udfs, { workers, signal: ac.signal, ...(partitionFrames ? { partitionFrames } : {}) })) {
      last = step;
      progress.update(step.progress);
      // in-process runs only await settled promises: let signals, timers and log writes through
      await new Promise<void>((r) => setImmediate(r));
    }
    const seconds = (performance.now() - t0) / 1000;
    progress.update(last!.progress, true);
    progress.end();
    const named: NamedUdfResults[] = last!.buffers.map((results, i) => ({ id: specs[i]!.id, spec: specs[i]!.spec, results }));
    writer.writeRun(named);
    writer.writeArray('/damage', last!.damage, last!.damage.shape, { dtype: 'uint8' });
    const frames = last!.progress.framesDone;
    const decodedBytes = frames * BYTES_PER_FRAME;
    writer.setAttrs('/', { frames, decoded_bytes: decodedBytes, seconds: Number(seconds.toFixed(3)), workers: String(workers) });
    writer.close();
    const summary: OfflineSummary = { output: writer.path, frames, decodedBytes, seconds, gbPerSecond: decodedBytes / seconds / 1e9, udfs: specs.map((s) => s.id) };
    // on a terminal the summary line says it all
    log[tty ? 'debug' : 'info']({ ...summary }, 'offline run done');
    return summary;
  } catch (err) {
    progress.end();
    writer?.abort();
    throw ac.signal.aborted && ac.signal.reason instanceof OfflineInterrupted ? ac.signal.reason : err;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    dataset.close();
    await flushLog(log);
  }
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function registerOfflineCommand(program: Command): void {
  program
    .command('offline')
    .description('run UDFs over a recorded K2 IS dataset in one pass and write every result buffer to an HDF5 file (layout tessera-reduced/1)')
    .option('-c, --config <file>', 'config file overlaid on config/default.json (udf.pluginDir: plugin UDFs)')
    .option('--input <path>', 'the recording: its directory (8 sector .bin files + .gtg), one of the .bin files, or the .gtg')
    .option('--scan <HxW>', 'scan shape (default: from the .gtg)')
    .option('--udf <[ID=]NAME[:JSON]>', 'a UDF to run, with params as a JSON object; repeat for more (one pass). NAME: e.g. Sum, SumSig, StdDev, ApplyMasks, CoM, or a plugin UDF. ID: its group in the file, /udf/ID (default: the UDF name)', collect, [])
    .option('--output <file.h5>', 'HDF5 file to write (replaced if it exists; written only when the run succeeds)')
    .option('--sync-offset <n>', "LiberTEM's sync_offset: scan position 0 reads complete frame n - 1 (default: the recording's own, the frame before the first flagged one)")
    .option('--workers <n|auto>', 'worker threads; 0 runs in this thread (default auto: one per core)')
    .option('--gzip <level>', 'compress datasets larger than 64 KiB with gzip at this level 1..9 (default 0: none)')
    .option('--partition-frames <n>', 'frames per partition, the unit of work and of progress (default: one scan row)')
    .option('--allow-blank-frames', 'read scan positions the recording does not cover as zeros instead of failing')
    .option('--no-progress', 'no progress bar on a terminal')
    .addHelpText(
      'after',
      `
The file: root attributes format = "${REDUCED_FORMAT}", nav_shape, sig_shape, tessera_version,
created, command, definition (the UDFs with params, JSON), input, sync_offset, frames; one group
per UDF at /udf/<ID> with a dataset per result buffer (nav buffers shaped as the scan plus extra
shape, sig buffers 1860 x 2048 plus extra shape), and /damage (the processed scan positions).
The layout is described in src/io/reduced-file.ts.

Examples:
  tessera offline --input rec/ --udf Sum --udf SumSig --output sums.h5
  tessera offline --input rec/Capture1_.gtg --scan 64x64 --output vd.h5 \\
    --udf 'bf=ApplyMasks:{"masks":[{"type":"disk","cy":930,"cx":1024,"r":60}]}' \\
    --udf 'CoM:{"cy":930,"cx":1024,"r":60}'`,
    )
    .action(async (raw: RawOfflineOptions) => {
      let s: OfflineSummary;
      try {
        s = await runOffline(raw);
      } catch (err) {
        if (!(err instanceof OfflineInterrupted)) throw err;
        process.stderr.write(`tessera offline: ${err.message}\n`);
        process.exitCode = 130;
        return;
      }
      process.stdout.write(
        `tessera offline: wrote ${s.output} (${s.udfs.join(', ')}): ${s.frames} frames, ${(s.decodedBytes / 1e9).toFixed(2)} GB decoded in ${s.seconds.toFixed(2)} s (${s.gbPerSecond.toFixed(2)} GB/s)\n`,
      );
    });
}
