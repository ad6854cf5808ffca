/**
 * SIGKILL of the merger in the middle of a recorded acquisition: the recording's path holds
 * the last published copy, readable by h5wasm and h5py, with the positions merged by then
 * (merged_at set) equal to offline over the ground truth, and nothing else filled in.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { waitUntil } from '../merger/live-helpers.js';
import { defineAndStart, expectSame, setRecording, h5pyDigest, hasH5py, launch, offline, Processes, simulate, truthFrames, UDFS } from './recording.helpers.js';

const ps = new Processes();
afterEach(() => ps.cleanup(), 30_000);

describe('recording and SIGKILL', () => {
  it('the merger killed mid-acquisition leaves a readable file with what was merged', async () => {
    const scan: [number, number] = [16, 16];
    const n = scan[0] * scan[1];
    const p = await launch(ps);
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single', chunkSize: 16 });
    simulate(ps, p, scan, ['--fps', '30', '--seed', '31']);
    // recording switched on while the acquisition runs (the default path: <dataDir>/<id>.h5)
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= 16, 60_000, 'a first chunk');
    const on = await setRecording(p, id, true);
    expect(on.record).toMatchObject({ enabled: true, path: join(p.dataDir, `${id}.h5`) });
    // a few batches in, well before the end of the scan
    await waitUntil(
      async () => {
        const s = await p.client.api.get(id);
        return (s.record.batches ?? 0) >= 3 && s.progress.framesMerged >= 48;
      },
      60_000,
      'three recorded batches',
    );
    const before = await p.client.api.get(id);
    expect(before.progress.framesMerged).toBeLessThan(n);
    p.merger.child.kill('SIGKILL');
    await p.merger.exited;

    const path = join(p.dataDir, `${id}.h5`);
    expect(existsSync(path)).toBe(true);
    const f = await readReducedFile(path);
    expect(f.format).toBe('tessera-reduced/1');
    expect(f.attrs.ended_at).toBeUndefined();
    const mergedAt = f.datasets.merged_at!.data;
    const merged = Array.from(mergedAt, (t) => !Number.isNaN(t));
    const count = merged.filter(Boolean).length;
    expect(count).toBeGreaterThanOrEqual(16);
    expect(count).toBeLessThan(n);
    // whole chunks, in scan order
    expect(count % 16).toBe(0);
    expect(merged.slice(0, count).every(Boolean)).toBe(true);
    const damage = f.datasets.damage!.data;
    for (let k = count; k < n; k++) expect(damage[k]).toBe(0);

    // the per-position results compared are those of the merged positions, the first `count`
    // (whole rows of the scan: count is a multiple of 16): offline over those frames of the scan
    // only (over all 256, 2 GB of frames and most of this test's time)
    const reference = await offline([count / scan[1], scan[1]], truthFrames(scan, 31, 0, count));
    for (const [u, name] of [['sumsig', 'intensity'], ['masks', 'intensity']] as const) {
      const i = UDFS.findIndex((x) => x.id === u);
      const per = reference[i]![name]!.data.length / count;
      const got: number[] = [];
      const want: number[] = [];
      const zeros: number[] = [];
      for (let k = 0; k < n; k++) {
        for (let j = 0; j < per; j++) {
          const v = f.udfs[u]!.buffers[name]!.data[k * per + j]!;
          if (k >= count) zeros.push(v);
          else if (damage[k] === 8) {
            got.push(v);
            want.push(reference[i]![name]!.data[k * per + j]!);
          }
        }
      }
      expectSame(`${u}/${name} at merged positions`, u, got, want);
      expect(zeros.every((v) => v === 0)).toBe(true);
    }

    if (!hasH5py()) {
      console.warn('h5py is not installed: the h5py check of the killed recording is skipped');
      return;
    }
    const d = h5pyDigest(path);
    expect(d.datasets['/udf/sumsig/intensity']!.shape).toEqual(scan);
    expect(d.datasets['/merged_at']!.shape).toEqual(scan);
  }, 120_000);
});
