/**
 * A picked frame on the real pipeline, every role a real process: simulator (continuous scan)
 * -> 8 receivers -> shuffle (the workers' selection: scan position 0 only) -> a test worker,
 * and the merger's GET /api/acquisitions/:id/frames/:position. The frame served equals the
 * simulator's ground truth (SimulatedScan, same seed) bit for bit over the blocks that
 * arrived, marked with exactly the blocks lost; the worker keeps getting position 0 only.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_COLS, BLOCK_ROWS, FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { blockOrigin } from '../../src/k2is/geometry.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import { waitUntil } from '../merger/live-helpers.js';
import { ShufflePipeline } from './helpers.js';

let p: ShufflePipeline;

afterEach(async () => {
  await p?.stopAll();
}, 30_000);

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

describe('picked frame on the real pipeline', () => {
  it('GET …/frames/:position returns the ground-truth frame of that position; the worker keeps its selection', async () => {
    p = new ShufflePipeline();
    await p.launch({ testWorker: true, shuffleArgs: ['--fixed-rate', '--select', 'list:0', '--frame-timeout', '8000'] });
    const scan: [number, number] = [3, 8];
    const id = await p.defineAndStart({ scanShape: scan, udfs: [{ id: 'cryst', name: 'CrystallinityUDF', params: { radIn: 10, radOut: 200 } }], mode: 'continuous' });
    p.simulate(scan, ['--fps', '20', '--seed', '21', '--continuous']);
    const w = p.testWorkers[0]!;
    await waitUntil(() => w.frames.length >= 1, 60_000, 'a frame at the test worker');
    const url = p.url.replace(/\/$/, '');
    const position = 13;
    const r = await fetch(`${url}/api/acquisitions/${id}/frames/${position}?timeoutMs=60000`);
    expect(r.status, await r.clone().text().catch(() => '')).toBe(200);
    expect(r.headers.get('x-tessera-shape')).toBe('1860,2048');
    expect(Number(r.headers.get('x-tessera-position'))).toBe(position);
    const damage = r.headers.get('x-tessera-damage')!.split(',').map(Number);
    expect(damage).toHaveLength(8);
    expect(damage.every((d) => d !== 0xffffffff), `damage ${damage}`).toBe(true);
    const bytes = Buffer.from(await r.arrayBuffer());
    const got = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    const expected = new SimulatedScan({ scanShape: scan, seed: 21 }).frame(position);
    zeroLost(expected, damage);
    expect(got.length).toBe(FRAME_HEIGHT * FRAME_WIDTH);
    let firstDiff = -1;
    for (let i = 0; i < got.length; i++) if (got[i] !== expected[i]) { firstDiff = i; break; }
    expect(firstDiff).toBe(-1);
    // the workers' selection is undisturbed: position 0 only
    expect(w.frames.every((f) => f.header.position === 0)).toBe(true);
    // out of the scan, and an acquisition that does not exist
    expect((await fetch(`${url}/api/acquisitions/${id}/frames/24`)).status).toBe(400);
    expect((await fetch(`${url}/api/acquisitions/nope/frames/1`)).status).toBe(404);
  }, 180_000);
});
