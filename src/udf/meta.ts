/**
 * The engine's side of a UDF instance: its meta object, and its params with aux data bound to
 * the views of the current unit of work.
 */
import { TesseraError } from '../errors.js';
import { type BufferDeclaration, BufferSet, type ViewCursor } from './buffers.js';
import type { CorrectionSet } from './corrections.js';
import { dtypeOf, sameKind, type DType, type TypedArray } from './dtype.js';
import type { TileKernels } from './kernels.js';
import { shapeSize, unravel } from './ndarray.js';
import type { SigSlice, TileShape } from './partition.js';
import type { NavSelection } from './roi.js';
import { type AuxData, isAuxData, type UDF, type UDFMeta, type UnitSlice, udfNameOf, type UDFClass } from './udf.js';

/** Serialisable description of a run, shared by every partition and the merging node. */
export interface RunContext {
  navShape: number[];
  sigShape: [number, number];
  datasetDtype: DType;
  inputDtype: DType;
  roi: Uint8Array | null;
  corrections: CorrectionSet | null;
  /** use the SIMD tile kernels where UDFs can (default true; false forces the JavaScript loops) */
  kernels?: boolean;
}

export class MetaImpl implements UDFMeta {
  navShape: readonly number[];
  sigShape: readonly [number, number];
  roi: Uint8Array | null;
  datasetDtype: DType;
  inputDtype: DType;
  corrections: CorrectionSet | null;
  partition: { navStart: number; navEnd: number; sig: SigSlice } | null = null;
  partitionShape: [number, number, number] | null = null;
  slice: UnitSlice | null = null;
  tilingScheme: TileShape | null = null;
  tilingSchemeIdx = 0;
  validNavMask: Uint8Array | null = null;
  /** raw nav index of each frame of the current partition, for coordinates */
  rawIndices: Int32Array | null = null;
  /** compressed index of the partition's first frame */
  partitionNavOffset = 0;
  /** the partition's shared kernels, created on first use */
  kernelSource: (() => TileKernels | null) | null = null;

  constructor(ctx: RunContext) {
    this.navShape = ctx.navShape;
    this.sigShape = ctx.sigShape;
    this.roi = ctx.roi;
    this.datasetDtype = ctx.datasetDtype;
    this.inputDtype = ctx.inputDtype;
    this.corrections = ctx.corrections;
  }

  get kernels(): TileKernels | null {
    return this.kernelSource ? this.kernelSource() : null;
  }

  get coordinates(): number[][] {
    const s = this.slice;
    if (s === null || this.rawIndices === null) return [];
    const out: number[][] = [];
    for (let k = 0; k < s.depth; k++) {
      out.push(unravel(this.rawIndices[s.navStart - this.partitionNavOffset + k]!, this.navShape));
    }
    return out;
  }
}

/**
 * Bind a UDF's params: plain values stay as they are, aux data becomes the view for the current
 * unit (nav aux: the unit's frames; sig aux: the unit's rows of the partition's slice).
 * `navRange` selects the nav entries (compressed by the ROI) that the buffer set holds.
 */
export function bindParams(
  udf: UDF,
  ctx: RunContext,
  selection: NavSelection,
  navRange: [number, number],
  slice: SigSlice,
  cursor: ViewCursor,
): void {
  const raw = udf.rawParams as Record<string, unknown>;
  const auxNames = Object.keys(raw).filter((k) => isAuxData(raw[k]));
  if (auxNames.length === 0) {
    udf.params = raw;
    return;
  }
  const name = udfNameOf(udf.constructor as UDFClass);
  const nFrames = shapeSize(ctx.navShape);
  const [fh, fw] = ctx.sigShape;
  const [y0, x0] = slice.origin;
  const [h, w] = slice.shape;
  const decls: Record<string, BufferDeclaration> = {};
  const arrays: Record<string, TypedArray> = {};
  const navLength = selection.count(navRange[0], navRange[1]);
  for (const key of auxNames) {
    const aux = raw[key] as AuxData;
    const e = shapeSize(aux.extraShape);
    const data = aux.data;
    if (!sameKind(aux.dtype, dtypeOf(data)) || (aux.dtype !== 'bool' && aux.dtype !== dtypeOf(data))) {
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', name, `aux data ${key} is declared ${aux.dtype} but holds ${dtypeOf(data)}`);
    }
    const Ctor = data.constructor as new (n: number) => TypedArray;
    let cut: TypedArray;
    if (aux.$aux === 'nav') {
      if (data.length !== nFrames * e) {
        throw new TesseraError('TESSERA_ERR_UDF_PARAMS', name, `aux data ${key} has ${data.length} values, expected ${nFrames * e} (${nFrames} frames x ${e})`);
      }
      cut = new Ctor(navLength * e);
      let k = 0;
      for (const [a, b] of selection.runs(navRange[0], navRange[1])) {
        cut.set(data.subarray(a * e, b * e), k);
        k += (b - a) * e;
      }
    } else {
      if (data.length !== fh * fw * e) {
        throw new TesseraError('TESSERA_ERR_UDF_PARAMS', name, `aux data ${key} has ${data.length} values, expected ${fh * fw * e} (one per pixel x ${e})`);
      }
      cut = new Ctor(h * w * e);
      for (let r = 0; r < h; r++) cut.set(data.subarray(((y0 + r) * fw + x0) * e, ((y0 + r) * fw + x0 + w) * e), r * w * e);
    }
    decls[key] = { kind: aux.$aux, dtype: aux.dtype, extraShape: aux.extraShape, use: null, combine: aux.$aux === 'sig' ? 'place' : 'sum' };
    arrays[key] = cut;
  }
  const views = new BufferSet(decls, navLength, [h, w], arrays).accessor(cursor);
  const bound: Record<string, unknown> = { ...raw };
  for (const key of auxNames) Object.defineProperty(bound, key, { enumerable: true, get: () => views[key] });
  udf.params = bound;
}
