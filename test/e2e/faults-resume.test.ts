/**
 * A continuous acquisition carries on when the detector stream comes back (issue 8), every role
 * a real process: the camera (`tessera simulate --continuous`) is killed in the middle of a scan
 * (SIGKILL: mid-frame if it is sending one), a few seconds of silence (receiver.streamIdleMs 2 s
 * ends the detector acquisition), then a new camera run: another scene, frame_id from scratch,
 * block_count running on past the old one's as a real camera's counter does, flag off then on.
 * The acquisition stays `running` and resumes by itself at the start of a fresh epoch R:
 *  - the interrupted epoch is complete: the positions that never came are marked missing (all 8
 *    sectors 0xffffffff) and everything equals runUdf offline over the first camera's truth with
 *    what the damage map says was lost zeroed;
 *  - epoch R equals runUdf offline over the new camera's truth exactly (integer sums bit-exact;
 *    blocks the damage map reports lost on a loaded machine zeroed in the reference), with no
 *    position lost whole: no frame of the first camera in it, none of the second before it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { LiveMirror } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';
import { completeEpoch } from './faults-helpers.js';
import { cleanUp, defineAndStart, expectDamageConsistent, expectResults, launch, lossesFromMirror, offline, simulate, UDFS, type Pipeline } from './pipeline-helpers.js';

afterEach(cleanUp, 30_000);

const FULL = 0xffffffff;

/** The mirror of one epoch of the acquisition, once every position of it is merged. */
async function epochMirror(p: Pipeline, id: string, epoch: number, positions: number): Promise<LiveMirror> {
  // (subscribing to an epoch that does not exist yet is an error)
  await waitUntil(async () => (await p.client.api.get(id)).epochs.includes(epoch), 30_000, `epoch ${epoch} begun`);
  await p.client.connect();
  p.client.subscribe({ acquisition: id, epoch });
  return p.client.waitFor((m) => m.acquisition === id && m.epoch === epoch && completeEpoch(m, positions), 30_000);
}

/** Positions of the mirrored epoch of which no sector delivered anything (merged as missing). */
function lostWhole(m: LiveMirror, positions: number): number[] {
  const bits = m.get('_damage', 'sectorBlocks')!.data as Uint32Array;
  return Array.from({ length: positions }, (_, i) => i).filter((i) => bits.subarray(i * 8, i * 8 + 8).every((b) => b === FULL));
}

describe('the camera dies mid-scan under a continuous acquisition, then streams again', () => {
  it('the acquisition stays running, the interrupted epoch completes with the missing positions marked, and it resumes at a fresh epoch equal to offline over the new camera', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const t0 = Date.now();
    const p = await launch({ merger: { chunkTimeoutMs: 3000, keepEpochs: 4 }, receiver: { streamIdleMs: 2000 } });
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'continuous', chunkSize: 4 });
    const first = simulate(p, scan, ['--fps', '8', '--seed', '91', '--continuous']);
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= n + 8, 60_000, 'epoch 0 and the start of epoch 1 merged');
    first.kill();
    await first.exited;
    const killedAt = Date.now();

    // silence: streamIdleMs, then the merger's grace (chunkTimeoutMs), then the resume
    await waitUntil(async () => /resumes at epoch/.test((await p.client.api.get(id)).message ?? ''), 30_000, 'the resume decided');
    const waiting = await p.client.api.get(id);
    const m = /^detector stream stopped at scan position (\d+) of epoch (\d+); resumes at epoch (\d+) with the next detector acquisition$/.exec(waiting.message ?? '');
    expect(m, `message: ${waiting.message}`).not.toBeNull();
    const [at, stoppedEpoch, R] = [Number(m![1]), Number(m![2]), Number(m![3])];
    expect(waiting.state).toBe('running');
    expect(stoppedEpoch).toBeGreaterThanOrEqual(1);
    // R is the epoch after the last one with a frame: the stopped one, or the next when it stopped at its position 0
    expect(R).toBe(at === 0 ? stoppedEpoch : stoppedEpoch + 1);

    // the interrupted epoch: complete, the positions from `at` on missing in every sector, the rest the first camera's truth
    const interrupted = R - 1;
    const mi = await epochMirror(p, id, interrupted, n);
    const lostI = lostWhole(mi, n);
    // (stopped at position 0 of an epoch: the interrupted one is the epoch before, whole)
    const cameAll = at === 0 ? n : at;
    for (let i = cameAll; i < n; i++) expect(lostI, `position ${i} of epoch ${interrupted}, after the stop`).toContain(i);
    expect(lostI.filter((i) => i < cameAll).length, 'positions before the stop lost whole').toBeLessThan(cameAll);
    expectDamageConsistent(mi, n);
    expectResults(mi, await offline(scan, 91, lossesFromMirror(mi, n)));

    // the camera streams again: a new detector acquisition, block_count running on
    const second = simulate(p, scan, ['--fps', '10', '--seed', '92', '--continuous', '--frame-id-start', '5', '--block-count-start', String(32 * 100_000)]);
    const silenceMs = Date.now() - killedAt;
    const mr = await epochMirror(p, id, R, n);
    const resumed = await p.client.api.get(id);
    expect(resumed.state).toBe('running');
    expect(resumed.message).toBe(`detector stream stopped at scan position ${at} of epoch ${stoppedEpoch}; resumed at epoch ${R}`);
    expect(lostWhole(mr, n), `positions of epoch ${R} lost whole`).toEqual([]);
    expectDamageConsistent(mr, n);
    expectResults(mr, await offline(scan, 92, lossesFromMirror(mr, n)));
    second.kill();
    console.log(`resume: stopped at position ${at} of epoch ${stoppedEpoch}, ${n - at} positions marked missing, ${silenceMs} ms of silence, resumed at epoch ${R}; ${Date.now() - t0} ms in all`);
  }, 120_000);
});
