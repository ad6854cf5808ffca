/**
 * Keeps the stream at a rate this page can take. The merger sends latest-wins, one update at
 * a time per client, but a browser reads its socket eagerly even while the page is busy, so
 * big updates (a 1860 x 2048 float64 sum image is 30 MB) can still pile up inside the
 * browser. Every update carries the server's send time `t`: the smallest `now - t` seen is
 * the clock offset plus the bare transfer time, and anything above it is backlog. While the
 * backlog exceeds half a second the pacer subscribes again at half the rate (down to one a
 * second); after a few quiet seconds it asks for more again, up to the server's maximum.
 */
import type { AppliedUpdate, TesseraClient } from '../../client/tessera-client.js';

const SLOW_MS = 500;
const QUIET_MS = 150;
/** a change of rate costs a new snapshot: at most one per this long */
const MIN_CHANGE_INTERVAL_MS = 2000;
/** quiet time before asking for more */
const RAISE_AFTER_MS = 5000;
const MIN_RATE = 1;

export class StreamPacer {
  rate: number;
  /** backlog of the last update, ms */
  lagMs = 0;
  private baseline = Infinity;
  private lastChange = -Infinity;
  private quietSince: number | null = null;
  private readonly off: () => void;

  constructor(
    client: Pick<TesseraClient, 'on'>,
    private readonly maxRate: number,
    /** subscribe again at this rate */
    private readonly resubscribe: (rate: number) => void,
    private readonly onChange?: (rate: number) => void,
    /** the local wall clock, ms since 1970 (injectable for tests) */
    private readonly clock: () => number = Date.now,
  ) {
    this.rate = maxRate;
    this.off = client.on('update', (u) => this.observe(u));
  }

  stop(): void {
    this.off();
  }

  /** An update arrived (this pacer's stream, or another on the same page). */
  observe(u: Pick<AppliedUpdate, 't'>): void {
    const t = this.clock();
    const delay = t - u.t;
    this.baseline = Math.min(this.baseline, delay);
    this.lagMs = delay - this.baseline;
    if (this.lagMs > SLOW_MS) {
      this.quietSince = null;
      if (this.rate > MIN_RATE && t - this.lastChange > MIN_CHANGE_INTERVAL_MS) this.set(Math.max(MIN_RATE, Math.floor(this.rate / 2)), t);
    } else if (this.lagMs < QUIET_MS) {
      this.quietSince ??= t;
      if (this.rate < this.maxRate && t - this.quietSince > RAISE_AFTER_MS && t - this.lastChange > MIN_CHANGE_INTERVAL_MS) {
        this.set(Math.min(this.maxRate, this.rate * 2), t);
      }
    }
  }

  private set(rate: number, t: number): void {
    this.rate = rate;
    this.lastChange = t;
    this.quietSince = null;
    this.resubscribe(rate);
    this.onChange?.(rate);
  }
}
