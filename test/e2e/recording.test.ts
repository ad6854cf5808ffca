/**
 * Recording on the real pipeline (simulator -> 8 receivers -> merger): the recorded file, read
 * back with readReducedFile and with h5py, equals the live results and the offline engine over
 * the simulator's ground truth; switched off and on again mid-run, the second file holds the
 * whole scan with the first file's merge times; an unwritable recording path is an error in the
 * status while the live results go on.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { waitUntil } from '../merger/live-helpers.js';
import {
  defineAndStart,
  expectOffline,
  expectSame,
  h5pyDigest,
  hasH5py,
  launch,
  offline,
  type Pipeline,
  Processes,
  sha256,
  setRecording,
  simulate,
  truthFrames,
  UDFS,
} from './recording.helpers.js';
import { stopLeftover } from './shared-pipeline.js';

const ps = new Processes();
/**
 * One pipeline for the three scans, one acquisition (and recording path) each: launching nine
 * processes took 5-8 s a case. Launched by the first case that runs (launch() ties the failure
 * logs to a test).
 */
let shared: Promise<Pipeline> | null = null;
const pipeline = () => (shared ??= launch(ps));
afterAll(() => ps.cleanup(), 30_000);

describe('recording a live acquisition', () => {
  it('a single scan: the file (h5wasm and h5py) equals the live results and offline over the same frames', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const p = await pipeline();
    await stopLeftover(p.client);
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single', record: true, recordPath: 'runs/first.h5' });
    const sim = simulate(ps, p, scan, ['--fps', '40', '--seed', '21']);
    await p.client.connect();
    p.client.subscribe({ acquisition: id });
    const mirror = await p.client.waitFor((m) => m.acquisition === id && m.state?.state === 'done', 60_000);
    expect((await sim.exited).code).toBe(0);
    await waitUntil(async () => (await p.client.api.get(id)).record.state === 'closed', 20_000, 'recording closed');
    const summary = await p.client.api.get(id);
    const path = join(p.dataDir, 'runs', 'first.h5');
    expect(summary.record).toMatchObject({ enabled: true, path, state: 'closed', error: null, lagMs: 0 });
    expect(summary.record.batches).toBeGreaterThan(0);
    expect(existsSync(`${path}.writing`)).toBe(false);

    const reference = await offline(scan, truthFrames(scan, 21));
    const f = await readReducedFile(path);
    expect(f.format).toBe('tessera-reduced/1');
    expect(f.navShape).toEqual(scan);
    expect(f.sigShape).toEqual([1860, 2048]);
    expect(f.attrs.acquisition).toBe(id);
    expect(f.attrs.mode).toBe('single');
    expect(f.attrs.final_state).toBe('done');
    expect(typeof f.attrs.started_at).toBe('string');
    expect(typeof f.attrs.ended_at).toBe('string');
    expect(typeof f.attrs.tessera_version).toBe('string');
    expect(JSON.parse(String(f.attrs.udfs))).toEqual(summary.udfs);
    UDFS.forEach((u, i) => {
      const g = f.udfs[u.id!]!;
      expect(g.name).toBe(u.name);
      expect(g.params).toEqual(u.params ?? {});
      for (const [name, r] of Object.entries(reference[i]!)) {
        const b = g.buffers[name]!;
        expect(b.kind).toBe(r.kind);
        expect(b.shape).toEqual([...r.data.shape]);
        expectSame(`file ${u.id}/${name} vs live`, u.id!, b.data, mirror.get(u.id!, name)!.data as ArrayLike<number>);
      }
    });
    // the damage map is the live one; results equal offline (at intact positions if datagrams were lost)
    expect([...f.datasets.damage!.data]).toEqual([...(mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array)]);
    expect([...f.datasets.blocks_missing!.data]).toEqual([...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)]);
    expectOffline('file', (u, name) => f.udfs[u]!.buffers[name]!.data, reference, f.datasets.damage!.data);
    const mergedAt = [...f.datasets.merged_at!.data];
    const t0 = Date.parse(String(f.attrs.started_at));
    const t1 = Date.parse(String(f.attrs.ended_at));
    expect(mergedAt.every((t) => t >= t0 && t <= t1)).toBe(true);
    // stats: one row per sector, datagrams counted
    expect(f.datasets.stats!.shape).toEqual([8, 7]);
    expect(f.datasets.stats!.data[0]).toBeGreaterThan(0);
    expect(f.datasets.stats!.attrs.frames_merged).toBe(n);

    // the time series: sum snapshots of the running scan, each at most the final sum (it only grows)
    const { readSnapshots } = await import('../../src/merger/replay-file.js');
    const series = await readSnapshots(path, '', 'sum', 'intensity');
    expect(series.times.length).toBeGreaterThan(0);
    const finalSum = f.udfs.sum!.buffers.intensity!.data;
    for (let i = 0; i < series.times.length; i++) {
      const snap = series.at(i);
      let over = -1;
      for (let k = 0; k < snap.length && over < 0; k++) if (snap[k]! > finalSum[k]!) over = k;
      expect(over, `snapshot ${i} exceeds the final sum`).toBe(-1);
    }

    if (!hasH5py()) {
      console.warn('h5py is not installed: the h5py half of this test is skipped');
      return;
    }
    const d = h5pyDigest(path);
    expect(d.attrs.format).toBe('tessera-reduced/1');
    expect(d.attrs.nav_shape).toEqual(scan);
    for (const u of UDFS) {
      for (const [name, b] of Object.entries(f.udfs[u.id!]!.buffers)) {
        const got = d.datasets[`/udf/${u.id}/${name}`]!;
        expect(got.shape, `${u.id}/${name}`).toEqual(b.shape);
        expect(got.sha256, `h5py ${u.id}/${name}`).toBe(await sha256(b.data));
      }
    }
    expect(d.datasets['/damage']!.sha256).toBe(await sha256(f.datasets.damage!.data));
  }, 120_000);

  it('switched off and on again mid-run: enabled false while off, the second file holds the whole scan with the merge times', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const p = await pipeline();
    await stopLeftover(p.client);
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single', chunkSize: 4, record: true });
    // 6 fps: room for the two switches between the second chunk merged and the end of the scan
    // (at 10 fps a merger lagging on a loaded machine saw the scan end first: "cannot start
    // recording: acquisition is done")
    const sim = simulate(ps, p, scan, ['--fps', '6', '--seed', '23']);
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= 8, 60_000, 'two chunks');
    const off = await setRecording(p, id, false);
    expect(off.record).toMatchObject({ enabled: false, state: 'closed', path: join(p.dataDir, `${id}.h5`) });
    expect((await p.client.api.get(id)).record.enabled).toBe(false);
    const on = await setRecording(p, id, true);
    expect(on.record).toMatchObject({ enabled: true, path: join(p.dataDir, `${id}-2.h5`) });
    // on a loaded machine the scan may end while the second file opens: it is closing by then
    expect(['recording', 'closing', 'closed']).toContain(on.record.state);
    expect((await sim.exited).code).toBe(0);
    await waitUntil(async () => (await p.client.api.get(id)).state === 'done' && (await p.client.api.get(id)).record.state === 'closed', 60_000, 'second recording closed');
    const summary = await p.client.api.get(id);
    expect(summary.record).toMatchObject({ enabled: true, state: 'closed', error: null });
    expect(summary.record.batches).toBeGreaterThan(0);

    const first = await readReducedFile(join(p.dataDir, `${id}.h5`));
    const second = await readReducedFile(join(p.dataDir, `${id}-2.h5`));
    expect(first.attrs.final_state).toBe('recording stopped');
    expect(second.attrs.final_state).toBe('done');
    const m1 = [...first.datasets.merged_at!.data];
    const m2 = [...second.datasets.merged_at!.data];
    const before = m1.filter((t) => !Number.isNaN(t)).length;
    expect(before).toBeGreaterThanOrEqual(8);
    expect(before).toBeLessThan(n);
    expect(m2.slice(0, before)).toEqual(m1.slice(0, before));
    expect(m2.every((t) => !Number.isNaN(t))).toBe(true);
    expect(m2.slice(before).every((t) => t >= m1[before - 1]!)).toBe(true);
    expect(second.datasets.stats!.attrs.frames_merged).toBe(n);
    const reference = await offline(scan, truthFrames(scan, 23));
    expectOffline('second file', (u, name) => second.udfs[u]!.buffers[name]!.data, reference, second.datasets.damage!.data);
  }, 120_000);

  it('an unwritable recording path: the error is in the status and the stream info, the live results go on', async () => {
    const scan: [number, number] = [4, 8];
    const p = await pipeline();
    await stopLeftover(p.client);
    // a file where the recording's directory should be
    writeFileSync(join(p.dataDir, 'blocked'), 'not a directory');
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single', record: true, recordPath: 'blocked/run.h5' });
    const sim = simulate(ps, p, scan, ['--fps', '40', '--seed', '22']);
    await p.client.connect();
    p.client.subscribe({ acquisition: id });
    const mirror = await p.client.waitFor((m) => m.acquisition === id && m.state?.state === 'done' && (m.info as { record?: { state?: string } } | null)?.record?.state === 'failed', 60_000);
    expect((await sim.exited).code).toBe(0);
    const summary = await p.client.api.get(id);
    expect(summary.record.state).toBe('failed');
    expect(summary.record.error?.code).toBe('TESSERA_ERR_OUTPUT');
    expect((mirror.info as { record: { error: { code: string } } }).record.error.code).toBe('TESSERA_ERR_OUTPUT');
    const reference = await offline(scan, truthFrames(scan, 22));
    expectOffline('live', (u, name) => mirror.get(u, name)!.data as ArrayLike<number>, reference, mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array);
    // a path outside the data directory is refused at define
    await expect(p.client.api.define({ scanShape: scan, udfs: UDFS, mode: 'single', record: true, recordPath: '../outside.h5' })).rejects.toMatchObject({ code: 'TESSERA_ERR_RECORD_PATH' });
  }, 120_000);
});
