/**
 * Test helpers: small datasets with known content and plain, obviously correct reference
 * implementations (one loop per definition) to compare the engine against.
 */
import { MemoryDataSet } from '../../src/udf/dataset.js';

/** Deterministic pseudo-random generator (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** uint16 frames with 12-bit values, as the K2 IS delivers them. */
export function randomFrames(n: number, h: number, w: number, seed = 1): Uint16Array {
  const r = rng(seed);
  const out = new Uint16Array(n * h * w);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 4096);
  return out;
}

export function dataset(navShape: number[], sigShape: [number, number], seed = 1, sectors?: number): MemoryDataSet {
  const n = navShape.reduce((a, b) => a * b, 1);
  return new MemoryDataSet({ data: randomFrames(n, sigShape[0], sigShape[1], seed), navShape, sigShape, sectors });
}

export function frameOf(data: ArrayLike<number>, k: number, h: number, w: number): number[] {
  return Array.from({ length: h * w }, (_, i) => data[k * h * w + i]!);
}

export function refSum(data: ArrayLike<number>, n: number, h: number, w: number, roi?: ArrayLike<number> | null): Float64Array {
  const out = new Float64Array(h * w);
  for (let k = 0; k < n; k++) {
    if (roi && !roi[k]) continue;
    for (let i = 0; i < h * w; i++) out[i] += data[k * h * w + i]!;
  }
  return out;
}

export function refSumSig(data: ArrayLike<number>, n: number, h: number, w: number): Float64Array {
  const out = new Float64Array(n);
  for (let k = 0; k < n; k++) for (let i = 0; i < h * w; i++) out[k] += data[k * h * w + i]!;
  return out;
}

/** Dense mask of a disk d <= r around (cy, cx). */
export function diskMask(h: number, w: number, cy: number, cx: number, r: number, ri = -1): Float64Array {
  const m = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const d2 = (y - cy) ** 2 + (x - cx) ** 2;
      if (d2 <= r * r && (ri < 0 || d2 > ri * ri)) m[y * w + x] = 1;
    }
  }
  return m;
}

export function refMasks(data: ArrayLike<number>, n: number, h: number, w: number, masks: Float64Array[]): Float64Array {
  const out = new Float64Array(n * masks.length);
  for (let k = 0; k < n; k++) {
    masks.forEach((m, j) => {
      let s = 0;
      for (let i = 0; i < h * w; i++) s += data[k * h * w + i]! * m[i]!;
      out[k * masks.length + j] = s;
    });
  }
  return out;
}

/** Centre of mass per frame within a selection mask, as (y, x) shifts from (cy, cx). */
export function refCoM(data: ArrayLike<number>, n: number, h: number, w: number, cy: number, cx: number, sel?: Float64Array): Float64Array {
  const out = new Float64Array(n * 2);
  for (let k = 0; k < n; k++) {
    let s = 0;
    let sy = 0;
    let sx = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const m = sel ? sel[y * w + x]! : 1;
        const v = data[k * h * w + y * w + x]! * m;
        s += v;
        sy += v * y;
        sx += v * x;
      }
    }
    out[k * 2] = s === 0 ? 0 : sy / s - cy;
    out[k * 2 + 1] = s === 0 ? 0 : sx / s - cx;
  }
  return out;
}
