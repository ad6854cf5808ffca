/**
 * Detector corrections applied to each tile on the fly, before any UDF sees it, without an
 * intermediate corrected dataset: dark frame subtraction, gain map, excluded (dead or hot) pixels.
 * Corrected input is float32: out = (raw - dark) * gain, computed per pixel and stored as float32.
 *
 * Excluded pixels are replaced by the mean of their valid left and right neighbours in the same
 * row and the same sector (column band of `bandWidth` pixels; 0 if neither neighbour is valid).
 * LiberTEM uses the full 8-neighbourhood; Tessera keeps to the row and the sector because a live
 * receiver holds one sector and tiles are bands of rows: a repair that reached into another
 * sector or another tile would make the sector-split result depend on where the data was cut.
 * With this rule a corrected pixel is the same whichever partition or tile it arrives in.
 */
import { TesseraError } from '../errors.js';
import type { TypedArray } from './dtype.js';
import type { SigSlice } from './partition.js';

export interface CorrectionsInput {
  /** dark frame, one value per pixel (h x w, C order) */
  dark?: ArrayLike<number> | null;
  /** gain map, one value per pixel */
  gain?: ArrayLike<number> | null;
  /** excluded pixels as [y, x] pairs or flat indices */
  excludedPixels?: ReadonlyArray<readonly [number, number]> | ArrayLike<number> | null;
}

/** Normalised, serialisable corrections (crosses threads and processes as plain data). */
export interface CorrectionSet {
  dark: Float32Array | null;
  gain: Float32Array | null;
  /** flat pixel indices, sorted, unique */
  excluded: Int32Array;
  /** repairs stay within column bands of this width (the detector's sectors) */
  bandWidth: number;
}

export function normaliseCorrections(
  input: CorrectionsInput | CorrectionSet | null | undefined,
  sigShape: readonly [number, number],
  bandWidth: number,
): CorrectionSet | null {
  if (input === null || input === undefined) return null;
  const [h, w] = sigShape;
  const n = h * w;
  const field = (name: string, v: ArrayLike<number> | null | undefined): Float32Array | null => {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'object' || v.length !== n) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', `corrections.${name}`, `needs ${n} values (one per pixel of ${h} x ${w})`);
    }
    return v instanceof Float32Array ? v : Float32Array.from(v);
  };
  const dark = field('dark', input.dark);
  const gain = field('gain', input.gain);
  const raw = 'excluded' in input ? input.excluded : input.excludedPixels;
  const flat: number[] = [];
  if (raw !== null && raw !== undefined) {
    for (let i = 0; i < raw.length; i++) {
      const p = (raw as ArrayLike<unknown>)[i];
      const idx = Array.isArray(p) ? (p[0] as number) * w + (p[1] as number) : (p as number);
      const ok = Array.isArray(p)
        ? Number.isInteger(p[0]) && Number.isInteger(p[1]) && p[0] >= 0 && p[0] < h && p[1] >= 0 && p[1] < w
        : Number.isInteger(idx) && idx >= 0 && idx < n;
      if (!ok) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'corrections.excludedPixels', `pixel ${JSON.stringify(p)} is outside the ${h} x ${w} frame`);
      flat.push(idx);
    }
  }
  const excluded = Int32Array.from(new Set(flat)).sort();
  if (!Number.isInteger(bandWidth) || bandWidth < 1 || w % bandWidth !== 0) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'corrections.bandWidth', `${bandWidth} does not divide the frame width ${w}`);
  }
  if (dark === null && gain === null && excluded.length === 0) return null;
  return { dark, gain, excluded, bandWidth };
}

/** Check that a partition slice does not cut a repair band (repairs must not depend on the cut). */
export function checkSliceForRepairs(c: CorrectionSet | null, slice: SigSlice): void {
  if (c === null || c.excluded.length === 0) return;
  if (slice.origin[1] % c.bandWidth !== 0 || slice.shape[1] % c.bandWidth !== 0) {
    throw new TesseraError(
      'TESSERA_ERR_BAD_ARGUMENT',
      'sigSplit',
      `slice at column ${slice.origin[1]}, ${slice.shape[1]} wide, cuts a ${c.bandWidth}-pixel sector: excluded-pixel repair needs whole sectors`,
    );
  }
}

/** One excluded pixel of a slice: its row, its index in the slice, and its valid neighbours. */
interface Repair {
  row: number;
  at: number;
  left: number;
  right: number;
}

/** Applies a CorrectionSet to tiles of one partition slice, writing float32. */
export class TileCorrector {
  private readonly dark: Float32Array | null;
  private readonly gain: Float32Array | null;
  private readonly repairs: Repair[] = [];
  private readonly width: number;

  constructor(c: CorrectionSet | null, frameWidth: number, slice: SigSlice) {
    const [y0, x0] = slice.origin;
    const [h, w] = slice.shape;
    this.width = w;
    const cut = (m: Float32Array | null) => {
      if (m === null) return null;
      const out = new Float32Array(h * w);
      for (let r = 0; r < h; r++) out.set(m.subarray((y0 + r) * frameWidth + x0, (y0 + r) * frameWidth + x0 + w), r * w);
      return out;
    };
    this.dark = c ? cut(c.dark) : null;
    this.gain = c ? cut(c.gain) : null;
    if (c === null || c.excluded.length === 0) return;
    checkSliceForRepairs(c, slice);
    const excluded = new Set(c.excluded);
    for (const p of c.excluded) {
      const y = Math.floor(p / frameWidth);
      const x = p % frameWidth;
      if (y < y0 || y >= y0 + h || x < x0 || x >= x0 + w) continue;
      const band = Math.floor(x / c.bandWidth);
      const valid = (xx: number) => xx >= 0 && xx < frameWidth && Math.floor(xx / c.bandWidth) === band && !excluded.has(y * frameWidth + xx);
      const at = (y - y0) * w + (x - x0);
      this.repairs.push({ row: y - y0, at, left: valid(x - 1) ? at - 1 : -1, right: valid(x + 1) ? at + 1 : -1 });
    }
  }

  /**
   * Correct `depth` frames of `rows` rows starting at slice row `row` from `src` into `out`
   * (both depth x rows x width).
   */
  apply(src: TypedArray, out: Float32Array | Float64Array, depth: number, row: number, rows: number): void {
    const w = this.width;
    const n = rows * w;
    const base = row * w;
    const { dark, gain } = this;
    for (let f = 0; f < depth; f++) {
      const o = f * n;
      if (dark !== null && gain !== null) {
        for (let i = 0; i < n; i++) out[o + i] = (src[o + i]! - dark[base + i]!) * gain[base + i]!;
      } else if (dark !== null) {
        for (let i = 0; i < n; i++) out[o + i] = src[o + i]! - dark[base + i]!;
      } else if (gain !== null) {
        for (let i = 0; i < n; i++) out[o + i] = src[o + i]! * gain[base + i]!;
      } else if (src !== out) {
        for (let i = 0; i < n; i++) out[o + i] = src[o + i]!;
      }
      for (const r of this.repairs) {
        if (r.row < row || r.row >= row + rows) continue;
        const off = o - base;
        const l = r.left >= 0 ? out[off + r.left]! : 0;
        const rr = r.right >= 0 ? out[off + r.right]! : 0;
        const cnt = (r.left >= 0 ? 1 : 0) + (r.right >= 0 ? 1 : 0);
        out[off + r.at] = cnt === 0 ? 0 : (l + rr) / cnt;
      }
    }
  }
}
