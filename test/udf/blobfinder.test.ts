/**
 * Blobfinder building blocks against plain references: templates against their formulas, the
 * FFT window correlation against a direct sum, subpixel refinement of synthetic disks at known
 * positions, the upsampled DFT against a known peak, elevation against a cone, the lattice fit
 * with outliers against a plain least-squares solve of the inliers, the lattice guess, and
 * FastCorrelationUDF through runUdf.
 */
import { describe, expect, it } from 'vitest';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { allocatePeakResults, defaultWindowSize, WindowCorrelator } from '../../src/udf/lib/blobfinder/correlation.js';
import { FastCorrelationUDF } from '../../src/udf/lib/blobfinder/fast-correlation.js';
import { fitLattice, guessLattice, type Lattice, latticePoint, ordersInFrame, strainFromLattice } from '../../src/udf/lib/blobfinder/lattice.js';
import { findPeaks, referenceFromFrame } from '../../src/udf/lib/blobfinder/peaks.js';
import { peakElevation, refineCenterOfMass, UpsampledDft } from '../../src/udf/lib/blobfinder/refine.js';
import { centredTemplate, type TemplateSpec, wrappedTemplate } from '../../src/udf/lib/blobfinder/templates.js';
import { runUdf } from '../../src/udf/runner.js';
import { rng } from './helpers.js';

/** Antialiased disks as the simulator draws them (coverage clamp(r + 1/2 - d, 0, 1)), on a noisy background. */
function renderDisks(h: number, w: number, disks: Array<{ y: number; x: number; r: number; i: number }>, background: number, noiseSeed: number | null): Uint16Array {
  const out = new Uint16Array(h * w);
  const rand = noiseSeed === null ? null : rng(noiseSeed);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let v = background;
      for (const d of disks) v += d.i * Math.min(1, Math.max(0, d.r + 0.5 - Math.hypot(y - d.y, x - d.x)));
      if (rand) {
        // Gaussian shot noise of variance v (Box-Muller)
        const g = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
        v += Math.sqrt(v) * g;
      }
      out[y * w + x] = Math.max(0, Math.min(4095, Math.round(v)));
    }
  }
  return out;
}

describe('templates', () => {
  it('follow their radial profiles; positive part sums to 1, background-subtracting ones to 0', () => {
    const n = 64;
    const disk = wrappedTemplate({ type: 'disk', radius: 10 }, n);
    const sum = (a: Float64Array) => a.reduce((s, v) => s + v, 0);
    expect(sum(disk)).toBeCloseTo(1, 12);
    // centre pixel, edge pixels (d = 10: half covered), outside
    const scale = disk[0]!;
    expect(disk[10]! / scale).toBeCloseTo(0.5, 12); // (0, 10)
    expect(disk[11]!).toBe(0);
    expect(disk[(n - 10) * n]! / scale).toBeCloseTo(0.5, 12); // (-10, 0) wraps
    for (const type of ['backgroundSubtraction', 'radialGradientBackgroundSubtraction'] as const) {
      const t = wrappedTemplate({ type, radius: 10, radiusOuter: 16 }, n);
      expect(Math.abs(sum(t))).toBeLessThan(1e-12);
      expect(t[0]! >= 0).toBe(true);
      expect(t[14]!).toBeLessThan(0); // in the ring
      expect(t[17]!).toBe(0); // beyond radiusOuter
    }
    const g = wrappedTemplate({ type: 'radialGradient', radius: 10 }, n);
    const s = g[5]! / 0.5; // value at d = 5 is 5 / 10, scaled
    expect(g[0]!).toBe(0);
    expect(g[8]! / s).toBeCloseTo(0.8, 12);
    expect(g[10]! / s).toBeCloseTo(0, 12); // (r - d) / 0.5 at d = r
    expect(g[11]!).toBe(0);
  });

  it('the wrapped layout is the centred template rolled to pixel (0, 0)', () => {
    const spec: TemplateSpec = { type: 'backgroundSubtraction', radius: 6 };
    const n = 32;
    const w = wrappedTemplate(spec, n);
    const c = centredTemplate(spec, n, n, n / 2, n / 2);
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) expect(w[y * n + x]!).toBeCloseTo(c[((y + n / 2) % n) * n + ((x + n / 2) % n)]!, 12);
  });

  it('rejects a template that does not fit the window', () => {
    expect(() => wrappedTemplate({ type: 'disk', radius: 20 }, 32)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => new WindowCorrelator({ template: { type: 'disk', radius: 10 }, search: 8, windowSize: 32 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });
});

describe('window correlation', () => {
  const h = 96;
  const w = 112;

  it('equals the direct correlation sum over the log-scaled window at every searched shift', () => {
    const frame = renderDisks(h, w, [{ y: 47.3, x: 60.6, r: 9, i: 300 }], 5, 7);
    for (const logScale of [false, true]) {
      const template: TemplateSpec = { type: 'backgroundSubtraction', radius: 9 };
      const c = new WindowCorrelator({ template, search: 6, logScale, refine: 'none' });
      const n = c.n;
      const res = allocatePeakResults(2);
      // two windows in one complex FFT: both maps must come out right
      c.correlate(frame, h, w, [48, 42], [60, 61], 2, res);
      const t = wrappedTemplate(template, n);
      for (const part of [0, 1] as const) {
        const [wy, wx] = c.windowOrigin(part === 0 ? 48 : 42, part === 0 ? 60 : 61);
        const win = new Float64Array(n * n);
        let min = Infinity;
        for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) min = Math.min(min, (win[y * n + x] = frame[(wy + y) * w + wx + x]!));
        if (logScale) for (let i = 0; i < win.length; i++) win[i] = Math.log(win[i]! - min + 1);
        const map = c.lastMap(part);
        // the quality from the rows evaluated equals the one from the whole map, even for a maximum on the search border
        const [iy, ix] = [res.centerY[part]! - wy, res.centerX[part]! - wx];
        expect(res.elevation[part]!).toBeCloseTo(peakElevation(map, n, 1, 0, iy, ix, res.value[part]!, 1.5, 6), 12);
        expect(res.value[part]!).toBeCloseTo(map[iy * n + ix]!, 12);
        for (let sy = n / 2 - 6; sy <= n / 2 + 6; sy += 3) {
          for (let sx = n / 2 - 6; sx <= n / 2 + 6; sx += 2) {
            let direct = 0;
            for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) direct += win[((y + sy) % n) * n + ((x + sx) % n)]! * t[y * n + x]!;
            expect(map[sy * n + sx]!).toBeCloseTo(direct, 9);
          }
        }
      }
      // float frames (corrections on) take Math.log instead of the integer table: same maps
      const resF = allocatePeakResults(2);
      const cf = new WindowCorrelator({ template, search: 6, logScale, refine: 'none' });
      cf.correlate(Float32Array.from(frame), h, w, [48, 42], [60, 61], 2, resF);
      for (const part of [0, 1] as const) {
        const a = c.lastMap(part);
        const b = cf.lastMap(part);
        for (let i = 0; i < a.length; i++) expect(b[i]!).toBeCloseTo(a[i]!, 10);
      }
      // the disk is inside the first window's search disk: its maximum is the nearest pixel
      expect([res.centerY[0], res.centerX[0]]).toEqual([47, 61]);
    }
  });

  it('finds synthetic disks at known subpixel positions (each template, both refinements)', () => {
    const r = 10;
    const errors: Record<string, number> = {};
    const templates: TemplateSpec[] = [
      { type: 'disk', radius: r },
      { type: 'radialGradient', radius: r },
      { type: 'backgroundSubtraction', radius: r },
      { type: 'radialGradientBackgroundSubtraction', radius: r },
    ];
    const rand = rng(42);
    const truth: Array<[number, number]> = [];
    for (let k = 0; k < 12; k++) truth.push([30 + (k % 3) * 18 + rand(), 30 + Math.floor(k / 3) * 13 + rand()]);
    for (const noisy of [false, true]) {
      // one disk per frame: h x w frames, the disk near the expected position (off by up to 3 px)
      const frames = truth.map(([y, x], k) => renderDisks(h, w, [{ y, x, r, i: 200 }], 4, noisy ? 100 + k : null));
      for (const template of templates) {
        for (const refine of ['com', 'upsample'] as const) {
          const c = new WindowCorrelator({ template, search: 5, refine });
          const res = allocatePeakResults(1);
          let max = 0;
          frames.forEach((f, k) => {
            const [ty, tx] = truth[k]!;
            c.correlate(f, h, w, [Math.round(ty) + 2], [Math.round(tx) - 3], 1, res);
            max = Math.max(max, Math.hypot(res.refinedY[0]! - ty, res.refinedX[0]! - tx));
            expect(res.elevation[0]!).toBeGreaterThan(0);
          });
          errors[`${noisy ? 'noisy' : 'clean'} ${template.type} ${refine}`] = max;
        }
      }
    }
    // measured (r = 10 px): upsampled DFT <= 0.04 px clean (log-scaling a pixel-sampled edge
    // costs about 0.03 px; without it 0.013), <= 0.065 px with shot noise; centre of mass
    // <= 0.23 px (it locks towards the integer maximum of a broad peak)
    for (const [key, e] of Object.entries(errors)) {
      const tol = key.endsWith('upsample') ? (key.startsWith('clean') ? 0.06 : 0.1) : 0.3;
      expect(e, `${key}: ${e.toFixed(4)} px`).toBeLessThan(tol);
    }
  });

  it('a window half outside the frame is filled, not read out of bounds', () => {
    const frame = renderDisks(h, w, [{ y: 12.4, x: 14.7, r: 8, i: 300 }], 3, null);
    const c = new WindowCorrelator({ template: { type: 'disk', radius: 8 }, search: 4 });
    const res = allocatePeakResults(1);
    c.correlate(frame, h, w, [12], [15], 1, res);
    expect(Math.hypot(res.refinedY[0]! - 12.4, res.refinedX[0]! - 14.7)).toBeLessThan(0.1);
  });

  it('default window size holds the template at every searched shift', () => {
    expect(defaultWindowSize({ type: 'disk', radius: 22 }, 8)).toBe(64);
    expect(defaultWindowSize({ type: 'backgroundSubtraction', radius: 22 }, 8)).toBe(128);
  });
});

describe('refinement and quality', () => {
  it('upsampled DFT finds the maximum of a band-limited peak to 1e-3 px', () => {
    // a periodic peak exp(cos) in each axis, centred at (cy, cx): smooth, with a known maximum
    const n = 32;
    for (const [cy, cx] of [
      [15.37, 16.81],
      [16.02, 15.5],
    ] as Array<[number, number]>) {
      const re = new Float64Array(2 * n * n);
      for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) re[2 * (y * n + x)] = Math.exp(3 * Math.cos((2 * Math.PI * (y - cy)) / n) + 3 * Math.cos((2 * Math.PI * (x - cx)) / n));
      const spec = dft2(re, n);
      const up = new UpsampledDft(n, 10, 0.5);
      const [py, px] = up.refine(spec, 0, Math.round(cy), Math.round(cx));
      expect(Math.abs(py - cy)).toBeLessThan(1e-3);
      expect(Math.abs(px - cx)).toBeLessThan(1e-3);
      // the same map as the imaginary part of a pair
      const im = new Float64Array(2 * n * n);
      for (let i = 0; i < n * n; i++) im[2 * i + 1] = re[2 * i]!;
      const [qy, qx] = up.refine(dft2(im, n), 1, Math.round(cy), Math.round(cx));
      expect(Math.abs(qy - py)).toBeLessThan(1e-9);
      expect(Math.abs(qx - px)).toBeLessThan(1e-9);
    }
  });

  it('centre of mass of a symmetric peak is its centre; elevation of a cone is its slope', () => {
    const n = 16;
    const cone = new Float64Array(n * n);
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) cone[y * n + x] = 10 - 0.75 * Math.hypot(y - 8, x - 7);
    const [cy, cx] = refineCenterOfMass(cone, n, 1, 0, 8, 7, 2);
    expect(cy).toBeCloseTo(8, 12);
    expect(cx).toBeCloseTo(7, 12);
    expect(peakElevation(cone, n, 1, 0, 8, 7, 10, 1.5, 6)).toBeCloseTo(0.75, 12);
    // a flat map has no elevation
    expect(peakElevation(new Float64Array(n * n).fill(3), n, 1, 0, 8, 8, 3, 1.5, 6)).toBe(0);
  });
});

/** Plain O(n^4) 2-D DFT of interleaved complex data. */
function dft2(a: Float64Array, n: number): Float64Array {
  const out = new Float64Array(2 * n * n);
  for (let ky = 0; ky < n; ky++) {
    for (let kx = 0; kx < n; kx++) {
      let re = 0;
      let im = 0;
      for (let y = 0; y < n; y++) {
        for (let x = 0; x < n; x++) {
          const ph = (-2 * Math.PI * (((ky * y) % n) * n + ((kx * x) % n) * n)) / (n * n);
          const c = Math.cos(ph);
          const s = Math.sin(ph);
          const ar = a[2 * (y * n + x)]!;
          const ai = a[2 * (y * n + x) + 1]!;
          re += ar * c - ai * s;
          im += ar * s + ai * c;
        }
      }
      out[2 * (ky * n + kx)] = re;
      out[2 * (ky * n + kx) + 1] = im;
    }
  }
  return out;
}

/** Least squares of [1 n m] p = y by the normal equations and Gaussian elimination (the plain way). */
function plainLeastSquares(ys: number[], orders: number[][]): number[] {
  const m = [
    [0, 0, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
  ];
  ys.forEach((y, k) => {
    const row = [1, orders[k]![0]!, orders[k]![1]!];
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) m[i]![j] += row[i]! * row[j]!;
      m[i]![3] += row[i]! * y;
    }
  });
  for (let i = 0; i < 3; i++) {
    for (let r = i + 1; r < 3; r++) {
      const f = m[r]![i]! / m[i]![i]!;
      for (let c = i; c < 4; c++) m[r]![c] -= f * m[i]![c]!;
    }
  }
  const p = [0, 0, 0];
  for (let i = 2; i >= 0; i--) {
    let s = m[i]![3]!;
    for (let j = i + 1; j < 3; j++) s -= m[i]![j]! * p[j]!;
    p[i] = s / m[i]![i]!;
  }
  return p;
}

describe('lattice fit', () => {
  const truth: Lattice = { zero: [300.2, 410.7], a: [12.5, 61.3], b: [55.1, -18.4] };

  it('recovers known vectors with outliers and weak peaks present; equals least squares of the inliers', () => {
    const rand = rng(9);
    const orders: number[][] = [];
    for (let n = -3; n <= 3; n++) for (let m = -3; m <= 3; m++) orders.push([n, m]);
    const py: number[] = [];
    const px: number[] = [];
    const quality: number[] = [];
    orders.forEach(([n, m]) => {
      const [y, x] = latticePoint(truth, n!, m!);
      py.push(y + (rand() - 0.5) * 0.1);
      px.push(x + (rand() - 0.5) * 0.1);
      quality.push(1);
    });
    const outliers = [3, 17, 30, 44];
    for (const k of outliers) {
      py[k] += 4 + 6 * rand();
      px[k] -= 3 + 5 * rand();
    }
    const weak = [8, 25];
    for (const k of weak) {
      quality[k] = 0.001;
      py[k] += 40; // garbage, but below the minimum quality
    }
    const fit = fitLattice(py, px, orders.flat(), quality, { minQuality: 0.01, tolerance: 1 })!;
    expect(fit).not.toBeNull();
    expect(fit.used).toBe(orders.length - outliers.length - weak.length);
    for (const k of [...outliers, ...weak]) expect(fit.selected[k]).toBe(0);
    for (const [got, want] of [
      [fit.zero, truth.zero],
      [fit.a, truth.a],
      [fit.b, truth.b],
    ] as const) {
      expect(Math.abs(got[0] - want[0])).toBeLessThan(0.02);
      expect(Math.abs(got[1] - want[1])).toBeLessThan(0.02);
    }
    const inl = orders.map((_, k) => k).filter((k) => fit.selected[k]);
    const ly = plainLeastSquares(inl.map((k) => py[k]!), inl.map((k) => orders[k]!));
    const lx = plainLeastSquares(inl.map((k) => px[k]!), inl.map((k) => orders[k]!));
    expect(fit.zero[0]).toBeCloseTo(ly[0]!, 9);
    expect(fit.a[0]).toBeCloseTo(ly[1]!, 9);
    expect(fit.b[0]).toBeCloseTo(ly[2]!, 9);
    expect(fit.zero[1]).toBeCloseTo(lx[0]!, 9);
    expect(fit.a[1]).toBeCloseTo(lx[1]!, 9);
    expect(fit.b[1]).toBeCloseTo(lx[2]!, 9);
    expect(fit.rms).toBeLessThan(0.1);
  });

  it('gives no fit for too few peaks, collinear orders or NaN positions', () => {
    const pts = [
      [0, 0],
      [1, 0],
      [2, 0],
      [3, 0],
      [-1, 0],
    ];
    const py = pts.map(([n, m]) => latticePoint(truth, n!, m!)[0]);
    const px = pts.map(([n, m]) => latticePoint(truth, n!, m!)[1]);
    expect(fitLattice(py, px, pts.flat(), null)).toBeNull(); // collinear
    const ok = [
      [0, 0],
      [1, 0],
      [0, 1],
      [1, 1],
      [-1, 1],
    ];
    const qy = ok.map(([n, m]) => latticePoint(truth, n!, m!)[0]);
    const qx = ok.map(([n, m]) => latticePoint(truth, n!, m!)[1]);
    expect(fitLattice(qy, qx, ok.flat(), null)).not.toBeNull();
    qy[2] = NaN;
    expect(fitLattice(qy, qx, ok.flat(), null)).toBeNull(); // 4 left < minPeaks 5
    expect(fitLattice(qy, qx, ok.flat(), null, { minPeaks: 3 })).not.toBeNull();
  });

  it('strain and rotation of the simulator lattice are exactly its strain field (polar decomposition)', () => {
    const scan = new SimulatedScan({ scanShape: [5, 7], seed: 3, strainScale: 4 });
    for (let iy = 0; iy < 5; iy++) {
      for (let ix = 0; ix < 7; ix++) {
        const l = scan.latticeAt(iy, ix);
        const e = strainFromLattice(l.a, l.b, scan.a0, scan.b0);
        const t = scan.strainAt(iy, ix);
        expect(Math.abs(e.exx - t.exx)).toBeLessThan(1e-12);
        expect(Math.abs(e.eyy - t.eyy)).toBeLessThan(1e-12);
        expect(Math.abs(e.exy - t.exy)).toBeLessThan(1e-12);
        expect(Math.abs(e.rotation - t.rotation)).toBeLessThan(1e-12);
      }
    }
    // and relative to itself: nothing
    expect(strainFromLattice(scan.a0, scan.b0, scan.a0, scan.b0)).toEqual({ exx: 0, eyy: 0, exy: 0, rotation: 0 });
  });

  it('orders in the frame stay inside the margin, nearest first', () => {
    const orders = ordersInFrame(truth, 600, 800, 20);
    expect(orders[0]).toEqual([0, 0]);
    let last = 0;
    for (const [n, m] of orders) {
      const [y, x] = latticePoint(truth, n, m);
      expect(y >= 20 && x >= 20 && y <= 579 && x <= 779).toBe(true);
      const g = Math.hypot(y - truth.zero[0], x - truth.zero[1]);
      expect(g).toBeGreaterThanOrEqual(last);
      last = g;
    }
    expect(ordersInFrame(truth, 600, 800, 20, { maxCount: 8 })).toEqual(orders.slice(0, 8));
  });
});

/** Do (a, b) and (a0, b0) generate the same lattice? a0, b0 integer combinations of a, b with det +-1. */
function sameLattice(a: [number, number], b: [number, number], a0: [number, number], b0: [number, number], tol: number): boolean {
  const det = a[0] * b[1] - a[1] * b[0];
  const coeff = (v: [number, number]) => [(v[0] * b[1] - v[1] * b[0]) / det, (a[0] * v[1] - a[1] * v[0]) / det];
  const [p, q] = coeff(a0);
  const [r, s] = coeff(b0);
  const ints = [p!, q!, r!, s!].every((c) => Math.abs(c - Math.round(c)) < tol);
  return ints && Math.abs(Math.abs(Math.round(p!) * Math.round(s!) - Math.round(q!) * Math.round(r!)) - 1) < 1e-9;
}

describe('reference lattice from a frame', () => {
  it('guessLattice indexes noisy peaks with gaps and recovers the lattice', () => {
    const truth: Lattice = { zero: [200, 260], a: [4.5, 41.2], b: [37.3, -9.1] };
    const rand = rng(5);
    const peaks = [];
    for (let n = -3; n <= 3; n++) {
      for (let m = -3; m <= 3; m++) {
        if (rand() < 0.25 && (n || m)) continue; // missing disks
        const [y, x] = latticePoint(truth, n, m);
        peaks.push({ y: y + (rand() - 0.5) * 0.4, x: x + (rand() - 0.5) * 0.4, value: n === 0 && m === 0 ? 10 : 1 + rand() });
      }
    }
    const g = guessLattice(peaks)!;
    expect(g.indexed).toBe(peaks.length);
    expect(Math.hypot(g.zero[0] - 200, g.zero[1] - 260)).toBeLessThan(0.3);
    expect(sameLattice(g.a, g.b, truth.a, truth.b, 0.02)).toBe(true);
    expect(guessLattice(peaks.slice(0, 2))).toBeNull();
  });

  it('findPeaks and referenceFromFrame on a rendered lattice of disks', () => {
    const [h, w] = [256, 320];
    const truth: Lattice = { zero: [128.3, 161.6], a: [6.2, 47.9], b: [44.1, -11.7] };
    const disks = [];
    for (let n = -4; n <= 4; n++) {
      for (let m = -4; m <= 4; m++) {
        const [y, x] = latticePoint(truth, n, m);
        if (y < 10 || x < 10 || y > h - 10 || x > w - 10) continue;
        disks.push({ y, x, r: 8, i: n === 0 && m === 0 ? 900 : 300 });
      }
    }
    const frame = renderDisks(h, w, disks, 3, 11);
    const peaks = findPeaks(frame, h, w, { template: { type: 'disk', radius: 8 } });
    // every disk whose window fits is found, near its true centre
    const inner = disks.filter((d) => d.y > 24 && d.x > 24 && d.y < h - 24 && d.x < w - 24);
    for (const d of inner) {
      const near = peaks.find((p) => Math.hypot(p.y - d.y, p.x - d.x) < 0.2);
      expect(near, `disk at ${d.y.toFixed(1)}, ${d.x.toFixed(1)}`).toBeDefined();
    }
    const ref = referenceFromFrame(frame, h, w, { template: { type: 'disk', radius: 8 } });
    expect(Math.hypot(ref.lattice.zero[0] - truth.zero[0], ref.lattice.zero[1] - truth.zero[1])).toBeLessThan(0.1);
    expect(sameLattice(ref.lattice.a, ref.lattice.b, truth.a, truth.b, 0.01)).toBe(true);
    expect(ref.indices[0]).toEqual([0, 0]);
    expect(ref.indices.length).toBe(peaks.length);
    // a frame of noise has no lattice
    const noise = renderDisks(64, 64, [], 3, 12);
    expect(() => referenceFromFrame(noise, 64, 64, { template: { type: 'disk', radius: 4 }, threshold: 0.9 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });
});

describe('FastCorrelationUDF', () => {
  it('per frame: integer and refined positions, heights and elevations of moving disks', async () => {
    const [h, w] = [80, 96];
    const nav = [2, 3];
    const base: Array<[number, number]> = [
      [25, 30],
      [50, 62],
      [28, 70],
    ];
    const shifts = Array.from({ length: 6 }, (_, k) => [0.37 * k - 1, 1.1 - 0.29 * k]);
    const frames = new Uint16Array(6 * h * w);
    shifts.forEach(([dy, dx], k) => frames.set(renderDisks(h, w, base.map(([y, x]) => ({ y: y + dy!, x: x + dx!, r: 7, i: 250 })), 4, 30 + k), k * h * w));
    const ds = new MemoryDataSet({ data: frames, navShape: nav, sigShape: [h, w] });
    const r = await runUdf(ds, new FastCorrelationUDF({ peaks: base, template: { type: 'radialGradientBackgroundSubtraction', radius: 7 }, search: 4 }));
    expect(r.refineds!.data.shape).toEqual([2, 3, 3, 2]);
    for (let k = 0; k < 6; k++) {
      for (let p = 0; p < 3; p++) {
        const ty = base[p]![0] + shifts[k]![0]!;
        const tx = base[p]![1] + shifts[k]![1]!;
        expect(Math.abs(r.refineds!.raw[k * 6 + 2 * p]! - ty)).toBeLessThan(0.1);
        expect(Math.abs(r.refineds!.raw[k * 6 + 2 * p + 1]! - tx)).toBeLessThan(0.1);
        expect(Math.abs(r.centers!.raw[k * 6 + 2 * p]! - ty)).toBeLessThanOrEqual(1);
        expect(r.peakElevations!.raw[k * 3 + p]!).toBeGreaterThan(0);
        expect(r.peakValues!.raw[k * 3 + p]!).toBeGreaterThan(0);
      }
    }
  });
});
