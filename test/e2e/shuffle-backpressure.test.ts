/**
 * Back-pressure, end to end with real processes: a continuous scan at 40 fps, one slow worker
 * (`--delay 500`, one credit: about 2 frames/s). The shuffle must skip frames and say how
 * many (its stats, and `_shuffle/counters` at the merger), lower the selection rate (the
 * receivers then send fewer frames), and keep its memory bounded: at most `--max-queued`
 * frames wait, at most 16 are being assembled, its RSS stays flat.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { waitUntil } from '../merger/live-helpers.js';
import { ShufflePipeline } from '../shuffle/helpers.js';

let p: ShufflePipeline;

afterEach(async () => {
  await p?.stopAll();
}, 30_000);

describe('shuffle back-pressure with a slow worker', () => {
  it('skips and counts frames, lowers the selection rate, memory bounded', async () => {
    p = new ShufflePipeline();
    await p.launch({ workers: 1, workerArgs: ['--delay', '500', '--credits', '1'], shuffleArgs: ['--max-queued', '4'] });
    const scan: [number, number] = [4, 8];
    const camera = p.simulate(scan, ['--fps', '40', '--seed', '31', '--continuous']);
    await waitUntil(() => p.merger.lines.some((l) => l.msg === 'election decided' || l.msg === 'election: round opened'), 20_000, 'the election');
    await new Promise((r) => setTimeout(r, 1500));
    const { id } = await p.client.api.define({ scanShape: scan, udfs: [{ id: 'sum', name: 'SumUDF' }, { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 100, radOut: 400 } }], mode: 'continuous' });
    await p.client.api.start(id);
    const stats = () => p.shuffle.lines.filter((l) => l.msg === 'shuffle stats' && l.acquisition === id);
    // the rate comes down: 40 fps offered to a worker that takes about 2
    await p.shuffle.waitFor((l) => l.msg === 'shuffle: selection rate changed' && (l.decimate as number) >= 8, 40_000, 'decimation to 1/8 or less');
    const changedAt = Date.now();
    await waitUntil(() => stats().filter((l) => (l.time as number) > changedAt + 1000).length >= 3, 20_000, 'stats after the change');
    expect(camera.running).toBe(true);
    const all = stats();
    const last = all[all.length - 1]!;
    expect(last.framesSkipped as number).toBeGreaterThan(0);
    // frames assembled per second after the change: well below the camera's 40
    const after = all.filter((l) => (l.time as number) > changedAt + 1000);
    const a = after[0]!;
    const b = after[after.length - 1]!;
    const fps = (((b.framesComplete as number) + (b.framesIncomplete as number) - (a.framesComplete as number) - (a.framesIncomplete as number)) * 1000) / ((b.time as number) - (a.time as number));
    expect(fps).toBeLessThan(40 / 4);
    // bounded: the queue, the frames in assembly, the process
    for (const l of all) {
      expect((l.dispatcher as { queuedMax: number }).queuedMax).toBeLessThanOrEqual(4);
      expect(l.openFrames as number).toBeLessThanOrEqual(16);
    }
    const rss = all.map((l) => l.rssMB as number);
    expect(Math.max(...rss)).toBeLessThan(600);
    // the merger shows how many were skipped, and which positions hold results
    await p.client.connect();
    p.client.subscribe({ acquisition: id });
    const mirror = await p.client.waitFor((m) => ((m.get('_shuffle', 'counters')?.data as Float64Array | undefined)?.[1] ?? 0) > 0, 20_000);
    const c = mirror.get('_shuffle', 'counters')!.data as Float64Array;
    expect(c[3]).toBeGreaterThanOrEqual(2); // decimation
    const worker = p.roles.find((r) => r.name === 'worker-0')!;
    expect(worker.lines.some((l) => l.msg === 'worker stats' && (l.frames as number) > 0)).toBe(true);
  }, 120_000);
});
