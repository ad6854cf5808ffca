/**
 * The detector stream misbehaving under a running merger acquisition (all roles real
 * processes): the camera dies in the middle of a scan (SIGKILL: it stops wherever it is, mid
 * frame if it is sending one), then a new detector acquisition starts (another scene, frame_id
 * starting over, block_count running on or restarting at the very values the first run sent)
 * without the old one ever being stopped. The merger's single
 * acquisition must never mix frames of the two: every merged position equals the first scan's
 * truth (with the blocks the damage map reports lost zeroed) or is reported missing, and none
 * equals the second scan's. (Receiver-level cases, frame_id wrap and reset, a stream restart
 * re-arming the election, are in test/receivers/.)
 *
 * The camera dying with nothing after it: the receivers notice the silence
 * (receiver.streamIdleMs), and the merger ends the acquisition within a bound, `done` with
 * "detector stream stopped at scan position N" (status and stream state), every position never
 * received marked missing in the damage map, the merged ones equal to the offline result.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { waitUntil } from '../merger/live-helpers.js';
import { cleanUp, defineAndStart, follow, launch, lossesFromMirror, offline, simulate, UDFS, type Pipeline } from './pipeline-helpers.js';
import { stopLeftover } from './shared-pipeline.js';

/**
 * One pipeline for the three cases, one merger acquisition each (launching nine processes took
 * 5-8 s a case). receiver.streamIdleMs 5 s: above the pause between the two camera runs of the
 * restart cases, so that the restart itself must end the first acquisition (with
 * receiver.restartSilenceMs disabled the restart cases fail: position 8 on holds the second scan).
 * Launched by the first case that runs (launch() ties the failure logs to a test).
 */
let shared: Promise<Pipeline> | null = null;
const pipeline = () => (shared ??= launch({ merger: { chunkTimeoutMs: 4000 }, receiver: { streamIdleMs: 5000 } }));

afterAll(cleanUp, 30_000);

interface Checked {
  fromA: number;
  missing: number;
  wrong: string[];
  /** positions reported merged (complete sectors or missing blocks) */
  merged: number;
  /** per position: every sector filled in (nothing of it received) */
  allLost: boolean[];
}

/** Compare each merged position with the first scan's truth (and never the second's, if given). */
function check(got: ArrayLike<number>, blocks: Uint32Array, complete: Uint8Array, blocksMissing: Uint16Array, n: number, truthA: ArrayLike<number>, truthB?: ArrayLike<number>): Checked {
  const masks = 2;
  const out: Checked = { fromA: 0, missing: 0, wrong: [], merged: 0, allLost: [] };
  for (let i = 0; i < n; i++) {
    // not merged (yet): nothing complete and nothing reported missing
    const merged = complete[i]! > 0 || blocksMissing[i]! > 0;
    const allLost = merged && [...Array(8).keys()].every((s) => blocks[i * 8 + s] === 0xffffffff);
    out.allLost.push(allLost);
    if (merged) out.merged++;
    if (truthB) {
      for (let k = 0; k < masks; k++) {
        const v = got[i * masks + k]!;
        expect(v === truthB[i * masks + k] && v !== truthA[i * masks + k], `position ${i} mask ${k} holds the second scan`).toBe(false);
      }
    }
    if (allLost) {
      out.missing++;
      continue;
    }
    if (merged) {
      if (got[i * masks] !== truthA[i * masks] || got[i * masks + 1] !== truthA[i * masks + 1]) out.wrong.push(`${i}: got ${got[i * masks]}/${got[i * masks + 1]}, first scan ${truthA[i * masks]}/${truthA[i * masks + 1]}, damage ${Array.from(blocks.subarray(i * 8, i * 8 + 8), (b) => b.toString(16)).join(',')}`);
      else out.fromA++;
    }
  }
  return out;
}

describe('the camera dies mid-scan and nothing follows', () => {
  it('the acquisition ends done with "detector stream stopped at scan position N", the rest of the scan marked missing', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const p = await pipeline();
    await stopLeftover(p.client);
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single', chunkSize: 4 });
    // slow enough that the kill lands mid-scan even when the test's polling lags on a loaded machine
    const cam = simulate(p, scan, ['--fps', '4', '--seed', '81']);
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= 8, 60_000, 'the first chunks merged');
    cam.kill();
    await cam.exited;
    const killedAt = Date.now();
    // bound: streamIdleMs (5 s here; 10 s by default) + the merger's grace (chunkTimeoutMs 4 s) + heartbeats, with
    // plenty of room for a loaded machine
    await waitUntil(async () => (await p.client.api.get(id)).state !== 'running', 30_000, 'the acquisition ended');
    const endedMs = Date.now() - killedAt;
    const a = await p.client.api.get(id);
    expect(a.state).toBe('done');
    const m = /^detector stream stopped at scan position (\d+)$/.exec(a.message ?? '');
    expect(m, `message: ${a.message}`).not.toBeNull();
    const at = Number(m![1]);
    expect(at).toBeGreaterThanOrEqual(8);
    expect(at).toBeLessThan(n);
    expect((await p.client.api.status()).acquisition?.message).toBe(a.message);
    const mirror = await follow(p, id, (mm) => (mm.get('_damage', 'sectorBlocks')?.data.length ?? 0) === n * 8 && mm.state?.state === 'done', 30_000);
    expect(mirror.state?.message).toBe(a.message);
    const losses = lossesFromMirror(mirror, n);
    const truth = (await offline(scan, 81, losses))[2]!.intensity!.data as ArrayLike<number>;
    const r = check(mirror.get('masks', 'intensity')!.data as ArrayLike<number>, mirror.get('_damage', 'sectorBlocks')!.data as Uint32Array, mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array, mirror.get('_damage', 'blocksMissing')!.data as Uint16Array, n, truth);
    console.log(`stream stop: ended after ${endedMs} ms, "${a.message}", ${r.fromA} positions merged, ${r.missing} missing`);
    expect(r.wrong, `positions merged as undamaged that differ from offline:\n${r.wrong.join('\n')}`).toEqual([]);
    // every position accounted for; none from N on was received by any sector
    expect(r.merged).toBe(n);
    for (let i = at; i < n; i++) expect(r.allLost[i], `position ${i} after the stop`).toBe(true);
    expect(r.fromA).toBeGreaterThanOrEqual(8);
    expect(r.fromA + r.missing).toBe(n);
  }, 240_000);
});

/** offline over the second scan (no loss): the same for both restart cases, computed once */
let secondScanOffline: ReturnType<typeof offline> | null = null;

describe('the camera dies mid-scan and a new detector acquisition starts', () => {
  // the second run: another scene, frame_id from scratch, and block_count either running on (one
  // hardware counter) or restarting at exactly the first run's values, so that its keys are
  // those the first run already sent (the receivers tell it by the silence before it:
  // receiver.restartSilenceMs)
  it.each([
    ['block_count running on', ['--frame-id-start', '5', '--block-count-start', String(32 * 100_000)]],
    ['block_count and frame_id restarting at the first run\'s values', []],
  ])('the merged acquisition holds frames of the first scan only, never of the second (%s)', async (_what, secondArgs) => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    // (the shared pipeline's streamIdleMs is above the pause between the runs: see pipeline())
    const p = await pipeline();
    await stopLeftover(p.client);
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'single', chunkSize: 4 });
    const first = simulate(p, scan, ['--fps', '5', '--seed', '71']);
    // part of the scan, then kill -9
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= 8, 60_000, 'the first chunks merged');
    first.kill();
    await first.exited;
    await new Promise((r) => setTimeout(r, 1000));
    const second = simulate(p, scan, ['--fps', '20', '--seed', '72', ...secondArgs]);
    await second.exited;
    // the detector acquisition ended under it (stream stopped or restarted): the merger ends it
    await waitUntil(async () => (await p.client.api.get(id)).state !== 'running', 30_000, 'the acquisition ended');
    const ended = await p.client.api.get(id);
    expect(ended.state).toBe('done');
    // (null only if the kill came after the whole first scan was sent: checked below)
    if (ended.message !== null) expect(ended.message).toMatch(/^detector (stream stopped|stream restarted|acquisition ended \(shutter off\)) at scan position \d+$/);
    const mirror = await follow(p, id, (m) => (m.get('_damage', 'sectorBlocks')?.data.length ?? 0) === n * 8 && m.state?.state === 'done', 30_000);
    const losses = lossesFromMirror(mirror, n);
    const truthA = (await offline(scan, 71, losses))[2]!.intensity!.data as ArrayLike<number>;
    const truthB = (await (secondScanOffline ??= offline(scan, 72)))[2]!.intensity!.data as ArrayLike<number>;
    const got = mirror.get('masks', 'intensity')!.data as ArrayLike<number>;
    const r = check(got, mirror.get('_damage', 'sectorBlocks')!.data as Uint32Array, mirror.get('_damage', 'sectorsComplete')!.data as Uint8Array, mirror.get('_damage', 'blocksMissing')!.data as Uint16Array, n, truthA, truthB);
    console.log(`stream fault: "${ended.message}", ${r.fromA} positions from the first scan, ${r.missing} reported missing, ${n - r.merged} never merged`);
    expect(r.wrong, `positions merged as undamaged that hold neither scan:\n${r.wrong.join('\n')}`).toEqual([]);
    expect(r.merged).toBe(n);
    if (ended.message === null) expect(r.fromA, 'done without a message: the whole first scan came').toBe(n);
    const fromA = r.fromA;
    expect(fromA).toBeGreaterThanOrEqual(8);
  }, 240_000);
});
