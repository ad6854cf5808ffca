/**
 * The shuffle's whole frames with a killed receiver, end to end with real processes:
 * simulator -> 7 of 8 receivers -> shuffle -> a test worker (a real DEALER on the shuffle's
 * frames socket). Every frame is marked (that sector 0xffffffff, zeros in its columns) and
 * the other seven sectors equal the simulator's ground truth bit for bit.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import { waitUntil } from '../merger/live-helpers.js';
import { ShufflePipeline, type ReceivedFrame } from '../shuffle/helpers.js';

let p: ShufflePipeline;

afterEach(async () => {
  await p?.stopAll();
}, 30_000);

const UDFS = [
  { id: 'sum', name: 'SumUDF' },
  { id: 'cryst', name: 'CrystallinityUDF', params: { radIn: 10, radOut: 200 } },
];

/** First column where `got` differs from the truth in sector columns `sectors`, or -1. */
function firstDifference(got: Uint16Array, truth: Uint16Array, sectors: number[]): number {
  for (let y = 0; y < FRAME_HEIGHT; y++) {
    for (const s of sectors) {
      const o = y * FRAME_WIDTH + s * SECTOR_WIDTH;
      for (let x = 0; x < SECTOR_WIDTH; x++) if (got[o + x] !== truth[o + x]) return o + x;
    }
  }
  return -1;
}

function byPosition(frames: ReceivedFrame[]): Map<number, ReceivedFrame> {
  return new Map(frames.map((f) => [f.header.position, f]));
}

describe('shuffle: whole frames with a receiver killed', () => {
  it('with a killed receiver, every frame is marked for that sector (zeros there) and the seven others are exact', async () => {
    p = new ShufflePipeline();
    await p.launch({ testWorker: true, shuffleArgs: ['--fixed-rate', '--frame-timeout', '2500', '--max-frames', '32'], chunkTimeoutMs: 1500 });
    const scan: [number, number] = [2, 8];
    await p.defineAndStart({ scanShape: scan, udfs: UDFS, mode: 'single' });
    const killed = 5;
    p.receivers[killed]!.kill();
    await p.receivers[killed]!.exited;
    const sim = p.simulate(scan, ['--fps', '5', '--seed', '22']);
    const n = scan[0] * scan[1];
    const w = p.testWorkers[0]!;
    await waitUntil(() => w.frames.length >= n, 60_000, `${n} frames at the test worker`);
    expect((await sim.exited).code).toBe(0);
    const frames = byPosition(w.frames);
    expect(frames.size).toBe(n);
    const truth = new SimulatedScan({ scanShape: scan, seed: 22 });
    const expected = new Uint16Array(FRAME_HEIGHT * FRAME_WIDTH);
    const others = [0, 1, 2, 3, 4, 6, 7];
    for (let i = 0; i < n; i++) {
      const f = frames.get(i)!;
      truth.frame(i, expected);
      expect(f.header.damage).toEqual(others.length === 7 ? [0, 0, 0, 0, 0, 0xffffffff, 0, 0] : []);
      expect(firstDifference(f.data, expected, others), `frame ${i}`).toBe(-1);
      for (let y = 0; y < FRAME_HEIGHT; y++) {
        const o = y * FRAME_WIDTH + killed * SECTOR_WIDTH;
        if (f.data.subarray(o, o + SECTOR_WIDTH).some((v) => v !== 0)) throw new Error(`frame ${i} row ${y}: sector ${killed} is not zero`);
      }
    }
    const stats = await p.shuffle.waitFor((l) => l.msg === 'shuffle stats' && (l.framesIncomplete as number) >= n, 10_000, 'shuffle stats');
    expect(stats.framesComplete).toBe(0);
  }, 120_000);
});
