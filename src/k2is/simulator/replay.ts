/**
 * `tessera simulate --replay-bin DIR`: a recorded K2 IS acquisition (a camera's 8 sector files,
 * or the simulator's --write-bin output) streamed again as the camera's UDP datagrams, so a
 * recorded experiment can be re-run through the live pipeline.
 *
 * Every whole block of every sector file is one datagram, exactly the bytes recorded, sector i
 * to BASEPORT + i (RecordedStreamPlan says which blocks form each frame). Frame k of all
 * selected sectors goes out together, the sectors interleaved block by block as the camera's
 * parallel links deliver them, paced by a deadline clock (frame k due at start + k / fps) or as
 * fast as possible with fps 0 (frame-pacer.ts). The simulator's faults (drop, burst, duplicate, reorder,
 * corrupt) apply to the replayed datagrams, logged as for a simulation (streamFrame = replay
 * frame number, from 0, counting every pass).
 *
 * Sector frames are read ahead (positioned reads on the thread pool, a few frames deep) while
 * the current one is sent, so that file reads and sends overlap.
 */
import { createWriteStream, read, type WriteStream } from 'node:fs';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, SECTOR_FRAME_BYTES } from '../constants.js';
import { readBlockCount, readFrameId } from '../header.js';
import { TesseraError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { hasFaults, noFaults, SectorFaultInjector, type FaultKind, type FaultOptions, type FaultRecord } from './faults.js';
import { RecordedStreamPlan, shiftBlockCounters, type ReplayRange } from './replay-plan.js';
import { FramePacer, rateLog, round, type RateFigures } from './frame-pacer.js';
import type { Datagram } from './stream.js';
import { UdpSectorSender } from './udp-sender.js';

export interface ReplayOptions {
  /** the recording: its directory, its .gtg or one of its .bin files */
  path: string;
  /** sectors to send (normally all eight) */
  sectors: readonly number[];
  /** frames per second; 0 = as fast as possible */
  fps: number;
  /** repeat the recording until stopped (or maxFrames), counters continuing */
  loop?: boolean;
  /** only these complete frames (without: every whole block, lead-in and tail included) */
  frames?: ReplayRange | null;
  /** stop after this many frames */
  maxFrames?: number | null;
  faults?: Omit<FaultOptions, 'seed' | 'burstPeriod'> & { seed?: number };
  faultLogPath?: string | null;
  udp: {
    host: string;
    basePort: number;
    multicast: boolean;
    multicastInterface?: string | null;
    sendBufferBytes?: number;
  };
  progressIntervalMs?: number;
  /** frames read ahead of the one being sent (default 3) */
  readAhead?: number;
  signal?: AbortSignal;
}

export interface ReplaySummary extends RateFigures {
  passes: number;
  stoppedEarly: boolean;
  faults: Record<FaultKind, number>;
  udpErrors: number;
  udpRefused: number;
  /** replay frames per pass */
  framesPerPass: number;
  /** complete frames in the recording */
  completeFrames: number;
  /** per sector: whole blocks sent per pass */
  blocksPerPass: number[];
  /** per sector: bytes of a truncated block at the end of the file, not sent */
  truncatedBytes: number[];
  syncProblem: string | null;
}

function readAt(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Reads replay frames (the selected sectors' blocks, one sector region after the other) ahead. */
class RecordedFrameReader {
  private readonly inFlight = new Map<number, Promise<Uint8Array>>();
  private readonly free: Uint8Array[] = [];
  private next = 0;

  constructor(
    private readonly plan: RecordedStreamPlan,
    private readonly sectors: readonly number[],
    private readonly frameOf: (n: number) => number,
    private readonly total: number,
    private readonly depth: number,
  ) {}

  /** Replay frame `n`'s bytes; valid until `release`. Frames are asked for in order. */
  get(n: number): Promise<Uint8Array> {
    while (this.next < this.total && this.next <= n + this.depth) {
      const k = this.next++;
      const p = this.load(k);
      p.catch(() => {}); // seen when frame k is asked for; not an unhandled rejection meanwhile
      this.inFlight.set(k, p);
    }
    const p = this.inFlight.get(n)!;
    this.inFlight.delete(n);
    return p;
  }

  release(buf: Uint8Array): void {
    this.free.push(buf);
  }

  /** Wait for reads still running (after an early stop), so files close with nothing in flight. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values()]);
    this.inFlight.clear();
  }

  private async load(n: number): Promise<Uint8Array> {
    const buf = this.free.pop() ?? new Uint8Array(this.sectors.length * SECTOR_FRAME_BYTES);
    const v = this.frameOf(n);
    await Promise.all(
      this.sectors.map(async (s, k) => {
        const r = this.plan.blocksOf(v, s);
        const want = r.count * BLOCK_SIZE;
        let done = 0;
        while (done < want) {
          let got: number;
          try {
            got = await readAt(this.plan.fd(s), buf, k * SECTOR_FRAME_BYTES + done, want - done, r.firstBlock * BLOCK_SIZE + done);
          } catch (err) {
            throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `cannot read ${this.plan.files[s]!.path}: ${(err as Error).message}`);
          }
          if (got === 0) throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `${this.plan.files[s]!.path} became shorter while being replayed`);
          done += got;
        }
      }),
    );
    return buf;
  }
}

export async function runReplay(o: ReplayOptions, log?: Logger): Promise<ReplaySummary> {
  const sectors = [...o.sectors];
  const plan = RecordedStreamPlan.open(o.path, o.frames ?? null);
  const faultCounts = noFaults();
  let faultLog: WriteStream | null = null;
  let udp: UdpSectorSender | null = null;
  let reader: RecordedFrameReader | null = null;
  try {
    const fpp = plan.framesPerPass;
    const maxFrames = o.maxFrames ?? Infinity;
    const total = o.loop ? maxFrames : Math.min(fpp, maxFrames);
    const blocksPerPass = plan.files.map((_, s) => plan.blocksPerPass(s));

    // one burst per sector per pass: a pass is what a stream is to the simulator
    const injectors = new Map<number, SectorFaultInjector>();
    const faultOptions: FaultOptions = { ...o.faults, seed: o.faults?.seed ?? 0 };
    if (hasFaults(faultOptions) || o.faultLogPath) {
      for (const s of sectors) {
        if ((faultOptions.burstDrop ?? 0) >= blocksPerPass[s]!) {
          throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--burst-drop', `must be shorter than ${blocksPerPass[s]} datagrams (sector ${s}'s blocks per pass)`);
        }
      }
      if (o.faultLogPath) {
        const fl = createWriteStream(o.faultLogPath);
        faultLog = fl;
        await new Promise<void>((resolve, reject) => {
          fl.once('open', () => resolve());
          fl.once('error', (err) => reject(new TesseraError('TESSERA_ERR_OUTPUT', o.faultLogPath, err.message)));
        });
      }
      const onFault = (r: FaultRecord) => {
        faultCounts[r.kind]++;
        faultLog?.write(JSON.stringify(r) + '\n');
      };
      for (const s of sectors) injectors.set(s, new SectorFaultInjector(s, { ...faultOptions, burstPeriod: blocksPerPass[s]! }, onFault));
    }

    for (const w of plan.sync?.warnings ?? []) log?.warn({ warning: w }, 'recording: odd but tolerated');
    if (plan.syncProblem) log?.warn({ problem: plan.syncProblem }, 'the sector files do not synchronise: each is replayed from its first block, in 32-block frames');
    const edge = plan.sync?.firstFlaggedFrame;
    if (edge !== undefined && !(plan.frameStart <= edge - 1 && edge < plan.frameStop)) {
      // receivers start an acquisition on the flag's off -> on edge (scan position 0 = the frame before it)
      log?.warn(
        { frames: `${plan.frameStart}:${plan.frameStop}`, firstFlaggedFrame: edge },
        'the replayed frames do not contain the shutter edge (the last flag-off frame and the first flagged one): receivers will not start an acquisition from it',
      );
    }
    plan.files.forEach((f, s) => {
      if (f.trailingBytes > 0 && sectors.includes(s)) {
        log?.warn({ sector: s, file: f.path, bytes: f.trailingBytes }, 'truncated block at the end of the file: skipped (not a whole datagram)');
      }
    });
    log?.info(
      {
        recording: o.path,
        files: plan.files.map((f) => f.path),
        blocks: plan.files.map((f) => f.blocks),
        scan: plan.scanShape,
        completeFrames: plan.completeFrames,
        firstFlaggedFrame: plan.sync?.firstFlaggedFrame,
        leadingBlocks: plan.sync?.leadingBlocksSkipped,
        framesPerPass: fpp,
        frames: `${plan.frameStart}:${plan.frameStop}`,
        loop: o.loop ?? false,
        sectors,
        fps: o.fps,
        udp: `${o.udp.multicast ? 'multicast ' : ''}${o.udp.host}:${o.udp.basePort}+sector`,
        faults: hasFaults(faultOptions) ? o.faults : undefined,
      },
      'replay starting',
    );

    udp = await UdpSectorSender.open(
      {
        host: o.udp.host,
        basePort: o.udp.basePort,
        multicast: o.udp.multicast,
        multicastInterface: o.udp.multicastInterface ?? null,
        sectors,
        sendBufferBytes: o.udp.sendBufferBytes ?? 4 << 20,
      },
      log,
    );
    const frameOf = (n: number) => plan.frameStart + (n % fpp);
    reader = new RecordedFrameReader(plan, sectors, frameOf, total, Math.max(1, o.readAhead ?? 3));

    const ranges = sectors.map(() => ({ firstBlock: 0, count: 0, firstPosition: 0 }));
    const out: Datagram[] = [];
    const sender = udp;
    const pacer = new FramePacer({ fps: o.fps, progressIntervalMs: o.progressIntervalMs, signal: o.signal, log });
    const emit = () => {
      for (const d of out) {
        sender.send(d.sector, d.data);
        pacer.sent(d.data.length);
      }
      out.length = 0;
    };

    let stoppedEarly = false;
    let pass = 0;
    for (let n = 0; n < total; n++) {
      if (o.signal?.aborted) {
        stoppedEarly = true;
        break;
      }
      pass = Math.floor(n / fpp);
      const v = frameOf(n);
      if (n > 0 && n % fpp === 0) log?.info({ pass, frame: n }, 'replay: next pass');
      const buf = await reader.get(n);
      sectors.forEach((s, k) => {
        ranges[k] = plan.blocksOf(v, s);
        if (pass > 0) {
          const base = k * SECTOR_FRAME_BYTES;
          for (let b = 0; b < ranges[k]!.count; b++) {
            shiftBlockCounters(buf, base + b * BLOCK_SIZE, (pass * plan.spanBlocks) % 4294967296, (pass * plan.spanFrames) % 4294967296);
          }
        }
      });
      // interleave the sectors block by block, as the camera's parallel links deliver them
      for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
        sectors.forEach((s, k) => {
          const r = ranges[k]!;
          const j = i - r.firstPosition;
          if (j < 0 || j >= r.count) return;
          const o0 = k * SECTOR_FRAME_BYTES + j * BLOCK_SIZE;
          const data = buf.subarray(o0, o0 + BLOCK_SIZE);
          const d: Datagram = { data, sector: s, streamFrame: n, blockIndex: i, frameId: readFrameId(data), blockCount: readBlockCount(data) };
          const inj = injectors.get(s);
          if (inj) inj.push(d, out);
          else out.push(d);
        });
        emit();
      }
      // the buffer is read into again for a later frame: wait for the kernel to take this one
      await udp.idle();
      reader.release(buf);
      await pacer.frameDone(n, { pass });
    }
    for (const inj of injectors.values()) {
      inj.flush(out);
      emit();
    }
    await udp.idle();
    const totals = pacer.totals();
    const summary: ReplaySummary = {
      ...totals,
      passes: Math.ceil(totals.frames / fpp),
      stoppedEarly,
      faults: faultCounts,
      udpErrors: udp.stats.errors,
      udpRefused: udp.stats.refused,
      framesPerPass: fpp,
      completeFrames: plan.completeFrames,
      blocksPerPass,
      truncatedBytes: plan.truncatedBytes,
      syncProblem: plan.syncProblem,
    };
    log?.info(
      {
        ...rateLog(summary),
        passes: summary.passes,
        datagrams: summary.datagrams,
        seconds: round(summary.seconds, 3),
        stoppedEarly,
        faults: hasFaults(faultOptions) ? faultCounts : undefined,
        truncatedBlocksSkipped: plan.truncatedBytes.filter((b, s) => b > 0 && sectors.includes(s)).length,
        udpErrors: summary.udpErrors,
        udpRefused: summary.udpRefused,
      },
      'replay done',
    );
    return summary;
  } finally {
    await reader?.drain();
    await udp?.close();
    plan.close();
    if (faultLog) {
      const fl = faultLog;
      await new Promise<void>((resolve) => fl.end(() => resolve()));
    }
  }
}
