import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { PROJECT_ROOT } from '../../src/paths.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { K2ISRecording, type SectorTile } from '../../src/k2is/recording.js';
import {
  BLOCK_COLS,
  BLOCK_ROWS,
  FRAME_PIXELS,
  NUM_SECTORS,
  PAYLOAD_SIZE,
  SECTOR_HEIGHT,
  SECTOR_WIDTH,
} from '../../src/k2is/constants.js';
import { BLOCK_ORDER } from '../../src/k2is/geometry.js';
import { decodeUint12 } from '../../src/k2is/uint12.js';
import { expectedFrame, expectedSectorFrame, writeSyntheticRecording, type SyntheticRecording } from './fixtures.js';

/** Compare without printing 4 million elements on failure. */
function expectSamePixels(actual: Uint16Array, expected: Uint16Array, what: string): void {
  expect(actual.length, what).toBe(expected.length);
  let first = -1;
  let count = 0;
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  expect(first < 0 ? 'equal' : `${count} pixels differ, first at ${first}: ${actual[first]} != ${expected[first]}`, what).toBe('equal');
}

const isZero = (a: Uint16Array): boolean => a.every((v) => v === 0);

// complete frames 0..9; the flag from frame 3; a 2 x 3 scan in the .gtg
const FRAMES = 10;
const FLAGGED_FROM = 3;
const LEAD = [3, 0, 17, 31, 1, 8, 0, 12];
const TRAIL = [5, 0, 31, 2, 0, 9, 14, 1];
const TRUNC = [100, 0, 22359, 40, 0, 0, 7, 5000];

describe('K2ISRecording on a synthetic recording', () => {
  let root: string;
  let syn: SyntheticRecording;
  let rec: K2ISRecording;

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'tessera-rec-'));
    syn = writeSyntheticRecording({
      dir: join(root, 'main'),
      frames: FRAMES,
      flaggedFrom: FLAGGED_FROM,
      leadingBlocks: LEAD,
      trailingBlocks: TRAIL,
      truncatedBytes: TRUNC,
      frameIdStart: 284_980,
      frameIdAtFlag: 2,
      scrambledSectors: [5],
      gtg: { sizeY: 2, sizeX: 3 },
    });
    rec = K2ISRecording.open(syn.gtgPath);
  });
  afterAll(() => {
    rec?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('finds the files from the .gtg, a .bin or the directory, and synchronises them', () => {
    for (const p of [syn.gtgPath, syn.binPaths[3]!, syn.dir]) {
      const r = K2ISRecording.open(p);
      try {
        expect(r.files).toEqual(syn.binPaths);
        expect(r.gtgPath).toBe(syn.gtgPath);
        expect(r.navShape).toEqual([2, 3]);
      } finally {
        r.close();
      }
    }
    expect(rec.sigShape).toEqual([1860, 2048]);
    expect(rec.mode).toBe('scan');
    expect(rec.imageCount).toBe(FRAMES);
    expect(rec.frameCount).toBe(6);
    expect(rec.nativeSyncOffset).toBe(FLAGGED_FROM);
    expect(rec.syncOffset).toBe(FLAGGED_FROM);
    expect(rec.sync.leadingBlocksSkipped).toEqual(LEAD);
    expect(rec.sync.trailingBlocksDropped).toEqual(TRAIL);
    expect(rec.sync.truncatedBytes).toEqual(TRUNC);
    expect(rec.sync.numFlaggedFrames).toBe(FRAMES - FLAGGED_FROM);
    expect(rec.sync.firstFrameId).toBe(284_980);
    expect(rec.sync.firstFlaggedFrameId).toBe(2); // frame_id reset at the flag edge
    expect(rec.sync.lastFrameId).toBe(2 + FRAMES - 1 - FLAGGED_FROM);
    expect(rec.sync.warnings).toEqual([]);
  });

  it('starts the scan at the frame just before the first flagged one (convention 1)', () => {
    expect(rec.frameIndexOf(0)).toBe(FLAGGED_FROM - 1);
    expectSamePixels(rec.readFrame(0), expectedFrame(FLAGGED_FROM - 1), 'nav 0');
    expect(rec.getSyncOffsetInfo()).toEqual({
      frames_skipped_start: FLAGGED_FROM - 1,
      frames_ignored_end: FRAMES - (FLAGGED_FROM - 1) - 6,
      frames_inserted_start: 0,
      frames_inserted_end: 0,
    });
  });

  it('decodes every frame of the scan to the known pixel values', () => {
    const out = new Uint16Array(FRAME_PIXELS);
    for (let k = 0; k < rec.frameCount; k++) {
      expect(rec.readFrame(k, out)).toBe(out);
      expectSamePixels(out, expectedFrame(k + FLAGGED_FROM - 1), `frame ${k}`);
    }
  });

  it('reads sector frames, decoded and packed in send order (checked with the reference decoder)', () => {
    const k = 4;
    const t = k + FLAGGED_FROM - 1;
    for (let s = 0; s < NUM_SECTORS; s++) {
      const expected = expectedSectorFrame(t, s);
      expectSamePixels(rec.readSectorFrame(k, s), expected, `sector ${s}`);
      const packed = rec.readPackedSectorFrame(k, s);
      for (let slot = 0; slot < 32; slot++) {
        const px = decodeUint12(packed.subarray(slot * PAYLOAD_SIZE, (slot + 1) * PAYLOAD_SIZE));
        const { x, y } = BLOCK_ORDER[slot]!;
        const want = new Uint16Array(BLOCK_ROWS * BLOCK_COLS);
        for (let r = 0; r < BLOCK_ROWS; r++) {
          want.set(expected.subarray((y + r) * SECTOR_WIDTH + x, (y + r) * SECTOR_WIDTH + x + BLOCK_COLS), r * BLOCK_COLS);
        }
        expectSamePixels(px, want, `sector ${s} slot ${slot}`);
      }
    }
  });

  it.each([
    { depth: 4, rows: 930, sectors: undefined },
    { depth: 3, rows: 500, sectors: [5, 2] },
    { depth: 1, rows: 1860, sectors: [7] },
    { depth: 16, rows: 77, sectors: [0, 5] },
  ])('iterates sector tiles (depth $depth, rows $rows, sectors $sectors) in the receiver layout', ({ depth, rows, sectors }) => {
    const want = sectors ?? [0, 1, 2, 3, 4, 5, 6, 7];
    const seen = new Map<string, number>();
    let count = 0;
    const start = 1;
    const stop = 6;
    const expectedCache = new Map<string, Uint16Array>();
    for (const tile of rec.tiles({ start, stop, depth, rows, sectors })) {
      count++;
      expect(tile.sigShape[1]).toBe(SECTOR_WIDTH);
      expect(tile.sigOrigin[1]).toBe(tile.sector * SECTOR_WIDTH);
      expect(tile.data.length).toBe(tile.depth * tile.sigShape[0] * SECTOR_WIDTH);
      for (let j = 0; j < tile.depth; j++) {
        const k = tile.navStart + j;
        const key = `${k}/${tile.sector}`;
        let exp = expectedCache.get(key);
        if (!exp) expectedCache.set(key, (exp = expectedSectorFrame(k + FLAGGED_FROM - 1, tile.sector)));
        const [r0] = tile.sigOrigin;
        const h = tile.sigShape[0];
        expectSamePixels(
          tile.data.subarray(j * h * SECTOR_WIDTH, (j + 1) * h * SECTOR_WIDTH),
          exp.subarray(r0 * SECTOR_WIDTH, (r0 + h) * SECTOR_WIDTH),
          `tile nav ${k} sector ${tile.sector} rows ${r0}+${h}`,
        );
        seen.set(`${key}/${r0}`, h);
      }
    }
    // every (frame, sector, row band) exactly once, bands covering all rows
    const bands = Math.ceil(SECTOR_HEIGHT / rows);
    expect(count).toBe(Math.ceil((stop - start) / depth) * want.length * bands);
    expect(seen.size).toBe((stop - start) * want.length * bands);
  });

  it('copies tiles when asked to, and keeps two iterators apart', () => {
    const copies: SectorTile[] = [...rec.tiles({ depth: 2, rows: 1860, sectors: [1], reuseBuffers: false })];
    expect(copies).toHaveLength(3);
    const a = rec.tiles({ depth: 1, sectors: [3] });
    const b = rec.tiles({ depth: 1, sectors: [3], start: 2 });
    const ta = a.next().value as SectorTile;
    const tb = b.next().value as SectorTile;
    expectSamePixels(ta.data, expectedSectorFrame(FLAGGED_FROM - 1, 3), 'iterator a after b started');
    expectSamePixels(tb.data, expectedSectorFrame(FLAGGED_FROM + 1, 3), 'iterator b');
    for (const [i, t] of copies.entries()) {
      expectSamePixels(t.data.subarray(0, SECTOR_HEIGHT * SECTOR_WIDTH), expectedSectorFrame(2 * i + FLAGGED_FROM - 1, 1), `copy ${i}`);
    }
  });

  it('applies sync_offset as LiberTEM does: nav k reads complete frame k + sync_offset - 1', () => {
    // LiberTEM test_zero_sync_offset: frames [native, native + n) of sync_offset 0 = frames [0, n) of the default
    const zero = K2ISRecording.open(syn.gtgPath, { syncOffset: 0, scanShape: [10] });
    try {
      expect(zero.frameIndexOf(0)).toBeNull(); // one blank frame first
      expect(isZero(zero.readFrame(0))).toBe(true);
      for (let k = 0; k < 3; k++) expectSamePixels(zero.readFrame(FLAGGED_FROM + k), rec.readFrame(k), `zero offset ${k}`);
      expect(zero.getSyncOffsetInfo()).toEqual({
        frames_skipped_start: 0,
        frames_ignored_end: 1,
        frames_inserted_start: 1,
        frames_inserted_end: 0,
      });
    } finally {
      zero.close();
    }
    // positive: skip; past the end, blank frames
    const pos = K2ISRecording.open(syn.gtgPath, { syncOffset: 7 });
    try {
      expect([...Array(6).keys()].map((k) => pos.frameIndexOf(k))).toEqual([6, 7, 8, 9, null, null]);
      expectSamePixels(pos.readFrame(3), expectedFrame(9), 'positive offset, last real frame');
      expect(isZero(pos.readFrame(4))).toBe(true);
      expect(isZero(pos.readSectorFrame(5, 2))).toBe(true);
      expect(pos.readPackedSectorFrame(5, 2).every((v) => v === 0)).toBe(true);
      expect(pos.getSyncOffsetInfo()).toEqual({
        frames_skipped_start: 6,
        frames_ignored_end: 0,
        frames_inserted_start: 0,
        frames_inserted_end: 2,
      });
    } finally {
      pos.close();
    }
    // negative: blank frames first
    const neg = K2ISRecording.open(syn.gtgPath, { syncOffset: -2 });
    try {
      expect([...Array(6).keys()].map((k) => neg.frameIndexOf(k))).toEqual([null, null, null, 0, 1, 2]);
      const tiles = [...neg.tiles({ depth: 4, sectors: [6], reuseBuffers: false })];
      expect(isZero(tiles[0]!.data.subarray(0, 3 * SECTOR_HEIGHT * SECTOR_WIDTH))).toBe(true);
      expectSamePixels(tiles[0]!.data.subarray(3 * SECTOR_HEIGHT * SECTOR_WIDTH), expectedSectorFrame(0, 6), 'first real frame in a mixed tile');
      expect(neg.getSyncOffsetInfo()).toMatchObject({ frames_inserted_start: 3, frames_skipped_start: 0 });
    } finally {
      neg.close();
    }
  });

  it('accepts sync_offset in (-image_count, image_count) only', () => {
    for (const s of [FRAMES - 1, -(FRAMES - 1)]) K2ISRecording.open(syn.gtgPath, { syncOffset: s }).close();
    for (const s of [FRAMES, -FRAMES, 1.5]) {
      expect(() => K2ISRecording.open(syn.gtgPath, { syncOffset: s })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    }
  });

  it('lets an explicit scan shape override the .gtg', () => {
    const r = K2ISRecording.open(syn.binPaths[0]!, { scanShape: [1, 2, 3] });
    try {
      expect(r.navShape).toEqual([1, 2, 3]);
      expectSamePixels(r.readFrame(5), expectedFrame(5 + FLAGGED_FROM - 1), 'frame 5');
    } finally {
      r.close();
    }
  });

  const compiled = join(PROJECT_ROOT, 'dist', 'src', 'k2is', 'recording.js');
  it.skipIf(!existsSync(compiled))('works in worker threads, two at once (compiled code, no shared state)', async () => {
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.module).then(({ K2ISRecording }) => {
        const rec = K2ISRecording.open(workerData.path);
        let sum = 0;
        for (const t of rec.tiles({ depth: 2, rows: 930, sectors: [workerData.sector] })) for (const v of t.data) sum += v;
        rec.close();
        parentPort.postMessage(sum);
      }, (err) => parentPort.postMessage('error: ' + err.message));`;
    const sumIn = (sector: number): Promise<unknown> =>
      new Promise((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { module: compiled, path: syn.gtgPath, sector } });
        w.once('message', (m) => {
          resolve(m);
          void w.terminate();
        });
        w.once('error', reject);
      });
    const expected = (sector: number): number => {
      let sum = 0;
      for (let k = 0; k < 6; k++) for (const v of expectedSectorFrame(k + FLAGGED_FROM - 1, sector)) sum += v;
      return sum;
    };
    expect(await Promise.all([sumIn(2), sumIn(5)])).toEqual([expected(2), expected(5)]);
  });

  it('rejects bad arguments to the readers', () => {
    const bad = expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    expect(() => rec.readFrame(6)).toThrow(bad);
    expect(() => rec.readFrame(-1)).toThrow(bad);
    expect(() => rec.readSectorFrame(0, 8)).toThrow(bad);
    expect(() => rec.readFrame(0, new Uint16Array(10))).toThrow(bad);
    expect(() => [...rec.tiles({ rows: 0 })]).toThrow(bad);
    expect(() => [...rec.tiles({ start: 2, stop: 7 })]).toThrow(bad);
  });
});

describe('K2ISRecording: other shapes of recordings', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'tessera-rec2-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('reads a time series (no SI Dimensions in the .gtg) from the first flagged frame', () => {
    const syn = writeSyntheticRecording({ dir: join(root, 'ts'), frames: 5, flaggedFrom: 2, gtg: 'time-series', leadingBlocks: [0, 4, 0, 0, 9, 0, 0, 1] });
    const r = K2ISRecording.open(syn.gtgPath);
    try {
      expect(r.mode).toBe('time-series');
      expect(r.navShape).toEqual([3]);
      expect(r.getSyncOffsetInfo()).toEqual({ frames_skipped_start: 2, frames_ignored_end: 0, frames_inserted_start: 0, frames_inserted_end: 0 });
      for (let k = 0; k < 3; k++) expectSamePixels(r.readFrame(k), expectedFrame(k + 2), `time series frame ${k}`);
    } finally {
      r.close();
    }
  });

  it('skips a frame every sector starts in the middle of, and one every sector ends in', () => {
    const syn = writeSyntheticRecording({
      dir: join(root, 'mid'),
      frames: 4,
      flaggedFrom: 1,
      leadingBlocks: [3, 5, 17, 31, 1, 8, 2, 12],
      trailingBlocks: [5, 1, 31, 2, 3, 9, 14, 1],
      gtg: { sizeY: 1, sizeX: 4 },
    });
    const r = K2ISRecording.open(syn.dir);
    try {
      expect(r.imageCount).toBe(4);
      expect(r.sync.leadingBlocksSkipped).toEqual([3, 5, 17, 31, 1, 8, 2, 12]);
      expect(r.sync.trailingBlocksDropped).toEqual([5, 1, 31, 2, 3, 9, 14, 1]);
      for (let k = 0; k < 4; k++) expectSamePixels(r.readFrame(k), expectedFrame(k), `frame ${k}`);
    } finally {
      r.close();
    }
  });

  it('inserts a blank scan position 0 when the very first complete frame is flagged', () => {
    const syn = writeSyntheticRecording({ dir: join(root, 'flag0'), frames: 3, flaggedFrom: 0, leadingBlocks: [2, 2, 2, 2, 2, 2, 2, 2], gtg: { sizeY: 1, sizeX: 3 } });
    const r = K2ISRecording.open(syn.gtgPath);
    try {
      expect(r.nativeSyncOffset).toBe(0);
      expect(r.frameIndexOf(0)).toBeNull();
      expect(isZero(r.readFrame(0))).toBe(true);
      expectSamePixels(r.readFrame(1), expectedFrame(0), 'frame 1');
      expect(r.getSyncOffsetInfo()).toMatchObject({ frames_inserted_start: 1, frames_ignored_end: 1 });
    } finally {
      r.close();
    }
  });
});
