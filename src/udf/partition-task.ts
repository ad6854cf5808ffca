/**
 * Runs UDFs over the tiles of one partition and returns its partition result: the worker side of
 * LiberTEM's UDFPartRunner (spec B.1, "Worker, per partition"). Push-driven, so that a receiver
 * can feed it the tiles it decodes and an offline worker the tiles it reads:
 *
 *   const task = new PartitionTask({ udfs, context, partition });
 *   for (const tile of tiles) task.processTile(tile);
 *   const result = task.finish();   // plain data: send it to the merging node
 *
 * Each UDF is a clean copy, re-created from its class and params; buffers are partition-sized.
 */
import { TesseraError } from '../errors.js';
import { BufferSet, checkDeclarations, type ViewCursor, wholeCursor } from './buffers.js';
import { TileCorrector } from './corrections.js';
import { TileKernels } from './kernels.js';
import { allocate, type TypedArray } from './dtype.js';
import { bindParams, MetaImpl, type RunContext } from './meta.js';
import { type NDArray, ndarray, shapeSize } from './ndarray.js';
import { type PartitionSlice, sliceInside, type Tile, type TileShape, wholeFrame } from './partition.js';
import { createUdf } from './registry.js';
import { NavSelection } from './roi.js';
import { cleanCopy, type UDF, type UDFMethod, type UDFSpec, udfNameOf, type UDFClass } from './udf.js';

/** What a partition sends to the merging node: plain data (typed arrays + small metadata). */
export interface PartitionResult {
  navStart: number;
  navEnd: number;
  sig: { origin: [number, number]; shape: [number, number] };
  /** frames processed (selected by the ROI) */
  frames: number;
  /** one entry per UDF, in run order: buffer name -> data (every buffer but resultOnly ones) */
  udfs: Array<Record<string, TypedArray>>;
}

export interface PartitionTaskOptions {
  /** UDF instances (clean copies are made) or specs resolved through the registry */
  udfs: ReadonlyArray<UDF | UDFSpec>;
  context: RunContext;
  partition: PartitionSlice;
  /** the tiling the tiles will follow (for meta.tilingScheme); tiles may still vary */
  tiling?: TileShape;
}

interface UdfState {
  udf: UDF;
  method: UDFMethod;
  buffers: BufferSet;
  cursor: ViewCursor;
  meta: MetaImpl;
}

export function instantiate(u: UDF | UDFSpec): UDF {
  return typeof (u as UDF).getResultBuffers === 'function' ? cleanCopy(u as UDF) : createUdf(u as UDFSpec);
}

export class PartitionTask {
  readonly partition: PartitionSlice;
  readonly frames: number;
  private readonly states: UdfState[];
  private readonly selection: NavSelection;
  /** compressed (dataset-global) index of the partition's first selected frame */
  private readonly navOffset: number;
  private readonly corrector: TileCorrector | null;
  private readonly convert: boolean;
  private scratch: Float32Array | Float64Array | null = null;
  private partitionData: TypedArray | null = null;
  private readonly schemeIdx = new Map<number, number>();
  private finished = false;
  private kernels: TileKernels | null | undefined = undefined;

  constructor(private readonly opts: PartitionTaskOptions) {
    const { context: ctx, partition } = opts;
    this.partition = partition;
    const nFrames = shapeSize(ctx.navShape);
    const frame = wholeFrame(ctx.sigShape);
    if (!(partition.navStart >= 0 && partition.navEnd <= nFrames && partition.navStart < partition.navEnd) || !sliceInside(partition.sig, frame)) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'partition', `frames [${partition.navStart}, ${partition.navEnd}) x slice ${JSON.stringify(partition.sig)} is outside the dataset`);
    }
    this.selection = new NavSelection(ctx.roi, nFrames);
    this.navOffset = this.selection.countBefore(partition.navStart);
    this.frames = this.selection.count(partition.navStart, partition.navEnd);
    const [h, w] = partition.sig.shape;
    const isWhole = h === ctx.sigShape[0] && w === ctx.sigShape[1];
    this.corrector = ctx.corrections ? new TileCorrector(ctx.corrections, ctx.sigShape[1], partition.sig) : null;
    this.convert = this.corrector !== null || ctx.inputDtype !== ctx.datasetDtype;
    const rawIndices = this.selection.indices(partition.navStart, partition.navEnd);
    if (ctx.kernels === false) this.kernels = null;
    const kernelSource = () => {
      // room for a few tiles and per-pixel accumulators up front, so that memory rarely grows
      if (this.kernels === undefined) this.kernels = TileKernels.create(h * w * 2 * ((opts.tiling?.depth ?? 1) + 4) + (1 << 20));
      return this.kernels;
    };

    this.states = opts.udfs.map((u) => {
      const udf = instantiate(u);
      const name = udfNameOf(udf.constructor as UDFClass);
      const method = udf.getMethod();
      if (method !== 'tile' && !isWhole) {
        throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'partition', `UDF ${name} needs whole frames (it has no processTile), the partition holds a slice`);
      }
      const meta = new MetaImpl(ctx);
      meta.partition = partition;
      meta.partitionShape = [this.frames, h, w];
      meta.tilingScheme = opts.tiling ?? null;
      meta.rawIndices = rawIndices;
      meta.partitionNavOffset = this.navOffset;
      meta.kernelSource = kernelSource;
      udf.meta = meta;
      const cursor = wholeCursor(this.frames, [h, w]);
      bindParams(udf, ctx, this.selection, [partition.navStart, partition.navEnd], partition.sig, cursor);
      const decls = checkDeclarations(udf.getResultBuffers(), name);
      const buffers = new BufferSet(decls, this.frames, [h, w]);
      udf.results = buffers.accessor(cursor);
      udf.taskData = udf.getTaskData() ?? {};
      return { udf, method, buffers, cursor, meta };
    });
    for (const s of this.states) {
      this.setUnit(s, false, 0, this.frames, 0, h);
      s.udf.preprocess?.();
    }
    if (this.states.some((s) => s.method === 'partition')) {
      this.partitionData = allocate(ctx.inputDtype, this.frames * h * w);
    }
  }

  /**
   * Feed one tile. Its frames must lie in the partition's nav range and its rows must span the
   * partition slice's full width. The tile's memory may be reused once this returns; UDFs must
   * treat it as read-only.
   */
  processTile(tile: Tile): void {
    if (this.finished) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile', 'the partition is finished');
    const { partition } = this;
    const [py, px] = partition.sig.origin;
    const [ph, pw] = partition.sig.shape;
    const [ty, tx] = tile.sigOrigin;
    const [th, tw] = tile.sigShape;
    if (tx !== px || tw !== pw || ty < py || th < 1 || ty + th > py + ph) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile', `rows [${ty}, ${ty + th}) x columns [${tx}, ${tx + tw}) do not span the partition's columns [${px}, ${px + pw})`);
    }
    if (tile.navStart < partition.navStart || tile.navStart + tile.depth > partition.navEnd || tile.depth < 1) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile', `frames [${tile.navStart}, ${tile.navStart + tile.depth}) are outside the partition [${partition.navStart}, ${partition.navEnd})`);
    }
    const n = th * tw;
    if (tile.data.length !== tile.depth * n) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile', `holds ${tile.data.length} values, expected ${tile.depth} x ${th} x ${tw}`);
    }
    const row = ty - py;
    let idx = this.schemeIdx.get(row);
    if (idx === undefined) {
      idx = this.schemeIdx.size;
      this.schemeIdx.set(row, idx);
    }
    for (const [a, b] of this.selection.runs(tile.navStart, tile.navStart + tile.depth)) {
      const depth = b - a;
      const raw = tile.data.subarray((a - tile.navStart) * n, (b - tile.navStart) * n);
      const input = this.prepare(raw, depth, row, th);
      this.dispatch(input, this.selection.countBefore(a) - this.navOffset, depth, row, th, idx);
    }
  }

  /** Convert to the input dtype and apply corrections, into a reused scratch buffer. */
  private prepare(raw: TypedArray, depth: number, row: number, rows: number): TypedArray {
    if (!this.convert) return raw;
    const dtype = this.opts.context.inputDtype;
    if (this.scratch === null || this.scratch.length < raw.length) {
      this.scratch = dtype === 'float64' ? new Float64Array(raw.length) : new Float32Array(raw.length);
    }
    const out = this.scratch.subarray(0, raw.length) as Float32Array | Float64Array;
    if (this.corrector) this.corrector.apply(raw, out, depth, row, rows);
    else out.set(raw);
    return out;
  }

  private setUnit(s: UdfState, frame: boolean, nav: number, depth: number, row: number, rows: number): void {
    const c = s.cursor;
    c.gen++;
    c.frame = frame;
    c.nav = nav;
    c.depth = depth;
    c.row = row;
    c.rows = rows;
    const { sig } = this.partition;
    s.meta.slice = {
      navStart: this.navOffset + nav,
      depth: frame ? 1 : depth,
      sigOrigin: [sig.origin[0] + row, sig.origin[1]],
      sigShape: [rows, sig.shape[1]],
    };
  }

  private dispatch(input: TypedArray, nav: number, depth: number, row: number, rows: number, schemeIdx: number): void {
    const w = this.partition.sig.shape[1];
    const n = rows * w;
    let tileView: NDArray | null = null;
    for (const s of this.states) {
      s.meta.tilingSchemeIdx = schemeIdx;
      if (s.method === 'tile') {
        this.setUnit(s, false, nav, depth, row, rows);
        tileView ??= ndarray(input, [depth, rows, w]);
        s.udf.processTile!(tileView);
      } else if (s.method === 'frame') {
        if (rows !== this.partition.sig.shape[0]) {
          throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tile', `UDF ${udfNameOf(s.udf.constructor as UDFClass)} processes whole frames; the tile holds rows [${row}, ${row + rows})`);
        }
        for (let k = 0; k < depth; k++) {
          this.setUnit(s, true, nav + k, 1, 0, rows);
          s.udf.processFrame!(ndarray(input.subarray(k * n, (k + 1) * n), [rows, w]));
        }
      }
    }
    if (this.partitionData !== null) {
      const frameSize = this.partition.sig.shape[0] * w;
      for (let k = 0; k < depth; k++) this.partitionData.set(input.subarray(k * n, (k + 1) * n), (nav + k) * frameSize + row * w);
    }
  }

  /** Run processPartition and postprocess; returns the partition result. */
  finish(): PartitionResult {
    if (this.finished) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'partition', 'finish() called twice');
    this.finished = true;
    const [h, w] = this.partition.sig.shape;
    for (const s of this.states) {
      this.setUnit(s, false, 0, this.frames, 0, h);
      if (s.method === 'partition') s.udf.processPartition!(ndarray(this.partitionData!, [this.frames, h, w]));
      s.udf.postprocess?.();
      s.meta.slice = null;
    }
    this.partitionData = null;
    this.kernels?.release();
    this.kernels = null;
    const { navStart, navEnd, sig } = this.partition;
    return {
      navStart,
      navEnd,
      sig: { origin: [sig.origin[0], sig.origin[1]], shape: [h, w] },
      frames: this.frames,
      udfs: this.states.map((s) => ({ ...s.buffers.arrays })),
    };
  }
}
