/**
 * `WholeFrameAssembler`: gathers the sector slices of each selected frame (from the 8
 * receivers, in any order, as bands of rows) into one 1860 x 2048 uint16 frame.
 *
 * A frame is complete when every row of every sector arrived. It is completed anyway, damage
 * marked, when `frameTimeoutMs` passed since its first slice, or when more than `maxFrames`
 * frames are open (the oldest goes): rows that never came are zeros and their sector's damage
 * is 0xffffffff (the sector did not arrive whole). Memory is bounded by `maxFrames` frames.
 * Slices for frames already handed on, duplicates and malformed ones are counted and dropped.
 *
 * Frames sent to a worker are never reused: ZeroMQ may keep a reference to the bytes after
 * send() resolves (zero-copy), so reusing one could change a frame under way. Only frames that
 * were never sent (skipped) come back through `allocate`.
 */
import { FRAME_HEIGHT, SECTOR_WIDTH } from '../k2is/constants.js';

export interface AssembledFrame {
  acquisition: string;
  round: number | null;
  index: number;
  /** 1860 x 2048 uint16, row-major */
  data: Uint16Array;
  /** per sector: missing blocks (0 = complete, 0xffffffff = the sector's rows did not all arrive) */
  damage: number[];
  complete: boolean;
  /** ms from the first slice to completion */
  waitedMs: number;
}

export interface SliceInput {
  acquisition: string;
  round: number | null;
  index: number;
  sector: number;
  row0: number;
  rows: number;
  damage: number;
  /** rows x 256 uint16 */
  pixels: Uint16Array;
}

export interface AssemblerCounters {
  slices: number;
  framesComplete: number;
  framesIncomplete: number;
  /** incomplete frames handed on because too many were open */
  framesEvicted: number;
  dropped: Record<string, number>;
}

interface OpenFrame {
  key: string;
  acquisition: string;
  round: number | null;
  index: number;
  data: Uint16Array;
  rowsIn: Uint8Array; // sectors x height
  rowCount: number[];
  damage: number[];
  first: number;
}

export interface WholeFrameAssemblerOptions {
  sectors?: number;
  height?: number;
  sectorWidth?: number;
  frameTimeoutMs: number;
  maxFrames: number;
  onFrame: (f: AssembledFrame) => void;
  /** a frame buffer to reuse (any content), or null for a new one */
  allocate?: () => Uint16Array | null;
  now?: () => number;
}

export class WholeFrameAssembler {
  readonly counters: AssemblerCounters = { slices: 0, framesComplete: 0, framesIncomplete: 0, framesEvicted: 0, dropped: {} };
  private readonly open = new Map<string, OpenFrame>();
  /** recently handed-on frames: late slices for them are dropped, not reopened */
  private readonly done = new Set<string>();
  private readonly doneOrder: string[] = [];
  private readonly sectors: number;
  private readonly height: number;
  private readonly sw: number;
  private readonly width: number;
  private readonly now: () => number;

  constructor(private readonly o: WholeFrameAssemblerOptions) {
    this.sectors = o.sectors ?? 8;
    this.height = o.height ?? FRAME_HEIGHT;
    this.sw = o.sectorWidth ?? SECTOR_WIDTH;
    this.width = this.sw * this.sectors;
    this.now = o.now ?? (() => performance.now());
  }

  get openFrames(): number {
    return this.open.size;
  }

  private drop(reason: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
  }

  add(s: SliceInput): void {
    this.counters.slices++;
    if (s.sector < 0 || s.sector >= this.sectors) return this.drop('sector');
    if (s.row0 < 0 || s.rows < 1 || s.row0 + s.rows > this.height || s.pixels.length !== s.rows * this.sw) return this.drop('shape');
    const key = `${s.acquisition}/${s.round}/${s.index}`;
    if (this.done.has(key)) return this.drop('late');
    let f = this.open.get(key);
    if (!f) {
      while (this.open.size >= this.o.maxFrames) {
        const oldest = this.open.values().next().value as OpenFrame;
        this.counters.framesEvicted++;
        this.emit(oldest);
      }
      f = {
        key,
        acquisition: s.acquisition,
        round: s.round,
        index: s.index,
        data: this.o.allocate?.() ?? new Uint16Array(this.height * this.width),
        rowsIn: new Uint8Array(this.sectors * this.height),
        rowCount: new Array<number>(this.sectors).fill(0),
        damage: new Array<number>(this.sectors).fill(0),
        first: this.now(),
      };
      this.open.set(key, f);
    }
    const rowsIn = f.rowsIn.subarray(s.sector * this.height, (s.sector + 1) * this.height);
    for (let r = s.row0; r < s.row0 + s.rows; r++) if (rowsIn[r]) return this.drop('duplicate');
    const x0 = s.sector * this.sw;
    for (let r = 0; r < s.rows; r++) f.data.set(s.pixels.subarray(r * this.sw, (r + 1) * this.sw), (s.row0 + r) * this.width + x0);
    rowsIn.fill(1, s.row0, s.row0 + s.rows);
    f.rowCount[s.sector]! += s.rows;
    f.damage[s.sector] = (f.damage[s.sector]! | s.damage) >>> 0;
    if (f.rowCount.every((n) => n === this.height)) this.emit(f);
  }

  /** Complete frames that waited longer than frameTimeoutMs. */
  tick(): void {
    const t = this.now();
    for (const f of [...this.open.values()]) if (t - f.first >= this.o.frameTimeoutMs) this.emit(f);
  }

  /** Complete every open frame now. */
  flush(): void {
    for (const f of [...this.open.values()]) this.emit(f);
  }

  private emit(f: OpenFrame): void {
    this.open.delete(f.key);
    this.done.add(f.key);
    this.doneOrder.push(f.key);
    if (this.doneOrder.length > 4096) this.done.delete(this.doneOrder.shift()!);
    let complete = true;
    for (let s = 0; s < this.sectors; s++) {
      if (f.rowCount[s] === this.height) continue;
      complete = false;
      // the rows that never came are zeros (the buffer may be a reused one)
      const rowsIn = f.rowsIn.subarray(s * this.height, (s + 1) * this.height);
      for (let r = 0; r < this.height; r++) if (!rowsIn[r]) f.data.fill(0, r * this.width + s * this.sw, r * this.width + (s + 1) * this.sw);
      f.damage[s] = 0xffffffff;
    }
    if (complete) this.counters.framesComplete++;
    else this.counters.framesIncomplete++;
    this.o.onFrame({ acquisition: f.acquisition, round: f.round, index: f.index, data: f.data, damage: f.damage, complete, waitedMs: this.now() - f.first });
  }
}
