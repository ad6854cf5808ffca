/**
 * SectorTiler: for several tile shapes, every tile's pixels equal the slice [frames, rows, 256]
 * of the known sector frames (reference: the pixels the packed slots were encoded from), with
 * the right origin, damage and frame info; tiles align to multiples of `depth`, never straddle
 * a scan repetition, and a gap or the end of an acquisition flushes a shorter tile.
 */
import { describe, expect, it } from 'vitest';
import { HEADER_SIZE, PAYLOAD_SIZE, SECTOR_FRAME_PAYLOAD_BYTES, SECTOR_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { Uint12Decoder } from '../../src/k2is/decode12.js';
import { FrameSlotPool } from '../../receivers/frame-slots.js';
import type { ScanFrame } from '../../receivers/shutter-sync.js';
import { SectorTiler } from '../../receivers/tiler.js';
import { blocksOverlappingRows, tileDamage, type SectorTile } from '../../receivers/tile.js';
import { firstDiff, frameDatagrams, sectorPixels, withDamage } from './datagrams.js';

const FULL = 0xffffffff;
const SECTOR = 5;
const FRAMES = 7;
const PIX = Array.from({ length: FRAMES }, (_, f) => sectorPixels(3, SECTOR, f));
const PACKED = PIX.map((pixels, f) => {
  // the slot layout: the 32 payloads in send order, exactly as the assembler writes them
  const out = new Uint8Array(SECTOR_FRAME_PAYLOAD_BYTES);
  frameDatagrams({ key: 32 * f, frameId: f, shutter: true, pixels }).forEach((d, i) => out.set(d.subarray(HEADER_SIZE), i * PAYLOAD_SIZE));
  return out;
});

interface Captured extends Omit<SectorTile, 'data'> {
  data: Uint16Array;
}

function run(shape: { depth: number; rows: number }, frames: Array<{ f: number; index: number; positions: number | null; damage?: number; missing?: boolean }>) {
  const dec = Uint12Decoder.create({ initialBytes: 12 * SECTOR_FRAME_PAYLOAD_BYTES + SectorTiler.bytesNeeded(shape) + (1 << 20) });
  const pool = new FrameSlotPool(dec, 4);
  const tiles: Captured[] = [];
  const tiler = new SectorTiler({
    sector: SECTOR,
    shape,
    decoder: dec,
    pool,
    sinks: [{ onTile: (t) => tiles.push({ ...t, data: Uint16Array.from(t.data), damage: Uint32Array.from(t.damage) }) }],
  });
  for (const fr of frames) {
    let slot = -1;
    if (!fr.missing) {
      slot = pool.acquire();
      pool.bytes(slot).set(PACKED[fr.f]!);
      // damaged blocks arrive zero-filled from the assembler
      for (let i = 0; i < 32; i++) if (((fr.damage ?? 0) >>> i) & 1) pool.zeroBlock(slot, i);
    }
    const N = fr.positions;
    const sf: ScanFrame = {
      frame: { key: 32 * fr.f, seq: fr.f, stream: 0, frameId: fr.missing ? null : fr.f, shutter: true, damage: fr.missing ? FULL : (fr.damage ?? 0), blocks: 32, slot },
      acquisition: 1,
      index: fr.index,
      scanIndex: N === null ? fr.index : fr.index % N,
      epoch: N === null ? 0 : Math.floor(fr.index / N),
      positions: N,
    };
    tiler.push(sf);
    expect(pool.available).toBe(pool.size); // decoded at once, slot returned
  }
  tiler.flush();
  return tiles;
}

/** The expected pixels of a tile: frames x rows [row0, row0 + rows) of the reference frames. */
function expectedTile(frames: Uint16Array[], row0: number, rows: number): Uint16Array {
  const out = new Uint16Array(frames.length * rows * SECTOR_WIDTH);
  frames.forEach((p, j) => out.set(p.subarray(row0 * SECTOR_WIDTH, (row0 + rows) * SECTOR_WIDTH), j * rows * SECTOR_WIDTH));
  return out;
}

describe('SectorTiler', () => {
  for (const shape of [
    { depth: 1, rows: 1860 },
    { depth: 2, rows: 930 },
    { depth: 3, rows: 465 },
    { depth: 4, rows: 93 },
  ]) {
    it(`tiles of ${shape.depth} x ${shape.rows} x 256 hold exactly the frames' pixels`, () => {
      const frames = Array.from({ length: FRAMES }, (_, f) => ({ f, index: f, positions: null }));
      const tiles = run(shape, frames);
      const bands = SECTOR_HEIGHT / shape.rows;
      const groups = Math.ceil(FRAMES / shape.depth);
      expect(tiles).toHaveLength(groups * bands);
      for (let g = 0; g < groups; g++) {
        const first = g * shape.depth;
        const depth = Math.min(shape.depth, FRAMES - first);
        for (let b = 0; b < bands; b++) {
          const t = tiles[g * bands + b]!;
          expect(t).toMatchObject({ sector: SECTOR, scanIndex: first, depth, rows: shape.rows, sigOrigin: [b * shape.rows, 256 * SECTOR], sigShape: [shape.rows, 256], epoch: 0 });
          expect(t.frames.map((x) => x.index)).toEqual(Array.from({ length: depth }, (_, j) => first + j));
          expect(firstDiff(t.data, expectedTile(PIX.slice(first, first + depth), b * shape.rows, shape.rows))).toBe(-1);
        }
      }
    });
  }

  it('carries damage per frame, zeros for missing frames, and tileDamage keeps the blocks of its rows', () => {
    const damage = ((1 << 3) | (1 << 20)) >>> 0; // block 3 (top half), block 20 (bottom half)
    const tiles = run({ depth: 3, rows: 930 }, [
      { f: 0, index: 0, positions: null },
      { f: 1, index: 1, positions: null, damage },
      { f: 2, index: 2, positions: null, missing: true },
    ]);
    expect(tiles).toHaveLength(2);
    const [top, bottom] = tiles as [Captured, Captured];
    expect(Array.from(top.damage)).toEqual([0, damage, FULL]);
    expect(top.frames.map((x) => x.frameId)).toEqual([0, 1, null]);
    const frames = [PIX[0]!, withDamage(PIX[1]!, damage), new Uint16Array(SECTOR_HEIGHT * SECTOR_WIDTH)];
    expect(firstDiff(top.data, expectedTile(frames, 0, 930))).toBe(-1);
    expect(firstDiff(bottom.data, expectedTile(frames, 930, 930))).toBe(-1);
    expect(tileDamage(top as SectorTile, 1)).toBe(1 << 3);
    expect(tileDamage(bottom as SectorTile, 1)).toBe(1 << 20);
    expect(blocksOverlappingRows(0, 1860)).toBe(FULL);
    expect(blocksOverlappingRows(925, 10)).toBe(FULL);
    expect(blocksOverlappingRows(931, 10)).toBe(0xffff0000);
  });

  it('aligns tiles to multiples of depth, splits at scan repetitions and at gaps', () => {
    // positions 5 per scan, depth 2: tiles [0,1] [2,3] [4] | [0,1] ... ; a gap after index 7
    const frames = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10].map((index, k) => ({ f: k % FRAMES, index, positions: 5 }));
    const tiles = run({ depth: 2, rows: 1860 }, frames);
    expect(tiles.map((t) => [t.epoch, t.scanIndex, t.depth, t.frames.map((x) => x.index)])).toEqual([
      [0, 0, 2, [0, 1]],
      [0, 2, 2, [2, 3]],
      [0, 4, 1, [4]],
      [1, 0, 2, [5, 6]],
      [1, 2, 1, [7]],
      [1, 4, 1, [9]],
      [2, 0, 1, [10]],
    ]);
  });

  it('rejects tile shapes that do not divide the sector', () => {
    const dec = Uint12Decoder.create();
    const pool = new FrameSlotPool(dec, 1);
    expect(() => new SectorTiler({ sector: 0, shape: { depth: 1, rows: 1000 }, decoder: dec, pool, sinks: [] })).toThrow(
      expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }),
    );
  });
});
