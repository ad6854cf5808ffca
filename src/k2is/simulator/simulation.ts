/**
 * One simulated acquisition, end to end: the scene, the camera stream, the faults and the
 * outputs (UDP, sector files, ground-truth .npy), frame after frame, paced or as fast as
 * possible. `tessera simulate` is a thin layer of option parsing over `runSimulation`.
 *
 * Frame f of all selected sectors is produced and handed to the outputs before frame f + 1,
 * the sectors interleaved block by block as the camera's parallel links deliver them.
 * Pacing (frame-pacer.ts) keeps a deadline clock: a late frame is sent at once and the
 * schedule catches up, instead of every delay pushing all later frames back.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { BLOCKS_PER_SECTOR_FRAME, FRAME_HEIGHT, FRAME_PIXELS, FRAME_WIDTH, SECTOR_FRAME_BYTES } from '../constants.js';
import { TesseraError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { NpyWriter } from '../npy.js';
import { BinRecordingWriter, type BinLayout } from './bin-writer.js';
import { hasFaults, noFaults, SectorFaultInjector, type FaultKind, type FaultOptions, type FaultRecord } from './faults.js';
import { SimulatedScan, type SimulatedScanOptions } from './scene.js';
import { K2ISStream, type Datagram, type StreamOptions } from './stream.js';
import { UdpSectorSender } from './udp-sender.js';
import { FramePacer, rateLog, round, type RateFigures } from './frame-pacer.js';
import { InlineFrameSource, WorkerFrameSource, type FrameSource } from './frame-source.js';

export interface SimulationOptions {
  scene: SimulatedScanOptions;
  stream: StreamOptions;
  sectors: readonly number[];
  /** frames per second for UDP output; 0 = as fast as possible */
  fps: number;
  /** stop after this many stream frames (needed to end a continuous stream in a file) */
  maxFrames?: number | null;
  faults?: Omit<FaultOptions, 'seed' | 'burstPeriod'> & { seed?: number };
  faultLogPath?: string | null;
  udp?: {
    host: string;
    basePort: number;
    multicast: boolean;
    multicastInterface?: string | null;
    sendBufferBytes?: number;
  } | null;
  bin?: { dir: string; name: string; leadingGarbage?: boolean; incompleteEnd?: boolean } | null;
  truthPath?: string | null;
  progressIntervalMs?: number;
  /**
   * render in a worker thread, overlapping with sending (when the compiled worker exists):
   * faster when a core is free, slower when receivers on the same machine need the cores
   */
  renderWorker?: boolean;
  signal?: AbortSignal;
  /** extra settings recorded in the sidecar (e.g. the command line) */
  settings?: Record<string, unknown>;
}

export type { RateFigures };

export interface SimulationSummary extends RateFigures {
  stoppedEarly: boolean;
  faults: Record<FaultKind, number>;
  udpErrors: number;
  /** sends that met an ICMP "port unreachable" (nobody listening) */
  udpRefused: number;
  firstScanFrame: number;
  firstShutterFrame: number;
  bin: BinLayout | null;
  truthFrames: number;
}

/** Write the scan's ground-truth frames, (N, 1860, 2048) uint16, one frame at a time. */
export async function writeTruth(scan: SimulatedScan, path: string, log?: Logger, signal?: AbortSignal): Promise<number> {
  const w = await NpyWriter.create(path, '<u2', [scan.positions, FRAME_HEIGHT, FRAME_WIDTH]);
  const frame = new Uint16Array(FRAME_PIXELS);
  let lastLog = performance.now();
  try {
    for (let i = 0; i < scan.positions; i++) {
      if (signal?.aborted) throw new TesseraError('TESSERA_ERR_OUTPUT', path, 'interrupted');
      scan.frame(i, frame);
      await w.write(frame);
      if (performance.now() - lastLog > 1000) {
        lastLog = performance.now();
        log?.info({ path, written: i + 1, of: scan.positions }, 'writing ground truth');
      }
    }
    await w.close();
  } catch (err) {
    await w.abort();
    throw err;
  }
  log?.info({ path, frames: scan.positions }, 'ground truth written');
  return scan.positions;
}

export async function runSimulation(o: SimulationOptions, log?: Logger): Promise<SimulationSummary> {
  const scan = new SimulatedScan(o.scene);
  const stream = new K2ISStream(scan, o.stream);
  const sectors = [...o.sectors];
  const maxFrames = o.maxFrames ?? Infinity;
  // Only the truth asked for: no stream to produce.
  const total = o.udp || o.bin ? Math.min(stream.totalFrames, maxFrames) : 0;
  if (!Number.isFinite(total) && o.bin) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--continuous', 'writing files from a continuous stream needs --max-frames');
  }
  if (o.bin?.leadingGarbage && stream.framesBeforeScan < 2) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--leading-garbage', 'needs --frames-before >= 2 (the garbage is a parked-beam frame)');
  }

  let truthFrames = 0;
  if (o.truthPath) truthFrames = await writeTruth(scan, o.truthPath, log, o.signal);

  // Faults: one seeded injector per sector; one burst per stream (or per epoch when continuous).
  const faultCounts = noFaults();
  let faultLog: WriteStream | null = null;
  const injectors = new Map<number, SectorFaultInjector>();
  const faultOptions: FaultOptions = { ...o.faults, seed: o.faults?.seed ?? o.scene.seed };
  if (hasFaults(faultOptions) || o.faultLogPath) {
    const periodFrames = stream.continuous ? scan.positions : Number.isFinite(total) ? total : scan.positions;
    faultOptions.burstPeriod = Math.max(1, periodFrames * 32);
    if ((faultOptions.burstDrop ?? 0) >= faultOptions.burstPeriod) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--burst-drop', `must be shorter than ${faultOptions.burstPeriod} datagrams (one burst per ${stream.continuous ? 'epoch' : 'stream'})`);
    }
    if (o.faultLogPath) {
      faultLog = createWriteStream(o.faultLogPath);
      await new Promise<void>((resolve, reject) => {
        faultLog!.once('open', () => resolve());
        faultLog!.once('error', (err) => reject(new TesseraError('TESSERA_ERR_OUTPUT', o.faultLogPath, err.message)));
      });
    }
    const onFault = (r: FaultRecord) => {
      faultCounts[r.kind]++;
      faultLog?.write(JSON.stringify(r) + '\n');
    };
    for (const s of sectors) injectors.set(s, new SectorFaultInjector(s, faultOptions, onFault));
  }

  const udp = o.udp
    ? await UdpSectorSender.open(
        {
          host: o.udp.host,
          basePort: o.udp.basePort,
          multicast: o.udp.multicast,
          multicastInterface: o.udp.multicastInterface ?? null,
          sectors,
          sendBufferBytes: o.udp.sendBufferBytes ?? 4 << 20,
        },
        log,
      )
    : null;
  let bin: BinRecordingWriter | null = null;
  try {
    bin = o.bin
      ? BinRecordingWriter.open({
          dir: o.bin.dir,
          name: o.bin.name,
          sectors,
          leadingGarbage: o.bin.leadingGarbage,
          incompleteEnd: o.bin.incompleteEnd,
          seed: o.scene.seed,
        })
      : null;
  } catch (err) {
    await udp?.close();
    throw err;
  }

  if (o.bin && sectors.length < 8) log?.warn({ sectors }, 'writing only some sector files: readers that need all eight (LiberTEM, Tessera) will not open this recording');
  log?.info(
    {
      scan: scan.scanShape,
      seed: scan.seed,
      sectors,
      frames: Number.isFinite(total) ? total : 'continuous',
      firstScanFrame: stream.firstScanFrame,
      firstShutterFrame: stream.firstShutterFrame,
      fps: udp ? o.fps : 'unpaced (no UDP)',
      udp: o.udp ? `${o.udp.multicast ? 'multicast ' : ''}${o.udp.host}:${o.udp.basePort}+sector` : undefined,
      bin: o.bin?.dir,
      faults: hasFaults(faultOptions) ? o.faults : undefined,
    },
    'simulation starting',
  );

  let source: FrameSource;
  try {
    source = (o.renderWorker && total > 0 ? await WorkerFrameSource.start(o.scene, o.stream, sectors, total) : null) ?? new InlineFrameSource(stream, sectors);
  } catch (err) {
    bin?.abort();
    await udp?.close();
    throw err;
  }
  const out: Datagram[] = [];
  const pacer = new FramePacer({ fps: o.fps, paced: udp !== null, progressIntervalMs: o.progressIntervalMs, signal: o.signal, log });
  const emit = () => {
    for (const d of out) {
      udp?.send(d.sector, d.data);
      bin?.write(d);
      pacer.sent(d.data.length);
    }
    out.length = 0;
  };

  let stoppedEarly = false;
  try {
    for (let f = 0; f < total; f++) {
      if (o.signal?.aborted) {
        stoppedEarly = true;
        break;
      }
      const outage = faultOptions.outage;
      if (outage && f === outage[0]) log?.warn({ fromFrame: outage[0], toFrame: outage[1], fps: o.fps }, 'link outage: stream frames not sent');
      if (outage && f === outage[1]) log?.warn({ streamFrame: f }, 'link back: stream frames sent again');
      const frameBuf = await source.get(f);
      const info = stream.frameInfo(f);
      // The camera's sectors send in parallel: interleave them block by block, so that no
      // receiver gets a whole sector frame in one burst.
      const perSector = sectors.map((s, k) => stream.datagramsOf(info, s, frameBuf, k * SECTOR_FRAME_BYTES));
      for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
        sectors.forEach((s, k) => {
          const d = perSector[k]![i]!;
          const inj = injectors.get(s);
          if (inj) inj.push(d, out);
          else out.push(d);
        });
        emit();
      }
      bin?.flush();
      // The frame buffer is reused for a later frame: wait for the kernel to take this one.
      if (udp) await udp.idle();
      source.release(f);
      await pacer.frameDone(f);
    }
    for (const inj of injectors.values()) {
      inj.flush(out);
      emit();
    }
    bin?.flush();
    if (udp) await udp.idle();
    const totals = pacer.totals();

    let layout: BinLayout | null = null;
    if (bin) {
      if (o.bin?.incompleteEnd) bin.writeIncompleteEnd(stream, total);
      layout = await bin.finish(scan.scanShape, {
        simulator: 'tessera simulate',
        ...(o.settings ?? {}),
        seed: scan.seed,
        scene: scan.describe(),
        stream: {
          framesBeforeScan: stream.framesBeforeScan,
          framesAfterScan: stream.framesAfterScan,
          continuous: stream.continuous,
          frameIdStart: stream.frameIdStart,
          frameIdReset: stream.frameIdReset,
          blockCountStart: stream.blockCountStart,
          streamFrames: total,
          firstScanFrame: stream.firstScanFrame,
          firstShutterFrame: stream.firstShutterFrame,
        },
        faults: hasFaults(faultOptions) ? faultOptions : null,
      });
    }
    const summary: SimulationSummary = {
      ...totals,
      stoppedEarly,
      faults: faultCounts,
      udpErrors: udp?.stats.errors ?? 0,
      udpRefused: udp?.stats.refused ?? 0,
      firstScanFrame: stream.firstScanFrame,
      firstShutterFrame: stream.firstShutterFrame,
      bin: layout,
      truthFrames,
    };
    log?.info({ ...rateLog(summary), seconds: round(summary.seconds, 3), stoppedEarly, faults: hasFaults(faultOptions) ? faultCounts : undefined, udpErrors: summary.udpErrors, udpRefused: summary.udpRefused, render: source.kind }, 'simulation done');
    return summary;
  } catch (err) {
    bin?.abort();
    throw err;
  } finally {
    await source.close();
    await udp?.close();
    if (faultLog) {
      const fl = faultLog;
      await new Promise<void>((resolve) => fl.end(() => resolve()));
    }
  }
}
