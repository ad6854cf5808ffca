/** SumUDF: the sum of all frames, per pixel (LiberTEM's SumUDF). */
import type { NDArray } from '../ndarray.js';
import { addInto } from '../ops.js';
import { UDF } from '../udf.js';

export interface SumParams {
  /** accumulator dtype; float64 (default) keeps integer sums exact whatever the order */
  dtype?: 'float32' | 'float64';
}

export class SumUDF extends UDF<SumParams> {
  static override udfName = 'SumUDF';
  static override paramsSchema = {
    type: 'object',
    properties: { dtype: { enum: ['float32', 'float64'] } },
    additionalProperties: false,
  };

  getResultBuffers() {
    return { intensity: this.buffer({ kind: 'sig', dtype: this.rawParams.dtype ?? 'float64' }) };
  }

  override processTile(tile: NDArray): void {
    const out = this.results.intensity!;
    const n = out.length;
    for (let f = 0, o = 0; f < tile.shape[0]!; f++, o += n) {
      for (let i = 0; i < n; i++) out[i] += tile[o + i]!;
    }
  }

  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    addInto(dest.intensity!, src.intensity!);
  }
}
