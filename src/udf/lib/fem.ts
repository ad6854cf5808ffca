/**
 * FEMUDF: fluctuation electron microscopy, the standard deviation of the pixels in a ring
 * radIn < d <= radOut around centre (y, x), per frame (LiberTEM's FEMUDF; whole frames).
 */
import type { NDArray } from '../ndarray.js';
import { UDF } from '../udf.js';

export interface FEMParams {
  /** ring centre (y, x) */
  center: [number, number];
  radIn: number;
  radOut: number;
}

export class FEMUDF extends UDF<FEMParams> {
  static override udfName = 'FEMUDF';
  static override paramsSchema = {
    type: 'object',
    required: ['center', 'radIn', 'radOut'],
    properties: {
      center: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'number' } },
      radIn: { type: 'number', minimum: 0 },
      radOut: { type: 'number', exclusiveMinimum: 0 },
    },
    additionalProperties: false,
  };

  getResultBuffers() {
    return { intensity: this.buffer({ kind: 'nav', dtype: 'float64' }) };
  }

  override getTaskData() {
    const [h, w] = this.meta.sigShape;
    const [cy, cx] = this.rawParams.center;
    const { radIn, radOut } = this.rawParams;
    const ring: number[] = [];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const d2 = (y - cy) ** 2 + (x - cx) ** 2;
        if (d2 <= radOut * radOut && d2 > radIn * radIn) ring.push(y * w + x);
      }
    }
    return { ring: Int32Array.from(ring) };
  }

  override processFrame(frame: NDArray): void {
    const ring = this.taskData.ring as Int32Array;
    let s = 0;
    for (let j = 0; j < ring.length; j++) s += frame[ring[j]!]!;
    const mean = s / ring.length;
    let v = 0;
    for (let j = 0; j < ring.length; j++) v += (frame[ring[j]!]! - mean) ** 2;
    this.results.intensity![0] = Math.sqrt(v / ring.length);
  }
}
