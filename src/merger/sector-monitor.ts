/**
 * `SectorMonitor`: what the merger knows about each sector's receiver, from its heartbeats:
 * alive (a heartbeat within LIVENESS_MS), missing (none since), or unknown (never heard);
 * its ShutterSync phase and position in the detector acquisition (for start points and
 * parameter changes), and its counters as the `SectorStatus` the API and the stream show,
 * with the datagram rate computed between heartbeats.
 */
import type { Logger } from '../log.js';
import { LIVENESS_MS, type HeartbeatMessage } from '../protocol/live.js';
import type { SectorState, SectorStatus } from '../protocol/ws-messages.js';

export interface SectorView {
  sector: number;
  state: SectorState;
  /** the last heartbeat, or null */
  last: HeartbeatMessage | null;
  /** merger clock of the last heartbeat */
  lastSeen: number;
  /** frames/s of the detector acquisition, from lastIndex between heartbeats (0 if unknown) */
  framesPerSecond: number;
  status: SectorStatus;
}

export interface SectorMonitorOptions {
  sectors: number;
  livenessMs?: number;
  /** how often liveness is checked (default 100 ms) */
  checkMs?: number;
  log?: Logger;
  /** a sector changed state (alive/missing), or its first heartbeat arrived */
  onState?: (view: SectorView, previous: SectorState) => void;
  /** after every heartbeat */
  onHeartbeat?: (view: SectorView) => void;
  now?: () => number;
}

const n = (c: Record<string, number>, k: string): number => c[k] ?? 0;

/** SectorStatus from a receiver's counters (receivers/stats.ts names, flattened). */
export function statusFromCounters(sector: number, state: SectorState, c: Record<string, number>, datagramsPerSecond: number): SectorStatus {
  let corrupt = n(c, 'rejected');
  if (!('rejected' in c)) for (const [k, v] of Object.entries(c)) if (k.startsWith('rejected.')) corrupt += v;
  return {
    sector,
    state,
    datagrams: n(c, 'received'),
    datagramsPerSecond,
    lost: n(c, 'blocksZeroFilled'),
    duplicates: n(c, 'duplicates'),
    late: n(c, 'stragglers'),
    corrupt,
    damagedFrames: n(c, 'framesDamaged') + n(c, 'framesMissing'),
  };
}

export class SectorMonitor {
  private readonly views: SectorView[];
  private readonly timer: NodeJS.Timeout;
  private readonly livenessMs: number;
  private readonly now: () => number;
  private lastCheck = 0;
  private skipped = false;
  private readonly anchors: Array<HeartbeatMessage | undefined> = [];

  constructor(private readonly o: SectorMonitorOptions) {
    this.livenessMs = o.livenessMs ?? LIVENESS_MS;
    this.now = o.now ?? Date.now;
    this.views = Array.from({ length: o.sectors }, (_, sector) => ({
      sector,
      state: 'unknown' as SectorState,
      last: null,
      lastSeen: 0,
      framesPerSecond: 0,
      status: statusFromCounters(sector, 'unknown', {}, 0),
    }));
    this.lastCheck = this.now();
    this.timer = setInterval(() => this.check(), o.checkMs ?? 100);
    this.timer.unref();
  }

  heartbeat(h: HeartbeatMessage): void {
    const v = this.views[h.sector];
    if (!v) return;
    const t = this.now();
    const prev = v.last;
    let rate = v.status.datagramsPerSecond;
    // rates over at least a second of the receiver's own clock (heartbeats can arrive bunched)
    const anchor = this.anchors[h.sector];
    if (!anchor || prev?.pid !== h.pid || h.sentAt < anchor.sentAt) this.anchors[h.sector] = h;
    else if (h.sentAt - anchor.sentAt >= 1000) {
      const dt = (h.sentAt - anchor.sentAt) / 1000;
      const dd = n(h.counters, 'received') - n(anchor.counters, 'received');
      rate = dd >= 0 ? Math.round(dd / dt) : 0;
      if (h.lastIndex !== null && anchor.lastIndex !== null && h.shutterRound === anchor.shutterRound && h.lastIndex >= anchor.lastIndex) {
        v.framesPerSecond = (h.lastIndex - anchor.lastIndex) / dt;
      } else v.framesPerSecond = 0;
      this.anchors[h.sector] = h;
    }
    if (h.lastIndex === null) v.framesPerSecond = 0;
    if (prev && prev.pid !== h.pid) this.o.log?.info({ sector: h.sector, pid: h.pid, previousPid: prev.pid }, 'receiver restarted');
    v.last = h;
    v.lastSeen = t;
    const previous = v.state;
    v.state = 'alive';
    v.status = statusFromCounters(h.sector, 'alive', h.counters, rate);
    if (previous !== 'alive') {
      this.o.log?.info({ sector: h.sector, pid: h.pid, previous }, 'sector alive');
      this.o.onState?.(v, previous);
    }
    this.o.onHeartbeat?.(v);
  }

  /** Any other message from the sector (a partial result) also shows it is alive. */
  seen(sector: number): void {
    const v = this.views[sector];
    if (v && v.state === 'alive') v.lastSeen = Math.max(v.lastSeen, this.now());
  }

  private check(): void {
    const t = this.now();
    const late = t - this.lastCheck - (this.o.checkMs ?? 100);
    this.lastCheck = t;
    // this process was busy (a long merge, GC): heartbeats may be waiting in the socket; read
    // them first (once: a process that is always late still reports missing sectors)
    if (late > 500 && !this.skipped) {
      this.skipped = true;
      return;
    }
    this.skipped = false;
    for (const v of this.views) {
      if (v.state === 'alive' && t - v.lastSeen > this.livenessMs) {
        v.state = 'missing';
        v.status = { ...v.status, state: 'missing', datagramsPerSecond: 0 };
        v.framesPerSecond = 0;
        this.o.log?.warn({ sector: v.sector, silentMs: t - v.lastSeen }, 'sector missing: no heartbeat');
        this.o.onState?.(v, 'alive');
      }
    }
  }

  view(sector: number): SectorView {
    return this.views[sector]!;
  }

  all(): SectorView[] {
    return this.views;
  }

  alive(): SectorView[] {
    return this.views.filter((v) => v.state === 'alive');
  }

  statuses(): SectorStatus[] {
    return this.views.map((v) => ({ ...v.status }));
  }

  close(): void {
    clearInterval(this.timer);
  }
}
