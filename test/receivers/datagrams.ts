/**
 * Test datagrams built from first principles: known pixels per sector frame, cut into blocks by
 * geometry.ts, packed by the reference encoder, headed by header.ts. The expected decoded frame
 * is the pixels themselves (with missing blocks zeroed): an independent reference.
 */
import dgram from 'node:dgram';
import {
  BLOCK_COLS,
  BLOCK_ROWS,
  BLOCK_SIZE,
  BLOCKS_PER_SECTOR_FRAME,
  HEADER_SIZE,
  SECTOR_PIXELS,
  SECTOR_WIDTH,
} from '../../src/k2is/constants.js';
import { BLOCK_ORDER } from '../../src/k2is/geometry.js';
import { encodeHeader, headerFor } from '../../src/k2is/header.js';
import { encodeUint12 } from '../../src/k2is/uint12.js';

/** Deterministic 12-bit pixels of one sector frame, different for every (seed, sector, frame). */
export function sectorPixels(seed: number, sector: number, frame: number): Uint16Array {
  const out = new Uint16Array(SECTOR_PIXELS);
  let x = (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(sector + 7, 0x85ebca6b) ^ Math.imul(frame + 13, 0xc2b2ae35)) | 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xfff;
  }
  return out;
}

export interface BlockSpec {
  blockCount: number;
  frameId: number;
  flags: number;
  /** send-order index 0..31 */
  index: number;
}

/** One datagram: header + the block's 930 x 16 pixels of `pixels` (a 1860 x 256 sector frame). */
export function makeDatagram(spec: BlockSpec, pixels: Uint16Array): Uint8Array {
  const { x, y } = BLOCK_ORDER[spec.index]!;
  const out = new Uint8Array(BLOCK_SIZE);
  encodeHeader(headerFor({ flags: spec.flags, blockCount: spec.blockCount, frameId: spec.frameId, pixelXStart: x, pixelYStart: y }), out);
  const block = new Uint16Array(BLOCK_ROWS * BLOCK_COLS);
  for (let r = 0; r < BLOCK_ROWS; r++) {
    for (let col = 0; col < BLOCK_COLS; col++) block[r * BLOCK_COLS + col] = pixels[(y + r) * SECTOR_WIDTH + x + col]!;
  }
  encodeUint12(block, out, HEADER_SIZE);
  return out;
}

export interface FrameSpec {
  /** block_count of block 0 (the frame key) */
  key: number;
  frameId: number;
  shutter: boolean;
  pixels: Uint16Array;
}

/** The 32 datagrams of a sector frame, in send order. */
export function frameDatagrams(f: FrameSpec): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
    out.push(makeDatagram({ blockCount: (f.key + i) >>> 0, frameId: f.frameId >>> 0, flags: f.shutter ? 1 : 0, index: i }, f.pixels));
  }
  return out;
}

/** `pixels` with the blocks whose damage bit is set zeroed. */
export function withDamage(pixels: Uint16Array, damage: number): Uint16Array {
  const out = Uint16Array.from(pixels);
  for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
    if (((damage >>> i) & 1) === 0) continue;
    const { x, y } = BLOCK_ORDER[i]!;
    for (let r = 0; r < BLOCK_ROWS; r++) out.fill(0, (y + r) * SECTOR_WIDTH + x, (y + r) * SECTOR_WIDTH + x + BLOCK_COLS);
  }
  return out;
}

/** Seeded shuffle (Fisher-Yates with xorshift). */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const a = [...items];
  let x = seed | 1;
  for (let i = a.length - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export function sameU16(a: Uint16Array, b: Uint16Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Index of the first differing element, or -1. */
export function firstDiff(a: Uint16Array, b: Uint16Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

export { freeUdpPort } from '../support/ports.js';
