/**
 * Offline synchronisation of the eight sector files of a recording (spec A.6), and the mapping
 * from scan (nav) positions to frames in the files.
 *
 * 1. align the sectors on the largest first block_count; skip a frame the files start in the
 *    middle of; cut the end to whole blocks, to the smallest last block_count, and before a
 *    final incomplete frame (found by block_count arithmetic: convention 2). What remains is
 *    `imageCount` complete frames, numbered 0.. here ("complete-frame index"). A damaged first
 *    or last frame is dropped with a warning (at most a few), where LiberTEM would assert.
 * 2. find the first frame with the shutter-active flag, per sector (header by header, one
 *    positioned 40-byte read per frame: files can be tens of GB), and check they agree.
 * 3. validate: the first, last and flag-edge frames have 32 good blocks with one frame_id, the
 *    same in all sectors, and block_counts that follow Tessera's convention 2.
 *
 * Nav mapping (convention 1): in a scan, nav index k reads complete frame k + syncOffset - 1, so
 * with the default (native) offset, scan position 0 is the frame just before the first
 * flagged one. A time series (no scan shape in the .gtg) reads frame k + syncOffset, so it
 * starts at the first flagged frame. Frames outside the files are blank (zeros).
 */
import { readSync } from 'node:fs';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, HEADER_SIZE, NUM_SECTORS } from './constants.js';
import {
  checkBlock,
  isShutterActive,
  readBlockCount,
  readFlags,
  readFrameId,
  type DatagramRejection,
} from './header.js';
import { getNumber, readDmFile, type DmFile } from './dm4-reader.js';
import { TesseraError, isTesseraError } from '../errors.js';

/** An open sector file: sync reads it only through positioned reads. */
export interface SectorFileHandle {
  sector: number;
  path: string;
  fd: number;
  size: number;
  /** whole blocks in the file */
  blocks: number;
}

export interface BlockInfo {
  /** null when the block is good, else why not (header.ts `checkBlock`) */
  rejection: DatagramRejection | null;
  blockCount: number;
  frameId: number;
  flags: number;
}

/** How far sync looks for the alignment block_count or the end of the last frame. */
const MAX_ALIGN_SCAN_BLOCKS = 64 * BLOCKS_PER_SECTOR_FRAME;
/** Invalid whole blocks tolerated at the very end of a file (an interrupted write). */
const MAX_TRAILING_INVALID_BLOCKS = BLOCKS_PER_SECTOR_FRAME;
/** Damaged frames dropped at either end before sync gives up. */
const MAX_DROPPED_EDGE_FRAMES = 4;

/** Reads one block header at a time into a reused buffer. */
export class BlockHeaderReader {
  private readonly buf = Buffer.alloc(HEADER_SIZE);
  constructor(readonly file: SectorFileHandle) {}

  read(block: number): BlockInfo {
    const f = this.file;
    if (block < 0 || block >= f.blocks) {
      throw new TesseraError('TESSERA_ERR_SYNC', `block ${block} is outside ${f.path} (${f.blocks} whole blocks)`);
    }
    const n = readSync(f.fd, this.buf, 0, HEADER_SIZE, block * BLOCK_SIZE);
    if (n !== HEADER_SIZE) throw new TesseraError('TESSERA_ERR_SYNC', `short read of block ${block} in ${f.path}`);
    return {
      rejection: checkBlock(this.buf, 0, BLOCK_SIZE),
      blockCount: readBlockCount(this.buf),
      frameId: readFrameId(this.buf),
      flags: readFlags(this.buf),
    };
  }
}

export interface SyncResult {
  /** per sector: block index of complete frame 0's first block */
  firstBlock: number[];
  /** per sector: block index of the last complete frame's last block */
  lastBlock: number[];
  /** complete frames common to all sectors */
  imageCount: number;
  /** complete-frame index of the first shutter-active frame: the native sync offset */
  firstFlaggedFrame: number;
  /** complete frames from the first flagged one to the end */
  numFlaggedFrames: number;
  /** block_count of complete frame 0's first block; frame c's block i has firstBlockCount + 32c + i */
  firstBlockCount: number;
  firstFrameId: number;
  firstFlaggedFrameId: number;
  lastFrameId: number;
  /** per sector: blocks before complete frame 0 (earlier, incomplete frames) */
  leadingBlocksSkipped: number[];
  /** per sector: whole blocks after the last complete frame */
  trailingBlocksDropped: number[];
  /** per sector: bytes of a truncated block at the end of the file */
  truncatedBytes: number[];
  /** odd but tolerated findings, also logged by the caller */
  warnings: string[];
}

function syncError(msg: string): never {
  throw new TesseraError('TESSERA_ERR_SYNC', msg);
}

function describeBlock(r: BlockHeaderReader, block: number, why: string): string {
  return `sector ${r.file.sector} (${r.file.path}) block ${block} at byte ${block * BLOCK_SIZE}: ${why}`;
}

function requireValid(r: BlockHeaderReader, block: number, what: string): BlockInfo {
  const b = r.read(block);
  if (b.rejection !== null) syncError(`${what} is not a valid K2 IS block: ${describeBlock(r, block, b.rejection)}`);
  return b;
}

/** First block in [from, to] with `pred`, scanning forward at most `limit` blocks. */
function findForward(r: BlockHeaderReader, from: number, to: number, limit: number, pred: (b: BlockInfo) => boolean): number | undefined {
  const end = Math.min(to, from + limit - 1);
  for (let i = from; i <= end; i++) if (pred(r.read(i))) return i;
  return undefined;
}

function findBackward(r: BlockHeaderReader, from: number, to: number, limit: number, pred: (b: BlockInfo) => boolean): number | undefined {
  const end = Math.max(to, from - limit + 1);
  for (let i = from; i >= end; i--) if (pred(r.read(i))) return i;
  return undefined;
}

/**
 * Check that complete frame `c` is whole in every sector: 32 good blocks, one frame_id shared
 * by all sectors, block_counts as convention 2 says. Returns that frame_id.
 */
function validateFrame(readers: BlockHeaderReader[], first: number[], c: number, firstBlockCount: number, what: string): number {
  let frameId: number | undefined;
  for (const r of readers) {
    const base = first[r.file.sector]! + c * BLOCKS_PER_SECTOR_FRAME;
    for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
      const b = requireValid(r, base + i, `block ${i} of the ${what} (complete frame ${c})`);
      frameId ??= b.frameId;
      if (b.frameId !== frameId) {
        syncError(
          `the ${what} (complete frame ${c}) is not consistent: ${describeBlock(r, base + i, `frame_id ${b.frameId}, expected ${frameId} as in sector 0 block 0`)}`,
        );
      }
      const expected = (firstBlockCount + c * BLOCKS_PER_SECTOR_FRAME + i) >>> 0;
      if (b.blockCount !== expected) {
        syncError(
          `the ${what} (complete frame ${c}) is not aligned: ${describeBlock(r, base + i, `block_count ${b.blockCount}, expected ${expected}`)}`,
        );
      }
    }
  }
  return frameId!;
}

/** Synchronise the eight sector files (spec A.6). Reads headers only. */
export function synchroniseSectors(files: readonly SectorFileHandle[]): SyncResult {
  if (files.length !== NUM_SECTORS) syncError(`need ${NUM_SECTORS} sector files, got ${files.length}`);
  const readers = files.map((f) => new BlockHeaderReader(f));
  const warnings: string[] = [];

  // 1a. align the starts on the largest first block_count
  const firstInfos = readers.map((r) => requireValid(r, 0, 'the first block of the file'));
  const maxFirst = Math.max(...firstInfos.map((b) => b.blockCount));
  const first = readers.map((r) => {
    const at = findForward(r, 0, r.file.blocks - 1, MAX_ALIGN_SCAN_BLOCKS, (b) => b.blockCount === maxFirst);
    if (at === undefined) {
      syncError(
        `sector ${r.file.sector} (${r.file.path}) has no block with block_count ${maxFirst} (the largest first block_count) ` +
          `within its first ${Math.min(MAX_ALIGN_SCAN_BLOCKS, r.file.blocks)} blocks`,
      );
    }
    requireValid(r, at, `the alignment block (block_count ${maxFirst})`);
    return at;
  });

  // 1b. a start in the middle of a frame: skip to the next frame. Every sector skips the same
  // number of blocks (the one most sectors agree on), so that they stay aligned on block_count
  // even when one sector has a damaged block there.
  const toNextFrame = readers.map((r, s) => {
    const id = r.read(first[s]!).frameId;
    const at = findForward(r, first[s]!, r.file.blocks - 1, BLOCKS_PER_SECTOR_FRAME + 1, (b) => b.frameId !== id);
    return at === undefined ? undefined : at - first[s]!;
  });
  if (toNextFrame.some((n) => n !== undefined && n < BLOCKS_PER_SECTOR_FRAME)) {
    const votes = new Map<number, number>();
    for (const n of toNextFrame) if (n !== undefined) votes.set(n, (votes.get(n) ?? 0) + 1);
    const skip = [...votes.entries()].sort((a, b) => b[1] - a[1] || (a[0] === toNextFrame[0] ? -1 : b[0] === toNextFrame[0] ? 1 : a[0] - b[0]))[0]![0];
    if (votes.size > 1 || toNextFrame.includes(undefined)) {
      warnings.push(
        `sectors disagree on where the first complete frame starts (blocks to the next frame_id per sector: ${toNextFrame.join(', ')}); using ${skip}`,
      );
    }
    if (skip < BLOCKS_PER_SECTOR_FRAME) {
      for (const r of readers) {
        const s = r.file.sector;
        if (first[s]! + skip >= r.file.blocks) syncError(`sector ${s} (${r.file.path}) ends before the first complete frame`);
        first[s]! += skip;
      }
    }
  }

  // 1c. the ends: whole blocks only (a truncated block is left out), past invalid trailing
  // blocks. block_count is one counter shared by the sectors (convention 2), so the last complete
  // frame is the last whole frame at or before the smallest last block_count.
  let firstBlockCount = readers[0]!.read(first[0]!).blockCount;
  const last = readers.map((r) => {
    const s = r.file.sector;
    const at = findBackward(r, r.file.blocks - 1, first[s]!, MAX_TRAILING_INVALID_BLOCKS, (b) => b.rejection === null);
    if (at === undefined) {
      syncError(`sector ${s} (${r.file.path}): the last ${MAX_TRAILING_INVALID_BLOCKS} whole blocks are all invalid (${r.read(r.file.blocks - 1).rejection})`);
    }
    if (at !== r.file.blocks - 1) {
      warnings.push(`sector ${s} (${r.file.path}): ${r.file.blocks - 1 - at} invalid whole block(s) at the end, ignored`);
    }
    return at;
  });
  const lastCounts = readers.map((r, s) => r.read(last[s]!).blockCount);
  readers.forEach((r, s) => {
    const expected = (firstBlockCount + last[s]! - first[s]!) >>> 0;
    if (lastCounts[s] !== expected) {
      warnings.push(
        `sector ${s} (${r.file.path}): the last block has block_count ${lastCounts[s]}, expected ${expected} from its position: ` +
          'blocks are missing or extra in the middle of the file',
      );
    }
  });
  const minLast = Math.min(...lastCounts);
  const byCount = Math.floor((((minLast - firstBlockCount) >>> 0) + 1) / BLOCKS_PER_SECTOR_FRAME);
  let imageCount = Math.min(byCount, ...readers.map((_, s) => Math.floor((last[s]! - first[s]! + 1) / BLOCKS_PER_SECTOR_FRAME)));
  if (imageCount < 1) {
    syncError(`no complete frame common to all sectors (blocks from the aligned start to the end: ${readers.map((_, s) => last[s]! - first[s]! + 1).join(', ')})`);
  }

  // 1d. a damaged first or last frame is dropped (a few at most, each with a warning)
  let firstFrameId = 0;
  let lastFrameId = 0;
  for (let dropped = 0; ; dropped++) {
    try {
      firstFrameId = validateFrame(readers, first, 0, firstBlockCount, 'first complete frame');
      break;
    } catch (err) {
      if (dropped >= MAX_DROPPED_EDGE_FRAMES || imageCount <= 1) throw err;
      warnings.push(`dropped the first complete frame: ${(err as Error).message}`);
      for (let s = 0; s < first.length; s++) first[s]! += BLOCKS_PER_SECTOR_FRAME;
      firstBlockCount = (firstBlockCount + BLOCKS_PER_SECTOR_FRAME) >>> 0;
      imageCount--;
    }
  }
  for (let dropped = 0; ; dropped++) {
    try {
      lastFrameId = validateFrame(readers, first, imageCount - 1, firstBlockCount, 'last complete frame');
      break;
    } catch (err) {
      if (dropped >= MAX_DROPPED_EDGE_FRAMES || imageCount <= 1) throw err;
      warnings.push(`dropped the last complete frame: ${(err as Error).message}`);
      imageCount--;
    }
  }
  for (let s = 0; s < last.length; s++) last[s] = first[s]! + imageCount * BLOCKS_PER_SECTOR_FRAME - 1;

  // 2. the first shutter-active frame, frame by frame on each sector's frame starts
  const flagged = readers.map((r) => {
    const s = r.file.sector;
    for (let c = 0; c < imageCount; c++) {
      if (isShutterActive(r.read(first[s]! + c * BLOCKS_PER_SECTOR_FRAME).flags)) return c;
    }
    return undefined;
  });
  if (flagged.some((c) => c === undefined)) {
    const none = flagged.flatMap((c, s) => (c === undefined ? [s] : []));
    syncError(`no frame with the shutter-active flag in sector(s) ${none.join(', ')}: the acquisition never started in these files`);
  }
  const firstFlaggedFrame = flagged[0]!;
  if (flagged.some((c) => c !== firstFlaggedFrame)) {
    syncError(`the sectors disagree on the first shutter-active frame (complete-frame index per sector: ${flagged.join(', ')})`);
  }

  // 3. validate the frames around the flag edge, which anchor the nav mapping
  if (firstFlaggedFrame > 0) validateFrame(readers, first, firstFlaggedFrame - 1, firstBlockCount, 'frame before the first flagged frame');
  const firstFlaggedFrameId = validateFrame(readers, first, firstFlaggedFrame, firstBlockCount, 'first flagged frame');

  return {
    firstBlock: first,
    lastBlock: last,
    imageCount,
    firstFlaggedFrame,
    numFlaggedFrames: imageCount - firstFlaggedFrame,
    firstBlockCount,
    firstFrameId,
    firstFlaggedFrameId,
    lastFrameId,
    leadingBlocksSkipped: [...first],
    trailingBlocksDropped: files.map((f, s) => f.blocks - 1 - last[s]!),
    truncatedBytes: files.map((f) => f.size - f.blocks * BLOCK_SIZE),
    warnings,
  };
}

// ---------------------------------------------------------------------------------------------
// scan shape and the nav mapping

export type NavMode = 'scan' | 'time-series';

export interface GtgScanShape {
  /** [Size Y, Size X] from `SI Dimensions`, or undefined when the .gtg has none (a time series) */
  scanShape: [number, number] | undefined;
  dm: DmFile;
}

const MAX_SCAN_SIDE = 1 << 20;

/** The scan shape LiberTEM reads from a .gtg: `SI Dimensions.Size Y` x `SI Dimensions.Size X`. */
export function readGtgScanShape(gtgPath: string): GtgScanShape {
  let dm: DmFile;
  try {
    dm = readDmFile(gtgPath);
  } catch (err) {
    const why = isTesseraError(err) ? err.message : String(err);
    throw new TesseraError('TESSERA_ERR_GTG', gtgPath, why);
  }
  const y = getNumber(dm, 'SI Dimensions.Size Y');
  const x = getNumber(dm, 'SI Dimensions.Size X');
  if (y === undefined || x === undefined) return { scanShape: undefined, dm };
  for (const [name, v] of [
    ['Size Y', y],
    ['Size X', x],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > MAX_SCAN_SIDE) {
      throw new TesseraError('TESSERA_ERR_GTG', gtgPath, `SI Dimensions.${name} is ${v}, not a scan size`);
    }
  }
  return { scanShape: [y, x], dm };
}

export interface SyncOffsetInfo {
  /** complete frames before the one nav index 0 reads */
  frames_skipped_start: number;
  /** complete frames after the one the last nav index reads */
  frames_ignored_end: number;
  /** blank frames at the start of the nav range (before complete frame 0) */
  frames_inserted_start: number;
  /** blank frames at the end of the nav range (after the last complete frame) */
  frames_inserted_end: number;
}

/** Where nav indices read from: nav index k reads complete frame `firstFrame + k`. */
export interface NavMapping {
  mode: NavMode;
  navShape: number[];
  navSize: number;
  syncOffset: number;
  nativeSyncOffset: number;
  /** complete-frame index that nav index 0 reads (may be negative: blank frames first) */
  firstFrame: number;
  imageCount: number;
}

/**
 * The nav mapping for a synchronised recording: `syncOffset` defaults to the native one and must
 * lie in (-imageCount, imageCount).
 */
export function mapNav(sync: SyncResult, mode: NavMode, navShape: readonly number[], syncOffset?: number): NavMapping {
  const imageCount = sync.imageCount;
  const native = sync.firstFlaggedFrame;
  const offset = syncOffset ?? native;
  if (!Number.isInteger(offset) || !(offset > -imageCount && offset < imageCount)) {
    throw new TesseraError(
      'TESSERA_ERR_BAD_ARGUMENT',
      'syncOffset',
      `${offset} is outside (${-imageCount}, ${imageCount}), that is (-image_count, image_count)`,
    );
  }
  if (navShape.length === 0 || navShape.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'scanShape', `[${navShape.join(', ')}] is not a shape of positive integers`);
  }
  const navSize = navShape.reduce((a, b) => a * b, 1);
  // convention 1: a scan's position 0 is the frame before the first flagged one
  const skip = mode === 'scan' ? -1 : 0;
  return {
    mode,
    navShape: [...navShape],
    navSize,
    syncOffset: offset,
    nativeSyncOffset: native,
    firstFrame: offset + skip,
    imageCount,
  };
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/**
 * What the mapping does at the ends, LiberTEM's four figures. They are computed from where nav
 * index 0 really lands; for a scan that is one frame earlier than LiberTEM's own report (which
 * says `sync_offset` frames are skipped while its reader skips `sync_offset - 1`).
 */
export function syncOffsetInfo(m: NavMapping): SyncOffsetInfo {
  const start = m.firstFrame;
  const end = m.firstFrame + m.navSize; // exclusive
  return {
    frames_skipped_start: clamp(start, 0, m.imageCount),
    frames_ignored_end: clamp(m.imageCount - end, 0, m.imageCount),
    frames_inserted_start: clamp(-start, 0, m.navSize),
    frames_inserted_end: clamp(end - m.imageCount, 0, m.navSize),
  };
}
