/**
 * K2 IS raw format constants (../shared/spec/k2is-format.md, section A.2). Every other module
 * takes its sizes from here.
 */
export const SYNC_WORD = 0xffff0055;
export const BLOCK_SIZE = 0x5758; // 22 360 bytes: one block = one UDP datagram
export const HEADER_SIZE = 40;
export const PAYLOAD_SIZE = BLOCK_SIZE - HEADER_SIZE; // 22 320 bytes = 930 x 16 px x 1.5 B
export const BLOCK_ROWS = 930;
export const BLOCK_COLS = 16;
export const BLOCK_PIXELS = BLOCK_ROWS * BLOCK_COLS; // 14 880
export const BLOCK_ROW_BYTES = (BLOCK_COLS * 3) / 2; // 24 bytes per 16-pixel row
export const BLOCKS_PER_SECTOR_FRAME = 32;
export const BLOCK_COLUMNS_PER_SECTOR = 16;
export const BLOCK_ROWS_PER_SECTOR = 2;
export const SECTOR_WIDTH = 256;
export const SECTOR_HEIGHT = 1860;
export const SECTOR_PIXELS = SECTOR_WIDTH * SECTOR_HEIGHT; // 476 160
export const NUM_SECTORS = 8;
export const FRAME_WIDTH = NUM_SECTORS * SECTOR_WIDTH; // 2048
export const FRAME_HEIGHT = SECTOR_HEIGHT; // 1860
export const FRAME_PIXELS = FRAME_WIDTH * FRAME_HEIGHT; // 3 809 280
export const SECTOR_FRAME_BYTES = BLOCKS_PER_SECTOR_FRAME * BLOCK_SIZE; // 715 520
export const SECTOR_FRAME_PAYLOAD_BYTES = BLOCKS_PER_SECTOR_FRAME * PAYLOAD_SIZE; // 714 240
export const SHUTTER_ACTIVE_MASK = 0x1;
export const MAX_PIXEL_VALUE = 0xfff;
/** a backwards frame_id jump larger than this is a counter wrap or reset, not a straggler */
export const WRAP_JUMP = 32;
/** the header version byte the camera writes */
export const HEADER_VERSION = 1;
