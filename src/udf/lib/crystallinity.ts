/**
 * CrystallinityUDF: sum of |rfft2(frame x real-space mask)| over a ring radIn < d <= radOut
 * in Fourier space (LiberTEM's CrystallinityUDF; whole frames). The ring is centred on the
 * middle of the frame, fftshifted to the unshifted spectrum, and cut to the w / 2 + 1 columns
 * of the rfft2 layout. The optional real-space mask removes a disk (1 - disk) around realCenter.
 */
import { rfft2 } from '../fft.js';
import type { NDArray } from '../ndarray.js';
import { UDF } from '../udf.js';

export interface CrystallinityParams {
  radIn: number;
  radOut: number;
  /** (y, x) of the disk to remove in real space, with realRad; both or neither */
  realCenter?: [number, number] | null;
  realRad?: number | null;
}

export class CrystallinityUDF extends UDF<CrystallinityParams> {
  static override udfName = 'CrystallinityUDF';
  static override paramsSchema = {
    type: 'object',
    required: ['radIn', 'radOut'],
    properties: {
      radIn: { type: 'number', minimum: 0 },
      radOut: { type: 'number', exclusiveMinimum: 0 },
      realCenter: { type: ['array', 'null'], minItems: 2, maxItems: 2, items: { type: 'number' } },
      realRad: { type: ['number', 'null'] },
    },
    additionalProperties: false,
  };

  getResultBuffers() {
    return { intensity: this.buffer({ kind: 'nav', dtype: 'float64' }) };
  }

  override getTaskData() {
    const [h, w] = this.meta.sigShape;
    const { radIn, radOut, realCenter, realRad } = this.rawParams;
    let real: Float64Array | null = null;
    if (realCenter && realRad !== undefined && realRad !== null) {
      real = new Float64Array(h * w);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) real[y * w + x] = (y - realCenter[0]) ** 2 + (x - realCenter[1]) ** 2 <= realRad * realRad ? 0 : 1;
      }
    }
    // ring around (h/2, w/2), then fftshift: shifted[i] = ring[(i - floor(n/2)) mod n]
    const w2 = Math.floor(w / 2) + 1;
    const fourier = new Float64Array(h * w2);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w2; x++) {
        const sy = (((y - Math.floor(h / 2)) % h) + h) % h;
        const sx = (((x - Math.floor(w / 2)) % w) + w) % w;
        const d2 = (sy - h * 0.5) ** 2 + (sx - w * 0.5) ** 2;
        fourier[y * w2 + x] = d2 <= radOut * radOut && d2 > radIn * radIn ? 1 : 0;
      }
    }
    return { real, fourier, masked: new Float64Array(h * w) };
  }

  override processFrame(frame: NDArray): void {
    const [h, w] = this.meta.sigShape;
    const { real, fourier, masked } = this.taskData as { real: Float64Array | null; fourier: Float64Array; masked: Float64Array };
    for (let i = 0; i < frame.length; i++) masked[i] = real ? frame[i]! * real[i]! : frame[i]!;
    const spec = rfft2(masked, h, w);
    let s = 0;
    for (let k = 0; k < fourier.length; k++) if (fourier[k]) s += Math.hypot(spec[2 * k]!, spec[2 * k + 1]!);
    this.results.intensity![0] = s;
  }
}
