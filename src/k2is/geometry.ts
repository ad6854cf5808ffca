/**
 * Where blocks and sectors sit (spec A.5). A sector frame is 1860 x 256 pixels made of
 * 2 x 16 blocks of 930 x 16. The camera sends a frame's 32 blocks right to left, top half then
 * bottom half; receivers place blocks by their header coordinates and never by arrival order.
 */
import {
  BLOCK_COLS,
  BLOCK_COLUMNS_PER_SECTOR,
  BLOCK_ROWS,
  BLOCKS_PER_SECTOR_FRAME,
  SECTOR_WIDTH,
} from './constants.js';

/** Index of a block within its sector frame in the camera's send order (0..31). */
export function blockIndex(pixelXStart: number, pixelYStart: number): number {
  return BLOCK_COLUMNS_PER_SECTOR - 1 - pixelXStart / BLOCK_COLS + BLOCK_COLUMNS_PER_SECTOR * (pixelYStart / BLOCK_ROWS);
}

/** In-sector pixel origin {x, y} of the block with send-order index `idx`. */
export function blockOrigin(idx: number): { x: number; y: number } {
  const col = BLOCK_COLUMNS_PER_SECTOR - 1 - (idx % BLOCK_COLUMNS_PER_SECTOR);
  const row = Math.floor(idx / BLOCK_COLUMNS_PER_SECTOR);
  return { x: col * BLOCK_COLS, y: row * BLOCK_ROWS };
}

/** The 32 block origins in the camera's send order. */
export const BLOCK_ORDER: ReadonlyArray<{ x: number; y: number }> = Array.from(
  { length: BLOCKS_PER_SECTOR_FRAME },
  (_, i) => blockOrigin(i),
);

/** First column of sector `s` (0..7) in the full 1860 x 2048 frame. */
export function sectorColumnOffset(sector: number): number {
  return sector * SECTOR_WIDTH;
}

/** Global frame coordinates of a pixel given its sector, block origin and position in the block. */
export function globalPixel(
  sector: number,
  pixelXStart: number,
  pixelYStart: number,
  rowInBlock: number,
  colInBlock: number,
): { row: number; col: number } {
  return { row: pixelYStart + rowInBlock, col: sectorColumnOffset(sector) + pixelXStart + colInBlock };
}
