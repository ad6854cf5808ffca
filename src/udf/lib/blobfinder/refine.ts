/**
 * Subpixel refinement of a correlation peak and its quality (spec D.3), on an n x n correlation
 * map (row-major, values at integer positions):
 *
 * - centre of mass (LiberTEM's refine_center): a (2r+1)^2 window around the integer maximum,
 *   minus its minimum. Cheap, but biased towards the integer position for broad peaks.
 * - upsampled DFT (Guizar-Sicairos, skimage's _upsampled_dft): the band-limited interpolation
 *   of the map, evaluated from its spectrum on a grid 1/factor px apart over 1.5 px around the
 *   integer maximum by two small matrix products, then a parabola through the best sample and
 *   its neighbours on each axis. Unbiased up to the interpolation; costs n * R * (n + R) complex
 *   multiply-adds per peak (R = the grid's samples per axis).
 * - elevation (LiberTEM's peak_elevation): the slope of the tightest cone under the peak,
 *   min over pixels 1.5 <= distance <= rMax of (height - value) / distance, at least 0.
 */

/** Centre of mass of the map minus its window minimum, around integer (iy, ix); map coordinates. */
export function refineCenterOfMass(map: Float64Array, n: number, stride: number, offset: number, iy: number, ix: number, r: number): [number, number] {
  const y0 = Math.max(0, iy - r);
  const y1 = Math.min(n - 1, iy + r);
  const x0 = Math.max(0, ix - r);
  const x1 = Math.min(n - 1, ix + r);
  if (r <= 0 || y1 <= y0 || x1 <= x0) return [iy, ix];
  let min = Infinity;
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) min = Math.min(min, map[offset + (y * n + x) * stride]!);
  let s = 0;
  let sy = 0;
  let sx = 0;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const v = map[offset + (y * n + x) * stride]! - min;
      s += v;
      sy += v * y;
      sx += v * x;
    }
  }
  return s > 0 ? [sy / s, sx / s] : [iy, ix];
}

/** Vertex of the parabola through (-1, a), (0, b), (1, c), clamped to [-0.5, 0.5]. */
export function parabolaVertex(a: number, b: number, c: number): number {
  const den = a - 2 * b + c;
  if (!(den < 0)) return 0;
  const t = (0.5 * (a - c)) / den;
  return Math.max(-0.5, Math.min(0.5, t));
}

/**
 * The band-limited interpolation of real correlation maps from their spectrum, around a point.
 * Only frequencies |k| < n * bandwidth per axis take part (default a quarter of the band, so a
 * sixteenth of the work): a peak that is point-symmetric about its centre (a disk correlated with
 * a symmetric template) stays symmetric under a symmetric low-pass, so its maximum does not move,
 * and the correlation of disks many pixels wide has almost no energy up there anyway. The Nyquist
 * row and column never take part, so that both maps of a pair stay real and separate.
 * One instance per map size, factor and bandwidth: it keeps the tables and scratch buffers.
 */
export class UpsampledDft {
  readonly n: number;
  readonly factor: number;
  /** samples per axis of the upsampled grid (odd, spans at least 1.5 px) */
  readonly samples: number;
  private readonly nf: number;
  private readonly cos: Float64Array;
  private readonly sin: Float64Array;
  /** kept frequency indices (0..n-1) and their signed values */
  private readonly keep: Int32Array;
  private readonly signed: Int32Array;
  private readonly ex: Float64Array; // samples x kept complex: exp(2 pi i kx xv / n)
  private readonly ey: Float64Array;
  private readonly t: Float64Array; // samples(v) x kept(ky) complex
  private readonly grid: Float64Array; // samples x samples

  constructor(n: number, factor: number, bandwidth = 0.25) {
    this.n = n;
    this.factor = factor;
    this.samples = 2 * Math.ceil(0.75 * factor) + 1;
    this.nf = n * factor;
    this.cos = new Float64Array(this.nf);
    this.sin = new Float64Array(this.nf);
    for (let j = 0; j < this.nf; j++) {
      this.cos[j] = Math.cos((2 * Math.PI * j) / this.nf);
      this.sin[j] = Math.sin((2 * Math.PI * j) / this.nf);
    }
    const kMax = Math.max(1, Math.min(n / 2 - 1, Math.ceil(n * Math.min(0.5, bandwidth)) - 1));
    const keep: number[] = [];
    for (let k = 0; k < n; k++) {
      const kk = k < n / 2 ? k : k - n;
      if (Math.abs(kk) <= kMax) keep.push(k);
    }
    this.keep = Int32Array.from(keep);
    this.signed = Int32Array.from(keep, (k) => (k < n / 2 ? k : k - n));
    const r = this.samples;
    const m = keep.length;
    this.ex = new Float64Array(2 * r * m);
    this.ey = new Float64Array(2 * r * m);
    this.t = new Float64Array(2 * r * m);
    this.grid = new Float64Array(r * r);
  }

  /** exp(2 pi i k (p0 f + u - h) / (n f)) for u < samples and the kept frequencies k. */
  private fillKernel(out: Float64Array, p0: number): void {
    const { nf, samples, cos, sin, signed } = this;
    const m = signed.length;
    const h = (samples - 1) / 2;
    for (let u = 0; u < samples; u++) {
      const pos = (((p0 * this.factor + u - h) % nf) + nf) % nf;
      for (let j = 0; j < m; j++) {
        const idx = (((signed[j]! * pos) % nf) + nf) % nf;
        out[2 * (u * m + j)] = cos[idx]!;
        out[2 * (u * m + j) + 1] = sin[idx]!;
      }
    }
  }

  /**
   * Refine a peak at integer map position (iy, ix). `spec` is the n x n complex spectrum
   * (interleaved) of `re + i im` of two real maps; `part` 0 takes the first (real) map, 1 the
   * second. Returns the refined position in map coordinates and the interpolated height.
   */
  refine(spec: Float64Array, part: 0 | 1, iy: number, ix: number): [number, number, number] {
    const { n, samples: r, ex, ey, t, grid, keep } = this;
    const m = keep.length;
    this.fillKernel(ex, ix);
    this.fillKernel(ey, iy);
    // t[v][ky] = sum_kx spec[ky][kx] ex[v][kx]
    for (let jy = 0; jy < m; jy++) {
      const row = 2 * keep[jy]! * n;
      for (let v = 0; v < r; v++) {
        const e = 2 * v * m;
        let re = 0;
        let im = 0;
        for (let jx = 0; jx < m; jx++) {
          const o = row + 2 * keep[jx]!;
          const sr = spec[o]!;
          const si = spec[o + 1]!;
          const er = ex[e + 2 * jx]!;
          const ei = ex[e + 2 * jx + 1]!;
          re += sr * er - si * ei;
          im += sr * ei + si * er;
        }
        t[2 * (v * m + jy)] = re;
        t[2 * (v * m + jy) + 1] = im;
      }
    }
    // grid[u][v] = part of sum_ky ey[u][ky] t[v][ky]
    let best = -Infinity;
    let bu = 0;
    let bv = 0;
    for (let u = 0; u < r; u++) {
      const e = 2 * u * m;
      for (let v = 0; v < r; v++) {
        const tv = 2 * v * m;
        let acc = 0;
        if (part === 0) {
          for (let j = 0; j < m; j++) acc += ey[e + 2 * j]! * t[tv + 2 * j]! - ey[e + 2 * j + 1]! * t[tv + 2 * j + 1]!;
        } else {
          for (let j = 0; j < m; j++) acc += ey[e + 2 * j]! * t[tv + 2 * j + 1]! + ey[e + 2 * j + 1]! * t[tv + 2 * j]!;
        }
        grid[u * r + v] = acc;
        if (acc > best) {
          best = acc;
          bu = u;
          bv = v;
        }
      }
    }
    let du = 0;
    let dv = 0;
    if (bu > 0 && bu < r - 1) du = parabolaVertex(grid[(bu - 1) * r + bv]!, best, grid[(bu + 1) * r + bv]!);
    if (bv > 0 && bv < r - 1) dv = parabolaVertex(grid[bu * r + bv - 1]!, best, grid[bu * r + bv + 1]!);
    const h = (r - 1) / 2;
    return [iy + (bu + du - h) / this.factor, ix + (bv + dv - h) / this.factor, best / (n * n)];
  }
}

/**
 * Peak elevation: min over map pixels with rMin <= distance from (py, px) <= rMax of
 * (height - value) / distance, clamped to >= 0.
 */
export function peakElevation(map: Float64Array, n: number, stride: number, offset: number, py: number, px: number, height: number, rMin: number, rMax: number): number {
  let best = Infinity;
  const y0 = Math.max(0, Math.floor(py - rMax));
  const y1 = Math.min(n - 1, Math.ceil(py + rMax));
  const x0 = Math.max(0, Math.floor(px - rMax));
  const x1 = Math.min(n - 1, Math.ceil(px + rMax));
  for (let y = y0; y <= y1; y++) {
    const dy2 = (y - py) * (y - py);
    for (let x = x0; x <= x1; x++) {
      const d = Math.sqrt(dy2 + (x - px) * (x - px));
      if (d < rMin || d > rMax) continue;
      const e = (height - map[offset + (y * n + x) * stride]!) / d;
      if (e < best) best = e;
    }
  }
  return best === Infinity ? 0 : Math.max(0, best);
}
