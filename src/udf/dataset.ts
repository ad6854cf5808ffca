/**
 * Datasets: what the runner reads tiles from. A dataset knows its nav and sig shape, its native
 * dtype and its sectors (column slices read independently, the K2 IS's 8 x 256 columns), yields
 * tiles for a nav range and signal slice, and describes itself as plain data so that a worker
 * thread can open it on its own (no tile data crosses threads: in-memory data is shared through
 * a SharedArrayBuffer, files are opened again).
 */
import { TesseraError } from '../errors.js';
import { dtypeOf, isTypedArray, type DType, type TypedArray } from './dtype.js';
import { shapeSize } from './ndarray.js';
import type { SigSlice, Tile, TileShape } from './partition.js';

export interface TileRequest {
  navStart: number;
  navEnd: number;
  sig: SigSlice;
  tileShape: TileShape;
  /** frames to read (flat 0/1 per scan position); a dataset may skip the others */
  roi?: Uint8Array | null;
}

export interface DataSetDescriptor {
  type: string;
  [key: string]: unknown;
}

export interface DataSet {
  readonly navShape: readonly number[];
  readonly sigShape: readonly [number, number];
  readonly dtype: DType;
  /** column slices of the detector read independently (K2 IS: 8); the default sector split */
  readonly sectors: number;
  /**
   * Tiles covering frames [navStart, navEnd) x `sig`, each the full width of `sig`. A tile's
   * memory may be reused for the next tile: consume it before asking for the next.
   */
  tiles(req: TileRequest): Iterable<Tile> | AsyncIterable<Tile>;
  /** plain data from which openDataSet() re-creates this dataset in another thread */
  descriptor(): DataSetDescriptor;
  /** adjust a proposed tile shape to what the dataset reads well (e.g. whole sector frames) */
  adjustTileShape?(proposed: TileShape, sig: SigSlice): TileShape;
  close?(): void | Promise<void>;
}

type Opener = (d: DataSetDescriptor) => DataSet | Promise<DataSet>;
const openers = new Map<string, Opener>();

export function registerDataSetType(type: string, open: Opener): void {
  openers.set(type, open);
}

export async function openDataSet(d: DataSetDescriptor): Promise<DataSet> {
  const open = openers.get(d?.type);
  if (!open) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dataset', `unknown dataset type ${JSON.stringify(d?.type)} (known: ${[...openers.keys()].join(', ')})`);
  return open(d);
}

export function checkShapes(navShape: readonly number[], sigShape: readonly number[]): void {
  if (!Array.isArray(navShape) || navShape.length < 1 || navShape.length > 3 || !navShape.every((d) => Number.isInteger(d) && d >= 1)) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'navShape', `must have 1 to 3 positive integer dimensions, got ${JSON.stringify(navShape)}`);
  }
  if (!Array.isArray(sigShape) || sigShape.length !== 2 || !sigShape.every((d) => Number.isInteger(d) && d >= 1)) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sigShape', `must be [h, w] with positive integers, got ${JSON.stringify(sigShape)}`);
  }
}

export interface MemoryDataSetOptions {
  /** frames in C order: nav x h x w */
  data: TypedArray;
  navShape: readonly number[];
  sigShape: readonly [number, number];
  /** sector count for the default split; default 8 when the width allows it, else 1 */
  sectors?: number;
}

/** A dataset held in memory: for tests, map(), and data that was read some other way. */
export class MemoryDataSet implements DataSet {
  readonly data: TypedArray;
  readonly navShape: readonly number[];
  readonly sigShape: readonly [number, number];
  readonly dtype: DType;
  readonly sectors: number;
  private shared: TypedArray | null;

  constructor(opts: MemoryDataSetOptions) {
    checkShapes(opts.navShape, opts.sigShape);
    if (!isTypedArray(opts.data)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'data', 'must be a typed array');
    const n = shapeSize(opts.navShape) * opts.sigShape[0] * opts.sigShape[1];
    if (opts.data.length !== n) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'data', `has ${opts.data.length} values, nav ${JSON.stringify(opts.navShape)} x sig ${JSON.stringify(opts.sigShape)} needs ${n}`);
    }
    this.data = opts.data;
    this.navShape = [...opts.navShape];
    this.sigShape = [opts.sigShape[0], opts.sigShape[1]];
    this.dtype = dtypeOf(opts.data);
    const w = opts.sigShape[1];
    this.sectors = opts.sectors ?? (w % 8 === 0 ? 8 : 1);
    if (!Number.isInteger(this.sectors) || this.sectors < 1 || w % this.sectors !== 0) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sectors', `${this.sectors} sectors do not divide a frame ${w} wide`);
    }
    this.shared = opts.data.buffer instanceof SharedArrayBuffer ? opts.data : null;
  }

  *tiles(req: TileRequest): Iterable<Tile> {
    const { navStart, navEnd, sig, tileShape, roi } = req;
    const [h, w] = this.sigShape;
    const [y0, x0] = sig.origin;
    const [sh, sw] = sig.shape;
    const frameSize = h * w;
    const Ctor = this.data.constructor as new (n: number) => TypedArray;
    let scratch: TypedArray | null = null;
    for (let f0 = navStart; f0 < navEnd; f0 += tileShape.depth) {
      const depth = Math.min(tileShape.depth, navEnd - f0);
      if (roi && !roi.subarray(f0, f0 + depth).includes(1)) continue;
      for (let r0 = 0; r0 < sh; r0 += tileShape.rows) {
        const rows = Math.min(tileShape.rows, sh - r0);
        const origin: [number, number] = [y0 + r0, x0];
        if (sw === w && rows === h) {
          // whole frames are contiguous: hand out the memory itself
          yield { data: this.data.subarray(f0 * frameSize, (f0 + depth) * frameSize), navStart: f0, depth, sigOrigin: origin, sigShape: [rows, sw] };
          continue;
        }
        const len = depth * rows * sw;
        if (scratch === null || scratch.length < len) scratch = new Ctor(len);
        const out = scratch.subarray(0, len);
        for (let f = 0; f < depth; f++) {
          for (let r = 0; r < rows; r++) {
            const src = (f0 + f) * frameSize + (y0 + r0 + r) * w + x0;
            out.set(this.data.subarray(src, src + sw), (f * rows + r) * sw);
          }
        }
        yield { data: out, navStart: f0, depth, sigOrigin: origin, sigShape: [rows, sw] };
      }
    }
  }

  /** Shares the data with workers through a SharedArrayBuffer (copied there once if needed). */
  descriptor(): DataSetDescriptor {
    if (this.shared === null) {
      const Ctor = this.data.constructor as new (b: SharedArrayBuffer) => TypedArray;
      const s = new Ctor(new SharedArrayBuffer(this.data.byteLength));
      s.set(this.data);
      this.shared = s;
    }
    return { type: 'memory', data: this.shared, navShape: [...this.navShape], sigShape: [...this.sigShape], sectors: this.sectors };
  }
}

registerDataSetType(
  'memory',
  (d) =>
    new MemoryDataSet({
      data: d.data as TypedArray,
      navShape: d.navShape as number[],
      sigShape: d.sigShape as [number, number],
      sectors: d.sectors as number,
    }),
);
