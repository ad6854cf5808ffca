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
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { decodePartialMessage, encodeLive, type PartialMessage } from '../../src/protocol/live.js';
import { PartialRunner } from '../../receivers/partial-runner.js';
import type { AcquisitionInfo, AcquisitionSummary, SectorTile } from '../../receivers/tile.js';
import { acquireMessage, compareChunk, referenceChunk, standardLiveUdfs } from './live-helpers.js';

const SECTOR = 6;
const PIX = SECTOR_HEIGHT * SECTOR_WIDTH;
const SCAN: [number, number] = [2, 5];
const N = 10;
const CHUNK = 4;
const udfs = standardLiveUdfs();

function frameAt(index: number): Uint16Array {
  const out = new Uint16Array(PIX);
  let s = (index * 2654435761 + 12345) >>> 0;
  for (let i = 0; i < PIX; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 20;
  }
  return out;
}

function tileAt(acquisition: number, index: number): SectorTile {
  return {
    data: frameAt(index),
    sector: SECTOR,
    acquisition,
    epoch: 0,
    scanIndex: index,
    depth: 1,
    rows: SECTOR_HEIGHT,
    sigOrigin: [0, SECTOR * SECTOR_WIDTH],
    sigShape: [SECTOR_HEIGHT, SECTOR_WIDTH],
    damage: Uint32Array.of(0),
    frames: [{ index, frameKey: index * 32, frameId: index }],
  };
}

const detector = (acquisition: number, round: number, joinedAt: number): AcquisitionInfo => ({ acquisition, sector: SECTOR, firstActiveKey: 0, round, scanPositions: N, continuous: true, joinedAt, decidedBy: 'all', missingSectors: [] });
const ended = (a: AcquisitionInfo, frames: number, reason: AcquisitionSummary['reason']): AcquisitionSummary => ({ ...a, frames, reason });

function rig() {
  const sent: PartialMessage[] = [];
  const runner = new PartialRunner({ sector: SECTOR, sectors: 8, send: (p) => sent.push(decodePartialMessage(encodeLive(p))) });
  runner.arm(acquireMessage({ acquisition: 'o1', scanShape: SCAN, udfs, chunkSize: CHUNK, mode: 'continuous' }));
  const d1 = detector(1, 4, 0);
  runner.onAcquisitionStart(d1);
  for (let i = 0; i < 13; i++) runner.onTile(tileAt(1, i));
  return { sent, runner, d1 };
}

/** Partial `p` holds frames rel = epoch x N + position (startIndex 0), all present. */
function expectFrames(p: PartialMessage): void {
  const navEnd = Math.min(p.navStart + CHUNK, N);
  const frames = Array.from({ length: navEnd - p.navStart }, (_, k) => frameAt(p.epoch * N + p.navStart + k));
  expect(Array.from(p.damage)).toEqual(frames.map(() => 0));
  expect(compareChunk(p, referenceChunk(udfs, SECTOR, frames)), `epoch ${p.epoch} chunk ${p.chunk}`).toBeNull();
}

describe('PartialRunner: this sector\'s link out, the detector acquisition going on', () => {
  it('carries on with the same mapping from the next chunk boundary once ShutterSync rejoins the same round', () => {
    const { sent, runner, d1 } = rig();
    runner.onAcquisitionEnd(ended(d1, 13, 'stream_stopped'));
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
    a.runner.onAcquisitionEnd(ended(a.d1, 13, 'stream_stopped'));
    a.runner.onAcquisitionStart(detector(2, 5, 0));
    for (let i = 0; i < 8; i++) a.runner.onTile(tileAt(2, i));
    expect(a.runner.state).toBe('ended');

    const b = rig();
    b.runner.onAcquisitionEnd(ended(b.d1, 13, 'jump'));
    b.runner.onAcquisitionStart(detector(2, 4, 31));
    expect(b.runner.state).toBe('ended');
    expect(b.runner.detectorEnded).toMatchObject({ reason: 'jump' });
  });
});
