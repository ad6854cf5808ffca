/**
 * Correlation-based peak finding in small windows (LiberTEM-blobfinder's FastCorrelationUDF
 * engine, spec D.2 / D.3).
 *
 * For each expected peak position an n x n window (n a power of two) is cut from the frame
 * around it, optionally log-scaled on its own (log(v - min + 1), LiberTEM's default), and
 * correlated with the template through the FFT: corr = IFFT2(FFT2(window) * conj(FFT2(t))),
 * with the template centred on pixel (0, 0), so that corr[s] is the match of a disk centred at
 * window pixel s. The template spectrum is computed once (per task) in the constructor. Two
 * windows share one complex FFT (the first as the real part, the second as the imaginary
 * part): the template is real, so the filtered parts stay apart.
 *
 * The peak is the maximum of corr within `search` px of the window centre (where the template
 * stays inside the window, so the circular correlation equals the linear one), refined to
 * subpixel precision (refine.ts) and rated by its height and elevation.
 */
import FFT from 'fft.js';
import { TesseraError } from '../../../errors.js';
import { peakElevation, refineCenterOfMass, UpsampledDft } from './refine.js';
import { checkTemplate, type TemplateSpec, templateReach, wrappedTemplate } from './templates.js';

interface FFTLike {
  transform(out: Float64Array, data: Float64Array): void;
  inverseTransform(out: Float64Array, data: Float64Array): void;
}

let LOG_TABLE: Float64Array | null = null;

/** log(k) for k = 0..65536 (log(0) = -Infinity is never read: arguments are >= 1). */
function logTable(): Float64Array {
  if (LOG_TABLE === null) {
    LOG_TABLE = new Float64Array(65537);
    for (let k = 0; k <= 65536; k++) LOG_TABLE[k] = Math.log(k);
  }
  return LOG_TABLE;
}

function isIntegerFrame(frame: ArrayLike<number>): boolean {
  return frame instanceof Uint16Array || frame instanceof Uint8Array || frame instanceof Uint8ClampedArray;
}

export type RefineMethod = 'com' | 'upsample' | 'none';

export interface CorrelatorOptions {
  template: TemplateSpec;
  /** how far (px) a peak may lie from its expected position (default 8) */
  search?: number;
  /** window side, a power of two (default: the smallest that holds the template shifted by `search`) */
  windowSize?: number;
  /** log-scale each window before correlating (default true, as LiberTEM) */
  logScale?: boolean;
  /** subpixel refinement (default 'upsample') */
  refine?: RefineMethod;
  /** upsampling factor for 'upsample' (default 4: with the parabola on top, finer grids give the same positions) */
  upsampleFactor?: number;
  /** fraction of the band (per axis) the upsampled DFT uses (default 0.25; 0.5 = all) */
  upsampleBandwidth?: number;
  /** half-size of the centre-of-mass window for 'com' (default 2) */
  comRadius?: number;
}

/** Per-peak results, in frame coordinates (y = row, x = column). */
export interface PeakResults {
  count: number;
  /** integer position of the correlation maximum */
  centerY: Int32Array;
  centerX: Int32Array;
  /** subpixel position */
  refinedY: Float64Array;
  refinedX: Float64Array;
  /** correlation height at the maximum */
  value: Float64Array;
  /** slope of the tightest cone under the peak (correlation units per px) */
  elevation: Float64Array;
}

export function allocatePeakResults(count: number): PeakResults {
  return {
    count,
    centerY: new Int32Array(count),
    centerX: new Int32Array(count),
    refinedY: new Float64Array(count),
    refinedX: new Float64Array(count),
    value: new Float64Array(count),
    elevation: new Float64Array(count),
  };
}

/** The smallest power of two that holds the template at every shift up to `search`. */
export function defaultWindowSize(template: TemplateSpec, search: number): number {
  const need = 2 * (Math.ceil(templateReach(template)) + Math.ceil(search)) + 2;
  let n = 8;
  while (n < need) n *= 2;
  return n;
}

/** A UDF's correlator parameters checked on construction: a bad window, search or template is a params mistake, said before any work starts. */
export function checkCorrelatorParams(udf: string, opts: CorrelatorOptions): void {
  try {
    checkCorrelatorOptions(opts);
  } catch (err) {
    if (err instanceof TesseraError) throw new TesseraError('TESSERA_ERR_UDF_PARAMS', udf, err.message);
    throw err;
  }
}

/** Validate correlator options (TESSERA_ERR_BAD_ARGUMENT); returns the window size and search radius. */
export function checkCorrelatorOptions(opts: CorrelatorOptions): { n: number; search: number } {
  checkTemplate(opts.template);
  const search = opts.search ?? 8;
  if (!(search >= 1)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'search', `must be >= 1 px, got ${search}`);
  const n = opts.windowSize ?? defaultWindowSize(opts.template, search);
  if (!Number.isInteger(n) || n < 8 || (n & (n - 1)) !== 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'windowSize', `must be a power of two >= 8, got ${n}`);
  if (Math.ceil(templateReach(opts.template)) + Math.ceil(search) > n / 2 - 1) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'windowSize', `${n} px is too small for a template reaching ${templateReach(opts.template)} px shifted by up to ${search} px`);
  }
  const factor = opts.upsampleFactor ?? 4;
  if (!Number.isInteger(factor) || factor < 2) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'upsampleFactor', `must be an integer >= 2, got ${factor}`);
  const bw = opts.upsampleBandwidth ?? 0.25;
  if (!(bw > 0 && bw <= 0.5)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'upsampleBandwidth', `must be in (0, 0.5], got ${bw}`);
  return { n, search };
}

export class WindowCorrelator {
  readonly n: number;
  readonly search: number;
  readonly logScale: boolean;
  readonly refineMethod: RefineMethod;
  readonly comRadius: number;
  readonly template: TemplateSpec;
  private readonly fft: FFTLike;
  /** conj(FFT2(template)), interleaved complex n x n */
  private readonly templateSpec: Float64Array;
  private readonly work: Float64Array;
  private readonly spec: Float64Array;
  private readonly rowIn: Float64Array;
  private readonly rowOut: Float64Array;
  private readonly upsampler: UpsampledDft | null;
  /** rows of the correlation map that evaluation reads: a peak anywhere in the search disk, plus the CoM window and the elevation's reach around it */
  private readonly mapRows: [number, number];
  /** offsets (dy, dx) of the search disk, nearest first */
  private readonly searchOffsets: Int32Array;

  constructor(opts: CorrelatorOptions) {
    this.template = opts.template;
    const { n, search } = checkCorrelatorOptions(opts);
    this.search = search;
    this.n = n;
    this.logScale = opts.logScale ?? true;
    this.refineMethod = opts.refine ?? 'upsample';
    this.comRadius = opts.comRadius ?? 2;
    const factor = opts.upsampleFactor ?? 4;
    this.fft = new (FFT as unknown as new (n: number) => FFTLike)(n);
    this.work = new Float64Array(2 * n * n);
    this.spec = new Float64Array(2 * n * n);
    this.rowIn = new Float64Array(2 * n);
    this.rowOut = new Float64Array(2 * n);
    this.upsampler = this.refineMethod === 'upsample' ? new UpsampledDft(n, factor, opts.upsampleBandwidth ?? 0.25) : null;

    const reach = 2 * Math.ceil(this.search) + Math.max(1, this.comRadius) + 1;
    this.mapRows = [Math.max(0, n / 2 - reach), Math.min(n, n / 2 + reach + 1)];

    const t = wrappedTemplate(opts.template, n);
    const ts = new Float64Array(2 * n * n);
    for (let i = 0; i < n * n; i++) ts[2 * i] = t[i]!;
    this.fft2(ts, false);
    for (let i = 0; i < n * n; i++) ts[2 * i + 1] = -ts[2 * i + 1]!;
    this.templateSpec = ts;

    const offs: Array<[number, number, number]> = [];
    const s = Math.floor(this.search);
    for (let dy = -s; dy <= s; dy++) for (let dx = -s; dx <= s; dx++) if (dy * dy + dx * dx <= this.search * this.search) offs.push([dy * dy + dx * dx, dy, dx]);
    offs.sort((p, q) => p[0] - q[0]);
    this.searchOffsets = Int32Array.from(offs.flatMap(([, dy, dx]) => [dy, dx]));
  }

  /** In-place 2-D complex FFT (rows, then columns) of an n x n interleaved array. */
  private fft2(a: Float64Array, inverse: boolean): void {
    if (inverse) {
      this.columnFft(a, true);
      this.rowFft(a, true, 0, this.n);
    } else {
      this.rowFft(a, false, 0, this.n);
      this.columnFft(a, false);
    }
  }

  /** 1-D transforms of rows [y0, y1) with fft.js (inverse scaled by 1/n). */
  private rowFft(a: Float64Array, inverse: boolean, y0: number, y1: number): void {
    const n = this.n;
    const { rowIn, rowOut, fft } = this;
    for (let y = y0; y < y1; y++) {
      const o = 2 * y * n;
      rowIn.set(a.subarray(o, o + 2 * n));
      if (inverse) fft.inverseTransform(rowOut, rowIn);
      else fft.transform(rowOut, rowIn);
      a.set(rowOut, o);
    }
  }

  /** 1-D transforms of every column with fft.js (inverse scaled by 1/n). */
  private columnFft(a: Float64Array, inverse: boolean): void {
    const n = this.n;
    const { rowIn, rowOut, fft } = this;
    for (let x = 0; x < n; x++) {
      for (let y = 0, i = 2 * x; y < n; y++, i += 2 * n) {
        rowIn[2 * y] = a[i]!;
        rowIn[2 * y + 1] = a[i + 1]!;
      }
      if (inverse) fft.inverseTransform(rowOut, rowIn);
      else fft.transform(rowOut, rowIn);
      for (let y = 0, i = 2 * x; y < n; y++, i += 2 * n) {
        a[i] = rowOut[2 * y]!;
        a[i + 1] = rowOut[2 * y + 1]!;
      }
    }
  }

  /** Window top-left corner for an expected position: the window centre is the nearest pixel. */
  windowOrigin(ey: number, ex: number): [number, number] {
    const c = this.n / 2;
    return [Math.round(ey) - c, Math.round(ex) - c];
  }

  /**
   * Cut (and log-scale) a window into the real (`part` 0) or imaginary (1) parts of this.work;
   * pixels outside the frame take the window's minimum.
   */
  private cut(frame: ArrayLike<number>, h: number, w: number, wy: number, wx: number, part: 0 | 1): void {
    const n = this.n;
    const work = this.work;
    let min = Infinity;
    const ya = Math.max(0, -wy);
    const yb = Math.min(n, h - wy);
    const xa = Math.max(0, -wx);
    const xb = Math.min(n, w - wx);
    const partial = ya > 0 || xa > 0 || yb < n || xb < n;
    for (let y = ya; y < yb; y++) {
      const src = (wy + y) * w + wx;
      const dst = 2 * y * n + part;
      for (let x = xa; x < xb; x++) {
        const v = frame[src + x]!;
        work[dst + 2 * x] = v;
        if (v < min) min = v;
      }
    }
    if (min === Infinity) min = 0;
    if (partial) {
      for (let y = 0; y < n; y++) {
        const inside = y >= ya && y < yb;
        for (let x = 0; x < n; x++) if (!inside || x < xa || x >= xb) work[2 * (y * n + x) + part] = min;
      }
    }
    if (this.logScale) {
      const off = 1 - min;
      const end = 2 * n * n;
      if (isIntegerFrame(frame) && min >= 0) {
        // integer counts: log(v - min + 1) of an integer in 1..65536, from a table
        const lut = logTable();
        for (let i = part; i < end; i += 2) work[i] = lut[work[i]! + off]!;
      } else {
        for (let i = part; i < end; i += 2) work[i] = Math.log(work[i]! + off);
      }
    }
  }

  /**
   * Find the peaks near the `count` expected positions (ey[k], ex[k]) of an h x w frame. Writes
   * entries 0..count-1 of `out`.
   */
  correlate(frame: ArrayLike<number>, h: number, w: number, ey: ArrayLike<number>, ex: ArrayLike<number>, count: number, out: PeakResults): void {
    const nn = this.n * this.n;
    const { work, spec, templateSpec: ts } = this;
    for (let k = 0; k < count; k += 2) {
      const pair = k + 1 < count;
      const [ay, ax] = this.windowOrigin(ey[k]!, ex[k]!);
      this.cut(frame, h, w, ay, ax, 0);
      let by = 0;
      let bx = 0;
      if (pair) {
        [by, bx] = this.windowOrigin(ey[k + 1]!, ex[k + 1]!);
        this.cut(frame, h, w, by, bx, 1);
      } else {
        for (let i = 1; i < 2 * nn; i += 2) work[i] = 0;
      }
      this.fft2(work, false);
      for (let i = 0; i < 2 * nn; i += 2) {
        const zr = work[i]!;
        const zi = work[i + 1]!;
        const tr = ts[i]!;
        const ti = ts[i + 1]!;
        const pr = zr * tr - zi * ti;
        const pi = zr * ti + zi * tr;
        spec[i] = work[i] = pr;
        spec[i + 1] = work[i + 1] = pi;
      }
      // only the rows around the search disk are read back
      this.columnFft(work, true);
      this.rowFft(work, true, this.mapRows[0], this.mapRows[1]);
      this.evaluate(0, ay, ax, k, out);
      if (pair) this.evaluate(1, by, bx, k + 1, out);
    }
  }

  /** Maximum in the search disk, refinement, quality: for map `part` of the pair in `work`. */
  private evaluate(part: 0 | 1, wy: number, wx: number, k: number, out: PeakResults): void {
    const n = this.n;
    const c = n / 2;
    const map = this.work;
    const offs = this.searchOffsets;
    let best = -Infinity;
    let iy = c;
    let ix = c;
    for (let j = 0; j < offs.length; j += 2) {
      const y = c + offs[j]!;
      const x = c + offs[j + 1]!;
      const v = map[2 * (y * n + x) + part]!;
      if (v > best) {
        best = v;
        iy = y;
        ix = x;
      }
    }
    let ry = iy;
    let rx = ix;
    let height = best;
    if (this.refineMethod === 'com') {
      [ry, rx] = refineCenterOfMass(map, n, 2, part, iy, ix, this.comRadius);
    } else if (this.refineMethod === 'upsample') {
      const [uy, ux, uh] = this.upsampler!.refine(this.spec, part, iy, ix);
      // a maximum on the search border can drift outwards; keep the refinement within 1 px
      if (Math.abs(uy - iy) <= 1 && Math.abs(ux - ix) <= 1) {
        ry = uy;
        rx = ux;
        height = Math.max(height, uh);
      }
    }
    out.centerY[k] = wy + iy;
    out.centerX[k] = wx + ix;
    out.refinedY[k] = wy + ry;
    out.refinedX[k] = wx + rx;
    out.value[k] = best;
    out.elevation[k] = peakElevation(map, n, 2, part, ry, rx, height, 1.5, this.search);
  }

  /** The correlation map of the last window pair (`part` 0 or 1), for tests and display. */
  lastMap(part: 0 | 1): Float64Array {
    const nn = this.n * this.n;
    const full = this.spec.slice();
    this.fft2(full, true);
    const out = new Float64Array(nn);
    for (let i = 0; i < nn; i++) out[i] = full[2 * i + part]!;
    return out;
  }
}
