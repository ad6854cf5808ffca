/**
 * CoMUDF: centre of mass per frame (LiberTEM's CoMUDF, spec C.2). Tiles accumulate three sums
 * per frame over the selected pixels (a disk d <= r, or a ring ri < d <= r, around (cy, cx)):
 * sum I, sum y*I, sum x*I. These are integer sums for integer input, so the sector-split
 * result is bit-exact. getResults() derives shifts, the rotated/flipped field, an optional
 * regression, and magnitude, divergence and curl on the scan grid.
 */
import { TesseraError } from '../../errors.js';
import type { NDArray } from '../ndarray.js';
import { wholeFrame } from '../partition.js';
import { UDF, type ResultValue } from '../udf.js';

export interface CoMParams {
  /** reference point and mask centre; default: the frame centre (h // 2, w // 2) */
  cy?: number | null;
  cx?: number | null;
  /** outer radius; null or omitted: the whole frame */
  r?: number | null;
  /** inner radius: a ring ri < d <= r */
  ri?: number;
  /** degrees; positive values rotate the shift vector clockwise */
  scanRotation?: number;
  flipY?: boolean;
  /** -1 none, 0 subtract the mean, 1 subtract a linear fit, or a 3 x 2 correction [[y, x], [dy/dy, dx/dy], [dy/dx, dx/dx]] */
  regression?: -1 | 0 | 1 | number[][];
}

const nullableNumber = { type: ['number', 'null'] };

interface Selection {
  all: boolean;
  idx: Int32Array;
  ys: Float64Array;
  xs: Float64Array;
  rowStart: Int32Array;
}

export class CoMUDF extends UDF<CoMParams> {
  static override udfName = 'CoMUDF';
  static override paramsSchema = {
    type: 'object',
    properties: {
      cy: nullableNumber,
      cx: nullableNumber,
      r: { type: ['number', 'null'], exclusiveMinimum: 0 },
      ri: { type: 'number', minimum: 0 },
      scanRotation: { type: 'number' },
      flipY: { type: 'boolean' },
      regression: {
        oneOf: [
          { enum: [-1, 0, 1] },
          { type: 'array', minItems: 3, maxItems: 3, items: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'number' } } },
        ],
      },
    },
    additionalProperties: false,
  };

  constructor(params: CoMParams = {}) {
    super(params);
    const { r, ri } = params;
    if (r !== undefined && r !== null && ri !== undefined && ri >= r) {
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'CoMUDF', 'inner radius ri must be less than r');
    }
  }

  /** The reference point (cy, cx), defaulting to the frame centre. */
  centre(): [number, number] {
    const [h, w] = this.meta.sigShape;
    return [this.rawParams.cy ?? Math.floor(h / 2), this.rawParams.cx ?? Math.floor(w / 2)];
  }

  getResultBuffers() {
    if (this.meta.navShape.length !== 2) throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'CoMUDF', `needs a 2-D scan, got nav shape ${JSON.stringify(this.meta.navShape)}`);
    const nav = (extraShape?: number[]) => this.buffer({ kind: 'nav', dtype: 'float64', extraShape, use: 'resultOnly' });
    return {
      raw_mask_result: this.buffer({ kind: 'nav', dtype: 'float64', extraShape: [3], use: 'private' }),
      raw_com: nav([2]),
      raw_shifts: nav([2]),
      field: nav([2]),
      field_y: nav(),
      field_x: nav(),
      magnitude: nav(),
      divergence: nav(),
      curl: nav(),
      regression: this.buffer({ kind: 'single', dtype: 'float64', extraShape: [3, 2], use: 'resultOnly' }),
    };
  }

  override getTaskData() {
    const [cy, cx] = this.centre();
    const r = this.rawParams.r ?? Infinity;
    const ri = this.rawParams.ri ?? 0;
    const slice = this.meta.partition?.sig ?? wholeFrame(this.meta.sigShape);
    const [y0, x0] = slice.origin;
    const [h, w] = slice.shape;
    if (r === Infinity && ri === 0) return { sel: { all: true } as Selection };
    const idx: number[] = [];
    const rowStart = new Int32Array(h + 1);
    for (let y = 0; y < h; y++) {
      rowStart[y] = idx.length;
      for (let x = 0; x < w; x++) {
        const d2 = (y0 + y - cy) ** 2 + (x0 + x - cx) ** 2;
        if (d2 <= r * r && (ri === 0 || d2 > ri * ri)) idx.push(y * w + x);
      }
    }
    rowStart[h] = idx.length;
    const sel: Selection = {
      all: false,
      idx: Int32Array.from(idx),
      ys: Float64Array.from(idx, (i) => y0 + Math.floor(i / w)),
      xs: Float64Array.from(idx, (i) => x0 + (i % w)),
      rowStart,
    };
    return { sel };
  }

  override processTile(tile: NDArray): void {
    const out = this.results.raw_mask_result!;
    const sel = this.taskData.sel as Selection;
    const [depth, rows, w] = tile.shape as [number, number, number];
    const [ty, tx] = this.meta.slice!.sigOrigin;
    const row = ty - this.meta.partition!.sig.origin[0];
    const n = rows * w;
    const k = this.meta.kernels;
    if (sel.all && k && tile instanceof Uint16Array) {
      k.comSums(tile, depth, rows, w, ty, tx, out);
      return;
    }
    for (let f = 0; f < depth; f++) {
      const base = f * n;
      let s = 0;
      let sy = 0;
      let sx = 0;
      if (sel.all) {
        for (let r = 0; r < rows; r++) {
          let rs = 0;
          let rx = 0;
          const o = base + r * w;
          for (let c = 0; c < w; c++) {
            const v = tile[o + c]!;
            rs += v;
            rx += v * c;
          }
          s += rs;
          sy += rs * (ty + r);
          sx += rx + rs * tx;
        }
      } else {
        const off = base - row * w;
        for (let j = sel.rowStart[row]!, end = sel.rowStart[row + rows]!; j < end; j++) {
          const v = tile[off + sel.idx[j]!]!;
          s += v;
          sy += v * sel.ys[j]!;
          sx += v * sel.xs[j]!;
        }
      }
      out[f * 3] += s;
      out[f * 3 + 1] += sy;
      out[f * 3 + 2] += sx;
    }
  }

  override getResults(): Record<string, ResultValue> {
    const [ny, nx] = this.meta.navShape as [number, number];
    const size = ny * nx;
    const roi = this.meta.roi;
    const [cy, cx] = this.centre();
    const raw = this.results.raw_mask_result!;
    // scan-grid arrays; NaN outside the ROI (as LiberTEM's raw_mask_result.data)
    const sy = new Float64Array(size);
    const sx = new Float64Array(size);
    const valid = new Uint8Array(size);
    for (let i = 0, k = 0; i < size; i++) {
      if (roi !== null && roi[i] !== 1) {
        sy[i] = NaN;
        sx[i] = NaN;
        continue;
      }
      const s = raw[k * 3]!;
      sy[i] = s === 0 ? 0 : raw[k * 3 + 1]! / s - cy;
      sx[i] = s === 0 ? 0 : raw[k * 3 + 2]! / s - cx;
      valid[i] = this.meta.validNavMask![k]!;
      k++;
    }
    const a = ((this.rawParams.scanRotation ?? 0) * Math.PI) / 180;
    const [cos, sin] = [Math.cos(a), Math.sin(a)];
    const fl = this.rawParams.flipY ? -1 : 1;
    const fy = new Float64Array(size);
    const fx = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      // rotate_deg(scanRotation) @ flip_y, applied to (y, x)
      fy[i] = cos * fl * sy[i]! + sin * sx[i]!;
      fx[i] = -sin * fl * sy[i]! + cos * sx[i]!;
    }
    const reg = regression(this.rawParams.regression ?? -1, fy, fx, valid, nx);
    // like numpy.allclose(regression[1:], 0): a linear part below 1e-8 is no linear part
    const linear = reg.slice(2).some((v) => Math.abs(v) > 1e-8);
    if (linear || reg[0] !== 0 || reg[1] !== 0) {
      for (let i = 0; i < size; i++) {
        const y = Math.floor(i / nx);
        const x = i % nx;
        fy[i] -= reg[0]! + (linear ? y * reg[2]! + x * reg[4]! : 0);
        fx[i] -= reg[1]! + (linear ? y * reg[3]! + x * reg[5]! : 0);
      }
    }
    const mag = new Float64Array(size);
    for (let i = 0; i < size; i++) mag[i] = Math.sqrt(fy[i]! ** 2 + fx[i]! ** 2);
    const dyy = gradient(fy, ny, nx, 0);
    const dxx = gradient(fx, ny, nx, 1);
    const dyx = gradient(fy, ny, nx, 1);
    const dxy = gradient(fx, ny, nx, 0);
    const div = dyy.map((v, i) => v + dxx[i]!);
    const curl = dyx.map((v, i) => v - dxy[i]!);

    // back to ROI-compressed nav buffers; several arrays interleave as components
    const selected = roi === null ? size : roi.reduce((a, v) => a + v, 0);
    const compress = (...parts: Float64Array[]) => {
      const out = new Float64Array(selected * parts.length);
      for (let i = 0, k = 0; i < size; i++) {
        if (roi !== null && roi[i] !== 1) continue;
        parts.forEach((p, c) => (out[k * parts.length + c] = p[i]!));
        k++;
      }
      return out;
    };
    return {
      raw_shifts: compress(sy, sx),
      raw_com: compress(sy.map((v) => v + cy), sx.map((v) => v + cx)),
      field: compress(fy, fx),
      field_y: compress(fy),
      field_x: compress(fx),
      magnitude: compress(mag),
      divergence: compress(div),
      curl: compress(curl),
      regression: Float64Array.from(reg),
    };
  }
}

/** numpy.gradient with unit spacing and first-order edges along `axis` of a ny x nx grid (0 for a length-1 axis). */
export function gradient(f: Float64Array, ny: number, nx: number, axis: 0 | 1): Float64Array {
  const out = new Float64Array(f.length);
  const len = axis === 0 ? ny : nx;
  const stride = axis === 0 ? nx : 1;
  if (len < 2) return out;
  for (let i = 0; i < f.length; i++) {
    const p = axis === 0 ? Math.floor(i / nx) : i % nx;
    if (p === 0) out[i] = f[i + stride]! - f[i]!;
    else if (p === len - 1) out[i] = f[i]! - f[i - stride]!;
    else out[i] = (f[i + stride]! - f[i - stride]!) / 2;
  }
  return out;
}

/** The 3 x 2 regression (flattened, C order) fitted on the valid positions of the field. */
function regression(option: -1 | 0 | 1 | number[][], fy: Float64Array, fx: Float64Array, valid: Uint8Array, nx: number): number[] {
  const out = [0, 0, 0, 0, 0, 0];
  if (Array.isArray(option)) return option.flat();
  if (option === -1) return out;
  if (option === 0) {
    let n = 0;
    for (let i = 0; i < fy.length; i++) {
      if (!valid[i]) continue;
      out[0] += fy[i]!;
      out[1] += fx[i]!;
      n++;
    }
    if (n > 0) {
      out[0] /= n;
      out[1] /= n;
    }
    return out;
  }
  // least squares [1, y, x] @ R = field via the normal equations (3 x 3, two right-hand sides)
  const ata = [0, 0, 0, 0, 0, 0, 0, 0, 0];
  const atb = [0, 0, 0, 0, 0, 0];
  for (let i = 0; i < fy.length; i++) {
    if (!valid[i]) continue;
    const row = [1, Math.floor(i / nx), i % nx];
    for (let a = 0; a < 3; a++) {
      for (let b = 0; b < 3; b++) ata[a * 3 + b] += row[a]! * row[b]!;
      atb[a * 2] += row[a]! * fy[i]!;
      atb[a * 2 + 1] += row[a]! * fx[i]!;
    }
  }
  return solve3(ata, atb);
}

/** Solve A X = B (A 3 x 3, B 3 x 2) by Gaussian elimination with partial pivoting; singular directions get 0. */
function solve3(a: number[], b: number[]): number[] {
  const m = [0, 1, 2].map((r) => [a[r * 3]!, a[r * 3 + 1]!, a[r * 3 + 2]!, b[r * 2]!, b[r * 2 + 1]!]);
  const scale = Math.max(...a.map(Math.abs), 1);
  const pivots: number[] = [];
  let r = 0;
  for (let c = 0; c < 3 && r < 3; c++) {
    let p = r;
    for (let i = r + 1; i < 3; i++) if (Math.abs(m[i]![c]!) > Math.abs(m[p]![c]!)) p = i;
    if (Math.abs(m[p]![c]!) <= 1e-12 * scale) continue;
    [m[r], m[p]] = [m[p]!, m[r]!];
    for (let i = 0; i < 3; i++) {
      if (i === r) continue;
      const f = m[i]![c]! / m[r]![c]!;
      for (let k = c; k < 5; k++) m[i]![k]! -= f * m[r]![k]!;
    }
    pivots[c] = r++;
  }
  const x = [0, 0, 0, 0, 0, 0];
  for (let c = 0; c < 3; c++) {
    const pr = pivots[c];
    if (pr === undefined) continue;
    x[c * 2] = m[pr]![3]! / m[pr]![c]!;
    x[c * 2 + 1] = m[pr]![4]! / m[pr]![c]!;
  }
  return x;
}
