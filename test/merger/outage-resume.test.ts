/**
 * The merger's side of a continuous acquisition carrying on after a link outage: the camera kept
 * streaming the same detector acquisition, every receiver ended it ('stream_stopped') and, the
 * link back, rejoins it (same election round, indices far ahead). AcquisitionManager driven with
 * the receivers' messages (heartbeats; partials computed by PartitionTask over the sector slices
 * of simulator frames, as receivers do): the resume names the ended leg's mapping (`rejoin`), a
 * heartbeat of that round again makes it the `start` (re-sent acquires, stop arithmetic), the
 * partials of the rejoined stream land in the epochs the old mapping gives (the ChunkMerger jumps
 * over the epochs of the outage), and the epochs before it stay as they were. References: runUdf
 * offline over the same frames, bit-exact; the simulator's scan repeats, so the truth of a
 * position is the same in every epoch.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import type { AcquireMessage, DetectorEnded } from '../../src/protocol/live.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { waitUntil } from './live-helpers.js';
import { closeManagers, CHUNK, eightSectorRig, expectEqual, N, offline, SCAN, UDFS, ZERO, type Beat } from './manager-rig.js';

afterEach(closeManagers);

/** A manager with eight live sectors; `before`: what their heartbeats say when the acquisition starts. */
const setUp = (before: Beat = { acquisition: null }) => eightSectorRig({ pidBase: 2000, registry: new LiveStoreRegistry({ keepEpochs: 16 }), before });

/** The live store of an epoch (what clients and the recorder get) holds exactly `want`. */
function expectStore(t: ReturnType<typeof setUp>, epoch: number, want: UDFResults[]): void {
  const store = t.registry.get(t.id, epoch)!;
  UDFS.forEach((u, i) => {
    for (const [name, r] of Object.entries(want[i]!)) {
      const g = store.getBuffer(u.id, name).data as ArrayLike<number>;
      for (let k = 0; k < r.data.length; k++) if (!Object.is(g[k], r.data[k])) throw new Error(`epoch ${epoch} store ${u.id}/${name}[${k}] = ${g[k]}, expected ${r.data[k]}`);
    }
  });
}

/** Send heartbeats of a restarted receiver (another pid would be a new receiver; here: no acquisition) until the merger re-sends it the acquire. */
async function resentTo(t: ReturnType<typeof setUp>, sector: number, beat: Beat): Promise<AcquireMessage> {
  const before = t.sent.filter((x) => x.sector === sector && x.m.type === 'acquire').length;
  let beats = 0;
  await waitUntil(
    () => {
      if (beats++ % 5 === 0) t.heartbeat(sector, beat);
      return t.sent.filter((x) => x.sector === sector && x.m.type === 'acquire').length > before;
    },
    5_000,
    `the acquire re-sent to sector ${sector}`,
  );
  return t.sent.filter((x) => x.sector === sector && x.m.type === 'acquire').at(-1)!.m as AcquireMessage;
}

describe('AcquisitionManager: a continuous acquisition goes on on the same detector acquisition after a link outage', () => {
  it('names the ended leg in the resume, learns the rejoined round as start, merges the rejoined stream into the epochs of the old mapping; epochs before unchanged', async () => {
    const t = setUp();
    const A = Array.from({ length: N }, (_, i) => new SimulatedScan({ scanShape: SCAN, seed: 31 }).frame(i));
    t.all({ acquisition: t.id, shutterRound: 3, lastIndex: 5 });
    t.deliver(0, 0, (p) => A[p]!);
    t.deliver(0, 1, (p) => A[p]!);
    t.deliver(1, 0, (p) => (p < 3 ? A[p]! : null));
    // the link broke: every receiver ended round 3 at frame 11
    t.all({ acquisition: t.id, detectorEnded: { reason: 'stream_stopped', atFrame: 11, round: 3, resume: 0 } });
    await waitUntil(() => t.m.get(t.id).message?.includes('resumes') ?? false, 10_000, 'the resume');
    const resumes = t.acquires().filter((x) => x.resume);
    expect(resumes.length).toBe(8);
    for (const r of resumes) {
      expect(r.start).toBeNull();
      expect(r.resume).toEqual({ n: 1, epoch: 2, afterRound: 3 });
      // started with start null: index 0 of round 3 was frame 0
      expect(r.rejoin).toEqual({ shutterRound: 3, startIndex: 0 });
    }
    const e0 = await offline(A);
    const e1 = await offline(A.map((f, p) => (p < 3 ? f : ZERO)));

    // the link is back: the receivers rejoined round 3, 45 frames on (the camera streamed on)
    t.all({ acquisition: t.id, shutterRound: 3, lastIndex: 45 });
    // a receiver restarted meanwhile gets the mapping as a concrete start
    const resent = await resentTo(t, 6, { acquisition: null, shutterRound: 3, lastIndex: 46 });
    expect(resent.start).toEqual({ shutterRound: 3, startIndex: 0 });
    expect(resent.resume).toEqual({ n: 1, epoch: 2, afterRound: 3 });
    expect(resent.rejoin).toBeUndefined();
    t.heartbeat(6, { acquisition: t.id, shutterRound: 3, lastIndex: 46 });

    // they joined at the boundary 48 = epoch 6 chunk 0: epochs 2..5 got nothing
    t.deliver(6, 0, (p) => A[p]!);
    t.deliver(6, 1, (p) => A[p]!);
    t.deliver(7, 0, (p) => A[p]!);
    const e6 = t.m.epochResults(t.id).find((e) => e.epoch === 6)!;
    expect(e6.complete).toBe(true);
    expectEqual(e6.results.results(), e0, 'epoch 6');
    expect(t.damage(6)).toEqual(Array.from({ length: N }, () => new Array(8).fill(0)));
    for (let e = 2; e < 6; e++) expect(t.m.epochResults(t.id).some((x) => x.epoch === e), `epoch ${e}`).toBe(false);
    expect(t.m.get(t.id).epochs.filter((e) => e >= 2 && e < 6)).toEqual([]);
    const s = t.m.get(t.id);
    expect(s.state).toBe('running');
    expect(s.message).toBe('detector stream stopped at scan position 3 of epoch 1; resumed at epoch 6 on the same detector acquisition (link back; epochs 2 to 5 passed without frames)');
    // the epochs before the outage are as they were
    expectStore(t, 0, e0);
    expectStore(t, 1, e1);

    // stop: frames counted in the old mapping: newest index 61 (rel 61) + the frames in flight
    // (one chunk, or half a second at the frame rate the heartbeats show), up to a chunk boundary
    t.all({ acquisition: t.id, shutterRound: 3, lastIndex: 61 });
    const fps = Math.max(0, ...t.m.monitor.alive().map((v) => v.framesPerSecond));
    const want = 62 + Math.max(CHUNK, Math.ceil(fps * 0.5));
    t.m.stop(t.id);
    const stop = t.sent.filter((x) => x.m.type === 'stop').at(-1)!.m;
    expect(stop).toMatchObject({ type: 'stop', atFrame: Math.ceil(want / CHUNK) * CHUNK });
    const atFrame = (stop as { atFrame: number }).atFrame;
    for (let seq = 7 * 2 + 1; seq * CHUNK < atFrame; seq++) t.deliver(Math.floor(seq / 2), seq % 2, (p) => A[p]!);
    await waitUntil(() => t.m.get(t.id).state === 'done', 10_000, 'done');
    const e7 = t.m.epochResults(t.id).find((e) => e.epoch === 7);
    if (e7) expectEqual(e7.results.results(), e0, 'epoch 7');
  });

  it('the ended leg started at a named point: the rejoin carries that mapping; a new camera acquisition after the outage resumes as before', async () => {
    // the receivers were on round 3 at index 5 when it started: start {3, 16}
    const t = setUp({ acquisition: null, shutterRound: 3, lastIndex: 5 });
    expect(t.acquire.start).toEqual({ shutterRound: 3, startIndex: 16 });
    t.all({ acquisition: t.id, shutterRound: 3, lastIndex: 30 });
    t.all({ acquisition: t.id, detectorEnded: { reason: 'stream_stopped', atFrame: 14, round: 3, resume: 0 } });
    await waitUntil(() => t.acquires().some((x) => x.resume), 10_000, 'the resume');
    const r = t.acquires().find((x) => x.resume)!;
    expect([r.start, r.resume, r.rejoin]).toEqual([null, { n: 1, epoch: 2, afterRound: 3 }, { shutterRound: 3, startIndex: 16 }]);
    // instead of the link coming back, the camera started anew (round 4): the next leg's mapping as before, no rejoin
    t.all({ acquisition: t.id, shutterRound: 4, lastIndex: 2 });
    const resent = await resentTo(t, 2, { acquisition: null, shutterRound: 4, lastIndex: 3 });
    expect([resent.start, resent.rejoin]).toEqual([{ shutterRound: 4, startIndex: -16 }, undefined]);
    // that leg ends too: its rejoin is its own mapping
    t.all({ acquisition: t.id, detectorEnded: { reason: 'stream_stopped', atFrame: 21, round: 4, resume: 1 } });
    await waitUntil(() => t.acquires().some((x) => x.resume?.n === 2), 10_000, 'the second resume');
    const r2 = t.acquires().find((x) => x.resume?.n === 2)!;
    expect([r2.start, r2.resume, r2.rejoin]).toEqual([null, { n: 2, epoch: 3, afterRound: 4 }, { shutterRound: 4, startIndex: -16 }]);
  });

  it('no rejoin when the sectors ended in different rounds or the round is unknown', async () => {
    const t = setUp();
    t.all({ acquisition: t.id, shutterRound: 3, lastIndex: 5 });
    for (let s = 0; s < 8; s++) t.heartbeat(s, { acquisition: t.id, detectorEnded: { reason: 'stream_stopped', atFrame: 6, round: s === 2 ? null : 3, resume: 0 } });
    await waitUntil(() => t.acquires().some((x) => x.resume), 10_000, 'the resume');
    const r = t.acquires().find((x) => x.resume)!;
    expect([r.start, r.resume, r.rejoin]).toEqual([null, { n: 1, epoch: 1, afterRound: 3 }, undefined]);
  });
});
