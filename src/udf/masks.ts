/**
 * Masks for virtual detectors (ApplyMasksUDF) as plain, serialisable descriptions, compiled per
 * partition slice into what a tile loop needs: sparse masks as sorted (index, value) lists with a
 * row index, so that a tile touches only the mask's non-zero pixels in its rows; dense masks as
 * the slice's values. Shapes follow LiberTEM's masks.py: a disk is d <= r, a ring ri < d <= ro,
 * with d the distance of the pixel centre (y, x) from (cy, cx).
 */
import { TesseraError } from '../errors.js';
import type { SigSlice } from './partition.js';

export type MaskSpec =
  | { type: 'disk'; cy: number; cx: number; r: number }
  | { type: 'ring'; cy: number; cx: number; ri: number; ro: number }
  | { type: 'point'; y: number; x: number }
  | { type: 'rectangle'; y: number; x: number; h: number; w: number }
  /** one value per pixel, C order */
  | { type: 'dense'; data: ArrayLike<number> }
  /** COO: pixel coordinates and values (values default to 1); duplicates add up */
  | { type: 'sparse'; format: 'coo'; rows: ArrayLike<number>; cols: ArrayLike<number>; values?: ArrayLike<number> }
  /** CSR over rows: indptr (h + 1), column indices and values */
  | { type: 'sparse'; format: 'csr'; indptr: ArrayLike<number>; indices: ArrayLike<number>; values: ArrayLike<number> };

/** A mask restricted to one slice: `idx` local flat indices (sorted), `rowStart[r]` = first entry of local row r. */
export interface SparseSliceMask {
  kind: 'sparse';
  idx: Int32Array;
  val: Float64Array;
  rowStart: Int32Array;
  /** the same mask as runs, when its non-zero values are all one small integer */
  runs: MaskRuns | null;
}

export interface DenseSliceMask {
  kind: 'dense';
  data: Float64Array;
  /** the same mask as runs, when its non-zero values are all one small integer */
  runs: MaskRuns | null;
}

/**
 * A mask whose non-zero values all equal `value` (an integer), as runs of consecutive pixels
 * within rows: `runs` holds (first local flat index, length) pairs, `rowStart[r]` = first run
 * of local row r. Summing a run's pixels is exact integer work (the SIMD kernels), and
 * `value x sum` equals the pixel-by-pixel dot product exactly, since every partial sum is an
 * integer below 2^53.
 */
export interface MaskRuns {
  runs: Int32Array;
  rowStart: Int32Array;
  value: number;
}

/** |value| up to 2^15: value x (2^22 pixels x 65535) stays below 2^53 */
const MAX_RUN_VALUE = 1 << 15;

/** Runs of a mask given as sorted local indices and values, or null if its values differ or are not small integers. */
export function maskRuns(idx: ArrayLike<number>, val: ArrayLike<number>, rows: number, w: number): MaskRuns | null {
  const value = val.length > 0 ? val[0]! : 1;
  if (!Number.isInteger(value) || Math.abs(value) > MAX_RUN_VALUE) return null;
  for (let j = 1; j < val.length; j++) if (val[j] !== value) return null;
  const runs: number[] = [];
  const rowStart = new Int32Array(rows + 1);
  let j = 0;
  for (let r = 0; r < rows; r++) {
    rowStart[r] = runs.length / 2;
    const rowEnd = (r + 1) * w;
    while (j < idx.length && idx[j]! < rowEnd) {
      const start = idx[j]!;
      let len = 1;
      while (j + len < idx.length && idx[j + len] === start + len && start + len < rowEnd) len++;
      runs.push(start, len);
      j += len;
    }
  }
  rowStart[rows] = runs.length / 2;
  return { runs: Int32Array.from(runs), rowStart, value };
}

export type SliceMask = SparseSliceMask | DenseSliceMask;

export const maskSchema = {
  type: 'object',
  required: ['type'],
  properties: { type: { enum: ['disk', 'ring', 'point', 'rectangle', 'dense', 'sparse'] } },
} as const;

function bad(why: string): TesseraError {
  return new TesseraError('TESSERA_ERR_UDF_PARAMS', 'ApplyMasksUDF', why);
}

/**
 * A mask's non-zero pixels inside `slice`, as local (slice) flat indices and values, or dense
 * values of the slice. Shapes are generated over their bounding box within the slice only.
 */
function sliceEntries(m: MaskSpec, sig: readonly [number, number], slice: SigSlice): { idx: number[]; val: number[]; sorted: boolean } | Float64Array {
  const [h, w] = sig;
  const [y0, x0] = slice.origin;
  const [sh, sw] = slice.shape;
  const idx: number[] = [];
  const val: number[] = [];
  const num = (v: unknown, what: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${m.type} mask: ${what} must be a finite number`);
    return v;
  };
  /** rows and columns of the slice within [ya, yb] x [xa, xb] (frame coordinates, inclusive) */
  const box = (ya: number, yb: number, xa: number, xb: number, take: (y: number, x: number) => boolean) => {
    for (let y = Math.max(y0, Math.ceil(ya)); y <= Math.min(y0 + sh - 1, Math.floor(yb)); y++) {
      for (let x = Math.max(x0, Math.ceil(xa)); x <= Math.min(x0 + sw - 1, Math.floor(xb)); x++) {
        if (take(y, x)) {
          idx.push((y - y0) * sw + (x - x0));
          val.push(1);
        }
      }
    }
    return { idx, val, sorted: true };
  };
  switch (m.type) {
    case 'disk':
    case 'ring': {
      const cy = num(m.cy, 'cy');
      const cx = num(m.cx, 'cx');
      const ro = m.type === 'disk' ? num(m.r, 'r') : num(m.ro, 'ro');
      const ri = m.type === 'ring' ? num(m.ri, 'ri') : -1;
      if (m.type === 'ring' && ri >= ro) throw bad('ring mask: ri must be less than ro');
      return box(cy - ro, cy + ro, cx - ro, cx + ro, (y, x) => {
        const d2 = (y - cy) ** 2 + (x - cx) ** 2;
        return d2 <= ro * ro && (ri < 0 || d2 > ri * ri);
      });
    }
    case 'point': {
      const y = num(m.y, 'y');
      const x = num(m.x, 'x');
      if (!Number.isInteger(y) || !Number.isInteger(x) || y < 0 || y >= h || x < 0 || x >= w) throw bad(`point mask (${y}, ${x}) is not a pixel of the ${h} x ${w} frame`);
      return box(y, y, x, x, () => true);
    }
    case 'rectangle': {
      const [y, x, rh, rw] = [num(m.y, 'y'), num(m.x, 'x'), num(m.h, 'h'), num(m.w, 'w')];
      if (![y, x, rh, rw].every(Number.isInteger) || rh < 1 || rw < 1) throw bad('rectangle mask needs integer y, x and positive h, w');
      return box(y, y + rh - 1, x, x + rw - 1, () => true);
    }
    case 'dense': {
      if (!m.data || m.data.length !== h * w) throw bad(`dense mask needs ${h * w} values (one per pixel)`);
      const out = new Float64Array(sh * sw);
      for (let r = 0; r < sh; r++) for (let c = 0; c < sw; c++) out[r * sw + c] = m.data[(y0 + r) * w + x0 + c]!;
      return out;
    }
    case 'sparse': {
      const add = (y: number, x: number, v: number) => {
        if (!Number.isInteger(y) || !Number.isInteger(x) || y < 0 || y >= h || x < 0 || x >= w) throw bad(`sparse mask entry (${y}, ${x}) is outside the frame`);
        if (y < y0 || y >= y0 + sh || x < x0 || x >= x0 + sw) return;
        idx.push((y - y0) * sw + (x - x0));
        val.push(v);
      };
      if (m.format === 'coo') {
        const n = m.rows?.length;
        if (typeof n !== 'number' || m.cols?.length !== n || (m.values !== undefined && m.values.length !== n)) {
          throw bad('COO mask needs rows, cols (and values) of equal length');
        }
        for (let k = 0; k < n; k++) add(m.rows[k]!, m.cols[k]!, m.values ? m.values[k]! : 1);
        return { idx, val, sorted: false };
      }
      if (m.format === 'csr') {
        if (m.indptr?.length !== h + 1 || m.indices?.length !== m.values?.length || m.indptr[h] !== m.indices.length) {
          throw bad(`CSR mask needs indptr of ${h + 1} entries ending at the number of indices, and one value per index`);
        }
        for (let y = 0; y < h; y++) for (let k = m.indptr[y]!; k < m.indptr[y + 1]!; k++) add(y, m.indices[k]!, m.values[k]!);
        return { idx, val, sorted: false };
      }
      throw bad(`unknown sparse format ${JSON.stringify((m as { format?: unknown }).format)}`);
    }
    default:
      throw bad(`unknown mask type ${JSON.stringify((m as { type?: unknown }).type)}`);
  }
}

function compileOne(m: MaskSpec, sig: readonly [number, number], slice: SigSlice): SliceMask {
  const [sh, sw] = slice.shape;
  const e = sliceEntries(m, sig, slice);
  if (e instanceof Float64Array) {
    const nz: number[] = [];
    const nzVal: number[] = [];
    for (let i = 0; i < e.length; i++) {
      if (e[i] !== 0) {
        nz.push(i);
        nzVal.push(e[i]!);
      }
    }
    return { kind: 'dense', data: e, runs: maskRuns(nz, nzVal, sh, sw) };
  }
  let idx: Int32Array;
  let val: Float64Array;
  if (e.sorted) {
    idx = Int32Array.from(e.idx);
    val = Float64Array.from(e.val);
  } else {
    // user-given sparse masks: sum duplicates, drop zeros, sort
    const local = new Map<number, number>();
    e.idx.forEach((i, k) => local.set(i, (local.get(i) ?? 0) + e.val[k]!));
    const keys = [...local.keys()].filter((k) => local.get(k) !== 0).sort((a, b) => a - b);
    idx = Int32Array.from(keys);
    val = Float64Array.from(keys, (k) => local.get(k)!);
  }
  const rowStart = new Int32Array(sh + 1);
  let k = 0;
  for (let r = 0; r <= sh; r++) {
    while (k < idx.length && idx[k]! < r * sw) k++;
    rowStart[r] = k;
  }
  return { kind: 'sparse', idx, val, rowStart, runs: maskRuns(idx, val, sh, sw) };
}

// Compiled masks per mask list (by identity) and slice: partitions of one run reuse them.
const cache = new WeakMap<readonly MaskSpec[], Map<string, SliceMask[]>>();

/** Compile masks for one slice of the frame. */
export function compileMasks(masks: readonly MaskSpec[], sig: readonly [number, number], slice: SigSlice): SliceMask[] {
  const key = `${sig.join('x')}:${slice.origin.join(',')}:${slice.shape.join('x')}`;
  let bySlice = cache.get(masks);
  if (!bySlice) {
    bySlice = new Map();
    cache.set(masks, bySlice);
  }
  let compiledMasks = bySlice.get(key);
  if (!compiledMasks) {
    compiledMasks = masks.map((m) => compileOne(m, sig, slice));
    bySlice.set(key, compiledMasks);
  }
  return compiledMasks;
}
