/**
 * Peaks of a whole (sum) frame, for the reference lattice (LiberTEM-blobfinder's get_peaks,
 * spec D.4): the frame is binned (so that a disk is a few pixels across), log-scaled,
 * correlated with the binned template over the whole frame by FFT, and the strongest local
 * maxima at least `minDistance` apart are refined at full resolution with the window
 * correlator. Then guessLattice (lattice.ts) indexes them.
 */
import FFT from 'fft.js';
import { TesseraError } from '../../../errors.js';
import { allocatePeakResults, type RefineMethod, WindowCorrelator } from './correlation.js';
import { type FoundPeak, guessLattice, type Lattice, type LatticeGuess } from './lattice.js';
import { type TemplateSpec, templateReach, wrappedTemplate } from './templates.js';

interface FFTLike {
  transform(out: Float64Array, data: Float64Array): void;
  inverseTransform(out: Float64Array, data: Float64Array): void;
}

export interface FindPeaksOptions {
  template: TemplateSpec;
  /** at most this many peaks, strongest first (default 64) */
  numPeaks?: number;
  /** peaks closer than this (px) are one peak (default 2 radius) */
  minDistance?: number;
  /** keep peaks whose height above the map's median is at least this fraction of the strongest's (default 0.05) */
  threshold?: number;
  /** log-scale the frame first (default true) */
  logScale?: boolean;
  refine?: RefineMethod;
}

function fft2(fft: FFTLike, a: Float64Array, n: number, inverse: boolean): void {
  const inp = new Float64Array(2 * n);
  const out = new Float64Array(2 * n);
  for (let y = 0; y < n; y++) {
    inp.set(a.subarray(2 * y * n, 2 * (y + 1) * n));
    if (inverse) fft.inverseTransform(out, inp);
    else fft.transform(out, inp);
    a.set(out, 2 * y * n);
  }
  for (let x = 0; x < n; x++) {
    for (let y = 0; y < n; y++) {
      inp[2 * y] = a[2 * (y * n + x)]!;
      inp[2 * y + 1] = a[2 * (y * n + x) + 1]!;
    }
    if (inverse) fft.inverseTransform(out, inp);
    else fft.transform(out, inp);
    for (let y = 0; y < n; y++) {
      a[2 * (y * n + x)] = out[2 * y]!;
      a[2 * (y * n + x) + 1] = out[2 * y + 1]!;
    }
  }
}

/** The strongest disks of an h x w frame, refined to subpixel positions, strongest first. */
export function findPeaks(frame: ArrayLike<number>, h: number, w: number, opts: FindPeaksOptions): FoundPeak[] {
  const { template } = opts;
  const r = template.radius;
  const numPeaks = opts.numPeaks ?? 64;
  const minDistance = opts.minDistance ?? 2 * r;
  const threshold = opts.threshold ?? 0.05;
  if (frame.length !== h * w) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'frame', `has ${frame.length} values, expected ${h} x ${w}`);
  // bin by a power of two so that the binned radius stays at least 3 px
  let f = 1;
  while (r / (2 * f) >= 3) f *= 2;
  const hb = Math.floor(h / f);
  const wb = Math.floor(w / f);
  let n = 8;
  while (n < Math.max(hb, wb)) n *= 2;
  const binned = new Float64Array(hb * wb);
  for (let y = 0; y < hb * f; y++) {
    const row = Math.floor(y / f) * wb;
    for (let x = 0; x < wb * f; x++) binned[row + Math.floor(x / f)] += frame[y * w + x]!;
  }
  let min = Infinity;
  for (let i = 0; i < binned.length; i++) min = Math.min(min, (binned[i]! /= f * f));
  let mean = 0;
  for (let i = 0; i < binned.length; i++) {
    if (opts.logScale ?? true) binned[i] = Math.log(binned[i]! - min + 1);
    mean += binned[i]!;
  }
  mean /= binned.length;
  const data = new Float64Array(2 * n * n);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) data[2 * (y * n + x)] = y < hb && x < wb ? binned[y * wb + x]! : mean;
  const binnedTemplate: TemplateSpec = { ...template, radius: r / f, ...(template.radiusOuter !== undefined ? { radiusOuter: template.radiusOuter / f } : {}) };
  const t = wrappedTemplate(binnedTemplate, n);
  const ts = new Float64Array(2 * n * n);
  for (let i = 0; i < n * n; i++) ts[2 * i] = t[i]!;
  const fft = new (FFT as unknown as new (n: number) => FFTLike)(n);
  fft2(fft, ts, n, false);
  fft2(fft, data, n, false);
  for (let i = 0; i < n * n; i++) {
    const zr = data[2 * i]!;
    const zi = data[2 * i + 1]!;
    const tr = ts[2 * i]!;
    const ti = -ts[2 * i + 1]!;
    data[2 * i] = zr * tr - zi * ti;
    data[2 * i + 1] = zr * ti + zi * tr;
  }
  fft2(fft, data, n, true);

  // local maxima away from the edges (full-resolution windows must fit)
  const reach = templateReach(template);
  const edge = Math.ceil((reach + 2 * f) / f) + 1;
  const md = Math.max(1, Math.round(minDistance / f));
  const candidates: Array<[number, number, number]> = [];
  const values: number[] = [];
  for (let y = edge; y < hb - edge; y++) {
    for (let x = edge; x < wb - edge; x++) {
      const v = data[2 * (y * n + x)]!;
      values.push(v);
      let isMax = true;
      for (let dy = -1; dy <= 1 && isMax; dy++) for (let dx = -1; dx <= 1; dx++) if ((dy || dx) && data[2 * ((y + dy) * n + x + dx)]! > v) isMax = false;
      if (isMax) candidates.push([v, y, x]);
    }
  }
  if (candidates.length === 0) return [];
  values.sort((p, q) => p - q);
  const median = values[values.length >> 1]!;
  candidates.sort((p, q) => q[0] - p[0]);
  const top = candidates[0]![0] - median;
  const kept: Array<[number, number, number]> = [];
  for (const c of candidates) {
    if (kept.length >= numPeaks || c[0] - median < threshold * top) break;
    if (kept.some((k) => Math.hypot(k[1] - c[1], k[2] - c[2]) < md)) continue;
    kept.push(c);
  }
  // refine at full resolution
  const correlator = new WindowCorrelator({ template, search: 2 * f, logScale: opts.logScale ?? true, refine: opts.refine ?? 'upsample' });
  const ey = Float64Array.from(kept, (k) => k[1] * f + (f - 1) / 2);
  const ex = Float64Array.from(kept, (k) => k[2] * f + (f - 1) / 2);
  const res = allocatePeakResults(kept.length);
  correlator.correlate(frame, h, w, ey, ex, kept.length, res);
  const out: FoundPeak[] = [];
  for (let k = 0; k < kept.length; k++) out.push({ y: res.refinedY[k]!, x: res.refinedX[k]!, value: res.value[k]! });
  out.sort((p, q) => q.value - p.value);
  return out;
}

export interface ReferenceFromFrameOptions extends FindPeaksOptions {
  /** the lattice origin (default: the strongest peak) */
  zero?: [number, number];
  /** a peak within this many px of a lattice point is indexed (default 3) */
  tolerance?: number;
}

export interface ReferenceLattice {
  lattice: Lattice;
  /** orders (n, m) of the peaks that indexed, nearest to zero first */
  indices: Array<[number, number]>;
  peaks: FoundPeak[];
  guess: LatticeGuess;
}

/**
 * The reference lattice of a (sum) frame: its peaks, a lattice through them, and the orders of
 * the peaks that indexed (the disks a StrainMapUDF should look at). Throws
 * TESSERA_ERR_BAD_ARGUMENT when no lattice is found.
 */
export function referenceFromFrame(frame: ArrayLike<number>, h: number, w: number, opts: ReferenceFromFrameOptions): ReferenceLattice {
  const peaks = findPeaks(frame, h, w, opts);
  const guess = guessLattice(peaks, { zero: opts.zero, minLength: opts.template.radius, tolerance: opts.tolerance });
  if (!guess) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'frame', `no lattice found through ${peaks.length} peaks`);
  const lattice: Lattice = { zero: guess.zero, a: guess.a, b: guess.b };
  const indices: Array<[number, number, number]> = [];
  for (let k = 0; k < peaks.length; k++) {
    const n = guess.orders[2 * k]!;
    const m = guess.orders[2 * k + 1]!;
    if (Number.isNaN(n)) continue;
    const gy = n * lattice.a[0] + m * lattice.b[0];
    const gx = n * lattice.a[1] + m * lattice.b[1];
    indices.push([Math.hypot(gy, gx), n, m]);
  }
  indices.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2]);
  return { lattice, indices: indices.map(([, n, m]) => [n, m]), peaks, guess };
}
