/**
 * UDF engine throughput on decoded K2 IS data (uint16, 12-bit values).
 *
 * 1. The receiver's UDF set (Sum + SumSig + ApplyMasks with 4 sparse disks + CoM) in one pass,
 *    through PartitionTask exactly as a receiver runs it: one sector slice (1860 x 256) per
 *    partition, whole sector frames (952 KB) as tiles, each freshly "decoded" tile in cache.
 *    GB/s of decoded bytes, against memcpy of the same tile; each UDF alone too.
 * 2. Tile-size sweep, 64 KB .. 8 MB: the same pass over 122 MB of sector frames (more than
 *    L3), against memcpy of those bytes. Shows where LiberTEM's ~1 MB tiles stand.
 * 3. runUdf over whole K2 frames in memory on 1 and 2 worker threads.
 *
 * UDF_BENCH_QUICK=1 runs section 1 only.
 */
import { performance } from 'node:perf_hooks';
import { MemoryDataSet } from '../src/udf/dataset.js';
import { ApplyMasksUDF, CoMUDF, StdDevUDF, SumSigUDF, SumUDF } from '../src/udf/lib/index.js';
import type { MaskSpec } from '../src/udf/masks.js';
import { TileKernels } from '../src/udf/kernels.js';
import { PartitionTask } from '../src/udf/partition-task.js';
import { columnSlices } from '../src/udf/partition.js';
import { runUdf } from '../src/udf/runner.js';
import type { UDF } from '../src/udf/udf.js';
import { WorkerPool } from '../src/udf/worker-pool.js';
import { formatBytes, measure, measureMemcpy, median, report } from './lib.js';

const H = 1860;
const W = 2048;
const SW = 256;
const SECTOR_BYTES = H * SW * 2;

const DISKS: MaskSpec[] = [
  { type: 'disk', cy: 930, cx: 1024, r: 200 },
  { type: 'disk', cy: 930, cx: 300, r: 150 },
  { type: 'disk', cy: 500, cx: 1500, r: 120 },
  { type: 'disk', cy: 1400, cx: 700, r: 100 },
];

/** bright field (disk) + annular dark field (ring), the other live virtual-detector set */
const BF_ADF: MaskSpec[] = [
  { type: 'disk', cy: 930, cx: 1024, r: 120 },
  { type: 'ring', cy: 930, cx: 1024, ri: 300, ro: 900 },
];

/** a dense float mask (Gaussian weights) over the whole frame: the dense, non-integer path */
function gaussianMask(): MaskSpec {
  const data = new Float64Array(H * W);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) data[y * W + x] = Math.exp(-((y - 930) ** 2 + (x - 1024) ** 2) / (2 * 400 ** 2));
  return { type: 'dense', data };
}

const receiverUdfs = (): UDF[] => [new SumUDF(), new SumSigUDF(), new ApplyMasksUDF({ masks: DISKS }), new CoMUDF()];

function randomPixels(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 20;
  }
  return out;
}

const context = (frames: number) => ({
  navShape: [1, frames],
  sigShape: [H, W] as [number, number],
  datasetDtype: 'uint16' as const,
  inputDtype: 'uint16' as const,
  roi: null,
  corrections: null,
});

/** One pass over `frames` frames x 8 sectors: a PartitionTask per sector, tiles from `tileOf`. */
function pass(udfs: UDF[], frames: number, depth: number, rows: number, tileOf: (sector: number, frame: number, row: number, depth: number, rows: number) => Uint16Array): void {
  const ctx = context(frames);
  for (const sig of columnSlices([H, W], 8)) {
    const sector = sig.origin[1] / SW;
    const task = new PartitionTask({ udfs, context: ctx, partition: { navStart: 0, navEnd: frames, sig }, tiling: { depth, rows } });
    for (let f = 0; f < frames; f += depth) {
      const d = Math.min(depth, frames - f);
      for (let r = 0; r < H; r += rows) {
        const rr = Math.min(rows, H - r);
        task.processTile({ data: tileOf(sector, f, r, d, rr), navStart: f, depth: d, sigOrigin: [r, sig.origin[1]], sigShape: [rr, SW] });
      }
    }
    task.finish();
  }
}

export async function run(): Promise<void> {
  // 1. the receiver's UDF set on in-cache sector tiles
  // a partition is one scan row of 64 frames per sector, as a receiver runs it
  const tiles = Array.from({ length: 8 }, (_, s) => randomPixels(H * SW, s + 1));
  const frames = 64;
  const bytes = frames * 8 * SECTOR_BYTES;
  const memcpyTile = measureMemcpy(SECTOR_BYTES).best;
  report('memcpy of one sector tile (952 KB)', memcpyTile, 'GB/s');
  const gauss = [gaussianMask()];
  const sets: Array<[string, () => UDF[]]> = [
    ['Sum + SumSig + ApplyMasks(4 sparse disks) + CoM, one pass', receiverUdfs],
    ['Sum + SumSig + ApplyMasks(BF disk + ADF ring) + CoM, one pass', () => [new SumUDF(), new SumSigUDF(), new ApplyMasksUDF({ masks: BF_ADF }), new CoMUDF()]],
    ['Sum alone', () => [new SumUDF()]],
    ['SumSig alone', () => [new SumSigUDF()]],
    ['ApplyMasks(4 sparse disks) alone', () => [new ApplyMasksUDF({ masks: DISKS })]],
    ['ApplyMasks(BF disk + ADF ring) alone', () => [new ApplyMasksUDF({ masks: BF_ADF })]],
    ['ApplyMasks(1 dense float mask) alone', () => [new ApplyMasksUDF({ masks: gauss })]],
    ['CoM alone', () => [new CoMUDF()]],
    ['StdDev alone', () => [new StdDevUDF()]],
  ];
  for (const [name, make] of sets) {
    const udfs = make();
    const rate = measure(() => pass(udfs, frames, 1, H, (s) => tiles[s]!), { bytes, runs: 5, minTimeMs: 300 });
    report(`${name}, 952 KB sector tiles in cache`, rate, 'GB/s', rate / memcpyTile, 'memcpy of the same tile');
    // per 1860 x 256 sector frame: what a receiver spends per frame at that rate
    report(`  ${name}, UDF time per sector frame`, (SECTOR_BYTES / (rate * 1e9)) * 1e3, 'ms', (SECTOR_BYTES / (rate * 1e9)) / (SECTOR_BYTES / (memcpyTile * 1e9)), 'memcpy time of the same tile');
  }
  // the same pass with the tiles in a WebAssembly memory the kernels share (as a receiver's
  // decoder memory with TileKernels.shareMemory): no staging copy
  {
    const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer; grow(p: number): number } } }).WebAssembly;
    const memory = new Wasm.Memory({ initial: Math.ceil((8 * SECTOR_BYTES + (32 << 20)) / 65536) });
    let top = 64;
    const alloc = (b: number) => {
      const p = top;
      top += Math.ceil(b / 16) * 16;
      if (top > memory.buffer.byteLength) memory.grow(Math.ceil((top - memory.buffer.byteLength) / 65536));
      return p;
    };
    const ptrs = tiles.map((t) => {
      const p = alloc(t.byteLength);
      new Uint16Array(memory.buffer, p, t.length).set(t);
      return p;
    });
    TileKernels.shareMemory(memory, alloc, 24 << 20);
    try {
      for (const [name, make] of sets.slice(0, 2)) {
        const udfs = make();
        const rate = measure(() => pass(udfs, frames, 1, H, (s) => new Uint16Array(memory.buffer, ptrs[s]!, H * SW)), { bytes, runs: 5, minTimeMs: 300 });
        report(`${name}, tiles in the kernels' shared memory (no copy)`, rate, 'GB/s', rate / memcpyTile, 'memcpy of the same tile');
        report(`  ${name}, shared memory, UDF time per sector frame`, (SECTOR_BYTES / (rate * 1e9)) * 1e3, 'ms', rate > 0 ? memcpyTile / rate : NaN, 'memcpy time of the same tile');
      }
    } finally {
      TileKernels.unshareMemory();
    }
  }
  if (process.env.UDF_BENCH_QUICK) return;

  // 2. tile-size sweep over 16 frames x 8 sectors (122 MB, far more than L3)
  const perSector = 16;
  const sweepFrames = perSector * 8;
  const big = randomPixels(sweepFrames * H * SW, 99); // sector-major: [sector][frame][row][col]
  const total = big.byteLength;
  const memcpyBig = measureMemcpy(total, { runs: 5 }).best;
  report(`memcpy of ${formatBytes(total)} (out of cache)`, memcpyBig, 'GB/s');
  const tileAt = (sector: number, frame: number, row: number, depth: number, rows: number) => {
    const base = (sector * perSector + frame) * H * SW;
    if (rows === H) return big.subarray(base, base + depth * H * SW);
    return big.subarray(base + row * SW, base + (row + rows) * SW);
  };
  const udfs = receiverUdfs();
  for (const target of [64, 128, 256, 512, 1024, 2048, 4096, 8192].map((k) => k * 1024)) {
    const [depth, rows] = target < SECTOR_BYTES ? [1, target / (SW * 2)] : [Math.round(target / SECTOR_BYTES), H];
    const tileBytes = depth * rows * SW * 2;
    const rate = measure(() => pass(udfs, perSector, depth, rows, tileAt), { bytes: total, runs: 5, minTimeMs: 300 });
    report(`receiver UDF set, tiles of ${formatBytes(tileBytes)} (${depth} x ${rows} x ${SW})`, rate, 'GB/s', rate / memcpyBig, `memcpy of the same ${formatBytes(total)}`);
  }

  // 3. runUdf on worker threads: whole K2 frames in a SharedArrayBuffer, 8 sector slices
  // two scan rows of 8 frames: 2 chunks x 8 sectors = 16 partition tasks
  const nav = [2, 8];
  const data = new Uint16Array(new SharedArrayBuffer(16 * H * W * 2));
  data.set(randomPixels(16 * H * W, 7));
  const ds = new MemoryDataSet({ data, navShape: nav, sigShape: [H, W] });
  const dsBytes = data.byteLength;
  const time = async (fn: () => Promise<unknown>, runs = 5) => {
    await fn();
    const t: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await fn();
      t.push(performance.now() - t0);
    }
    return dsBytes / (median(t) * 1e6);
  };
  const inProcess = await time(() => runUdf(ds, receiverUdfs()));
  report(`runUdf in-process, ${formatBytes(dsBytes)} of K2 frames`, inProcess, 'GB/s');
  let one = 0;
  for (const threads of [1, 2]) {
    const pool = new WorkerPool({ threads });
    try {
      const rate = await time(() => runUdf(ds, receiverUdfs(), { pool }));
      if (threads === 1) one = rate;
      report(`runUdf on ${threads} worker thread${threads > 1 ? 's' : ''}`, rate, 'GB/s', rate / one, '1 worker thread');
    } finally {
      await pool.close();
    }
  }
}
