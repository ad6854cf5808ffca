/**
 * The whole-frame path: the shuffle's throughput, frame workers' peak finding through it, and
 * live strain maps end to end.
 *
 * 1. Shuffle throughput: this process plays 8 receivers (DEALERs sending 1860 x 256 uint16
 *    sector slices, 952 KB, 8 per frame) and a worker (a DEALER with plenty of credit); the
 *    shuffle is a real `tessera shuffle` process. GB/s of slices in = frames out x 7.6 MB.
 *    Reference, same run, same message sizes: ZeroMQ alone, PUSH -> PULL over loopback TCP
 *    between this process and a forwarding child (no reassembly). Both with 952 KB (decoded)
 *    and 714 KB (12-bit packed) slices; the packed path would also decode 8 x 714 KB per
 *    frame at the shuffle (measured: the WebAssembly decoder on the same bytes).
 * 2. Peak finding through the shuffle: a `tessera worker` running StrainMapUDF with 8 and 32
 *    peaks on simulator frames that went through the shuffle; frames per CPU-second of the
 *    worker process (/proc/<pid>/stat), against the detector's 400 fps.
 * 3. End to end: simulator -> 8 receivers -> shuffle -> 2 workers -> merger, a continuous scan;
 *    strain maps merged per second at the merger (`_shuffle/counters`), and how many frames the
 *    shuffle skipped to keep up, against the camera's rate.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_FRAME_PAYLOAD_BYTES, SECTOR_WIDTH } from '../src/k2is/constants.js';
import { Uint12Decoder } from '../src/k2is/decode12.js';
import { SimulatedScan } from '../src/k2is/simulator/scene.js';
import { CLI_PATH, PROJECT_ROOT } from '../src/paths.js';
import { encodeLive, LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../src/protocol/live.js';
import { decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION } from '../src/shuffle/protocol.js';
import { measure, median, report } from './lib.js';
import { freeTcpPort } from './free-ports.js';

const H = FRAME_HEIGHT;
const W = FRAME_WIDTH;
const SLICE_BYTES = H * SECTOR_WIDTH * 2;
const DETECTOR_FPS = 400;


interface Child {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
}

function spawnCli(args: string[]): Child {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, TESSERA_LOG_JSON: '1', TESSERA_LOG_LEVEL: 'info' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const c: Child = { child, lines: [] };
  let buf = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      try {
        c.lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      } catch {
        // not JSON
      }
      buf = buf.slice(i + 1);
    }
  });
  return c;
}

async function waitFor(c: Child, msg: string, ms = 30_000): Promise<Record<string, unknown>> {
  const end = Date.now() + ms;
  for (;;) {
    const hit = c.lines.find((l) => l.msg === msg);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no "${msg}" within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stop(c: Child): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return;
  const exited = new Promise((r) => c.child.once('exit', r));
  c.child.kill('SIGTERM');
  const t = setTimeout(() => c.child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

/** CPU seconds a process used so far (Linux /proc). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

/** Sector slices of a frame, each 1860 x 256 uint16. */
function slicesOf(frame: Uint16Array): Buffer[] {
  return Array.from({ length: 8 }, (_, s) => {
    const out = new Uint16Array(H * SECTOR_WIDTH);
    for (let y = 0; y < H; y++) out.set(frame.subarray(y * W + s * SECTOR_WIDTH, y * W + (s + 1) * SECTOR_WIDTH), y * SECTOR_WIDTH);
    return Buffer.from(out.buffer);
  });
}

/** A shuffle process fed by 8 DEALERs of this process; frames go to workers (or to this process). */
class ShuffleRig {
  shuffle!: Child;
  slices = '';
  frames = '';
  results = '';
  senders: zmq.Dealer[] = [];
  merger!: zmq.Dealer;
  config = '';

  async start(extra: string[] = []): Promise<void> {
    this.slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
    this.frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
    this.results = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-shuffle-'));
    this.config = join(dir, 'config.json');
    writeFileSync(this.config, JSON.stringify({ shuffle: { slices: this.slices, frames: this.frames }, merger: { results: this.results } }));
    this.shuffle = spawnCli(['shuffle', '-c', this.config, '--fixed-rate', '--max-queued', '16', '--frame-timeout', '5000', ...extra]);
    await waitFor(this.shuffle, 'shuffle listening');
    this.merger = new zmq.Dealer({ routingId: 'merger', linger: 0 });
    this.merger.connect(this.slices);
    for (let s = 0; s < 8; s++) {
      const d = new zmq.Dealer({ routingId: `slices-${s}`, linger: 0, sendHighWaterMark: 64 });
      d.connect(this.slices);
      this.senders.push(d);
      await d.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'hello', sector: s, pid: process.pid, ruleVersion: 0 }));
    }
  }

  async acquire(id: string, udfs: AcquireMessage['udfs']): Promise<void> {
    const m: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: id, scanShape: [256, 256], roi: null, udfs, chunkSize: 256, mode: 'continuous', start: { shutterRound: 1, startIndex: 0 } };
    await this.merger.send(encodeLive(m));
    await waitFor(this.shuffle, 'shuffle: acquisition');
    await new Promise((r) => setTimeout(r, 300));
  }

  async sendFrame(id: string, index: number, slices: Buffer[]): Promise<void> {
    await Promise.all(
      slices.map((px, s) =>
        this.senders[s]!.send([
          encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'slice', sector: s, round: 1, index, acquisition: id, row0: 0, rows: H, damage: 0 }),
          px,
        ]),
      ),
    );
  }

  async close(): Promise<void> {
    for (const d of this.senders) d.close();
    this.merger.close();
    await stop(this.shuffle);
  }
}

/** GB/s of slices through the shuffle to a worker DEALER of this process, `window` frames in flight. */
async function shuffleThroughput(rig: ShuffleRig, id: string, first: number, frames: number, window: number): Promise<number> {
  const worker = new zmq.Dealer({ routingId: `bench-worker-${first}`, linger: 0, receiveHighWaterMark: 64 });
  worker.connect(rig.frames);
  await worker.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'credit', pid: process.pid, n: 1000 }));
  await new Promise((r) => setTimeout(r, 300));
  const slices = slicesOf(new SimulatedScan({ scanShape: [1, 8], seed: 3 }).frame(4));
  let received = 0;
  const done = (async () => {
    while (received < frames) {
      const m = await worker.receive();
      if (m.length === 2) received++;
    }
  })();
  const t0 = performance.now();
  for (let i = 0; i < frames; i++) {
    while (i - received >= window) await new Promise((r) => setTimeout(r, 1));
    await rig.sendFrame(id, first + i, slices);
  }
  await done;
  const seconds = (performance.now() - t0) / 1000;
  worker.close();
  return (frames * 8 * SLICE_BYTES) / seconds / 1e9;
}

/** ZeroMQ alone: PUSH (this process) -> forwarding child (PULL -> PUSH) -> PULL (this process), messages of `bytes`. */
async function zmqThroughput(bytes: number, messages: number): Promise<number> {
  const a = `tcp://127.0.0.1:${await freeTcpPort()}`;
  const b = `tcp://127.0.0.1:${await freeTcpPort()}`;
  const code = `
    const zmq = require(${JSON.stringify(join(PROJECT_ROOT, 'node_modules', 'zeromq'))});
    (async () => {
      const pull = new zmq.Pull({ linger: 0 }); const push = new zmq.Push({ linger: 0 });
      await pull.bind(${JSON.stringify(a)}); await push.bind(${JSON.stringify(b)});
      process.stderr.write('ready\\n');
      for (;;) { const [m] = await pull.receive(); await push.send(m); }
    })();`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve) => child.stderr!.once('data', () => resolve()));
  const push = new zmq.Push({ linger: 0, sendHighWaterMark: 16 });
  const pull = new zmq.Pull({ linger: 0 });
  push.connect(a);
  pull.connect(b);
  const msg = Buffer.alloc(bytes, 7);
  const warm = 8;
  let got = 0;
  let t0 = 0;
  const done = (async () => {
    while (got < messages + warm) {
      await pull.receive();
      if (++got === warm) t0 = performance.now();
    }
  })();
  for (let i = 0; i < messages + warm; i++) await push.send(msg);
  await done;
  const gbs = (messages * bytes) / ((performance.now() - t0) / 1000) / 1e9;
  push.close();
  pull.close();
  child.kill('SIGKILL');
  return gbs;
}

async function peakFindingThroughShuffle(peaks: number): Promise<{ fps: number; frames: number }> {
  const rig = new ShuffleRig();
  await rig.start();
  const pull = new zmq.Pull({ linger: 0 });
  await pull.bind(rig.results);
  let resultMessages = 0;
  const collector = (async () => {
    for (;;) {
      try {
        const m = await pull.receive();
        if (m.length === 2 && decodeShuffle(m[1]!).type === 'frames') resultMessages++;
      } catch {
        return;
      }
    }
  })();
  const worker = spawnCli(['worker', '-c', rig.config, '--credits', '2']);
  await waitFor(worker, 'worker started');
  await new Promise((r) => setTimeout(r, 500));
  const scan = new SimulatedScan({ scanShape: [1, 8], seed: 3 });
  const params = { lattice: { zero: [(H - 1) / 2, (W - 1) / 2], a: [...scan.a0], b: [...scan.b0] }, template: { type: 'disk', radius: 22 }, maxPeaks: peaks };
  const id = `bench-peaks-${peaks}`;
  await rig.acquire(id, [{ id: 'strain', name: 'StrainMapUDF', params }]);
  await waitFor(worker, 'worker: acquisition');
  const slices = [4, 5, 6, 7].map((p) => slicesOf(scan.frame(p)));
  const frames = 48;
  const pid = worker.child.pid!;
  const cpu0 = cpuSeconds(pid);
  for (let i = 0; i < frames; i++) {
    // keep the shuffle a few frames ahead of the worker, never skipping
    const processed = () => Number(worker.lines.filter((l) => l.msg === 'worker stats').at(-1)?.frames ?? 0);
    while (i - processed() > 12) await new Promise((r) => setTimeout(r, 20));
    await rig.sendFrame(id, i, slices[i % 4]!);
  }
  const end = Date.now() + 120_000;
  let cpu1 = cpu0;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 250));
    const last = worker.lines.filter((l) => l.msg === 'worker stats').at(-1);
    if (Number(last?.frames ?? 0) >= frames) break;
  }
  cpu1 = cpuSeconds(pid);
  const done = Number(worker.lines.filter((l) => l.msg === 'worker stats').at(-1)?.frames ?? 0);
  await stop(worker);
  await rig.close();
  pull.close();
  await collector;
  if (resultMessages === 0) throw new Error('the worker sent no results');
  // the CPU of the worker includes idle waits for frames: an upper bound on the cost per frame
  return { fps: done / (cpu1 - cpu0), frames: done };
}

async function endToEnd(): Promise<{ mergedFps: number; skippedFps: number; cameraFps: number; decimate: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-e2e-'));
  const base = 20_000 + Math.floor(Math.random() * 20_000);
  const port = async () => `tcp://127.0.0.1:${await freeTcpPort()}`;
  const http = await freeTcpPort();
  const cfg = {
    detector: { udp: { host: '127.0.0.1', basePort: base } },
    merger: { control: await port(), results: await port(), http: { host: '127.0.0.1', port: http }, chunkTimeoutMs: 5000 },
    election: { endpoint: await port() },
    shuffle: { slices: await port(), frames: await port() },
  };
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify(cfg));
  const roles: Child[] = [];
  const cameraFps = 50;
  try {
    const merger = spawnCli(['merger', '-c', config]);
    roles.push(merger);
    const url = String((await waitFor(merger, 'merger listening')).url);
    roles.push(spawnCli(['shuffle', '-c', config]));
    for (let w = 0; w < 2; w++) roles.push(spawnCli(['worker', '-c', config]));
    for (let s = 0; s < 8; s++) roles.push(spawnCli(['receiver', '--sector', String(s), '-c', config]));
    await waitFor(merger, 'shuffle connected');
    const api = async (path: string, body?: unknown) => {
      const r = await fetch(`${url}${path}`, body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return (await r.json()) as Record<string, unknown>;
    };
    const end = Date.now() + 30_000;
    while (Date.now() < end) {
      const s = (await api('/api/status')) as { sectors: Array<{ state: string }> };
      if (s.sectors.every((x) => x.state === 'alive')) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    await new Promise((r) => setTimeout(r, 1500)); // the shuffle's status with its workers
    const scan: [number, number] = [8, 16];
    const sim = new SimulatedScan({ scanShape: scan, seed: 5 });
    const strain = { lattice: { zero: [(H - 1) / 2, (W - 1) / 2], a: [...sim.a0], b: [...sim.b0] }, template: { type: 'disk', radius: 22 }, maxPeaks: 8 };
    const camera = spawnCli(['simulate', '-c', config, '--scan', `${scan[0]}x${scan[1]}`, '--fps', String(cameraFps), '--seed', '5', '--continuous']);
    roles.push(camera);
    await new Promise((r) => setTimeout(r, 3000));
    const def = await api('/api/acquisitions', { scanShape: scan, udfs: [{ id: 'sum', name: 'SumUDF' }, { id: 'strain', name: 'StrainMapUDF', params: strain }], mode: 'continuous' });
    if (typeof def.id !== 'string') throw new Error(`define failed: ${JSON.stringify(def)}`);
    await api(`/api/acquisitions/${def.id}/start`, {});
    // frames the two workers processed and pushed to the merger, and the shuffle's skips
    const shuffle = roles[1]!;
    const workers = [roles[2]!, roles[3]!];
    const workerFrames = () => workers.reduce((n, w) => n + Number(w.lines.filter((l) => l.msg === 'worker stats').at(-1)?.frames ?? 0), 0);
    await new Promise((r) => setTimeout(r, 6000));
    const first = { t: Date.now(), frames: workerFrames(), skipped: Number(shuffle.lines.filter((l) => l.msg === 'shuffle stats').at(-1)?.framesSkipped ?? 0) };
    await new Promise((r) => setTimeout(r, 12_000));
    const dt = (Date.now() - first.t) / 1000;
    const merged = (workerFrames() - first.frames) / dt;
    const skipped = (Number(shuffle.lines.filter((l) => l.msg === 'shuffle stats').at(-1)?.framesSkipped ?? 0) - first.skipped) / dt;
    const decimate = Number(shuffle.lines.filter((l) => l.msg === 'shuffle stats').at(-1)?.decimate ?? 1);
    return { mergedFps: merged, skippedFps: skipped, cameraFps, decimate };
  } finally {
    for (const r of roles.reverse()) await stop(r);
  }
}

export async function run(): Promise<void> {
  console.log(`# load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  // 1. throughput, decoded slices, vs ZeroMQ alone on the same message size
  const shuffleRuns: number[] = [];
  const rig = new ShuffleRig();
  await rig.start();
  try {
    await rig.acquire('bench-throughput', []);
    for (let r = 0; r < 3; r++) {
      shuffleRuns.push(await shuffleThroughput(rig, 'bench-throughput', r * 1000, 60, 6));
      console.log(`# shuffle run ${r + 1}: ${shuffleRuns[r]!.toFixed(2)} GB/s`);
    }
  } finally {
    await rig.close();
  }
  const zmqDecoded = median([await zmqThroughput(SLICE_BYTES, 300), await zmqThroughput(SLICE_BYTES, 300), await zmqThroughput(SLICE_BYTES, 300)]);
  const zmqPacked = median([await zmqThroughput(SECTOR_FRAME_PAYLOAD_BYTES, 300), await zmqThroughput(SECTOR_FRAME_PAYLOAD_BYTES, 300), await zmqThroughput(SECTOR_FRAME_PAYLOAD_BYTES, 300)]);
  const shuffle = median(shuffleRuns);
  report('ZeroMQ alone, 952 KB messages (decoded slice), PUSH -> forwarder -> PULL', zmqDecoded, 'GB/s');
  report('ZeroMQ alone, 714 KB messages (12-bit packed slice), PUSH -> forwarder -> PULL', zmqPacked, 'GB/s');
  report('shuffle: 8 decoded slices in -> whole frame out to a worker', shuffle, 'GB/s', shuffle / zmqDecoded, 'ZeroMQ alone, same message size');
  report('shuffle: whole frames out', (shuffle * 1e9) / (8 * SLICE_BYTES), 'frames/s', (shuffle * 1e9) / (8 * SLICE_BYTES) / DETECTOR_FPS, "the detector's 400 fps");
  // packed: fewer bytes on the wire, but the shuffle would decode 8 sector frames per frame
  const decoder = Uint12Decoder.create({ initialBytes: 4 << 20 });
  const src = decoder.alloc(SECTOR_FRAME_PAYLOAD_BYTES);
  const dst = decoder.alloc(SLICE_BYTES);
  decoder.bytes(src, SECTOR_FRAME_PAYLOAD_BYTES).forEach((_, i, a) => (a[i] = (i * 37) & 0xff));
  const decode = measure(() => decoder.decode(src, dst, SECTOR_FRAME_PAYLOAD_BYTES), { bytes: SECTOR_FRAME_PAYLOAD_BYTES });
  // per frame: 8 x 714 KB on the wire at ZeroMQ's rate, then 8 decodes on the shuffle's core
  const packedFrameS = (8 * SECTOR_FRAME_PAYLOAD_BYTES) / (zmqPacked * 1e9) + (8 * SECTOR_FRAME_PAYLOAD_BYTES) / (decode * 1e9);
  const decodedFrameS = (8 * SLICE_BYTES) / (zmqDecoded * 1e9);
  report('12-bit decode at the shuffle (WebAssembly, one sector frame)', decode, 'GB/s packed');
  report('ZeroMQ + decode, packed slices: whole frames/s the transport allows', 1 / packedFrameS, 'frames/s', decodedFrameS / packedFrameS, 'decoded slices over ZeroMQ');
  report('ZeroMQ, decoded slices: whole frames/s the transport allows', 1 / decodedFrameS, 'frames/s', 1 / decodedFrameS / DETECTOR_FPS, "the detector's 400 fps");
  // 2. peak finding per worker core, through the shuffle
  for (const peaks of [8, 32]) {
    const r = await peakFindingThroughShuffle(peaks);
    report(`worker: StrainMapUDF ${peaks} peaks on frames through the shuffle (${r.frames} frames)`, r.fps, 'frames/s per worker core', r.fps / DETECTOR_FPS, "the detector's 400 fps");
  }
  // 3. end to end
  const e = await endToEnd();
  report('end to end: strain maps with 2 workers (simulator -> 8 receivers -> shuffle -> 2 workers -> merger)', e.mergedFps, 'frames/s', e.mergedFps / e.cameraFps, `the camera's ${e.cameraFps} fps`);
  report('end to end: frames skipped by the shuffle to keep up', e.skippedFps, 'frames/s', e.skippedFps / e.cameraFps, `the camera's ${e.cameraFps} fps`);
  report('end to end: selection rate the shuffle settled on (1 of N frames)', e.decimate, 'N');
}
