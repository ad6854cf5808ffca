/**
 * Running UDFs over a dataset: runUdf() and runUdfIter() (LiberTEM's run_udf / run_udf_iter,
 * spec B.9). Several UDFs share one pass: every tile is read (and decoded, corrected) once and
 * seen by each UDF.
 *
 * The work is cut exactly as the live pipeline cuts it: nav chunks (one scan row by default) x
 * signal slices (the dataset's sectors by default, or whole frames when a UDF needs them). Each
 * (chunk, slice) partition runs as a PartitionTask, in-process or on worker threads; results of
 * a chunk's slices go through a PartitionCombiner, and the combined chunk is merged into the
 * DatasetResults. The live merger does the same with results from the receivers.
 */
import { availableParallelism } from 'node:os';
import { TesseraError } from '../errors.js';
import { PartitionCombiner } from './combine.js';
import { normaliseCorrections, checkSliceForRepairs, type CorrectionsInput } from './corrections.js';
import { DatasetResults, type UDFResults } from './dataset-results.js';
import type { DataSet } from './dataset.js';
import { type DType, inputDtypeFor, itemSize } from './dtype.js';
import type { RunContext } from './meta.js';
import { type NDArray, shapeSize } from './ndarray.js';
import { navChunks, negotiateTileShape, type PartitionSlice, type SigSlice, sigSlicesFor, type TileShape } from './partition.js';
import type { PartitionResult } from './partition-task.js';
import { loadedPluginSources } from './plugins.js';
import { NavSelection, normaliseRoi, type RoiInput } from './roi.js';
import { runPartition } from './run-partition.js';
import { type UDF, type UDFMethod, type UDFSpec } from './udf.js';
import { WorkerPool } from './worker-pool.js';

export interface RunOptions {
  /** bool per scan position (flat, C order); unselected frames are not processed */
  roi?: RoiInput;
  corrections?: CorrectionsInput | null;
  /** worker threads: 0 (default) runs in this thread, 'auto' uses every core */
  workers?: number | 'auto';
  /** a pool to reuse across runs (not closed by the run) */
  pool?: WorkerPool;
  /** frames per partition (default: one scan row for 2-D/3-D scans) */
  partitionFrames?: number;
  /** signal split for UDFs that can run on slices: 'sectors' (default), a column count, 'whole' or rectangles */
  sigSplit?: 'sectors' | 'whole' | number | SigSlice[];
  /** force a tile shape (default: negotiated, about 1 MiB) */
  tileShape?: TileShape;
  tileBytes?: number;
  /** false: UDFs use their JavaScript loops instead of the SIMD tile kernels (for comparisons) */
  kernels?: boolean;
  signal?: AbortSignal;
}

export interface RunProgress {
  framesDone: number;
  framesTotal: number;
  /** nav chunks merged / planned */
  partitionsDone: number;
  partitionsTotal: number;
  /** (chunk, slice) tasks finished / planned */
  tasksDone: number;
  tasksTotal: number;
}

/** One step of runUdfIter: the state after a merge. */
export interface RunStep {
  /** each UDF's results (getResults() runs on first access); valid until the next step */
  readonly buffers: UDFResults[];
  /** scan positions merged so far (LiberTEM's damage), nav-shaped */
  damage: NDArray<Uint8Array>;
  progress: RunProgress;
}

export interface RunPlan {
  context: RunContext;
  chunks: Array<[number, number]>;
  slices: SigSlice[];
  tileShapes: TileShape[];
  method: UDFMethod;
}

/** LiberTEM's cap on partition size: 512 MiB of pixels. */
const MAX_PARTITION_BYTES = 512 * 2 ** 20;

function checkUdfs(udfs: unknown): UDF[] {
  const list = Array.isArray(udfs) ? udfs : [udfs];
  if (list.length === 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'udfs', 'at least one UDF is needed');
  for (const u of list) {
    if (u === null || typeof u !== 'object' || typeof (u as UDF).getResultBuffers !== 'function') {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'udfs', 'expected UDF instances');
    }
  }
  return list as UDF[];
}

/**
 * The run context every partition and the merging node share: validated ROI and corrections, and
 * the input dtype all UDFs of the run see. Receivers and the merger build theirs with this too.
 */
export function makeRunContext(opts: {
  navShape: readonly number[];
  sigShape: readonly [number, number];
  datasetDtype: DType;
  /** the detector's sectors (column bands) that excluded-pixel repairs stay within */
  sectors: number;
  udfs: ReadonlyArray<UDF>;
  roi?: RoiInput;
  corrections?: CorrectionsInput | null;
  kernels?: boolean;
}): RunContext {
  const navShape = [...opts.navShape];
  const sigShape: [number, number] = [opts.sigShape[0], opts.sigShape[1]];
  const roi = normaliseRoi(opts.roi, navShape);
  const corrections = normaliseCorrections(opts.corrections, sigShape, sigShape[1] / opts.sectors);
  const inputDtype = inputDtypeFor(opts.datasetDtype, opts.udfs.map((u) => u.getPreferredInputDtype()), corrections !== null);
  return { navShape, sigShape, datasetDtype: opts.datasetDtype, inputDtype, roi, corrections, kernels: opts.kernels ?? true };
}

export function planRun(dataset: DataSet, udfs: UDF[], opts: RunOptions = {}): RunPlan {
  const context = makeRunContext({ ...opts, navShape: dataset.navShape, sigShape: dataset.sigShape, datasetDtype: dataset.dtype, sectors: dataset.sectors, udfs });
  const { navShape, sigShape, roi, corrections, inputDtype } = context;
  const nFrames = shapeSize(navShape);
  const methods = udfs.map((u) => u.getMethod());
  const method: UDFMethod = methods.includes('partition') ? 'partition' : methods.includes('frame') ? 'frame' : 'tile';

  // a UDF without processTile in the run: every UDF runs on whole frames (one pass)
  const split = opts.sigSplit ?? 'sectors';
  const slices = sigSlicesFor(sigShape, method !== 'tile' ? 'whole' : split === 'sectors' ? dataset.sectors : split);
  for (const s of slices) checkSliceForRepairs(corrections, s);

  let frames = opts.partitionFrames ?? (navShape.length >= 2 ? navShape[navShape.length - 1]! : Math.max(1, Math.ceil(nFrames / 16)));
  if (method === 'partition' && opts.partitionFrames === undefined) {
    frames = Math.max(1, Math.min(frames, Math.floor(MAX_PARTITION_BYTES / (sigShape[0] * sigShape[1] * itemSize(inputDtype)))));
  }
  const chunks = navChunks(nFrames, frames, new NavSelection(roi, nFrames));
  const tileShapes = slices.map((slice) => {
    if (opts.tileShape) {
      const t = opts.tileShape;
      if (!(Number.isInteger(t.depth) && t.depth >= 1 && Number.isInteger(t.rows) && t.rows >= 1)) {
        throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tileShape', JSON.stringify(t));
      }
      if (method !== 'tile' && t.rows < sigShape[0]) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'tileShape', 'whole-frame UDFs need tiles of whole frames');
      return method === 'partition' ? { depth: frames, rows: sigShape[0] } : t;
    }
    const proposed = negotiateTileShape({ slice, dtype: dataset.dtype, partitionFrames: frames, method, tileBytes: opts.tileBytes });
    return method === 'tile' && dataset.adjustTileShape ? dataset.adjustTileShape(proposed, slice) : proposed;
  });
  return { context, chunks, slices, tileShapes, method };
}

interface Executor {
  concurrency: number;
  run(partition: PartitionSlice, tileShape: TileShape, signal: AbortSignal): Promise<PartitionResult>;
  close(): Promise<void>;
}

function specsFor(udfs: UDF[]): UDFSpec[] {
  return udfs.map((u) => {
    const spec = u.toSpec();
    try {
      structuredClone(spec.params);
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', spec.name, `params cannot be sent to a worker thread: ${(err as Error).message}`);
    }
    return spec;
  });
}

function makeExecutor(dataset: DataSet, udfs: UDF[], context: RunContext, opts: RunOptions): Executor {
  const threads = opts.workers === 'auto' ? availableParallelism() : (opts.workers ?? 0);
  if (!opts.pool && threads <= 0) {
    return {
      concurrency: 1,
      run: (p, t, signal) => runPartition(dataset, udfs, context, p, t, signal),
      close: async () => {},
    };
  }
  const specs = specsFor(udfs);
  const descriptor = dataset.descriptor();
  const pool = opts.pool ?? new WorkerPool({ threads, plugins: loadedPluginSources() });
  return {
    concurrency: pool.threads * 2,
    run: (partition, tileShape, signal) => pool.run({ dataset: descriptor, udfs: specs, context, partition, tileShape }, signal),
    close: async () => {
      if (!opts.pool) await pool.close();
    },
  };
}

/**
 * Run UDFs and yield after every merge of a nav chunk, with the damage mask and progress.
 * The last step is the final result; with nothing to process (an empty ROI) exactly one step is
 * yielded.
 */
export async function* runUdfIter(dataset: DataSet, udfs: UDF | UDF[], opts: RunOptions = {}): AsyncGenerator<RunStep, void, undefined> {
  const list = checkUdfs(udfs);
  const plan = planRun(dataset, list, opts);
  const threaded = opts.pool !== undefined || (opts.workers !== undefined && opts.workers !== 0);
  // with workers the merging side also re-creates the UDFs from their specs, so that a UDF that
  // cannot be rebuilt from name + params fails here, before any work starts
  const results = new DatasetResults(threaded ? specsFor(list) : list, plan.context);
  const { chunks, slices, tileShapes } = plan;
  const tasksTotal = chunks.length * slices.length;
  let tasksDone = 0;
  const step = (): RunStep => {
    let cached: UDFResults[] | null = null;
    return {
      get buffers() {
        cached ??= results.results();
        return cached;
      },
      damage: results.damageMask(),
      progress: {
        framesDone: results.framesMerged,
        framesTotal: results.selection.selected,
        partitionsDone: results.partitionsMerged,
        partitionsTotal: chunks.length,
        tasksDone,
        tasksTotal,
      },
    };
  };
  if (tasksTotal === 0) {
    yield step();
    return;
  }

  const abort = new AbortController();
  let wake: (() => void) | null = null;
  const onAbort = () => {
    abort.abort(opts.signal!.reason);
    wake?.();
  };
  opts.signal?.throwIfAborted();
  const executor = makeExecutor(dataset, list, plan.context, opts);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const combiners: Array<PartitionCombiner | null> = chunks.map(() => new PartitionCombiner(results.declarations, plan.context.sigShape));
  type Done = { chunk: number; result?: PartitionResult; error?: unknown };
  const done: Done[] = [];
  const inflight = new Set<Promise<void>>();
  let next = 0;
  const launch = () => {
    while (inflight.size < executor.concurrency && next < tasksTotal && !abort.signal.aborted) {
      const chunk = Math.floor(next / slices.length);
      const s = next % slices.length;
      next++;
      const [navStart, navEnd] = chunks[chunk]!;
      const p: Promise<void> = executor
        .run({ navStart, navEnd, sig: slices[s]! }, tileShapes[s]!, abort.signal)
        .then(
          (result) => void done.push({ chunk, result }),
          (error: unknown) => void done.push({ chunk, error }),
        )
        .finally(() => {
          inflight.delete(p);
          wake?.();
        });
      inflight.add(p);
    }
  };
  try {
    while (tasksDone < tasksTotal) {
      opts.signal?.throwIfAborted();
      launch();
      while (done.length === 0) {
        await new Promise<void>((resolve) => (wake = resolve));
        opts.signal?.throwIfAborted();
      }
      wake = null;
      const d = done.shift()!;
      tasksDone++;
      if (d.error !== undefined) throw opts.signal?.aborted ? opts.signal.reason : d.error;
      const combiner = combiners[d.chunk]!;
      combiner.add(d.result!);
      if (combiner.complete) {
        results.merge(combiner.result());
        combiners[d.chunk] = null;
        yield step();
      }
    }
  } finally {
    abort.abort();
    opts.signal?.removeEventListener('abort', onAbort);
    await Promise.allSettled([...inflight]);
    await executor.close();
  }
}

/** Run UDFs to the end; one UDF gives its results, a list gives a list. */
export async function runUdf(dataset: DataSet, udf: UDF, opts?: RunOptions): Promise<UDFResults>;
export async function runUdf(dataset: DataSet, udfs: UDF[], opts?: RunOptions): Promise<UDFResults[]>;
export async function runUdf(dataset: DataSet, udfs: UDF | UDF[], opts: RunOptions = {}): Promise<UDFResults | UDFResults[]> {
  let last: RunStep | null = null;
  for await (const s of runUdfIter(dataset, udfs, opts)) last = s;
  const buffers = last!.buffers;
  return Array.isArray(udfs) ? buffers : buffers[0]!;
}
