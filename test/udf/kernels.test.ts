/**
 * The SIMD tile kernels (kernels.wat) against plain JavaScript references: random uint16 tiles
 * of odd widths and depths, random masks, every row window and byte alignment of the tile in
 * memory; and the UDFs that use them (ApplyMasksUDF, StdDevUDF) with kernels on and off.
 */
import { describe, expect, it } from 'vitest';
import { type KernelStdDevState, TileKernels, tileKernelsAvailable, type WasmMemory } from '../../src/udf/kernels.js';
import { maskRuns } from '../../src/udf/masks.js';
import { mergeStdDev, StdDevUDF } from '../../src/udf/lib/stddev.js';
import { ApplyMasksUDF } from '../../src/udf/lib/apply-masks.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { runUdf } from '../../src/udf/runner.js';
import { PartitionTask } from '../../src/udf/partition-task.js';
import { SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import { rng } from './helpers.js';

const hasKernels = tileKernelsAvailable();
const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => WasmMemory } }).WebAssembly;

function randomTile(len: number, r: () => number, max = 65536): Uint16Array {
  const t = new Uint16Array(len);
  for (let i = 0; i < len; i++) t[i] = Math.floor(r() * max);
  return t;
}

/** A sorted random subset of [0, n) with values from `value()`. */
function randomSparse(n: number, density: number, r: () => number, value: () => number): { idx: number[]; val: number[] } {
  const idx: number[] = [];
  const val: number[] = [];
  for (let i = 0; i < n; i++) {
    if (r() < density) {
      idx.push(i);
      val.push(value());
    }
  }
  return { idx, val };
}

/** Plain reference: out[f] = sum over mask entries in rows [row, row + rows) of pixel * value. */
function refDot(tile: Uint16Array, depth: number, w: number, row: number, rows: number, idx: number[], val: number[]): number[] {
  const n = rows * w;
  const out: number[] = [];
  for (let f = 0; f < depth; f++) {
    let acc = 0;
    for (let j = 0; j < idx.length; j++) {
      const i = idx[j]! - row * w;
      if (i >= 0 && i < n) acc += tile[f * n + i]! * val[j]!;
    }
    out.push(acc);
  }
  return out;
}

/** A host memory with a bump allocator, to run the kernels on tiles that live in it (no copy). */
function hostMemory(): { memory: WasmMemory; alloc(bytes: number): number } {
  const memory = new wasm.Memory({ initial: 16 });
  let top = 64;
  return {
    memory,
    alloc(bytes) {
      const p = top;
      top += Math.ceil(bytes / 16) * 16;
      const size = memory.buffer.byteLength;
      if (top > size) memory.grow(Math.ceil((top - size) / 65536));
      return p;
    },
  };
}

describe.skipIf(!hasKernels)('SIMD tile kernels vs JavaScript references', () => {
  it('runs of a binary / integer mask sum exactly, for every row window, odd widths and depths', () => {
    const r = rng(11);
    const k = TileKernels.create()!;
    try {
      for (const [h, w, depth] of [[7, 13, 3], [5, 1, 2], [9, 17, 1], [4, 256, 2], [3, 31, 5]] as const) {
        const { idx } = randomSparse(h * w, 0.4, r, () => 1);
        const runs = maskRuns(idx, idx.map(() => 1), h, w)!;
        expect(runs).not.toBeNull();
        // the runs cover exactly the mask's pixels, none crosses a row
        const covered: number[] = [];
        for (let j = 0; j < runs.runs.length; j += 2) {
          const [s, len] = [runs.runs[j]!, runs.runs[j + 1]!];
          expect(Math.floor(s / w)).toBe(Math.floor((s + len - 1) / w));
          for (let i = 0; i < len; i++) covered.push(s + i);
        }
        expect(covered).toEqual(idx);
        for (let row = 0; row < h; row++) {
          for (let rows = 1; row + rows <= h; rows++) {
            const tile = randomTile(depth * rows * w, r);
            const out = new Float64Array(depth * 2).fill(0.5);
            const a = runs.rowStart[row]!;
            k.runsSum(tile, depth, runs.runs, a, runs.rowStart[row + rows]! - a, row * w, out, 1, 2);
            const ref = refDot(tile, depth, w, row, rows, idx, idx.map(() => 1));
            for (let f = 0; f < depth; f++) {
              expect(out[2 * f + 1]).toBe(0.5 + ref[f]!);
              expect(out[2 * f]).toBe(0.5);
            }
          }
        }
      }
    } finally {
      k.release();
    }
  });

  it('CoM sums (sum v, sum v y, sum v x) are exact for widths across the 256-column blocks, odd widths, 65535 pixels', () => {
    const r = rng(15);
    const k = TileKernels.create()!;
    try {
      for (const [rows, w, depth] of [[3, 777, 2], [2, 2048, 1], [4, 256, 3], [5, 9, 2], [1, 263, 1], [2, 7, 1]] as const) {
        const tile = randomTile(depth * rows * w, r);
        tile.fill(65535, 0, Math.min(tile.length, 300));
        const [y0, x0] = [17, 1024];
        const out = new Float64Array(3 * depth);
        k.comSums(tile, depth, rows, w, y0, x0, out);
        for (let f = 0; f < depth; f++) {
          let [s, sy, sx] = [0, 0, 0];
          for (let y = 0; y < rows; y++) {
            for (let x = 0; x < w; x++) {
              const v = tile[(f * rows + y) * w + x]!;
              s += v;
              sy += v * (y0 + y);
              sx += v * (x0 + x);
            }
          }
          expect([out[3 * f], out[3 * f + 1], out[3 * f + 2]]).toEqual([s, sy, sx]);
        }
      }
    } finally {
      k.release();
    }
  });

  it('Sum of one-frame tiles hands its frame totals to SumSig: exact, per tile object, odd sizes', () => {
    const r = rng(16);
    const k = TileKernels.create()!;
    try {
      for (const n of [1, 7, 8, 9, 4099, 1860 * 256]) {
        const acc = k.accumulator(n);
        const ref = new Float64Array(n);
        const sums = new Float64Array(3);
        const refSums = [0, 0, 0];
        for (let f = 0; f < 3; f++) {
          const tile = randomTile(n, r);
          tile.fill(65535, 0, Math.min(n, 500));
          k.sumFrames(tile, 1, acc, 0);
          k.frameSums(tile, 1, sums.subarray(f, f + 1));
          // a copy (another object): computed, not taken from Sum's totals
          k.frameSums(tile.slice(), 1, sums.subarray(f, f + 1));
          for (let i = 0; i < n; i++) (ref[i] += tile[i]!), (refSums[f] += 2 * tile[i]!);
        }
        const out = new Float64Array(n);
        k.flush(acc, out);
        expect(Array.from(out)).toEqual(Array.from(ref));
        expect(Array.from(sums)).toEqual(refSums);
      }
    } finally {
      k.release();
    }
  });

  it('maskRuns refuses masks of mixed or non-integer values', () => {
    expect(maskRuns([0, 1], [1, 2], 1, 4)).toBeNull();
    expect(maskRuns([0, 1], [0.5, 0.5], 1, 4)).toBeNull();
    expect(maskRuns([0, 1, 5], [3, 3, 3], 2, 4)).toEqual({ runs: Int32Array.from([0, 2, 5, 1]), rowStart: Int32Array.from([0, 1, 2]), value: 3 });
  });

  it('sparse gather equals the JavaScript loop bit for bit; dense f64x2 dot within 1e-12 (exact for integer masks)', () => {
    const r = rng(12);
    const k = TileKernels.create()!;
    try {
      for (const [h, w, depth] of [[6, 11, 2], [8, 256, 1], [5, 3, 4], [4, 33, 3]] as const) {
        const sp = randomSparse(h * w, 0.3, r, () => r() * 4 - 1);
        const idx = Int32Array.from(sp.idx);
        const val = Float64Array.from(sp.val);
        const rowStart = Int32Array.from({ length: h + 1 }, (_, y) => sp.idx.filter((i) => i < y * w).length);
        const dense = Float64Array.from({ length: h * w }, () => r() * 2 - 0.5);
        const intDense = Float64Array.from({ length: h * w }, () => Math.floor(r() * 200) - 100);
        for (let row = 0; row < h; row++) {
          for (let rows = 1; row + rows <= h; rows++) {
            const tile = randomTile(depth * rows * w, r);
            const out = new Float64Array(depth * 3);
            const a = rowStart[row]!;
            k.sparseDot(tile, depth, idx, val, a, rowStart[row + rows]! - a, row * w, out, 0, 3);
            k.denseDot(tile, depth, dense, row * w, out, 1, 3);
            k.denseDot(tile, depth, intDense, row * w, out, 2, 3);
            const all = Array.from({ length: h * w }, (_, i) => i);
            const refSparse = refDot(tile, depth, w, row, rows, sp.idx, sp.val);
            const refDense = refDot(tile, depth, w, row, rows, all, Array.from(dense));
            const refInt = refDot(tile, depth, w, row, rows, all, Array.from(intDense));
            for (let f = 0; f < depth; f++) {
              expect(out[3 * f]).toBe(refSparse[f]);
              expect(Math.abs(out[3 * f + 1]! - refDense[f]!)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(refDense[f]!)));
              expect(out[3 * f + 2]).toBe(refInt[f]);
            }
          }
        }
      }
    } finally {
      k.release();
    }
  });

  it('tiles that already live in the kernel memory are used in place, at every 2-byte alignment', () => {
    const host = hostMemory();
    const k = TileKernels.onMemory(host.memory, (b) => host.alloc(b))!;
    const r = rng(13);
    const [h, w, depth] = [5, 19, 3];
    const { idx } = randomSparse(h * w, 0.5, r, () => 1);
    const runs = maskRuns(idx, idx.map(() => 1), h, w)!;
    const dense = Float64Array.from({ length: h * w }, () => r());
    for (let shift = 0; shift < 8; shift++) {
      const base = host.alloc(depth * h * w * 2 + 32) + 2 * shift;
      const tile = new Uint16Array(host.memory.buffer, base, depth * h * w);
      tile.set(randomTile(tile.length, r));
      const out = new Float64Array(depth * 2);
      k.runsSum(tile, depth, runs.runs, 0, runs.rowStart[h]!, 0, out, 0, 2);
      k.denseDot(tile, depth, dense, 0, out, 1, 2);
      const refR = refDot(tile, depth, w, 0, h, idx, idx.map(() => 1));
      const refD = refDot(tile, depth, w, 0, h, Array.from({ length: h * w }, (_, i) => i), Array.from(dense));
      for (let f = 0; f < depth; f++) {
        expect(out[2 * f]).toBe(refR[f]);
        expect(Math.abs(out[2 * f + 1]! - refD[f]!)).toBeLessThanOrEqual(1e-12 * refD[f]!);
      }
    }
    // and a tile outside that memory is staged (copied) instead: same result
    const tile = randomTile(depth * h * w, r);
    const out = new Float64Array(depth);
    k.runsSum(tile, depth, runs.runs, 0, runs.rowStart[h]!, 0, out, 0, 1);
    expect(Array.from(out)).toEqual(refDot(tile, depth, w, 0, h, idx, idx.map(() => 1)));
  });

  it('StdDev batches (exact s, q; Chan merge) equal a JavaScript twin bit for bit and a two-pass reference within 1e-12', () => {
    const r = rng(14);
    const k = TileKernels.create()!;
    try {
      for (const [h, w] of [[3, 13], [2, 256], [4, 7], [1, 1]] as const) {
        const n = h * w;
        const state: KernelStdDevState = k.stdDevState(n);
        const jsSum = new Float64Array(n);
        const jsVar = new Float64Array(n);
        const all: Uint16Array[] = [];
        let merged = 0;
        // batches of 1, 3+2 (two tiles) and 5 frames, on an offset band for the second and third
        for (const depths of [[1], [3, 2], [5]]) {
          const s = new Float64Array(n);
          const q = new Float64Array(n);
          let d = 0;
          for (const depth of depths) {
            const tile = randomTile(depth * n, r);
            all.push(tile);
            k.stdDevAdd(tile, depth, state, 0);
            for (let f = 0; f < depth; f++) for (let i = 0; i < n; i++) (s[i] += tile[f * n + i]!), (q[i] += tile[f * n + i]! ** 2);
            d += depth;
          }
          k.stdDevFlush(state, 0, n, d, merged);
          const m = Float64Array.from(q, (qi, i) => (d * qi - s[i]! * s[i]!) / d);
          mergeStdDev(merged, jsSum, jsVar, d, s, m);
          merged += d;
        }
        const sum = new Float64Array(n);
        const varsum = new Float64Array(n);
        k.readStdDev(state, sum, varsum);
        expect(Array.from(sum)).toEqual(Array.from(jsSum));
        expect(Array.from(varsum)).toEqual(Array.from(jsVar));
        const frames = all.flatMap((t) => Array.from({ length: t.length / n }, (_, f) => t.subarray(f * n, (f + 1) * n)));
        for (let i = 0; i < n; i++) {
          const total = frames.reduce((a, fr) => a + fr[i]!, 0);
          const mean = total / frames.length;
          const v = frames.reduce((a, fr) => a + (fr[i]! - mean) ** 2, 0);
          expect(sum[i]).toBe(total);
          expect(Math.abs(varsum[i]! - v)).toBeLessThanOrEqual(1e-12 * Math.max(1, v));
        }
      }
    } finally {
      k.release();
    }
  });
});

describe.skipIf(!hasKernels)('UDFs on kernels equal their JavaScript loops', () => {
  const [h, w] = [13, 21];
  const nav = [3, 5];
  const n = 15;
  const r = rng(21);
  const data = randomTile(n * h * w, r);
  const ds = new MemoryDataSet({ data, navShape: nav, sigShape: [h, w], sectors: 3 });

  it('ApplyMasksUDF: shapes, binary/integer/float dense, COO of mixed values, any tiling; equal to a plain dot product', async () => {
    const floatDense = Array.from({ length: h * w }, () => r() - 0.3);
    const binDense = Array.from({ length: h * w }, () => (r() < 0.5 ? 1 : 0));
    const intDense = Array.from({ length: h * w }, () => Math.floor(r() * 7) - 3);
    const twos = Array.from({ length: h * w }, () => (r() < 0.3 ? 2 : 0));
    const coo = randomSparse(h * w, 0.2, r, () => Math.floor(r() * 5) + 0.25);
    const masks = [
      { type: 'disk' as const, cy: 6.5, cx: 10, r: 5.3 },
      { type: 'ring' as const, cy: 6, cx: 9, ri: 2, ro: 7 },
      { type: 'rectangle' as const, y: 2, x: 3, h: 7, w: 11 },
      { type: 'point' as const, y: 12, x: 20 },
      { type: 'dense' as const, data: floatDense },
      { type: 'dense' as const, data: binDense },
      { type: 'dense' as const, data: intDense },
      { type: 'dense' as const, data: twos },
      { type: 'sparse' as const, format: 'coo' as const, rows: coo.idx.map((i) => Math.floor(i / w)), cols: coo.idx.map((i) => i % w), values: coo.val },
    ];
    // reference masks as dense arrays
    const dense = (m: (y: number, x: number) => number) => Array.from({ length: h * w }, (_, i) => m(Math.floor(i / w), i % w));
    const refs = [
      dense((y, x) => ((y - 6.5) ** 2 + (x - 10) ** 2 <= 5.3 ** 2 ? 1 : 0)),
      dense((y, x) => ((y - 6) ** 2 + (x - 9) ** 2 <= 49 && (y - 6) ** 2 + (x - 9) ** 2 > 4 ? 1 : 0)),
      dense((y, x) => (y >= 2 && y < 9 && x >= 3 && x < 14 ? 1 : 0)),
      dense((y, x) => (y === 12 && x === 20 ? 1 : 0)),
      floatDense,
      binDense,
      intDense,
      twos,
      dense((y, x) => {
        const j = coo.idx.indexOf(y * w + x);
        return j < 0 ? 0 : coo.val[j]!;
      }),
    ];
    const expected = new Float64Array(n * masks.length);
    for (let f = 0; f < n; f++) for (let m = 0; m < masks.length; m++) for (let i = 0; i < h * w; i++) expected[f * masks.length + m] += data[f * h * w + i]! * refs[m]![i]!;
    for (const tileShape of [undefined, { depth: 2, rows: 3 }, { depth: 4, rows: 1 }, { depth: 1, rows: 13 }]) {
      const on = await runUdf(ds, new ApplyMasksUDF({ masks }), { tileShape, partitionFrames: 4 });
      const off = await runUdf(ds, new ApplyMasksUDF({ masks }), { tileShape, partitionFrames: 4, kernels: false });
      const a = on.intensity!.data;
      const b = off.intensity!.data;
      for (let i = 0; i < expected.length; i++) {
        const m = i % masks.length;
        if (m === 4) {
          // the float dense mask: summation order differs
          expect(Math.abs(a[i]! - expected[i]!)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(expected[i]!)));
          expect(Math.abs(b[i]! - expected[i]!)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(expected[i]!)));
        } else {
          expect(a[i]).toBe(b[i]);
          if (m !== 8) expect(a[i]).toBe(expected[i]); // integer masks: exact
          else expect(Math.abs(a[i]! - expected[i]!)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(expected[i]!)));
        }
      }
    }
  });

  it('StdDevUDF over more than one batch (1100 frames, 65535-valued pixels): kernels = JavaScript bit for bit, two-pass reference within 1e-12', async () => {
    const [fh, fw, frames] = [3, 5, 1100];
    const big = randomTile(frames * fh * fw, rng(22));
    big.fill(65535, 0, 40 * fh * fw); // the largest squares
    const bigDs = new MemoryDataSet({ data: big, navShape: [frames], sigShape: [fh, fw] });
    for (const tileShape of [{ depth: 600, rows: 3 }, { depth: 7, rows: 2 }]) {
      const on = await runUdf(bigDs, new StdDevUDF(), { tileShape, partitionFrames: 1100 });
      const off = await runUdf(bigDs, new StdDevUDF(), { tileShape, partitionFrames: 1100, kernels: false });
      for (const key of ['sum', 'varsum', 'num_frames'] as const) expect(Array.from(on[key]!.data)).toEqual(Array.from(off[key]!.data));
      for (let i = 0; i < fh * fw; i++) {
        let total = 0;
        for (let f = 0; f < frames; f++) total += big[f * fh * fw + i]!;
        const mean = total / frames;
        let v = 0;
        for (let f = 0; f < frames; f++) v += (big[f * fh * fw + i]! - mean) ** 2;
        expect(on.sum!.data[i]).toBe(total);
        expect(Math.abs(on.varsum!.data[i]! - v)).toBeLessThanOrEqual(1e-12 * v);
      }
    }
  });

  it('StdDevUDF: kernels and JavaScript loops give bit-identical results for any tiling', async () => {
    for (const tileShape of [undefined, { depth: 2, rows: 3 }, { depth: 3, rows: 13 }, { depth: 1, rows: 5 }]) {
      const on = await runUdf(ds, new StdDevUDF(), { tileShape, partitionFrames: 6 });
      const off = await runUdf(ds, new StdDevUDF(), { tileShape, partitionFrames: 6, kernels: false });
      for (const key of ['sum', 'varsum', 'num_frames', 'std'] as const) expect(Array.from(on[key]!.data)).toEqual(Array.from(off[key]!.data));
    }
  });
});

describe.skipIf(!hasKernels)('kernels on a shared memory (a decoder memory)', () => {
  it('a partition whose tiles live in the shared memory equals one on private kernels; a concurrent partition gets its own', () => {
    const [h, w, frames] = [9, 24, 6];
    const r = rng(31);
    const frameData = randomTile(frames * h * w, r);
    const udfs = () => [new SumUDF(), new SumSigUDF(), new StdDevUDF(), new ApplyMasksUDF({ masks: [{ type: 'disk', cy: 4, cx: 11, r: 4 }, { type: 'dense', data: Array.from({ length: h * w }, (_, i) => (i % 7) / 3) }] })];
    const ctx = { navShape: [frames], sigShape: [h, w] as [number, number], datasetDtype: 'uint16' as const, inputDtype: 'uint16' as const, roi: null, corrections: null };
    const partition = { navStart: 0, navEnd: frames, sig: { origin: [0, 0] as [number, number], shape: [h, w] as [number, number] } };
    const run = (tileAt: (f: number, d: number) => Uint16Array) => {
      const task = new PartitionTask({ udfs: udfs(), context: ctx, partition, tiling: { depth: 2, rows: h } });
      for (let f = 0; f < frames; f += 2) task.processTile({ data: tileAt(f, 2), navStart: f, depth: 2, sigOrigin: [0, 0], sigShape: [h, w] });
      return task.finish();
    };
    const privateResult = run((f, d) => frameData.slice(f * h * w, (f + d) * h * w));
    const host = hostMemory();
    expect(TileKernels.shareMemory(host.memory, (b) => host.alloc(b), 1 << 20)).toBe(true);
    try {
      // the decoder's one reused tile buffer, at an odd 2-byte offset
      const ptr = host.alloc(2 * h * w * 2 + 16) + 6;
      const concurrent = TileKernels.create()!; // takes the shared instance: the task below gets a private one
      const a = run((f, d) => {
        const t = new Uint16Array(host.memory.buffer, ptr, d * h * w);
        t.set(frameData.subarray(f * h * w, (f + d) * h * w));
        return t;
      });
      concurrent.release();
      const b = run((f, d) => {
        const t = new Uint16Array(host.memory.buffer, ptr, d * h * w);
        t.set(frameData.subarray(f * h * w, (f + d) * h * w));
        return t;
      });
      for (const res of [a, b]) {
        res.udfs.forEach((u, i) => {
          for (const key of Object.keys(u)) expect(Array.from(u[key]!)).toEqual(Array.from(privateResult.udfs[i]![key]!));
        });
      }
    } finally {
      TileKernels.unshareMemory();
    }
  });
});
