/**
 * A continuous acquisition carrying on after a link outage (the camera kept streaming the same
 * detector acquisition; no datagram for longer than streamIdleMs ended it here as
 * 'stream_stopped'; when the link is back ShutterSync rejoins it through the election's query:
 * same round, joinedAt > 0, a new ShutterSync number). The merger's resume names the ended leg's
 * mapping in the acquire's `rejoin`; the PartialRunner binds the rejoined detector acquisition
 * with it (rel = index - the old startIndex) from the first chunk boundary at or after max(R x N, the
 * first frame it can still see). References: plain loops over the frames each chunk must hold
 * (referenceChunk), and the chunk and epoch each partial must name; frames of another detector
 * acquisition carry other data (seed), so a chunk mixing them cannot pass.
 */
import { describe, expect, it } from 'vitest';
import { decodeMergerMessage, encodeLive, type AcquireMessage, type PartialMessage } from '../../src/protocol/live.js';
import { acquireThroughWire as wire, continuousRunnerHarness, endedAcquisition as ended, SMALL_SCAN, standardLiveUdfs } from './live-helpers.js';

const SECTOR = 5;
const N = SMALL_SCAN.positions;
/** Frames of the detector acquisition with data `seed`; detector(): joinedAt > 0 is joined under way (a query). */
const { tile, detector, setUp, expectChunk } = continuousRunnerHarness({ sector: SECTOR, salt: 11, acquisition: 'o1', udfs: standardLiveUdfs() });

/** Every partial holds detector frames index = startIndex + epoch x N + position of detector acquisition `seed`. */
function expectMapped(ps: PartialMessage[], seed: number, startIndex: number): void {
  for (const p of ps) expectChunk(p, p.epoch, p.chunk, (pos) => ({ seed, index: startIndex + p.epoch * N + pos }));
}

const seqs = (ps: PartialMessage[]) => ps.map((p) => [p.epoch, p.chunk]);

describe('PartialRunner: resume on the same detector acquisition after a link outage', () => {
  it('binds the rejoined detector acquisition with the old mapping from the first chunk boundary at or after max(R x N, its first frame); epochs in between get nothing', () => {
    const { sent, runner, base } = setUp();
    runner.arm(wire(base));
    const d1 = detector(1, 4);
    runner.onAcquisitionStart(d1);
    for (let i = 0; i < 13; i++) runner.onTile(tile(1, 1, i));
    runner.onAcquisitionEnd(ended(d1, 13));
    expect(runner.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 13, round: 4, resume: 0 });
    const before = sent.length;
    // R = ceil(13 / 10) = 2; the leg that ended ran round 4 with startIndex 0
    const resume = wire({ ...base, resume: { n: 1, epoch: 2, afterRound: 4 }, rejoin: { shutterRound: 4, startIndex: 0 } });
    expect([resume.resume, resume.rejoin]).toEqual([{ n: 1, epoch: 2, afterRound: 4 }, { shutterRound: 4, startIndex: 0 }]);
    runner.arm(resume);
    expect(runner.state).toBe('armed');

    // the link is back: ShutterSync rejoined round 4 at index 57 (the camera streamed on meanwhile)
    const d2 = detector(2, 4, 57);
    runner.onAcquisitionStart(d2);
    expect(runner.state).toBe('running');
    for (let i = 57; i < 81; i++) runner.onTile(tile(2, 1, i));
    const after = sent.slice(before);
    // 57 = epoch 5 position 7 -> the boundary at position 8 (epoch 5 chunk 2), then on
    expect(seqs(after)).toEqual([[5, 2], [6, 0], [6, 1], [6, 2], [7, 0], [7, 1], [7, 2]]);
    expectMapped(after, 1, 0);
    expect(runner.detectorEnded).toBeNull();

    // a second outage on the rejoined leg: reported in the same mapping, with the resume it ran on
    runner.onAcquisitionEnd(ended(d2, 24));
    expect(runner.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 81, round: 4, resume: 1 });
    expectChunk(sent.at(-1)!, 8, 0, (pos) => (pos < 1 ? { seed: 1, index: 80 + pos } : null));
    // resume 2 at epoch ceil(81 / 10) = 9, the same mapping again; rejoined at 95
    runner.arm(wire({ ...base, resume: { n: 2, epoch: 9, afterRound: 4 }, rejoin: { shutterRound: 4, startIndex: 0 } }));
    const n = sent.length;
    runner.onAcquisitionStart(detector(3, 4, 95));
    for (let i = 95; i < 104; i++) runner.onTile(tile(3, 1, i));
    expect(seqs(sent.slice(n))).toEqual([[9, 2], [10, 0]]);
    expectMapped(sent.slice(n), 1, 0);
  });

  it('the link back before the resume arrives: the ended run carries on by itself with the same mapping (its sector alone may have been out), and the resume that names that mapping keeps it', () => {
    const { sent, runner, base } = setUp();
    // the merger had named a start: startIndex 20 of round 7 (epoch 0 = detector frames 20..29)
    runner.arm({ ...base, start: { shutterRound: 7, startIndex: 20 } });
    const d1 = detector(1, 7, 12);
    runner.onAcquisitionStart(d1);
    for (let i = 12; i < 35; i++) runner.onTile(tile(1, 2, i));
    runner.onAcquisitionEnd(ended(d1, 23));
    expect(runner.detectorEnded?.atFrame).toBe(15);
    const before = sent.length;
    expect(seqs(sent)).toEqual([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]]);
    const d2 = detector(2, 7, 60);
    runner.onAcquisitionStart(d2);
    expect(runner.state).toBe('running');
    expect(runner.detectorEnded).toBeNull();
    // rejoined at 60 = rel 40: from epoch 4 chunk 0, the old mapping
    for (let i = 60; i < 66; i++) runner.onTile(tile(2, 2, i));
    expect(seqs(sent.slice(before))).toEqual([[4, 0]]);
    runner.arm({ ...base, start: null, resume: { n: 1, epoch: 2, afterRound: 7 }, rejoin: { shutterRound: 7, startIndex: 20 } });
    expect(runner.state).toBe('running');
    for (let i = 66; i < 82; i++) runner.onTile(tile(2, 2, i));
    const after = sent.slice(before);
    expect(seqs(after)).toEqual([[4, 0], [4, 1], [4, 2], [5, 0], [5, 1], [5, 2]]);
    expectMapped(after, 2, 20);
    // a later end reports the resume it ran on
    runner.onAcquisitionEnd(ended(d2, 22));
    expect(runner.detectorEnded?.resume).toBe(1);
  });

  it('a receiver restarted meanwhile binds the rejoined round with the same mapping: from the resume alone, or from the start the merger names once it saw the round again', () => {
    const { base } = setUp();
    const resume = { n: 1, epoch: 3, afterRound: 2 };
    const rejoin = { shutterRound: 2, startIndex: 4 };
    // already on the rejoined detector acquisition when the acquire comes
    {
      const { sent, runner } = setUp();
      runner.onAcquisitionStart(detector(1, 2, 70));
      runner.onTile(tile(1, 3, 70));
      runner.arm(wire({ ...base, resume, rejoin }));
      expect(runner.state).toBe('running');
      for (let i = 71; i < 82; i++) runner.onTile(tile(1, 3, i));
      // first frame it can see: 71 = rel 67 -> boundary 68 (epoch 6 chunk 2)
      expect(seqs(sent)).toEqual([[6, 2], [7, 0], [7, 1]]);
      expectMapped(sent, 3, 4);
    }
    // armed first, the merger's start {2, 4} (learnt from heartbeats) in the re-sent acquire
    {
      const { sent, runner } = setUp();
      runner.arm(wire({ ...base, start: { shutterRound: 2, startIndex: 4 }, resume }));
      expect(runner.state).toBe('armed');
      runner.onAcquisitionStart(detector(1, 2, 40));
      for (let i = 40; i < 52; i++) runner.onTile(tile(1, 3, i));
      expect(seqs(sent)).toEqual([[3, 2], [4, 0], [4, 1]]);
      expectMapped(sent, 3, 4);
    }
    // the rejoin mapping never lets a frame before R x N through, even when the receiver sees earlier ones
    {
      const { sent, runner } = setUp();
      runner.arm(wire({ ...base, resume, rejoin }));
      runner.onAcquisitionStart(detector(1, 2, 14));
      for (let i = 14; i < 44; i++) runner.onTile(tile(1, 3, i));
      expect(seqs(sent)).toEqual([[3, 0], [3, 1], [3, 2]]);
      expectMapped(sent, 3, 4);
    }
  });

  /** A run on round 4 whose stream stopped after seven frames; `before`: partials sent by then. */
  function endedAfterSeven(base: ReturnType<typeof setUp>['base']) {
    const { sent, runner } = setUp();
    runner.arm(base);
    const d1 = detector(1, 4);
    runner.onAcquisitionStart(d1);
    for (let i = 0; i < 7; i++) runner.onTile(tile(1, 1, i));
    runner.onAcquisitionEnd(ended(d1, 7));
    return { sent, runner, before: sent.length };
  }

  it('a new camera acquisition (round after afterRound) still resumes as before: index 0 = frame R x N; without rejoin the ended round is not bound', () => {
    const { base } = setUp();
    {
      const { sent, runner, before } = endedAfterSeven(base);
      runner.arm({ ...base, resume: { n: 1, epoch: 1, afterRound: 4 }, rejoin: { shutterRound: 4, startIndex: 0 } });
      runner.onAcquisitionStart(detector(2, 5));
      for (let i = 0; i < 14; i++) runner.onTile(tile(2, 2, i));
      const after = sent.slice(before);
      expect(seqs(after)).toEqual([[1, 0], [1, 1], [1, 2], [2, 0]]);
      expectMapped(after, 2, -10);
    }
    {
      // an older merger (no rejoin): the rejoined round stays unbound, nothing sent
      const { sent, runner, before } = endedAfterSeven(base);
      runner.arm(wire({ ...base, resume: { n: 1, epoch: 1, afterRound: 4 } }));
      runner.onAcquisitionStart(detector(2, 4, 30));
      for (let i = 30; i < 45; i++) runner.onTile(tile(2, 1, i));
      expect(runner.state).toBe('armed');
      expect(sent.length).toBe(before);
    }
    {
      // the merger gave up on a detector acquisition still running here (this sector never lost
      // it): the resume names this very mapping, so the run goes on, from the resume's epoch
      const { sent, runner } = setUp();
      runner.arm(base);
      runner.onAcquisitionStart(detector(1, 4));
      for (let i = 0; i < 7; i++) runner.onTile(tile(1, 1, i));
      const before = sent.length;
      runner.arm({ ...base, resume: { n: 1, epoch: 1, afterRound: 4 }, rejoin: { shutterRound: 4, startIndex: 0 } });
      expect(runner.state).toBe('running');
      for (let i = 7; i < 30; i++) runner.onTile(tile(1, 1, i));
      const after = sent.slice(before);
      // nothing of epoch 0 (completed by the merger), epochs 1 and 2 whole
      expect(seqs(after)).toEqual([[1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [2, 2]]);
      expectMapped(after, 1, 0);
      // a resume naming another mapping (a new camera run) still re-arms it
      runner.arm({ ...base, resume: { n: 2, epoch: 4, afterRound: 4 } });
      expect(runner.state).toBe('armed');
    }
    // the decoder checks rejoin; absent or null: no rejoin
    const bad = (rejoin: unknown, resume: unknown = { n: 1, epoch: 1, afterRound: 3 }) => () => decodeMergerMessage(encodeLive({ ...base, resume, rejoin } as unknown as AcquireMessage));
    expect(bad({ shutterRound: 'x', startIndex: 0 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad({ shutterRound: 3, startIndex: 0.5 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad(5)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad({ shutterRound: 3, startIndex: 0 }, null)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' })); // rejoin without resume
    expect(wire({ ...base, resume: { n: 1, epoch: 1, afterRound: 3 }, rejoin: null }).rejoin).toBeUndefined();
    expect(wire({ ...base, resume: { n: 1, epoch: 1, afterRound: 3 }, rejoin: { shutterRound: 3, startIndex: -40 } }).rejoin).toEqual({ shutterRound: 3, startIndex: -40 });
  });
});
