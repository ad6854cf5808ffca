/**
 * The shuffle's whole frames, end to end with real processes: simulator -> 8 receivers ->
 * shuffle -> a test worker (a real DEALER on the shuffle's frames socket). Every frame must
 * equal the simulator's ground truth (SimulatedScan, same seed) bit for bit, over the data that
 * arrived (a killed receiver: shuffle-killed.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_COLS, BLOCK_ROWS, FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { blockOrigin } from '../../src/k2is/geometry.js';
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

/** The truth with the blocks a receiver reported lost zeroed (what it zero-fills). */
function zeroLost(frame: Uint16Array, damage: number[]): void {
  damage.forEach((bits, s) => {
    for (let b = 0; b < 32; b++) {
      if (!(bits & (1 << b))) continue;
      const o = blockOrigin(b);
      for (let y = o.y; y < o.y + BLOCK_ROWS; y++) frame.fill(0, y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x, y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x + BLOCK_COLS);
    }
  });
}

function byPosition(frames: ReceivedFrame[]): Map<number, ReceivedFrame> {
  return new Map(frames.map((f) => [f.header.position, f]));
}

describe('shuffle: whole frames from 8 receiver processes', () => {
  it('every frame of a scan equals the ground truth bit for bit, unmarked', async () => {
    p = new ShufflePipeline();
    await p.launch({ testWorker: true, shuffleArgs: ['--fixed-rate', '--frame-timeout', '8000', '--max-frames', '32'] });
    const scan: [number, number] = [3, 8];
    const id = await p.defineAndStart({ scanShape: scan, udfs: UDFS, mode: 'single' });
    const w = p.testWorkers[0]!;
    expect(w.acquire?.acquisition).toBe(id);
    expect(w.acquire?.udfs.map((u) => u.name)).toEqual(['CrystallinityUDF']);
    const sim = p.simulate(scan, ['--fps', '20', '--seed', '21']);
    const n = scan[0] * scan[1];
    await waitUntil(() => w.frames.length >= n, 60_000, `${n} frames at the test worker`);
    expect((await sim.exited).code).toBe(0);
    const frames = byPosition(w.frames);
    expect([...frames.keys()].sort((a, b) => a - b)).toEqual([...Array(n).keys()]);
    const truth = new SimulatedScan({ scanShape: scan, seed: 21 });
    const expected = new Uint16Array(FRAME_HEIGHT * FRAME_WIDTH);
    let damaged = 0;
    for (let i = 0; i < n; i++) {
      const f = frames.get(i)!;
      truth.frame(i, expected);
      // a datagram lost on this loaded machine is a zero-filled block the receiver reports:
      // the frame is exact over what arrived, and marked with exactly those blocks
      expect(f.header.damage.every((d) => d !== 0xffffffff), `frame ${i}: ${f.header.damage}`).toBe(true);
      if (f.header.damage.some((d) => d !== 0)) damaged++;
      zeroLost(expected, f.header.damage);
      expect(f.header.epoch).toBe(0);
      expect(firstDifference(f.data, expected, [0, 1, 2, 3, 4, 5, 6, 7]), `frame ${i}`).toBe(-1);
    }
    // UDP loss under this shared machine's load hits some frames; most must arrive whole
    expect(damaged).toBeLessThan(n / 2);
    const stats = await p.shuffle.waitFor((l) => l.msg === 'shuffle stats' && (l.framesComplete as number) >= n, 10_000, 'shuffle stats');
    expect(stats.framesIncomplete).toBe(0); // every sector's slice of every frame arrived
    expect(stats.framesSkipped).toBe(0);
  }, 120_000);
});
