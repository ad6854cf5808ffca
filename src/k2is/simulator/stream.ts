/**
 * The K2 IS camera stream of a simulated acquisition: for every stream frame and sector, the
 * 32 datagrams (blocks) exactly as the camera sends them (spec A.3-A.5, Tessera's conventions).
 *
 * Stream frames, in order (B = framesBeforeScan >= 1, N = scan positions):
 *   0 .. B-2            parked beam, shutter flag off
 *   B-1                 scan position 0, flag OFF (the camera raises the flag one frame late:
 *                       convention 1, scan position 0 is the frame just before the first flagged one)
 *   B .. B+N-2          scan positions 1 .. N-1, flag on
 *   B+N-1 ..            `framesAfterScan` parked-beam frames, flag still on
 * Continuous mode repeats the scan forever after the pre-scan frames (epoch e shows scan
 * position i at stream frame B-1 + e N + i, with exactly the pixels of epoch 0: one truth frame
 * per scan position), and the flag stays on.
 *
 * Header fields: frame_id = frameIdStart + f (mod 2^32), or, with frameIdReset, the first
 * flagged frame restarts at frameIdReset (as in real data, 284990 -> 2). block_count of block i
 * (send order) of frame f is blockCountStart + 32 f + i (mod 2^32), the same in every sector
 * (convention 2).
 */
import {
  BLOCK_COLS,
  BLOCK_ROWS,
  BLOCK_SIZE,
  BLOCKS_PER_SECTOR_FRAME,
  HEADER_SIZE,
  NUM_SECTORS,
  SECTOR_FRAME_BYTES,
  SHUTTER_ACTIVE_MASK,
} from '../constants.js';
import { BLOCK_ORDER } from '../geometry.js';
import { encodeHeader, headerFor } from '../header.js';
import { TesseraError } from '../../errors.js';
import type { FramePlan } from './render.js';
import type { SimulatedScan } from './scene.js';

const U32 = 4294967296;

export interface StreamOptions {
  /** flag-off frames, the last of which is scan position 0 (>= 1) */
  framesBeforeScan: number;
  /** flag-on parked-beam frames after the scan (ignored in continuous mode) */
  framesAfterScan: number;
  /** repeat the scan forever */
  continuous?: boolean;
  /** frame_id of stream frame 0 (default 0) */
  frameIdStart?: number;
  /** if set, the first flagged frame carries this frame_id and later ones count on from it */
  frameIdReset?: number | null;
  /** block_count of block 0 of stream frame 0 (default 0) */
  blockCountStart?: number;
}

export type FrameContent =
  | { kind: 'parked'; phase: 'before' | 'after' }
  | { kind: 'scan'; scanIndex: number; epoch: number };

export interface StreamFrame {
  /** stream frame index (0 = the first frame sent) */
  index: number;
  content: FrameContent;
  shutter: boolean;
  frameId: number;
  /** block_count of the frame's block 0; block i carries (this + i) mod 2^32 */
  blockCountBase: number;
}

/** One block on the wire, with the truth about where it came from. */
export interface Datagram {
  /** the bytes to send or write (22 360 for an intact block) */
  data: Uint8Array;
  sector: number;
  streamFrame: number;
  /** index within the sector frame in send order (0..31) */
  blockIndex: number;
  frameId: number;
  blockCount: number;
}

function checkU32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v >= U32) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', name, `must be an integer in [0, 2^32), got ${v}`);
  }
  return v;
}

export class K2ISStream {
  readonly scan: SimulatedScan;
  readonly framesBeforeScan: number;
  readonly framesAfterScan: number;
  readonly continuous: boolean;
  readonly frameIdStart: number;
  readonly frameIdReset: number | null;
  readonly blockCountStart: number;
  /** stream frame carrying scan position 0 (flag off) */
  readonly firstScanFrame: number;
  /** first stream frame with the shutter flag */
  readonly firstShutterFrame: number;
  /** number of stream frames (Infinity in continuous mode) */
  readonly totalFrames: number;

  constructor(scan: SimulatedScan, options: StreamOptions) {
    const b = options.framesBeforeScan;
    if (!Number.isInteger(b) || b < 1) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'framesBeforeScan', `must be an integer >= 1, got ${b}`);
    }
    const a = options.framesAfterScan;
    if (!Number.isInteger(a) || a < 0) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'framesAfterScan', `must be an integer >= 0, got ${a}`);
    }
    this.scan = scan;
    this.framesBeforeScan = b;
    this.framesAfterScan = a;
    this.continuous = options.continuous ?? false;
    this.frameIdStart = checkU32('frameIdStart', options.frameIdStart ?? 0);
    this.frameIdReset = options.frameIdReset == null ? null : checkU32('frameIdReset', options.frameIdReset);
    this.blockCountStart = checkU32('blockCountStart', options.blockCountStart ?? 0);
    this.firstScanFrame = b - 1;
    this.firstShutterFrame = b;
    this.totalFrames = this.continuous ? Infinity : b - 1 + scan.positions + a;
  }

  private checkFrame(f: number): void {
    if (!Number.isInteger(f) || f < 0) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'stream frame', `must be an integer >= 0, got ${f}`);
    }
  }

  /** What stream frame `f` is. Frames past the end (non-continuous) continue as parked-beam, flag-on frames. */
  frameInfo(f: number): StreamFrame {
    this.checkFrame(f);
    const n = this.scan.positions;
    let content: FrameContent;
    const k = f - this.firstScanFrame;
    if (k < 0) content = { kind: 'parked', phase: 'before' };
    else if (this.continuous) content = { kind: 'scan', scanIndex: k % n, epoch: Math.floor(k / n) };
    else if (k < n) content = { kind: 'scan', scanIndex: k, epoch: 0 };
    else content = { kind: 'parked', phase: 'after' };
    const shutter = f >= this.firstShutterFrame;
    const frameId =
      shutter && this.frameIdReset !== null
        ? (this.frameIdReset + (f - this.firstShutterFrame)) % U32
        : (this.frameIdStart + f) % U32;
    return {
      index: f,
      content,
      shutter,
      frameId,
      blockCountBase: (this.blockCountStart + BLOCKS_PER_SECTOR_FRAME * f) % U32,
    };
  }

  /** Stream frame that shows scan position `scanIndex` in epoch `epoch`. */
  streamFrameOfScan(scanIndex: number, epoch = 0): number {
    this.scan.position(scanIndex); // validates
    if (epoch !== 0 && !this.continuous) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'epoch', 'only continuous streams repeat the scan');
    }
    return this.firstScanFrame + epoch * this.scan.positions + scanIndex;
  }

  plan(f: number): FramePlan {
    const info = this.frameInfo(f);
    return info.content.kind === 'scan' ? this.scan.planForScan(info.content.scanIndex) : this.scan.planForParked(f);
  }

  /** The full 1860 x 2048 frame that stream frame `f` carries. */
  truthFrame(f: number, out?: Uint16Array): Uint16Array {
    return this.scan.renderer.renderFrame(this.plan(f), out);
  }

  /** Write sector `sector`'s 32 blocks of stream frame `f` (715 520 bytes) at `out[offset]`. */
  writeSectorFrame(f: number, sector: number, out: Uint8Array, offset = 0): void {
    this.writeSectorBlocks(this.frameInfo(f), this.plan(f), sector, out, offset);
  }

  private writeSectorBlocks(info: StreamFrame, plan: FramePlan, sector: number, out: Uint8Array, offset: number): void {
    if (!Number.isInteger(sector) || sector < 0 || sector >= NUM_SECTORS) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sector', `must be 0..7, got ${sector}`);
    }
    const flags = info.shutter ? SHUTTER_ACTIVE_MASK : 0;
    // Block 0's header is encoded in full; the others copy it and patch what differs
    // (block_count and the coordinates), big-endian like every header field.
    const first = BLOCK_ORDER[0]!;
    encodeHeader(
      headerFor({ flags, blockCount: info.blockCountBase, frameId: info.frameId, pixelXStart: first.x, pixelYStart: first.y }),
      out,
      offset,
    );
    for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
      const o = offset + i * BLOCK_SIZE;
      if (i > 0) {
        out.copyWithin(o, offset, offset + HEADER_SIZE);
        const origin = BLOCK_ORDER[i]!;
        putU32(out, o + 16, (info.blockCountBase + i) % U32);
        putU16(out, o + 28, origin.x);
        putU16(out, o + 30, origin.y);
        putU16(out, o + 32, origin.x + BLOCK_COLS - 1);
        putU16(out, o + 34, origin.y + BLOCK_ROWS - 1);
      }
      this.scan.renderer.renderBlock(plan, sector, i, out, o + HEADER_SIZE);
    }
  }

  /**
   * Write stream frame `f` for the given sectors, sector after sector: the k-th listed sector's
   * 32 blocks start at `out[k * 715 520]`.
   */
  writeFrame(f: number, out: Uint8Array, sectors: readonly number[] = ALL_SECTORS): StreamFrame {
    const info = this.frameInfo(f);
    const plan = this.plan(f);
    if (out.length < sectors.length * SECTOR_FRAME_BYTES) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'out', `needs ${sectors.length * SECTOR_FRAME_BYTES} bytes`);
    }
    sectors.forEach((s, k) => this.writeSectorBlocks(info, plan, s, out, k * SECTOR_FRAME_BYTES));
    return info;
  }

  /** Datagram records for the k-th sector of a frame written by `writeFrame` into `buf`. */
  datagramsOf(info: StreamFrame, sector: number, buf: Uint8Array, offset: number): Datagram[] {
    const out: Datagram[] = [];
    for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
      const o = offset + i * BLOCK_SIZE;
      out.push({
        data: buf.subarray(o, o + BLOCK_SIZE),
        sector,
        streamFrame: info.index,
        blockIndex: i,
        frameId: info.frameId,
        blockCount: (info.blockCountBase + i) % U32,
      });
    }
    return out;
  }

  /**
   * Every datagram of one sector for stream frames [from, to), in send order. Each frame gets
   * fresh memory, so consumers may keep what they are given.
   */
  *datagrams(sector: number, from = 0, to = this.totalFrames): Generator<Datagram> {
    if (!Number.isFinite(to)) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'to', 'a continuous stream needs an end frame');
    }
    for (let f = from; f < to; f++) {
      const buf = new Uint8Array(SECTOR_FRAME_BYTES);
      const info = this.frameInfo(f);
      this.writeSectorBlocks(info, this.plan(f), sector, buf, 0);
      yield* this.datagramsOf(info, sector, buf, 0);
    }
  }
}

function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

function putU16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v & 0xff;
}

export const ALL_SECTORS: readonly number[] = Object.freeze([0, 1, 2, 3, 4, 5, 6, 7]);
