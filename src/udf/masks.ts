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
}

export interface DenseSliceMask {
  kind: 'dense';
  data: Float64Array;
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

/** Non-zero pixels of a mask over the whole frame, as [flat index, value] lists (unsorted, may repeat). */
function entries(m: MaskSpec, sig: readonly [number, number]): { idx: number[]; val: number[] } | Float64Array {
  const [h, w] = sig;
  const idx: number[] = [];
  const val: number[] = [];
  const num = (v: unknown, what: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${m.type} mask: ${what} must be a finite number`);
    return v;
  };
  switch (m.type) {
    case 'disk':
    case 'ring': {
      const cy = num(m.cy, 'cy');
      const cx = num(m.cx, 'cx');
      const ro = m.type === 'disk' ? num(m.r, 'r') : num(m.ro, 'ro');
      const ri = m.type === 'ring' ? num(m.ri, 'ri') : -1;
      if (m.type === 'ring' && ri >= ro) throw bad('ring mask: ri must be less than ro');
      const y0 = Math.max(0, Math.floor(cy - ro));
      const y1 = Math.min(h - 1, Math.ceil(cy + ro));
      for (let y = y0; y <= y1; y++) {
        for (let x = 0; x < w; x++) {
          const d2 = (y - cy) ** 2 + (x - cx) ** 2;
          if (d2 <= ro * ro && (ri < 0 || d2 > ri * ri)) {
            idx.push(y * w + x);
            val.push(1);
          }
        }
      }
      return { idx, val };
    }
    case 'point': {
      const y = num(m.y, 'y');
      const x = num(m.x, 'x');
      if (!Number.isInteger(y) || !Number.isInteger(x) || y < 0 || y >= h || x < 0 || x >= w) throw bad(`point mask (${y}, ${x}) is not a pixel of the ${h} x ${w} frame`);
      return { idx: [y * w + x], val: [1] };
    }
    case 'rectangle': {
      const [y, x, rh, rw] = [num(m.y, 'y'), num(m.x, 'x'), num(m.h, 'h'), num(m.w, 'w')];
      if (![y, x, rh, rw].every(Number.isInteger) || rh < 1 || rw < 1) throw bad('rectangle mask needs integer y, x and positive h, w');
      for (let yy = Math.max(0, y); yy < Math.min(h, y + rh); yy++) {
        for (let xx = Math.max(0, x); xx < Math.min(w, x + rw); xx++) {
          idx.push(yy * w + xx);
          val.push(1);
        }
      }
      return { idx, val };
    }
    case 'dense': {
      if (!m.data || m.data.length !== h * w) throw bad(`dense mask needs ${h * w} values (one per pixel)`);
      return Float64Array.from(m.data);
    }
    case 'sparse': {
      if (m.format === 'coo') {
        const n = m.rows?.length;
        if (typeof n !== 'number' || m.cols?.length !== n || (m.values !== undefined && m.values.length !== n)) {
          throw bad('COO mask needs rows, cols (and values) of equal length');
        }
        for (let k = 0; k < n; k++) {
          const y = m.rows[k]!;
          const x = m.cols[k]!;
          if (!Number.isInteger(y) || !Number.isInteger(x) || y < 0 || y >= h || x < 0 || x >= w) throw bad(`COO mask entry (${y}, ${x}) is outside the frame`);
          idx.push(y * w + x);
          val.push(m.values ? m.values[k]! : 1);
        }
        return { idx, val };
      }
      if (m.format === 'csr') {
        if (m.indptr?.length !== h + 1 || m.indices?.length !== m.values?.length || m.indptr[h] !== m.indices.length) {
          throw bad(`CSR mask needs indptr of ${h + 1} entries ending at the number of indices, and one value per index`);
        }
        for (let y = 0; y < h; y++) {
          for (let k = m.indptr[y]!; k < m.indptr[y + 1]!; k++) {
            const x = m.indices[k]!;
            if (!Number.isInteger(x) || x < 0 || x >= w) throw bad(`CSR mask column ${x} is outside the frame`);
            idx.push(y * w + x);
            val.push(m.values[k]!);
          }
        }
        return { idx, val };
      }
      throw bad(`unknown sparse format ${JSON.stringify((m as { format?: unknown }).format)}`);
    }
    default:
      throw bad(`unknown mask type ${JSON.stringify((m as { type?: unknown }).type)}`);
  }
}

/** Compile masks for one slice of the frame. */
export function compileMasks(masks: readonly MaskSpec[], sig: readonly [number, number], slice: SigSlice): SliceMask[] {
  const w = sig[1];
  const [y0, x0] = slice.origin;
  const [sh, sw] = slice.shape;
  return masks.map((m) => {
    const e = entries(m, sig);
    if (e instanceof Float64Array) {
      const data = new Float64Array(sh * sw);
      for (let r = 0; r < sh; r++) data.set(e.subarray((y0 + r) * w + x0, (y0 + r) * w + x0 + sw), r * sw);
      return { kind: 'dense', data };
    }
    // keep the slice's entries, in local coordinates; sum duplicates; drop zeros
    const local = new Map<number, number>();
    for (let k = 0; k < e.idx.length; k++) {
      const y = Math.floor(e.idx[k]! / w) - y0;
      const x = (e.idx[k]! % w) - x0;
      if (y < 0 || y >= sh || x < 0 || x >= sw) continue;
      const li = y * sw + x;
      local.set(li, (local.get(li) ?? 0) + e.val[k]!);
    }
    const keys = [...local.keys()].filter((k) => local.get(k) !== 0).sort((a, b) => a - b);
    const idx = Int32Array.from(keys);
    const val = Float64Array.from(keys, (k) => local.get(k)!);
    const rowStart = new Int32Array(sh + 1);
    let k = 0;
    for (let r = 0; r <= sh; r++) {
      while (k < idx.length && idx[k]! < r * sw) k++;
      rowStart[r] = k;
    }
    return { kind: 'sparse', idx, val, rowStart };
  });
}
