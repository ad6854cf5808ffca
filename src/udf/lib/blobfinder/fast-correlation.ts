/**
 * FastCorrelationUDF: correlation peak finding around given peak positions in every frame
 * (LiberTEM-blobfinder's FastCorrelationUDF, spec D.2; whole frames). The template spectrum,
 * FFT plans and scratch buffers are task data, made once per partition.
 */
import type { NDArray } from '../../ndarray.js';
import { UDF } from '../../udf.js';
import { allocatePeakResults, checkCorrelatorParams, type PeakResults, type RefineMethod, WindowCorrelator } from './correlation.js';
import { type TemplateSpec, templateSchema } from './templates.js';

export interface FastCorrelationParams {
  /** expected peak positions (y, x) in frame pixels */
  peaks: Array<[number, number]>;
  template: TemplateSpec;
  search?: number;
  windowSize?: number;
  logScale?: boolean;
  refine?: RefineMethod;
  upsampleFactor?: number;
  upsampleBandwidth?: number;
}

export const correlationParamsProperties = {
  template: templateSchema,
  search: { type: 'number', minimum: 1 },
  windowSize: { type: 'integer', minimum: 8 },
  logScale: { type: 'boolean' },
  refine: { enum: ['com', 'upsample', 'none'] },
  upsampleFactor: { type: 'integer', minimum: 2 },
  upsampleBandwidth: { type: 'number', exclusiveMinimum: 0, maximum: 0.5 },
} as const;

export class FastCorrelationUDF extends UDF<FastCorrelationParams> {
  static override udfName = 'FastCorrelationUDF';
  static override paramsSchema = {
    type: 'object',
    required: ['peaks', 'template'],
    properties: {
      peaks: { type: 'array', minItems: 1, items: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'number' } } },
      ...correlationParamsProperties,
    },
    additionalProperties: false,
  };

  constructor(params: FastCorrelationParams) {
    super(params);
    checkCorrelatorParams('FastCorrelationUDF', params);
  }

  getResultBuffers() {
    const n = this.rawParams.peaks.length;
    return {
      centers: this.buffer({ kind: 'nav', dtype: 'int32', extraShape: [n, 2] }),
      refineds: this.buffer({ kind: 'nav', dtype: 'float64', extraShape: [n, 2] }),
      peakValues: this.buffer({ kind: 'nav', dtype: 'float64', extraShape: [n] }),
      peakElevations: this.buffer({ kind: 'nav', dtype: 'float64', extraShape: [n] }),
    };
  }

  override getTaskData() {
    const p = this.rawParams;
    const correlator = new WindowCorrelator({
      template: p.template,
      search: p.search,
      windowSize: p.windowSize,
      logScale: p.logScale,
      refine: p.refine,
      upsampleFactor: p.upsampleFactor,
      upsampleBandwidth: p.upsampleBandwidth,
    });
    return {
      correlator,
      ey: Float64Array.from(p.peaks, (q) => q[0]),
      ex: Float64Array.from(p.peaks, (q) => q[1]),
      res: allocatePeakResults(p.peaks.length),
    };
  }

  override processFrame(frame: NDArray): void {
    const [h, w] = this.meta.sigShape;
    const { correlator, ey, ex, res } = this.taskData as { correlator: WindowCorrelator; ey: Float64Array; ex: Float64Array; res: PeakResults };
    correlator.correlate(frame, h, w, ey, ex, res.count, res);
    const { centers, refineds, peakValues, peakElevations } = this.results;
    for (let k = 0; k < res.count; k++) {
      centers![2 * k] = res.centerY[k]!;
      centers![2 * k + 1] = res.centerX[k]!;
      refineds![2 * k] = res.refinedY[k]!;
      refineds![2 * k + 1] = res.refinedX[k]!;
      peakValues![k] = res.value[k]!;
      peakElevations![k] = res.elevation[k]!;
    }
  }
}
