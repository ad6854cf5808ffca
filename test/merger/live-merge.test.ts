/**
 * The merger process's core over real sockets: an in-process merger (ReceiverLink on real
 * ZeroMQ ROUTER/PULL sockets, HTTP + WebSocket on loopback) with eight fake receivers (real
 * DEALER/PUSH sockets) that send partial results computed by PartitionTask over the sector
 * slices of simulator frames. References: runUdf offline over the same frames in one process
 * (a MemoryDataSet), with the sectors the merger had to fill in zeroed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraApiError, TesseraClient, type LiveMirror, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { loadConfig } from '../../src/config.js';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import { createLogger } from '../../src/log.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import { startMerger, type MergerProcess } from '../../src/merger/merger-process.js';
import { encodeLive, LIVE_PROTOCOL_VERSION, LIVENESS_MS, type AcquireMessage, type ParamsMessage, type PartialMessage, type StopMessage } from '../../src/protocol/live.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { computePartial, contextOf, FakeReceiver, liveConfig, SIG, waitUntil } from './live-helpers.js';

const SCAN: [number, number] = [2, 8];
const N = SCAN[0] * SCAN[1];
const CHUNK = 4;
const FRAME = FRAME_HEIGHT * FRAME_WIDTH;

const UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sum', name: 'SumUDF' },
  { id: 'sumsig', name: 'SumSigUDF' },
  {
    id: 'masks',
    name: 'ApplyMasksUDF',
    params: { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 60 }, { type: 'ring', cy: 930, cx: 1024, ri: 100, ro: 700 }] },
  },
  { id: 'com', name: 'CoMUDF', params: { cy: 930, cx: 1024, r: 80 } },
];

let frames: Uint16Array[] = [];
/** partials[sector][chunk] over the true frames, computed once: the fake receivers' heartbeats must not wait for this work */
let partials: PartialMessage[][] = [];
const TEMPLATE: AcquireMessage = {
  version: LIVE_PROTOCOL_VERSION,
  type: 'acquire',
  acquisition: 'template',
  scanShape: SCAN,
  roi: null,
  udfs: UDFS.map((u) => ({ id: u.id!, name: u.name, params: u.params ?? {} })),
  chunkSize: CHUNK,
  mode: 'single',
  start: null,
};

/** The precomputed partial of (sector, chunk) for acquisition `id` (a fresh copy). */
function partialOf(id: string, sector: number, chunk: number, damage?: Uint32Array): PartialMessage {
  const p = partials[sector]![chunk]!;
  return { ...p, acquisition: id, damage: damage ?? p.damage, sentAt: Date.now() };
}
let merger: MergerProcess | null = null;
let receivers: FakeReceiver[] = [];
let clients: TesseraClient[] = [];

beforeAll(() => {
  const scan = new SimulatedScan({ scanShape: SCAN, seed: 7 });
  frames = Array.from({ length: N }, (_, i) => scan.frame(i));
  const context = contextOf(TEMPLATE);
  partials = Array.from({ length: 8 }, (_, s) => Array.from({ length: N / CHUNK }, (_, c) => computePartial(TEMPLATE, s, 0, c, (i) => frames[i]!, { context })));
}, 60_000);

/**
 * `livenessMs`: the fake receivers share this process with the merger and the test's own work,
 * so on a loaded machine their heartbeats can be late by seconds; tests that are not about
 * liveness give them more room (the liveness test uses the real LIVENESS_MS).
 */
async function setUp(overlay: { merger?: Record<string, unknown> } = {}, livenessMs = 10_000): Promise<{ merger: MergerProcess; receivers: FakeReceiver[]; client: TesseraClient }> {
  // sending megabytes of partials from this one process can take seconds on a loaded machine:
  // only the timeout test waits for the chunk timeout
  const { path } = await liveConfig({ merger: { chunkTimeoutMs: 15_000, ...overlay.merger } });
  merger = await startMerger({ config: loadConfig(path), log: createLogger('merger-test', { level: process.env.LIVE_TEST_LOG ?? 'silent' }), election: false, staticDir: null, statsIntervalMs: 0, livenessMs });
  receivers = await Promise.all(Array.from({ length: 8 }, (_, s) => new FakeReceiver(s, merger!.link.controlEndpoint, merger!.link.resultsEndpoint).connect()));
  const client = new TesseraClient({ url: merger.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  clients.push(client);
  await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 5000, 'all sectors alive');
  return { merger, receivers, client };
}

afterEach(async () => {
  for (const c of clients) await c.close().catch(() => {});
  clients = [];
  for (const r of receivers) r.close();
  receivers = [];
  await merger?.close();
  merger = null;
});

afterAll(() => {
  frames = [];
});

/** Offline reference over the frames, with (sector, position) slices zeroed where `zeroed` says. */
async function offline(zeroed: (sector: number, position: number) => boolean = () => false): Promise<UDFResults[]> {
  const data = new Uint16Array(N * FRAME);
  frames.forEach((f, i) => {
    data.set(f, i * FRAME);
    for (let s = 0; s < 8; s++) {
      if (!zeroed(s, i)) continue;
      for (let y = 0; y < FRAME_HEIGHT; y++) data.fill(0, i * FRAME + y * FRAME_WIDTH + s * SECTOR_WIDTH, i * FRAME + y * FRAME_WIDTH + (s + 1) * SECTOR_WIDTH);
    }
  });
  const udfs = UDFS.map((u) => createUdf({ name: u.name, params: u.params ?? {} }));
  return runUdf(new MemoryDataSet({ data, navShape: SCAN, sigShape: SIG }), udfs);
}

function expectSame(actual: ArrayLike<number> | undefined, expected: ArrayLike<number>, what: string): void {
  expect(actual, what).toBeDefined();
  expect(actual!.length, what).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual![i], expected[i])) throw new Error(`${what}[${i}] = ${actual![i]}, expected ${expected[i]}`);
  }
}

function expectClose(actual: ArrayLike<number> | undefined, expected: ArrayLike<number>, what: string): void {
  expect(actual!.length, what).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual![i]!;
    const e = expected[i]!;
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!(Math.abs(a - e) <= 1e-9 * Math.max(1, Math.abs(e)))) throw new Error(`${what}[${i}] = ${a}, expected ${e}`);
  }
}

/** Every result of the mirror equals the offline one: integer sums bit for bit, CoM within float tolerance. */
function expectResults(mirror: LiveMirror, reference: UDFResults[]): void {
  UDFS.forEach((u, i) => {
    for (const [name, r] of Object.entries(reference[i]!)) {
      const got = mirror.get(u.id!, name)?.data as ArrayLike<number> | undefined;
      if (u.id === 'com') expectClose(got, r.data, `${u.id}/${name}`);
      else expectSame(got, r.data, `${u.id}/${name}`);
    }
  });
}

async function defineAndStart(client: TesseraClient, request: Partial<AcquisitionRequest> = {}): Promise<string> {
  const summary = await client.api.define({ scanShape: SCAN, udfs: UDFS, chunkSize: CHUNK, ...request });
  expect(summary.state).toBe('defined');
  const started = await client.api.start(summary.id);
  expect(started.state).toBe('running');
  return summary.id;
}

async function acquireOf(rx: FakeReceiver[], id: string): Promise<AcquireMessage> {
  await waitUntil(() => rx.every((r) => r.lastAcquire()?.acquisition === id), 5000, 'acquire at every receiver');
  return rx[0]!.lastAcquire()!;
}

async function follow(client: TesseraClient, id: string, state = 'done'): Promise<LiveMirror> {
  await client.connect();
  client.subscribe({ acquisition: id });
  return client.waitFor((m) => m.acquisition === id && m.state?.state === state, 20_000);
}

describe('merger with fake receivers over real ZeroMQ sockets', () => {
  it('merges 8 sector partials per chunk into the offline result, bit-exact for integer sums; duplicates and bad messages are counted drops', async () => {
    const { merger, receivers: rx, client } = await setUp();
    const id = await defineAndStart(client);
    const acquire = await acquireOf(rx, id);
    expect(acquire).toMatchObject({ scanShape: SCAN, chunkSize: CHUNK, mode: 'single', start: null });
    expect(acquire.udfs.map((u) => u.id)).toEqual(UDFS.map((u) => u.id));
    await waitUntil(() => merger.manager.counters().acquisition === id, 1000, 'current');

    // garbage on both sockets, before and between the real partials
    const r0 = rx[0]!;
    await r0.sendControl(Buffer.from('not msgpack at all \xff\xfe'));
    await r0.sendControl(encodeLive({ ...r0.heartbeatMessage(), sector: 3 })); // routing id of sector 0
    await r0.sendControl(Buffer.from([0x81, 0xa1, 0x76, 0x63]), Buffer.from('x')); // two frames
    await r0.sendResults(Buffer.from('garbage'));
    await r0.sendResults(Buffer.from([0x82, 0xa7, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x63, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa7, 0x70, 0x61, 0x72, 0x74, 0x69, 0x61, 0x6c])); // version 99
    await r0.sendResults(encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'heartbeat' } as never));
    const good = partialOf(id, 1, 0);
    const wrongDtype = structuredClone(good);
    wrongDtype.udfs[0]!.buffers.intensity!.dtype = 'float32';
    const wrongSize = structuredClone(good);
    wrongSize.udfs[1]!.buffers.intensity!.data = wrongSize.udfs[1]!.buffers.intensity!.data.subarray(8);
    const wrongSlice = { ...good, sig: { origin: [0, 512] as [number, number], shape: good.sig.shape } };
    const wrongRange = { ...good, navEnd: good.navEnd + 1, damage: new Uint32Array(good.navEnd + 1 - good.navStart) };
    const wrongUdf = { ...good, udfs: [good.udfs[1]!, good.udfs[0]!, ...good.udfs.slice(2)] };
    const otherAcq = { ...good, acquisition: 'acq-other' };
    for (const bad of [wrongDtype, wrongSize, wrongSlice, wrongRange, wrongUdf, otherAcq]) await r0.sendPartial(bad);

    // every sector's partials, chunks in a shuffled order per sector, one duplicate
    const chunks = Math.ceil(N / CHUNK);
    const sends: Array<[number, number]> = [];
    for (let s = 0; s < 8; s++) for (let c = 0; c < chunks; c++) sends.push([s, c]);
    sends.sort((a, b) => ((a[0] * 7 + a[1] * 13) % 11) - ((b[0] * 7 + b[1] * 13) % 11));
    for (const [s, c] of sends) await rx[s]!.sendPartial(partialOf(id, s, c));
    await rx[1]!.sendPartial(good);

    const mirror = await follow(client, id);
    expectResults(mirror, await offline());
    expect([...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)]).toEqual(new Array(N).fill(8));
    expect([...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)]).toEqual(new Array(N).fill(0));
    expect(mirror.progress).toMatchObject({ framesMerged: N, framesTotal: N });

    const counters = merger.manager.counters() as { merge: { dropped: Record<string, number>; chunksMerged: number; sectorsFilled: number }; stalePartials: number };
    expect(counters.merge.chunksMerged).toBe(chunks);
    expect(counters.merge.sectorsFilled).toBe(0);
    expect(counters.stalePartials).toBe(1);
    const dropped = counters.merge.dropped;
    expect(dropped).toMatchObject({ buffers: 1, slice: 1, range: 1, udfs: 1 });
    expect((dropped.TESSERA_ERR_UDF_RESULTS ?? 0) + (dropped.late ?? 0) + (dropped.duplicate ?? 0)).toBe(2); // wrong size, and the duplicate
    expect(merger.link.counters.dropped.TESSERA_ERR_BAD_MESSAGE).toBe(5);
    expect(merger.link.counters.dropped.TESSERA_ERR_PROTOCOL_VERSION).toBe(1);
    const summary = await client.api.get(id);
    expect(summary).toMatchObject({ state: 'done', progress: { framesMerged: N, framesTotal: N } });
  }, 60_000);

  it('reports how far merging lags behind the receivers: the newest merged chunk, from its partials sent to merged', async () => {
    const { receivers: rx, client } = await setUp();
    const id = await defineAndStart(client);
    await acquireOf(rx, id);
    expect((await client.api.get(id)).mergeLagMs).toBeNull();
    // chunk 0 as if its partials had queued for 4 s on the way
    const queuedMs = 4000;
    const old = Date.now() - queuedMs;
    for (let s = 0; s < 8; s++) await rx[s]!.sendPartial({ ...partialOf(id, s, 0), sentAt: old });
    await waitUntil(async () => (await client.api.get(id)).progress.framesMerged >= CHUNK, 20_000, 'chunk 0 merged');
    const behind = (await client.api.get(id)).mergeLagMs!;
    expect(behind).toBeGreaterThanOrEqual(queuedMs);
    expect(behind).toBeLessThan(queuedMs + 5000);
    // chunk 1 sent now: the lag is that of the newest chunk, back to how long sending and merging took
    const sentAt = Date.now();
    for (let s = 0; s < 8; s++) await rx[s]!.sendPartial({ ...partialOf(id, s, 1), sentAt });
    await waitUntil(async () => (await client.api.get(id)).progress.framesMerged >= 2 * CHUNK, 20_000, 'chunk 1 merged');
    const caughtUp = (await client.api.get(id)).mergeLagMs!;
    expect(caughtUp).toBeGreaterThanOrEqual(0);
    expect(caughtUp).toBeLessThanOrEqual(Date.now() - sentAt);
    expect((await client.api.status()).acquisition!.mergeLagMs).toBe(caughtUp);
  }, 60_000);

  it('reports a silent sector missing within LIVENESS_MS and completes the scan with its slice zero-filled and marked', async () => {
    const { receivers: rx, client } = await setUp({}, LIVENESS_MS);
    const silentAt = Date.now();
    rx[5]!.silence();
    await waitUntil(async () => (await client.api.status()).sectors[5]!.state === 'missing', LIVENESS_MS + 2000, 'sector 5 missing');
    const after = Date.now() - silentAt;
    expect(after).toBeGreaterThanOrEqual(LIVENESS_MS - 300);
    expect(after).toBeLessThan(LIVENESS_MS + 1000);
    const status = await client.api.status();
    expect(status.sectors.filter((s) => s.state === 'alive').map((s) => s.sector)).toEqual([0, 1, 2, 3, 4, 6, 7]);

    const id = await defineAndStart(client);
    await acquireOf(rx.filter((r) => r.sector !== 5), id);
    const t0 = Date.now();
    for (let c = 0; c < N / CHUNK; c++) for (const s of [0, 1, 2, 3, 4, 6, 7]) await rx[s]!.sendPartial(partialOf(id, s, c));
    const mirror = await follow(client, id);
    // a sector known to be missing is not waited for
    expect(Date.now() - t0).toBeLessThan(10_000);
    expectResults(mirror, await offline((s) => s === 5));
    expect([...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)]).toEqual(new Array(N).fill(7));
    expect([...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)]).toEqual(new Array(N).fill(32));
    expect(mirror.sectors[5]!.state).toBe('missing');
  }, 60_000);

  it('fills a sector whose partial does not come within the chunk timeout; the damage map counts blocks exactly', async () => {
    const { merger, receivers: rx, client } = await setUp({ merger: { chunkTimeoutMs: 2000 } });
    const id = await defineAndStart(client);
    await acquireOf(rx, id);
    // sector 3 reports three zero-filled blocks at position 6 (chunk 1), and one whole frame lost at 13
    const damage3 = (c: number) => {
      const d = new Uint32Array(CHUNK);
      if (c === 1) d[2] = 0b1011;
      if (c === 3) d[1] = 0xffffffff;
      return d;
    };
    for (let c = 0; c < N / CHUNK; c++) {
      for (let s = 0; s < 8; s++) {
        if (s === 2 && c === 1) continue; // never arrives
        await rx[s]!.sendPartial(partialOf(id, s, c, s === 3 ? damage3(c) : undefined));
      }
    }
    const mirror = await follow(client, id);
    expectResults(mirror, await offline((s, i) => s === 2 && i >= CHUNK && i < 2 * CHUNK));
    const complete = [...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)];
    const missing = [...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)];
    const expectComplete = Array.from({ length: N }, (_, i) => 8 - (i >= 4 && i < 8 ? 1 : 0) - (i === 6 || i === 13 ? 1 : 0));
    const expectMissing = Array.from({ length: N }, (_, i) => (i >= 4 && i < 8 ? 32 : 0) + (i === 6 ? 3 : 0) + (i === 13 ? 32 : 0));
    expect(complete).toEqual(expectComplete);
    expect(missing).toEqual(expectMissing);
    expect((merger.manager.counters() as { merge: { sectorsFilled: number } }).merge.sectorsFilled).toBe(1);
    // the late partial, once it comes, is a counted drop
    await rx[2]!.sendPartial(partialOf(id, 2, 1));
    await waitUntil(() => merger.link.counters.partials >= 8 * 4, 2000, 'late partial received');
  }, 60_000);

  it('starts at the next scan repetition of a running detector acquisition; parameter changes and stop name a chunk boundary after the frames in flight', async () => {
    const { receivers: rx, client } = await setUp({ merger: { chunkTimeoutMs: 300 } });
    // the receivers follow a continuous scan of N positions at about 200 frames/s
    let index = 1000;
    for (const r of rx) Object.assign(r.state, { phase: 'running', shutterRound: 4, positions: N, lastIndex: index });
    const ticker = setInterval(() => {
      index += 10;
      for (const r of rx) r.state.lastIndex = index;
    }, 50);
    try {
      await new Promise((r) => setTimeout(r, 1300));
      // what the merger can know: the newest index a heartbeat carried (then time to read it)
      const before = Math.max(...rx.map((r) => r.lastHeartbeat!.lastIndex!));
      await new Promise((r) => setTimeout(r, 600));
      const id = await defineAndStart(client, { mode: 'continuous' });
      const acquire = await acquireOf(rx, id);
      expect(acquire.mode).toBe('continuous');
      expect(acquire.start!.shutterRound).toBe(4);
      expect(acquire.start!.startIndex % N).toBe(0);
      expect(acquire.start!.startIndex).toBeGreaterThan(before);
      // within about a second of frames ahead (in-flight margin of 0.5 s plus rounding to the scan)
      expect(acquire.start!.startIndex).toBeLessThan(index + 400 + N);

      // the receivers run it: acquisition-relative frames now
      const startIndex = acquire.start!.startIndex;
      await waitUntil(() => index > startIndex + 3 * N, 5000, 'frames of the acquisition');
      const newMasks = { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 40 }, { type: 'ring', cy: 930, cx: 1024, ri: 90, ro: 600 }] };
      const rel = Math.max(...rx.map((r) => r.lastHeartbeat!.lastIndex!)) - startIndex;
      await new Promise((r) => setTimeout(r, 600));
      const change = await client.api.updateUdfParams(id, 'masks', newMasks);
      expect(change.udf.params).toEqual(newMasks);
      expect(change.appliesFromFrame % CHUNK).toBe(0);
      expect(change.appliesFromFrame).toBeGreaterThan(rel);
      await waitUntil(() => rx.every((r) => r.received.some((m) => m.type === 'params')), 3000, 'params at every receiver');
      const params = rx.map((r) => r.received.find((m): m is ParamsMessage => m.type === 'params')!);
      for (const p of params) expect(p).toMatchObject({ acquisition: id, udfId: 'masks', params: newMasks, fromFrame: change.appliesFromFrame });
      expect((await client.api.get(id)).udfs.find((u) => u.id === 'masks')!.params).toEqual(newMasks);

      // a layout change (another number of masks) is refused
      await expect(client.api.updateUdfParams(id, 'masks', { masks: [{ type: 'disk', cy: 1, cx: 1, r: 1 }] })).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS', statusCode: 400 });

      const stopping = await client.api.stop(id);
      expect(stopping.state).toBe('stopping');
      await waitUntil(() => rx.every((r) => r.received.some((m) => m.type === 'stop')), 3000, 'stop at every receiver');
      const stop = rx[0]!.received.find((m): m is StopMessage => m.type === 'stop')!;
      expect(stop.atFrame! % CHUNK).toBe(0);
      expect(stop.atFrame!).toBeGreaterThan(index - startIndex - 20);
      await waitUntil(async () => (await client.api.get(id)).state === 'done', 8000, 'done');
    } finally {
      clearInterval(ticker);
    }
  }, 60_000);

  it('refuses bad acquisitions with clear 4xx errors', async () => {
    const { client } = await setUp();
    const refused = async (request: AcquisitionRequest) => {
      try {
        await client.api.define(request);
      } catch (err) {
        return err as TesseraApiError;
      }
      throw new Error('accepted');
    };
    expect(await refused({ scanShape: SCAN, udfs: [{ name: 'LogsumUDF' }] })).toMatchObject({ code: 'TESSERA_ERR_NEEDS_WHOLE_FRAMES', statusCode: 400 });
    expect(await refused({ scanShape: SCAN, udfs: [{ name: 'NoSuchUDF' }] })).toMatchObject({ code: 'TESSERA_ERR_UNKNOWN_UDF', statusCode: 400 });
    expect(await refused({ scanShape: SCAN, udfs: [{ name: 'ApplyMasksUDF', params: { masks: 'x' } }] })).toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS', statusCode: 400 });
    expect(await refused({ scanShape: SCAN, udfs: [{ name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 1, cx: 1 }] } }] })).toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS', statusCode: 400 });
    expect(await refused({ scanShape: SCAN, udfs: UDFS, chunkSize: 1000 })).toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT', statusCode: 400 });
    const names = (await client.api.udfs()).map((u) => u.name);
    expect(names).toEqual(expect.arrayContaining(['SumUDF', 'SumSigUDF', 'ApplyMasksUDF', 'CoMUDF', 'LogsumUDF']));
    const id = await defineAndStart(client);
    expect(await refused({ scanShape: SCAN, udfs: UDFS })).toMatchObject({ code: 'TESSERA_ERR_ACQUISITION_STATE', statusCode: 409 });
    await expect(client.api.start(id)).rejects.toMatchObject({ code: 'TESSERA_ERR_ACQUISITION_STATE', statusCode: 409 });
    await expect(client.api.updateUdfParams(id, 'nope', {})).rejects.toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND', statusCode: 404 });
    const aborted = await client.api.abort(id);
    expect(aborted.state).toBe('aborted');
    await waitUntil(() => receivers.every((r) => r.received.some((m) => m.type === 'abort')), 3000, 'abort at every receiver');
    await expect(client.api.get('acq-none')).rejects.toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND', statusCode: 404 });
  }, 30_000);
});
