/**
 * What a sector receiver hands on: `SectorTile`s of about 1 MB, and the acquisition they
 * belong to. The UDF engine consumes these (processTile runs on `data` with the tile's
 * signal slice); the frame dump writes them to a file.
 *
 * A tile is `depth` consecutive frames of one acquisition x `rows` sector rows x 256 columns,
 * C order (frame, row, column), uint16. In the full 1860 x 2048 frame it covers rows
 * [sigOrigin[0], sigOrigin[0] + rows) and columns [256 x sector, 256 x sector + 256).
 *
 * `data` is a zero-copy view into the decoder's WebAssembly memory, reused for the next tile:
 * it is valid only until the sink's `onTile` returns. A sink that needs the pixels later copies
 * them.
 *
 * Damage: `damage[f]` is frame f's 32-bit bitmap over the sector's blocks in the camera's send
 * order (geometry.ts blockIndex / blockOrigin; bit i set = block i never arrived and its
 * 930 x 16 pixels are zeros). It is the whole sector frame's bitmap, the same in every tile of
 * that frame: `tileDamage` keeps only the blocks that overlap the tile's rows.
 */
import { BLOCK_ROWS, BLOCKS_PER_SECTOR_FRAME, BLOCK_COLUMNS_PER_SECTOR } from '../src/k2is/constants.js';

export interface TileFrameInfo {
  /** frames since scan position 0 of the acquisition (epoch x positions + scanIndex) */
  index: number;
  frameKey: number;
  /** null when no block of the frame arrived */
  frameId: number | null;
}

export interface SectorTile {
  /** depth x rows x 256 uint16, C order; valid until onTile returns */
  data: Uint16Array;
  sector: number;
  acquisition: number;
  /** repetition of the scan (continuous acquisitions), 0 for the first */
  epoch: number;
  /** scan position of the first frame (the flat index in the scan's C order) */
  scanIndex: number;
  depth: number;
  rows: number;
  /** [first row, first column] in the full 1860 x 2048 frame: [row0, 256 x sector] */
  sigOrigin: [number, number];
  /** [rows, 256] */
  sigShape: [number, number];
  /** per frame: missing blocks of the whole sector frame (see the module comment) */
  damage: Uint32Array;
  frames: TileFrameInfo[];
}

export interface AcquisitionInfo {
  acquisition: number;
  sector: number;
  /** key of the first shutter-active frame (elected); scan position 0 is the frame before */
  firstActiveKey: number;
  /** election round that decided it (the same in every sector; with --no-election a local
   *  count), or null when this sector started on its own after no answer */
  round: number | null;
  /** scan positions, or null for a time series (runs until the flag goes off) */
  scanPositions: number | null;
  continuous: boolean;
  /** frames index at which this receiver joined (0 unless it started mid-acquisition) */
  joinedAt: number;
  decidedBy: 'all' | 'timeout' | 'local';
  /** sectors that did not vote (timeout) */
  missingSectors: number[];
}

export interface AcquisitionSummary extends AcquisitionInfo {
  /** frames handed on (with a scan position) */
  frames: number;
  reason: 'complete' | 'shutter_off' | 'jump' | 'stopped' | 'stream_stopped';
}

export interface TileSink {
  onAcquisitionStart?(a: AcquisitionInfo): void;
  onTile(tile: SectorTile): void;
  onAcquisitionEnd?(a: AcquisitionSummary): void;
  close?(): Promise<void> | void;
}

/** Blocks (bits) of a sector frame that overlap sector rows [row0, row0 + rows). */
export function blocksOverlappingRows(row0: number, rows: number): number {
  let mask = 0;
  for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
    const y0 = Math.floor(i / BLOCK_COLUMNS_PER_SECTOR) * BLOCK_ROWS;
    if (y0 < row0 + rows && row0 < y0 + BLOCK_ROWS) mask |= 1 << i;
  }
  return mask >>> 0;
}

/** Frame f's damage restricted to the tile's rows: nonzero iff some of the tile's pixels are zero-filled. */
export function tileDamage(tile: SectorTile, f: number): number {
  return (tile.damage[f]! & blocksOverlappingRows(tile.sigOrigin[0], tile.rows)) >>> 0;
}
