/**
 * The merging node's side of a run (spec B.1, "Main node"): dataset-sized buffers per UDF, the
 * merge of whole-frame partition results in arrival order with each UDF's merge(dest, src), the
 * damage mask of merged scan positions, and getResults() with LiberTEM's rules (spec B.7).
 *
 * Used by the offline runner and, later, by the live merger: both hand it combined partition
 * results (see PartitionCombiner).
 */
import { TesseraError } from '../errors.js';
import { type BufferDeclaration, BufferSet, checkDeclarations, extraSize, type ViewCursor, wholeCursor } from './buffers.js';
import { allocate, dtypeKind, dtypeOf, isTypedArray, sameKind, type DType, type TypedArray } from './dtype.js';
import { bindParams, MetaImpl, type RunContext } from './meta.js';
import { type NDArray, ndarray, shapeSize } from './ndarray.js';
import { wholeFrame } from './partition.js';
import type { CombinedResult, SigPart } from './combine.js';
import { LogsumUDF } from './lib/logsum.js';
import { SumUDF } from './lib/sum.js';
import { instantiate, type PartitionResult } from './partition-task.js';
import { NavSelection } from './roi.js';
import { hasDefaultGetResults, hasDefaultMerge, type MaskedResult, type UDF, type UDFClass, type UDFSpec, udfNameOf } from './udf.js';

/** One result of one UDF (LiberTEM's result BufferWrapper). */
export interface ResultBuffer {
  kind: 'nav' | 'sig' | 'single';
  dtype: DType;
  extraShape: readonly number[];
  /** nav: [...navShape, ...extra], positions outside the ROI filled with NaN (floats) or 0; sig: [h, w, ...extra]; single: extra or [1] */
  data: NDArray;
  /** nav: [selected positions, ...extra] (ROI-compressed); otherwise the same as data */
  raw: NDArray;
  /** nav: one entry per scan position (1 = merged and in the ROI); otherwise null (all valid) unless getResults masked it */
  validMask: NDArray<Uint8Array> | null;
}

export type UDFResults = Record<string, ResultBuffer>;

/**
 * merge() implementations known to be element-wise addition of these sig buffers and nothing
 * else (a subclass that overrides merge() is not matched: its merge is called as usual).
 */
const SUM_MERGES = new Map<unknown, readonly string[]>([
  [SumUDF.prototype.merge, ['intensity']],
  [LogsumUDF.prototype.merge, ['logsum']],
]);

/** dest[rect] += src for one slice; monomorphic loops per array type (V8 keeps them tight). */
function addSlice(dest: TypedArray, frameWidth: number, src: TypedArray, slice: { origin: readonly [number, number]; shape: readonly [number, number] }, e: number): void {
  const [y0, x0] = slice.origin;
  const [h, w] = slice.shape;
  const rowLen = w * e;
  if (dest instanceof Float64Array && src instanceof Float64Array) {
    for (let r = 0; r < h; r++) addRowF64(dest, ((y0 + r) * frameWidth + x0) * e, src, r * rowLen, rowLen);
  } else if (dest instanceof Float32Array && src instanceof Float32Array) {
    for (let r = 0; r < h; r++) addRowF32(dest, ((y0 + r) * frameWidth + x0) * e, src, r * rowLen, rowLen);
  } else {
    for (let r = 0; r < h; r++) {
      const d = ((y0 + r) * frameWidth + x0) * e;
      const s = r * rowLen;
      for (let i = 0; i < rowLen; i++) dest[d + i] += src[s + i]!;
    }
  }
}

function addRowF64(dest: Float64Array, d: number, src: Float64Array, s: number, n: number): void {
  for (let i = 0; i < n; i++) dest[d + i] += src[s + i]!;
}

function addRowF32(dest: Float32Array, d: number, src: Float32Array, s: number, n: number): void {
  for (let i = 0; i < n; i++) dest[d + i] += src[s + i]!;
}

interface MergeState {
  udf: UDF;
  /** sig buffers this UDF's merge adds element-wise and that are merged slice by slice (null: call merge()) */
  sumSig: ReadonlySet<string> | null;
  name: string;
  decls: Record<string, BufferDeclaration>;
  buffers: BufferSet;
  destCursor: ViewCursor;
  dest: Record<string, NDArray>;
  meta: MetaImpl;
}

export class DatasetResults {
  readonly selection: NavSelection;
  /** merged positions, ROI-compressed */
  readonly damage: Uint8Array;
  framesMerged = 0;
  partitionsMerged = 0;
  private readonly states: MergeState[];

  constructor(
    udfs: ReadonlyArray<UDF | UDFSpec>,
    readonly context: RunContext,
  ) {
    const nFrames = shapeSize(context.navShape);
    this.selection = new NavSelection(context.roi, nFrames);
    const n = this.selection.selected;
    this.damage = new Uint8Array(n);
    const sig = context.sigShape;
    this.states = udfs.map((u) => {
      const udf = instantiate(u);
      const name = udfNameOf(udf.constructor as UDFClass);
      udf.getMethod();
      const meta = new MetaImpl(context);
      udf.meta = meta;
      const whole = wholeCursor(n, sig);
      bindParams(udf, context, this.selection, [0, nFrames], wholeFrame(sig), whole);
      const decls = checkDeclarations(udf.getResultBuffers(), name);
      if (hasDefaultMerge(udf)) {
        const needs = Object.entries(decls).find(([, d]) => d.kind !== 'nav' && d.use !== 'resultOnly');
        if (needs) throw new TesseraError('TESSERA_ERR_UDF_DECLARATION', name, `buffer ${needs[0]} is kind '${needs[1].kind}': the default merge only assigns nav buffers, so the UDF must implement merge()`);
      }
      if (hasDefaultGetResults(udf)) {
        const only = Object.entries(decls).find(([, d]) => d.use === 'resultOnly');
        if (only) throw new TesseraError('TESSERA_ERR_UDF_DECLARATION', name, `buffer ${only[0]} is resultOnly, so the UDF must implement getResults()`);
      }
      const buffers = new BufferSet(decls, n, sig);
      udf.results = buffers.accessor(whole);
      const destCursor: ViewCursor = { ...wholeCursor(n, sig) };
      const summed = SUM_MERGES.get(udf.merge);
      const sumSig = summed && summed.every((b) => decls[b]?.kind === 'sig' && decls[b]!.use !== 'resultOnly') ? new Set(summed) : null;
      const state: MergeState = { udf, name, sumSig, decls, buffers, destCursor, dest: buffers.accessor(destCursor), meta };
      meta.validNavMask = this.damage;
      udf.preprocess?.();
      return state;
    });
  }

  /** Each UDF's buffer declarations, for a PartitionCombiner. */
  get declarations(): Array<Record<string, BufferDeclaration>> {
    return this.states.map((s) => s.decls);
  }

  /**
   * Per UDF, the sig buffers whose merge is element-wise addition (null: none), for a
   * PartitionCombiner that keeps them as slices: merge() adds each slice into its rectangle.
   */
  get sumMergedSig(): Array<ReadonlySet<string> | null> {
    return this.states.map((s) => s.sumSig);
  }

  /** Merge a whole-frame partition result (after combining its signal slices). */
  merge(r: PartitionResult | CombinedResult): void {
    const [h, w] = this.context.sigShape;
    if (r.sig.origin[0] !== 0 || r.sig.origin[1] !== 0 || r.sig.shape[0] !== h || r.sig.shape[1] !== w) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', 'covers a signal slice: combine the slices of its frames first');
    }
    const nFrames = this.selection.size;
    if (!(r.navStart >= 0 && r.navEnd <= nFrames && r.navStart < r.navEnd) || r.frames !== this.selection.count(r.navStart, r.navEnd)) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `frames [${r.navStart}, ${r.navEnd}) with ${r.frames} selected do not fit the run`);
    }
    if (r.udfs.length !== this.states.length) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `carries ${r.udfs.length} UDF results, the run has ${this.states.length} UDFs`);
    }
    const offset = this.selection.countBefore(r.navStart);
    for (let i = offset; i < offset + r.frames; i++) {
      if (this.damage[i]) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `frames [${r.navStart}, ${r.navEnd}) were already merged`);
    }
    const parts = (r as CombinedResult).sigParts;
    const sliced = this.states.map((s, i) => (s.sumSig !== null && parts?.[i] ? this.checkParts(s, parts[i]!) : null));
    const srcSets = this.states.map((s, i) => (sliced[i] ? null : new BufferSet(s.decls, r.frames, [h, w], r.udfs[i])));
    this.states.forEach((s, i) => {
      const own = sliced[i];
      if (own) {
        // what s.udf.merge does (SUM_MERGES), one slice at a time
        for (const part of own) {
          for (const name of s.sumSig!) addSlice(s.buffers.arrays[name]!, w, part.arrays[name]!, part.sig, extraSize(s.decls[name]!));
        }
        return;
      }
      const c = s.destCursor;
      c.gen++;
      c.nav = offset;
      c.depth = r.frames;
      s.meta.validNavMask = this.damage;
      s.udf.merge(s.dest, srcSets[i]!.accessor(wholeCursor(r.frames, [h, w])));
    });
    this.damage.fill(1, offset, offset + r.frames);
    this.framesMerged += r.frames;
    this.partitionsMerged++;
  }

  /** The slices must tile the frame and carry every summed buffer at its slice's size. */
  private checkParts(s: MergeState, parts: SigPart[]): SigPart[] {
    const [h, w] = this.context.sigShape;
    let area = 0;
    for (const p of parts) {
      const [y0, x0] = p.sig.origin;
      const [ph, pw] = p.sig.shape;
      if (y0 < 0 || x0 < 0 || y0 + ph > h || x0 + pw > w) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `slice ${JSON.stringify(p.sig)} is outside the frame`);
      area += ph * pw;
      for (const name of s.sumSig!) {
        const arr = p.arrays[name];
        const expected = ph * pw * extraSize(s.decls[name]!);
        if (arr === undefined || arr.length !== expected) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', name, `slice buffer has ${arr?.length ?? 0} elements, expected ${expected}`);
      }
    }
    if (area !== h * w) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `signal slices cover ${area} of ${h * w} pixels`);
    return parts;
  }

  /** Scan positions merged so far, over the full nav shape (0 outside the ROI). */
  damageMask(): NDArray<Uint8Array> {
    return ndarray(this.selection.expandMask(this.damage), this.context.navShape);
  }

  /** Run every UDF's getResults() and wrap the outputs (spec B.7). No side effects on the buffers. */
  results(): UDFResults[] {
    return this.states.map((s) => this.resultsOf(s));
  }

  private resultsOf(s: MergeState): UDFResults {
    const n = this.selection.selected;
    const sig = this.context.sigShape;
    s.meta.validNavMask = this.damage;
    s.udf.results = s.buffers.accessor(wholeCursor(n, sig));
    const returned = hasDefaultGetResults(s.udf) ? {} : s.udf.getResults();
    if (returned === null || typeof returned !== 'object') throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, 'getResults() must return an object');
    for (const key of Object.keys(returned)) {
      const decl = s.decls[key];
      if (!decl) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `getResults() returned ${key}, which is not a declared buffer`);
      if (decl.use === 'private') throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `getResults() returned private buffer ${key}`);
    }
    const out: UDFResults = {};
    for (const [name, decl] of Object.entries(s.decls)) {
      if (decl.use === 'private') continue;
      const value = returned[name];
      if (value === undefined && decl.use === 'resultOnly') {
        throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `getResults() did not return resultOnly buffer ${name}`);
      }
      let data: TypedArray;
      let mask: Uint8Array | boolean | null = null;
      if (value === undefined) data = s.buffers.arrays[name]!;
      else if (isTypedArray(value)) data = value;
      else if (value !== null && typeof value === 'object' && (value as MaskedResult).$masked === true && isTypedArray((value as MaskedResult).data)) {
        data = (value as MaskedResult).data;
        mask = (value as MaskedResult).mask;
      } else {
        throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `getResults() returned ${name} as ${typeof value}; expected a typed array`);
      }
      const actual = dtypeOf(data);
      if (!sameKind(decl.dtype, actual)) {
        throw new TesseraError('TESSERA_ERR_UDF_RESULTS', s.name, `${name} is declared ${decl.dtype} (kind ${dtypeKind(decl.dtype)}) but getResults() returned ${actual} (kind ${dtypeKind(actual)})`);
      }
      out[name] = this.wrap(s.name, name, decl, data, mask);
    }
    return out;
  }

  private wrap(udf: string, name: string, decl: BufferDeclaration, data: TypedArray, mask: Uint8Array | boolean | null): ResultBuffer {
    const sel = this.selection;
    const sig = this.context.sigShape;
    const e = extraSize(decl);
    const expected = decl.kind === 'nav' ? sel.selected * e : decl.kind === 'sig' ? sig[0] * sig[1] * e : e;
    if (data.length !== expected) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', udf, `${name} has ${data.length} elements, expected ${expected}`);
    }
    const positions = decl.kind === 'nav' ? sel.selected : decl.kind === 'sig' ? sig[0] * sig[1] : 1;
    let posMask: Uint8Array | null;
    if (mask === null) posMask = decl.kind === 'nav' ? this.damage : null;
    else if (typeof mask === 'boolean') posMask = new Uint8Array(positions).fill(mask ? 1 : 0);
    else if (mask instanceof Uint8Array && mask.length === positions) posMask = mask;
    else throw new TesseraError('TESSERA_ERR_UDF_RESULTS', udf, `mask of ${name} needs one entry per position (${positions})`);

    const single = decl.extraShape.length ? decl.extraShape : [1];
    if (decl.kind !== 'nav') {
      const shape = decl.kind === 'sig' ? [sig[0], sig[1], ...decl.extraShape] : single;
      const shaped = ndarray(data.subarray(0), shape);
      const vm = posMask === null ? null : ndarray(posMask.subarray(0), decl.kind === 'sig' ? [sig[0], sig[1]] : [1]);
      return { kind: decl.kind, dtype: decl.dtype, extraShape: decl.extraShape, data: shaped, raw: shaped, validMask: vm };
    }
    const navShape = this.context.navShape;
    const raw = ndarray(data.subarray(0), [sel.selected, ...decl.extraShape]);
    let full: NDArray;
    if (sel.roi === null) {
      full = ndarray(data.subarray(0), [...navShape, ...decl.extraShape]);
    } else {
      const arr = allocate(decl.dtype, sel.size * e);
      if (dtypeKind(decl.dtype) === 'f') arr.fill(NaN);
      let k = 0;
      for (let i = 0; i < sel.size; i++) {
        if (sel.roi[i] === 1) {
          arr.set(data.subarray(k * e, (k + 1) * e), i * e);
          k++;
        }
      }
      full = ndarray(arr, [...navShape, ...decl.extraShape]);
    }
    const vm = ndarray(sel.expandMask(posMask!), navShape);
    return { kind: 'nav', dtype: decl.dtype, extraShape: decl.extraShape, data: full, raw, validMask: vm };
  }
}
