/**
 * The merger's side of a continuous acquisition resuming after its detector acquisition ended
 * (issue 8): AcquisitionManager driven with the receivers' messages (heartbeats and partials
 * computed by PartitionTask over the sector slices of simulator frames, as receivers do). Once
 * every sector reports detectorEnded it completes the interrupted epoch (the positions that
 * never came marked missing), picks the resume epoch R = ceil(atFrame / N), re-sends acquire
 * with `resume`, ignores the stale reports of the old leg, learns the resumed round for re-sent
 * acquires, and merges the new detector acquisition into epoch R. References: runUdf offline
 * over the same frames (positions that never came as zero frames), bit-exact.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { DetectorEnded } from '../../src/protocol/live.js';
import { waitUntil } from './live-helpers.js';
import { closeManagers, eightSectorRig, expectEqual, FULL, N, offline, SCAN, ZERO } from './manager-rig.js';

afterEach(closeManagers);

const setUp = () => eightSectorRig({ pidBase: 1000 });

describe('AcquisitionManager: a continuous acquisition resumes with the next detector acquisition', () => {
  it('completes the interrupted epoch with the positions that never came marked, resumes at R = ceil(at / N), merges the new detector acquisition into epoch R', async () => {
    const t = setUp();
    const a = new SimulatedScan({ scanShape: SCAN, seed: 11 });
    const b = new SimulatedScan({ scanShape: SCAN, seed: 12 });
    const A = Array.from({ length: N }, (_, i) => a.frame(i));
    const B = Array.from({ length: N }, (_, i) => b.frame(i));
    t.all({ acquisition: t.id, shutterRound: 3, lastIndex: 5 });
    // epoch 0 whole; epoch 1: positions 0..2, then the stream stopped (chunk 0 sent with 3 missing, chunk 1 never)
    t.deliver(0, 0, (p) => A[p]!);
    t.deliver(0, 1, (p) => A[p]!);
    t.deliver(1, 0, (p) => (p < 3 ? A[p]! : null));
    const stopped: DetectorEnded = { reason: 'stream_stopped', atFrame: 11, round: 3, resume: 0 };
    t.all({ acquisition: t.id, detectorEnded: stopped });
    await waitUntil(() => t.m.get(t.id).message?.includes('resumes') ?? false, 10_000, 'the resume');
    const s1 = t.m.get(t.id);
    expect(s1.state).toBe('running');
    expect(s1.message).toBe('detector stream stopped at scan position 3 of epoch 1; resumes at epoch 2 with the next detector acquisition');
    // epoch 1 is complete: chunk 1 filled in by the merger, equal to offline with positions 3..7 as zero frames
    const e1 = t.m.epochResults(t.id).find((e) => e.epoch === 1)!;
    expect(e1.complete).toBe(true);
    expectEqual(e1.results.results(), await offline(A.map((f, p) => (p < 3 ? f : ZERO))), 'epoch 1');
    expect(t.damage(1)).toEqual(Array.from({ length: N }, (_, p) => new Array(8).fill(p < 3 ? 0 : FULL)));
    expect(t.damage(0)).toEqual(Array.from({ length: N }, () => new Array(8).fill(0)));
    // the receivers hear the resume: same acquisition, start null, index 0 of the round after 3 is frame 16
    const resumes = t.acquires().filter((x) => x.resume);
    expect(resumes.length).toBe(8);
    expect(resumes.every((x) => x.acquisition === t.id && x.start === null && x.resume!.n === 1 && x.resume!.epoch === 2 && x.resume!.afterRound === 3)).toBe(true);

    // heartbeats sent before the receivers got it still carry the old leg's end: not a second end
    t.all({ acquisition: t.id, detectorEnded: stopped });
    await new Promise((r) => setTimeout(r, 700));
    expect(t.acquires().filter((x) => x.resume).length).toBe(8);
    // the next detector acquisition (round 4) under way: the merger learns its mapping
    t.all({ acquisition: t.id, shutterRound: 4, lastIndex: 1 });
    // a receiver restarted now (another pid, no acquisition) gets the concrete mapping with the
    // resume, at one of its heartbeats (the merger re-sends at most once a second per sector)
    const sentBefore = t.acquires().length;
    let beats = 0;
    await waitUntil(
      () => {
        if (beats++ % 5 === 0) t.heartbeat(5, { acquisition: null, shutterRound: 4, lastIndex: 2 });
        return t.acquires().length > sentBefore;
      },
      5_000,
      'the acquire re-sent to the restarted receiver',
    );
    expect(t.acquires().length).toBe(sentBefore + 1);
    const resent = t.acquires().filter((x) => x.resume).at(-1)!;
    expect(resent.start).toEqual({ shutterRound: 4, startIndex: -16 });
    expect(resent.resume).toEqual({ n: 1, epoch: 2, afterRound: 3 });
    t.heartbeat(5, { acquisition: t.id, shutterRound: 4, lastIndex: 2 });

    // a straggler of the interrupted epoch is dropped, not merged
    t.deliver(1, 1, (p) => A[p]!);
    expect(t.m.epochResults(t.id).find((e) => e.epoch === 1)!.framesMerged).toBe(N);
    // epoch 2 = the new detector acquisition's first scan
    t.deliver(2, 0, (p) => B[p]!);
    t.deliver(2, 1, (p) => B[p]!);
    const e2 = t.m.epochResults(t.id).find((e) => e.epoch === 2)!;
    expect(e2.complete).toBe(true);
    expectEqual(e2.results.results(), await offline(B), 'epoch 2');
    expect(t.damage(2)).toEqual(Array.from({ length: N }, () => new Array(8).fill(0)));
    const s2 = t.m.get(t.id);
    expect(s2.state).toBe('running');
    expect(s2.message).toBe('detector stream stopped at scan position 3 of epoch 1; resumed at epoch 2');

    // the new leg ends too (its own reports: resume 1), at an epoch boundary: R = 3, no epoch 3 made up
    t.all({ acquisition: t.id, detectorEnded: { reason: 'jump', atFrame: 24, round: 4, resume: 1 } });
    await waitUntil(() => t.acquires().some((x) => x.resume?.n === 2), 10_000, 'the second resume');
    const second = t.acquires().filter((x) => x.resume?.n === 2);
    expect(second[0]!.resume).toEqual({ n: 2, epoch: 3, afterRound: 4 });
    expect(t.m.get(t.id).message).toBe('detector stream restarted at scan position 0 of epoch 3; resumes at epoch 3 with the next detector acquisition');
    expect(t.m.epochResults(t.id).map((e) => e.epoch)).not.toContain(3);
    // stop while waiting for the camera: done (after the stop's grace at most: nothing of epoch 3 comes)
    t.m.stop(t.id);
    await waitUntil(() => t.m.get(t.id).state === 'done', 10_000, 'done');
  });

  it('a detector acquisition already under way when the merger decides: epoch R starts at its first repetition safely ahead', async () => {
    const t = setUp();
    const a = new SimulatedScan({ scanShape: SCAN, seed: 21 });
    const A = Array.from({ length: N }, (_, i) => a.frame(i));
    t.all({ acquisition: t.id, shutterRound: 1, lastIndex: 3 });
    t.deliver(0, 0, (p) => (p < 2 ? A[p]! : null));
    // the camera restarted: round 2 is running (index 5) while every receiver reports the end of round 1
    for (let s = 0; s < 8; s++) t.heartbeat(s, { acquisition: t.id, shutterRound: 2, lastIndex: 5, detectorEnded: { reason: 'jump', atFrame: 2, round: 1, resume: 0 } });
    await waitUntil(() => t.acquires().some((x) => x.resume), 10_000, 'the resume');
    const r = t.acquires().find((x) => x.resume)!;
    // R = ceil(2 / 8) = 1; index 5 in flight + one chunk -> the repetition at index 16 is frame 8: startIndex 8
    expect(r.resume).toEqual({ n: 1, epoch: 1, afterRound: 1 });
    expect(r.start).toEqual({ shutterRound: 2, startIndex: 16 - 8 });
    const e0 = t.m.epochResults(t.id).find((e) => e.epoch === 0)!;
    expect(e0.complete).toBe(true);
    expectEqual(e0.results.results(), await offline(A.map((f, p) => (p < 2 ? f : ZERO))), 'epoch 0');
  });
});
