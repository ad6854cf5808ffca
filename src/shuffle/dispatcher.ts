/**
 * `FrameDispatcher`: hands whole frames to workers by credit. A worker asks for n frames
 * (`credit`); a frame goes to the worker with the most credit left (ties: the one served
 * longest ago), or waits in a queue of at most `maxQueued` frames. When no worker has credit
 * and the queue is full, the frame is skipped and counted: memory stays bounded whatever the
 * workers' speed.
 *
 * `RateController` turns skips into a lower selection rate: after a window with skips it
 * doubles the decimation (the shuffle then appends a selection rule from a frame safely ahead,
 * see selection.ts), after `quietMs` without skips and with idle credit it halves it again.
 */

export interface DispatchFrame {
  /** anything the sender needs; released (dropped) when skipped */
  index: number;
}

export interface WorkerState {
  id: string;
  credits: number;
  lastSeen: number;
  lastServed: number;
  dispatched: number;
  /** silent for workerTimeoutMs: not served until it speaks again (its credit is kept) */
  gone: boolean;
  /** the frames it keeps asked for (its credit messages say), null if it never said */
  window: number | null;
}

export interface DispatcherCounters {
  offered: number;
  dispatched: number;
  skipped: number;
  queuedMax: number;
}

export class FrameDispatcher<F extends DispatchFrame> {
  readonly counters: DispatcherCounters = { offered: 0, dispatched: 0, skipped: 0, queuedMax: 0 };
  readonly workers = new Map<string, WorkerState>();
  private readonly queue: F[] = [];
  private serial = 0;

  constructor(
    private readonly o: {
      maxQueued: number;
      /** a worker silent this long is gone (its credit with it) */
      workerTimeoutMs: number;
      send: (worker: string, frame: F) => void;
      onSkip?: (frame: F) => void;
      now?: () => number;
    },
  ) {}

  private now(): number {
    return this.o.now ? this.o.now() : Date.now();
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Credit from a worker (n = 0: only a sign of life); `window`: the frames it keeps asked for, if it says. */
  credit(id: string, n: number, window?: number): void {
    let w = this.workers.get(id);
    if (!w) {
      w = { id, credits: 0, lastSeen: 0, lastServed: 0, dispatched: 0, gone: false, window: null };
      this.workers.set(id, w);
    }
    if (window !== undefined) w.window = window;
    w.gone = false;
    w.lastSeen = this.now();
    w.credits += n;
    this.drain();
  }

  /** Frames worker `id` has taken and not answered yet (its window less its credit left); null when it never said its window. */
  unanswered(id: string): number | null {
    const w = this.workers.get(id);
    return w && w.window !== null ? Math.max(0, w.window - w.credits) : null;
  }

  /** A worker whose connection is gone (a send to it failed): forgotten with its credit; it joins anew if it speaks again. */
  remove(id: string): boolean {
    return this.workers.delete(id);
  }

  /**
   * Workers silent for workerTimeoutMs are not served any more (a worker busy with a long frame
   * is silent too: it keeps its credit and is served again when it speaks); returns the ids
   * that went silent now.
   */
  expire(): string[] {
    const t = this.now();
    const gone: string[] = [];
    for (const w of this.workers.values()) {
      if (!w.gone && t - w.lastSeen > this.o.workerTimeoutMs) {
        w.gone = true;
        gone.push(w.id);
      }
    }
    return gone;
  }

  /** Workers not silent. */
  get live(): number {
    let n = 0;
    for (const w of this.workers.values()) if (!w.gone) n++;
    return n;
  }

  /** Credit not used: workers idle for lack of frames. */
  get idleCredits(): number {
    let n = 0;
    for (const w of this.workers.values()) if (!w.gone) n += w.credits;
    return n;
  }

  private pick(): WorkerState | null {
    let best: WorkerState | null = null;
    for (const w of this.workers.values()) {
      if (w.credits <= 0 || w.gone) continue;
      if (!best || w.credits > best.credits || (w.credits === best.credits && w.lastServed < best.lastServed)) best = w;
    }
    return best;
  }

  private give(w: WorkerState, f: F): void {
    w.credits--;
    w.lastServed = ++this.serial;
    w.dispatched++;
    this.counters.dispatched++;
    this.o.send(w.id, f);
  }

  private drain(): void {
    while (this.queue.length) {
      const w = this.pick();
      if (!w) return;
      this.give(w, this.queue.shift()!);
    }
  }

  offer(f: F): 'sent' | 'queued' | 'skipped' {
    this.counters.offered++;
    const w = this.queue.length === 0 ? this.pick() : null;
    if (w) {
      this.give(w, f);
      return 'sent';
    }
    if (this.queue.length < this.o.maxQueued) {
      this.queue.push(f);
      this.counters.queuedMax = Math.max(this.counters.queuedMax, this.queue.length);
      this.drain();
      return 'queued';
    }
    this.counters.skipped++;
    this.o.onSkip?.(f);
    return 'skipped';
  }

  /** A frame given to a worker that turned out to be gone: to another worker first, else queued (or skipped). */
  requeue(f: F): void {
    this.counters.dispatched--;
    const w = this.pick();
    if (w) return this.give(w, f);
    if (this.queue.length < this.o.maxQueued) {
      this.queue.unshift(f);
      this.counters.queuedMax = Math.max(this.counters.queuedMax, this.queue.length);
      return;
    }
    this.counters.skipped++;
    this.o.onSkip?.(f);
  }

  /** Drop what is queued (abort). */
  clear(): F[] {
    return this.queue.splice(0);
  }
}

export class RateController {
  decimate = 1;
  private windowStart: number;
  private skippedAtWindow = 0;
  private lastSkip = -Infinity;
  private lastChange: number;

  constructor(
    private readonly o: { windowMs: number; quietMs: number; maxDecimate: number; now?: () => number },
  ) {
    this.windowStart = this.lastChange = this.now();
  }

  private now(): number {
    return this.o.now ? this.o.now() : Date.now();
  }

  reset(): void {
    this.decimate = 1;
    this.windowStart = this.lastChange = this.now();
  }

  /**
   * Called periodically with the cumulative skip count and whether workers have idle credit;
   * returns the new decimation when it changes, else null.
   */
  update(skippedTotal: number, idle: boolean): number | null {
    const t = this.now();
    if (skippedTotal > this.skippedAtWindow) this.lastSkip = t;
    if (t - this.windowStart < this.o.windowMs) return null;
    const skipped = skippedTotal - this.skippedAtWindow;
    this.skippedAtWindow = skippedTotal;
    this.windowStart = t;
    if (skipped > 0 && this.decimate < this.o.maxDecimate) {
      this.decimate = Math.min(this.o.maxDecimate, this.decimate * 2);
      this.lastChange = t;
      return this.decimate;
    }
    if (skipped === 0 && idle && this.decimate > 1 && t - this.lastSkip >= this.o.quietMs && t - this.lastChange >= this.o.quietMs) {
      this.decimate = Math.max(1, this.decimate / 2);
      this.lastChange = t;
      return this.decimate;
    }
    return null;
  }
}
