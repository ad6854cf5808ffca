/**
 * StdDevUDF: per-pixel mean, variance and standard deviation over frames (LiberTEM's StdDevUDF,
 * spec C.1). Tiles and partitions combine (count, sum, sum of squared deviations) pairwise with
 * Chan's formula; the variance is the population variance (ddof = 0). The frame count is a
 * single buffer that every signal slice reports identically ('same' combine).
 *
 * uint16 tiles are batched: exact integer sums s = sum x and q = sum x^2 per pixel over up to
 * STDDEV_MAX_DEPTH frames of a tiling-scheme slice, merged as one part with varsum
 * (depth q - s^2) / depth (integers below 2^53, one rounding) when the batch is full and at the
 * end of the partition. The SIMD kernels (sq_sums_u16, stddev_flush) and the JavaScript twin here
 * do the same f64 operations, so both give bit-identical results. Other dtypes: two-pass per tile.
 */
import { TesseraError } from '../../errors.js';
import { type KernelStdDevState, STDDEV_MAX_DEPTH } from '../kernels.js';
import type { NDArray } from '../ndarray.js';
import { UDF, type ResultValue } from '../udf.js';

/**
 * Merge (n1, sum1, varsum1) into (n0, sum0, varsum0) for every pixel, in place:
 * varsum = varsum0 + varsum1 + n0 n1 / n (mean1 - mean0)^2.
 */
export function mergeStdDev(n0: number, sum0: Float64Array | NDArray, var0: Float64Array | NDArray, n1: number, sum1: ArrayLike<number>, var1: ArrayLike<number>): void {
  if (n1 === 0) return;
  const len = sum0.length;
  if (n0 === 0) {
    for (let i = 0; i < len; i++) {
      sum0[i] = sum1[i]!;
      var0[i] = var1[i]!;
    }
    return;
  }
  const n = n0 + n1;
  for (let i = 0; i < len; i++) {
    const d = sum1[i]! / n1 - sum0[i]! / n0;
    var0[i] += var1[i]! + ((n0 * n1) / n) * d * d;
    sum0[i] += sum1[i]!;
  }
}

/** A tiling-scheme slice's pixels [offset, offset + n) of the partition, frames merged and pending. */
interface Band {
  offset: number;
  n: number;
  pending: number;
  merged: number;
}

interface IntegerState {
  bands: Map<number, Band>;
  wholeSum: NDArray;
  wholeVar: NDArray;
  /** kernel memory state, or the JavaScript twin's exact sums */
  state?: KernelStdDevState;
  s?: Float64Array;
  q?: Float64Array;
}

export class StdDevUDF extends UDF<Record<string, never>> {
  static override udfName = 'StdDevUDF';
  static override paramsSchema = { type: 'object', additionalProperties: false };

  getResultBuffers() {
    const sig = (use?: 'resultOnly') => this.buffer({ kind: 'sig', dtype: 'float64', use });
    return {
      sum: sig(),
      varsum: sig(),
      num_frames: this.buffer({ kind: 'single', dtype: 'float64', combine: 'same' }),
      mean: sig('resultOnly'),
      var: sig('resultOnly'),
      std: sig('resultOnly'),
    };
  }

  override getTaskData() {
    // frames seen per tiling-scheme slice: the tiles of one partition may cover different rows
    return { counts: new Map<number, number>(), tileSum: new Float64Array(0), tileVar: new Float64Array(0) };
  }

  override preprocess(): void {
    // uint16 tiles: exact per-pixel batch sums for the whole partition (kernel memory, or typed arrays)
    if (this.meta.inputDtype !== 'uint16') return;
    const pixels = this.results.sum!.length;
    const k = this.meta.kernels;
    const td = this.taskData as IntegerState;
    td.bands = new Map();
    td.wholeSum = this.results.sum!;
    td.wholeVar = this.results.varsum!;
    if (k) td.state = k.stdDevState(pixels);
    else {
      td.s = new Float64Array(pixels);
      td.q = new Float64Array(pixels);
    }
  }

  override processTile(tile: NDArray): void {
    const [depth, rows, w] = tile.shape as [number, number, number];
    const n = rows * w;
    const td = this.taskData as { counts: Map<number, number>; tileSum: Float64Array; tileVar: Float64Array } & Partial<IntegerState>;
    const idx = this.meta.tilingSchemeIdx;
    if (tile instanceof Uint16Array && td.bands) {
      const offset = (this.meta.slice!.sigOrigin[0] - this.meta.partition!.sig.origin[0]) * w;
      let band = td.bands.get(idx);
      if (!band) td.bands.set(idx, (band = { offset, n, pending: 0, merged: 0 }));
      if (band.offset !== offset || band.n !== n) {
        this.flush(band);
        band.offset = offset;
        band.n = n;
      }
      const k = this.meta.kernels;
      for (let f0 = 0; f0 < depth; ) {
        const d = Math.min(STDDEV_MAX_DEPTH - band.pending, depth - f0);
        const chunk = tile.subarray(f0 * n, (f0 + d) * n);
        if (td.state) k!.stdDevAdd(chunk, d, td.state, offset);
        else {
          const { s, q } = td as { s: Float64Array; q: Float64Array };
          for (let f = 0; f < d; f++) {
            for (let i = 0, o = f * n; i < n; i++) {
              const x = chunk[o + i]!;
              s[offset + i] += x;
              q[offset + i] += x * x;
            }
          }
        }
        band.pending += d;
        f0 += d;
        if (band.pending === STDDEV_MAX_DEPTH) this.flush(band);
      }
      td.counts.set(idx, band.merged + band.pending);
      return;
    }
    if (td.tileSum.length < n) {
      td.tileSum = new Float64Array(n);
      td.tileVar = new Float64Array(n);
    }
    const s = td.tileSum.subarray(0, n).fill(0);
    const v = td.tileVar.subarray(0, n).fill(0);
    for (let f = 0; f < depth; f++) for (let i = 0; i < n; i++) s[i] += tile[f * n + i]!;
    for (let f = 0; f < depth; f++) {
      for (let i = 0; i < n; i++) {
        const d = tile[f * n + i]! - s[i]! / depth;
        v[i] += d * d;
      }
    }
    const seen = td.counts.get(idx) ?? 0;
    mergeStdDev(seen, this.results.sum!, this.results.varsum!, depth, s, v);
    td.counts.set(idx, seen + depth);
  }

  /**
   * Merge a band's pending batch into (sum, varsum): stddev_flush in kernels.wat, or its
   * JavaScript twin (the same f64 operations in the same order, so the same bits).
   */
  private flush(band: Band): void {
    const d = band.pending;
    if (d === 0) return;
    const td = this.taskData as IntegerState;
    const n0 = band.merged;
    if (td.state) this.meta.kernels!.stdDevFlush(td.state, band.offset, band.n, d, n0);
    else {
      const { s, q, wholeSum: sum, wholeVar: varsum } = td as Required<IntegerState>;
      const c = (n0 * d) / (n0 + d);
      for (let i = band.offset, end = band.offset + band.n; i < end; i++) {
        const si = s[i]!;
        const m = (d * q[i]! - si * si) / d;
        if (n0 === 0) {
          sum[i] = si;
          varsum[i] = m;
        } else {
          const dd = si / d - sum[i]! / n0;
          varsum[i] = varsum[i]! + (m + c * dd * dd);
          sum[i] = sum[i]! + si;
        }
        s[i] = 0;
        q[i] = 0;
      }
    }
    band.merged += d;
    band.pending = 0;
  }

  override postprocess(): void {
    const td = this.taskData as Partial<IntegerState>;
    if (td.bands) for (const band of td.bands.values()) this.flush(band);
    if (td.state) this.meta.kernels!.readStdDev(td.state, td.wholeSum!, td.wholeVar!);
    const counts = [...(this.taskData.counts as Map<number, number>).values()];
    if (counts.some((c) => c !== counts[0])) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'StdDevUDF', `parts of the partition saw different frame counts: ${counts.join(', ')}`);
    }
    this.results.num_frames![0] = counts[0] ?? 0;
  }

  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    const n0 = dest.num_frames![0]!;
    const n1 = src.num_frames![0]!;
    mergeStdDev(n0, dest.sum!, dest.varsum!, n1, src.sum!, src.varsum!);
    dest.num_frames![0] = n0 + n1;
  }

  override getResults(): Record<string, ResultValue> {
    const n = this.results.num_frames![0]!;
    const sum = this.results.sum!;
    const varsum = this.results.varsum!;
    const mean = sum.map((x) => x / n) as Float64Array;
    const variance = varsum.map((x) => x / n) as Float64Array;
    return { mean, var: variance, std: variance.map(Math.sqrt) as Float64Array };
  }
}
