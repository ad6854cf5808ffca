/**
 * ApplyMasksUDF: virtual detectors, the dot product of each frame with each mask (LiberTEM's
 * ApplyMasksUDF). Sparse masks (disk, ring, point, rectangle, COO, CSR) touch only their
 * non-zero pixels in the tile's rows; dense masks run over the tile.
 */
import { compileMasks, type MaskSpec, maskSchema, type SliceMask } from '../masks.js';
import type { NDArray } from '../ndarray.js';
import { wholeFrame } from '../partition.js';
import { UDF } from '../udf.js';

export interface ApplyMasksParams {
  masks: MaskSpec[];
}

export class ApplyMasksUDF extends UDF<ApplyMasksParams> {
  static override udfName = 'ApplyMasksUDF';
  static override paramsSchema = {
    type: 'object',
    required: ['masks'],
    properties: { masks: { type: 'array', minItems: 1, items: maskSchema } },
    additionalProperties: false,
  };

  getResultBuffers() {
    return { intensity: this.buffer({ kind: 'nav', dtype: 'float64', extraShape: [this.rawParams.masks.length] }) };
  }

  override getTaskData() {
    const slice = this.meta.partition?.sig ?? wholeFrame(this.meta.sigShape);
    return { masks: compileMasks(this.rawParams.masks, this.meta.sigShape, slice) };
  }

  override processTile(tile: NDArray): void {
    const masks = this.taskData.masks as SliceMask[];
    const out = this.results.intensity!;
    const [depth, rows, w] = tile.shape as [number, number, number];
    const row = this.meta.slice!.sigOrigin[0] - this.meta.partition!.sig.origin[0];
    const n = rows * w;
    const m = masks.length;
    for (let f = 0; f < depth; f++) {
      const base = f * n;
      for (let k = 0; k < m; k++) {
        const mask = masks[k]!;
        let acc = 0;
        if (mask.kind === 'sparse') {
          const { idx, val } = mask;
          const off = base - row * w;
          for (let j = mask.rowStart[row]!, end = mask.rowStart[row + rows]!; j < end; j++) acc += tile[off + idx[j]!]! * val[j]!;
        } else {
          const d = mask.data;
          const off = row * w;
          for (let i = 0; i < n; i++) acc += tile[base + i]! * d[off + i]!;
        }
        out[f * m + k] += acc;
      }
    }
  }
}
