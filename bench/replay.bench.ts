/**
 * Replay of a recording (`tessera simulate --replay-bin DIR --fps 0`): how fast recorded sector
 * files go back on the wire, in datagrams/s against the detector's real-time rate (102 400
 * datagrams/s for all eight sectors at 400 frames/s).
 *
 * The recording (a 6 x 6 scan, 38 frames, 218 MB, written by the simulator) is looped for 400
 * frames, so the files are read from the page cache after the first pass: what is measured is
 * read + send, not the disk. Sinks as in simulator.bench: one that binds and never reads (the
 * sender alone) and one Node process that reads and counts.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runReplay } from '../src/k2is/simulator/replay.js';
import { runSimulation } from '../src/k2is/simulator/simulation.js';
import { median, report } from './lib.js';

const REALTIME = 400 * 256;
const FRAMES = 400;

const SINK = `
const dgram = require('node:dgram');
const base = Number(process.argv[1]);
const deaf = process.argv[2] === 'deaf';
let n = 0;
let bound = 0;
for (let s = 0; s < 8; s++) {
  const r = dgram.createSocket('udp4');
  r.on('message', () => n++);
  r.bind(base + s, '127.0.0.1', () => {
    try { r.setRecvBufferSize(4 << 20); } catch {}
    if (deaf) r.setRecvBufferSize(4096);
    if (++bound === 8) process.stdout.write('ready\\n');
  });
}
process.stdin.on('data', () => { process.stdout.write(n + '\\n'); process.exit(0); });
`;

async function replayRate(dir: string, deaf: boolean): Promise<{ sent: number; received: number }> {
  const base = 20000 + Math.floor(Math.random() * 20000);
  const sink = spawn(process.execPath, ['-e', SINK, String(base), deaf ? 'deaf' : 'read'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const [first] = (await once(sink.stdout!, 'data')) as [Buffer];
    if (!first.toString().includes('ready')) throw new Error('sink did not start');
    const summary = await runReplay({
      path: dir,
      sectors: [0, 1, 2, 3, 4, 5, 6, 7],
      fps: 0,
      loop: true,
      maxFrames: FRAMES,
      udp: { host: '127.0.0.1', basePort: base, multicast: false },
    });
    await new Promise((r) => setTimeout(r, 200));
    sink.stdin!.write('count\n');
    const [line] = (await once(sink.stdout!, 'data')) as [Buffer];
    return { sent: summary.datagramsPerSecond, received: Number(line.toString().trim()) / summary.seconds };
  } finally {
    sink.kill();
  }
}

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-replay-bench-'));
  try {
    await runSimulation({
      scene: { scanShape: [6, 6], seed: 1 },
      stream: { framesBeforeScan: 2, framesAfterScan: 1 },
      sectors: [0, 1, 2, 3, 4, 5, 6, 7],
      fps: 0,
      udp: null,
      bin: { dir, name: 'bench' },
    });
    await replayRate(dir, true); // warm the page cache and the JIT
    for (const deaf of [true, false]) {
      const sent: number[] = [];
      const received: number[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await replayRate(dir, deaf);
        sent.push(r.sent);
        received.push(r.received);
      }
      const name = `replay --fps 0, 8 sectors from the page cache, ${deaf ? 'sink not reading' : 'one Node receiver reading'}`;
      report(name, median(sent), 'datagrams/s', median(sent) / REALTIME, 'real time (102 400 datagrams/s)');
      if (!deaf) report(`${name}: received`, median(received), 'datagrams/s', median(received) / median(sent), 'sent');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
