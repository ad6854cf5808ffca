/**
 * A continuous acquisition carries on after a link outage, every role a real process: the camera
 * (`tessera simulate --continuous --outage A:B`) keeps streaming one detector acquisition while
 * stream frames A .. B-1 never reach the receivers (5 s, 2.5 x receiver.streamIdleMs 2 s;
 * block_count and frame_id count on as the camera's do). The receivers end the detector
 * acquisition ('stream_stopped'), the merger completes the interrupted epoch and resumes; when
 * the link is back the receivers rejoin the same detector acquisition (the election's query:
 * same round) and the acquisition goes on on it with its original mapping (epochs keep counting
 * the detector's scan repetitions): no stop and start by the operator.
 *  - the state stays `running`; the message says where it stopped, then that it resumed at epoch
 *    E on the same detector acquisition, E the epoch the rejoined frames fall in;
 *  - the first epoch after the outage whose frames all came after the rejoin equals runUdf
 *    offline over the simulator's ground truth (the scan repeats: a position's truth is the same
 *    in every epoch; integer sums bit-exact; blocks the damage map reports lost on a loaded
 *    machine zeroed in the reference), with no position lost whole;
 *  - the epochs before the outage are unchanged (epoch 0 as it was before the outage, equal to
 *    offline; the interrupted one complete with the positions that never came marked missing);
 *  - the epochs the outage passed over have no results at all.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { LiveMirror } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';
import { epochMirror, lostWhole } from './faults-helpers.js';
import { cleanUp, defineAndStart, expectDamageConsistent, expectResults, FRAMES_BEFORE, launch, lossesFromMirror, offline, simulate, UDFS, type Pipeline } from './pipeline-helpers.js';

afterEach(async () => {
  await cleanUp();
}, 30_000);

/** Copies of every buffer of a mirrored epoch (the UDFs', the damage map). */
function snapshot(m: LiveMirror): Map<string, number[]> {
  return new Map([...m.buffers].map(([key, b]) => [key, Array.from(b.data as ArrayLike<number>)]));
}

describe('a link outage under a continuous acquisition: the camera streams on, nothing arrives for 2.5 x streamIdleMs', () => {
  it('stays running and goes on on the same detector acquisition: the first whole epoch after the outage equals offline over the truth, the epochs before are unchanged', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const fps = 20;
    const t0 = Date.now();
    const p = await launch({ merger: { chunkTimeoutMs: 2000, keepEpochs: 16 }, receiver: { streamIdleMs: 2000 } });
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'continuous', chunkSize: 4 });
    // stream frame f is scan index f - (FRAMES_BEFORE - 1): the outage from epoch 1 position 10, 5 s long
    const lead = FRAMES_BEFORE - 1;
    const A = lead + n + 10;
    const B = A + 5 * fps;
    const camera = simulate(p, scan, ['--fps', String(fps), '--seed', '93', '--continuous', '--outage', `${A}:${B}`]);
    const truth = await offline(scan, 93);

    const m0 = await epochMirror(p, id, 0, n);
    // (offline over the truth with no block lost is `truth`: not computed again)
    const losses0 = lossesFromMirror(m0, n);
    expectResults(m0, losses0.size === 0 ? truth : await offline(scan, 93, losses0));
    const before0 = snapshot(m0);

    // the merger's log, not /api/status: the waiting state lasts only from the stop (streamIdleMs
    // and the chunk timeout after the outage began) to the link back, about 2 s, which polling
    // missed when a loaded machine made the checks of epoch 0 above take longer
    const waiting = await p.merger.waitFor((l) => l.msg === 'acquisition state' && l.acquisition === id && /resumes at epoch/.test(String(l.message)), 30_000, 'the resume decided');
    expect(waiting.state).toBe('running');
    const m = /^detector stream stopped at scan position (\d+) of epoch (\d+); resumes at epoch (\d+) with the next detector acquisition$/.exec(String(waiting.message));
    expect(m, `message: ${waiting.message}`).not.toBeNull();
    const [at, stoppedEpoch, R] = [Number(m![1]), Number(m![2]), Number(m![3])];
    // the last frames before the outage may have been lost to a loaded kernel, never later ones
    expect(stoppedEpoch).toBe(1);
    expect(at).toBeLessThanOrEqual(10);
    expect(R).toBe(2);

    // the link back: the same detector acquisition, rejoined where the camera is now
    await waitUntil(async () => /resumed at epoch/.test((await p.client.api.get(id)).message ?? ''), 40_000, 'the resume on the rejoined detector acquisition');
    const resumed = await p.client.api.get(id);
    expect(resumed.state).toBe('running');
    const r = /; resumed at epoch (\d+) on the same detector acquisition \(link back; epochs (\d+) to (\d+) passed without frames\)$/.exec(resumed.message ?? '');
    expect(r, `message: ${resumed.message}`).not.toBeNull();
    const E = Number(r![1]);
    expect([Number(r![2]), Number(r![3])]).toEqual([R, E - 1]);
    // the old mapping: the rejoined frames fall in the epoch of their scan repetition (the first
    // frame after the outage is scan index B - lead; the rejoin takes a frame or so)
    expect(E).toBeGreaterThanOrEqual(Math.floor((B - lead) / n));
    expect(E * n).toBeLessThanOrEqual(B - lead + 2 * fps);

    // the first epoch all of whose frames came after the rejoin: offline over the truth, nothing lost whole
    const F = E + 1;
    const mf = await epochMirror(p, id, F, n);
    expect(lostWhole(mf, n), `positions of epoch ${F} lost whole`).toEqual([]);
    expectDamageConsistent(mf, n);
    const lossesF = lossesFromMirror(mf, n);
    expectResults(mf, lossesF.size === 0 ? truth : await offline(scan, 93, lossesF));
    // epoch E: the chunks before the rejoin filled in as missing, the rest the truth
    const me = await epochMirror(p, id, E, n);
    expectDamageConsistent(me, n);
    const lossesE = lossesFromMirror(me, n);
    expectResults(me, lossesE.size === 0 ? truth : await offline(scan, 93, lossesE));
    camera.kill();
    await camera.exited;

    // the epochs the outage passed over: none; the ones before: as they were
    const { epochs } = await p.client.api.get(id);
    for (let e = R; e < E; e++) expect(epochs, `epochs (${epochs.join(', ')})`).not.toContain(e);
    const again0 = await epochMirror(p, id, 0, n);
    expect(snapshot(again0)).toEqual(before0);
    const mi = await epochMirror(p, id, R - 1, n);
    const lostI = lostWhole(mi, n);
    for (let i = at; i < n; i++) expect(lostI, `position ${i} of epoch ${R - 1}, after the stop`).toContain(i);
    expectDamageConsistent(mi, n);
    expectResults(mi, await offline(scan, 93, lossesFromMirror(mi, n)));
    console.log(`outage: stream frames ${A}..${B - 1} (${((B - A) / fps).toFixed(1)} s); stopped at position ${at} of epoch ${stoppedEpoch}, resume epoch ${R}, rejoined in epoch ${E}; epoch ${F} whole and exact; ${Date.now() - t0} ms in all`);
  }, 90_000);
});
