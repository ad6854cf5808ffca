/**
 * The whole live pipeline on this machine, every role its own process as `tessera start` runs
 * it: eight `tessera receiver` processes and `tessera merger`, fed by this process acting as
 * the camera (pre-rendered simulator datagrams, paced per frame, all eight sectors of frame f
 * before f+1), with a TesseraClient on the merger's WebSocket. The acquisition is the default
 * live one (sum image, frame sums, BF + ADF detectors, CoM), one partial per scan row.
 *
 * 1. Highest per-sector frame rate sustained without loss: a ladder of camera rates, each
 *    rate a few single scans; a rate passes when every scan completes with all 8 sectors of
 *    every position complete (damage map) and nothing filled in by the merger. Quoted as a
 *    fraction of the detector's 400 fps. The camera here is one Node process: its own send
 *    rate is reported beside it (it caps what can be measured).
 * 2. Latency from the last datagram of a frame leaving the camera to the client seeing its
 *    merged value, p50/p99, at a rate well below the limit: for the last frame of each row
 *    (the frame that completes the row's chunk: the pipeline's own latency) and for every
 *    frame (which includes waiting for the rest of its row).
 */
import dgram from 'node:dgram';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawn, type ChildProcess } from 'node:child_process';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../src/client/tessera-client.js';
import { defaultAcquisition } from '../src/commands/start.js';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, NUM_SECTORS, SECTOR_FRAME_BYTES } from '../src/k2is/constants.js';
import { K2ISStream, SimulatedScan } from '../src/k2is/simulator/index.js';
import { CLI_PATH } from '../src/paths.js';
import { measureMemcpy, median, report } from './lib.js';
import { ChunkMerger } from '../src/merger/chunk-merger.js';
import { decodePartialMessage, encodeLive, LIVE_PROTOCOL_VERSION, toWire, type PartialMessage } from '../src/protocol/live.js';
import { PartitionTask } from '../src/udf/partition-task.js';
import { createUdf } from '../src/udf/registry.js';
import { makeRunContext } from '../src/udf/runner.js';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../src/k2is/constants.js';
import { freeTcpPort, freeUdpBase } from './free-ports.js';

const SCAN: [number, number] = [4, 8];
const POSITIONS = SCAN[0] * SCAN[1];
const FRAMES_BEFORE = 2;
const FRAMES_AFTER = 1;
const STREAM_FRAMES = FRAMES_BEFORE - 1 + POSITIONS + FRAMES_AFTER;
const LADDER = [25, 50, 100, 150, 200, 300, 400];
const TRIALS = 2;
const LATENCY_TRIALS = 6;

interface Role {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
}

function spawnRole(args: string[]): Role {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, TESSERA_LOG_JSON: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const role: Role = { child, lines: [] };
  let buf = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => {
    buf += c;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      try {
        role.lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      } catch {
        // not JSON
      }
      buf = buf.slice(i + 1);
    }
  });
  return role;
}

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The camera: the stream's sector frames, rendered once; headers shifted per pass so that the stream continues. */
class Camera {
  private readonly frames: Uint8Array[][];
  private readonly sockets: dgram.Socket[] = [];
  private pass = 0;

  constructor(private readonly base: number) {
    const stream = new K2ISStream(new SimulatedScan({ scanShape: SCAN, seed: 3 }), { framesBeforeScan: FRAMES_BEFORE, framesAfterScan: FRAMES_AFTER });
    this.frames = Array.from({ length: STREAM_FRAMES }, (_, f) =>
      Array.from({ length: NUM_SECTORS }, (_, s) => {
        const out = new Uint8Array(SECTOR_FRAME_BYTES);
        stream.writeSectorFrame(f, s, out);
        return out;
      }),
    );
  }

  async open(): Promise<void> {
    for (let s = 0; s < NUM_SECTORS; s++) {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
      await new Promise<void>((r) => sock.connect(this.base + s, '127.0.0.1', () => r()));
      sock.setSendBufferSize(8 << 20);
      this.sockets.push(sock);
    }
  }

  /** Send one pass of the stream at `fps`; returns per stream frame the time its last datagram was sent (performance.now()). */
  async send(fps: number): Promise<{ lastSent: number[]; seconds: number }> {
    const shift = this.pass * (STREAM_FRAMES + 16);
    this.pass++;
    const lastSent: number[] = [];
    const t0 = performance.now();
    for (let f = 0; f < STREAM_FRAMES; f++) {
      const due = t0 + (f * 1000) / fps;
      while (performance.now() < due) await new Promise((r) => setImmediate(r));
      for (let s = 0; s < NUM_SECTORS; s++) {
        const bytes = this.frames[f]![s]!;
        for (let b = 0; b < BLOCKS_PER_SECTOR_FRAME; b++) {
          const d = bytes.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE);
          const v = new DataView(d.buffer, d.byteOffset, BLOCK_SIZE);
          // block_count and frame_id continue across passes, as a camera's do
          v.setUint32(16, (f * 32 + b + shift * 32) >>> 0);
          v.setUint32(24, (f + shift) >>> 0);
          this.sockets[s]!.send(d);
        }
      }
      lastSent.push(performance.now());
    }
    return { lastSent, seconds: (performance.now() - t0) / 1000 };
  }

  close(): void {
    for (const s of this.sockets) s.close();
  }
}

interface Trial {
  ok: boolean;
  why: string;
  latencyRowEnd: number[];
  latencyAll: number[];
  sendFps: number;
}

async function trial(client: TesseraClient, camera: Camera, merger: Role, fps: number): Promise<Trial> {
  const { id } = await client.api.define({ ...defaultAcquisition(SCAN), mode: 'single' });
  await client.api.start(id);
  // every receiver has taken the acquisition before the camera starts
  await until(() => merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= NUM_SECTORS, 20_000, 'eight receivers ready');
  client.subscribe({ acquisition: id });
  const seen = new Array<number>(POSITIONS).fill(NaN);
  const off = client.on('update', () => {
    const m = client.mirror;
    if (m.acquisition !== id) return;
    const d = m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined;
    if (!d) return;
    const t = performance.now();
    for (let i = 0; i < POSITIONS; i++) if (d[i]! > 0 && Number.isNaN(seen[i]!)) seen[i] = t;
  });
  const sent = await camera.send(fps);
  let why = '';
  try {
    await until(async () => ['done', 'failed', 'aborted'].includes((await client.api.get(id)).state), 15_000, 'the scan to complete');
    await client.waitFor((m) => m.acquisition === id && m.state?.state === 'done', 5000);
  } catch (err) {
    why = (err as Error).message;
    await client.api.abort(id).catch(() => {});
  }
  off();
  const m = client.mirror;
  const complete = m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined;
  const missing = m.get('_damage', 'blocksMissing')?.data as Uint16Array | undefined;
  if (!why && (!complete || !missing)) why = 'no damage map';
  if (!why) {
    const short = [...complete!].filter((v) => v !== 8).length;
    const blocks = [...missing!].reduce((a, b) => a + b, 0);
    if (short > 0) why = `${short} positions with incomplete sectors, ${blocks} blocks missing`;
  }
  const latencyAll: number[] = [];
  const latencyRowEnd: number[] = [];
  for (let p = 0; p < POSITIONS; p++) {
    const l = seen[p]! - sent.lastSent[p + FRAMES_BEFORE - 1]!;
    if (!Number.isFinite(l)) continue;
    latencyAll.push(l);
    if ((p + 1) % SCAN[1] === 0) latencyRowEnd.push(l);
  }
  return { ok: why === '', why, latencyAll, latencyRowEnd, sendFps: STREAM_FRAMES / sent.seconds };
}

function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

/**
 * The merger's own share, in this process: decode the 8 sector partials of a chunk, combine
 * and merge them (ChunkMerger), for the default acquisition (sum image in `sumDtype`) over a
 * 32 x 32 scan, `chunkSize` frames per chunk (32: one scan row per chunk; 8: the short chunks of
 * small scans). The partials arrive one sector lagging `lag` chunks behind the others, so
 * `lag` + 1 chunks are pending at a time (a slow receiver). Quoted as frames/s the merger
 * sustains (vs 400 fps), its partial bytes/s vs memcpy of the same bytes, and the peak of the
 * process's array-buffer memory over the run above what it held before (the merger's working
 * set: pending chunks, epoch results, decoded partials).
 */
export function mergerAlone(chunkSize = 32, sumDtype: 'float32' | 'float64' = 'float32', lag = 0): void {
  const scan: [number, number] = [32, 32];
  const udfs = defaultAcquisition(scan).udfs.map((u) => ({ id: u.id!, name: u.name, params: u.name === 'SumUDF' ? { dtype: sumDtype } : (u.params ?? {}) }));
  const context = makeRunContext({ navShape: scan, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: NUM_SECTORS, udfs: udfs.map((u) => createUdf(u)), roi: null });
  const tile = new Uint16Array(FRAME_HEIGHT * SECTOR_WIDTH).fill(7);
  const encoded: Buffer[] = [];
  for (let sector = 0; sector < NUM_SECTORS; sector++) {
    const sig = { origin: [0, sector * SECTOR_WIDTH] as [number, number], shape: [FRAME_HEIGHT, SECTOR_WIDTH] as [number, number] };
    const task = new PartitionTask({ udfs, context, partition: { navStart: 0, navEnd: chunkSize, sig } });
    for (let f = 0; f < chunkSize; f++) task.processTile({ data: tile, navStart: f, depth: 1, sigOrigin: sig.origin, sigShape: sig.shape });
    const r = task.finish();
    const m: PartialMessage = {
      version: LIVE_PROTOCOL_VERSION, type: 'partial', acquisition: 'bench', sector, epoch: 0, chunk: 0, navStart: 0, navEnd: chunkSize, frames: chunkSize, sig,
      udfs: r.udfs.map((b, i) => ({ id: udfs[i]!.id, paramsVersion: 0, buffers: Object.fromEntries(Object.entries(b).map(([k, v]) => [k, toWire(v)])) })),
      damage: new Uint32Array(chunkSize), sentAt: 0,
    };
    encoded.push(encodeLive(m));
  }
  const bytes = encoded.reduce((a, b) => a + b.byteLength, 0);
  const chunks = Math.ceil(POSITIONS_MERGER / chunkSize);
  const merger = new ChunkMerger({ acquisition: 'bench', udfs, context, chunkSize, mode: 'continuous', sectors: NUM_SECTORS, chunkTimeoutMs: 60_000, keepEpochs: 2, isMissing: () => false, onChunk: () => {} });
  const rates: number[] = [];
  let epoch = 0;
  const memory = () => { const m = process.memoryUsage(); return m.arrayBuffers + m.heapUsed; };
  const base = memory();
  let peak = 0;
  const feed = (sector: number, c: number) => {
    const p = decodePartialMessage(encoded[sector]!);
    p.epoch = epoch;
    p.chunk = c;
    p.navStart = c * chunkSize;
    p.navEnd = (c + 1) * chunkSize;
    merger.add(p);
  };
  for (let run = 0; run < 4; run++) {
    const t0 = performance.now();
    for (let c = 0; c < chunks + lag; c++) {
      if (c < chunks) for (let s = 1; s < NUM_SECTORS; s++) feed(s, c);
      if (c >= lag) feed(0, c - lag);
      peak = Math.max(peak, memory() - base);
    }
    epoch++;
    if (run > 0) rates.push((chunks * chunkSize) / ((performance.now() - t0) / 1000));
  }
  merger.close();
  const fps = median(rates);
  const memcpy = measureMemcpy(bytes, { runs: 5 }).best * 1e9;
  const what = `8 partials per ${chunkSize}-frame chunk, sum ${sumDtype}${lag ? `, one sector ${lag} chunks behind` : ''}`;
  report(`merger alone (${what}): decoded, combined, merged`, fps, 'frames/s', fps / 400, "the detector's 400 fps");
  report(`merger alone (${what}): partial bytes merged`, (fps / chunkSize) * bytes / 1e9, 'GB/s', ((fps / chunkSize) * bytes) / memcpy, 'memcpy of the same bytes');
  report(`merger alone (${what}): peak memory above start`, peak / 1e6, 'MB', peak / bytes, 'one chunk of partials');
}

const POSITIONS_MERGER = 32 * 32;

export async function run(): Promise<void> {
  mergerAlone(32, 'float32');
  mergerAlone(8, 'float32');
  mergerAlone(32, 'float64');
  mergerAlone(8, 'float64', 4);
  const base = await freeUdpBase(NUM_SECTORS);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-pipeline-'));
  const config = join(dir, 'config.json');
  const http = await freeTcpPort();
  writeFileSync(
    config,
    JSON.stringify({
      detector: { udp: { host: '127.0.0.1', basePort: base } },
      election: { endpoint: `tcp://127.0.0.1:${await freeTcpPort()}` },
      merger: { control: `tcp://127.0.0.1:${await freeTcpPort()}`, results: `tcp://127.0.0.1:${await freeTcpPort()}`, http: { host: '127.0.0.1', port: http }, chunkTimeoutMs: 3000 },
    }),
  );
  console.log(`scan ${SCAN[0]}x${SCAN[1]} (${POSITIONS} frames per single scan), one partial per row, UDFs: ${defaultAcquisition(SCAN).udfs.map((u) => u.name).join(', ')}; camera = this process`);
  const roles: Role[] = [];
  const camera = new Camera(base);
  const client = new TesseraClient({ url: `http://127.0.0.1:${http}`, WebSocket: WebSocket as unknown as WebSocketConstructor });
  try {
    roles.push(spawnRole(['merger', '-c', config]));
    await until(() => roles[0]!.lines.some((l) => l.msg === 'merger listening'), 30_000, 'the merger');
    for (let s = 0; s < NUM_SECTORS; s++) roles.push(spawnRole(['receiver', '--sector', String(s), '-c', config]));
    await until(async () => (await client.api.status().catch(() => null))?.sectors.every((s) => s.state === 'alive') ?? false, 30_000, 'eight receivers');
    await camera.open();
    await client.connect();

    // 1. the ladder
    let best = 0;
    const sendRates: number[] = [];
    for (const fps of LADDER) {
      let pass = true;
      for (let t = 0; t < TRIALS && pass; t++) {
        const r = await trial(client, camera, roles[0]!, fps);
        sendRates.push(r.sendFps);
        console.log(`  ${fps} fps (camera sent at ${r.sendFps.toFixed(0)} fps): ${r.ok ? 'no loss' : r.why}`);
        pass = r.ok && r.sendFps >= fps * 0.9;
      }
      if (!pass) break;
      best = fps;
    }
    report('pipeline: highest per-sector frame rate without loss, 8 receivers + merger', best, 'fps', best / 400, "the detector's 400 fps");
    report('camera (this process): highest send rate reached', Math.max(...sendRates), 'fps', Math.max(...sendRates) / 400, "the detector's 400 fps");

    // 2. latency at a rate well inside the limit
    const fps = Math.max(10, Math.floor((best || 25) / 2));
    const rowEnd: number[] = [];
    const all: number[] = [];
    for (let t = 0; t < LATENCY_TRIALS; t++) {
      const r = await trial(client, camera, roles[0]!, fps);
      rowEnd.push(...r.latencyRowEnd);
      all.push(...r.latencyAll);
    }
    const rowTime = (SCAN[1] * 1000) / fps;
    report(`latency last datagram -> client, row-completing frames, p50 at ${fps} fps`, median(rowEnd), 'ms', median(rowEnd) / rowTime, `one row of frames (${rowTime.toFixed(0)} ms)`);
    report(`latency last datagram -> client, row-completing frames, p99 at ${fps} fps`, percentile(rowEnd, 0.99), 'ms', percentile(rowEnd, 0.99) / 100, 'the 100 ms goal');
    report(`latency last datagram -> client, every frame (incl. waiting for its row), p50 at ${fps} fps`, median(all), 'ms', median(all) / rowTime, 'one row of frames');
    report(`latency last datagram -> client, every frame, p99 at ${fps} fps`, percentile(all, 0.99), 'ms', percentile(all, 0.99) / 100, 'the 100 ms goal');
  } finally {
    await client.close().catch(() => {});
    camera.close();
    for (const r of roles.reverse()) if (r.child.exitCode === null) r.child.kill('SIGTERM');
    await Promise.all(roles.map((r) => new Promise((res) => (r.child.exitCode !== null ? res(null) : r.child.once('exit', res)))));
  }
}
