/**
 * A receiver's counters, and the one-line summary it logs every second.
 *
 * Every datagram is counted exactly once, by its fate:
 *   received = ok + sum(rejected) + duplicates + stragglers + outOfWindow
 * (the fuzz test holds the assembler to this). Frame counters count frames the assembler
 * emitted: complete, damaged (some blocks missing, zero-filled) or missing (no block at all).
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { DATAGRAM_REJECTIONS, type DatagramRejection } from '../src/k2is/header.js';
import type { Logger } from '../src/log.js';

/** Why a datagram was dropped: the header checks (header.ts) and the assembler's own. */
export type RejectionReason =
  | DatagramRejection
  /** same frame (by block_count) as blocks already placed, but a different frame_id */
  | 'inconsistent_frame_id'
  /** no frame slot free: the consumer holds more frames than the pool was sized for (a bug) */
  | 'no_free_slot';

export const REJECTION_REASONS: readonly RejectionReason[] = [...DATAGRAM_REJECTIONS, 'inconsistent_frame_id', 'no_free_slot'];

export class ReceiverCounters {
  /** datagrams handed to the assembler */
  received = 0;
  bytesReceived = 0;
  /** datagrams placed into a frame */
  ok = 0;
  bytesOk = 0;
  readonly rejected: Record<RejectionReason, number> = Object.fromEntries(REJECTION_REASONS.map((r) => [r, 0])) as Record<
    RejectionReason,
    number
  >;
  /** a block already placed in a pending frame */
  duplicates = 0;
  /** a block of a frame already emitted (given up or complete) */
  stragglers = 0;
  /** a block far from the frames in flight (or off their block_count grid) */
  outOfWindow = 0;
  /** confirmed jumps of the stream (restart, new acquisition, long loss): flush and resynchronise */
  resyncs = 0;

  framesComplete = 0;
  framesDamaged = 0;
  framesMissing = 0;
  /** blocks zero-filled in emitted frames (32 per missing frame) = sum of damage bits */
  blocksZeroFilled = 0;
  /** gauge: frames the assembler holds, waiting for blocks */
  pendingFrames = 0;

  // after assembly: acquisition start and the tiler
  /** frames emitted before scan position 0 or between acquisitions (not passed on) */
  framesOutsideScan = 0;
  /** frames handed to the tiler with a scan position */
  framesInScan = 0;
  /** frames whose data was discarded while the first-frame vote was open (buffer full) */
  framesDroppedWhileVoting = 0;
  tiles = 0;
  acquisitions = 0;

  totalRejected(): number {
    let n = 0;
    for (const r of REJECTION_REASONS) n += this.rejected[r];
    return n;
  }

  /** The identity every datagram's fate must satisfy (see the module comment). */
  accounted(): number {
    return this.ok + this.totalRejected() + this.duplicates + this.stragglers + this.outOfWindow;
  }

  snapshot(): CounterSnapshot {
    const rejected: Partial<Record<RejectionReason, number>> = {};
    for (const r of REJECTION_REASONS) if (this.rejected[r] > 0) rejected[r] = this.rejected[r];
    return {
      received: this.received,
      bytesReceived: this.bytesReceived,
      ok: this.ok,
      bytesOk: this.bytesOk,
      rejected,
      duplicates: this.duplicates,
      stragglers: this.stragglers,
      outOfWindow: this.outOfWindow,
      resyncs: this.resyncs,
      framesComplete: this.framesComplete,
      framesDamaged: this.framesDamaged,
      framesMissing: this.framesMissing,
      blocksZeroFilled: this.blocksZeroFilled,
      pendingFrames: this.pendingFrames,
      framesOutsideScan: this.framesOutsideScan,
      framesInScan: this.framesInScan,
      framesDroppedWhileVoting: this.framesDroppedWhileVoting,
      tiles: this.tiles,
      acquisitions: this.acquisitions,
    };
  }
}

export interface CounterSnapshot {
  received: number;
  bytesReceived: number;
  ok: number;
  bytesOk: number;
  rejected: Partial<Record<RejectionReason, number>>;
  duplicates: number;
  stragglers: number;
  outOfWindow: number;
  resyncs: number;
  framesComplete: number;
  framesDamaged: number;
  framesMissing: number;
  blocksZeroFilled: number;
  pendingFrames: number;
  framesOutsideScan: number;
  framesInScan: number;
  framesDroppedWhileVoting: number;
  tiles: number;
  acquisitions: number;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/**
 * Logs `stats` once per interval: rates since the last line and totals. The line is what
 * `tessera start` parses to show live per-sector figures, so its keys are part of the interface.
 */
export class StatsReporter {
  private timer: NodeJS.Timeout | null = null;
  private last: { t: number; received: number; bytes: number; frames: number };
  /** how long the receive loop could not run: a stall longer than the socket buffer lasts loses datagrams */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 1 });

  constructor(
    private readonly counters: ReceiverCounters,
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly extra: () => Record<string, unknown> = () => ({}),
  ) {
    this.last = { t: performance.now(), received: 0, bytes: 0, frames: 0 };
  }

  start(): void {
    if (this.timer) return;
    this.loopDelay.enable();
    this.timer = setInterval(() => this.logLine('stats'), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.loopDelay.disable();
  }

  /** One line: per-second rates since the previous line, then totals. */
  logLine(msg: string, level: 'info' | 'warn' = 'info'): void {
    const c = this.counters;
    const now = performance.now();
    const dt = Math.max(1e-3, (now - this.last.t) / 1000);
    const frames = c.framesComplete + c.framesDamaged + c.framesMissing;
    const line = {
      datagramsPerSecond: Math.round((c.received - this.last.received) / dt),
      MBps: round1((c.bytesReceived - this.last.bytes) / dt / 1e6),
      fps: round1((frames - this.last.frames) / dt),
      loopDelayMaxMs: round1(this.loopDelay.max / 1e6),
      loopDelayP99Ms: round1(this.loopDelay.percentile(99) / 1e6),
      ...c.snapshot(),
      ...this.extra(),
    };
    this.last = { t: now, received: c.received, bytes: c.bytesReceived, frames };
    this.loopDelay.reset();
    this.log[level](line, msg);
  }
}
