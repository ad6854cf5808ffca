/**
 * StdDevUDF: per-pixel mean, variance and standard deviation over frames (LiberTEM's StdDevUDF,
 * spec C.1). Tiles and partitions combine (count, sum, sum of squared deviations) pairwise with
 * Chan's formula; the variance is the population variance (ddof = 0). The frame count is a
 * single buffer that every signal slice reports identically ('same' combine).
 *
 * uint16 tiles (chunks of at most STDDEV_MAX_DEPTH frames) take exact integer sums s = sum x and
 * q = sum x^2, and the chunk's varsum (depth q - s^2) / depth (integers below 2^53, one
 * rounding); the SIMD kernel (stddev_tile_u16) and the JavaScript loop here do the same f64
 * operations, so both give bit-identical results. Other dtypes use the two-pass sum.
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
    // uint16 tiles: per-pixel state in kernel memory for the whole partition, copied out at the end
    const k = this.meta.kernels;
    if (k && this.meta.inputDtype === 'uint16') {
      this.taskData.state = k.stdDevState(this.results.sum!.length);
      this.taskData.wholeSum = this.results.sum;
      this.taskData.wholeVar = this.results.varsum;
    }
  }

  override processTile(tile: NDArray): void {
    const [depth, rows, w] = tile.shape as [number, number, number];
    const n = rows * w;
    const td = this.taskData as { counts: Map<number, number>; tileSum: Float64Array; tileVar: Float64Array; state?: KernelStdDevState };
    const idx = this.meta.tilingSchemeIdx;
    if (tile instanceof Uint16Array) {
      const k = this.meta.kernels;
      const offset = (this.meta.slice!.sigOrigin[0] - this.meta.partition!.sig.origin[0]) * w;
      for (let f0 = 0; f0 < depth; f0 += STDDEV_MAX_DEPTH) {
        const d = Math.min(STDDEV_MAX_DEPTH, depth - f0);
        const chunk = tile.subarray(f0 * n, (f0 + d) * n);
        const seen = td.counts.get(idx) ?? 0;
        if (k && td.state) k.stdDevTile(chunk, d, td.state, offset, seen);
        else this.integerChunk(chunk, d, n, seen, td);
        td.counts.set(idx, seen + d);
      }
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

  /** The JavaScript twin of stddev_tile_u16: exact integer sums, then mergeStdDev. */
  private integerChunk(tile: Uint16Array, depth: number, n: number, seen: number, td: { tileSum: Float64Array; tileVar: Float64Array }): void {
    if (td.tileSum.length < n) {
      td.tileSum = new Float64Array(n);
      td.tileVar = new Float64Array(n);
    }
    const s = td.tileSum.subarray(0, n).fill(0);
    const v = td.tileVar.subarray(0, n).fill(0);
    for (let f = 0; f < depth; f++) {
      for (let i = 0, o = f * n; i < n; i++) {
        const x = tile[o + i]!;
        s[i] += x;
        v[i] += x * x;
      }
    }
    for (let i = 0; i < n; i++) v[i] = (depth * v[i]! - s[i]! * s[i]!) / depth;
    mergeStdDev(seen, this.results.sum!, this.results.varsum!, depth, s, v);
  }

  override postprocess(): void {
    const state = this.taskData.state as KernelStdDevState | undefined;
    if (state) this.meta.kernels!.readStdDev(state, this.taskData.wholeSum, this.taskData.wholeVar);
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
