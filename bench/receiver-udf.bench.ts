/**
 * A receiver running the live UDFs of a merger acquisition: Sum + SumSig + ApplyMasks (4
 * disks) + CoM on its sector slice, one partial result per scan row (32 frames), against the
 * same receiver without UDFs, in the same run.
 *
 * 1. In process (no socket): pre-built datagrams pushed into a SectorReceiver whose
 *    PartialRunner builds and encodes every partial (msgpack, as sent): datagrams/s, as a
 *    multiple of one sector's 400 fps rate (12 800 datagrams/s), with and without UDFs. This
 *    is the receive path's CPU ceiling on one core.
 * 2. Over UDP into one `tessera receiver` process driven by a stand-in merger (ROUTER + PULL in
 *    this process) that arms the acquisition: a rate ladder in multiples of 400 fps, three
 *    fresh processes per rate: the highest rate at which no datagram was lost, with and
 *    without UDFs, and the UDFs' time per frame (PartialRunner busy time). Two feeders:
 *    `tessera simulate --continuous` (after a short warm-up scan), which renders every frame
 *    and so may not reach the rates a receiver takes on this machine (then the figure is "at
 *    least"), and the paced sender of receiver.bench.ts (pre-built datagrams, headers patched,
 *    warmed up by 1 s at 0.25x), which does.
 *
 *   npm run bench receiver-udf        (after npm run build)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as yieldNow } from 'node:timers/promises';
import * as zmq from 'zeromq';
import { loadConfig } from '../src/config.js';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME } from '../src/k2is/constants.js';
import { CLI_PATH } from '../src/paths.js';
import {
  decodeReceiverMessage,
  encodeLive,
  LIVE_PROTOCOL_VERSION,
  type AcquireMessage,
  type HeartbeatMessage,
  type LiveUdf,
} from '../src/protocol/live.js';
import { PartialRunner } from '../receivers/partial-runner.js';
import { SectorReceiver } from '../receivers/receiver.js';
import { measure, median, report } from './lib.js';
import { buildDatagrams, patch, sendPaced } from './receiver.bench.js';

const SECTOR_RATE = 400 * BLOCKS_PER_SECTOR_FRAME;
const SCAN: [number, number] = [32, 32];

/** Four virtual detectors on sector 0's slice (columns 0..255), of the sizes of diffraction disks and a bright-field disk, plus the other three kinds. */
const UDFS: LiveUdf[] = [
  { id: 'sum', name: 'SumUDF', params: {} },
  { id: 'sumsig', name: 'SumSigUDF', params: {} },
  {
    id: 'vd',
    name: 'ApplyMasksUDF',
    params: {
      masks: [
        { type: 'disk', cy: 930, cx: 128, r: 120 },
        { type: 'disk', cy: 600, cx: 128, r: 60 },
        { type: 'disk', cy: 1260, cx: 128, r: 60 },
        { type: 'disk', cy: 930, cx: 40, r: 40 },
      ],
    },
  },
  { id: 'com', name: 'CoMUDF', params: {} },
];

function acquire(acquisition: string): AcquireMessage {
  return { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition, scanShape: SCAN, roi: null, udfs: UDFS, chunkSize: SCAN[1], mode: 'continuous', start: null };
}

// ---------------------------------------------------------------------------------------------

async function inProcess(): Promise<void> {
  const config = loadConfig();
  const datagrams = buildDatagrams(16);
  const batchBytes = datagrams.length * BLOCK_SIZE;
  const perDatagram = (gbps: number) => (gbps * 1e9) / BLOCK_SIZE;
  const figures: Record<string, number> = {};
  for (const withUdfs of [false, true]) {
    let partialBytes = 0;
    const runner = new PartialRunner({ sector: 0, sectors: 8, send: (p) => (partialBytes += encodeLive(p).byteLength) });
    const rx = await SectorReceiver.start({ sector: 0, config, election: false, scan: SCAN, continuous: true, udp: false, sinks: withUdfs ? [runner] : [] });
    if (withUdfs) runner.arm(acquire('bench'));
    let n = 0;
    const feed = () => {
      for (const d of datagrams) {
        patch(d, n++, 2);
        rx.push(d);
      }
    };
    feed();
    await yieldNow(); // the (local) start decision
    for (let k = 0; k < 8; k++) feed(); // past a few chunk ends: compiled code from here on
    runner.stats.maxStallMs = 0;
    const gbps = measure(feed, { bytes: batchBytes, runs: 5, minTimeMs: 300 });
    if (withUdfs && (runner.stats.chunksSent === 0 || partialBytes === 0)) throw new Error('the runner sent nothing: the figure would be meaningless');
    const c = rx.counters;
    if (c.framesDamaged + c.framesMissing !== 0 || c.ok !== c.received) throw new Error('the in-process run lost data');
    figures[withUdfs ? 'udfs' : 'none'] = perDatagram(gbps);
    const label = withUdfs ? 'in process: assemble + decode + Sum, SumSig, ApplyMasks(4 disks), CoM + partials (msgpack)' : 'in process: assemble + decode, no UDFs';
    report(label, perDatagram(gbps), 'datagrams/s', perDatagram(gbps) / SECTOR_RATE, 'one sector at 400 fps');
    if (withUdfs) {
      report('in process: UDF time per sector frame', runner.stats.busyMs / runner.stats.framesProcessed, 'ms', runner.stats.busyMs / runner.stats.framesProcessed / 2.5, '2.5 ms budget of a frame at 400 fps');
      report('in process: longest stall of the receive loop by the runner (a chunk end: finish + msgpack of 3.8 MB)', runner.stats.maxStallMs, 'ms');
    }
    await rx.stop();
  }
  report('in process: rate with UDFs vs without', figures.udfs! / figures.none!, 'x');
}

// ---------------------------------------------------------------------------------------------

class BenchMerger {
  readonly router = new zmq.Router({ linger: 0, handover: true });
  readonly pull = new zmq.Pull({ linger: 0 });
  latest: HeartbeatMessage | null = null;
  ready = new Set<string>();
  partials = 0;
  private closed = false;

  async start(): Promise<void> {
    await this.router.bind('tcp://127.0.0.1:*');
    await this.pull.bind('tcp://127.0.0.1:*');
    void this.controlLoop();
    void this.resultsLoop();
  }

  /** The first heartbeat sent after `t` (ms since epoch) by process `pid` (any if omitted). */
  async heartbeatAfter(t: number, pid?: number, timeoutMs = 15_000): Promise<HeartbeatMessage> {
    const deadline = Date.now() + timeoutMs;
    while (!this.latest || this.latest.sentAt <= t || (pid !== undefined && this.latest.pid !== pid)) {
      if (Date.now() > deadline) throw new Error('no heartbeat from the receiver');
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.latest;
  }

  close(): void {
    this.closed = true;
    this.router.close();
    this.pull.close();
  }

  private async controlLoop(): Promise<void> {
    while (!this.closed) {
      try {
        const [, body] = await this.router.receive();
        const m = decodeReceiverMessage(body!);
        if (m.type === 'heartbeat') this.latest = m;
        else if (m.type === 'ready') this.ready.add(m.acquisition);
        else throw new Error(`receiver refused: ${m.code} ${m.message}`);
      } catch (err) {
        if (!this.closed) console.error(String(err));
        return;
      }
    }
  }

  private async resultsLoop(): Promise<void> {
    while (!this.closed) {
      try {
        await this.pull.receive();
        this.partials++;
      } catch {
        return;
      }
    }
  }
}

function lines(child: ChildProcess, pred: (l: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('process did not answer in time')), timeoutMs);
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const l = JSON.parse(line) as Record<string, unknown>;
          if (pred(l)) {
            clearTimeout(t);
            child.stderr!.off('data', onData);
            resolve(l);
            return;
          }
        } catch {
          // not JSON
        }
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', () => reject(new Error('process exited')));
  });
}

function cli(args: string[]): ChildProcess {
  return spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, TESSERA_LOG_JSON: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
}

async function simulate(port: number, args: string[]): Promise<{ frames: number; fps: number }> {
  const sim = cli(['simulate', '--udp', `127.0.0.1:${port}`, '--sectors', '0', ...args]);
  const done = await lines(sim, (l) => l.msg === 'simulation done', 120_000);
  await new Promise((r) => (sim.exitCode === null ? sim.once('exit', r) : r(null)));
  return { frames: done.frames as number, fps: done.fps as number };
}

interface RunResult {
  sent: number;
  lost: number;
  offeredFps: number;
  damaged: number;
  busyMsPerFrame: number;
  partials: number;
}

type Feeder = 'simulator' | 'paced';

/** acquisition ids stay unique over the whole run (the stand-in merger remembers every ready) */
let acquisitions = 0;

/** Pre-built datagrams (random 12-bit payloads, headers patched per frame) for the paced sender. */
const RING = buildDatagrams(32);

async function oneRun(cfgPath: string, port: number, merger: BenchMerger, feeder: Feeder, withUdfs: boolean, fps: number, seconds: number, k: number): Promise<RunResult> {
  const rx = cli(['receiver', '--sector', '0', '--config', cfgPath, '--no-election']);
  const events: string[] = [];
  rx.stderr!.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) if (/"msg":"(live|acquisition|first shutter|stream)/.test(line)) events.push(line.slice(0, 300));
  });
  try {
    await lines(rx, (l) => l.msg === 'receiver listening');
    await merger.heartbeatAfter(0, rx.pid); // connected: the control channel reaches this process
    // warm-up: a short scan at 100 fps (a fresh process receives slowly for its first ~150 ms);
    // the paced sender warms up within its stream
    if (feeder === 'simulator') await simulate(port, ['--scan', '8x8', '--frames-before', '36', '--frames-after', '0', '--fps', '100', '--seed', String(k)]);
    const id = `bench-${++acquisitions}`;
    if (withUdfs) {
      // as a merger does: repeat acquire until ready (a repeat is a no-op on the receiver)
      const deadline = Date.now() + 10_000;
      for (let next = 0; !merger.ready.has(id); ) {
        if (Date.now() > deadline) throw new Error('no ready from the receiver');
        if (Date.now() >= next) {
          await merger.router.send(['receiver-0', encodeLive(acquire(id))]);
          next = Date.now() + 300;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const before = await merger.heartbeatAfter(Date.now(), rx.pid);
    const partials0 = merger.partials;
    let sent: number;
    let offeredFps: number;
    if (feeder === 'simulator') {
      const frames = 8 + Math.round(fps * seconds);
      const sim = await simulate(port, ['--scan', `${SCAN[0]}x${SCAN[1]}`, '--continuous', '--frames-before', '8', '--max-frames', String(frames), '--fps', String(fps), '--seed', String(k)]);
      sent = sim.frames * BLOCKS_PER_SECTOR_FRAME;
      offeredFps = sim.fps;
    } else {
      const s = await sendPaced(port, fps * BLOCKS_PER_SECTOR_FRAME, seconds, RING, 1);
      sent = s.sent + s.warmSent;
      offeredFps = s.sent / s.seconds / BLOCKS_PER_SECTOR_FRAME;
    }
    await new Promise((r) => setTimeout(r, 600));
    const after = await merger.heartbeatAfter(Date.now(), rx.pid);
    const d = (key: string) => (after.counters[key] ?? 0) - (before.counters[key] ?? 0);
    if (withUdfs && d('live.framesProcessed') === 0) throw new Error(`the UDFs processed no frame: the figure would be meaningless\n${events.join('\n')}`);
    return {
      sent,
      lost: sent - d('received'),
      offeredFps,
      damaged: d('framesDamaged') + d('framesMissing'),
      busyMsPerFrame: d('live.framesProcessed') > 0 ? d('live.busyMs') / d('live.framesProcessed') : 0,
      partials: merger.partials - partials0,
    };
  } finally {
    rx.kill('SIGTERM');
    await new Promise((r) => (rx.exitCode === null ? rx.once('exit', r) : r(null)));
  }
}

async function ladder(name: string, cfgPath: string, port: number, merger: BenchMerger, feeder: Feeder, withUdfs: boolean): Promise<{ fps: number; capped: boolean; busy: number }> {
  const RATIOS = [0.5, 1, 1.5, 2, 2.5, 3, 4];
  const RUNS = 3;
  const SECONDS = 2;
  let best = 0;
  let busy = NaN;
  let k = 0;
  for (const ratio of RATIOS) {
    const fps = ratio * 400;
    const runs: RunResult[] = [];
    for (let r = 0; r < RUNS; r++) runs.push(await oneRun(cfgPath, port, merger, feeder, withUdfs, fps, SECONDS, ++k));
    const loss = median(runs.map((x) => x.lost / x.sent));
    const offered = median(runs.map((x) => x.offeredFps));
    const extra = withUdfs ? `, ${median(runs.map((x) => x.partials))} partials, UDFs ${median(runs.map((x) => x.busyMsPerFrame)).toFixed(2)} ms/frame` : '';
    report(`${name}, offered ${ratio}x (${fps} fps, ${feeder} sent ${offered.toFixed(0)} fps${extra}): loss`, loss * 100, '%');
    if (offered < fps * 0.97) {
      report(`${name}: the ${feeder} cannot offer ${ratio}x here`, offered / 400, 'x 400 fps');
      return { fps: best, capped: true, busy };
    }
    if (loss > 0) return { fps: best, capped: false, busy };
    best = offered;
    busy = median(runs.map((x) => x.busyMsPerFrame));
  }
  return { fps: best, capped: true, busy };
}

async function overUdp(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-rxudf-'));
  const merger = new BenchMerger();
  await merger.start();
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
  const port = probe.address().port;
  await new Promise<void>((r) => probe.close(() => r()));
  const cfgPath = join(dir, 'bench.json');
  writeFileSync(cfgPath, JSON.stringify({ detector: { udp: { basePort: port } }, receiver: { statsIntervalMs: 60_000 }, merger: { control: merger.router.lastEndpoint, results: merger.pull.lastEndpoint } }));
  try {
    for (const feeder of ['simulator', 'paced'] as const) {
      const by = feeder === 'simulator' ? 'fed by tessera simulate' : 'fed pre-built datagrams (paced sender)';
      const none = await ladder(`${by}: receiver without UDFs`, cfgPath, port, merger, feeder, false);
      const udfs = await ladder(`${by}: receiver with Sum + SumSig + ApplyMasks(4) + CoM`, cfgPath, port, merger, feeder, true);
      const atLeast = (l: { capped: boolean }) => (l.capped ? ' (at least: the sender or the ladder stopped first)' : '');
      report(`${by}: receiver without UDFs: highest zero-loss rate${atLeast(none)}`, none.fps * BLOCKS_PER_SECTOR_FRAME, 'datagrams/s', none.fps / 400, 'one sector at 400 fps');
      report(`${by}: receiver with UDFs: highest zero-loss rate${atLeast(udfs)}`, udfs.fps * BLOCKS_PER_SECTOR_FRAME, 'datagrams/s', udfs.fps / 400, 'one sector at 400 fps');
      report(`${by}: receiver with UDFs vs without: zero-loss rate`, none.fps > 0 ? udfs.fps / none.fps : NaN, 'x');
      if (Number.isFinite(udfs.busy)) report(`${by}: UDF time per sector frame at that rate`, udfs.busy, 'ms', udfs.busy / 2.5, '2.5 ms budget of a frame at 400 fps');
    }
  } finally {
    merger.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  await inProcess();
  await overUdp();
}
