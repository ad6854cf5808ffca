/**
 * A continuous acquisition carrying on after its detector acquisition ended (issue 8, resume):
 * the PartialRunner, ended with the detector acquisition, gets the merger's acquire again with
 * `resume {n, epoch R, afterRound}` (through the wire decoder) and binds to the next detector
 * acquisition so that its index 0 is acquisition-relative frame R x N (startIndex -R x N), or to
 * the mapping the merger chose (`start`). References: plain loops over the frames of the detector
 * acquisition each chunk must hold (referenceChunk), positions that never came as zeros, and the
 * chunks and epochs each partial must name. Frames of two detector acquisitions are told apart
 * by their content (another seed per detector acquisition), so a chunk mixing them cannot pass.
 */
import { describe, expect, it } from 'vitest';
import { decodeMergerMessage, decodeReceiverMessage, encodeLive, LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import { acquireThroughWire as wire, continuousRunnerHarness, endedAcquisition as ended, SMALL_SCAN, standardLiveUdfs } from './live-helpers.js';

const SECTOR = 3;
const N = SMALL_SCAN.positions;
/** Frames of detector acquisition `seed` (each detector acquisition shows other data); expectChunk: missing positions are zeros with damage FULL. */
const { tile, detector, setUp, expectChunk } = continuousRunnerHarness({ sector: SECTOR, salt: 7, acquisition: 'c1', udfs: standardLiveUdfs() });

describe('PartialRunner: resume of a continuous acquisition after its detector acquisition ended', () => {
  it('binds the next detector acquisition with index 0 = frame R x N, never one of the ended round, and reports the resume it runs on', () => {
    const { sent, scans, runner, base } = setUp();
    runner.arm(wire(base));
    const d1 = detector(1, 4);
    runner.onAcquisitionStart(d1);
    // epoch 0 whole, epoch 1 positions 0..2, then the stream stops (13 frames)
    for (let i = 0; i < 13; i++) runner.onTile(tile(1, 1, i));
    runner.onAcquisitionEnd(ended(d1, 13));
    expect(runner.state).toBe('ended');
    expect(runner.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 13, round: 4, resume: 0 });
    // R = ceil(13 / 10) = 2
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2], [1, 0]]);
    expectChunk(sent[3]!, 1, 0, (pos) => (pos < 3 ? { seed: 1, index: 10 + pos } : null));
    const before = sent.length;

    const resume = wire({ ...base, resume: { n: 1, epoch: 2, afterRound: 4 } });
    expect(resume.resume).toEqual({ n: 1, epoch: 2, afterRound: 4 });
    runner.arm(resume);
    expect(runner.state).toBe('armed');
    expect(runner.active).toBe(true);
    expect(runner.acquisition).toBe('c1');
    expect(runner.detectorEnded).toBeNull(); // heartbeats stop reporting the end
    expect(scans.at(-1)).toEqual({ next: { scanPositions: N, continuous: true }, current: undefined });

    // the ended round again (a rejoin of the old detector acquisition): not bound, nothing sent
    const stale = detector(2, 4, 30);
    runner.onAcquisitionStart(stale);
    for (let i = 30; i < 36; i++) runner.onTile(tile(2, 1, i));
    runner.onAcquisitionEnd(ended(stale, 6, 'jump'));
    expect(runner.state).toBe('armed');
    expect(sent.length).toBe(before);

    // the next detector acquisition (round 6): its index 0 is epoch 2 position 0
    const d2 = detector(3, 6);
    runner.onAcquisitionStart(d2);
    expect(runner.state).toBe('running');
    for (let i = 0; i < 25; i++) runner.onTile(tile(3, 2, i));
    const after = sent.slice(before);
    expect(after.map((p) => [p.epoch, p.chunk])).toEqual([[2, 0], [2, 1], [2, 2], [3, 0], [3, 1], [3, 2], [4, 0]]);
    for (const p of after) expectChunk(p, p.epoch, p.chunk, (pos) => ({ seed: 2, index: (p.epoch - 2) * N + pos }));

    // the same resume again (the merger repeats acquire until ready): a no-op
    runner.arm(resume);
    expect(runner.state).toBe('running');
    runner.onTile(tile(3, 2, 25));
    // the new detector acquisition ends too: reported with its round and the resume it ran on
    runner.onAcquisitionEnd(ended(d2, 26));
    expect(runner.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 20 + 26, round: 6, resume: 1 });
    expectChunk(sent.at(-1)!, 4, 1, (pos) => (pos < 6 ? { seed: 2, index: 20 + pos } : null));
    // through the wire, as the merger reads it
    const hb = decodeReceiverMessage(encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: 'receiver', sector: SECTOR, pid: 1, phase: 'armed', acquisition: 'c1', lastIndex: null, shutterRound: null, positions: N, detectorEnded: runner.detectorEnded, counters: {}, sentAt: 1 }));
    expect(hb.type === 'heartbeat' && hb.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 46, round: 6, resume: 1 });
    // a second resume (n 2) at epoch ceil(46 / 10) = 5
    runner.arm(wire({ ...base, resume: { n: 2, epoch: 5, afterRound: 6 } }));
    runner.onAcquisitionStart(detector(4, 7));
    const n = sent.length;
    for (let i = 0; i < 4; i++) runner.onTile(tile(4, 3, i));
    expectChunk(sent[n]!, 5, 0, (pos) => ({ seed: 3, index: pos }));
  });

  it('the detector acquisition ended exactly at an epoch boundary: the resume epoch is the one that got no frame', () => {
    const { sent, runner, base } = setUp();
    runner.arm(base);
    const d1 = detector(1, 1);
    runner.onAcquisitionStart(d1);
    for (let i = 0; i < 20; i++) runner.onTile(tile(1, 1, i));
    runner.onAcquisitionEnd(ended(d1, 20));
    // every chunk of epochs 0 and 1 sent whole, nothing of epoch 2
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
    expect(runner.detectorEnded?.atFrame).toBe(20); // R = ceil(20 / 10) = 2, not 3
    runner.arm({ ...base, resume: { n: 1, epoch: 2, afterRound: 1 } });
    runner.onAcquisitionStart(detector(2, 2));
    for (let i = 0; i < 4; i++) runner.onTile(tile(2, 2, i));
    expectChunk(sent.at(-1)!, 2, 0, (pos) => ({ seed: 2, index: pos }));
  });

  it('a detector acquisition already under way when the resume arrives is joined at the next chunk boundary, with the same mapping', () => {
    const { sent, runner, base } = setUp();
    runner.arm(base);
    const d1 = detector(1, 1);
    runner.onAcquisitionStart(d1);
    for (let i = 0; i < 5; i++) runner.onTile(tile(1, 1, i));
    runner.onAcquisitionEnd(ended(d1, 5));
    const before = sent.length; // chunk 0, chunk 1 with 5..7 missing
    expect(runner.detectorEnded?.atFrame).toBe(5);
    // the camera came back before the merger's resume: the runner, ended, processes nothing of it
    const d2 = detector(2, 2);
    runner.onAcquisitionStart(d2);
    for (let i = 0; i < 6; i++) runner.onTile(tile(2, 2, i));
    expect(sent.length).toBe(before);
    // resume at epoch 1: index 0 of round 2 is frame 10; newest seen is 5 -> rel 16 -> next boundary 18 (epoch 1 chunk 2)
    runner.arm({ ...base, resume: { n: 1, epoch: 1, afterRound: 1 } });
    expect(runner.state).toBe('running');
    for (let i = 6; i < 14; i++) runner.onTile(tile(2, 2, i));
    const after = sent.slice(before);
    expect(after.map((p) => [p.epoch, p.chunk])).toEqual([[1, 2], [2, 0]]);
    for (const p of after) expectChunk(p, p.epoch, p.chunk, (pos) => ({ seed: 2, index: (p.epoch - 1) * N + pos }));
  });

  it('a receiver restarted meanwhile gets the same mapping from the re-sent acquire (resume with start null, or the merger\'s start); the decoder checks the fields', () => {
    const { base } = setUp();
    // start null: index 0 of the detector acquisition after round 4 is frame 30; this one joined late (query) at index 3
    {
      const { sent, runner } = setUp();
      runner.onAcquisitionStart(detector(1, 5, 3));
      runner.onTile(tile(1, 2, 3));
      runner.arm(wire({ ...base, resume: { n: 1, epoch: 3, afterRound: 4 } }));
      expect(runner.state).toBe('running');
      for (let i = 4; i < 12; i++) runner.onTile(tile(1, 2, i));
      // newest was 3 -> first frame it can see is 4 = rel 34, a chunk boundary (epoch 3 chunk 1)
      expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[3, 1], [3, 2]]);
      for (const p of sent) expectChunk(p, 3, p.chunk, (pos) => ({ seed: 2, index: pos }));
    }
    // the merger's concrete start (the round learnt from heartbeats): startIndex may be negative
    {
      const { sent, runner } = setUp();
      const m = wire({ ...base, start: { shutterRound: 5, startIndex: -30 }, resume: { n: 1, epoch: 3, afterRound: 4 } });
      expect(m.start).toEqual({ shutterRound: 5, startIndex: -30 });
      runner.arm(m);
      expect(runner.state).toBe('armed');
      runner.onAcquisitionStart(detector(1, 5));
      for (let i = 0; i < 4; i++) runner.onTile(tile(1, 2, i));
      expectChunk(sent[0]!, 3, 0, (pos) => ({ seed: 2, index: pos }));
    }
    // a fresh receiver armed for the resume does not take the ended round
    {
      const { sent, runner } = setUp();
      runner.arm({ ...base, resume: { n: 1, epoch: 3, afterRound: 4 } });
      runner.onAcquisitionStart(detector(1, 4, 50));
      for (let i = 50; i < 60; i++) runner.onTile(tile(1, 1, i));
      expect(runner.state).toBe('armed');
      expect(sent).toEqual([]);
    }
    const bad = (patch: Record<string, unknown>) => () => decodeMergerMessage(encodeLive({ ...base, ...patch } as AcquireMessage));
    expect(bad({ resume: { n: 0, epoch: 1, afterRound: null } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad({ resume: { n: 1, epoch: -1, afterRound: null } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad({ resume: { n: 1, epoch: 1, afterRound: 'x' } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad({ resume: 7 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(bad({ mode: 'single', resume: { n: 1, epoch: 1, afterRound: null } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    expect(wire({ ...base, resume: { n: 1, epoch: 1, afterRound: null } }).resume).toEqual({ n: 1, epoch: 1, afterRound: null });
    expect(wire(base).resume).toBeNull(); // absent: no resume (older mergers)
  });
});
