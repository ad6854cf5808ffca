/**
 * PickUDF: copies the raw frames of the ROI (LiberTEM's PickUDF). Run it with a ROI: the result
 * holds one whole frame per selected scan position. Each signal slice writes its own rectangle
 * of the frame and leaves the rest 0, so slices combine by summing, exactly.
 */
import type { NDArray } from '../ndarray.js';
import { UDF } from '../udf.js';

export class PickUDF extends UDF<Record<string, never>> {
  static override udfName = 'PickUDF';
  static override paramsSchema = { type: 'object', additionalProperties: false };

  getResultBuffers() {
    const [h, w] = this.meta.sigShape;
    return { intensity: this.buffer({ kind: 'nav', dtype: this.meta.inputDtype, extraShape: [h, w] }) };
  }

  override processTile(tile: NDArray): void {
    const out = this.results.intensity!;
    const [depth, rows, tw] = tile.shape as [number, number, number];
    const [, w] = this.meta.sigShape;
    const [y0, x0] = this.meta.slice!.sigOrigin;
    const frame = out.length / depth;
    for (let f = 0; f < depth; f++) {
      for (let r = 0; r < rows; r++) {
        out.set(tile.subarray((f * rows + r) * tw, (f * rows + r + 1) * tw), f * frame + (y0 + r) * w + x0);
      }
    }
  }
}
