/**
 * Continuous acquisition with history, on the real pipeline: the simulator repeats the scan
 * (every epoch shows the same truth frames), the merger keeps the last `keepEpochs` epochs for
 * the stream (a client can pick an earlier one), and the recording has one group per epoch,
 * each equal to the offline engine over that epoch's frames.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { waitUntil } from '../merger/live-helpers.js';
import { defineAndStart, expectOffline, expectSame, setRecording, launch, offline, Processes, simulate, truthFrames, UDFS } from './recording.helpers.js';

const ps = new Processes();
afterEach(() => ps.cleanup(), 30_000);

describe('continuous acquisition: epochs in the stream and in the recording', () => {
  it('three epochs: three groups, each equal to offline over its frames; an earlier epoch on the stream', async () => {
    const scan: [number, number] = [4, 8];
    // snapshots only at the end of each epoch (each is 30 MB of sum image): the writer keeps up on a loaded machine
    const p = await launch(ps, { merger: { chunkTimeoutMs: 5000, keepEpochs: 4 }, recorder: { writeIntervalMs: 200, snapshotIntervalMs: 60_000 } });
    simulate(ps, p, scan, ['--fps', '10', '--seed', '41', '--continuous']);
    // the receivers follow the running scan before the acquisition starts (its start point)
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'continuous', record: true, recordPath: 'continuous.h5' });
    await waitUntil(async () => (await p.client.api.get(id)).epoch >= 3, 60_000, 'epoch 3 under way');
    const running = await p.client.api.get(id);
    expect(running.record.state).toBe('recording');
    expect(running.epochs).toEqual(expect.arrayContaining([0, 1, 2, 3]));

    // the stream still offers epoch 1: a client picks it
    await p.client.connect();
    p.client.subscribe({ acquisition: id, epoch: 1 });
    const epoch1 = await p.client.waitFor((m) => m.acquisition === id && m.epoch === 1 && m.progress?.framesMerged === scan[0] * scan[1], 30_000);

    // recording switched off while the scan goes on: the file is closed with what it has
    const off = await setRecording(p, id, false);
    expect(off.record.state).toBe('closed');
    expect(off.state).toBe('running');
    await p.client.api.stop(id);

    const path = join(p.dataDir, 'continuous.h5');
    const closed = await p.client.api.get(id);
    expect(closed.record.skippedEpochs).toBe(0);
    console.log(`continuous recording: ${closed.record.batches} batches, ${(closed.record.bytes / 1e6).toFixed(1)} MB, last write ${closed.record.lastWriteMs?.toFixed(0)} ms, last publish ${closed.record.lastPublishMs?.toFixed(0)} ms`);
    const root = await readReducedFile(path);
    expect(root.attrs.mode).toBe('continuous');
    expect(root.attrs.layout).toBe('epochs');
    expect(root.attrs.final_state).toBe('recording stopped');
    const reference = await offline(scan, truthFrames(scan, 41));
    for (const k of [0, 1, 2]) {
      const f = await readReducedFile(path, { prefix: `epochs/${k}` });
      expect(f.navShape).toEqual(scan);
      const attrs = f.attrs;
      expect(attrs.format).toBe('tessera-reduced/1');
      const merged = Array.from(f.datasets.merged_at!.data, (t) => !Number.isNaN(t));
      expect(merged.every(Boolean), `epoch ${k} complete`).toBe(true);
      expectOffline(`epoch ${k}`, (u, name) => f.udfs[u]!.buffers[name]!.data, reference, f.datasets.damage!.data);
      if (k === 1) {
        for (const u of UDFS) {
          for (const [name, b] of Object.entries(f.udfs[u.id!]!.buffers)) expectSame(`epoch 1 ${u.id}/${name} file vs stream`, u.id!, b.data, epoch1.get(u.id!, name)!.data as ArrayLike<number>);
        }
      }
    }
    // tessera replay of the file: an earlier epoch picked on its stream is that epoch's group
    const replay = ps.spawn('replay', ['replay', path, '--port', '0']);
    const replayUrl = String((await replay.waitForMsg('replay listening', 30_000)).url);
    const rc = ps.client(replayUrl);
    await rc.connect();
    rc.subscribe({ acquisition: id, epoch: 1 });
    const replayed = await rc.waitFor((m) => m.acquisition === id && m.epoch === 1 && m.progress?.framesMerged === scan[0] * scan[1], 30_000);
    const group1 = await readReducedFile(path, { prefix: 'epochs/1' });
    for (const u of UDFS) {
      for (const [name, b] of Object.entries(group1.udfs[u.id!]!.buffers)) expectSame(`replayed epoch 1 ${u.id}/${name}`, u.id!, replayed.get(u.id!, name)!.data as ArrayLike<number>, b.data);
    }
    expect((await rc.api.status()).acquisition?.epochs).toEqual(expect.arrayContaining([0, 1, 2]));

    // epochs are merged one after the other
    const first = async (k: number) => Math.min(...Array.from((await readReducedFile(path, { prefix: `epochs/${k}` })).datasets.merged_at!.data));
    expect(await first(1)).toBeGreaterThan(await first(0));
    expect(await first(2)).toBeGreaterThan(await first(1));
  }, 120_000);
});
