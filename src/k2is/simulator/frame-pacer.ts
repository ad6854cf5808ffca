/**
 * `FramePacer`: the clock of a stream of frames sent over UDP (a simulation or a replay), and its
 * rate figures.
 *
 * Pacing keeps a deadline clock (frame f is due at start + (f + 1) / fps): a late frame is sent at
 * once and the schedule catches up, instead of every delay pushing all later frames back.
 * Unpaced, it yields to the event loop every 8 frames so that signals and log writes get through.
 * A progress line (frames/s, datagrams/s, MB/s since the last one) is logged once per interval.
 */
import { setTimeout as sleep, setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Logger } from '../../log.js';

export interface RateFigures {
  frames: number;
  datagrams: number;
  bytes: number;
  seconds: number;
  framesPerSecond: number;
  datagramsPerSecond: number;
  megabytesPerSecond: number;
}

export function rates(frames: number, datagrams: number, bytes: number, seconds: number): RateFigures {
  const s = Math.max(seconds, 1e-9);
  return {
    frames,
    datagrams,
    bytes,
    seconds,
    framesPerSecond: frames / s,
    datagramsPerSecond: datagrams / s,
    megabytesPerSecond: bytes / s / 1e6,
  };
}

export const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/** The rate figures as a log line shows them. */
export function rateLog(r: RateFigures) {
  return {
    frames: r.frames,
    fps: round(r.framesPerSecond),
    datagramsPerSecond: Math.round(r.datagramsPerSecond),
    MBps: round(r.megabytesPerSecond),
  };
}

export interface FramePacerOptions {
  /** frames per second; 0 = as fast as possible */
  fps: number;
  /** false: never sleep (no UDP output to pace) */
  paced?: boolean;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  log?: Logger;
}

export class FramePacer {
  private readonly start = performance.now();
  private readonly interval: number;
  private readonly paced: boolean;
  frames = 0;
  datagrams = 0;
  bytes = 0;
  private mark = { t: this.start, frames: 0, datagrams: 0, bytes: 0 };

  constructor(private readonly o: FramePacerOptions) {
    this.interval = o.progressIntervalMs ?? 1000;
    this.paced = (o.paced ?? true) && o.fps > 0;
  }

  /** Count one datagram handed to the outputs. */
  sent(bytes: number): void {
    this.datagrams++;
    this.bytes += bytes;
  }

  /**
   * Frame `f` (the f-th since the start) is out: wait until frame f + 1 is due, and log progress
   * (with `fields`) when an interval has passed.
   */
  async frameDone(f: number, fields: Record<string, unknown> = {}): Promise<void> {
    this.frames++;
    const now = performance.now();
    if (this.paced) {
      const due = this.start + ((f + 1) * 1000) / this.o.fps;
      // short naps, so that a stop request is seen even at very low frame rates
      for (let t = now; due > t + 1 && !this.o.signal?.aborted; t = performance.now()) await sleep(Math.min(due - t, 100));
    } else if ((f & 7) === 7) {
      await yieldToEventLoop();
    }
    if (now - this.mark.t >= this.interval) {
      const m = this.mark;
      this.o.log?.info({ frame: f, ...fields, ...rateLog(rates(this.frames - m.frames, this.datagrams - m.datagrams, this.bytes - m.bytes, (now - m.t) / 1000)) }, 'progress');
      this.mark = { t: now, frames: this.frames, datagrams: this.datagrams, bytes: this.bytes };
    }
  }

  /** Figures since the start. */
  totals(): RateFigures {
    return rates(this.frames, this.datagrams, this.bytes, (performance.now() - this.start) / 1000);
  }
}
