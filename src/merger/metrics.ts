/**
 * `GET /metrics`: the merger's figures in the Prometheus text exposition format (0.0.4), for a
 * scraper next to the microscope: per-sector receiver counters and rates (from heartbeats),
 * the shuffle's state, workers, restarts and skipped frames (once a shuffle answered), merge
 * counters, latencies and queue depths, the WebSocket clients and their backlog, the
 * recorder's lag, and the process's own memory and open files.
 *
 * Everything is read from the merger's state at scrape time (nothing is counted twice); only
 * merge latencies are collected between scrapes (drained from the merger core) into a window
 * of the last LATENCY_WINDOW values for the quantiles, plus a cumulative sum and count.
 */
import { readdirSync } from 'node:fs';
import type { FastifyPluginAsync } from 'fastify';
import type { MergerStatus } from './acquisition-schema.js';
import type { LinkCounters } from './receiver-link.js';
import type { LiveStream } from './ws-stream.js';

export interface MetricsSources {
  status(): MergerStatus | Promise<MergerStatus>;
  /** AcquisitionManager.counters(): `merge` (ChunkMerger counters) and `stalePartials` */
  counters?(): Record<string, unknown>;
  /** merge latencies (ms) since the last call, and chunks waiting for sectors */
  takeMergeFigures?(): { latenciesMs: number[]; pendingChunks: number };
  link?(): LinkCounters;
}

export const LATENCY_WINDOW = 4096;
const QUANTILES = [0.5, 0.9, 0.99] as const;

type Labels = Record<string, string | number>;

/** One metric family: HELP, TYPE and its samples. */
class Family {
  readonly samples: Array<[string, Labels, number]> = [];
  constructor(
    readonly name: string,
    readonly type: 'counter' | 'gauge' | 'summary',
    readonly help: string,
  ) {}
  add(value: number, labels: Labels = {}, suffix = ''): this {
    this.samples.push([suffix, labels, value]);
    return this;
  }
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const formatValue = (v: number): string => (Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v));

/** Render families in the text format. */
export function renderMetrics(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    out.push(`# TYPE ${f.name} ${f.type}`);
    for (const [suffix, labels, value] of f.samples) {
      const l = Object.entries(labels);
      const ls = l.length ? `{${l.map(([k, v]) => `${k}="${escapeLabel(String(v))}"`).join(',')}}` : '';
      out.push(`${f.name}${suffix}${ls} ${formatValue(value)}`);
    }
  }
  return out.join('\n') + '\n';
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function openFileDescriptors(): number | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return null;
  }
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** Collects what /metrics shows; `scrape()` renders it. */
export class MergerMetrics {
  private readonly window: number[] = [];
  private latencySumMs = 0;
  private latencyCount = 0;

  constructor(
    private readonly sources: MetricsSources,
    private readonly stream: LiveStream | null,
  ) {}

  private takeLatencies(): number {
    const figures = this.sources.takeMergeFigures?.();
    if (!figures) return 0;
    for (const ms of figures.latenciesMs) {
      this.latencySumMs += ms;
      this.latencyCount++;
      this.window.push(ms);
    }
    if (this.window.length > LATENCY_WINDOW) this.window.splice(0, this.window.length - LATENCY_WINDOW);
    return figures.pendingChunks;
  }

  async scrape(): Promise<string> {
    const status = await this.sources.status();
    const pendingChunks = this.takeLatencies();
    const families: Family[] = [];
    const family = (name: string, type: Family['type'], help: string) => {
      const f = new Family(name, type, help);
      families.push(f);
      return f;
    };

    // receivers, one series per sector (figures of the last heartbeat)
    const up = family('tessera_sector_up', 'gauge', 'Whether the sector receiver sends heartbeats (1 alive, 0 missing or never heard)');
    const per: Array<[keyof MergerStatus['sectors'][number], string, Family['type'], string]> = [
      ['datagrams', 'tessera_sector_datagrams_total', 'counter', 'Datagrams received by the sector receiver'],
      ['datagramsPerSecond', 'tessera_sector_datagrams_per_second', 'gauge', 'Datagram rate of the sector receiver (over >= 1 s of heartbeats)'],
      ['lost', 'tessera_sector_blocks_lost_total', 'counter', 'Blocks zero-filled because they never arrived'],
      ['duplicates', 'tessera_sector_duplicates_total', 'counter', 'Duplicate blocks dropped'],
      ['late', 'tessera_sector_late_total', 'counter', 'Blocks that arrived after their frame was handed on'],
      ['corrupt', 'tessera_sector_corrupt_total', 'counter', 'Datagrams rejected as malformed'],
      ['damagedFrames', 'tessera_sector_damaged_frames_total', 'counter', 'Frames of the sector with at least one missing block'],
    ];
    const perFamilies = per.map(([, name, type, help]) => family(name, type, help));
    for (const s of status.sectors) {
      up.add(s.state === 'alive' ? 1 : 0, { sector: s.sector });
      per.forEach(([key], i) => perFamilies[i]!.add(num(s[key]), { sector: s.sector }));
    }

    // the current acquisition
    const a = status.acquisition;
    const info = family('tessera_acquisition_info', 'gauge', 'The current acquisition (value 1; id, state and mode as labels)');
    const merged = family('tessera_acquisition_frames_merged_total', 'counter', 'Frames merged in the current acquisition (all epochs)');
    const fps = family('tessera_acquisition_frames_per_second', 'gauge', 'Merge rate of the current acquisition');
    const epoch = family('tessera_acquisition_epoch', 'gauge', 'Newest epoch (scan repetition) of the current acquisition');
    if (a) {
      info.add(1, { acquisition: a.id, state: a.state, mode: a.mode });
      merged.add(a.progress.framesMerged);
      fps.add(a.progress.framesPerSecond);
      epoch.add(a.epoch);
      const rec = (a as { record?: { enabled?: boolean; lagMs?: number; bytes?: number; state?: string } }).record;
      if (rec && rec.enabled && typeof rec.lagMs === 'number') {
        family('tessera_recorder_lag_seconds', 'gauge', 'Age of the oldest merged result not yet in the recording').add(rec.lagMs / 1000);
        family('tessera_recorder_bytes_total', 'counter', 'Bytes written to the recording').add(num(rec.bytes));
      }
    }

    // the shuffle of the whole-frame UDFs: no series where it never answered (not deployed)
    const sh = status.shuffle;
    if (sh && sh.state !== 'absent') {
      family('tessera_shuffle_up', 'gauge', 'Whether the shuffle service sends its status (1 up, 0 silent for 2 s: missing)').add(sh.state === 'up' ? 1 : 0);
      family('tessera_shuffle_workers', 'gauge', 'Frame workers the shuffle serves (0 while it is missing)').add(num(sh.workers));
      family('tessera_shuffle_restarts_total', 'counter', 'Times another shuffle process answered the merger (restarts)').add(num(sh.restarts));
      family('tessera_shuffle_frames_skipped_total', 'counter', 'Frames the shuffle skipped for want of a free worker, as its last status said (starts over with a new shuffle process)').add(num(sh.framesSkipped));
      family('tessera_shuffle_frames_lost_in_workers_total', 'counter', 'Frames workers had taken and never answered when their connection went (a killed worker, or one whose host stopped answering heartbeats), as the shuffle\'s last status said').add(num(sh.framesLostInWorkers));
    }

    // merging
    const counters = this.sources.counters?.() ?? {};
    const m = (counters.merge ?? {}) as Record<string, unknown>;
    family('tessera_merge_partials_total', 'counter', 'Partial results merged (current acquisition)').add(num(m.partialsMerged));
    family('tessera_merge_chunks_total', 'counter', 'Chunks merged (current acquisition)').add(num(m.chunksMerged));
    family('tessera_merge_sectors_filled_total', 'counter', 'Sector partials zero-filled because the sector was missing (current acquisition)').add(num(m.sectorsFilled));
    const mergeDropped = family('tessera_merge_dropped_total', 'counter', 'Partial results the merger dropped, by reason (current acquisition)');
    for (const [reason, n] of Object.entries((m.dropped ?? {}) as Record<string, number>)) mergeDropped.add(num(n), { reason });
    family('tessera_merge_stale_partials_total', 'counter', 'Partial results for an acquisition that is no longer current').add(num(counters.stalePartials));
    family('tessera_merge_pending_chunks', 'gauge', 'Chunks with partials that wait for other sectors').add(pendingChunks);
    const lat = family('tessera_merge_latency_seconds', 'summary', `Partial sent by the receiver to chunk merged (receiver clock to merger clock), quantiles over the last ${LATENCY_WINDOW} chunks`);
    const sorted = [...this.window].sort((x, y) => x - y);
    for (const q of QUANTILES) lat.add(quantile(sorted, q) / 1000, { quantile: q });
    lat.add(this.latencySumMs / 1000, {}, '_sum');
    lat.add(this.latencyCount, {}, '_count');

    // the receivers' link
    const link = this.sources.link?.();
    if (link) {
      family('tessera_link_control_messages_total', 'counter', 'Control messages received from receivers').add(link.controlMessages);
      family('tessera_link_partials_total', 'counter', 'Partial results received').add(link.partials);
      family('tessera_link_partial_bytes_total', 'counter', 'Bytes of partial results received').add(link.partialBytes);
      family('tessera_link_sent_total', 'counter', 'Control messages sent to receivers').add(link.sent);
      family('tessera_link_unroutable_total', 'counter', 'Control messages to receivers that were not connected').add(link.unroutable);
      const dropped = family('tessera_link_dropped_total', 'counter', 'Messages from receivers dropped as malformed, by reason');
      for (const [reason, n] of Object.entries(link.dropped)) dropped.add(n, { reason });
    }

    // WebSocket clients
    if (this.stream) {
      const st = this.stream.stats();
      const clients = this.stream.clientStats();
      family('tessera_ws_clients', 'gauge', 'WebSocket clients connected').add(st.clients);
      family('tessera_ws_clients_subscribed', 'gauge', 'WebSocket clients with a subscription').add(clients.filter((c) => c.subscribed !== null).length);
      family('tessera_ws_clients_waiting', 'gauge', 'Clients with an update not yet written out (slow readers)').add(clients.filter((c) => c.inFlightMs !== null).length);
      family('tessera_ws_buffered_bytes', 'gauge', 'Bytes queued in the WebSocket send buffers, all clients').add(clients.reduce((s, c) => s + c.bufferedAmount, 0));
      family('tessera_ws_max_buffered_bytes', 'gauge', 'Largest send buffer of one client now').add(clients.reduce((s, c) => Math.max(s, c.bufferedAmount), 0));
      family('tessera_ws_connections_total', 'counter', 'WebSocket connections accepted').add(st.connections);
      family('tessera_ws_updates_total', 'counter', 'Updates sent').add(st.updates);
      family('tessera_ws_bytes_total', 'counter', 'Bytes of updates sent').add(st.bytes);
      family('tessera_ws_bad_messages_total', 'counter', 'Malformed client messages').add(st.badMessages);
      family('tessera_ws_closed_slow_total', 'counter', 'Clients closed for reading nothing').add(st.closedSlow);
      family('tessera_ws_dropped_control_total', 'counter', 'Replies dropped while a client was not reading').add(st.droppedControl);
    }

    // the process
    const mem = process.memoryUsage();
    family('process_resident_memory_bytes', 'gauge', 'Resident memory size').add(mem.rss);
    family('nodejs_heap_used_bytes', 'gauge', 'V8 heap used').add(mem.heapUsed);
    family('nodejs_external_memory_bytes', 'gauge', 'Memory of buffers and typed arrays outside the V8 heap').add(mem.external + mem.arrayBuffers);
    const fds = openFileDescriptors();
    if (fds !== null) family('process_open_fds', 'gauge', 'Open file descriptors').add(fds);
    family('process_uptime_seconds', 'gauge', 'Seconds since the process started').add(Math.round(process.uptime()));
    return renderMetrics(families);
  }
}

export interface MetricsPluginOptions {
  metrics: MergerMetrics;
}

/** Fastify plugin: GET /metrics. */
export const metricsPlugin: FastifyPluginAsync<MetricsPluginOptions> = async (fastify, { metrics }) => {
  fastify.get('/metrics', async (_request, reply) => reply.type('text/plain; version=0.0.4; charset=utf-8').send(await metrics.scrape()));
};
