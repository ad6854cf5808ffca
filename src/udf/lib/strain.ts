/**
 * StrainMapUDF: live strain mapping, the UDF paper's lead application (whole frames).
 *
 * Per frame: correlation peak finding in small windows around the disks the reference lattice
 * predicts (blobfinder/correlation.ts), then a least-squares lattice fit with a minimum quality
 * and outlier rejection (blobfinder/lattice.ts). The fitted zero, a, b, the number of peaks used
 * and the fit's RMS residual are nav buffers; exx, eyy, exy and rotation follow in getResults()
 * from the fitted vectors relative to the reference (lattice.ts states the convention, which is
 * the simulator's): the given vectors, or the mean fitted lattice over a reference region of
 * the scan (so the reference is measured the same way as every frame). A frame with too few
 * good peaks (vacuum) gets NaN everywhere.
 */
import { TesseraError } from '../../errors.js';
import type { NDArray } from '../ndarray.js';
import { type AuxData, type ResultValue, UDF } from '../udf.js';
import { allocatePeakResults, checkCorrelatorParams, type PeakResults, type RefineMethod, WindowCorrelator } from './blobfinder/correlation.js';
import { correlationParamsProperties } from './blobfinder/fast-correlation.js';
import { fitLattice, type Lattice, latticePoint, ordersInFrame, strainFromLattice, type Vec2 } from './blobfinder/lattice.js';
import { type TemplateSpec, templateReach } from './blobfinder/templates.js';

/** The reference the strain is measured against. */
export type StrainReference = { a: Vec2; b: Vec2 } | { positions: number[] };

export interface StrainMapParams {
  /** the expected (reference) lattice: where to look for disks */
  lattice: Lattice;
  /** orders (n, m) of the disks to use; default every order inside the frame (see maxRadius, maxPeaks) */
  indices?: Array<[number, number]>;
  /** default orders: only within this many px of zero */
  maxRadius?: number;
  /** default orders: at most this many, nearest to zero first */
  maxPeaks?: number;
  template: TemplateSpec;
  search?: number;
  windowSize?: number;
  logScale?: boolean;
  refine?: RefineMethod;
  upsampleFactor?: number;
  upsampleBandwidth?: number;
  /** peaks with a lower elevation are not used (default 0.01) */
  minQuality?: number;
  /** fewer good peaks give NaN (default 5) */
  minPeaks?: number;
  /** outlier rejection: residual in px (default 1.5) */
  tolerance?: number;
  /** weight peaks by elevation in the fit (default false) */
  weighted?: boolean;
  /** default: lattice.a and lattice.b */
  reference?: StrainReference | null;
  /**
   * moves every window by (dy, dx) px: a constant, or per frame as aux data (kind 'nav',
   * extraShape [2], e.g. the central beam's shift from CoMUDF) for descan larger than `search`
   */
  zeroShift?: [number, number] | AuxData | null;
}

const vec2 = { type: 'array', minItems: 2, maxItems: 2, items: { type: 'number' } } as const;

interface StrainTaskData {
  correlator: WindowCorrelator;
  ey: Float64Array;
  ex: Float64Array;
  /** expected positions moved by the frame's zero shift */
  sy: Float64Array;
  sx: Float64Array;
  orders: Float64Array;
  res: PeakResults;
}

export class StrainMapUDF extends UDF<StrainMapParams> {
  static override udfName = 'StrainMapUDF';
  static override paramsSchema = {
    type: 'object',
    required: ['lattice', 'template'],
    properties: {
      lattice: {
        type: 'object',
        required: ['zero', 'a', 'b'],
        properties: { zero: vec2, a: vec2, b: vec2 },
        additionalProperties: false,
      },
      indices: { type: 'array', minItems: 3, items: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'integer' } } },
      maxRadius: { type: 'number', exclusiveMinimum: 0 },
      maxPeaks: { type: 'integer', minimum: 3 },
      ...correlationParamsProperties,
      minQuality: { type: 'number' },
      minPeaks: { type: 'integer', minimum: 3 },
      tolerance: { type: 'number', exclusiveMinimum: 0 },
      weighted: { type: 'boolean' },
      zeroShift: { oneOf: [{ type: 'null' }, vec2, { type: 'object', required: ['$aux'] }] },
      reference: {
        oneOf: [
          { type: 'null' },
          { type: 'object', required: ['a', 'b'], properties: { a: vec2, b: vec2 }, additionalProperties: false },
          {
            type: 'object',
            required: ['positions'],
            properties: { positions: { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } },
            additionalProperties: false,
          },
        ],
      },
    },
    additionalProperties: false,
  };

  constructor(params: StrainMapParams) {
    super(params);
    checkCorrelatorParams('StrainMapUDF', params);
  }

  getResultBuffers() {
    const nav = (extra: number[] = []) => this.buffer({ kind: 'nav', dtype: 'float64', extraShape: extra });
    const derived = () => this.buffer({ kind: 'nav', dtype: 'float64', use: 'resultOnly' });
    return {
      zero: nav([2]),
      a: nav([2]),
      b: nav([2]),
      /** peaks used by the fit */
      peaks: this.buffer({ kind: 'nav', dtype: 'int32' }),
      /** RMS distance (px) between the used peaks and the fitted lattice points */
      fitError: nav(),
      exx: derived(),
      eyy: derived(),
      exy: derived(),
      rotation: derived(),
    };
  }

  /** The disk orders this UDF looks at in an h x w frame. */
  static ordersFor(p: StrainMapParams, h: number, w: number): Array<[number, number]> {
    if (p.indices) return p.indices.map(([n, m]) => [n, m]);
    const margin = Math.ceil(templateReach(p.template)) + Math.ceil(p.search ?? 8);
    return ordersInFrame(p.lattice, h, w, margin, { maxRadius: p.maxRadius, maxCount: p.maxPeaks });
  }

  override getTaskData(): Record<string, unknown> {
    const p = this.rawParams;
    const [h, w] = this.meta.sigShape;
    const orders = StrainMapUDF.ordersFor(p, h, w);
    if (orders.length < 3) throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'StrainMapUDF', `only ${orders.length} lattice points fall inside the ${h} x ${w} frame`);
    const correlator = new WindowCorrelator({
      template: p.template,
      search: p.search,
      windowSize: p.windowSize,
      logScale: p.logScale,
      refine: p.refine,
      upsampleFactor: p.upsampleFactor,
      upsampleBandwidth: p.upsampleBandwidth,
    });
    const ey = new Float64Array(orders.length);
    const ex = new Float64Array(orders.length);
    orders.forEach(([n, m], k) => ([ey[k], ex[k]] = latticePoint(p.lattice, n, m)));
    const data: StrainTaskData = {
      correlator,
      ey,
      ex,
      sy: new Float64Array(orders.length),
      sx: new Float64Array(orders.length),
      orders: Float64Array.from(orders.flat()),
      res: allocatePeakResults(orders.length),
    };
    return data as unknown as Record<string, unknown>;
  }

  override processFrame(frame: NDArray): void {
    const [h, w] = this.meta.sigShape;
    const p = this.rawParams;
    const { correlator, ey, ex, sy, sx, orders, res } = this.taskData as unknown as StrainTaskData;
    const shift = this.params.zeroShift as ArrayLike<number> | null | undefined;
    if (shift && (shift[0] !== 0 || shift[1] !== 0)) {
      const [dy, dx] = [Number(shift[0]), Number(shift[1])];
      if (!Number.isFinite(dy) || !Number.isFinite(dx)) {
        this.noFit();
        return;
      }
      for (let k = 0; k < ey.length; k++) {
        sy[k] = ey[k]! + dy;
        sx[k] = ex[k]! + dx;
      }
      correlator.correlate(frame, h, w, sy, sx, res.count, res);
    } else {
      correlator.correlate(frame, h, w, ey, ex, res.count, res);
    }
    const fit = fitLattice(res.refinedY, res.refinedX, orders, res.elevation, {
      minQuality: p.minQuality ?? 0.01,
      minPeaks: p.minPeaks,
      tolerance: p.tolerance,
      weighted: p.weighted,
    });
    const r = this.results;
    if (fit === null) {
      this.noFit();
      return;
    }
    r.zero!.set(fit.zero);
    r.a!.set(fit.a);
    r.b!.set(fit.b);
    r.peaks![0] = fit.used;
    r.fitError![0] = fit.rms;
  }

  private noFit(): void {
    const r = this.results;
    r.zero!.fill(NaN);
    r.a!.fill(NaN);
    r.b!.fill(NaN);
    r.peaks![0] = 0;
    r.fitError![0] = NaN;
  }

  /** Reference vectors: given, the params' lattice, or the mean fit over the merged reference positions. */
  private referenceVectors(): [Vec2, Vec2] | null {
    const ref = this.rawParams.reference;
    if (!ref) return [this.rawParams.lattice.a, this.rawParams.lattice.b];
    if ('a' in ref) return [ref.a, ref.b];
    const { a, b } = this.results;
    const valid = this.meta.validNavMask;
    const roi = this.meta.roi;
    // raw scan index -> ROI-compressed index
    let compressed: Int32Array | null = null;
    if (roi) {
      compressed = new Int32Array(roi.length).fill(-1);
      let k = 0;
      for (let i = 0; i < roi.length; i++) if (roi[i]) compressed[i] = k++;
    }
    const sum = [0, 0, 0, 0];
    let count = 0;
    for (const pos of ref.positions) {
      const i = compressed ? (compressed[pos] ?? -1) : pos;
      if (i < 0 || i >= a!.length / 2 || (valid && !valid[i])) continue;
      const v = [a![2 * i]!, a![2 * i + 1]!, b![2 * i]!, b![2 * i + 1]!];
      if (!v.every(Number.isFinite)) continue;
      for (let j = 0; j < 4; j++) sum[j] += v[j]!;
      count++;
    }
    if (count === 0) return null;
    return [
      [sum[0]! / count, sum[1]! / count],
      [sum[2]! / count, sum[3]! / count],
    ];
  }

  override getResults(): Record<string, ResultValue> {
    const { a, b } = this.results;
    const n = a!.length / 2;
    const out = { exx: new Float64Array(n), eyy: new Float64Array(n), exy: new Float64Array(n), rotation: new Float64Array(n) };
    const ref = this.referenceVectors();
    const valid = this.meta.validNavMask;
    for (let i = 0; i < n; i++) {
      if (ref === null || (valid && !valid[i])) {
        out.exx[i] = out.eyy[i] = out.exy[i] = out.rotation[i] = NaN;
        continue;
      }
      const e = strainFromLattice([a![2 * i]!, a![2 * i + 1]!], [b![2 * i]!, b![2 * i + 1]!], ref[0], ref[1]);
      out.exx[i] = e.exx;
      out.eyy[i] = e.eyy;
      out.exy[i] = e.exy;
      out.rotation[i] = e.rotation;
    }
    return out;
  }
}
