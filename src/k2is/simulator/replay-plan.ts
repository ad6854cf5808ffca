/**
 * `RecordedStreamPlan`: which blocks of a recorded K2 IS dataset (8 sector .bin files, spec A.1)
 * go out together when the recording is replayed as the camera's UDP stream.
 *
 * Files are read as they are recorded: every whole block of every file is sent, once per pass,
 * byte for byte. Only the grouping into frames (what goes out together, for pacing) comes from
 * the offline synchronisation (file-sync.ts): replay frame v of sector s is the file's blocks
 * [first_s + 32 v, first_s + 32 v + 32), clipped to the file, first_s being the sector's first
 * complete frame. Negative v are the lead-in (blocks of earlier, incomplete frames, a different
 * number per sector, spec convention 5), v >= imageCount the tail (an incomplete last frame).
 * So frame k of every sector goes out together, with its leftovers in the frames around it, as
 * the camera sent them. A truncated block at the end of a file cannot be a datagram: it is
 * counted and skipped.
 *
 * Files that do not synchronise (no shutter flag, sectors that disagree, ...) are still
 * replayable: then frame v is simply blocks [32 v, 32 v + 32) of each file, from its start, and
 * the reason is kept in `syncProblem`.
 *
 * Looping: pass p >= 1 adds p x `spanBlocks` to every block_count and p x `spanFrames` to every
 * frame_id (mod 2^32), so the stream continues like a real camera's, whose counters never run
 * backwards between acquisitions: receivers see a new acquisition (the flag goes off and on
 * again), not a stream that jumped back.
 */
import { closeSync, openSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BLOCKS_PER_SECTOR_FRAME, NUM_SECTORS, SYNC_WORD } from '../constants.js';
import { discoverSectorFiles, type SectorFile } from '../sector-files.js';
import { readGtgScanShape, synchroniseSectors, type SectorFileHandle, type SyncResult } from '../file-sync.js';
import { TesseraError, isTesseraError } from '../../errors.js';

const U32 = 4294967296;
const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

export interface ReplayRange {
  /** first complete frame to send (complete-frame index, as file-sync numbers them) */
  start: number;
  /** one past the last; null = to the end */
  stop: number | null;
}

/** Where sector `sector`'s blocks of one replay frame are in its file. */
export interface SectorBlockRange {
  /** first file block index sent */
  firstBlock: number;
  /** whole blocks sent (0..32) */
  count: number;
  /** position within the 32-block frame of the first block sent (> 0 only for a clipped lead-in) */
  firstPosition: number;
}

export class RecordedStreamPlan {
  readonly files: SectorFile[];
  readonly gtgPath: string | undefined;
  /** [Size Y, Size X] from the .gtg, when there is a readable one */
  readonly scanShape: [number, number] | undefined;
  readonly sync: SyncResult | null;
  /** why the files could not be synchronised (they are then grouped from their first block) */
  readonly syncProblem: string | null;
  /** per sector: file block index of complete frame 0 (0 without sync) */
  readonly first: number[];
  /** replay frames [frameStart, frameStop) make up one pass */
  readonly frameStart: number;
  readonly frameStop: number;
  /** per sector: bytes of a truncated block at the end of the file, never sent */
  readonly truncatedBytes: number[];
  private readonly fds: number[] = [];

  private constructor(path: string, range: ReplayRange | null) {
    const set = discover(path);
    this.files = set.files;
    this.gtgPath = set.gtgExists ? set.gtgPath : undefined;
    let scanShape: [number, number] | undefined;
    if (this.gtgPath) {
      try {
        scanShape = readGtgScanShape(this.gtgPath).scanShape;
      } catch {
        // the .gtg only informs the log here; replay does not need it
      }
    }
    this.scanShape = scanShape;
    this.truncatedBytes = this.files.map((f) => f.trailingBytes);
    try {
      for (const f of this.files) this.fds.push(openSync(f.path, 'r'));
    } catch (err) {
      this.close();
      throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `cannot open ${(err as NodeJS.ErrnoException).path ?? 'a sector file'}: ${(err as Error).message}`);
    }

    let sync: SyncResult | null = null;
    let syncProblem: string | null = null;
    try {
      const handles: SectorFileHandle[] = this.files.map((f, s) => ({ sector: s, path: f.path, fd: this.fds[s]!, size: f.size, blocks: f.blocks }));
      sync = synchroniseSectors(handles);
    } catch (err) {
      if (!isTesseraError(err)) {
        this.close();
        throw err;
      }
      syncProblem = err.message;
    }
    this.sync = sync;
    this.syncProblem = syncProblem;
    this.first = sync ? [...sync.firstBlock] : this.files.map(() => 0);

    const leadFrames = Math.max(...this.files.map((_, s) => ceilDiv(this.first[s]!, BLOCKS_PER_SECTOR_FRAME)));
    const endFrames = Math.max(...this.files.map((f, s) => ceilDiv(f.blocks - this.first[s]!, BLOCKS_PER_SECTOR_FRAME)));
    const complete = sync ? sync.imageCount : endFrames;
    if (range) {
      const stop = range.stop ?? complete;
      if (!Number.isInteger(range.start) || range.start < 0 || !Number.isInteger(stop) || stop > complete || range.start >= stop) {
        this.close();
        throw new TesseraError(
          'TESSERA_ERR_BAD_ARGUMENT',
          '--frames',
          `${range.start}:${range.stop ?? ''} is not a non-empty range within the recording's ${complete} ${sync ? 'complete ' : ''}frames (0:${complete})`,
        );
      }
      this.frameStart = range.start;
      this.frameStop = stop;
    } else {
      this.frameStart = -leadFrames;
      this.frameStop = endFrames;
    }
  }

  /** Open the recording at `path` (its directory, its .gtg or one of its .bin files). */
  static open(path: string, range: ReplayRange | null = null): RecordedStreamPlan {
    return new RecordedStreamPlan(path, range);
  }

  /** replay frames per pass */
  get framesPerPass(): number {
    return this.frameStop - this.frameStart;
  }

  /** block_count added per pass when looping: the pass's length, whole frames */
  get spanBlocks(): number {
    return (this.framesPerPass * BLOCKS_PER_SECTOR_FRAME) % U32;
  }

  /** frame_id added per pass when looping */
  get spanFrames(): number {
    return this.framesPerPass % U32;
  }

  /** complete frames in the recording (whole 32-block groups from the start, without sync) */
  get completeFrames(): number {
    return this.sync ? this.sync.imageCount : Math.max(...this.files.map((f) => Math.floor(f.blocks / BLOCKS_PER_SECTOR_FRAME)));
  }

  /** whole blocks sent per pass, per sector */
  blocksPerPass(sector: number): number {
    let n = 0;
    for (let v = this.frameStart; v < this.frameStop; v++) n += this.blocksOf(v, sector).count;
    return n;
  }

  /** The blocks of replay frame `v` in sector `sector`'s file. */
  blocksOf(v: number, sector: number): SectorBlockRange {
    const f = this.files[sector]!;
    const nominal = this.first[sector]! + v * BLOCKS_PER_SECTOR_FRAME;
    const lo = Math.max(0, nominal);
    const hi = Math.min(f.blocks, nominal + BLOCKS_PER_SECTOR_FRAME);
    return { firstBlock: lo, count: Math.max(0, hi - lo), firstPosition: lo - nominal };
  }

  /** The file descriptor of sector `sector`'s file, for positioned reads. */
  fd(sector: number): number {
    const fd = this.fds[sector];
    if (fd === undefined) throw new TesseraError('TESSERA_ERR_SECTOR_FILES', 'the recording is closed');
    return fd;
  }

  close(): void {
    for (const fd of this.fds.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
  }
}

/**
 * Shift the counters of a block for loop pass `pass`: block_count + pass x spanBlocks,
 * frame_id + pass x spanFrames (mod 2^32). Only blocks with the sync word: anything else is
 * not a camera header and stays as recorded.
 */
export function shiftBlockCounters(block: Uint8Array, offset: number, blockDelta: number, frameDelta: number): void {
  const v = new DataView(block.buffer, block.byteOffset + offset, 28);
  if (v.getUint32(0) !== SYNC_WORD) return;
  v.setUint32(16, (v.getUint32(16) + blockDelta) % U32);
  v.setUint32(24, (v.getUint32(24) + frameDelta) % U32);
}

/** The sector files, with clearer errors for the usual mistakes. */
function discover(path: string) {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `${path} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${(err as Error).message})`}`);
  }
  if (st.isDirectory()) {
    try {
      readdirSync(path);
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `cannot list directory ${path}: ${(err as Error).message}`);
    }
  }
  try {
    return discoverSectorFiles(path);
  } catch (err) {
    if (isTesseraError(err) && err.code === 'TESSERA_ERR_SECTOR_FILES' && st.isDirectory()) {
      const missing = missingSectorFiles(path);
      if (missing.length > 0) throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `${err.message.replace(/^sector files: /, '')}; missing: ${missing.join(', ')}`);
    }
    throw err;
  }
}

/** When the .bin files are named <P>1 .. <P>8 (the camera's and the simulator's way), the absent ones. */
function missingSectorFiles(dir: string): string[] {
  const byPrefix = new Map<string, Set<number>>();
  for (const n of readdirSync(dir)) {
    const m = /^(.*?)(\d+)\.bin$/i.exec(n);
    if (!m) continue;
    const set = byPrefix.get(m[1]!) ?? new Set<number>();
    set.add(Number(m[2]));
    byPrefix.set(m[1]!, set);
  }
  if (byPrefix.size !== 1) return [];
  const [prefix, numbers] = [...byPrefix.entries()][0]!;
  if ([...numbers].some((k) => k < 1 || k > NUM_SECTORS)) return [];
  const out: string[] = [];
  for (let k = 1; k <= NUM_SECTORS; k++) if (!numbers.has(k)) out.push(basename(join(dir, `${prefix}${k}.bin`)));
  return out;
}

