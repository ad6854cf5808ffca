/**
 * Test fixtures for the K2 IS file reader: small synthetic recordings with known pixel values,
 * and hand-built DM3/DM4 tag files. Independent of the simulator: blocks are written here from
 * header.ts + uint12.ts + geometry.ts, DM files byte by byte from the format description.
 */
import { mkdirSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import {
  BLOCK_COLS,
  BLOCK_ROWS,
  BLOCK_SIZE,
  BLOCKS_PER_SECTOR_FRAME,
  FRAME_WIDTH,
  HEADER_SIZE,
  NUM_SECTORS,
  SECTOR_HEIGHT,
  SECTOR_WIDTH,
} from '../../src/k2is/constants.js';
import { encodeHeader, headerFor } from '../../src/k2is/header.js';
import { encodeUint12 } from '../../src/k2is/uint12.js';
import { BLOCK_ORDER } from '../../src/k2is/geometry.js';

// ---------------------------------------------------------------------------------------------
// DM3 / DM4 tag files

/** A DM entry to write: a group, or a data tag with its info words and raw value bytes. */
export type DmNode =
  | { group: string; entries: DmNode[]; sorted?: number; open?: number }
  | { tag: string; info: number[]; data: Uint8Array };

const le = (n: number, write: (v: DataView) => void): Uint8Array => {
  const b = new Uint8Array(n);
  write(new DataView(b.buffer));
  return b;
};

export const dm = {
  group: (label: string, entries: DmNode[]): DmNode => ({ group: label, entries }),
  int16: (label: string, v: number): DmNode => ({ tag: label, info: [2], data: le(2, (d) => d.setInt16(0, v, true)) }),
  int32: (label: string, v: number): DmNode => ({ tag: label, info: [3], data: le(4, (d) => d.setInt32(0, v, true)) }),
  uint16: (label: string, v: number): DmNode => ({ tag: label, info: [4], data: le(2, (d) => d.setUint16(0, v, true)) }),
  uint32: (label: string, v: number): DmNode => ({ tag: label, info: [5], data: le(4, (d) => d.setUint32(0, v, true)) }),
  float32: (label: string, v: number): DmNode => ({ tag: label, info: [6], data: le(4, (d) => d.setFloat32(0, v, true)) }),
  float64: (label: string, v: number): DmNode => ({ tag: label, info: [7], data: le(8, (d) => d.setFloat64(0, v, true)) }),
  bool: (label: string, v: boolean): DmNode => ({ tag: label, info: [8], data: new Uint8Array([v ? 1 : 0]) }),
  int8: (label: string, v: number): DmNode => ({ tag: label, info: [9], data: le(1, (d) => d.setInt8(0, v)) }),
  uint8: (label: string, v: number): DmNode => ({ tag: label, info: [10], data: new Uint8Array([v]) }),
  int64: (label: string, v: bigint): DmNode => ({ tag: label, info: [11], data: le(8, (d) => d.setBigInt64(0, v, true)) }),
  uint64: (label: string, v: bigint): DmNode => ({ tag: label, info: [12], data: le(8, (d) => d.setBigUint64(0, v, true)) }),
  /** text the way DM stores it: an array of uint16 code units */
  text: (label: string, s: string): DmNode => ({
    tag: label,
    info: [20, 4, s.length],
    data: le(s.length * 2, (d) => [...s].forEach((ch, i) => d.setUint16(i * 2, ch.charCodeAt(0), true))),
  }),
  /** type 18: UTF-16 string of `s.length` code units */
  string: (label: string, s: string): DmNode => ({
    tag: label,
    info: [18, s.length],
    data: le(s.length * 2, (d) => [...s].forEach((ch, i) => d.setUint16(i * 2, ch.charCodeAt(0), true))),
  }),
  float32Array: (label: string, values: number[]): DmNode => ({
    tag: label,
    info: [20, 6, values.length],
    data: le(values.length * 4, (d) => values.forEach((v, i) => d.setFloat32(i * 4, v, true))),
  }),
  /** a struct of (int32, float64, uint16) */
  struct: (label: string, a: number, b: number, c: number): DmNode => ({
    tag: label,
    info: [15, 0, 3, 0, 3, 0, 7, 0, 4],
    data: le(14, (d) => {
      d.setInt32(0, a, true);
      d.setFloat64(4, b, true);
      d.setUint16(12, c, true);
    }),
  }),
  /** an array of (float32, float32) structs */
  structArray: (label: string, pairs: [number, number][]): DmNode => ({
    tag: label,
    info: [20, 15, 0, 2, 0, 6, 0, 6, pairs.length],
    data: le(pairs.length * 8, (d) =>
      pairs.forEach(([x, y], i) => {
        d.setFloat32(i * 8, x, true);
        d.setFloat32(i * 8 + 4, y, true);
      }),
    ),
  }),
  raw: (label: string, info: number[], data: Uint8Array): DmNode => ({ tag: label, info, data }),
};

class ByteWriter {
  private chunks: Uint8Array[] = [];
  length = 0;
  bytes(b: Uint8Array): this {
    this.chunks.push(b);
    this.length += b.length;
    return this;
  }
  u8(v: number): this {
    return this.bytes(new Uint8Array([v]));
  }
  u16be(v: number): this {
    return this.bytes(le(2, (d) => d.setUint16(0, v, false)));
  }
  u32be(v: number): this {
    return this.bytes(le(4, (d) => d.setUint32(0, v, false)));
  }
  u64be(v: number): this {
    return this.bytes(le(8, (d) => d.setBigUint64(0, BigInt(v), false)));
  }
  done(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

function encodeDmBody(node: DmNode, version: 3 | 4): Uint8Array {
  const w = new ByteWriter();
  const word = (v: number): void => void (version === 4 ? w.u64be(v) : w.u32be(v));
  if ('group' in node) {
    w.u8(node.sorted ?? 1).u8(node.open ?? 0);
    word(node.entries.length);
    for (const e of node.entries) w.bytes(encodeDmEntry(e, version));
  } else {
    w.bytes(new TextEncoder().encode('%%%%'));
    word(node.info.length);
    for (const i of node.info) word(i);
    w.bytes(node.data);
  }
  return w.done();
}

function encodeDmEntry(node: DmNode, version: 3 | 4): Uint8Array {
  const w = new ByteWriter();
  const label = 'group' in node ? node.group : node.tag;
  const body = encodeDmBody(node, version);
  w.u8('group' in node ? 20 : 21).u16be(label.length).bytes(Uint8Array.from(label, (ch) => ch.charCodeAt(0)));
  if (version === 4) w.u64be(body.length);
  return w.bytes(body).done();
}

/** A DM file with these root entries (values little-endian, byte order flag 1). */
export function buildDm(entries: DmNode[], version: 3 | 4 = 4): Uint8Array {
  const root = encodeDmBody({ group: '', entries }, version);
  const w = new ByteWriter().u32be(version);
  if (version === 4) w.u64be(root.length);
  else w.u32be(root.length);
  w.u32be(1);
  w.bytes(root);
  w.bytes(new Uint8Array(8)); // end-of-file padding
  return w.done();
}

/** The tags a K2 IS .gtg holds for a scan (plus some company for the parser). */
export function gtgBytes(scan: { sizeY: number; sizeX: number } | 'time-series'): Uint8Array {
  const si =
    scan === 'time-series'
      ? []
      : [dm.group('SI Dimensions', [dm.int32('Size X', scan.sizeX), dm.int32('Size Y', scan.sizeY)])];
  return buildDm([
    dm.group('ImageList', [dm.group('', [dm.group('ImageTags', [dm.text('Name', 'K2 IS capture')])])]),
    ...si,
    dm.group('SI Image Tags', [dm.group('SI', [dm.group('Acquisition', [dm.float64('Pixel time (s)', 0.0025)])])]),
  ]);
}

// ---------------------------------------------------------------------------------------------
// synthetic recordings

/**
 * Ground truth for every pixel: frame t (complete frames 0.., -1 for the leading partial frame),
 * sector, sector row, sector column. Not linear, so that misplaced blocks or rows show.
 */
export function pixelValue(t: number, sector: number, row: number, col: number): number {
  return ((t + 5) * 397 + sector * 1009 + row * 13 + col * 7 + ((row * (col + 1)) >> 4)) & 0xfff;
}

export function expectedSectorFrame(t: number, sector: number): Uint16Array {
  const out = new Uint16Array(SECTOR_HEIGHT * SECTOR_WIDTH);
  for (let r = 0; r < SECTOR_HEIGHT; r++) {
    for (let c = 0; c < SECTOR_WIDTH; c++) out[r * SECTOR_WIDTH + c] = pixelValue(t, sector, r, c);
  }
  return out;
}

export function expectedFrame(t: number): Uint16Array {
  const out = new Uint16Array(SECTOR_HEIGHT * FRAME_WIDTH);
  for (let s = 0; s < NUM_SECTORS; s++) {
    const sec = expectedSectorFrame(t, s);
    for (let r = 0; r < SECTOR_HEIGHT; r++) {
      out.set(sec.subarray(r * SECTOR_WIDTH, (r + 1) * SECTOR_WIDTH), r * FRAME_WIDTH + s * SECTOR_WIDTH);
    }
  }
  return out;
}

export interface SyntheticRecordingOptions {
  dir: string;
  /** file name prefix: `${name}${s + 1}.bin` and `${name}.gtg` */
  name?: string;
  /** complete frames common to all sectors */
  frames: number;
  /** complete-frame index of the first frame with the shutter-active flag */
  flaggedFrom: number;
  /** per sector: blocks of an earlier, incomplete frame at the start (0..31) */
  leadingBlocks?: number[];
  /** per sector: blocks of a later, incomplete frame at the end (0..31) */
  trailingBlocks?: number[];
  /** per sector: bytes of one more, truncated block at the very end */
  truncatedBytes?: number[];
  /** frame_id of complete frame 0 (frames before the flag count up from here) */
  frameIdStart?: number;
  /** frame_id of the first flagged frame (the camera resets it, e.g. 284990 -> 2) */
  frameIdAtFlag?: number;
  /** block_count of complete frame 0's first block */
  blockCountStart?: number;
  /** the .gtg: a scan shape, no SI tags (time series), garbage bytes, or none at all */
  gtg?: { sizeY: number; sizeX: number } | 'time-series' | 'garbage' | 'truncated' | 'none';
  /** sectors whose blocks are written in a scrambled order within each frame */
  scrambledSectors?: number[];
  /** override file names (index = sector) */
  fileName?: (sector: number) => string;
}

export interface SyntheticRecording {
  dir: string;
  gtgPath: string;
  binPaths: string[];
  options: SyntheticRecordingOptions;
}

/** A deterministic scrambled order of the 32 send-order slots. */
function scramble(t: number): number[] {
  const order = Array.from({ length: BLOCKS_PER_SECTOR_FRAME }, (_, i) => i);
  let x = (t + 17) * 2654435761;
  for (let i = order.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) >>> 0;
    const j = x % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/**
 * Write a recording. Sector s's file holds, in order: the last leadingBlocks[s] blocks of frame
 * -1, complete frames 0..frames-1, the first trailingBlocks[s] blocks of frame `frames`, and
 * truncatedBytes[s] bytes of the block after those.
 */
export function writeSyntheticRecording(o: SyntheticRecordingOptions): SyntheticRecording {
  const name = o.name ?? 'Capture7_';
  mkdirSync(o.dir, { recursive: true });
  const lead = o.leadingBlocks ?? new Array(NUM_SECTORS).fill(0);
  const trail = o.trailingBlocks ?? new Array(NUM_SECTORS).fill(0);
  const trunc = o.truncatedBytes ?? new Array(NUM_SECTORS).fill(0);
  const idStart = o.frameIdStart ?? 284_980;
  const idAtFlag = o.frameIdAtFlag ?? 2;
  const bcStart = o.blockCountStart ?? 1_000_000;
  const frameId = (t: number): number => (t < o.flaggedFrom ? idStart + t : idAtFlag + (t - o.flaggedFrom));
  const binPaths: string[] = [];
  const block = new Uint8Array(BLOCK_SIZE);
  const pixels = new Uint16Array(BLOCK_ROWS * BLOCK_COLS);

  for (let s = 0; s < NUM_SECTORS; s++) {
    const path = join(o.dir, o.fileName ? o.fileName(s) : `${name}${s + 1}.bin`);
    binPaths.push(path);
    const fd = openSync(path, 'w');
    const out = Buffer.alloc(BLOCKS_PER_SECTOR_FRAME * BLOCK_SIZE);
    let fill = 0;
    const flush = (): void => {
      writeSync(fd, out, 0, fill);
      fill = 0;
    };
    let sector: Uint16Array | undefined;
    let sectorFrame = NaN;
    // global block sequence: block i of frame t is number 32 t + i
    const firstBlock = -lead[s]!;
    const endBlock = o.frames * BLOCKS_PER_SECTOR_FRAME + trail[s]!;
    const writeBlock = (g: number, bytes: number): void => {
      const t = Math.floor(g / BLOCKS_PER_SECTOR_FRAME);
      const pos = g - t * BLOCKS_PER_SECTOR_FRAME;
      const slot = o.scrambledSectors?.includes(s) ? scramble(t)[pos]! : pos;
      const { x, y } = BLOCK_ORDER[slot]!;
      if (sectorFrame !== t) {
        sector = expectedSectorFrame(t, s);
        sectorFrame = t;
      }
      for (let r = 0; r < BLOCK_ROWS; r++) {
        pixels.set(sector!.subarray((y + r) * SECTOR_WIDTH + x, (y + r) * SECTOR_WIDTH + x + BLOCK_COLS), r * BLOCK_COLS);
      }
      encodeHeader(
        headerFor({
          flags: t >= o.flaggedFrom ? 1 : 0,
          blockCount: bcStart + g,
          frameId: frameId(t),
          pixelXStart: x,
          pixelYStart: y,
        }),
        block,
      );
      encodeUint12(pixels, block, HEADER_SIZE);
      out.set(block.subarray(0, bytes), fill);
      fill += bytes;
      if (fill + BLOCK_SIZE > out.length) flush();
    };
    for (let g = firstBlock; g < endBlock; g++) writeBlock(g, BLOCK_SIZE);
    if (trunc[s]! > 0) writeBlock(endBlock, trunc[s]!);
    flush();
    closeSync(fd);
  }

  const gtgPath = join(o.dir, `${name}.gtg`);
  const gtg = o.gtg ?? { sizeY: 2, sizeX: 3 };
  if (gtg === 'garbage') writeFileSync(gtgPath, Buffer.from('this is not a DM4 file at all, just some text\n'.repeat(4)));
  else if (gtg === 'truncated') writeFileSync(gtgPath, gtgBytes({ sizeY: 2, sizeX: 3 }).subarray(0, 60));
  else if (gtg !== 'none') writeFileSync(gtgPath, gtgBytes(gtg));
  return { dir: o.dir, gtgPath, binPaths, options: o };
}
