/** LogsumUDF: sum over frames of log(frame - min(frame) + 1), min per frame (LiberTEM's LogsumUDF; whole frames). */
import type { NDArray } from '../ndarray.js';
import { addInto } from '../ops.js';
import { UDF } from '../udf.js';

export class LogsumUDF extends UDF<Record<string, never>> {
  static override udfName = 'LogsumUDF';
  static override paramsSchema = { type: 'object', additionalProperties: false };

  getResultBuffers() {
    return { logsum: this.buffer({ kind: 'sig', dtype: 'float64' }) };
  }

  override processFrame(frame: NDArray): void {
    let min = Infinity;
    for (let i = 0; i < frame.length; i++) if (frame[i]! < min) min = frame[i]!;
    const out = this.results.logsum!;
    for (let i = 0; i < frame.length; i++) out[i] += Math.log(frame[i]! - min + 1);
  }

  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    addInto(dest.logsum!, src.logsum!);
  }
}
