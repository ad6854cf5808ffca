/**
 * Lattices of diffraction disks: the per-frame least-squares fit with a minimum quality and
 * outlier rejection (LiberTEM-blobfinder's Matcher, spec D.4), strain from fitted lattice
 * vectors, and a first guess of a lattice from peaks found in a sum frame.
 *
 * Vectors are (y, x) = (row, column) in detector pixels; the disk of order (n, m) sits at
 * zero + n a + m b.
 *
 * Strain convention (the simulator's, src/k2is/simulator/scene.ts): with the reference vectors
 * a0, b0 and the measured a, b as columns of 2 x 2 matrices in the (x, y) basis,
 * F = [a b] [a0 b0]^-1 maps reference to measured vectors. Its polar decomposition F = R U
 * (R a rotation by `rotation` radians, +x towards +y; U symmetric) gives the strain
 * E = U - I = [[exx, exy], [exy, eyy]]. To first order F - I = E + [[0, -rotation], [rotation, 0]].
 */
export type Vec2 = [number, number];

export interface Lattice {
  zero: Vec2;
  a: Vec2;
  b: Vec2;
}

export interface StrainComponents {
  exx: number;
  eyy: number;
  exy: number;
  /** radians, +x towards +y */
  rotation: number;
}

/** zero + n a + m b */
export function latticePoint(l: Lattice, n: number, m: number): Vec2 {
  return [l.zero[0] + n * l.a[0] + m * l.b[0], l.zero[1] + n * l.a[1] + m * l.b[1]];
}

/**
 * Orders (n, m) whose disks lie inside an h x w frame with `margin` px to spare, optionally
 * within `maxRadius` px of zero; sorted by distance from zero (then n, m), at most `maxCount`.
 */
export function ordersInFrame(l: Lattice, h: number, w: number, margin: number, opts: { maxRadius?: number; maxCount?: number; includeZero?: boolean } = {}): Array<[number, number]> {
  const la = Math.hypot(...l.a);
  const lb = Math.hypot(...l.b);
  const cross = Math.abs(l.a[0] * l.b[1] - l.a[1] * l.b[0]);
  if (!(cross > 0)) return [];
  // a point at distance D needs |n| <= D |b| / |a x b|
  const span = Math.hypot(h, w);
  const nMax = Math.ceil((span * lb) / cross) + 1;
  const mMax = Math.ceil((span * la) / cross) + 1;
  const out: Array<[number, number, number]> = [];
  for (let n = -nMax; n <= nMax; n++) {
    for (let m = -mMax; m <= mMax; m++) {
      if (n === 0 && m === 0 && opts.includeZero === false) continue;
      const [y, x] = latticePoint(l, n, m);
      if (y < margin || x < margin || y > h - 1 - margin || x > w - 1 - margin) continue;
      const g = Math.hypot(y - l.zero[0], x - l.zero[1]);
      if (opts.maxRadius !== undefined && g > opts.maxRadius) continue;
      out.push([g, n, m]);
    }
  }
  out.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2]);
  return out.slice(0, opts.maxCount ?? out.length).map(([, n, m]) => [n, m]);
}

export interface FitOptions {
  /** peaks with a quality below this are not used (default 0) */
  minQuality?: number;
  /** fewer peaks than this (after rejection) give no fit (default 5; at least 3) */
  minPeaks?: number;
  /** residual (px) above which the worst peak is dropped and the fit repeated (default 1.5) */
  tolerance?: number;
  /** weight each peak by its quality (default false: all used peaks count the same) */
  weighted?: boolean;
}

export interface LatticeFit extends Lattice {
  /** peaks used */
  used: number;
  /** RMS distance (px) between the used peaks and the fitted lattice points */
  rms: number;
  /** 1 for each peak used */
  selected: Uint8Array;
}

/**
 * Weighted least squares for zero, a, b from positions and their orders, over `sel` peaks.
 * Returns null when the orders do not span two dimensions.
 */
function solve(py: ArrayLike<number>, px: ArrayLike<number>, orders: ArrayLike<number>, wts: ArrayLike<number> | null, sel: Uint8Array): Lattice | null {
  // normal equations M p = r for the design rows [1, n, m], one right-hand side per axis
  let s00 = 0, s01 = 0, s02 = 0, s11 = 0, s12 = 0, s22 = 0; // prettier-ignore
  let ry0 = 0, ry1 = 0, ry2 = 0, rx0 = 0, rx1 = 0, rx2 = 0; // prettier-ignore
  for (let k = 0; k < sel.length; k++) {
    if (!sel[k]) continue;
    const wk = wts ? wts[k]! : 1;
    const n = orders[2 * k]!;
    const m = orders[2 * k + 1]!;
    s00 += wk;
    s01 += wk * n;
    s02 += wk * m;
    s11 += wk * n * n;
    s12 += wk * n * m;
    s22 += wk * m * m;
    ry0 += wk * py[k]!;
    ry1 += wk * n * py[k]!;
    ry2 += wk * m * py[k]!;
    rx0 += wk * px[k]!;
    rx1 += wk * n * px[k]!;
    rx2 += wk * m * px[k]!;
  }
  // inverse of the symmetric 3 x 3 matrix by cofactors
  const c00 = s11 * s22 - s12 * s12;
  const c01 = s02 * s12 - s01 * s22;
  const c02 = s01 * s12 - s02 * s11;
  const c11 = s00 * s22 - s02 * s02;
  const c12 = s01 * s02 - s00 * s12;
  const c22 = s00 * s11 - s01 * s01;
  const det = s00 * c00 + s01 * c01 + s02 * c02;
  const scale = Math.max(1e-300, s00 * s11 * s22);
  if (!(Math.abs(det) > 1e-9 * scale)) return null;
  const mul = (r0: number, r1: number, r2: number): [number, number, number] => [
    (c00 * r0 + c01 * r1 + c02 * r2) / det,
    (c01 * r0 + c11 * r1 + c12 * r2) / det,
    (c02 * r0 + c12 * r1 + c22 * r2) / det,
  ];
  const [zy, ay, by] = mul(ry0, ry1, ry2);
  const [zx, ax, bx] = mul(rx0, rx1, rx2);
  return { zero: [zy, zx], a: [ay, ax], b: [by, bx] };
}

/**
 * Fit zero, a, b to peak positions with known orders: drop peaks below `minQuality`, fit, then
 * repeatedly drop the peak farthest from its fitted lattice point while that distance exceeds
 * `tolerance`, refitting each time. `orders` holds (n, m) pairs, flat. Returns null when fewer
 * than `minPeaks` peaks remain or they do not span the plane.
 */
export function fitLattice(py: ArrayLike<number>, px: ArrayLike<number>, orders: ArrayLike<number>, quality: ArrayLike<number> | null, opts: FitOptions = {}): LatticeFit | null {
  const count = py.length;
  const minQuality = opts.minQuality ?? 0;
  const minPeaks = Math.max(3, opts.minPeaks ?? 5);
  const tol = opts.tolerance ?? 1.5;
  const sel = new Uint8Array(count);
  let used = 0;
  for (let k = 0; k < count; k++) {
    const ok = Number.isFinite(py[k]!) && Number.isFinite(px[k]!) && Number.isFinite(orders[2 * k]!) && Number.isFinite(orders[2 * k + 1]!) && (quality === null || quality[k]! >= minQuality);
    sel[k] = ok ? 1 : 0;
    used += sel[k]!;
  }
  const wts = opts.weighted && quality ? quality : null;
  for (;;) {
    if (used < minPeaks) return null;
    const l = solve(py, px, orders, wts, sel);
    if (l === null) return null;
    let worst = -1;
    let worstD = tol;
    let ss = 0;
    for (let k = 0; k < count; k++) {
      if (!sel[k]) continue;
      const [y, x] = latticePoint(l, orders[2 * k]!, orders[2 * k + 1]!);
      const d = Math.hypot(py[k]! - y, px[k]! - x);
      ss += d * d;
      if (d > worstD) {
        worstD = d;
        worst = k;
      }
    }
    if (worst < 0) return { ...l, used, rms: Math.sqrt(ss / used), selected: sel };
    sel[worst] = 0;
    used--;
  }
}

/** Strain and rotation of measured vectors a, b relative to reference vectors a0, b0 (see the header). */
export function strainFromLattice(a: Vec2, b: Vec2, a0: Vec2, b0: Vec2): StrainComponents {
  // columns in the (x, y) basis: M = [[ax, bx], [ay, by]]
  const det0 = a0[1] * b0[0] - b0[1] * a0[0];
  if (!(Math.abs(det0) > 0)) return { exx: NaN, eyy: NaN, exy: NaN, rotation: NaN };
  // inverse of [[a0x, b0x], [a0y, b0y]]
  const i00 = b0[0] / det0;
  const i01 = -b0[1] / det0;
  const i10 = -a0[0] / det0;
  const i11 = a0[1] / det0;
  const f00 = a[1] * i00 + b[1] * i10;
  const f01 = a[1] * i01 + b[1] * i11;
  const f10 = a[0] * i00 + b[0] * i10;
  const f11 = a[0] * i01 + b[0] * i11;
  const rotation = Math.atan2(f10 - f01, f00 + f11);
  const c = Math.cos(rotation);
  const s = Math.sin(rotation);
  // U = R(-rotation) F, symmetric by construction of the angle
  const u00 = c * f00 + s * f10;
  const u01 = c * f01 + s * f11;
  const u10 = -s * f00 + c * f10;
  const u11 = -s * f01 + c * f11;
  return { exx: u00 - 1, eyy: u11 - 1, exy: 0.5 * (u01 + u10), rotation };
}

export interface FoundPeak {
  y: number;
  x: number;
  /** higher is stronger (correlation height) */
  value: number;
}

export interface GuessOptions {
  /** the lattice origin; default: the strongest peak */
  zero?: Vec2;
  /** shortest admissible lattice vector (px; default 8) */
  minLength?: number;
  /** a peak within this many px of a lattice point is indexed (default 3) */
  tolerance?: number;
}

export interface LatticeGuess extends Lattice {
  /** orders (n, m) of the indexed peaks, in the order of `peaks` (NaN where not indexed) */
  orders: Float64Array;
  indexed: number;
}

/** Lagrange-Gauss reduction: the shortest basis of the same lattice, a no longer than b. */
function reduceBasis(a: Vec2, b: Vec2): [Vec2, Vec2] {
  let u = a;
  let v = b;
  const dot = (p: Vec2, q: Vec2) => p[0] * q[0] + p[1] * q[1];
  for (let i = 0; i < 64; i++) {
    if (dot(u, u) > dot(v, v)) [u, v] = [v, u];
    const mu = Math.round(dot(u, v) / dot(u, u));
    if (mu === 0) break;
    v = [v[0] - mu * u[0], v[1] - mu * u[1]];
  }
  if (dot(u, u) > dot(v, v)) [u, v] = [v, u];
  return [u, v];
}

/** Index peaks on a lattice: orders (n, m) of each peak within `tol` px of a lattice point. */
export function indexPeaks(peaks: readonly FoundPeak[], l: Lattice, tol: number): { orders: Float64Array; indexed: number } {
  const det = l.a[0] * l.b[1] - l.a[1] * l.b[0];
  const orders = new Float64Array(2 * peaks.length).fill(NaN);
  let indexed = 0;
  peaks.forEach((p, k) => {
    const dy = p.y - l.zero[0];
    const dx = p.x - l.zero[1];
    const n = Math.round((dy * l.b[1] - dx * l.b[0]) / det);
    const m = Math.round((l.a[0] * dx - l.a[1] * dy) / det);
    const [y, x] = latticePoint(l, n, m);
    if (Math.hypot(p.y - y, p.x - x) <= tol) {
      orders[2 * k] = n;
      orders[2 * k + 1] = m;
      indexed++;
    }
  });
  return { orders, indexed };
}

/**
 * A lattice through peaks found in a sum frame: the shortest difference vector between peaks and
 * the shortest one not parallel to it, reduced to the shortest basis (a the shorter, a x b > 0
 * in (y, x), a pointing to +x where possible), then a least-squares refit over every peak that
 * indexes on it. Returns null when fewer than 3 peaks index.
 */
export function guessLattice(peaks: readonly FoundPeak[], opts: GuessOptions = {}): LatticeGuess | null {
  if (peaks.length < 3) return null;
  const minLength = opts.minLength ?? 8;
  const tol = opts.tolerance ?? 3;
  const strongest = peaks.reduce((p, q) => (q.value > p.value ? q : p));
  const zero: Vec2 = opts.zero ? [opts.zero[0], opts.zero[1]] : [strongest.y, strongest.x];
  const diffs: Array<[number, Vec2]> = [];
  for (let i = 0; i < peaks.length; i++) {
    for (let j = i + 1; j < peaks.length; j++) {
      const v: Vec2 = [peaks[j]!.y - peaks[i]!.y, peaks[j]!.x - peaks[i]!.x];
      const len = Math.hypot(...v);
      if (len >= minLength) diffs.push([len, v]);
    }
  }
  diffs.sort((p, q) => p[0] - q[0]);
  if (diffs.length === 0) return null;
  const a0 = diffs[0]![1];
  const la = diffs[0]![0];
  const second = diffs.find(([len, v]) => Math.abs(a0[0] * v[1] - a0[1] * v[0]) / (la * len) > Math.sin((15 * Math.PI) / 180));
  if (!second) return null;
  let [a, b] = reduceBasis(a0, second[1]);
  if (a[1] < 0 || (a[1] === 0 && a[0] < 0)) a = [-a[0], -a[1]];
  // a x b > 0 in (y, x) components
  if (a[0] * b[1] - a[1] * b[0] < 0) b = [-b[0], -b[1]];
  let guess: Lattice = { zero, a, b };
  // two rounds: index with the guess, refit, index again with the refit
  for (let round = 0; round < 2; round++) {
    const { orders, indexed } = indexPeaks(peaks, guess, tol);
    if (indexed < 3) return null;
    const py = peaks.map((p) => p.y);
    const px = peaks.map((p) => p.x);
    const fit = fitLattice(py, px, orders, null, { minPeaks: 3, tolerance: tol });
    if (!fit) return null;
    guess = { zero: fit.zero, a: fit.a, b: fit.b };
  }
  const { orders, indexed } = indexPeaks(peaks, guess, tol);
  return { ...guess, orders, indexed };
}
