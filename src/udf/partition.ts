/**
 * Partitions and tiles: the units of work. A partition is a contiguous range of frames (raw flat
 * nav indices) times a signal slice (a rectangle of the frame: for the K2 IS one sector's 256
 * columns, or the whole frame). A tile is a stack of partial frames inside one partition; it
 * covers the full width of its partition's slice, so that its rows are one contiguous run of a
 * partition-sized `sig` buffer.
 */
import { TesseraError } from '../errors.js';
import type { DType, TypedArray } from './dtype.js';
import { itemSize } from './dtype.js';
import type { NavSelection } from './roi.js';

/** A rectangle of the frame: origin [y, x] and shape [h, w]. */
export interface SigSlice {
  origin: [number, number];
  shape: [number, number];
}

/** Frames [navStart, navEnd) (raw flat indices) x one signal slice. */
export interface PartitionSlice {
  navStart: number;
  navEnd: number;
  sig: SigSlice;
}

/** A stack of `depth` partial frames, C order depth x h x w, starting at raw frame `navStart`. */
export interface Tile {
  data: TypedArray;
  navStart: number;
  depth: number;
  sigOrigin: [number, number];
  sigShape: [number, number];
}

/** How a partition is cut into tiles: `depth` frames x `rows` rows of the slice. */
export interface TileShape {
  depth: number;
  rows: number;
}

/** LiberTEM's tile size: about 1 MiB, so that a tile stays in a core's share of L3. */
export const DEFAULT_TILE_BYTES = 1 << 20;
/** LiberTEM's default tile depth (TILE_DEPTH_DEFAULT) */
export const DEFAULT_TILE_DEPTH = 32;

export function wholeFrame(sigShape: readonly [number, number]): SigSlice {
  return { origin: [0, 0], shape: [sigShape[0], sigShape[1]] };
}

export function sameSlice(a: SigSlice, b: SigSlice): boolean {
  return a.origin[0] === b.origin[0] && a.origin[1] === b.origin[1] && a.shape[0] === b.shape[0] && a.shape[1] === b.shape[1];
}

export function slicesOverlap(a: SigSlice, b: SigSlice): boolean {
  return (
    a.origin[0] < b.origin[0] + b.shape[0] &&
    b.origin[0] < a.origin[0] + a.shape[0] &&
    a.origin[1] < b.origin[1] + b.shape[1] &&
    b.origin[1] < a.origin[1] + a.shape[1]
  );
}

export function sliceInside(inner: SigSlice, outer: SigSlice): boolean {
  return (
    inner.shape[0] > 0 &&
    inner.shape[1] > 0 &&
    inner.origin[0] >= outer.origin[0] &&
    inner.origin[1] >= outer.origin[1] &&
    inner.origin[0] + inner.shape[0] <= outer.origin[0] + outer.shape[0] &&
    inner.origin[1] + inner.shape[1] <= outer.origin[1] + outer.shape[1]
  );
}

/**
 * `n` column slices of equal width (the K2 IS sectors for n = 8 on a 2048-wide frame). The width
 * must divide evenly: a sector split is a property of the detector, not a rounding choice.
 */
export function columnSlices(sigShape: readonly [number, number], n: number): SigSlice[] {
  const [h, w] = sigShape;
  if (!Number.isInteger(n) || n < 1 || w % n !== 0) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sigSplit', `${n} column slices do not divide a frame ${w} pixels wide`);
  }
  const sw = w / n;
  return Array.from({ length: n }, (_, i) => ({ origin: [0, i * sw] as [number, number], shape: [h, sw] as [number, number] }));
}

/** The slices given by `split`: a count of column slices, explicit rectangles, or the whole frame. */
export function sigSlicesFor(sigShape: readonly [number, number], split: number | 'whole' | SigSlice[]): SigSlice[] {
  if (split === 'whole' || split === 1) return [wholeFrame(sigShape)];
  if (typeof split === 'number') return columnSlices(sigShape, split);
  const frame = wholeFrame(sigShape);
  let area = 0;
  split.forEach((s, i) => {
    if (!sliceInside(s, frame)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sigSplit', `slice ${i} is not inside the frame`);
    for (let j = 0; j < i; j++) {
      if (slicesOverlap(s, split[j]!)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sigSplit', `slices ${j} and ${i} overlap`);
    }
    area += s.shape[0] * s.shape[1];
  });
  if (area !== sigShape[0] * sigShape[1]) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sigSplit', 'slices do not cover the frame');
  return split;
}

/** Nav ranges of `framesPerPartition` frames; ranges with no selected frame are left out. */
export function navChunks(nFrames: number, framesPerPartition: number, selection: NavSelection): Array<[number, number]> {
  if (!Number.isInteger(framesPerPartition) || framesPerPartition < 1) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'partitionFrames', `must be a positive integer, got ${framesPerPartition}`);
  }
  const out: Array<[number, number]> = [];
  for (let s = 0; s < nFrames; s += framesPerPartition) {
    const e = Math.min(nFrames, s + framesPerPartition);
    if (selection.count(s, e) > 0) out.push([s, e]);
  }
  return out;
}

/**
 * The tile shape for a partition slice, from LiberTEM's negotiation rules: whole frames (depth 1
 * or more) for frame UDFs, the whole partition for partition UDFs, otherwise about `tileBytes`:
 * full-height slices stacked up to DEFAULT_TILE_DEPTH deep, or bands of rows when one slice is
 * already larger than that.
 */
export function negotiateTileShape(opts: {
  slice: SigSlice;
  dtype: DType;
  partitionFrames: number;
  method: 'tile' | 'frame' | 'partition';
  tileBytes?: number;
}): TileShape {
  const { slice, dtype, partitionFrames, method } = opts;
  const target = opts.tileBytes ?? DEFAULT_TILE_BYTES;
  const [h, w] = slice.shape;
  const rowBytes = w * itemSize(dtype);
  const sliceBytes = h * rowBytes;
  if (method === 'partition') return { depth: partitionFrames, rows: h };
  if (method === 'frame' || sliceBytes <= target) {
    const depth = Math.max(1, Math.min(DEFAULT_TILE_DEPTH, partitionFrames, Math.floor(target / sliceBytes)));
    return { depth, rows: h };
  }
  return { depth: 1, rows: Math.max(1, Math.min(h, Math.floor(target / rowBytes))) };
}
