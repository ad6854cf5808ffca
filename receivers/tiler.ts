/**
 * `SectorTiler`: decodes the frames of an acquisition, straight from their packed slots, into
 * tiles of `depth` frames x `rows` sector rows x 256 columns (tile.ts), and hands each tile to
 * the sinks as a zero-copy view of the decoder's memory.
 *
 * Each frame is decoded on arrival, band by band (one `decodeSectorRows` call per band), into
 * its place in the tile buffers; its slot is released at once. When `depth` frames are in, the
 * 1860 / rows tiles go out, top band first. Tiles start at scan positions that are multiples
 * of `depth` (so every sector cuts the scan alike) and never straddle a scan repetition; a
 * shorter tile ends an acquisition or precedes a gap.
 *
 * Tile shape: depth 1 x 1860 rows (one whole sector frame, 952 KB) is the default.
 * bench/receiver.bench.ts: every shape of about 1 MB with few bands assembles and decodes at the
 * same rate (about 11 GB/s of datagrams, 38x one sector at 400 fps), while many thin bands
 * over many frames (20 x 93) fall to 0.7x of that, their decode writes being scattered over
 * depth x 952 KB of tile memory. Among the equals, 1 x 1860 takes one kernel call per frame,
 * hands a frame on as soon as it is complete (no waiting for `depth` frames: lowest latency),
 * fits the 1 MiB L2 cache of this machine's cores, and gives UDFs whole sector frames.
 */
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../src/k2is/constants.js';
import type { Uint12Decoder } from '../src/k2is/decode12.js';
import { TesseraError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import type { FrameSlotPool } from './frame-slots.js';
import type { ScanFrame } from './shutter-sync.js';
import { ReceiverCounters } from './stats.js';
import type { SectorTile, TileFrameInfo, TileSink } from './tile.js';

export interface TileShape {
  depth: number;
  rows: number;
}

export interface SectorTilerOptions {
  sector: number;
  shape: TileShape;
  decoder: Uint12Decoder;
  pool: FrameSlotPool;
  sinks: TileSink[];
  counters?: ReceiverCounters;
  log?: Logger;
}

interface Group {
  acquisition: number;
  epoch: number;
  start: number; // scan index of the first frame
  index: number; // frames-since-start index of the first frame
  capacity: number;
  count: number;
  damage: Uint32Array;
  frames: TileFrameInfo[];
}

export class SectorTiler {
  readonly depth: number;
  readonly rows: number;
  readonly bands: number;
  private readonly bandPtrs: number[] = [];
  private readonly bandPixels: number;
  private group: Group | null = null;
  private readonly counters: ReceiverCounters;
  private sinkErrors = 0;

  constructor(private readonly o: SectorTilerOptions) {
    const { depth, rows } = o.shape;
    if (!Number.isInteger(depth) || depth < 1) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile.depth', `${depth}`);
    if (!Number.isInteger(rows) || rows < 1 || SECTOR_HEIGHT % rows !== 0) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile.rows', `${rows} does not divide ${SECTOR_HEIGHT}`);
    }
    this.depth = depth;
    this.rows = rows;
    this.bands = SECTOR_HEIGHT / rows;
    this.bandPixels = rows * SECTOR_WIDTH;
    for (let b = 0; b < this.bands; b++) this.bandPtrs.push(o.decoder.alloc(depth * this.bandPixels * 2));
    this.counters = o.counters ?? new ReceiverCounters();
  }

  /** Bytes of decoder memory a tiler of this shape allocates. */
  static bytesNeeded(shape: TileShape): number {
    return shape.depth * SECTOR_HEIGHT * SECTOR_WIDTH * 2 + (SECTOR_HEIGHT / shape.rows) * 16;
  }

  push(sf: ScanFrame): void {
    let g = this.group;
    if (g && (g.acquisition !== sf.acquisition || g.epoch !== sf.epoch || sf.scanIndex !== g.start + g.count)) {
      this.flush();
      g = null;
    }
    if (!g) {
      let capacity = this.depth - (sf.scanIndex % this.depth);
      if (sf.positions !== null) capacity = Math.min(capacity, sf.positions - sf.scanIndex);
      g = {
        acquisition: sf.acquisition,
        epoch: sf.epoch,
        start: sf.scanIndex,
        index: sf.index,
        capacity,
        count: 0,
        damage: new Uint32Array(capacity),
        frames: [],
      };
      this.group = g;
    }
    const j = g.count;
    const f = sf.frame;
    const dec = this.o.decoder;
    for (let b = 0; b < this.bands; b++) {
      const dst = this.bandPtrs[b]! + j * this.bandPixels * 2;
      if (f.slot >= 0) dec.decodeSectorRows(this.o.pool.ptrs[f.slot]!, dst, b * this.rows, this.rows);
      else dec.u16(dst, this.bandPixels).fill(0);
    }
    this.o.pool.release(f.slot);
    g.damage[j] = f.damage;
    g.frames.push({ index: sf.index, frameKey: f.key, frameId: f.frameId });
    g.count++;
    if (g.count === g.capacity) this.flush();
  }

  /** Emit the tiles of the frames decoded so far (end of acquisition, gap, shutdown). */
  flush(): void {
    const g = this.group;
    this.group = null;
    if (!g || g.count === 0) return;
    const damage = g.count === g.damage.length ? g.damage : g.damage.slice(0, g.count);
    for (let b = 0; b < this.bands; b++) {
      const tile: SectorTile = {
        data: this.o.decoder.u16(this.bandPtrs[b]!, g.count * this.bandPixels),
        sector: this.o.sector,
        acquisition: g.acquisition,
        epoch: g.epoch,
        scanIndex: g.start,
        depth: g.count,
        rows: this.rows,
        sigOrigin: [b * this.rows, SECTOR_WIDTH * this.o.sector],
        sigShape: [this.rows, SECTOR_WIDTH],
        damage,
        frames: g.frames,
      };
      this.counters.tiles++;
      for (const sink of this.o.sinks) {
        try {
          sink.onTile(tile);
        } catch (err) {
          if (this.sinkErrors++ < 10) this.o.log?.error({ err, scanIndex: g.start }, 'tile sink failed');
        }
      }
    }
  }
}
