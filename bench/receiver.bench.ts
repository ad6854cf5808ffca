/**
 * The receiver's ingest path, two ways.
 *
 * 1. In process: pre-built datagrams (16 distinct sector frames, headers patched per frame)
 *    pushed straight into a SectorReceiver (no socket): assemble + shutter sync + decode into
 *    tiles, for several tile shapes, with a sink that ignores the tile and with one that reads
 *    every pixel (a stand-in for a UDF pass: it shows whether the tile is still in cache).
 *    Datagrams/s, and GB/s of datagram bytes against memcpy of the same bytes; plus assembly
 *    alone (frames outside an acquisition are not decoded).
 * 2. Over UDP: one `tessera receiver` process (compiled CLI) fed by a paced sender in this
 *    process (bursts of at most 64 datagrams, as evenly as the event loop allows), rate ladder
 *    in multiples of one sector's 400 fps rate (12 800 datagrams/s), three fresh processes per
 *    rate, each warmed up by 1 s of traffic at 0.25x: the highest rate whose median loss is zero. The same ladder against a bare
 *    Node dgram socket that only counts datagrams is the reference: the receiver's rate as a
 *    fraction of what Node's UDP receive path itself sustains here.
 *
 *   npm run bench receiver        (after npm run build)
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { setImmediate as yieldNow } from 'node:timers/promises';
import { loadConfig, type TesseraConfig } from '../src/config.js';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, SECTOR_FRAME_BYTES, SECTOR_PIXELS } from '../src/k2is/constants.js';
import { BLOCK_ORDER } from '../src/k2is/geometry.js';
import { encodeHeader, headerFor } from '../src/k2is/header.js';
import { CLI_PATH } from '../src/paths.js';
import { SectorReceiver } from '../receivers/receiver.js';
import type { SectorTile, TileSink } from '../receivers/tile.js';
import { formatBytes, measure, measureMemcpy, median, report } from './lib.js';

const SECTOR_RATE = 400 * BLOCKS_PER_SECTOR_FRAME; // datagrams/s of one sector at 400 fps
const TEMPLATE_FRAMES = 16;
const SHAPES = [
  { depth: 1, rows: 1860 },
  { depth: 2, rows: 930 },
  { depth: 4, rows: 465 },
  { depth: 20, rows: 93 },
  { depth: 1, rows: 93 },
  { depth: 4, rows: 1860 },
];
const TIMING = { runs: 5, minTimeMs: 200 };
/** seconds of traffic at 0.25x before each measured run */
const WARM_UP_SECONDS = 1;

/** Sector-frame datagrams with random (valid) 12-bit payloads, in send order. */
export function buildDatagrams(frames: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let x = 0x2545f491;
  for (let f = 0; f < frames; f++) {
    for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
      const d = new Uint8Array(BLOCK_SIZE);
      const { x: px, y: py } = BLOCK_ORDER[i]!;
      encodeHeader(headerFor({ flags: 0, blockCount: 32 * f + i, frameId: f, pixelXStart: px, pixelYStart: py }), d);
      for (let k = 40; k < BLOCK_SIZE; k++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        d[k] = x & 0xff;
      }
      out.push(d);
    }
  }
  return out;
}

/** Rewrite a datagram's header for stream position `n` (block n % 32 of frame n / 32). */
export function patch(d: Uint8Array, n: number, flagFrom: number): void {
  const frame = Math.floor(n / BLOCKS_PER_SECTOR_FRAME);
  const bc = n >>> 0;
  d[16] = bc >>> 24;
  d[17] = (bc >>> 16) & 0xff;
  d[18] = (bc >>> 8) & 0xff;
  d[19] = bc & 0xff;
  d[24] = frame >>> 24;
  d[25] = (frame >>> 16) & 0xff;
  d[26] = (frame >>> 8) & 0xff;
  d[27] = frame & 0xff;
  d[9] = frame >= flagFrom ? 1 : 0;
}

function withTile(config: TesseraConfig, tile: { depth: number; rows: number }): TesseraConfig {
  return { ...config, receiver: { ...config.receiver, tile } };
}

/** Reads every pixel of every tile (two per 32-bit word), as a UDF pass would. */
class SumSink implements TileSink {
  total = 0;
  onTile(t: SectorTile): void {
    const w = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length >>> 1);
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < w.length; i++) {
      const v = w[i]!;
      lo += v & 0xffff;
      hi += v >>> 16;
    }
    this.total += lo + hi;
  }
}

async function inProcess(config: TesseraConfig): Promise<void> {
  const datagrams = buildDatagrams(TEMPLATE_FRAMES);
  const batchBytes = datagrams.length * BLOCK_SIZE;
  const memcpy = measureMemcpy(batchBytes, TIMING);
  const ref = memcpy.best;
  const vs = `memcpy ${formatBytes(batchBytes)}`;
  report(`memcpy of the datagram bytes, ${formatBytes(batchBytes)}`, ref, 'GB/s');

  const feeder = (rx: SectorReceiver, flagFrom: number) => {
    let n = 0;
    return () => {
      for (const d of datagrams) {
        patch(d, n++, flagFrom);
        rx.push(d);
      }
    };
  };

  // assembly alone: the flag never rises, frames are released undecoded
  {
    const rx = await SectorReceiver.start({ sector: 0, config, election: false, scan: null, udp: false });
    const gbps = measure(feeder(rx, Infinity), { ...TIMING, bytes: batchBytes });
    if (rx.counters.framesComplete === 0 || rx.counters.tiles !== 0) throw new Error('assembly-only run did not assemble');
    report('assemble only (validate, place, emit; no decode)', (gbps * 1e9) / BLOCK_SIZE, 'datagrams/s', (gbps * 1e9) / BLOCK_SIZE / SECTOR_RATE, 'one sector at 400 fps');
    report('assemble only, bytes', gbps, 'GB/s', gbps / ref, vs);
    await rx.stop();
  }

  for (const sinkKind of ['none', 'sum'] as const) {
    for (const shape of SHAPES) {
      const sink = sinkKind === 'sum' ? new SumSink() : { onTile: () => {} };
      const rx = await SectorReceiver.start({ sector: 0, config: withTile(config, shape), election: false, scan: null, udp: false, sinks: [sink] });
      const feed = feeder(rx, 2);
      // past the shutter edge first: the acquisition starts once the (local) decision is in
      feed();
      await yieldNow();
      const gbps = measure(feed, { ...TIMING, bytes: batchBytes });
      const c = rx.counters;
      if (c.framesInScan < TEMPLATE_FRAMES || c.framesDamaged + c.framesMissing + c.framesDroppedWhileVoting !== 0 || c.ok !== c.received) {
        throw new Error(`shape ${shape.depth}x${shape.rows}: the run lost data, its figure would be meaningless`);
      }
      const tileBytes = shape.depth * shape.rows * 256 * 2;
      const label = `assemble + decode${sinkKind === 'sum' ? ' + sum pass' : ''}, tile ${shape.depth} x ${shape.rows} x 256 (${formatBytes(tileBytes)})`;
      report(label, (gbps * 1e9) / BLOCK_SIZE, 'datagrams/s', (gbps * 1e9) / BLOCK_SIZE / SECTOR_RATE, 'one sector at 400 fps');
      report(`${label}, bytes`, gbps, 'GB/s', gbps / ref, vs);
      await rx.stop();
    }
  }
}

// --------------------------------------------------------------------------------------------

interface Sink {
  port: number;
  /** stops it and resolves with the datagrams it received (and ok for the receiver) */
  stop(): Promise<{ received: number; ok: number }>;
}

function waitLine(child: ReturnType<typeof spawn>, pred: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('receiver did not answer in time')), timeoutMs);
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
            child.stdout!.off('data', onData);
            resolve(l);
            return;
          }
        } catch {
          // not JSON
        }
      }
    };
    child.stderr!.on('data', onData);
    child.stdout!.on('data', onData);
    child.once('exit', () => reject(new Error('receiver exited')));
  });
}

async function startReceiverProcess(config: TesseraConfig, configPath: string): Promise<Sink> {
  const child = spawn(process.execPath, [CLI_PATH, 'receiver', '--sector', '0', '--config', configPath, '--no-election'], {
    env: { ...process.env, TESSERA_LOG_JSON: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await waitLine(child, (l) => l.msg === 'receiver listening');
  return {
    port: config.detector.udp.basePort,
    stop: async () => {
      const final = waitLine(child, (l) => l.msg === 'receiver stopped: final counters');
      child.kill('SIGTERM');
      const l = await final;
      await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(null)));
      return { received: l.received as number, ok: l.ok as number };
    },
  };
}

/** The reference: a Node process that only counts datagrams (same socket options as the receiver). */
const BARE = `
import dgram from 'node:dgram';
const s = dgram.createSocket({ type: 'udp4' });
let n = 0;
s.on('message', () => n++);
s.bind(Number(process.argv[1]), '127.0.0.1', () => {
  s.setRecvBufferSize(Number(process.argv[2]));
  process.stdout.write(JSON.stringify({ msg: 'receiver listening' }) + '\\n');
});
process.on('SIGTERM', () => { process.stdout.write(JSON.stringify({ msg: 'receiver stopped: final counters', received: n, ok: n }) + '\\n'); s.close(); });
`;

async function startBareProcess(config: TesseraConfig): Promise<Sink> {
  const port = config.detector.udp.basePort;
  const child = spawn(process.execPath, ['--input-type=module', '-e', BARE, String(port), String(config.receiver.recvBufferBytes)], { stdio: ['ignore', 'pipe', 'pipe'] });
  await waitLine(child, (l) => l.msg === 'receiver listening');
  return {
    port,
    stop: async () => {
      const final = waitLine(child, (l) => l.msg === 'receiver stopped: final counters');
      child.kill('SIGTERM');
      const l = await final;
      await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(null)));
      return { received: l.received as number, ok: l.ok as number };
    },
  };
}

/** Send `rate` datagrams/s for `seconds`, paced on the clock; returns what went out. */
export async function sendPaced(port: number, rate: number, seconds: number, ring: Uint8Array[], warmUp = 0): Promise<{ sent: number; warmSent: number; seconds: number }> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => sock.connect(port, '127.0.0.1', () => r()));
  sock.setSendBufferSize(4 << 20);
  let sent = 0;
  let inflight = 0;
  let errors = 0;
  const maxInflight = ring.length - BLOCKS_PER_SECTOR_FRAME; // a ring buffer is patched only once its send completed
  // A sender that fell behind (its own GC or JIT) must not catch up in one burst larger than
  // the receiver's socket buffer: a camera sends evenly.
  const maxBurst = 64;
  const pace = async (from: number, count: number, r: number) => {
    const t0 = performance.now();
    const end = from + count;
    while (sent < end) {
      const due = Math.min(end, from + Math.floor(((performance.now() - t0) / 1000) * r));
      for (let b = 0; sent < due && inflight < maxInflight && b < maxBurst; b++) {
      const d = ring[sent % ring.length]!;
      patch(d, sent, 2);
      inflight++;
      sent++;
        sock.send(d, (err) => {
          inflight--;
          if (err) errors++;
        });
      }
      await yieldNow();
    }
    return (performance.now() - t0) / 1000;
  };
  // warm-up traffic (not measured): the receive path of a fresh process is slow for its first
  // ~150 ms; a camera streams parked-beam frames long before an acquisition starts
  if (warmUp > 0) await pace(0, Math.round(warmUp * 0.25 * SECTOR_RATE), 0.25 * SECTOR_RATE);
  const warmSent = sent;
  const elapsed = await pace(warmSent, Math.round(rate * seconds), rate);
  while (inflight > 0) await yieldNow();
  await new Promise<void>((r) => sock.close(() => r()));
  return { sent: sent - warmSent - errors, warmSent, seconds: elapsed };
}

/** The highest zero-loss rate (datagrams/s) and whether the ladder's top was reached (a lower bound). */
async function ladder(name: string, start: () => Promise<Sink>, ring: Uint8Array[]): Promise<{ rate: number; capped: boolean }> {
  const RATIOS = [0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8];
  const RUNS = 3;
  const SECONDS = 2;
  let best = 0;
  for (const ratio of RATIOS) {
    const rate = ratio * SECTOR_RATE;
    const losses: number[] = [];
    const achieved: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const sink = await start();
      const s = await sendPaced(sink.port, rate, SECONDS, ring, WARM_UP_SECONDS);
      await new Promise((res) => setTimeout(res, 300));
      const got = await sink.stop();
      losses.push((s.sent + s.warmSent - got.ok) / s.sent);
      achieved.push(s.sent / s.seconds);
    }
    const loss = median(losses);
    const sentRate = median(achieved);
    report(`${name}, offered ${ratio}x (${Math.round(rate)} datagrams/s, sent ${Math.round(sentRate)}/s): loss`, loss * 100, '%');
    if (sentRate < rate * 0.97) {
      report(`${name}: the sender cannot offer ${ratio}x here`, sentRate, 'datagrams/s');
      return { rate: best, capped: true };
    }
    if (loss > 0) return { rate: best, capped: false };
    best = sentRate;
  }
  return { rate: best, capped: true };
}

async function overUdp(config: TesseraConfig): Promise<void> {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-rx-'));
  // a free port for the run
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
  const port = probe.address().port;
  await new Promise<void>((r) => probe.close(() => r()));
  const cfgPath = join(dir, 'bench.json');
  writeFileSync(cfgPath, JSON.stringify({ detector: { udp: { basePort: port } }, receiver: { statsIntervalMs: 60_000 } }));
  const cfg = loadConfig(cfgPath);
  const ring = buildDatagrams(32);
  try {
    const bare = await ladder('bare Node dgram socket (reference)', () => startBareProcess(cfg), ring);
    const rx = await ladder('tessera receiver process', () => startReceiverProcess(cfg, cfgPath), ring);
    const atLeast = (l: { capped: boolean }) => (l.capped ? ' (at least: no loss up to the top of the ladder)' : '');
    report(`bare Node dgram socket: highest zero-loss rate${atLeast(bare)}`, bare.rate, 'datagrams/s', bare.rate / SECTOR_RATE, 'one sector at 400 fps');
    report(`tessera receiver (assemble + decode into tiles): highest zero-loss rate${atLeast(rx)}`, rx.rate, 'datagrams/s', rx.rate / SECTOR_RATE, 'one sector at 400 fps');
    report(`tessera receiver zero-loss rate vs the bare socket${bare.capped ? ' (at most)' : ''}`, bare.rate > 0 ? rx.rate / bare.rate : NaN, 'x');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  void config;
}

export async function run(): Promise<void> {
  const config = loadConfig();
  console.log(`one sector at 400 fps = ${SECTOR_RATE} datagrams/s = ${((SECTOR_RATE * BLOCK_SIZE) / 1e6).toFixed(0)} MB/s; sector frame ${formatBytes(SECTOR_FRAME_BYTES)} on the wire, ${formatBytes(SECTOR_PIXELS * 2)} decoded`);
  await inProcess(config);
  await overUdp(config);
}
