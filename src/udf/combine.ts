/**
 * The sector-split combine step (docs/udf.md, "Sector-split semantics"): partition results of
 * the same frames from disjoint signal slices become one whole-frame partition result, buffer by
 * buffer: sig buffers are placed side by side; nav and single buffers combine by their declared
 * rule ('sum' by default, as the tiles of one frame accumulate in a single process). The
 * combined result is then merged into the dataset result with the UDF's merge().
 *
 * The live merger feeds sector results as they arrive; the offline runner feeds its slice tasks
 * the same way, so both compute exactly the same thing.
 *
 * Sig buffers whose UDF merge is known to be element-wise addition (DatasetResults.sumMergedSig)
 * need no whole-frame intermediate: the combiner keeps each slice as it came (`sigParts`) and
 * DatasetResults.merge adds each slice straight into its rectangle of the dataset buffer. Every
 * pixel still gets exactly one addition per chunk, in the same chunk order, so the result is
 * bit for bit what placing then adding gives (floats included), without allocating, filling
 * and re-reading a frame-sized buffer per pending chunk.
 */
import { TesseraError } from '../errors.js';
import { type BufferDeclaration, BufferSet, type CombineRule, extraSize } from './buffers.js';
import { allocate, type TypedArray } from './dtype.js';
import { type SigSlice, sliceInside, slicesOverlap, wholeFrame } from './partition.js';
import type { PartitionResult } from './partition-task.js';

function combineInto(rule: CombineRule, dest: TypedArray, src: TypedArray, name: string): void {
  const n = dest.length;
  switch (rule) {
    case 'sum':
      for (let i = 0; i < n; i++) dest[i] += src[i]!;
      return;
    case 'max':
      for (let i = 0; i < n; i++) if (src[i]! > dest[i]! || Number.isNaN(src[i]!)) dest[i] = src[i]!;
      return;
    case 'min':
      for (let i = 0; i < n; i++) if (src[i]! < dest[i]! || Number.isNaN(src[i]!)) dest[i] = src[i]!;
      return;
    case 'same':
      for (let i = 0; i < n; i++) {
        if (dest[i] !== src[i] && !(Number.isNaN(dest[i]!) && Number.isNaN(src[i]!))) {
          throw new TesseraError('TESSERA_ERR_UDF_RESULTS', name, `declared 'same' across signal slices, but element ${i} is ${dest[i]} in one slice and ${src[i]} in another`);
        }
      }
      return;
    case 'place':
      throw new TesseraError('TESSERA_ERR_UDF_DECLARATION', name, "'place' is for sig buffers");
    default:
      rule(dest, src);
  }
}

/** Copy a slice-sized sig buffer into its rectangle of a frame-sized one. */
function place(dest: TypedArray, frameWidth: number, src: TypedArray, slice: SigSlice, e: number): void {
  const [y0, x0] = slice.origin;
  const [h, w] = slice.shape;
  const rowLen = w * e;
  for (let r = 0; r < h; r++) dest.set(src.subarray(r * rowLen, (r + 1) * rowLen), ((y0 + r) * frameWidth + x0) * e);
}

/** One signal slice of sig buffers kept as they came (merged later by adding into their rectangle). */
export interface SigPart {
  sig: SigSlice;
  arrays: Record<string, TypedArray>;
}

/**
 * A combined whole-frame result. With `sigParts`, UDF i's buffers named in the combiner's
 * `sumSig[i]` are not in `udfs[i]` but in `sigParts[i]`, one entry per slice, covering the frame.
 */
export interface CombinedResult extends PartitionResult {
  sigParts?: Array<SigPart[] | null>;
}

export class PartitionCombiner {
  private readonly slices: SigSlice[] = [];
  private area = 0;
  private acc: CombinedResult | null = null;

  /**
   * `decls`: each UDF's buffer declarations (from the merging node's instances), in run order.
   * `sumSig`: per UDF, the sig buffers to keep as slices rather than place into a whole frame
   * (only those whose merge is element-wise addition: DatasetResults.sumMergedSig).
   * Takes ownership of the arrays of results passed to add(); sig arrays are only read.
   */
  constructor(
    private readonly decls: ReadonlyArray<Record<string, BufferDeclaration>>,
    private readonly sigShape: readonly [number, number],
    private readonly sumSig: ReadonlyArray<ReadonlySet<string> | null> = [],
  ) {}

  private keepsSlice(i: number, name: string): boolean {
    return this.sumSig[i]?.has(name) === true;
  }

  private part(i: number, r: PartitionResult): void {
    const set = this.sumSig[i];
    if (!set || set.size === 0) return;
    const arrays: Record<string, TypedArray> = {};
    for (const name of set) if (r.udfs[i]![name] !== undefined) arrays[name] = r.udfs[i]![name]!;
    const parts = this.acc!.sigParts!;
    (parts[i] ??= []).push({ sig: r.sig, arrays });
  }

  get complete(): boolean {
    return this.area === this.sigShape[0] * this.sigShape[1];
  }

  /** Slices added so far. */
  get parts(): number {
    return this.slices.length;
  }

  add(r: PartitionResult): void {
    const frame = wholeFrame(this.sigShape);
    if (!sliceInside(r.sig, frame)) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `slice ${JSON.stringify(r.sig)} is outside the frame`);
    if (r.udfs.length !== this.decls.length) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `carries ${r.udfs.length} UDF results, the run has ${this.decls.length} UDFs`);
    }
    // validates buffer names and sizes
    r.udfs.forEach((arrays, i) => new BufferSet(this.decls[i]!, r.frames, r.sig.shape, arrays));
    const acc = this.acc;
    if (acc !== null && (acc.navStart !== r.navStart || acc.navEnd !== r.navEnd || acc.frames !== r.frames)) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `frames [${r.navStart}, ${r.navEnd}) do not match [${acc.navStart}, ${acc.navEnd}) of the results being combined`);
    }
    for (const s of this.slices) {
      if (slicesOverlap(s, r.sig)) throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `slice ${JSON.stringify(r.sig)} overlaps one already combined`);
    }
    this.slices.push(r.sig);
    this.area += r.sig.shape[0] * r.sig.shape[1];
    const whole = r.sig.shape[0] === this.sigShape[0] && r.sig.shape[1] === this.sigShape[1];
    if (acc === null && whole) {
      this.acc = r;
      return;
    }
    if (acc === null) {
      this.acc = {
        navStart: r.navStart,
        navEnd: r.navEnd,
        sig: frame,
        frames: r.frames,
        sigParts: r.udfs.map(() => null),
        udfs: r.udfs.map((arrays, i) => {
          const out: Record<string, TypedArray> = {};
          for (const [name, arr] of Object.entries(arrays)) {
            const decl = this.decls[i]![name]!;
            if (this.keepsSlice(i, name)) continue;
            if (decl.kind === 'sig') {
              out[name] = allocate(decl.dtype, this.sigShape[0] * this.sigShape[1] * extraSize(decl));
              place(out[name]!, this.sigShape[1], arr, r.sig, extraSize(decl));
            } else {
              out[name] = arr;
            }
          }
          return out;
        }),
      };
      for (let i = 0; i < r.udfs.length; i++) this.part(i, r);
      return;
    }
    r.udfs.forEach((arrays, i) => {
      this.part(i, r);
      for (const [name, arr] of Object.entries(arrays)) {
        if (this.keepsSlice(i, name)) continue;
        const decl = this.decls[i]![name]!;
        const dest = acc.udfs[i]![name]!;
        if (decl.kind === 'sig') place(dest, this.sigShape[1], arr, r.sig, extraSize(decl));
        else combineInto(decl.combine, dest, arr, name);
      }
    });
  }

  /** The whole-frame result; only once every pixel of the frame has been covered. */
  result(): CombinedResult {
    if (this.acc === null || !this.complete) {
      throw new TesseraError('TESSERA_ERR_UDF_RESULTS', 'partition', `signal slices cover ${this.area} of ${this.sigShape[0] * this.sigShape[1]} pixels`);
    }
    return this.acc;
  }
}
