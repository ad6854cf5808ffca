/**
 * The 40-byte K2 IS block header (spec A.3): every field, big-endian. `parseHeader` reads
 * without judging; `checkHeader` says what, if anything, is wrong with a block, as one of the
 * stable reasons the receiver counts separately.
 */
import {
  BLOCK_COLS,
  BLOCK_ROWS,
  BLOCK_SIZE,
  HEADER_SIZE,
  HEADER_VERSION,
  SECTOR_HEIGHT,
  SECTOR_WIDTH,
  SHUTTER_ACTIVE_MASK,
  SYNC_WORD,
} from './constants.js';

export interface BlockHeader {
  sync: number;
  /** bytes 4-7, unused by the camera software; kept so that encode(parse(x)) == x */
  padding1: number;
  version: number;
  flags: number;
  /** bytes 10-15, unused */
  padding2: Uint8Array;
  blockCount: number;
  width: number;
  height: number;
  frameId: number;
  pixelXStart: number;
  pixelYStart: number;
  pixelXEnd: number;
  pixelYEnd: number;
  blockSize: number;
}

/** Why a datagram was rejected. Each reason has its own counter in the receiver. */
export type DatagramRejection =
  | 'too_short'
  | 'too_long'
  | 'bad_sync'
  | 'bad_geometry' // width/height not 256 x 1860
  | 'bad_coordinates' // x/y start not on the block grid, or end != start + size - 1
  | 'bad_block_size';

export const DATAGRAM_REJECTIONS: readonly DatagramRejection[] = [
  'too_short',
  'too_long',
  'bad_sync',
  'bad_geometry',
  'bad_coordinates',
  'bad_block_size',
];

export function isShutterActive(flags: number): boolean {
  return (flags & SHUTTER_ACTIVE_MASK) !== 0;
}

export function parseHeader(buf: Uint8Array, offset = 0): BlockHeader {
  const v = new DataView(buf.buffer, buf.byteOffset + offset, HEADER_SIZE);
  return {
    sync: v.getUint32(0),
    padding1: v.getUint32(4),
    version: v.getUint8(8),
    flags: v.getUint8(9),
    padding2: buf.slice(offset + 10, offset + 16),
    blockCount: v.getUint32(16),
    width: v.getUint16(20),
    height: v.getUint16(22),
    frameId: v.getUint32(24),
    pixelXStart: v.getUint16(28),
    pixelYStart: v.getUint16(30),
    pixelXEnd: v.getUint16(32),
    pixelYEnd: v.getUint16(34),
    blockSize: v.getUint32(36),
  };
}

/** The fields a writer chooses; the rest follow from the format. */
export interface BlockHeaderFields {
  flags: number;
  blockCount: number;
  frameId: number;
  pixelXStart: number;
  pixelYStart: number;
}

export function headerFor(f: BlockHeaderFields): BlockHeader {
  return {
    sync: SYNC_WORD,
    padding1: 0,
    version: HEADER_VERSION,
    flags: f.flags,
    padding2: new Uint8Array(6),
    blockCount: f.blockCount >>> 0,
    width: SECTOR_WIDTH,
    height: SECTOR_HEIGHT,
    frameId: f.frameId >>> 0,
    pixelXStart: f.pixelXStart,
    pixelYStart: f.pixelYStart,
    pixelXEnd: f.pixelXStart + BLOCK_COLS - 1,
    pixelYEnd: f.pixelYStart + BLOCK_ROWS - 1,
    blockSize: BLOCK_SIZE,
  };
}

export function encodeHeader(h: BlockHeader, buf: Uint8Array, offset = 0): void {
  const v = new DataView(buf.buffer, buf.byteOffset + offset, HEADER_SIZE);
  v.setUint32(0, h.sync);
  v.setUint32(4, h.padding1);
  v.setUint8(8, h.version);
  v.setUint8(9, h.flags);
  buf.set(h.padding2.subarray(0, 6), offset + 10);
  v.setUint32(16, h.blockCount);
  v.setUint16(20, h.width);
  v.setUint16(22, h.height);
  v.setUint32(24, h.frameId);
  v.setUint16(28, h.pixelXStart);
  v.setUint16(30, h.pixelYStart);
  v.setUint16(32, h.pixelXEnd);
  v.setUint16(34, h.pixelYEnd);
  v.setUint32(36, h.blockSize);
}

/**
 * Validate one datagram (or file block) of `length` bytes at `offset`. Returns null when the
 * block is good. Reads only the header fields it needs, straight from the bytes: this runs
 * for every datagram on the receive path.
 */
export function checkBlock(buf: Uint8Array, offset: number, length: number): DatagramRejection | null {
  if (length < BLOCK_SIZE) return 'too_short';
  if (length > BLOCK_SIZE) return 'too_long';
  const b = buf;
  const o = offset;
  const sync = ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  if (sync !== SYNC_WORD) return 'bad_sync';
  const width = (b[o + 20]! << 8) | b[o + 21]!;
  const height = (b[o + 22]! << 8) | b[o + 23]!;
  if (width !== SECTOR_WIDTH || height !== SECTOR_HEIGHT) return 'bad_geometry';
  const x0 = (b[o + 28]! << 8) | b[o + 29]!;
  const y0 = (b[o + 30]! << 8) | b[o + 31]!;
  const x1 = (b[o + 32]! << 8) | b[o + 33]!;
  const y1 = (b[o + 34]! << 8) | b[o + 35]!;
  if (
    x0 % BLOCK_COLS !== 0 ||
    x0 >= SECTOR_WIDTH ||
    y0 % BLOCK_ROWS !== 0 ||
    y0 >= SECTOR_HEIGHT ||
    x1 !== x0 + BLOCK_COLS - 1 ||
    y1 !== y0 + BLOCK_ROWS - 1
  ) {
    return 'bad_coordinates';
  }
  const blockSize = ((b[o + 36]! << 24) | (b[o + 37]! << 16) | (b[o + 38]! << 8) | b[o + 39]!) >>> 0;
  if (blockSize !== BLOCK_SIZE) return 'bad_block_size';
  return null;
}

/** Fast field readers for the hot path (no object allocation). */
export function readFrameId(b: Uint8Array, o = 0): number {
  return ((b[o + 24]! << 24) | (b[o + 25]! << 16) | (b[o + 26]! << 8) | b[o + 27]!) >>> 0;
}
export function readBlockCount(b: Uint8Array, o = 0): number {
  return ((b[o + 16]! << 24) | (b[o + 17]! << 16) | (b[o + 18]! << 8) | b[o + 19]!) >>> 0;
}
export function readFlags(b: Uint8Array, o = 0): number {
  return b[o + 9]!;
}
export function readPixelXStart(b: Uint8Array, o = 0): number {
  return (b[o + 28]! << 8) | b[o + 29]!;
}
export function readPixelYStart(b: Uint8Array, o = 0): number {
  return (b[o + 30]! << 8) | b[o + 31]!;
}
