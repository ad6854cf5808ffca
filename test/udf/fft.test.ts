import { describe, expect, it } from 'vitest';
import { fft, ifft, irfft2, rfft2 } from '../../src/udf/fft.js';
import { rng } from './helpers.js';

/** The definition: X[k] = sum_n x[n] exp(-2 pi i k n / N), O(N^2). */
function dft(x: Float64Array): Float64Array {
  const n = x.length / 2;
  const out = new Float64Array(2 * n);
  for (let k = 0; k < n; k++) {
    let re = 0;
    let im = 0;
    for (let j = 0; j < n; j++) {
      const a = (-2 * Math.PI * ((k * j) % n)) / n;
      re += x[2 * j]! * Math.cos(a) - x[2 * j + 1]! * Math.sin(a);
      im += x[2 * j]! * Math.sin(a) + x[2 * j + 1]! * Math.cos(a);
    }
    out[2 * k] = re;
    out[2 * k + 1] = im;
  }
  return out;
}

function randomComplex(n: number, seed: number): Float64Array {
  const r = rng(seed);
  return Float64Array.from({ length: 2 * n }, () => r() * 2 - 1);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('FFT of any length against the O(n^2) DFT', () => {
  it.each([1, 2, 3, 4, 5, 7, 8, 12, 16, 31, 60, 64, 100, 255, 256, 1860])('length %i', (n) => {
    const x = randomComplex(n, n);
    const ref = dft(x);
    const got = fft(x);
    expect(maxAbsDiff(got, ref)).toBeLessThan(1e-9 * Math.max(1, n));
    expect(maxAbsDiff(ifft(got), x)).toBeLessThan(1e-12 * Math.max(1, n));
  });

  it('rfft2 equals the 2-D DFT of a real image, keeping w / 2 + 1 columns (numpy layout)', () => {
    for (const [h, w] of [[5, 6], [6, 5], [4, 8], [7, 7], [1, 3]] as const) {
      const r = rng(h * 100 + w);
      const img = Float64Array.from({ length: h * w }, () => r());
      const w2 = Math.floor(w / 2) + 1;
      const got = rfft2(img, h, w);
      for (let ky = 0; ky < h; ky++) {
        for (let kx = 0; kx < w2; kx++) {
          let re = 0;
          let im = 0;
          for (let y = 0; y < h; y++) {
            for (let x = 0; x < w; x++) {
              const a = -2 * Math.PI * ((ky * y) / h + (kx * x) / w);
              re += img[y * w + x]! * Math.cos(a);
              im += img[y * w + x]! * Math.sin(a);
            }
          }
          expect(got[2 * (ky * w2 + kx)]).toBeCloseTo(re, 10);
          expect(got[2 * (ky * w2 + kx) + 1]).toBeCloseTo(im, 10);
        }
      }
      expect(maxAbsDiff(irfft2(got, h, w), img)).toBeLessThan(1e-12);
    }
  });
});
