/**
 * ApplyMasksUDF: virtual detectors, the dot product of each frame with each mask (LiberTEM's
 * ApplyMasksUDF). Sparse masks (disk, ring, point, rectangle, COO, CSR) touch only their
 * non-zero pixels in the tile's rows; dense masks run over the tile. On uint16 tiles the SIMD
 * kernels do the work: masks of one small integer value (disks, rings, rectangles, binary masks)
 * as exact sums over runs of pixels, other sparse masks as the same gather loop in WebAssembly,
 * other dense masks as f64x2 dot products.
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

  /** zeroed per-frame scratch for masks whose value is not 1 */
  private runSums(depth: number): Float64Array {
    let s = this.taskData.runSums as Float64Array | undefined;
    if (!s || s.length < depth) s = this.taskData.runSums = new Float64Array(depth);
    return s.fill(0, 0, depth);
  }

  override processTile(tile: NDArray): void {
    const masks = this.taskData.masks as SliceMask[];
    const out = this.results.intensity!;
    const [depth, rows, w] = tile.shape as [number, number, number];
    const row = this.meta.slice!.sigOrigin[0] - this.meta.partition!.sig.origin[0];
    const n = rows * w;
    const m = masks.length;
    const k = this.meta.kernels;
    if (k && tile instanceof Uint16Array) {
      const first = row * w;
      for (let j = 0; j < m; j++) {
        const mask = masks[j]!;
        const r = mask.runs;
        if (r) {
          const a = r.rowStart[row]!;
          if (r.value === 1) k.runsSum(tile, depth, r.runs, a, r.rowStart[row + rows]! - a, first, out, j, m);
          else {
            const sums = this.runSums(depth);
            k.runsSum(tile, depth, r.runs, a, r.rowStart[row + rows]! - a, first, sums, 0, 1);
            for (let f = 0; f < depth; f++) out[f * m + j] += r.value * sums[f]!;
          }
        } else if (mask.kind === 'sparse') {
          const a = mask.rowStart[row]!;
          k.sparseDot(tile, depth, mask.idx, mask.val, a, mask.rowStart[row + rows]! - a, first, out, j, m);
        } else {
          k.denseDot(tile, depth, mask.data, first, out, j, m);
        }
      }
      return;
    }
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
