/**
 * GET /metrics of a real merger (startMerger in process, real ZeroMQ sockets, eight fake
 * receivers that send heartbeats with known counters and partial results): the output is
 * valid Prometheus text format (parsed by a strict parser written here), and its figures
 * equal the independent sources: the counters the fake receivers sent, /api/status, the number
 * of partials and chunks the test sent, the WebSocket clients the test opened, /proc/self/fd;
 * the shuffle's series against /api/status with real `tessera shuffle` and `tessera worker`
 * processes (up, killed, restarted) and against a status with known figures.
 */
import { existsSync, readdirSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import { startMerger, type MergerProcess } from '../../src/merger/merger-process.js';
import { MergerMetrics, renderMetrics } from '../../src/merger/metrics.js';
import type { MergerStatus } from '../../src/merger/acquisition-schema.js';
import { CLI_PATH } from '../../src/paths.js';
import { computePartial, contextOf, FakeReceiver, freeTcpPort, liveConfig, waitUntil } from '../merger/live-helpers.js';
import { spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A strict parser of the text format: HELP and TYPE before a family's samples, valid names, labels and values. */
export function parsePrometheus(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      expect(helps.has(m[1]!), `HELP twice for ${m[1]}`).toBe(false);
      helps.add(m[1]!);
      continue;
    }
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram|untyped)$/.exec(line))) {
      expect(types.has(m[1]!), `TYPE twice for ${m[1]}`).toBe(false);
      types.set(m[1]!, m[2]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\n"])*",?)*)\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/.exec(line);
    expect(m, `not a sample line: ${line}`).not.toBeNull();
    const name = m![1]!;
    const family = [...types.keys()].find((f) => name === f || ((types.get(f) === 'summary' || types.get(f) === 'histogram') && (name === `${f}_sum` || name === `${f}_count` || name === `${f}_bucket`)));
    expect(family, `sample ${name} before its TYPE`).toBeDefined();
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    const raw = m![3]!;
    samples.push({ name, labels, value: raw === 'NaN' ? NaN : raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) });
  }
  return { samples, types };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  expect(hits.length, `${name} ${JSON.stringify(labels)}`).toBe(1);
  return hits[0]!.value;
}

const SCAN: [number, number] = [2, 8];
const CHUNK = 4;
const UDFS: AcquisitionRequest['udfs'] = [{ id: 'sum', name: 'SumUDF' }, { id: 'sumsig', name: 'SumSigUDF' }];
const FRAME = new Uint16Array(1860 * 2048).fill(3);

let merger: MergerProcess | null = null;
let receivers: FakeReceiver[] = [];
let sockets: WebSocket[] = [];
let roles: RoleProcess[] = [];

afterEach(async () => {
  await Promise.all(roles.map((r) => r.stop(5000).catch(() => r.kill())));
  roles = [];
  for (const s of sockets) s.terminate();
  sockets = [];
  for (const r of receivers) r.close();
  receivers = [];
  await merger?.close();
  merger = null;
});

async function scrape(url: string): Promise<Sample[]> {
  const r = await fetch(`${url}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toContain('text/plain');
  return parsePrometheus(await r.text()).samples;
}

describe('/metrics', () => {
  it('renders label values with quotes, backslashes and newlines escaped', () => {
    const text = renderMetrics([{ name: 'x_total', type: 'counter', help: 'a\nb', samples: [['', { reason: 'a"b\\c\nd' }, 3]] } as never]);
    expect(text).toBe('# HELP x_total a\\nb\n# TYPE x_total counter\nx_total{reason="a\\"b\\\\c\\nd"} 3\n');
    expect(parsePrometheus(text).samples[0]!.labels.reason).toBe('a"b\\c\nd');
  });

  it('per-sector counters, merge counters, latencies, queue depths and clients equal their sources', async () => {
    const { path } = await liveConfig({ merger: { chunkTimeoutMs: 60_000 } });
    merger = await startMerger({ config: loadConfig(path), log: createLogger('metrics-test', { level: 'silent' }), election: false, staticDir: null, statsIntervalMs: 0 });
    receivers = await Promise.all(Array.from({ length: 8 }, (_, s) => new FakeReceiver(s, merger!.link.controlEndpoint, merger!.link.resultsEndpoint)));
    // distinct counters per sector, so that a mix-up of sectors shows
    receivers.forEach((r, s) => (r.state.counters = { received: 1000 * (s + 1), blocksZeroFilled: s, duplicates: 2 * s, stragglers: 3 * s, 'rejected.sync': s, 'rejected.size': 1, framesDamaged: 5 * s, framesMissing: 1 }));
    await Promise.all(receivers.filter((_, s) => s !== 6).map((r) => r.connect()));
    const client = new TesseraClient({ url: merger.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    await waitUntil(async () => (await client.api.status()).sectors.filter((s) => s.state === 'alive').length === 7, 10_000, 'seven sectors alive');

    // an acquisition: every chunk from every live sector, except chunk 3, which sector 2 withholds
    const { id } = await client.api.define({ scanShape: SCAN, udfs: UDFS, chunkSize: CHUNK });
    await client.api.start(id);
    await waitUntil(() => receivers.filter((r, s) => s !== 6 && r.lastAcquire()?.acquisition === id).length === 7, 10_000, 'acquire at the receivers');
    const acquire = receivers[0]!.lastAcquire()!;
    const context = contextOf(acquire);
    let sent = 0;
    for (let chunk = 0; chunk < 4; chunk++) {
      for (let s = 0; s < 8; s++) {
        if (s === 6 || (chunk === 3 && s === 2)) continue;
        await receivers[s]!.sendPartial(computePartial(acquire, s, 0, chunk, () => FRAME, { context }));
        sent++;
      }
    }
    await waitUntil(async () => (await client.api.get(id)).progress.framesMerged === 3 * CHUNK, 20_000, 'three chunks merged');

    // WebSocket clients: two subscribed readers, one that only connects
    for (let k = 0; k < 3; k++) {
      const ws = new WebSocket(merger.server.wsUrl);
      sockets.push(ws);
      await new Promise((r) => ws.once('open', r));
      if (k < 2) ws.send((await import('../../src/protocol/ws-messages.js')).encodeMessage({ v: 1, type: 'subscribe', acquisition: 'current' } as never));
    }
    await waitUntil(() => merger!.server.stream.clientStats().filter((c) => c.subscribed).length === 2, 5000, 'two subscribed');

    const samples = await scrape(merger.url);
    const status = await client.api.status();
    for (const st of status.sectors) {
      const s = String(st.sector);
      expect(value(samples, 'tessera_sector_up', { sector: s })).toBe(st.sector === 6 ? 0 : 1);
      if (st.sector === 6) {
        expect(value(samples, 'tessera_sector_datagrams_total', { sector: s })).toBe(0);
        continue;
      }
      // the figures of the receiver's own counters, named as receivers/stats.ts names them
      const k = st.sector;
      expect(value(samples, 'tessera_sector_datagrams_total', { sector: s })).toBe(1000 * (k + 1));
      expect(value(samples, 'tessera_sector_blocks_lost_total', { sector: s })).toBe(k);
      expect(value(samples, 'tessera_sector_duplicates_total', { sector: s })).toBe(2 * k);
      expect(value(samples, 'tessera_sector_late_total', { sector: s })).toBe(3 * k);
      expect(value(samples, 'tessera_sector_corrupt_total', { sector: s })).toBe(k + 1);
      expect(value(samples, 'tessera_sector_damaged_frames_total', { sector: s })).toBe(5 * k + 1);
      // and equal to what /api/status shows
      expect(value(samples, 'tessera_sector_datagrams_total', { sector: s })).toBe(st.datagrams);
      expect(value(samples, 'tessera_sector_datagrams_per_second', { sector: s })).toBe(st.datagramsPerSecond);
    }
    expect(value(samples, 'tessera_acquisition_info', { acquisition: id, state: 'running', mode: 'single' })).toBe(1);
    expect(value(samples, 'tessera_acquisition_frames_merged_total')).toBe(status.acquisition!.progress.framesMerged);
    expect(value(samples, 'tessera_acquisition_frames_merged_total')).toBe(3 * CHUNK);
    expect(value(samples, 'tessera_link_partials_total')).toBe(sent);
    expect(value(samples, 'tessera_merge_partials_total')).toBe(sent);
    expect(value(samples, 'tessera_merge_chunks_total')).toBe(3);
    // chunk 3 waits for sector 2 (sector 6 is missing, not waited for)
    expect(value(samples, 'tessera_merge_pending_chunks')).toBe(1);
    expect(value(samples, 'tessera_merge_latency_seconds_count')).toBe(3);
    const p50 = value(samples, 'tessera_merge_latency_seconds', { quantile: '0.5' });
    const p99 = value(samples, 'tessera_merge_latency_seconds', { quantile: '0.99' });
    expect(p50).toBeGreaterThanOrEqual(0);
    expect(p99).toBeGreaterThanOrEqual(p50);
    expect(value(samples, 'tessera_merge_latency_seconds_sum')).toBeGreaterThanOrEqual(p50);
    expect(value(samples, 'tessera_ws_clients')).toBe(3);
    expect(value(samples, 'tessera_ws_clients_subscribed')).toBe(2);
    expect(value(samples, 'tessera_ws_connections_total')).toBe(3);
    expect(value(samples, 'tessera_ws_updates_total')).toBe(merger.server.stream.stats().updates);
    const fds = readdirSync('/proc/self/fd').length;
    expect(Math.abs(value(samples, 'process_open_fds') - fds)).toBeLessThanOrEqual(3);
    expect(value(samples, 'process_resident_memory_bytes')).toBeGreaterThan(10e6);

    // latencies are drained once: the next scrape counts the same three chunks, not six
    const again = await scrape(merger.url);
    expect(value(again, 'tessera_merge_latency_seconds_count')).toBe(3);
    // the withheld partial completes the chunk: the queue empties, one more latency
    await receivers[2]!.sendPartial(computePartial(acquire, 2, 0, 3, () => FRAME, { context }));
    await waitUntil(async () => (await client.api.get(id)).progress.framesMerged === 4 * CHUNK, 20_000, 'last chunk merged');
    const last = await scrape(merger.url);
    expect(value(last, 'tessera_merge_pending_chunks')).toBe(0);
    expect(value(last, 'tessera_merge_latency_seconds_count')).toBe(4);
    expect(value(last, 'tessera_merge_chunks_total')).toBe(4);
  }, 60_000);

  it('/metrics is a read: with a token configured it needs the viewer or control token', async () => {
    const control = 'control-token-0123456789abcdef';
    const { path } = await liveConfig({ merger: { http: { token: control } } });
    merger = await startMerger({ config: loadConfig(path), log: createLogger('metrics-test', { level: 'silent' }), election: false, staticDir: null, statsIntervalMs: 0 });
    expect((await fetch(`${merger.url}/metrics`)).status).toBe(401);
    const r = await fetch(`${merger.url}/metrics`, { headers: { authorization: `Bearer ${control}` } });
    expect(r.status).toBe(200);
    expect(parsePrometheus(await r.text()).samples.length).toBeGreaterThan(20);
  });
});

const SHUFFLE_NAMES = ['tessera_shuffle_up', 'tessera_shuffle_workers', 'tessera_shuffle_restarts_total', 'tessera_shuffle_frames_skipped_total', 'tessera_shuffle_frames_lost_in_workers_total'];

/** The shuffle's series of a scrape, checked against the status the merger gave right after it. */
function expectShuffleSeries(text: string, shuffle: NonNullable<MergerStatus['shuffle']>): void {
  const { samples, types } = parsePrometheus(text);
  expect(types.get('tessera_shuffle_up')).toBe('gauge');
  expect(types.get('tessera_shuffle_workers')).toBe('gauge');
  expect(types.get('tessera_shuffle_restarts_total')).toBe('counter');
  expect(types.get('tessera_shuffle_frames_skipped_total')).toBe('counter');
  expect(types.get('tessera_shuffle_frames_lost_in_workers_total')).toBe('counter');
  for (const name of SHUFFLE_NAMES) expect(text, `HELP of ${name}`).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
  expect(value(samples, 'tessera_shuffle_up')).toBe(shuffle.state === 'up' ? 1 : 0);
  expect(value(samples, 'tessera_shuffle_workers')).toBe(shuffle.workers);
  expect(value(samples, 'tessera_shuffle_restarts_total')).toBe(shuffle.restarts);
  expect(value(samples, 'tessera_shuffle_frames_skipped_total')).toBe(shuffle.framesSkipped);
  expect(value(samples, 'tessera_shuffle_frames_lost_in_workers_total')).toBe(shuffle.framesLostInWorkers);
}

describe('/metrics: the shuffle', () => {
  it('renders the figures of a status with known values; nothing when the shuffle is absent', async () => {
    const status: MergerStatus = { acquisition: null, sectors: [], shuffle: { state: 'missing', workers: 0, pid: 4321, restarts: 3, silentMs: 12_345, framesSkipped: 1234, framesLostInWorkers: 6 } };
    const metrics = new MergerMetrics({ status: () => status }, null);
    const { samples } = parsePrometheus(await metrics.scrape());
    expect(value(samples, 'tessera_shuffle_up')).toBe(0);
    expect(value(samples, 'tessera_shuffle_workers')).toBe(0);
    expect(value(samples, 'tessera_shuffle_restarts_total')).toBe(3);
    expect(value(samples, 'tessera_shuffle_frames_skipped_total')).toBe(1234);
    expect(value(samples, 'tessera_shuffle_frames_lost_in_workers_total')).toBe(6);
    status.shuffle = { state: 'up', workers: 5, pid: 4322, restarts: 4, silentMs: 100, framesSkipped: 7, framesLostInWorkers: 2 };
    const up = parsePrometheus(await metrics.scrape()).samples;
    expect(value(up, 'tessera_shuffle_up')).toBe(1);
    expect(value(up, 'tessera_shuffle_workers')).toBe(5);
    expect(value(up, 'tessera_shuffle_restarts_total')).toBe(4);
    expect(value(up, 'tessera_shuffle_frames_skipped_total')).toBe(7);
    expect(value(up, 'tessera_shuffle_frames_lost_in_workers_total')).toBe(2);
    // never answered, or no shuffle link at all: no series (and no HELP/TYPE) for it
    for (const shuffle of [{ state: 'absent' as const, workers: 0, pid: null, restarts: 0, silentMs: null, framesSkipped: 0 }, null, undefined]) {
      status.shuffle = shuffle;
      const text = await metrics.scrape();
      expect(parsePrometheus(text).samples.some((x) => x.name.startsWith('tessera_shuffle_'))).toBe(false);
      expect(text).not.toContain('tessera_shuffle_');
    }
  });

  it.skipIf(!existsSync(CLI_PATH))('absent, up with two workers, killed, restarted: the series equal /api/status', async () => {
    const { path } = await liveConfig({ shuffle: { slices: `tcp://127.0.0.1:${await freeTcpPort()}`, frames: `tcp://127.0.0.1:${await freeTcpPort()}` } });
    merger = await startMerger({ config: loadConfig(path), log: createLogger('metrics-test', { level: 'silent' }), election: false, staticDir: null, statsIntervalMs: 0 });
    const client = new TesseraClient({ url: merger.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    const shuffleState = async () => (await client.api.status()).shuffle!;
    const spawn = (name: string, args: string[]) => {
      const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
      roles.push(r);
      return r;
    };
    // scrape, then status: equal unless the shuffle changed in between (then once more)
    const scrapeMatches = async () => {
      for (let attempt = 0; ; attempt++) {
        const text = await (await fetch(`${merger!.url}/metrics`)).text();
        const st = await shuffleState();
        try {
          expectShuffleSeries(text, st);
          return st;
        } catch (err) {
          if (attempt >= 2) throw err;
        }
      }
    };

    // no shuffle answered yet: none of its series
    expect((await shuffleState()).state).toBe('absent');
    expect(await (await fetch(`${merger.url}/metrics`)).text()).not.toContain('tessera_shuffle_');

    const first = spawn('shuffle-0', ['shuffle', '-c', path]);
    await first.waitForMsg('shuffle listening', 30_000);
    for (let w = 0; w < 2; w++) spawn(`worker-${w}`, ['worker', '-c', path]);
    await waitUntil(async () => (await shuffleState()).workers === 2, 30_000, 'the shuffle up with two workers');
    let st = await scrapeMatches();
    expect(st).toMatchObject({ state: 'up', workers: 2, restarts: 0, pid: first.child.pid });

    first.kill();
    await waitUntil(async () => (await shuffleState()).state === 'missing', 15_000, 'the shuffle missing');
    st = await scrapeMatches();
    expect(st).toMatchObject({ state: 'missing', workers: 0, restarts: 0 });

    const second = spawn('shuffle-1', ['shuffle', '-c', path]);
    await waitUntil(async () => {
      const s = await shuffleState();
      return s.state === 'up' && s.pid === second.child.pid && s.workers === 2;
    }, 30_000, 'the restarted shuffle up with the two workers back');
    st = await scrapeMatches();
    expect(st).toMatchObject({ state: 'up', workers: 2, restarts: 1 });
    await client.close();
  }, 90_000);
});
