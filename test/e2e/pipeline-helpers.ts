/**
 * Helpers of the end-to-end tests, every role a real process on loopback: `tessera simulate` (UDP) -> eight
 * `tessera receiver` processes -> `tessera merger` -> TesseraClient over WebSocket. The final
 * live results must equal runUdf offline over the simulator's ground truth (SimulatedScan with
 * the same seed) in a MemoryDataSet: bit for bit for the integer sums, within float tolerance
 * for CoM. With datagram loss, the damage map must be exactly what the simulator's fault log
 * says was lost, and the results must equal offline over the truth with those blocks zeroed.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type LiveMirror, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { BLOCK_COLS, BLOCK_ROWS, FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { blockOrigin } from '../../src/k2is/geometry.js';
import { LOSS_KINDS, SimulatedScan, type FaultRecord } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { freeTcpPort, liveConfig, SIG, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

export const FRAME = FRAME_HEIGHT * FRAME_WIDTH;
export const FRAMES_BEFORE = 8;

export const UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sum', name: 'SumUDF' },
  { id: 'sumsig', name: 'SumSigUDF' },
  { id: 'masks', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 60 }, { type: 'ring', cy: 930, cx: 1024, ri: 100, ro: 700 }] } },
  { id: 'com', name: 'CoMUDF', params: { cy: 930, cx: 1024, r: 80 } },
];

let roles: RoleProcess[] = [];
/** the roles of the current test, kept for the logs of a failed test */
let lastRoles: RoleProcess[] = [];
let clients: TesseraClient[] = [];

/** Close the clients and stop every process the test started (call it in afterEach). */
export async function cleanUp(): Promise<void> {
  for (const c of clients) await c.close().catch(() => {});
  clients = [];
  await Promise.all(roles.map((r) => r.stop(5000).catch(() => r.kill())));
  roles = [];
}

export interface Pipeline {
  config: string;
  dir: string;
  merger: RoleProcess;
  receivers: RoleProcess[];
  client: TesseraClient;
  url: string;
}

export function spawnRole(name: string, args: string[]): RoleProcess {
  const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
  roles.push(r);
  lastRoles.push(r);
  return r;
}

export async function launch(overlay: { merger?: Record<string, unknown>; receiver?: Record<string, unknown> } = {}): Promise<Pipeline> {
  const base = await freeUdpPorts(8);
  // a generous chunk timeout: on this shared 2-core machine a receiver can fall seconds behind
  const { path, dir } = await liveConfig({ detector: { udp: { host: '127.0.0.1', basePort: base } }, receiver: { statsIntervalMs: 1000, ...overlay.receiver }, merger: { chunkTimeoutMs: 5000, ...overlay.merger } });
  lastRoles = [];
  const merger = spawnRole('merger', ['merger', '-c', path]);
  onTestFailed(() => {
    for (const r of lastRoles) if (r.name === 'merger' || r.name === 'receiver-3') writeFileSync(join(dir, `${r.name}-${r.child.pid}.log`), r.rawStderr.join('\n'));
    console.error(`logs of the failed test: ${dir}`);
  });
  const listening = await merger.waitForMsg('merger listening', 30_000);
  const url = String(listening.url);
  const receivers = Array.from({ length: 8 }, (_, s) => spawnReceiver(path, s));
  const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  clients.push(client);
  await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 90_000, 'eight receivers alive');
  return { config: path, dir, merger, receivers, client, url };
}

export function spawnReceiver(config: string, sector: number): RoleProcess {
  return spawnRole(`receiver-${sector}`, ['receiver', '--sector', String(sector), '-c', config]);
}

export function simulate(p: Pipeline, scan: [number, number], args: string[]): RoleProcess {
  return spawnRole('simulator', ['simulate', '-c', p.config, '--scan', `${scan[0]}x${scan[1]}`, '--frames-before', String(FRAMES_BEFORE), ...args]);
}

export async function defineAndStart(p: Pipeline, request: AcquisitionRequest): Promise<string> {
  const { id } = await p.client.api.define(request);
  await p.client.api.start(id);
  // every receiver took the acquisition before the camera starts
  await waitUntil(() => p.merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 15_000, 'eight receivers ready');
  return id;
}

export async function follow(p: Pipeline, id: string, pred: (m: LiveMirror) => boolean, timeoutMs = 60_000): Promise<LiveMirror> {
  await p.client.connect();
  p.client.subscribe({ acquisition: id });
  return p.client.waitFor((m) => m.acquisition === id && pred(m), timeoutMs);
}

/** Lost blocks per (sector, scan position), as bitmaps, from the simulator's fault log. */
export function lossesOf(faults: FaultRecord[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of faults) {
    if (!LOSS_KINDS.has(r.kind)) continue;
    const position = r.streamFrame - (FRAMES_BEFORE - 1);
    const k = `${r.sector}/${position}`;
    m.set(k, ((m.get(k) ?? 0) | (1 << r.blockIndex)) >>> 0);
  }
  return m;
}

/** Zero in `frame` (scan position `position`) the blocks `losses` (bitmaps per "sector/position") says were lost. */
export function zeroLostBlocks(frame: Uint16Array, losses: Map<string, number>, position: number): void {
  for (let s = 0; s < 8; s++) {
    const bits = losses.get(`${s}/${position}`) ?? 0;
    for (let b = 0; b < 32; b++) {
      if (!(bits & (1 << b))) continue;
      const o = blockOrigin(b);
      for (let y = o.y; y < o.y + BLOCK_ROWS; y++) frame.fill(0, y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x, y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x + BLOCK_COLS);
    }
  }
}

export async function offline(scan: [number, number], seed: number, losses = new Map<string, number>()): Promise<UDFResults[]> {
  const sim = new SimulatedScan({ scanShape: scan, seed });
  const n = scan[0] * scan[1];
  const data = new Uint16Array(n * FRAME);
  for (let i = 0; i < n; i++) {
    const frame = data.subarray(i * FRAME, (i + 1) * FRAME);
    sim.frame(i, frame);
    zeroLostBlocks(frame, losses, i);
  }
  return runUdf(new MemoryDataSet({ data, navShape: scan, sigShape: SIG }), UDFS.map((u) => createUdf({ name: u.name, params: u.params ?? {} })));
}

export function expectResults(mirror: LiveMirror, reference: UDFResults[]): void {
  UDFS.forEach((u, i) => {
    for (const [name, r] of Object.entries(reference[i]!)) {
      const got = mirror.get(u.id!, name)?.data as ArrayLike<number> | undefined;
      expect(got, `${u.id}/${name}`).toBeDefined();
      expect(got!.length).toBe(r.data.length);
      for (let k = 0; k < r.data.length; k++) {
        const a = got![k]!;
        const e = r.data[k]!;
        const ok = u.id === 'com' ? (Number.isNaN(a) && Number.isNaN(e)) || Math.abs(a - e) <= 1e-9 * Math.max(1, Math.abs(e)) : Object.is(a, e);
        if (!ok) throw new Error(`${u.id}/${name}[${k}] = ${a}, expected ${e}`);
      }
    }
  });
}

export function popcount(x: number): number {
  let n = 0;
  for (; x; x >>>= 1) n += x & 1;
  return n;
}

/** The merger's exact damage (`_damage/sectorBlocks`) as lost-block bitmaps per (sector, position). */
export function lossesFromMirror(mirror: LiveMirror, positions: number): Map<string, number> {
  const bits = mirror.get('_damage', 'sectorBlocks')!.data as Uint32Array;
  const m = new Map<string, number>();
  for (let i = 0; i < positions; i++) for (let s = 0; s < 8; s++) if (bits[i * 8 + s]) m.set(`${s}/${i}`, bits[i * 8 + s]!);
  return m;
}

/** sectorsComplete and blocksMissing must be what the per-sector bitmaps say. */
export function expectDamageConsistent(mirror: LiveMirror, positions: number): void {
  const losses = lossesFromMirror(mirror, positions);
  const complete = Array.from({ length: positions }, (_, i) => [...Array(8).keys()].filter((s) => !losses.get(`${s}/${i}`)).length);
  const missing = Array.from({ length: positions }, (_, i) => [...Array(8).keys()].reduce((a, s) => a + popcount(losses.get(`${s}/${i}`) ?? 0), 0));
  expect([...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)]).toEqual(complete);
  expect([...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)]).toEqual(missing);
}

/** The simulator's ground truth: frames 0 .. n-1 of `sim`, one after the other. */
export function truthFrames(sim: SimulatedScan, n: number): Uint16Array {
  const data = new Uint16Array(n * FRAME);
  for (let i = 0; i < n; i++) sim.frame(i, data.subarray(i * FRAME, (i + 1) * FRAME));
  return data;
}

/** Relative tolerance of the whole-frame (floating-point) results: 1e-9. */
export const nearlyEqual = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));

/**
 * The whole-frame UDFs `whole` in the mirror equal `reference` (runUdf offline over the truth,
 * in the same order) at every scan position of `positions` (those that reached a worker whole),
 * within 1e-9, NaN where the reference is NaN. Returns how many values were compared.
 */
export function expectWholeFrameResults(mirror: LiveMirror, whole: AcquisitionRequest['udfs'], reference: UDFResults[], positions: number[], n: number): number {
  let compared = 0;
  whole.forEach((u, k) => {
    for (const [name, r] of Object.entries(reference[k]!)) {
      const got = mirror.get(u.id!, name)?.data as ArrayLike<number> | undefined;
      expect(got, `${u.id}/${name}`).toBeDefined();
      expect(got!.length).toBe(r.data.length);
      const per = r.data.length / n;
      for (const i of positions) {
        for (let e = 0; e < per; e++) {
          const a = got![i * per + e]!;
          const b = r.data[i * per + e]!;
          if (!((Number.isNaN(a) && Number.isNaN(b)) || nearlyEqual(a, b))) throw new Error(`${u.id}/${name}[${i}] = ${a}, expected ${b}`);
          compared++;
        }
      }
    }
  });
  return compared;
}

/** FEMUDF parameters of the whole-frame resume tests. */
export const FEM = { center: [930, 1024], radIn: 100, radOut: 400 };
/** A tile UDF beside a whole-frame one behind the shuffle. */
export const WHOLE_FRAME_UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sumsig', name: 'SumSigUDF' },
  { id: 'fem', name: 'FEMUDF', params: FEM },
];

/**
 * The pipeline of launch() with `tessera shuffle` (fixed rate: every frame) and one `tessera
 * worker`, receiver.streamIdleMs 2 s; the client is closed by cleanUp().
 */
export async function launchWithShuffle(o: { chunkTimeoutMs: number }): Promise<Pipeline & { shuffle: RoleProcess; worker: RoleProcess }> {
  const base = await freeUdpPorts(8);
  const shuffleEndpoints = { slices: `tcp://127.0.0.1:${await freeTcpPort()}`, frames: `tcp://127.0.0.1:${await freeTcpPort()}` };
  const { path, dir } = await liveConfig({
    detector: { udp: { host: '127.0.0.1', basePort: base } },
    receiver: { statsIntervalMs: 1000, streamIdleMs: 2000 },
    merger: { chunkTimeoutMs: o.chunkTimeoutMs, keepEpochs: 64 },
    shuffle: shuffleEndpoints,
  });
  const merger = spawnRole('merger', ['merger', '-c', path]);
  const url = String((await merger.waitForMsg('merger listening', 30_000)).url);
  const shuffle = spawnRole('shuffle', ['shuffle', '-c', path, '--fixed-rate']);
  await shuffle.waitForMsg('shuffle listening', 30_000);
  const worker = spawnRole('worker', ['worker', '-c', path]);
  const receivers = Array.from({ length: 8 }, (_, s) => spawnReceiver(path, s));
  onTestFailed(() => {
    for (const r of [merger, shuffle, worker, receivers[3]!]) writeFileSync(join(dir, `${r.name}-${r.child.pid}.log`), r.rawStderr.join('\n'));
    console.error(`logs of the failed test: ${dir}`);
  });
  const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  clients.push(client);
  await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 90_000, 'eight receivers alive');
  await waitUntil(async () => ((await client.api.status()).shuffle?.workers ?? 0) >= 1, 30_000, 'the shuffle with its worker in /api/status');
  return { config: path, dir, merger, receivers, client, url, shuffle, worker };
}

/**
 * runUdf offline over the truth of SimulatedScan `seed`: FEMUDF per frame (no loss: compared
 * only where all 8 sectors came whole), SumSigUDF with the lost blocks zeroed.
 */
export async function wholeFrameReference(scan: [number, number], seed: number, losses = new Map<string, number>()): Promise<{ fem: Float64Array; sumsig: ArrayLike<number> }> {
  const n = scan[0] * scan[1];
  const truth = truthFrames(new SimulatedScan({ scanShape: scan, seed }), n);
  const [f] = await runUdf(new MemoryDataSet({ data: truth, navShape: scan, sigShape: SIG }), [createUdf({ name: 'FEMUDF', params: FEM })]);
  for (let i = 0; i < n; i++) zeroLostBlocks(truth.subarray(i * FRAME, (i + 1) * FRAME), losses, i);
  const [s] = await runUdf(new MemoryDataSet({ data: truth, navShape: scan, sigShape: SIG }), [createUdf({ name: 'SumSigUDF', params: {} })]);
  return { fem: Float64Array.from(f!.intensity!.data as unknown as ArrayLike<number>), sumsig: s!.intensity!.data as unknown as ArrayLike<number> };
}

/** How many scan positions of the mirrored epoch `_shuffle/valid` marks (0 before any whole-frame result). */
export function validCount(m: LiveMirror): number {
  const v = m.get('_shuffle', 'valid')?.data as Uint8Array | undefined;
  return v ? v.reduce((a, b) => a + b, 0) : 0;
}
