/**
 * The detector stream stopping under an acquisition (issue 8): ShutterSync ends the acquisition
 * after `streamIdleMs` without a frame ('stream_stopped'), never before and never without the
 * option; PartialRunner then sends the chunk in flight with the positions that never came
 * zero-filled and marked (equal to plain loops over the frames, missing ones as zeros), leaves
 * the chunks after it unsent (the merger completes them as missing), and reports the reason and
 * the first frame that never came (heartbeat `detectorEnded`, through the wire decoder).
 */
import { describe, expect, it } from 'vitest';
import { SECTOR_FRAME_PAYLOAD_BYTES } from '../../src/k2is/constants.js';
import { Uint12Decoder } from '../../src/k2is/decode12.js';
import { decodeReceiverMessage, encodeLive, LIVE_PROTOCOL_VERSION, type PartialMessage } from '../../src/protocol/live.js';
import { FrameSlotPool } from '../../receivers/frame-slots.js';
import { PartialRunner } from '../../receivers/partial-runner.js';
import type { AssembledFrame } from '../../receivers/sector-frame-assembler.js';
import { LocalElector, ShutterSync, type ScanFrame } from '../../receivers/shutter-sync.js';
import type { AcquisitionSummary } from '../../receivers/tile.js';
import {
  acquireMessage,
  compareChunk,
  detectorAcquisition,
  MISSING_DAMAGE as FULL,
  partialRunnerRig,
  referenceChunk,
  SECTOR_PIXELS as PIX,
  sectorTile,
  standardLiveUdfs,
  syntheticSectorFrame,
} from './live-helpers.js';

const SECTOR = 5;
const dec = Uint12Decoder.create({ initialBytes: 20 * SECTOR_FRAME_PAYLOAD_BYTES });
const tick = () => new Promise((r) => setTimeout(r, 0));

function syncWith(streamIdleMs: number | undefined) {
  const mark = dec.mark();
  const pool = new FrameSlotPool(dec, 12);
  const frames: ScanFrame[] = [];
  const ends: AcquisitionSummary[] = [];
  const sync = new ShutterSync({
    sector: 2,
    elector: new LocalElector(),
    local: true,
    pool,
    scanPositions: 16,
    continuous: false,
    bufferFrames: 8,
    streamIdleMs,
    onFrame: (sf) => {
      frames.push(sf);
      pool.release(sf.frame.slot);
    },
    onAcquisitionEnd: (a) => ends.push(a),
  });
  const push = (f: number, on: boolean) => {
    const fr: AssembledFrame = { key: 32 * f, seq: f, stream: 0, frameId: 100 + f, shutter: on, damage: 0, blocks: 32, slot: pool.acquire() };
    sync.push(fr);
  };
  return { sync, pool, frames, ends, push, release: () => dec.release(mark) };
}

describe('ShutterSync: the stream stops while acquiring', () => {
  it('ends the acquisition as stream_stopped after streamIdleMs without a frame, not before', async () => {
    const t = syncWith(2000);
    expect(t.sync.tick(performance.now() + 10_000)).toBe(false); // armed: nothing to end
    for (let f = 0; f < 3; f++) t.push(f, false);
    t.push(3, true);
    await tick();
    for (let f = 4; f < 8; f++) t.push(f, true);
    expect(t.sync.phase).toBe('acquiring');
    const last = performance.now();
    expect(t.sync.tick(last + 1500)).toBe(false);
    expect(t.ends).toEqual([]);
    expect(t.sync.tick(last + 2100)).toBe(true);
    expect(t.ends).toEqual([expect.objectContaining({ reason: 'stream_stopped', frames: 6 })]);
    expect(t.frames.map((s) => s.index)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(t.sync.phase).toBe('armed');
    expect(t.sync.tick(last + 9000)).toBe(false); // once
    expect(t.pool.available).toBe(t.pool.size);
    // a new edge starts the next acquisition as usual
    t.push(8, false);
    t.push(9, true);
    await tick();
    expect(t.sync.acquisition?.acquisition).toBe(2);
    t.sync.stop();
    t.release();
  });

  it('without streamIdleMs an acquisition never ends on silence', async () => {
    const t = syncWith(undefined);
    t.push(0, false);
    t.push(1, true);
    await tick();
    expect(t.sync.tick(performance.now() + 3_600_000)).toBe(false);
    expect(t.sync.phase).toBe('acquiring');
    t.sync.stop();
    t.release();
  });
});

const frameFor = (index: number) => syntheticSectorFrame(0, index);
/** Position 2 comes with two blocks missing (damage 0b11). */
const tile = (acquisition: number, index: number) => sectorTile(SECTOR, acquisition, index, frameFor(index), index === 2 ? 0b11 : 0);

const info = detectorAcquisition({ acquisition: 1, sector: SECTOR, round: 1, scanPositions: 10 });

describe('PartialRunner: the detector acquisition ends because the stream stopped', () => {
  it('sends the chunk in flight with the missing positions filled and marked, and reports where the stream stopped', () => {
    const { sent, runner } = partialRunnerRig(SECTOR);
    const udfs = standardLiveUdfs();
    const a = acquireMessage({ acquisition: 'a1', scanShape: [2, 5], udfs, chunkSize: 4, mode: 'single' });
    runner.arm(a);
    runner.onAcquisitionStart(info);
    for (let i = 0; i < 6; i++) runner.onTile(tile(1, i));
    expect(runner.detectorEnded).toBeNull();
    runner.onAcquisitionEnd({ ...info, frames: 6, reason: 'stream_stopped' });
    expect(runner.state).toBe('ended');
    expect(runner.acquisition).toBe('a1'); // still named in heartbeats
    expect(runner.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 6, round: 1, resume: 0 });
    // chunk 0 complete, chunk 1 (4..8) in flight completed with 6 and 7 missing, chunk 2 never opened
    expect(sent.map((p) => [p.chunk, p.navStart, p.navEnd])).toEqual([[0, 0, 4], [1, 4, 8]]);
    for (const p of sent) {
      const idx = Array.from({ length: p.navEnd - p.navStart }, (_, k) => p.navStart + k);
      expect(Array.from(p.damage)).toEqual(idx.map((i) => (i >= 6 ? FULL : i === 2 ? 0b11 : 0)));
      const want = referenceChunk(udfs, SECTOR, idx.map((i) => (i >= 6 ? new Uint16Array(PIX) : frameFor(i))));
      expect(compareChunk(p, want), `chunk ${p.chunk}`).toBeNull();
    }
    expect(runner.stats).toMatchObject({ chunksSent: 2, framesFilled: 2 });
    // the heartbeat field survives the wire
    const hb = decodeReceiverMessage(encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: 'receiver', sector: SECTOR, pid: 1, phase: 'armed', acquisition: 'a1', lastIndex: null, shutterRound: null, positions: 10, detectorEnded: runner.detectorEnded, counters: {}, sentAt: 1 }));
    expect(hb.type === 'heartbeat' && hb.detectorEnded).toEqual({ reason: 'stream_stopped', atFrame: 6, round: 1, resume: 0 });
    const old = decodeReceiverMessage(encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: 'receiver', sector: SECTOR, pid: 1, phase: 'armed', acquisition: null, lastIndex: null, shutterRound: null, positions: null, counters: {}, sentAt: 1 }));
    expect(old.type === 'heartbeat' && old.detectorEnded).toBeNull();
    // a new acquire replaces it as usual
    runner.arm(acquireMessage({ acquisition: 'a2', scanShape: [2, 5], udfs, chunkSize: 4, mode: 'single' }));
    expect(runner.detectorEnded).toBeNull();
  });

  it('a stop under way ends as stopped, without a detector end reported', () => {
    const sent: PartialMessage[] = [];
    const runner = new PartialRunner({ sector: SECTOR, sectors: 8, send: (p) => sent.push(p) });
    runner.arm(acquireMessage({ acquisition: 'a1', scanShape: [2, 5], udfs: standardLiveUdfs(), chunkSize: 4, mode: 'continuous' }));
    runner.onAcquisitionStart(info);
    for (let i = 0; i < 3; i++) runner.onTile(tile(1, i));
    runner.stop('a1', 4);
    runner.onAcquisitionEnd({ ...info, frames: 3, reason: 'stream_stopped' });
    expect(runner.state).toBe('stopped');
    expect(runner.detectorEnded).toBeNull();
    expect(sent.map((p) => [p.chunk, Array.from(p.damage)])).toEqual([[0, [0, 0, 0b11, FULL]]]);
  });
});
