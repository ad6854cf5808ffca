/** SumUDF: the sum of all frames, per pixel (LiberTEM's SumUDF). */
import { type KernelAccumulator, MAX_FRAMES_PER_FLUSH } from '../kernels.js';
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

  override preprocess(): void {
    // uint16 tiles: sum into an exact u32 accumulator in kernel memory, flushed into the result
    const k = this.meta.kernels;
    if (k && this.meta.inputDtype === 'uint16') {
      this.taskData.acc = k.accumulator(this.results.intensity!.length);
      this.taskData.whole = this.results.intensity;
    }
  }

  override processTile(tile: NDArray): void {
    const acc = this.taskData.acc as KernelAccumulator | undefined;
    if (acc && tile instanceof Uint16Array) {
      const k = this.meta.kernels!;
      const depth = tile.shape[0]!;
      if (acc.frames + depth >= MAX_FRAMES_PER_FLUSH) k.flush(acc, this.taskData.whole);
      const row = this.meta.slice!.sigOrigin[0] - this.meta.partition!.sig.origin[0];
      k.sumFrames(tile, depth, acc, row * tile.shape[2]!);
      return;
    }
    const out = this.results.intensity!;
    const n = out.length;
    for (let f = 0, o = 0; f < tile.shape[0]!; f++, o += n) {
      for (let i = 0; i < n; i++) out[i] += tile[o + i]!;
    }
  }

  override postprocess(): void {
    const acc = this.taskData.acc as KernelAccumulator | undefined;
    if (acc) this.meta.kernels!.flush(acc, this.taskData.whole);
  }

  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    addInto(dest.intensity!, src.intensity!);
  }
}
