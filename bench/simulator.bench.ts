/**
 * The simulator (`tessera simulate`): how fast it renders and packs camera frames, and how
 * fast it puts them on the wire.
 *
 *  - render + pack: one full stream frame (256 blocks with headers, 5.7 MB) per call, against
 *    memcpy of the same bytes and against the detector's real-time rate (400 frames/s);
 *  - truth frame: the same frame composed as 1860 x 2048 uint16 pixels (the ground truth);
 *  - UDP send: runSimulation at --fps 0 to eight sockets in a child process, rendering inline
 *    or in a worker thread, to a sink that never reads (the sender alone) and to one Node
 *    process that reads, in datagrams/s against the detector's real-time rate (102 400
 *    datagrams/s for all eight sectors). Rendering in a worker needs the compiled bench.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { FRAME_PIXELS, NUM_SECTORS, SECTOR_FRAME_BYTES } from '../src/k2is/constants.js';
import { SimulatedScan } from '../src/k2is/simulator/scene.js';
import { runSimulation } from '../src/k2is/simulator/simulation.js';
import { K2ISStream } from '../src/k2is/simulator/stream.js';
import { measure, measureMemcpy, median, report } from './lib.js';

const REALTIME_FPS = 400;
const FRAME_BYTES = NUM_SECTORS * SECTOR_FRAME_BYTES;
const TIMING = { runs: 5, minTimeMs: 300, warmupMs: 300 };

// A receiver process that reads and counts (what a real receiver costs), or one that binds
// and never reads (the kernel drops what overflows: measures the sender alone).
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

async function udpRate(renderWorker: boolean, deaf: boolean): Promise<{ sent: number; received: number }> {
  const base = 20000 + Math.floor(Math.random() * 20000);
  const sink = spawn(process.execPath, ['-e', SINK, String(base), deaf ? 'deaf' : 'read'], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    const [first] = (await once(sink.stdout!, 'data')) as [Buffer];
    if (!first.toString().includes('ready')) throw new Error('sink did not start');
    const summary = await runSimulation({
      scene: { scanShape: [20, 20], seed: 1 },
      stream: { framesBeforeScan: 2, framesAfterScan: 0 },
      sectors: [0, 1, 2, 3, 4, 5, 6, 7],
      fps: 0,
      renderWorker,
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
  const scan = new SimulatedScan({ scanShape: [32, 32], seed: 1 });
  const stream = new K2ISStream(scan, { framesBeforeScan: 1, framesAfterScan: 0 });
  const out = new Uint8Array(FRAME_BYTES);
  let f = 0;
  const render = measure(() => stream.writeFrame(1 + (f++ % 1000), out), { ...TIMING, bytes: FRAME_BYTES });
  const memcpy = measureMemcpy(FRAME_BYTES, TIMING);
  const msPerFrame = (FRAME_BYTES / (render * 1e9)) * 1000;
  report('simulator render+pack, full frame', render, 'GB/s', render / memcpy.best, 'memcpy of the same 5.7 MB');
  report('simulator render+pack, full frame', msPerFrame, 'ms/frame', 1000 / msPerFrame / REALTIME_FPS, 'real time (400 frames/s)');

  const truth = new Uint16Array(FRAME_PIXELS);
  let k = 0;
  const truthRate = measure(() => scan.frame(k++ % 1024, truth), { ...TIMING, bytes: FRAME_PIXELS * 2 });
  report('simulator truth frame (uint16 pixels)', (FRAME_PIXELS * 2) / (truthRate * 1e6), 'ms/frame');

  const realtime = REALTIME_FPS * 256;
  for (const renderWorker of [false, true]) {
    for (const deaf of [true, false]) {
      const sends: number[] = [];
      const received: number[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await udpRate(renderWorker, deaf);
        sends.push(r.sent);
        received.push(r.received);
      }
      const sent = median(sends);
      const name = `simulator UDP send --fps 0, 8 sectors, render ${renderWorker ? 'in a worker' : 'inline'}, ${deaf ? 'sink not reading' : 'one Node receiver reading'}`;
      report(name, sent, 'datagrams/s', sent / realtime, 'real time (102 400 datagrams/s)');
      if (!deaf) report(`${name}: received`, median(received), 'datagrams/s', median(received) / sent, 'sent');
    }
  }
}
