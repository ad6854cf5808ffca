/**
 * Each standard UDF against a plain reference on small data with known values.
 */
import { describe, expect, it } from 'vitest';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { AutoUDF } from '../../src/udf/auto.js';
import { map } from '../../src/udf/map.js';
import {
  ApplyMasksUDF,
  CoMUDF,
  CrystallinityUDF,
  FEMUDF,
  LogsumUDF,
  PickUDF,
  StdDevUDF,
  SumSigUDF,
  SumUDF,
} from '../../src/udf/lib/index.js';
import { runUdf } from '../../src/udf/runner.js';
import type { NDArray } from '../../src/udf/ndarray.js';
import { dataset, diskMask, refMasks, refSum, refSumSig, rng } from './helpers.js';

const close = (got: ArrayLike<number>, want: ArrayLike<number>, tol = 1e-9) => {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const w = want[i]!;
    if (Number.isNaN(w)) expect(got[i], `element ${i}`).toBeNaN();
    else expect(Math.abs(got[i]! - w), `element ${i}: ${got[i]} vs ${w}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(w)));
  }
};

const [h, w] = [6, 16];
const navShape = [3, 4];
const n = 12;
const ds = dataset(navShape, [h, w], 11);

describe('Sum and SumSig', () => {
  it('sum over frames per pixel and over pixels per frame, exactly', async () => {
    const [s, ss] = await runUdf(ds, [new SumUDF(), new SumSigUDF()]);
    expect(Array.from(s!.intensity!.data)).toEqual(Array.from(refSum(ds.data, n, h, w)));
    expect(Array.from(ss!.intensity!.data)).toEqual(Array.from(refSumSig(ds.data, n, h, w)));
  });

  it('Sum with a float32 accumulator declares float32', async () => {
    const s = await runUdf(ds, new SumUDF({ dtype: 'float32' }));
    expect(s.intensity!.dtype).toBe('float32');
    expect(s.intensity!.data).toBeInstanceOf(Float32Array);
    close(s.intensity!.data, refSum(ds.data, n, h, w), 1e-6);
  });
});

describe('StdDevUDF', () => {
  it('mean, population variance and std per pixel (two-pass reference)', async () => {
    const r = await runUdf(ds, new StdDevUDF(), { partitionFrames: 5, tileShape: { depth: 2, rows: 4 } });
    const mean = new Float64Array(h * w);
    const variance = new Float64Array(h * w);
    for (let i = 0; i < h * w; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += ds.data[k * h * w + i]!;
      mean[i] = s / n;
      let v = 0;
      for (let k = 0; k < n; k++) v += (ds.data[k * h * w + i]! - mean[i]!) ** 2;
      variance[i] = v / n;
    }
    close(r.mean!.data, mean);
    close(r.var!.data, variance);
    close(r.std!.data, variance.map(Math.sqrt));
    expect(Array.from(r.num_frames!.data)).toEqual([n]);
    expect(Array.from(r.sum!.data)).toEqual(Array.from(refSum(ds.data, n, h, w)));
  });
});

describe('ApplyMasksUDF', () => {
  it('disk, ring, point, rectangle, dense, COO and CSR masks at once', async () => {
    const r = rng(3);
    const dense = Float64Array.from({ length: h * w }, () => Math.round(r() * 10) / 10);
    const coo = { rows: [0, 2, 5, 2], cols: [1, 3, 15, 3], values: [2, -1, 0.5, 1] };
    const cooDense = new Float64Array(h * w);
    coo.rows.forEach((y, k) => (cooDense[y * w + coo.cols[k]!] += coo.values[k]!));
    const csrDense = new Float64Array(h * w);
    const indptr = [0, 1, 1, 3, 3, 3, 4];
    const indices = [4, 0, 9, 12];
    const values = [1.5, 2, -3, 4];
    for (let y = 0; y < h; y++) for (let k = indptr[y]!; k < indptr[y + 1]!; k++) csrDense[y * w + indices[k]!] = values[k]!;
    const point = new Float64Array(h * w);
    point[4 * w + 7] = 1;
    const rect = new Float64Array(h * w);
    for (let y = 1; y < 4; y++) for (let x = 10; x < 16; x++) rect[y * w + x] = 1;
    const masks = [
      { type: 'disk' as const, cy: 2.5, cx: 7, r: 2.2 },
      { type: 'ring' as const, cy: 3, cx: 8, ri: 1.5, ro: 3 },
      { type: 'point' as const, y: 4, x: 7 },
      { type: 'rectangle' as const, y: 1, x: 10, h: 3, w: 8 },
      { type: 'dense' as const, data: dense },
      { type: 'sparse' as const, format: 'coo' as const, ...coo },
      { type: 'sparse' as const, format: 'csr' as const, indptr, indices, values },
    ];
    const res = await runUdf(ds, new ApplyMasksUDF({ masks }));
    const refs = [diskMask(h, w, 2.5, 7, 2.2), diskMask(h, w, 3, 8, 3, 1.5), point, rect, dense, cooDense, csrDense];
    expect(res.intensity!.data.shape).toEqual([...navShape, masks.length]);
    close(res.intensity!.data, refMasks(ds.data, n, h, w, refs), 1e-12);
  });

  it('a sparse mask reads only its non-zero pixels (NaN everywhere else stays out of the result)', async () => {
    const data = new Float32Array(4 * h * w).fill(NaN);
    const pixels = [[1, 2], [3, 9], [5, 15]] as const;
    for (let k = 0; k < 4; k++) pixels.forEach(([y, x], j) => (data[k * h * w + y * w + x] = k * 10 + j));
    const nanDs = new MemoryDataSet({ data, navShape: [4], sigShape: [h, w] });
    const masks = [
      { type: 'sparse' as const, format: 'coo' as const, rows: pixels.map((p) => p[0]), cols: pixels.map((p) => p[1]) },
      { type: 'point' as const, y: 3, x: 9 },
    ];
    const res = await runUdf(nanDs, new ApplyMasksUDF({ masks }));
    expect(Array.from(res.intensity!.data)).toEqual([0 + 1 + 2, 1, 30 + 1 + 2, 11, 60 + 1 + 2, 21, 90 + 1 + 2, 31]);
  });

  it('rejects bad masks with TESSERA_ERR_UDF_PARAMS', async () => {
    expect(() => new ApplyMasksUDF({ masks: [] })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    await expect(runUdf(ds, new ApplyMasksUDF({ masks: [{ type: 'point', y: 99, x: 0 }] }))).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
    await expect(runUdf(ds, new ApplyMasksUDF({ masks: [{ type: 'dense', data: [1, 2] }] }))).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
  });
});

describe('CoMUDF', () => {
  // one bright pixel per frame at a known position: the centre of mass is that pixel
  const [ny, nx] = [4, 5];
  const [sh, sw] = [16, 16];
  const cy = 8;
  const cx = 8;
  const truth = (iy: number, ix: number): [number, number] => [cy + iy - 1, cx + 2 * ix - 3];
  const spots = new Uint16Array(ny * nx * sh * sw);
  for (let iy = 0; iy < ny; iy++) {
    for (let ix = 0; ix < nx; ix++) {
      const [y, x] = truth(iy, ix);
      spots[(iy * nx + ix) * sh * sw + y * sw + x] = 1000;
    }
  }
  const spotDs = new MemoryDataSet({ data: spots, navShape: [ny, nx], sigShape: [sh, sw] });

  it('finds the spot: raw_com, raw_shifts', async () => {
    const r = await runUdf(spotDs, new CoMUDF());
    for (let iy = 0; iy < ny; iy++) {
      for (let ix = 0; ix < nx; ix++) {
        const k = iy * nx + ix;
        const [y, x] = truth(iy, ix);
        expect([r.raw_com!.data[2 * k], r.raw_com!.data[2 * k + 1]]).toEqual([y, x]);
        expect([r.raw_shifts!.data[2 * k], r.raw_shifts!.data[2 * k + 1]]).toEqual([y - cy, x - cx]);
      }
    }
    expect(r.raw_com!.data.shape).toEqual([ny, nx, 2]);
    expect(r.magnitude!.data.shape).toEqual([ny, nx]);
    expect(Array.from(r.regression!.data)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('scan rotation and flip_y rotate the field as LiberTEM does', async () => {
    const r = await runUdf(spotDs, new CoMUDF({ scanRotation: 30, flipY: true }));
    const a = (30 * Math.PI) / 180;
    for (let k = 0; k < ny * nx; k++) {
      const sy = r.raw_shifts!.data[2 * k]!;
      const sx = r.raw_shifts!.data[2 * k + 1]!;
      // [[cos, sin], [-sin, cos]] @ [[-1, 0], [0, 1]] @ (y, x)
      const fy = Math.cos(a) * -sy + Math.sin(a) * sx;
      const fx = -Math.sin(a) * -sy + Math.cos(a) * sx;
      expect(r.field!.data[2 * k]).toBeCloseTo(fy, 12);
      expect(r.field!.data[2 * k + 1]).toBeCloseTo(fx, 12);
      expect(r.field_y!.data[k]).toBeCloseTo(fy, 12);
      expect(r.magnitude!.data[k]).toBeCloseTo(Math.hypot(fy, fx), 12);
    }
  });

  it('divergence and curl are numpy.gradient sums on the scan grid', async () => {
    const r = await runUdf(spotDs, new CoMUDF({ scanRotation: 10 }));
    const fy = r.field_y!.data;
    const fx = r.field_x!.data;
    const grad = (f: ArrayLike<number>, iy: number, ix: number, axis: 0 | 1) => {
      const at = (y: number, x: number) => f[y * nx + x]!;
      const [p, len] = axis === 0 ? [iy, ny] : [ix, nx];
      const step = (d: number) => (axis === 0 ? at(iy + d, ix) : at(iy, ix + d));
      if (p === 0) return step(1) - step(0);
      if (p === len - 1) return step(0) - step(-1);
      return (step(1) - step(-1)) / 2;
    };
    for (let iy = 0; iy < ny; iy++) {
      for (let ix = 0; ix < nx; ix++) {
        const k = iy * nx + ix;
        expect(r.divergence!.data[k]).toBeCloseTo(grad(fy, iy, ix, 0) + grad(fx, iy, ix, 1), 12);
        expect(r.curl!.data[k]).toBeCloseTo(grad(fy, iy, ix, 1) - grad(fx, iy, ix, 0), 12);
      }
    }
  });

  it('regression 0 subtracts the mean, 1 a linear fit, an array a given correction', async () => {
    const mean = await runUdf(spotDs, new CoMUDF({ regression: 0 }));
    // shifts are (iy - 1, 2 ix - 3): means 0.5 and 1
    close(mean.regression!.data, [0.5, 1, 0, 0, 0, 0], 1e-12);
    close(mean.field_y!.data, Array.from({ length: ny * nx }, (_, k) => Math.floor(k / nx) - 1 - 0.5), 1e-12);
    const lin = await runUdf(spotDs, new CoMUDF({ regression: 1 }));
    // the field is exactly linear in the scan position: [1, y, x] @ [[-1, -3], [1, 0], [0, 2]]
    close(lin.regression!.data, [-1, -3, 1, 0, 0, 2], 1e-9);
    close(lin.field!.data, new Float64Array(2 * ny * nx), 1e-9);
    const given = await runUdf(spotDs, new CoMUDF({ regression: [[-1, -3], [1, 0], [0, 0]] }));
    close(given.field_x!.data, Array.from({ length: ny * nx }, (_, k) => 2 * (k % nx)), 1e-12);
  });

  it('a disk or ring restricts the pixels (reference: dense selection mask)', async () => {
    for (const p of [{ r: 4 }, { r: 5, ri: 2 }, { cy: 3, cx: 12, r: 6 }]) {
      const res = await runUdf(ds, new CoMUDF(p));
      const sel = diskMask(h, w, p.cy ?? 3, p.cx ?? 8, p.r, p.ri ?? -1);
      for (let k = 0; k < n; k++) {
        let s = 0;
        let sy = 0;
        let sx = 0;
        for (let i = 0; i < h * w; i++) {
          const v = ds.data[k * h * w + i]! * sel[i]!;
          s += v;
          sy += v * Math.floor(i / w);
          sx += v * (i % w);
        }
        expect(res.raw_com!.data[2 * k]).toBeCloseTo(sy / s, 10);
        expect(res.raw_com!.data[2 * k + 1]).toBeCloseTo(sx / s, 10);
      }
    }
  });

  it('needs a 2-D scan and ri < r', async () => {
    const oneD = new MemoryDataSet({ data: new Uint16Array(3 * 4 * 8), navShape: [3], sigShape: [4, 8] });
    await expect(runUdf(oneD, new CoMUDF())).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
    expect(() => new CoMUDF({ r: 2, ri: 3 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
  });
});

describe('whole-frame UDFs', () => {
  it('LogsumUDF: sum of log(frame - min(frame) + 1)', async () => {
    const r = await runUdf(ds, new LogsumUDF());
    const ref = new Float64Array(h * w);
    for (let k = 0; k < n; k++) {
      const f = ds.data.subarray(k * h * w, (k + 1) * h * w);
      const min = Math.min(...f);
      for (let i = 0; i < h * w; i++) ref[i] += Math.log(f[i]! - min + 1);
    }
    close(r.logsum!.data, ref, 1e-12);
  });

  it('FEMUDF: population std of the ring pixels', async () => {
    const r = await runUdf(ds, new FEMUDF({ center: [3, 7], radIn: 1, radOut: 3 }));
    const ring = diskMask(h, w, 3, 7, 3, 1);
    for (let k = 0; k < n; k++) {
      const vals = Array.from({ length: h * w }, (_, i) => i).filter((i) => ring[i]).map((i) => ds.data[k * h * w + i]!);
      const m = vals.reduce((a, b) => a + b, 0) / vals.length;
      const sd = Math.sqrt(vals.reduce((a, b) => a + (b - m) ** 2, 0) / vals.length);
      expect(r.intensity!.data[k]).toBeCloseTo(sd, 9);
    }
  });

  it('CrystallinityUDF: ring sum of |rfft2| against a direct 2-D DFT', async () => {
    const params = { radIn: 1, radOut: 3.5, realCenter: [3, 8] as [number, number], realRad: 1.5 };
    const r = await runUdf(ds, new CrystallinityUDF(params));
    const w2 = w / 2 + 1;
    for (let k = 0; k < n; k++) {
      let total = 0;
      for (let ky = 0; ky < h; ky++) {
        for (let kx = 0; kx < w2; kx++) {
          // the ring is centred on (h/2, w/2) of the fftshifted spectrum
          const sy = (ky + h / 2) % h;
          const sx = (kx + w / 2) % w;
          const d2 = (sy - h / 2) ** 2 + (sx - w / 2) ** 2;
          if (!(d2 <= 3.5 ** 2 && d2 > 1)) continue;
          let re = 0;
          let im = 0;
          for (let y = 0; y < h; y++) {
            for (let x = 0; x < w; x++) {
              const masked = (y - 3) ** 2 + (x - 8) ** 2 <= 1.5 ** 2 ? 0 : ds.data[k * h * w + y * w + x]!;
              const a = -2 * Math.PI * ((ky * y) / h + (kx * x) / w);
              re += masked * Math.cos(a);
              im += masked * Math.sin(a);
            }
          }
          total += Math.hypot(re, im);
        }
      }
      expect(r.intensity!.data[k]! / total).toBeCloseTo(1, 10);
    }
  });
});

describe('PickUDF', () => {
  it('returns the frames of the ROI, whole, from sector-split partitions', async () => {
    const roi = new Uint8Array(n);
    roi[2] = 1;
    roi[7] = 1;
    const r = await runUdf(ds, new PickUDF(), { roi });
    expect(r.intensity!.raw.shape).toEqual([2, h, w]);
    expect(r.intensity!.dtype).toBe('uint16');
    expect(Array.from(r.intensity!.raw.subarray(0, h * w))).toEqual(Array.from(ds.data.subarray(2 * h * w, 3 * h * w)));
    expect(Array.from(r.intensity!.raw.subarray(h * w))).toEqual(Array.from(ds.data.subarray(7 * h * w, 8 * h * w)));
  });
});

describe('AutoUDF and map()', () => {
  it('infers a scalar result per frame', async () => {
    const maxima = await map(ds, (f) => Math.max(...f));
    expect(maxima.shape).toEqual(navShape);
    for (let k = 0; k < n; k++) expect(maxima[k]).toBe(Math.max(...ds.data.subarray(k * h * w, (k + 1) * h * w)));
  });

  it('infers dtype and shape from a typed array result', async () => {
    const firstRow = new AutoUDF({ fn: (f: NDArray) => Uint16Array.from(f.subarray(0, 16)) });
    const r = await runUdf(ds, firstRow);
    expect(r.result!.dtype).toBe('uint16');
    expect(r.result!.data.shape).toEqual([...navShape, 16]);
    for (let k = 0; k < n; k++) expect(Array.from(r.result!.data.subarray(k * 16, k * 16 + 16))).toEqual(Array.from(ds.data.subarray(k * h * w, k * h * w + 16)));
  });
});
