/**
 * Result buffers (LiberTEM's BufferWrapper, spec B.5): declared per UDF by kind, dtype and extra
 * shape, allocated partition-sized on workers and dataset-sized on the merging node, and handed
 * to UDF code as views for the current tile, frame or partition (never copies).
 *
 * Layouts (C order, extra dimensions innermost):
 *   nav     [frames, ...extra]   frames = the selected (ROI) frames of the partition or dataset
 *   sig     [h, w, ...extra]     h x w = the partition's signal slice, or the whole frame
 *   single  extra, or [1]
 * A tile covers whole rows of its partition's slice, so its sig view is one contiguous run.
 */
import { TesseraError } from '../errors.js';
import { allocate, isDType, type DType, type TypedArray } from './dtype.js';
import { type NDArray, shapeSize, view } from './ndarray.js';

export type BufferKind = 'nav' | 'sig' | 'single';
export type BufferUse = 'private' | 'resultOnly';
/** Combines `src` into `dest` in place: two partial results of the same frames from different signal slices. */
export type CombineFn = (dest: TypedArray, src: TypedArray) => void;
/**
 * How results of one nav range from different signal slices combine (see docs/udf.md,
 * "Sector-split semantics"): 'sum' (default for nav and single: tiles of a frame accumulate),
 * 'same' (every slice must report the same value, e.g. a frame count), 'max', 'min', a custom
 * function; 'place' is the only rule for sig buffers (disjoint slices are put side by side).
 */
export type CombineRule = 'sum' | 'same' | 'max' | 'min' | 'place' | CombineFn;

export interface BufferOptions {
  kind: BufferKind;
  dtype?: DType;
  extraShape?: readonly number[];
  use?: BufferUse | null;
  combine?: CombineRule;
}

export interface BufferDeclaration {
  readonly kind: BufferKind;
  readonly dtype: DType;
  readonly extraShape: readonly number[];
  readonly use: BufferUse | null;
  readonly combine: CombineRule;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function bad(udf: string, why: string): TesseraError {
  return new TesseraError('TESSERA_ERR_UDF_DECLARATION', udf, why);
}

export function declareBuffer(opts: BufferOptions, udf: string): BufferDeclaration {
  if (opts === null || typeof opts !== 'object') throw bad(udf, 'buffer() needs an options object');
  const { kind } = opts;
  if (kind !== 'nav' && kind !== 'sig' && kind !== 'single') throw bad(udf, `unknown buffer kind ${JSON.stringify(kind)}`);
  const dtype = opts.dtype ?? 'float32';
  if (!isDType(dtype)) throw bad(udf, `unknown dtype ${JSON.stringify(dtype)}`);
  const extraShape = opts.extraShape ?? [];
  if (!Array.isArray(extraShape) || !extraShape.every((d) => Number.isInteger(d) && d >= 1)) {
    throw bad(udf, `extraShape must be a list of positive integers, got ${JSON.stringify(extraShape)}`);
  }
  const use = opts.use ?? null;
  if (use !== null && use !== 'private' && use !== 'resultOnly') throw bad(udf, `unknown buffer use ${JSON.stringify(use)}`);
  const combine = opts.combine ?? (kind === 'sig' ? 'place' : 'sum');
  if (typeof combine !== 'function' && !['sum', 'same', 'max', 'min', 'place'].includes(combine)) {
    throw bad(udf, `unknown combine rule ${JSON.stringify(combine)}`);
  }
  if (kind === 'sig' && combine !== 'place') throw bad(udf, 'sig buffers from different slices are placed, not combined');
  if (kind !== 'sig' && combine === 'place') throw bad(udf, `'place' applies to sig buffers only`);
  return Object.freeze({ kind, dtype, extraShape: Object.freeze([...extraShape]), use, combine });
}

/** Check what getResultBuffers() returned. */
export function checkDeclarations(decls: unknown, udf: string): Record<string, BufferDeclaration> {
  if (decls === null || typeof decls !== 'object' || Array.isArray(decls)) {
    throw bad(udf, 'getResultBuffers() must return an object of buffer declarations');
  }
  for (const [name, d] of Object.entries(decls)) {
    if (!IDENTIFIER.test(name)) throw bad(udf, `buffer name ${JSON.stringify(name)} is not an identifier`);
    const decl = d as Partial<BufferDeclaration> | null;
    if (decl === null || typeof decl !== 'object' || typeof decl.kind !== 'string' || typeof decl.dtype !== 'string' || !Array.isArray(decl.extraShape)) {
      throw bad(udf, `buffer ${name} was not made with this.buffer()`);
    }
  }
  return decls as Record<string, BufferDeclaration>;
}

export function extraSize(decl: BufferDeclaration): number {
  return shapeSize(decl.extraShape);
}

/** Element count of a buffer with `navLength` nav entries over a signal area of `sigShape`. */
export function bufferLength(decl: BufferDeclaration, navLength: number, sigShape: readonly [number, number]): number {
  const e = extraSize(decl);
  if (decl.kind === 'nav') return navLength * e;
  if (decl.kind === 'sig') return sigShape[0] * sigShape[1] * e;
  return e;
}

/** Which part of the buffers the current unit of work sees. */
export interface ViewCursor {
  /** bumped whenever the unit changes, to invalidate cached views */
  gen: number;
  /** frame mode: nav views are one frame's entry (shape extra or [1]) */
  frame: boolean;
  /** first nav entry of the unit, relative to the buffer set */
  nav: number;
  /** nav entries in the unit (ignored in frame mode) */
  depth: number;
  /** first row of the unit within the buffer set's signal area */
  row: number;
  rows: number;
}

export function wholeCursor(navLength: number, sigShape: readonly [number, number]): ViewCursor {
  return { gen: 0, frame: false, nav: 0, depth: navLength, row: 0, rows: sigShape[0] };
}

/**
 * The buffers of one UDF over one nav extent and one signal area: partition-sized on a worker,
 * dataset-sized on the merging node.
 */
export class BufferSet {
  readonly arrays: Record<string, TypedArray>;

  constructor(
    readonly decls: Record<string, BufferDeclaration>,
    readonly navLength: number,
    readonly sigShape: readonly [number, number],
    arrays?: Record<string, TypedArray>,
  ) {
    this.arrays = {};
    for (const [name, decl] of Object.entries(decls)) {
      if (decl.use === 'resultOnly') continue;
      const length = bufferLength(decl, navLength, sigShape);
      const given = arrays?.[name];
      if (arrays !== undefined && given === undefined) {
        throw new TesseraError('TESSERA_ERR_UDF_RESULTS', name, 'buffer missing from partition result');
      }
      if (given !== undefined && given.length !== length) {
        throw new TesseraError('TESSERA_ERR_UDF_RESULTS', name, `buffer has ${given.length} elements, expected ${length}`);
      }
      this.arrays[name] = given ?? allocate(decl.dtype, length);
    }
  }

  /** The view of buffer `name` for the unit described by `c`. */
  viewOf(name: string, c: ViewCursor): NDArray {
    const decl = this.decls[name]!;
    const arr = this.arrays[name]!;
    const extra = decl.extraShape;
    const e = shapeSize(extra);
    switch (decl.kind) {
      case 'nav':
        if (c.frame) return view(arr, c.nav * e, (c.nav + 1) * e, extra.length ? extra : [1]);
        return view(arr, c.nav * e, (c.nav + c.depth) * e, [c.depth, ...extra]);
      case 'sig': {
        const w = this.sigShape[1];
        return view(arr, c.row * w * e, (c.row + c.rows) * w * e, [c.rows, w, ...extra]);
      }
      default:
        return view(arr, 0, arr.length, extra.length ? extra : [1]);
    }
  }

  /**
   * An object with one property per buffer: reading gives the current view (cached until the
   * cursor's generation changes), assigning writes into it (`results.x = 0` fills,
   * `results.x = arr` copies), like LiberTEM's slice assignment.
   */
  accessor(cursor: ViewCursor): Record<string, NDArray> {
    const out: Record<string, NDArray> = {};
    for (const name of Object.keys(this.arrays)) {
      let cached: NDArray | null = null;
      let gen = -1;
      const get = () => {
        if (cached === null || gen !== cursor.gen) {
          cached = this.viewOf(name, cursor);
          gen = cursor.gen;
        }
        return cached;
      };
      Object.defineProperty(out, name, {
        enumerable: true,
        get,
        set: (v: ArrayLike<number> | number) => {
          const target = get();
          if (typeof v === 'number') target.fill(v);
          else target.set(v);
        },
      });
    }
    return out;
  }
}
