/**
 * One sector's link out for longer than receiver.streamIdleMs while the others keep going: its
 * PartialRunner ends with the silence (stream_stopped), and the merger, which resumes only when
 * every sector reports the end, sends nothing. When the link is back, ShutterSync rejoins the same
 * detector acquisition (same election round, joined under way); the runner must carry on with the
 * mapping it ran on, from the next chunk boundary, by itself. A new detector acquisition (another
 * round) or an end for another reason is not taken up this way. References: plain loops over
 * the frames each chunk must hold (referenceChunk).
 */
import { describe, expect, it } from 'vitest';
import type { PartialMessage } from '../../src/protocol/live.js';
import type { AcquisitionInfo } from '../../receivers/tile.js';
import { acquireMessage, compareChunk, detectorAcquisition, endedAcquisition, partialRunnerRig, referenceChunk, sectorTile, standardLiveUdfs, syntheticSectorFrame } from './live-helpers.js';

const SECTOR = 6;
const SCAN: [number, number] = [2, 5];
const N = 10;
const CHUNK = 4;
const udfs = standardLiveUdfs();
const SEED = 5;

const detector = (acquisition: number, round: number, joinedAt: number): AcquisitionInfo => detectorAcquisition({ acquisition, sector: SECTOR, round, scanPositions: N, continuous: true, joinedAt });
const tileAt = (acquisition: number, index: number) => sectorTile(SECTOR, acquisition, index, syntheticSectorFrame(SEED, index));

function rig() {
  const { sent, runner } = partialRunnerRig(SECTOR);
  runner.arm(acquireMessage({ acquisition: 'o1', scanShape: SCAN, udfs, chunkSize: CHUNK, mode: 'continuous' }));
  const d1 = detector(1, 4, 0);
  runner.onAcquisitionStart(d1);
  for (let i = 0; i < 13; i++) runner.onTile(tileAt(1, i));
  return { sent, runner, d1 };
}

/** Partial `p` holds frames rel = epoch x N + position (startIndex 0), all present. */
function expectFrames(p: PartialMessage): void {
  const navEnd = Math.min(p.navStart + CHUNK, N);
  const frames = Array.from({ length: navEnd - p.navStart }, (_, k) => syntheticSectorFrame(SEED, p.epoch * N + p.navStart + k));
  expect(Array.from(p.damage)).toEqual(frames.map(() => 0));
  expect(compareChunk(p, referenceChunk(udfs, SECTOR, frames)), `epoch ${p.epoch} chunk ${p.chunk}`).toBeNull();
}

describe('PartialRunner: this sector\'s link out, the detector acquisition going on', () => {
  it('carries on with the same mapping from the next chunk boundary once ShutterSync rejoins the same round', () => {
    const { sent, runner, d1 } = rig();
    runner.onAcquisitionEnd(endedAcquisition(d1, 13, 'stream_stopped'));
    expect(runner.state).toBe('ended');
    expect(runner.detectorEnded).toMatchObject({ reason: 'stream_stopped', round: 4 });
    const before = sent.length;
    // the link is back: the same round, rejoined at frame 31 (epoch 3, position 1)
    runner.onAcquisitionStart(detector(2, 4, 31));
    expect(runner.state).toBe('running');
    expect(runner.detectorEnded).toBeNull();
    for (let i = 31; i < 46; i++) runner.onTile(tileAt(2, i));
    const after = sent.slice(before);
    // from the next boundary after 31: position 4 of epoch 3
    expect(after.map((p) => [p.epoch, p.chunk])).toEqual([
      [3, 1],
      [3, 2],
      [4, 0],
    ]);
    for (const p of after) expectFrames(p);
  });

  it('does not take up another round (a new camera acquisition) nor an end for another reason', () => {
    const a = rig();
    a.runner.onAcquisitionEnd(endedAcquisition(a.d1, 13, 'stream_stopped'));
    a.runner.onAcquisitionStart(detector(2, 5, 0));
    for (let i = 0; i < 8; i++) a.runner.onTile(tileAt(2, i));
    expect(a.runner.state).toBe('ended');

    const b = rig();
    b.runner.onAcquisitionEnd(endedAcquisition(b.d1, 13, 'jump'));
    b.runner.onAcquisitionStart(detector(2, 4, 31));
    expect(b.runner.state).toBe('ended');
    expect(b.runner.detectorEnded).toMatchObject({ reason: 'jump' });
  });
});
