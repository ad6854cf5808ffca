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
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { decodeMergerMessage, decodePartialMessage, decodeReceiverMessage, encodeLive, LIVE_PROTOCOL_VERSION, type AcquireMessage, type PartialMessage } from '../../src/protocol/live.js';
import { PartialRunner } from '../../receivers/partial-runner.js';
import type { AcquisitionInfo, AcquisitionSummary, SectorTile } from '../../receivers/tile.js';
import { acquireMessage, compareChunk, referenceChunk, standardLiveUdfs } from './live-helpers.js';

const FULL = 0xffffffff;
const SECTOR = 3;
const PIX = SECTOR_HEIGHT * SECTOR_WIDTH;
/** scan 2 x 5: N = 10, chunks [0,4) [4,8) [8,10) */
const SCAN: [number, number] = [2, 5];
const N = 10;
const CHUNK = 4;
const udfs = standardLiveUdfs();

/** Frame `index` of detector acquisition `seed` (each detector acquisition shows other data). */
function frameFor(seed: number, index: number): Uint16Array {
  const out = new Uint16Array(PIX);
  let s = (index * 2246822519 + seed * 3266489917 + 7) >>> 0;
  for (let i = 0; i < PIX; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 20;
  }
  return out;
}

function tile(acquisition: number, seed: number, index: number): SectorTile {
  return {
    data: frameFor(seed, index),
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

function detector(acquisition: number, round: number | null, joinedAt = 0): AcquisitionInfo {
  return { acquisition, sector: SECTOR, firstActiveKey: 0, round, scanPositions: N, continuous: true, joinedAt, decidedBy: 'all', missingSectors: [] };
}

function ended(a: AcquisitionInfo, frames: number, reason: AcquisitionSummary['reason'] = 'stream_stopped'): AcquisitionSummary {
  return { ...a, frames, reason };
}

/** The acquire as a receiver gets it: through the encoder and the validating decoder. */
function wire(m: AcquireMessage): AcquireMessage {
  const d = decodeMergerMessage(encodeLive(m));
  if (d.type !== 'acquire') throw new Error('not an acquire');
  return d;
}

function setUp() {
  const sent: PartialMessage[] = [];
  const scans: unknown[] = [];
  const runner = new PartialRunner({ sector: SECTOR, sectors: 8, send: (p) => sent.push(decodePartialMessage(encodeLive(p))), configureScan: (next, current) => scans.push({ next, current }) });
  const base = acquireMessage({ acquisition: 'c1', scanShape: SCAN, udfs, chunkSize: CHUNK, mode: 'continuous' });
  return { sent, scans, runner, base };
}

/**
 * Check partial `p`: chunk `chunk` of epoch `epoch`, each position holding the frame `source`
 * says (seed and index of the detector acquisition) or missing (null: zeros, damage FULL).
 */
function expectChunk(p: PartialMessage, epoch: number, chunk: number, source: (position: number) => { seed: number; index: number } | null): void {
  const navStart = chunk * CHUNK;
  const navEnd = Math.min(navStart + CHUNK, N);
  expect([p.epoch, p.chunk, p.navStart, p.navEnd], 'epoch, chunk, range').toEqual([epoch, chunk, navStart, navEnd]);
  const src = Array.from({ length: navEnd - navStart }, (_, k) => source(navStart + k));
  expect(Array.from(p.damage), `damage of epoch ${epoch} chunk ${chunk}`).toEqual(src.map((s) => (s === null ? FULL : 0)));
  const want = referenceChunk(udfs, SECTOR, src.map((s) => (s === null ? new Uint16Array(PIX) : frameFor(s.seed, s.index))));
  expect(compareChunk(p, want), `epoch ${epoch} chunk ${chunk}`).toBeNull();
}

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
