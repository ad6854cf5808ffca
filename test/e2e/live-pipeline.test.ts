/**
 * End to end, every role a real process on loopback: `tessera simulate` (UDP) -> eight
 * `tessera receiver` processes -> `tessera merger` -> TesseraClient over WebSocket. The final
 * live results must equal runUdf offline over the simulator's ground truth (SimulatedScan with
 * the same seed) in a MemoryDataSet: bit for bit for the integer sums, within float tolerance
 * for CoM. With datagram loss, the damage map must be exactly what the simulator's fault log
 * says was lost, and the results must equal offline over the truth with those blocks zeroed.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type LiveMirror, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { BLOCK_COLS, BLOCK_ROWS, FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { blockOrigin } from '../../src/k2is/geometry.js';
import { LOSS_KINDS, SimulatedScan, type FaultRecord } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import { LIVENESS_MS } from '../../src/protocol/live.js';
import { decodeMessage, encodeMessage, WS_PROTOCOL_VERSION } from '../../src/protocol/ws-messages.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { liveConfig, SIG, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

const FRAME = FRAME_HEIGHT * FRAME_WIDTH;
const FRAMES_BEFORE = 8;

const UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sum', name: 'SumUDF' },
  { id: 'sumsig', name: 'SumSigUDF' },
  { id: 'masks', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 60 }, { type: 'ring', cy: 930, cx: 1024, ri: 100, ro: 700 }] } },
  { id: 'com', name: 'CoMUDF', params: { cy: 930, cx: 1024, r: 80 } },
];

let roles: RoleProcess[] = [];
/** the roles of the current test, kept for the logs of a failed test */
let lastRoles: RoleProcess[] = [];
let clients: TesseraClient[] = [];

afterEach(async () => {
  for (const c of clients) await c.close().catch(() => {});
  clients = [];
  // the camera first, then the receivers, then the merger; SIGKILL whatever lingers
  await Promise.all(roles.map((r) => r.stop(5000).catch(() => r.kill())));
  roles = [];
}, 30_000);

interface Pipeline {
  config: string;
  dir: string;
  merger: RoleProcess;
  receivers: RoleProcess[];
  client: TesseraClient;
  url: string;
}

function spawnRole(name: string, args: string[]): RoleProcess {
  const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
  roles.push(r);
  lastRoles.push(r);
  return r;
}

async function launch(overlay: { merger?: Record<string, unknown> } = {}): Promise<Pipeline> {
  const base = await freeUdpPorts(8);
  // a generous chunk timeout: on this shared 2-core machine a receiver can fall seconds behind
  const { path, dir } = await liveConfig({ detector: { udp: { host: '127.0.0.1', basePort: base } }, receiver: { statsIntervalMs: 1000 }, merger: { chunkTimeoutMs: 5000, ...overlay.merger } });
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
  await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 30_000, 'eight receivers alive');
  return { config: path, dir, merger, receivers, client, url };
}

function spawnReceiver(config: string, sector: number): RoleProcess {
  return spawnRole(`receiver-${sector}`, ['receiver', '--sector', String(sector), '-c', config]);
}

function simulate(p: Pipeline, scan: [number, number], args: string[]): RoleProcess {
  return spawnRole('simulator', ['simulate', '-c', p.config, '--scan', `${scan[0]}x${scan[1]}`, '--frames-before', String(FRAMES_BEFORE), ...args]);
}

async function defineAndStart(p: Pipeline, request: AcquisitionRequest): Promise<string> {
  const { id } = await p.client.api.define(request);
  await p.client.api.start(id);
  // every receiver took the acquisition before the camera starts
  await waitUntil(() => p.merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 15_000, 'eight receivers ready');
  return id;
}

async function follow(p: Pipeline, id: string, pred: (m: LiveMirror) => boolean, timeoutMs = 60_000): Promise<LiveMirror> {
  await p.client.connect();
  p.client.subscribe({ acquisition: id });
  return p.client.waitFor((m) => m.acquisition === id && pred(m), timeoutMs);
}

/** Lost blocks per (sector, scan position), as bitmaps, from the simulator's fault log. */
function lossesOf(faults: FaultRecord[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of faults) {
    if (!LOSS_KINDS.has(r.kind)) continue;
    const position = r.streamFrame - (FRAMES_BEFORE - 1);
    const k = `${r.sector}/${position}`;
    m.set(k, ((m.get(k) ?? 0) | (1 << r.blockIndex)) >>> 0);
  }
  return m;
}

async function offline(scan: [number, number], seed: number, losses = new Map<string, number>()): Promise<UDFResults[]> {
  const sim = new SimulatedScan({ scanShape: scan, seed });
  const n = scan[0] * scan[1];
  const data = new Uint16Array(n * FRAME);
  for (let i = 0; i < n; i++) {
    const frame = data.subarray(i * FRAME, (i + 1) * FRAME);
    sim.frame(i, frame);
    for (let s = 0; s < 8; s++) {
      const bits = losses.get(`${s}/${i}`) ?? 0;
      for (let b = 0; b < 32; b++) {
        if (!(bits & (1 << b))) continue;
        const o = blockOrigin(b);
        for (let y = o.y; y < o.y + BLOCK_ROWS; y++) frame.fill(0, y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x, y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x + BLOCK_COLS);
      }
    }
  }
  return runUdf(new MemoryDataSet({ data, navShape: scan, sigShape: SIG }), UDFS.map((u) => createUdf({ name: u.name, params: u.params ?? {} })));
}

function expectResults(mirror: LiveMirror, reference: UDFResults[]): void {
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

describe('simulator -> 8 receiver processes -> merger process -> WebSocket client', () => {
  it('a single scan: final results equal offline over the ground truth; garbage on the WebSocket gets an error, the stream goes on', async () => {
    const scan: [number, number] = [4, 8];
    const p = await launch();
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single' });
    const sim = simulate(p, scan, ['--fps', '100', '--seed', '11']);

    // garbage from another client on the same server
    const raw = new WebSocket(p.url.replace('http', 'ws') + '/ws');
    const replies: Array<Record<string, unknown>> = [];
    raw.on('message', (d: Buffer) => replies.push(decodeMessage(d) as Record<string, unknown>));
    await new Promise((r) => raw.once('open', r));
    raw.send(Buffer.from([0xc1, 0xff, 0x00]));
    raw.send(encodeMessage({ v: WS_PROTOCOL_VERSION, type: 'subscribe' } as never));
    await waitUntil(() => replies.filter((m) => m.type === 'error').length >= 2, 5000, 'two error replies');
    expect(replies.filter((m) => m.type === 'error').every((m) => typeof m.code === 'string' && String(m.code).startsWith('TESSERA_ERR_'))).toBe(true);
    raw.close();

    const mirror = await follow(p, id, (m) => m.state?.state === 'done');
    expect((await sim.exited).code).toBe(0);
    expectResults(mirror, await offline(scan, 11));
    const n = scan[0] * scan[1];
    expect([...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)]).toEqual(new Array(n).fill(8));
    expect([...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)]).toEqual(new Array(n).fill(0));
    expect(mirror.progress).toMatchObject({ framesMerged: n, framesTotal: n });
    expect((await p.client.api.get(id)).state).toBe('done');
    expect(p.merger.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  }, 120_000);

  it('with 5% datagram loss: the damage map is exactly the fault log, results equal offline over the zero-filled truth', async () => {
    const scan: [number, number] = [4, 8];
    const p = await launch();
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single' });
    const faultLog = join(mkdtempSync(join(tmpdir(), 'tessera-e2e-')), 'faults.jsonl');
    const sim = simulate(p, scan, ['--fps', '100', '--seed', '12', '--drop', '0.05', '--fault-log', faultLog]);
    const mirror = await follow(p, id, (m) => m.state?.state === 'done');
    expect((await sim.exited).code).toBe(0);
    const faults = readFileSync(faultLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as FaultRecord);
    const losses = lossesOf(faults);
    const n = scan[0] * scan[1];
    const complete = Array.from({ length: n }, (_, i) => [...Array(8).keys()].filter((s) => !losses.get(`${s}/${i}`)).length);
    const missing = Array.from({ length: n }, (_, i) => [...Array(8).keys()].reduce((a, s) => a + popcount(losses.get(`${s}/${i}`) ?? 0), 0));
    expect(missing.reduce((a, b) => a + b, 0)).toBeGreaterThan(100); // the loss really hit the scan
    expect([...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)]).toEqual(complete);
    expect([...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)]).toEqual(missing);
    expectResults(mirror, await offline(scan, 12, losses));
  }, 120_000);

  it('a killed receiver is missing in /api/status within LIVENESS_MS; the continuous acquisition goes on with its sector marked; restarted, it rejoins', async () => {
    const scan: [number, number] = [4, 8];
    const p = await launch({ merger: { chunkTimeoutMs: 1500 } });
    const sim = simulate(p, scan, ['--fps', '30', '--seed', '13', '--continuous']);
    // the receivers follow the detector's continuous scan; the acquisition joins it at the next repetition
    await waitUntil(() => p.merger.lines.some((l) => l.msg === 'election decided' || l.msg === 'election: round opened'), 20_000, 'the election');
    await new Promise((r) => setTimeout(r, 1500));
    const { id } = await p.client.api.define({ scanShape: scan, udfs: UDFS, mode: 'continuous' });
    const started = await p.client.api.start(id);
    expect(started.state).toBe('running');
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= 16, 30_000, 'frames merged');

    const killedAt = Date.now();
    p.receivers[3]!.kill();
    await waitUntil(async () => (await p.client.api.status()).sectors[3]!.state === 'missing', LIVENESS_MS + 8000, 'sector 3 missing');
    // on the merger's own clock: declared missing as soon as LIVENESS_MS passed without a heartbeat
    // (the test's view adds the load of this shared machine, so its bound is looser)
    const declared = p.merger.lines.find((l) => l.msg === 'sector missing: no heartbeat' && l.sector === 3)!;
    expect(declared.silentMs as number).toBeLessThan(LIVENESS_MS + 1500);
    expect(Date.now() - killedAt).toBeLessThan(LIVENESS_MS + 6000);
    const merged = (await p.client.api.get(id)).progress.framesMerged;
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= merged + 2 * scan[1], 20_000, 'merging goes on');
    const mirror = await follow(p, id, (m) => (m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined)?.some((v) => v === 7) ?? false, 20_000);
    expect(mirror.sectors[3]!.state).toBe('missing');
    expect(sim.running).toBe(true);

    // restart: the receiver comes back, takes the acquisition again and its sector completes chunks
    p.receivers[3] = spawnReceiver(p.config, 3);
    await waitUntil(async () => (await p.client.api.status()).sectors[3]!.state === 'alive', 30_000, 'sector 3 alive again');
    // it is told the acquisition again (it may refuse to join mid-scan: then its sector stays
    // filled in, and the acquisition must go on either way)
    await waitUntil(() => p.merger.lines.filter((l) => (l.msg === 'receiver ready' || String(l.msg).startsWith('a receiver cannot run')) && l.sector === 3).length >= 2, 20_000, 'sector 3 answered the acquire again');
    const again = (await p.client.api.get(id)).progress.framesMerged;
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= again + 2 * scan[1], 20_000, 'merging goes on after the restart');
    const status = await p.client.api.status();
    expect(status.acquisition).toMatchObject({ id, state: 'running' });
    expect(status.sectors[3]!.state).toBe('alive');
  }, 150_000);
});

function popcount(x: number): number {
  let n = 0;
  for (; x; x >>>= 1) n += x & 1;
  return n;
}
