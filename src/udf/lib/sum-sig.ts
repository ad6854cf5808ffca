/** SumSigUDF: the sum over each frame's pixels, per scan position (LiberTEM's SumSigUDF). */
import type { NDArray } from '../ndarray.js';
import { UDF } from '../udf.js';

export class SumSigUDF extends UDF<Record<string, never>> {
  static override udfName = 'SumSigUDF';
  static override paramsSchema = { type: 'object', additionalProperties: false };

  getResultBuffers() {
    // float64: exact for integer input; the slices of one frame add up ('sum' combine)
    return { intensity: this.buffer({ kind: 'nav', dtype: 'float64' }) };
  }

  override processTile(tile: NDArray): void {
    const out = this.results.intensity!;
    const depth = tile.shape[0]!;
    const k = this.meta.kernels;
    if (k && tile instanceof Uint16Array) {
      k.frameSums(tile, depth, out);
      return;
    }
    const n = tile.length / depth;
    for (let f = 0, o = 0; f < depth; f++, o += n) {
      let s = 0;
      for (let i = 0; i < n; i++) s += tile[o + i]!;
      out[f] += s;
    }
  }
}
