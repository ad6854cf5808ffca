/**
 * Soak, compressed: the whole pipeline (merger, eight receivers, continuous simulator at a high
 * frame rate over a small scan, so that an epoch ends every few hundred milliseconds, and a
 * WebSocket client reading) for about a minute, sampling every process's RSS and open file
 * descriptors from /proc. After warm-up: open files do not move, and resident memory does not
 * grow (last third vs first third). `npm run bench soak` runs the long version
 * (bench/soak.bench.ts, TESSERA_SOAK_MINUTES).
 */
import { describe, expect, it } from 'vitest';
import { runSoak } from '../../bench/soak.bench.js';

describe('soak (compressed)', () => {
  it('RSS and open files of every process flat after warm-up over tens of epochs', async () => {
    const f = await runSoak({ durationMs: 75_000, sampleMs: 1000, warmupMs: 30_000, scan: [2, 4], fps: 100, log: (l) => console.log(l) });
    console.log(`soak: ${f.seconds.toFixed(0)} s, ${f.epochs} epochs, ${f.framesMerged} frames merged`);
    for (const r of f.roles) {
      const rss = r.rssMB;
      console.log(`soak ${r.role}: RSS ${Math.min(...rss).toFixed(0)}..${Math.max(...rss).toFixed(0)} MB, growth ${r.rssGrowthMB.toFixed(1)} MB, slope ${r.rssSlopeMBPerHour.toFixed(0)} MB/h; fds ${Math.min(...r.fds)}..${Math.max(...r.fds)}`);
    }
    const m = f.merger;
    console.log(`soak merger heap ${m.heapMB[0]?.toFixed(0)} -> ${m.heapMB.at(-1)?.toFixed(0)} MB, external ${m.externalMB[0]?.toFixed(0)} -> ${m.externalMB.at(-1)?.toFixed(0)} MB, epochs ${m.epoch[0]} -> ${m.epoch.at(-1)}`);
    // the acquisition really ran through many epochs (a loaded machine may slow it down)
    expect(f.epochs).toBeGreaterThanOrEqual(15);
    for (const r of f.roles) {
      expect(r.fds.length, r.role).toBeGreaterThan(10);
      // sockets and files: not one more at the end than at any time after warm-up
      expect(Math.max(...r.fds) - Math.min(...r.fds), `${r.role} open files`).toBeLessThanOrEqual(2);
      // memory: GC makes RSS wander by tens of MB; a leak of 1 MB per epoch shows over the epochs
      // of the run, and the allocator fault this found (bench/soak.bench.ts, env) grew it by 600+ MB
      const base = Math.min(...r.rssMB);
      expect(r.rssGrowthMB, `${r.role} RSS growth (MB)`).toBeLessThan(Math.max(64, 0.25 * base));
    }
  }, 180_000);
});
