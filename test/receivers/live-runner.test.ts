/**
 * PartialRunner in process, fed SectorTiles directly (as SectorTiler hands them on): tiles of
 * several frames and two bands that straddle chunk boundaries, a gap of frames that never come,
 * the detector acquisition ending mid-chunk, a start at a given frame of the acquisition under
 * way, parameter changes from a frame, stop (grace) and abort, and refusals by error code.
 * Every partial (through the wire encoding and the merger's decoder) equals plain loops over
 * the frames, with missing frames as zeros.
 */
import { describe, expect, it } from 'vitest';
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { decodePartialMessage, encodeLive, LIVE_PROTOCOL_VERSION, type AcquireMessage, type PartialMessage } from '../../src/protocol/live.js';
import { PartialRunner } from '../../receivers/partial-runner.js';
import type { ScanConfig } from '../../receivers/shutter-sync.js';
import type { AcquisitionInfo, SectorTile } from '../../receivers/tile.js';
import { acquireMessage, compareChunk, referenceChunk, standardLiveUdfs } from './live-helpers.js';

const SECTOR = 4;
const PIX = SECTOR_HEIGHT * SECTOR_WIDTH;
const FULL = 0xffffffff;

/** Deterministic 12-bit frames, one per index. */
function frameFor(index: number): Uint16Array {
  const out = new Uint16Array(PIX);
  let s = (index * 2654435761 + 12345) >>> 0;
  for (let i = 0; i < PIX; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 20;
  }
  return out;
}
const frames = new Map<number, Uint16Array>();
const frame = (i: number) => {
  let f = frames.get(i);
  if (!f) frames.set(i, (f = frameFor(i)));
  return f;
};
const damageOf = (i: number) => (i % 7 === 3 ? 0b101 : 0);

function info(acquisition: number, round: number | null): AcquisitionInfo {
  return { acquisition, sector: SECTOR, firstActiveKey: 0, round, scanPositions: null, continuous: false, joinedAt: 0, decidedBy: 'all', missingSectors: [] };
}

/** The tiles SectorTiler would emit for consecutive `indices`, `rows` per band. */
function tilesOf(acquisition: number, indices: number[], rows: number): SectorTile[] {
  const out: SectorTile[] = [];
  for (let b = 0; b < SECTOR_HEIGHT / rows; b++) {
    const data = new Uint16Array(indices.length * rows * SECTOR_WIDTH);
    indices.forEach((i, k) => data.set(frame(i).subarray(b * rows * SECTOR_WIDTH, (b + 1) * rows * SECTOR_WIDTH), k * rows * SECTOR_WIDTH));
    out.push({
      data,
      sector: SECTOR,
      acquisition,
      epoch: 0,
      scanIndex: indices[0]!,
      depth: indices.length,
      rows,
      sigOrigin: [b * rows, SECTOR * SECTOR_WIDTH],
      sigShape: [rows, SECTOR_WIDTH],
      damage: Uint32Array.from(indices, damageOf),
      frames: indices.map((index) => ({ index, frameKey: index * 32, frameId: index })),
    });
  }
  return out;
}

function feed(runner: PartialRunner, acquisition: number, indices: number[], depth: number, rows: number) {
  for (let k = 0; k < indices.length; k += depth) for (const t of tilesOf(acquisition, indices.slice(k, k + depth), rows)) runner.onTile(t);
}

function makeRunner(stopGraceMs = 2000) {
  const sent: PartialMessage[] = [];
  const scans: Array<[ScanConfig, ScanConfig | undefined]> = [];
  const runner = new PartialRunner({
    sector: SECTOR,
    sectors: 8,
    send: (p) => sent.push(decodePartialMessage(encodeLive(p))), // through the wire format
    configureScan: (next, current) => scans.push([next, current]),
    stopGraceMs,
  });
  return { runner, sent, scans };
}

/** Check a partial against the reference over indices startIndex + epoch N + [navStart, navEnd); `present` says which came. */
function check(p: PartialMessage, a: AcquireMessage, startIndex: number, present: (i: number) => boolean, udfsFor: (p: PartialMessage) => AcquireMessage['udfs']) {
  const N = a.scanShape[0] * a.scanShape[1];
  const idx = Array.from({ length: p.navEnd - p.navStart }, (_, k) => startIndex + p.epoch * N + p.navStart + k);
  expect(Array.from(p.damage), `epoch ${p.epoch} chunk ${p.chunk} damage`).toEqual(idx.map((i) => (present(i) ? damageOf(i) : FULL)));
  const want = referenceChunk(udfsFor(p), SECTOR, idx.map((i) => (present(i) ? frame(i) : new Uint16Array(PIX))));
  expect(compareChunk(p, want), `epoch ${p.epoch} chunk ${p.chunk}`).toBeNull();
  expect(p).toMatchObject({ sector: SECTOR, frames: idx.length, sig: { origin: [0, SECTOR * SECTOR_WIDTH], shape: [SECTOR_HEIGHT, SECTOR_WIDTH] } });
}

describe('PartialRunner', () => {
  it('continuous from the shutter edge: straddling tiles, a gap, params from a frame, the acquisition ending mid-chunk', () => {
    const { runner, sent, scans } = makeRunner();
    const udfs = standardLiveUdfs();
    const moved = { masks: [{ type: 'disk', cy: 700, cx: 1100, r: 150 }, { type: 'ring', cy: 930, cx: 1024, ri: 200, ro: 700 }] };
    const a = acquireMessage({ acquisition: 'a1', scanShape: [2, 5], udfs, chunkSize: 4, mode: 'continuous' });
    runner.arm(a);
    expect(scans).toEqual([[{ scanPositions: 10, continuous: true }, undefined]]);
    expect(runner.acquisition).toBe('a1');
    runner.arm(a); // repeated acquire: no-op
    runner.params({ version: LIVE_PROTOCOL_VERSION, type: 'params', acquisition: 'a1', udfId: 'vd', params: moved, fromFrame: 12 });
    runner.onAcquisitionStart(info(1, 1));
    expect(runner.state).toBe('running');
    const present = (i: number) => i <= 26 && !(i >= 13 && i <= 15);
    const indices = Array.from({ length: 27 }, (_, i) => i).filter(present);
    feed(runner, 1, indices.filter((i) => i <= 12), 3, 930);
    feed(runner, 1, indices.filter((i) => i > 12), 3, 930);
    runner.onAcquisitionEnd({ ...info(1, 1), frames: 24, reason: 'shutter_off' });
    expect(runner.state).toBe('ended');
    expect(sent.map((p) => [p.epoch, p.chunk, p.navStart, p.navEnd])).toEqual([
      [0, 0, 0, 4], [0, 1, 4, 8], [0, 2, 8, 10],
      [1, 0, 0, 4], [1, 1, 4, 8], [1, 2, 8, 10],
      [2, 0, 0, 4], [2, 1, 4, 8],
    ]);
    // epoch 1 chunk 0 starts at frame 10 < 12: old params; from epoch 1 chunk 1 (frame 14) on: the new ones
    expect(sent.map((p) => p.udfs.find((u) => u.id === 'vd')!.paramsVersion)).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    const udfsFor = (p: PartialMessage) => (p.udfs[2]!.paramsVersion === 0 ? udfs : udfs.map((u) => (u.id === 'vd' ? { ...u, params: moved } : u)));
    for (const p of sent) check(p, a, 0, present, udfsFor);
    expect(runner.stats).toMatchObject({ chunksSent: 8, framesFilled: 4, paramsApplied: 1 });
  });

  it('starts at a given frame of the acquisition under way; single mode ends after one epoch', () => {
    const { runner, sent, scans } = makeRunner();
    const udfs = standardLiveUdfs();
    runner.onAcquisitionStart(info(3, 7));
    feed(runner, 3, [38, 39, 40], 1, 1860);
    expect(runner.lastIndex).toBe(40);
    expect(runner.acquisition).toBeNull();
    const base = { scanShape: [2, 5] as [number, number], udfs, chunkSize: 5, mode: 'single' as const };
    expect(() => runner.arm(acquireMessage({ ...base, acquisition: 'old', start: { shutterRound: 6, startIndex: 50 } }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_LIVE_START' }));
    const a = acquireMessage({ ...base, acquisition: 'a2', start: { shutterRound: 7, startIndex: 50 } });
    runner.arm(a);
    expect(runner.state).toBe('running');
    expect(scans.at(-1)).toEqual([{ scanPositions: 10, continuous: true }, { scanPositions: 10, continuous: true }]);
    feed(runner, 3, Array.from({ length: 35 }, (_, k) => 41 + k), 4, 310);
    expect(runner.state).toBe('done');
    expect(runner.active).toBe(false);
    expect(runner.acquisition).toBe('a2'); // still reported: the merger must not take it for lost
    runner.arm(a); // a repeat is a no-op
    expect(runner.state).toBe('done');
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1]]);
    for (const p of sent) check(p, a, 50, () => true, () => udfs);
  });

  it('a start that has passed, or an edge start the receiver joined late (restarted): joins at the next chunk boundary', () => {
    const { runner, sent } = makeRunner();
    const udfs = standardLiveUdfs().slice(0, 2);
    runner.onAcquisitionStart(info(2, 4));
    feed(runner, 2, [38, 39, 40], 1, 1860);
    // start 30: frame 41 is rel 11 = epoch 1 position 1; the next boundary is position 5 (frame 45)
    const a = acquireMessage({ acquisition: 'late', scanShape: [2, 5], udfs, chunkSize: 5, mode: 'continuous', start: { shutterRound: 4, startIndex: 30 } });
    runner.arm(a);
    feed(runner, 2, Array.from({ length: 20 }, (_, k) => 41 + k), 3, 1860);
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[1, 1], [2, 0], [2, 1]]);
    for (const p of sent) check(p, a, 30, () => true, () => udfs);

    // start null, re-sent to a receiver that joined the detector acquisition under way (restarted): that one, from the next boundary
    const r2 = makeRunner();
    r2.runner.onAcquisitionStart({ ...info(1, 9), joinedAt: 23 });
    feed(r2.runner, 1, [23, 24], 1, 1860);
    const b = acquireMessage({ acquisition: 'edge', scanShape: [2, 5], udfs, chunkSize: 5, mode: 'continuous' });
    r2.runner.arm(b);
    feed(r2.runner, 1, Array.from({ length: 12 }, (_, k) => 25 + k), 1, 1860);
    expect(r2.sent.map((p) => [p.epoch, p.chunk])).toEqual([[2, 1], [3, 0]]);
    for (const p of r2.sent) check(p, b, 0, () => true, () => udfs);
  });

  it('whole chunks skipped over by a gap are sent as missing', () => {
    const { runner, sent } = makeRunner();
    const udfs = standardLiveUdfs().slice(0, 2);
    const a = acquireMessage({ acquisition: 'gap', scanShape: [1, 8], udfs, chunkSize: 2, mode: 'continuous' });
    runner.arm(a);
    runner.onAcquisitionStart(info(1, 1));
    feed(runner, 1, [0, 1, 2, 7, 8, 9], 1, 1860);
    const present = (i: number) => [0, 1, 2, 7, 8, 9].includes(i);
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]);
    for (const p of sent) check(p, a, 0, present, () => udfs);
    expect(runner.stats).toMatchObject({ chunksMissing: 1, framesFilled: 4 });
  });

  it('stop sends the chunks before atFrame (or the one in flight; filled after the grace time without frames); abort drops it', async () => {
    const udfs = standardLiveUdfs().slice(0, 2);
    const a = acquireMessage({ acquisition: 's', scanShape: [1, 8], udfs, chunkSize: 4, mode: 'continuous' });
    // the chunk completes after stop
    {
      const { runner, sent } = makeRunner();
      runner.arm(a);
      runner.onAcquisitionStart(info(1, 1));
      feed(runner, 1, [0, 1, 2, 3, 4, 5], 1, 1860);
      runner.stop('s');
      expect(runner.state).toBe('stopping');
      feed(runner, 1, [6, 7, 8, 9], 1, 1860);
      expect(runner.state).toBe('stopped');
      expect(sent.map((p) => p.chunk)).toEqual([0, 1]);
      for (const p of sent) check(p, a, 0, () => true, () => udfs);
    }
    // stop at a given frame ahead: every chunk before it, none from it on
    {
      const { runner, sent } = makeRunner();
      runner.arm(a);
      runner.onAcquisitionStart(info(1, 1));
      feed(runner, 1, [0, 1, 2, 3, 4, 5], 1, 1860);
      runner.stop('s', 12);
      feed(runner, 1, Array.from({ length: 10 }, (_, k) => 6 + k), 1, 1860);
      expect(runner.state).toBe('stopped');
      expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [1, 0]]);
      for (const p of sent) check(p, a, 0, () => true, () => udfs);
    }
    // no more frames: after the grace time the chunk goes out with the rest missing
    {
      const { runner, sent } = makeRunner(50);
      runner.arm(a);
      runner.onAcquisitionStart(info(1, 1));
      feed(runner, 1, [0, 1], 1, 1860);
      runner.stop('s');
      await new Promise((r) => setTimeout(r, 150));
      expect(runner.state).toBe('stopped');
      expect(sent).toHaveLength(1);
      check(sent[0]!, a, 0, (i) => i < 2, () => udfs);
    }
    // abort: nothing
    {
      const { runner, sent } = makeRunner();
      runner.arm(a);
      runner.onAcquisitionStart(info(1, 1));
      feed(runner, 1, [0, 1], 1, 1860);
      runner.abort('s');
      feed(runner, 1, [2, 3, 4], 1, 1860);
      expect(runner.state).toBe('aborted');
      expect(sent).toHaveLength(0);
    }
  });

  it('refuses what it cannot run, by error code', () => {
    const { runner } = makeRunner();
    const arm = (udfs: AcquireMessage['udfs'], extra: Partial<AcquireMessage> = {}) => () => runner.arm(acquireMessage({ acquisition: 'x', scanShape: [4, 4], udfs, ...extra }));
    expect(arm([{ id: 'a', name: 'NoSuchUDF', params: {} }])).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UNKNOWN_UDF' }));
    expect(arm([{ id: 'a', name: 'SumUDF', params: { dtype: 'int8' } }])).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(arm([{ id: 'a', name: 'LogsumUDF', params: {} }])).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_NOT_TILED' }));
    expect(arm([{ id: 'a', name: 'ApplyMasksUDF', params: { masks: [{ type: 'ring', cy: 1, cx: 1, ri: 5, ro: 2 }] } }])).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(arm([{ id: 'a', name: 'SumUDF', params: {} }, { id: 'a', name: 'SumSigUDF', params: {} }])).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(arm([{ id: 'a', name: 'SumUDF', params: {} }], { roi: new Uint8Array(3) })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_ROI' }));
    expect(runner.acquisition).toBeNull();
    runner.arm(acquireMessage({ acquisition: 'ok', scanShape: [4, 4], udfs: [{ id: 'm', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 1, cx: 1, r: 3 }] } }] }));
    const params = (p: Record<string, unknown>, udfId = 'm', acquisition = 'ok') => () => runner.params({ version: 1, type: 'params', acquisition, udfId, params: p, fromFrame: 0 });
    expect(params({ masks: [] })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(params({ masks: [{ type: 'disk', cy: 1, cx: 1, r: 2 }] }, 'nope')).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(params({ masks: [{ type: 'disk', cy: 1, cx: 1, r: 2 }] }, 'm', 'other')).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_ACQUISITION_STATE' }));
    expect(runner.acquisition).toBe('ok');
  });
});
