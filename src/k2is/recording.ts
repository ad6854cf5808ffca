/**
 * A recorded K2 IS dataset (8 sector .bin files + .gtg) opened for reading, synchronised as the
 * spec says (A.6, conventions 1-5; see file-sync.ts), with frames addressed by nav index.
 *
 *   const rec = K2ISRecording.open('Capture52_.gtg');          // or a .bin, or the directory
 *   rec.navShape, rec.sigShape, rec.getSyncOffsetInfo()
 *   rec.readFrame(k)                                           // 1860 x 2048 uint16
 *   for (const t of rec.tiles({ depth: 4, rows: 930 })) ...    // sector tiles, receiver layout
 *   rec.close()
 *
 * Reads are positioned (one sector frame, 715 KB, per read: measured fastest from the page
 * cache), straight into WebAssembly memory, and decoded there by the fast decoder (decode12.ts)
 * in one call per frame and row band, while the frame is still in cache. Every block read is checked: a good header, one frame_id per frame,
 * block_counts as convention 2 says, each of the 32 positions once; blocks are placed by their
 * header coordinates. All state lives in the instance, so recordings open fine in worker threads.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import {
  BLOCK_SIZE,
  BLOCKS_PER_SECTOR_FRAME,
  FRAME_HEIGHT,
  FRAME_PIXELS,
  FRAME_WIDTH,
  HEADER_SIZE,
  NUM_SECTORS,
  PAYLOAD_SIZE,
  SECTOR_FRAME_BYTES,
  SECTOR_FRAME_PAYLOAD_BYTES,
  SECTOR_HEIGHT,
  SECTOR_PIXELS,
  SECTOR_WIDTH,
} from './constants.js';
import { blockIndex } from './geometry.js';
import { checkBlock, readBlockCount, readFrameId, readPixelXStart, readPixelYStart } from './header.js';
import { Uint12Decoder } from './decode12.js';
import { discoverSectorFiles, type SectorFileSet } from './sector-files.js';
import {
  mapNav,
  readGtgScanShape,
  synchroniseSectors,
  syncOffsetInfo,
  type NavMapping,
  type NavMode,
  type SectorFileHandle,
  type SyncOffsetInfo,
  type SyncResult,
} from './file-sync.js';
import { TesseraError, isTesseraError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';

export interface RecordingOptions {
  /** nav shape; overrides the .gtg's, and is required when the .gtg is missing or unreadable */
  scanShape?: readonly number[];
  /** LiberTEM's sync_offset: nav index k reads complete frame k + syncOffset - 1 (scan) or
   *  k + syncOffset (time series); default: the native one */
  syncOffset?: number;
  /** a damaged block: fail (default), or read it as zeros and count it in `damage` */
  onBadBlock?: 'error' | 'zero';
  logger?: Logger;
}

/** A stack of partial frames of one sector, the receiver's (and the UDF engine's) tile layout. */
export interface SectorTile {
  /** C order depth x rows x 256 */
  data: Uint16Array;
  sector: number;
  /** nav index of the first frame */
  navStart: number;
  depth: number;
  /** [row0, 256 * sector] in the full frame */
  sigOrigin: [number, number];
  /** [rows, 256] */
  sigShape: [number, number];
}

export interface TileOptions {
  /** nav range [start, stop); default the whole nav range */
  start?: number;
  stop?: number;
  /** frames per tile (default 4) */
  depth?: number;
  /** sector rows per tile, 1..1860 (default 1860) */
  rows?: number;
  /** sectors to read, in this order (default 0..7) */
  sectors?: readonly number[];
  /** true (default): `data` is a view that the next tile overwrites; false: a fresh copy per tile */
  reuseBuffers?: boolean;
}

/** Blocks read as zeros because they were damaged (onBadBlock: 'zero'). */
export interface DamageReport {
  badBlocks: number;
  /** the first few, for the log */
  examples: string[];
}

let defaultLogger: Logger | undefined;
const logger = (): Logger => (defaultLogger ??= createLogger('k2is-recording'));

/**
 * Frames per positioned read in the tile iterator: small enough that what was just read is still
 * in cache when it is decoded (measured from the page cache: one frame, 715 KB, per read beats
 * 2 frames by ~10% and 4 or 16 frames by 1.2x to 2.5x).
 */
const READ_GROUP_FRAMES = 1;

/** Frame kinds after checking the blocks of one sector frame. */
const FRAME_BLANK = 0; // outside the files: zeros
const FRAME_DIRECT = 1; // 32 good blocks in send order: decode in place
const FRAME_REORDERED = 2; // out of order or damaged: payloads gathered into send order first

/** Wasm memory for reading up to `frames` sector frames at once and decoding `outPixels` pixels. */
class SectorReadBuffers {
  readonly dec: Uint12Decoder;
  readonly raw: number;
  readonly gathered: number;
  readonly out: number;
  readonly kinds: Uint8Array;
  /** per frame and send-order slot: byte offset (in memory) of the block's payload, or -1 */
  readonly slots: Int32Array;

  constructor(
    readonly frames: number,
    readonly outPixels: number,
  ) {
    const need = frames * SECTOR_FRAME_BYTES + SECTOR_FRAME_PAYLOAD_BYTES + outPixels * 2 + 1024;
    this.dec = Uint12Decoder.create({ initialBytes: need });
    // allocated once: the memory never grows afterwards, so views handed out stay attached
    this.raw = this.dec.alloc(frames * SECTOR_FRAME_BYTES);
    this.gathered = this.dec.alloc(SECTOR_FRAME_PAYLOAD_BYTES);
    this.out = this.dec.alloc(outPixels * 2);
    this.kinds = new Uint8Array(frames);
    this.slots = new Int32Array(frames * BLOCKS_PER_SECTOR_FRAME);
  }

  heap(): Uint8Array {
    return new Uint8Array(this.dec.memory.buffer);
  }

  outView(pixels: number, offset = 0): Uint16Array {
    return this.dec.u16(this.out + offset * 2, pixels);
  }
}

export class K2ISRecording {
  readonly sigShape: [number, number] = [FRAME_HEIGHT, FRAME_WIDTH];
  readonly damage: DamageReport = { badBlocks: 0, examples: [] };
  #closed = false;
  #single: SectorReadBuffers | undefined;
  readonly #log: Logger;
  readonly #onBadBlock: 'error' | 'zero';

  private constructor(
    readonly fileSet: SectorFileSet,
    private readonly handles: SectorFileHandle[],
    readonly sync: SyncResult,
    readonly mapping: NavMapping,
    options: RecordingOptions,
  ) {
    this.#log = options.logger ?? logger();
    this.#onBadBlock = options.onBadBlock ?? 'error';
  }

  /**
   * Open the recording that `path` (its .gtg, one of its .bin files, or its directory) belongs
   * to: find the files, synchronise them, and work out the nav shape and mapping.
   */
  static open(path: string, options: RecordingOptions = {}): K2ISRecording {
    const log = options.logger ?? logger();
    const fileSet = discoverSectorFiles(path);

    // The scan shape first: a missing or broken .gtg is cheaper to report than to sync for.
    let mode: NavMode = 'scan';
    let gtgShape: number[] | undefined;
    if (fileSet.gtgExists) {
      try {
        const gtg = readGtgScanShape(fileSet.gtgPath!);
        if (gtg.scanShape === undefined) mode = 'time-series';
        else gtgShape = gtg.scanShape;
      } catch (err) {
        if (options.scanShape === undefined || !isTesseraError(err, 'TESSERA_ERR_GTG')) throw err;
        log.warn({ gtg: fileSet.gtgPath, err: err.message }, 'unreadable .gtg: using the given scan shape');
      }
    } else if (options.scanShape === undefined) {
      throw new TesseraError(
        'TESSERA_ERR_NO_SCAN_SHAPE',
        `no .gtg file at ${fileSet.gtgPath ?? `the directory of ${path}`} to read it from, and none was given`,
      );
    }

    const handles: SectorFileHandle[] = [];
    try {
      for (const f of fileSet.files) {
        handles.push({ sector: f.sector, path: f.path, fd: openSync(f.path, 'r'), size: f.size, blocks: f.blocks });
      }
      const sync = synchroniseSectors(handles);
      for (const w of sync.warnings) log.warn({ recording: fileSet.pattern }, w);
      const navShape = options.scanShape ?? gtgShape ?? [sync.numFlaggedFrames];
      const mapping = mapNav(sync, mode, navShape, options.syncOffset);
      if (mapping.firstFrame < 0 && options.syncOffset === undefined) {
        log.warn({ recording: fileSet.pattern }, 'the first complete frame is already flagged: scan position 0 is a blank frame');
      }
      const rec = new K2ISRecording(fileSet, handles, sync, mapping, options);
      log.debug(
        { recording: fileSet.pattern, navShape, imageCount: sync.imageCount, syncOffset: mapping.syncOffset, mode },
        'opened K2 IS recording',
      );
      return rec;
    } catch (err) {
      for (const h of handles) closeSync(h.fd);
      throw err;
    }
  }

  get navShape(): number[] {
    return [...this.mapping.navShape];
  }
  /** number of nav positions (frames the recording presents) */
  get frameCount(): number {
    return this.mapping.navSize;
  }
  /** complete frames in the files */
  get imageCount(): number {
    return this.sync.imageCount;
  }
  get mode(): NavMode {
    return this.mapping.mode;
  }
  get syncOffset(): number {
    return this.mapping.syncOffset;
  }
  get nativeSyncOffset(): number {
    return this.mapping.nativeSyncOffset;
  }
  get files(): string[] {
    return this.handles.map((h) => h.path);
  }
  get gtgPath(): string | undefined {
    return this.fileSet.gtgExists ? this.fileSet.gtgPath : undefined;
  }

  getSyncOffsetInfo(): SyncOffsetInfo {
    return syncOffsetInfo(this.mapping);
  }

  /** The complete-frame index nav index `k` reads, or null for an inserted blank frame. */
  frameIndexOf(navIndex: number): number | null {
    this.#checkNav(navIndex, 1);
    const c = this.mapping.firstFrame + navIndex;
    return c >= 0 && c < this.sync.imageCount ? c : null;
  }

  /** The 32 block payloads of one sector frame in send order (zeros for a blank frame). */
  readPackedSectorFrame(navIndex: number, sector: number, out?: Uint8Array): Uint8Array {
    this.#checkNav(navIndex, 1);
    this.#checkSector(sector);
    const dst = out ?? new Uint8Array(SECTOR_FRAME_PAYLOAD_BYTES);
    if (dst.length < SECTOR_FRAME_PAYLOAD_BYTES) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'out', `${dst.length} bytes, need ${SECTOR_FRAME_PAYLOAD_BYTES}`);
    }
    const b = this.#singleBuffers();
    this.#load(b, sector, navIndex, 1);
    if (b.kinds[0] === FRAME_BLANK) {
      dst.fill(0, 0, SECTOR_FRAME_PAYLOAD_BYTES);
      return dst;
    }
    const heap = b.heap();
    for (let k = 0; k < BLOCKS_PER_SECTOR_FRAME; k++) {
      const at = b.slots[k]!;
      if (at < 0) dst.fill(0, k * PAYLOAD_SIZE, (k + 1) * PAYLOAD_SIZE);
      else dst.set(heap.subarray(at, at + PAYLOAD_SIZE), k * PAYLOAD_SIZE);
    }
    return dst;
  }

  /** One sector frame, decoded: 1860 x 256 uint16. */
  readSectorFrame(navIndex: number, sector: number, out?: Uint16Array): Uint16Array {
    this.#checkNav(navIndex, 1);
    this.#checkSector(sector);
    const dst = out ?? new Uint16Array(SECTOR_PIXELS);
    if (dst.length < SECTOR_PIXELS) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'out', `${dst.length} pixels, need ${SECTOR_PIXELS}`);
    const b = this.#singleBuffers();
    this.#load(b, sector, navIndex, 1);
    this.#decodeRows(b, 0, 0, SECTOR_HEIGHT);
    dst.set(b.outView(SECTOR_PIXELS));
    return dst;
  }

  /** One whole frame, decoded: 1860 x 2048 uint16, sector s in columns [256 s, 256 s + 256). */
  readFrame(navIndex: number, out?: Uint16Array): Uint16Array {
    this.#checkNav(navIndex, 1);
    const dst = out ?? new Uint16Array(FRAME_PIXELS);
    if (dst.length < FRAME_PIXELS) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'out', `${dst.length} pixels, need ${FRAME_PIXELS}`);
    const b = this.#singleBuffers();
    for (let s = 0; s < NUM_SECTORS; s++) {
      this.#load(b, s, navIndex, 1);
      this.#decodeRows(b, 0, 0, SECTOR_HEIGHT);
      const sec = b.outView(SECTOR_PIXELS);
      for (let r = 0; r < SECTOR_HEIGHT; r++) {
        dst.set(sec.subarray(r * SECTOR_WIDTH, (r + 1) * SECTOR_WIDTH), r * FRAME_WIDTH + s * SECTOR_WIDTH);
      }
    }
    return dst;
  }

  /**
   * Sector tiles over nav range [start, stop): for each chunk of `depth` frames, for each sector,
   * for each band of `rows` rows. Each frame is read once (two frames per positioned read) and
   * decoded into all its row bands while it is in cache.
   */
  *tiles(options: TileOptions = {}): Generator<SectorTile> {
    const start = options.start ?? 0;
    const stop = options.stop ?? this.mapping.navSize;
    const depth = options.depth ?? 4;
    const rows = options.rows ?? SECTOR_HEIGHT;
    const sectors = options.sectors ?? [0, 1, 2, 3, 4, 5, 6, 7];
    const reuse = options.reuseBuffers ?? true;
    if (!Number.isInteger(start) || !Number.isInteger(stop) || start < 0 || stop > this.mapping.navSize || start > stop) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'start/stop', `[${start}, ${stop}) is not within the nav range [0, ${this.mapping.navSize})`);
    }
    if (!Number.isInteger(depth) || depth < 1 || depth > 4096) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'depth', `${depth}`);
    if (!Number.isInteger(rows) || rows < 1 || rows > SECTOR_HEIGHT) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'rows', `${rows} is not within 1..${SECTOR_HEIGHT}`);
    }
    for (const s of sectors) this.#checkSector(s);
    const maxDepth = Math.min(depth, Math.max(1, stop - start));
    const group = Math.min(READ_GROUP_FRAMES, maxDepth);
    // out holds every row band of one chunk: band at row0 starts at pixel depth * row0 * 256
    const b = new SectorReadBuffers(group, maxDepth * SECTOR_HEIGHT * SECTOR_WIDTH);
    for (let k0 = start; k0 < stop; k0 += depth) {
      const d = Math.min(depth, stop - k0);
      for (const sector of sectors) {
        for (let g0 = 0; g0 < d; g0 += group) {
          const gd = Math.min(group, d - g0);
          this.#load(b, sector, k0 + g0, gd);
          for (let jj = 0; jj < gd; jj++) {
            const j = g0 + jj;
            for (let row0 = 0; row0 < SECTOR_HEIGHT; row0 += rows) {
              const r = Math.min(rows, SECTOR_HEIGHT - row0);
              this.#decodeRows(b, jj, row0, r, (d * row0 + j * r) * SECTOR_WIDTH);
            }
          }
        }
        for (let row0 = 0; row0 < SECTOR_HEIGHT; row0 += rows) {
          const r = Math.min(rows, SECTOR_HEIGHT - row0);
          const view = b.outView(d * r * SECTOR_WIDTH, d * row0 * SECTOR_WIDTH);
          yield {
            data: reuse ? view : view.slice(),
            sector,
            navStart: k0,
            depth: d,
            sigOrigin: [row0, sector * SECTOR_WIDTH],
            sigShape: [r, SECTOR_WIDTH],
          };
        }
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const h of this.handles) closeSync(h.fd);
    this.#single = undefined;
  }

  #singleBuffers(): SectorReadBuffers {
    return (this.#single ??= new SectorReadBuffers(1, SECTOR_PIXELS));
  }

  #checkNav(navIndex: number, count: number): void {
    if (this.#closed) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'recording', 'it is closed');
    if (!Number.isInteger(navIndex) || navIndex < 0 || navIndex + count > this.mapping.navSize) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'navIndex', `${navIndex} is not within [0, ${this.mapping.navSize})`);
    }
  }

  #checkSector(sector: number): void {
    if (!Number.isInteger(sector) || sector < 0 || sector >= NUM_SECTORS) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sector', `${sector} is not within 0..${NUM_SECTORS - 1}`);
    }
  }

  /** Read nav frames [k0, k0 + d) of one sector into `b.raw` (one read for the run that exists) and check their blocks. */
  #load(b: SectorReadBuffers, sector: number, k0: number, d: number): void {
    if (this.#closed) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'recording', 'it is closed');
    const c0 = this.mapping.firstFrame + k0;
    const lo = Math.max(c0, 0);
    const hi = Math.min(c0 + d, this.sync.imageCount);
    for (let j = 0; j < d; j++) b.kinds[j] = FRAME_BLANK;
    if (lo >= hi) return;
    const h = this.handles[sector]!;
    const heap = b.heap();
    const dst = b.raw + (lo - c0) * SECTOR_FRAME_BYTES;
    const bytes = (hi - lo) * SECTOR_FRAME_BYTES;
    const position = (this.sync.firstBlock[sector]! + lo * BLOCKS_PER_SECTOR_FRAME) * BLOCK_SIZE;
    let done = 0;
    while (done < bytes) {
      const n = readSync(h.fd, heap, dst + done, bytes - done, position + done);
      if (n === 0) {
        throw new TesseraError('TESSERA_ERR_BAD_BLOCK', h.path, `file ends at byte ${position + done}, inside complete frame ${lo + Math.floor(done / SECTOR_FRAME_BYTES)}`);
      }
      done += n;
    }
    for (let c = lo; c < hi; c++) this.#checkFrame(b, heap, h, c, c - c0);
  }

  /** Check the 32 blocks of complete frame `c` (slot j of `b`) and record where each payload is. */
  #checkFrame(b: SectorReadBuffers, heap: Uint8Array, h: SectorFileHandle, c: number, j: number): void {
    const base = b.raw + j * SECTOR_FRAME_BYTES;
    const slots = b.slots.subarray(j * BLOCKS_PER_SECTOR_FRAME, (j + 1) * BLOCKS_PER_SECTOR_FRAME);
    slots.fill(-1);
    let inOrder = true;
    let bad = 0;
    let frameId: number | undefined;
    const firstCount = this.sync.firstBlockCount + c * BLOCKS_PER_SECTOR_FRAME;
    for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
      const o = base + i * BLOCK_SIZE;
      let why: string | null = checkBlock(heap, o, BLOCK_SIZE);
      let slot = -1;
      if (why === null) {
        const id = readFrameId(heap, o);
        const count = readBlockCount(heap, o);
        slot = blockIndex(readPixelXStart(heap, o), readPixelYStart(heap, o));
        if (frameId !== undefined && id !== frameId) why = `frame_id ${id}, the frame's earlier blocks have ${frameId}`;
        else if (count !== (firstCount + i) >>> 0) why = `block_count ${count}, expected ${(firstCount + i) >>> 0} (sectors out of step?)`;
        else if (slots[slot]! >= 0) why = `a second block for position x=${readPixelXStart(heap, o)} y=${readPixelYStart(heap, o)}`;
        else frameId = id;
      }
      if (why !== null) {
        bad++;
        this.#badBlock(h, c, i, why);
        inOrder = false;
        continue;
      }
      slots[slot] = o + HEADER_SIZE;
      if (slot !== i) inOrder = false;
    }
    b.kinds[j] = inOrder && bad === 0 ? FRAME_DIRECT : FRAME_REORDERED;
  }

  #badBlock(h: SectorFileHandle, c: number, i: number, why: string): void {
    const at = (this.sync.firstBlock[h.sector]! + c * BLOCKS_PER_SECTOR_FRAME + i) * BLOCK_SIZE;
    const msg = `sector ${h.sector}, complete frame ${c}, block ${i} at byte ${at}: ${why}`;
    if (this.#onBadBlock === 'error') throw new TesseraError('TESSERA_ERR_BAD_BLOCK', h.path, msg);
    this.damage.badBlocks++;
    if (this.damage.examples.length < 16) {
      this.damage.examples.push(`${h.path}: ${msg}`);
      this.#log.warn({ file: h.path }, `bad block read as zeros: ${msg}`);
    }
  }

  /** Decode rows [row0, row0 + rows) of loaded frame j into `b.out` at pixel offset `outPixel`. */
  #decodeRows(b: SectorReadBuffers, j: number, row0: number, rows: number, outPixel = 0): void {
    const dstPtr = b.out + outPixel * 2;
    const kind = b.kinds[j];
    if (kind === FRAME_BLANK) {
      b.dec.u16(dstPtr, rows * SECTOR_WIDTH).fill(0);
      return;
    }
    if (kind === FRAME_DIRECT) {
      // whole blocks as read from the file: payloads BLOCK_SIZE apart, starting past the first header
      b.dec.decodeSectorRows(b.raw + j * SECTOR_FRAME_BYTES + HEADER_SIZE, dstPtr, row0, rows, BLOCK_SIZE);
      return;
    }
    const heap = b.heap();
    for (let k = 0; k < BLOCKS_PER_SECTOR_FRAME; k++) {
      const at = b.slots[j * BLOCKS_PER_SECTOR_FRAME + k]!;
      const to = b.gathered + k * PAYLOAD_SIZE;
      if (at < 0) heap.fill(0, to, to + PAYLOAD_SIZE);
      else heap.copyWithin(to, at, at + PAYLOAD_SIZE);
    }
    b.dec.decodeSectorRows(b.gathered, dstPtr, row0, rows, PAYLOAD_SIZE);
  }
}
