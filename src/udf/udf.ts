/**
 * The UDF base class: LiberTEM's UDF API (spec B) in TypeScript idiom.
 *
 * A UDF declares result buffers in getResultBuffers(), reduces data in processTile(),
 * processFrame() or processPartition(), and merges partition results in merge(dest, src).
 * The engine re-creates a UDF from its class and constructor params for every partition
 * ("clean copies"), so params must be plain serialisable data; class name + params identify a
 * UDF across threads and processes (see UDFSpec).
 *
 * The engine talks to a UDF only through the members below (no module-private state), so that a
 * plugin compiled against another copy of this module still works.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { TesseraError } from '../errors.js';
import { type BufferDeclaration, type BufferOptions, declareBuffer } from './buffers.js';
import type { CorrectionSet } from './corrections.js';
import type { DType, TypedArray } from './dtype.js';
import type { TileKernels } from './kernels.js';
import type { NDArray } from './ndarray.js';
import type { SigSlice, TileShape } from './partition.js';

export type UDFMethod = 'tile' | 'frame' | 'partition';

/** Per-frame (nav) or per-pixel (sig) input data passed as a UDF parameter (spec B.8). */
export interface AuxData {
  $aux: 'nav' | 'sig';
  dtype: DType;
  extraShape: number[];
  data: TypedArray;
}

export function isAuxData(v: unknown): v is AuxData {
  return v !== null && typeof v === 'object' && ((v as AuxData).$aux === 'nav' || (v as AuxData).$aux === 'sig');
}

/** What identifies a UDF across threads and processes. */
export interface UDFSpec {
  name: string;
  params: Record<string, unknown>;
}

/** A result with its own valid mask (LiberTEM's with_mask). */
export interface MaskedResult {
  $masked: true;
  data: TypedArray;
  /** one entry per element of data, or a single boolean for all */
  mask: Uint8Array | boolean;
}

export type ResultValue = TypedArray | MaskedResult;

/** The current unit of work: frames (compressed, dataset-global nav index) and signal rectangle. */
export interface UnitSlice {
  navStart: number;
  depth: number;
  sigOrigin: [number, number];
  sigShape: [number, number];
}

/** What a UDF knows about its run (spec B.4). Updated in place by the engine. */
export interface UDFMeta {
  navShape: readonly number[];
  sigShape: readonly [number, number];
  roi: Uint8Array | null;
  datasetDtype: DType;
  inputDtype: DType;
  corrections: CorrectionSet | null;
  /** the partition (raw nav range, signal slice); null on the merging node */
  partition: { navStart: number; navEnd: number; sig: SigSlice } | null;
  /** [frames after ROI, h, w] of the partition; null on the merging node */
  partitionShape: [number, number, number] | null;
  /** the current frame, tile or partition; null outside processing */
  slice: UnitSlice | null;
  /** nav coordinates of the frames of the current unit */
  readonly coordinates: number[][];
  tilingScheme: TileShape | null;
  /** index of the current tile's signal rectangle in the partition's tiling */
  tilingSchemeIdx: number;
  /** merged positions (ROI-compressed, 0/1); only in merge() (excluding the partition being merged) and getResults() */
  validNavMask: Uint8Array | null;
  /** SIMD kernels for uint16 tiles, shared by the partition's UDFs; null on the merging node or without them */
  readonly kernels: TileKernels | null;
}

export type ParamsView<P> = { readonly [K in keyof P]: P[K] extends AuxData ? NDArray : P[K] };

export interface UDFClass<U extends UDF<any> = UDF<any>> {
  new (params?: any): U;
  udfName?: string;
  paramsSchema?: object;
  readonly isTesseraUDF: true;
}

const ajv = new Ajv({ allErrors: true, strict: false });
const compiled = new WeakMap<object, ValidateFunction>();

export abstract class UDF<P extends object = object> {
  /** Brand for plugin discovery (works across module copies, unlike instanceof). */
  static readonly isTesseraUDF = true as const;
  /** Registry name; defaults to the class name. */
  static udfName?: string;
  /** JSON schema for the constructor params, checked with ajv on construction. */
  static paramsSchema?: object;

  /** the constructor params, exactly as given (what a clean copy is made from) */
  readonly rawParams: P;
  /** params, with aux data replaced by the view for the current frame, tile or partition */
  params: ParamsView<P>;
  /** result buffer views for the current frame, tile or partition */
  results: Record<string, NDArray> = {};
  /** per-partition working data from getTaskData() */
  taskData: Record<string, any> = {};
  meta!: UDFMeta;

  constructor(params?: P) {
    const p = (params ?? {}) as P;
    const cls = this.constructor as UDFClass;
    if (p === null || typeof p !== 'object' || Array.isArray(p)) {
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', udfNameOf(cls), 'params must be an object');
    }
    if (cls.paramsSchema) {
      let validate = compiled.get(cls.paramsSchema);
      if (!validate) {
        validate = ajv.compile(cls.paramsSchema);
        compiled.set(cls.paramsSchema, validate);
      }
      if (!validate(p)) {
        const e = validate.errors![0]!;
        throw new TesseraError('TESSERA_ERR_UDF_PARAMS', udfNameOf(cls), `${e.instancePath || '(params)'} ${e.message ?? 'is invalid'}`);
      }
    }
    this.rawParams = p;
    this.params = p as ParamsView<P>;
  }

  /** Declare the result buffers (spec B.5). Runs on the merging node and again per partition. */
  abstract getResultBuffers(): Record<string, BufferDeclaration>;

  processTile?(tile: NDArray): void;
  processFrame?(frame: NDArray): void;
  processPartition?(partition: NDArray): void;
  /** per partition, after allocation and before data; also once on the merging node */
  preprocess?(): void;
  /** per partition after the last tile, before the result leaves the worker */
  postprocess?(): void;

  getTaskData(): Record<string, unknown> {
    return {};
  }

  /** Declare a buffer for getResultBuffers(). */
  buffer(opts: BufferOptions): BufferDeclaration {
    return declareBuffer(opts, udfNameOf(this.constructor as UDFClass));
  }

  /** Per-frame (kind 'nav') or per-pixel (kind 'sig') input for a parameter (spec B.8). */
  static auxData(data: TypedArray, opts: { kind: 'nav' | 'sig'; dtype?: DType; extraShape?: number[] }): AuxData {
    return { $aux: opts.kind, dtype: opts.dtype ?? 'float32', extraShape: opts.extraShape ?? [], data };
  }

  /** A getResults() value with its own valid mask. */
  static withMask(data: TypedArray, mask: Uint8Array | boolean): MaskedResult {
    return { $masked: true, data, mask };
  }

  /** Which process method runs: tile > frame > partition, by which is implemented. */
  getMethod(): UDFMethod {
    if (typeof this.processTile === 'function') return 'tile';
    if (typeof this.processFrame === 'function') return 'frame';
    if (typeof this.processPartition === 'function') return 'partition';
    throw new TesseraError('TESSERA_ERR_UDF_DECLARATION', udfNameOf(this.constructor as UDFClass), 'implements none of processTile, processFrame, processPartition');
  }

  /** A UDF without processTile cannot run on sector slices: it runs behind the shuffle, on whole frames. */
  get needsWholeFrames(): boolean {
    return this.getMethod() !== 'tile';
  }

  /** 'native' keeps the detector's dtype (uint16 for the K2 IS); a float dtype asks for conversion. */
  getPreferredInputDtype(): DType | 'native' {
    return 'native';
  }

  /**
   * Merge a partition result into the dataset result. The default assigns nav buffers
   * (`dest` is restricted to the partition's frames); UDFs with sig or single buffers must
   * override it.
   */
  merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    for (const name of Object.keys(src)) dest[name]!.set(src[name]!);
  }

  /**
   * Final results on the merging node (spec B.7). Return the buffers to replace or add;
   * omitted buffers pass through (private ones are dropped). Must not have side effects:
   * live runs call it after every merge.
   */
  getResults(): Record<string, ResultValue> {
    return {};
  }

  /** Serialisable identity: the registry name and the constructor params. */
  toSpec(): UDFSpec {
    return { name: udfNameOf(this.constructor as UDFClass), params: this.rawParams as Record<string, unknown> };
  }
}

// Marks so the engine can tell the defaults from overrides, also across module copies.
(UDF.prototype.merge as { $default?: boolean }).$default = true;
(UDF.prototype.getResults as { $default?: boolean }).$default = true;

export function hasDefaultMerge(udf: UDF): boolean {
  return (udf.merge as { $default?: boolean }).$default === true;
}

export function hasDefaultGetResults(udf: UDF): boolean {
  return (udf.getResults as { $default?: boolean }).$default === true;
}

export function udfNameOf(cls: { udfName?: string; name: string }): string {
  return Object.prototype.hasOwnProperty.call(cls, 'udfName') && cls.udfName ? cls.udfName : cls.name;
}

/** Is `v` a UDF class (by brand, so that plugins built against another copy of this module count)? */
export function isUdfClass(v: unknown): v is UDFClass {
  return typeof v === 'function' && (v as { isTesseraUDF?: unknown }).isTesseraUDF === true && typeof v.prototype?.getResultBuffers === 'function';
}

/** A clean copy: a new instance of the same class from the same params. */
export function cleanCopy<U extends UDF>(udf: U): U {
  const cls = udf.constructor as new (p: unknown) => U;
  return new cls(udf.rawParams);
}
