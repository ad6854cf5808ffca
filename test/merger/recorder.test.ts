/**
 * AcquisitionRecorder on a real ChunkMerger: the file holds the merged results (equal to the
 * offline engine over the same frames), merge times per position in chunk order, sig
 * snapshots over time, and a writer slowed down falls behind (lag in the status) and catches up.
 */
import { describe, expect, it } from 'vitest';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { RecordingFile } from '../../src/merger/replay-file.js';
import type { EpochResults } from '../../src/merger/chunk-merger.js';
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recordingPath } from '../../src/merger/record-path.js';
import { AcquisitionRecorder } from '../../src/merger/recorder.js';
import { ReplayController } from '../../src/merger/replay-controller.js';
import { ReplayRegistry } from '../../src/merger/replay-store.js';
import { firstDifference, makeRecording, makeRig, offlineOf, REC_UDFS, SCAN } from './recorder.helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(20);
  }
}
const FRAME = 1860 * 2048;

describe('AcquisitionRecorder', () => {
  it('writes the merged results, merge times and snapshots; equal to offline over the same frames', async () => {
    const r = await makeRecording({ seed: 5 });
    const status = r.recorder.status();
    expect(status).toMatchObject({ state: 'closed', error: null, lagMs: 0, skippedEpochs: 0 });
    const f = await readReducedFile(r.path);
    expect(f.format).toBe('tessera-reduced/1');
    expect(f.navShape).toEqual(SCAN);
    const reference = await offlineOf(r.frames);
    REC_UDFS.forEach((u, i) => {
      for (const [name, ref] of Object.entries(reference[i]!)) {
        const b = f.udfs[u.id]!.buffers[name]!;
        expect(b.shape).toEqual([...ref.data.shape]);
        expect(firstDifference(b.data, ref.data)).toBe(-1);
        expect(firstDifference(b.data, r.epoch.results.results()[i]![name]!.data)).toBe(-1);
      }
    });
    const mergedAt = Array.from(f.datasets.merged_at!.data);
    // the first two chunks before the pause, the last two after it
    expect(mergedAt.slice(0, 8).every((t) => t < r.pauseAt)).toBe(true);
    expect(mergedAt.slice(8).every((t) => t > r.pauseAt)).toBe(true);
    expect(Array.from(f.datasets.damage!.data)).toEqual(new Array(16).fill(8));
    const rec = await RecordingFile.open(r.path);
    try {
      const e = rec.epochs[0]!;
      const s = rec.snapshots(e, 'sum', 'intensity');
      expect(s.times.length).toBeGreaterThanOrEqual(1);
      // a snapshot during the pause holds the sum of the first eight frames
      const mid = s.indexAt(r.pauseAt);
      expect(mid).toBeGreaterThanOrEqual(0);
      const half = await offlineOf(halfFrames(r.frames));
      expect(firstDifference(s.at(mid), half[0]!.intensity!.data)).toBe(-1);
      // snapshots are of the running scan: the end state is the final dataset (checked above)
      expect(s.times.every((x) => x <= e.lastMerged)).toBe(true);
    } finally {
      rec.close();
    }
  }, 60_000);

  it('a slow writer: the recorder falls behind, says so, and catches up', async () => {
    let lagWhileSlow = 0;
    const r = await makeRecording({
      seed: 6,
      pauseMs: 100,
      beforeSecondBurst: async (rec) => rec.slowDown(600),
      afterSecondBurst: async (rec) => {
        await new Promise((res) => setTimeout(res, 300));
        lagWhileSlow = rec.status().lagMs;
      },
    });
    expect(lagWhileSlow).toBeGreaterThan(0);
    expect(r.recorder.status()).toMatchObject({ state: 'closed', lagMs: 0 });
    const f = await readReducedFile(r.path);
    const reference = await offlineOf(r.frames);
    expect(firstDifference(f.udfs.sumsig!.buffers.intensity!.data, reference[1]!.intensity!.data)).toBe(-1);
  }, 60_000);

  it('switched off and on again: enabled false while off; the second file holds everything merged so far, with the merge times', async () => {
    const rig = makeRig({ seed: 8 });
    const first = join(rig.dir, 'rec.h5');
    const second = join(rig.dir, 'rec-2.h5');
    try {
      await rig.recorder.start(first);
      const t0 = Date.now();
      rig.feed(0); // positions 0-3, recorded in the first file
      const t1 = Date.now();
      await sleep(120);
      const off = await rig.recorder.stop();
      expect(off).toMatchObject({ enabled: false, state: 'closed', error: null });
      expect(rig.recorder.status().enabled).toBe(false);
      await sleep(20);
      const t2 = Date.now();
      rig.feed(1); // positions 4-7, merged while not recording
      const t3 = Date.now();
      await sleep(20);
      expect(await rig.recorder.start(second)).toMatchObject({ enabled: true, state: 'recording' });
      await sleep(20);
      const t4 = Date.now();
      rig.feed(2); // positions 8-11, recorded in the second file
      const t5 = Date.now();
      await sleep(120);
      const off2 = await rig.recorder.stop();
      expect(off2).toMatchObject({ enabled: false, state: 'closed', error: null });
      expect(off2.batches).toBeGreaterThanOrEqual(1);
      rig.feed(3); // positions 12-15, after both recordings

      const f1 = await readReducedFile(first);
      const f2 = await readReducedFile(second);
      const m1 = Array.from(f1.datasets.merged_at!.data);
      const m2 = Array.from(f2.datasets.merged_at!.data);
      const within = (xs: number[], a: number, b: number) => xs.every((t) => t >= a && t <= b);
      expect(within(m1.slice(0, 4), t0, t1)).toBe(true);
      expect(m1.slice(4).every(Number.isNaN)).toBe(true);
      // the second file: the same merge times for what came before, the merges since, nothing after
      expect(m2.slice(0, 4)).toEqual(m1.slice(0, 4));
      expect(within(m2.slice(4, 8), t2, t3)).toBe(true);
      expect(within(m2.slice(8, 12), t4, t5)).toBe(true);
      expect(m2.slice(12).every(Number.isNaN)).toBe(true);
      expect(f2.attrs.final_state).toBe('recording stopped');
      expect(Array.from(f2.datasets.damage!.data)).toEqual([...new Array(12).fill(8), 0, 0, 0, 0]);
      // the results: the first twelve frames (offline over them, the rest zero)
      const twelve = new Uint16Array(rig.frames.length);
      twelve.set(rig.frames.subarray(0, 12 * FRAME));
      const reference = await offlineOf(twelve);
      expect(firstDifference(f2.udfs.sum!.buffers.intensity!.data, reference[0]!.intensity!.data)).toBe(-1);
      expect(firstDifference(f2.udfs.sumsig!.buffers.intensity!.data, reference[1]!.intensity!.data)).toBe(-1);
    } finally {
      await rig.recorder.close('done');
      rig.merger.close();
    }
  }, 60_000);

  it('replay of a recording switched off mid-run: only merged positions count, the recorded end state', async () => {
    const rig = makeRig({ seed: 9 });
    const path = join(rig.dir, 'rec.h5');
    try {
      await rig.recorder.start(path);
      rig.feed(0);
      rig.feed(1);
      await sleep(120);
      await rig.recorder.stop();
      rig.feed(2);
    } finally {
      await rig.recorder.close('done');
      rig.merger.close();
    }
    const rec = await RecordingFile.open(path);
    try {
      const registry = new ReplayRegistry(rec);
      const end = registry.get(rig.acquisition)!;
      expect(end.getProgress().framesMerged).toBe(8);
      expect(end.getState()).toMatchObject({ state: 'running', message: 'recording stopped' });
      const reference = await offlineOf(rig.frames);
      const nav = Array.from(rec.epochs[0]!.results.udfs.sumsig!.buffers.intensity!.data);
      expect(nav.slice(0, 8)).toEqual(Array.from(reference[1]!.intensity!.data).slice(0, 8));
      expect(nav.slice(8)).toEqual(new Array(8).fill(0));
      const summary = new ReplayController(registry).get(rig.acquisition);
      expect(summary).toMatchObject({ state: 'running', message: 'recording stopped', progress: { framesMerged: 8, framesTotal: 16 } });
      expect(summary.record).toMatchObject({ enabled: false, state: 'closed' });
      // before anything was merged: nothing is visible
      expect(registry.get(`${rig.acquisition}@t=0`)!.getProgress().framesMerged).toBe(0);
    } finally {
      rec.close();
    }
  }, 60_000);

  it('not recording, a continuous scan: the recorder keeps only the epochs the merger still holds', () => {
    let live: EpochResults[] = [];
    const recorder = new AcquisitionRecorder({
      acquisition: 'acq-x',
      definition: { scanShape: SCAN, udfs: REC_UDFS, roi: null, mode: 'continuous', record: { enabled: false, path: null }, chunkSize: 4 },
      navShape: SCAN,
      sigShape: [1860, 2048],
      udfs: REC_UDFS,
      writeIntervalMs: 1000,
      snapshotIntervalMs: 1000,
      epochs: () => live,
      stats: () => ({ sectors: [], merge: { partialsMerged: 0, chunksMerged: 0, framesMerged: 0, sectorsFilled: 0, dropped: {}, paramsMismatch: 0 } }),
    });
    for (let k = 0; k < 20; k++) {
      const e = { epoch: k, results: null as never, framesMerged: 0, chunksMerged: 0, chunks: 4, complete: false } as EpochResults;
      live = [...live, e].slice(-2); // the merger's window (keepEpochs 2)
      recorder.addEpoch(e);
      expect((recorder as unknown as { tracks: Map<number, unknown> }).tracks.size).toBeLessThanOrEqual(3);
    }
    expect([...(recorder as unknown as { tracks: Map<number, unknown> }).tracks.keys()].sort((a, b) => a - b)).toEqual([18, 19]);
  });

  it('a link swapped in for the recording\'s directory while it records: the recording fails with TESSERA_ERR_RECORD_PATH, nothing is written through the link', async () => {
    const rig = makeRig({ seed: 9 });
    const outside = mkdtempSync(join(tmpdir(), 'tessera-outside-'));
    const sub = join(rig.dir, 'run');
    mkdirSync(sub);
    const path = join(sub, 'rec.h5');
    try {
      await rig.recorder.start(path);
      rig.feed(0);
      await waitFor(() => rig.recorder.status().batches >= 1);
      // the directory (checked inside dataDir when the recording started) becomes a link out
      renameSync(sub, join(rig.dir, 'run-moved'));
      symlinkSync(outside, sub);
      // someone who planted the link also planted a working file there for the recorder to publish
      // (not a copy of the real one: that is being written by the recorder thread meanwhile)
      writeFileSync(join(outside, 'rec.h5.writing'), 'planted');
      // the rest of the scan: the epoch completes, which publishes whatever the pacing
      rig.feed(1);
      rig.feed(2);
      rig.feed(3);
      await waitFor(() => rig.recorder.status().state === 'failed');
      // TESSERA_ERR_OUTPUT when the swap raced a publish in flight (its rename then found no file)
      expect(['TESSERA_ERR_RECORD_PATH', 'TESSERA_ERR_OUTPUT']).toContain(rig.recorder.status().error?.code);
      expect(readdirSync(outside)).toEqual(['rec.h5.writing']);
      // what was published before the swap is intact and readable where it was written
      const f = await readReducedFile(join(rig.dir, 'run-moved', 'rec.h5'));
      expect(f.format).toBe('tessera-reduced/1');
    } finally {
      await rig.recorder.close('done');
      rig.merger.close();
      rmSync(outside, { recursive: true, force: true });
    }
  }, 60_000);

  it('recording paths stay inside the data directory', () => {
    expect(recordingPath('/data', 'acq-1', null)).toBe('/data/acq-1.h5');
    expect(recordingPath('/data', 'acq-1', 'a/b.h5')).toBe('/data/a/b.h5');
    expect(recordingPath('/data', 'acq-1', '/data/c.h5')).toBe('/data/c.h5');
    for (const bad of ['../x.h5', '/etc/x.h5', 'a/../../x.h5', '/data']) expect(() => recordingPath('/data', 'acq-1', bad), bad).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_RECORD_PATH' }));
  });
});

/** The first half of the scan (8 frames) with the rest zero: what the sum holds at the pause. */
function halfFrames(frames: Uint16Array): Uint16Array {
  const out = new Uint16Array(frames.length);
  out.set(frames.subarray(0, 8 * 1860 * 2048));
  return out;
}
