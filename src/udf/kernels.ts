/**
 * WebAssembly SIMD kernels for uint16 tiles (kernels.wat), shared by the UDFs of one partition:
 * a tile is copied ("staged") into the kernels' memory once, however many UDFs use it, unless it
 * already lives there (TileKernels.shareMemory: kernels on the memory a decoder writes tiles to). UDFs
 * reach them as `this.meta.kernels` (null on the merging node, or when the .wasm is missing,
 * in which case UDFs fall back to their JavaScript loops and a warning is logged once).
 * Kernel and JavaScript paths compute the same exact integer sums.
 */
import { readFileSync } from 'node:fs';
import { createLogger } from '../log.js';
import type { TypedArray } from './dtype.js';

interface KernelExports {
  frame_sums_u16(src: number, n: number, depth: number, out: number): void;
  sum_frames_u16_u32(src: number, n: number, depth: number, acc: number): void;
  com_sums_u16(src: number, rows: number, w: number, depth: number, y0: number, x0: number, out: number): void;
  runs_sum_u16(src: number, first: number, runs: number, nruns: number, depth: number, n: number, out: number, stride: number): void;
  sparse_dot_u16(src: number, first: number, idx: number, val: number, count: number, depth: number, n: number, out: number, stride: number): void;
  dense_dot_u16_f64(src: number, mask: number, n: number, depth: number, out: number, stride: number): void;
  sum_frame_u16_u32_total(src: number, n: number, acc: number): number;
  sq_sums_u16(src: number, n: number, depth: number, s: number, q: number): void;
  stddev_flush(n: number, depth: number, n0: number, c: number, s: number, q: number, sum: number, varsum: number): void;
}

/** Constant data (mask tables) copied into kernel memory once per instance. */
type Uploadable = Int32Array | Float64Array;

/**
 * Per-pixel StdDev state of a partition in kernel memory: (sum, varsum) as f64, and the pending
 * batch's exact s (u32) and q (u64).
 */
export interface KernelStdDevState {
  readonly sum: number;
  readonly varsum: number;
  readonly s: number;
  readonly q: number;
  readonly pixels: number;
}

/** StdDev batches hold at most this many frames: their integer sums stay exact in f64. */
export const STDDEV_MAX_DEPTH = 1024;

// The WebAssembly API, typed here: the project compiles without the DOM library that declares it.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Memory: new (d: { initial: number; maximum: number }) => WasmMemory;
  Instance: new (m: object, imports: object) => { exports: unknown };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE = 65_536;
const ALIGN = 16;
/** a u32 accumulator of u16 values is flushed before any pixel could pass 2^32 */
export const MAX_FRAMES_PER_FLUSH = 65_537;

let compiled: object | null | undefined;

function kernelModule(): object | null {
  if (compiled === undefined) {
    const url = new URL('./kernels.wasm', import.meta.url);
    try {
      compiled = new wasm.Module(readFileSync(url));
    } catch (err) {
      compiled = null;
      createLogger('udf-kernels').warn({ err: (err as Error).message, url: url.pathname }, 'UDF kernels unavailable (run npm run build): UDFs use their JavaScript loops');
    }
  }
  return compiled;
}

/** Whether the SIMD kernels can be used in this thread. */
export function tileKernelsAvailable(): boolean {
  return kernelModule() !== null;
}

/** A per-pixel u32 sum in kernel memory, flushed into a result buffer. */
export interface KernelAccumulator {
  readonly ptr: number;
  readonly pixels: number;
  /** frames added since the last flush (the most any pixel has seen) */
  frames: number;
  /** flushed before: the target is no longer known to be zero */
  flushed: boolean;
}

/** a few idle instances per thread (a receiver or worker runs one partition after the other) */
const MAX_IDLE = 4;
const idle: TileKernels[] = [];
/** kernels on a memory shared with this thread's tile producer (shareMemory) */
let sharedKernels: TileKernels | null = null;

export class TileKernels {
  private readonly memory: WasmMemory;
  private readonly k: KernelExports;
  private top = ALIGN;
  private stagePtr = 0;
  private stageBytes = 0;
  private staged: TypedArray | null = null;
  /** frame totals of the last tile summed per pixel (sumFrames), for frameSums of the same tile
   *  object (as stage(), a tile object's pixels must not change while UDFs see it) */
  private totalsOf: TypedArray | null = null;
  private totals = new Float64Array(1);
  private scratchPtr = 0;
  private scratchBytes = 0;
  /** constant tables by identity: uploaded once per instance */
  private uploads = new WeakMap<Uploadable, number>();
  /** on another module's memory: regions reserved from its owner, reused after release() */
  private readonly host: { alloc(bytes: number): number; chunks: Array<{ ptr: number; size: number }>; chunk: number; top: number } | null;
  private inUse = false;

  private constructor(module: object, initialBytes: number, host?: { memory: WasmMemory; alloc(bytes: number): number }) {
    this.host = host ? { alloc: host.alloc, chunks: [], chunk: 0, top: 0 } : null;
    this.memory = host?.memory ?? new wasm.Memory({ initial: Math.max(1, Math.ceil(initialBytes / PAGE)), maximum: 65_535 });
    this.k = new wasm.Instance(module, { env: { memory: this.memory } }).exports as unknown as KernelExports;
  }

  /**
   * Kernels that run on another module's memory, e.g. the decoder's that tiles are decoded into:
   * tiles that are views of `memory` are then used in place, never copied. Kernel scratch and
   * accumulators live in regions of at least `chunkBytes` taken from `alloc` (16-byte aligned
   * offsets that the owner must never hand out again or free); the first is reserved now.
   * They are reused from the start after release(). The owner may grow the memory: views are
   * rebuilt on every call. Null without the .wasm.
   */
  static onMemory(memory: WasmMemory, alloc: (bytes: number) => number, chunkBytes = 16 << 20): TileKernels | null {
    const m = kernelModule();
    if (!m) return null;
    const k = new TileKernels(m, 0, { memory, alloc });
    k.host!.chunks.push({ ptr: alloc(chunkBytes), size: chunkBytes });
    return k;
  }

  /**
   * From now on, create() in this thread hands out kernels on `memory` (see onMemory), one
   * partition at a time (a second concurrent partition gets a private instance). Meant for a
   * receiver whose tiles are views of its decoder's memory: call once, after the decoder's own
   * up-front allocations, with a reserve large enough that the memory need not grow later.
   */
  static shareMemory(memory: WasmMemory, alloc: (bytes: number) => number, reserveBytes = 16 << 20): boolean {
    sharedKernels = TileKernels.onMemory(memory, alloc, reserveBytes);
    return sharedKernels !== null;
  }

  /** Back to private memories for partitions created from now on. */
  static unshareMemory(): void {
    sharedKernels = null;
  }

  /**
   * Kernels with their own memory (at least `initialBytes`, to avoid growing later); null without
   * the .wasm. Reuses an instance given back with release(), whose pages are already mapped.
   */
  static create(initialBytes = 4 << 20): TileKernels | null {
    const m = kernelModule();
    if (!m) return null;
    if (sharedKernels && !sharedKernels.inUse) {
      sharedKernels.inUse = true;
      return sharedKernels;
    }
    const i = idle.findIndex((k) => k.memory.buffer.byteLength >= initialBytes);
    if (i >= 0) return idle.splice(i, 1)[0]!;
    return new TileKernels(m, initialBytes);
  }

  /** Give the instance back for reuse; nothing allocated from it may be used afterwards. */
  release(): void {
    this.uploads = new WeakMap();
    this.top = ALIGN;
    this.stagePtr = this.stageBytes = this.scratchPtr = this.scratchBytes = 0;
    this.staged = null;
    this.totalsOf = null;
    if (this.host) {
      this.host.chunk = 0;
      this.host.top = 0;
      this.inUse = false;
    } else if (idle.length < MAX_IDLE) idle.push(this);
  }

  private alloc(bytes: number): number {
    if (this.host) return this.hostRegion(Math.ceil(bytes / ALIGN) * ALIGN);
    const ptr = this.top;
    const end = ptr + Math.ceil(bytes / ALIGN) * ALIGN;
    const size = this.memory.buffer.byteLength;
    if (end > size) this.memory.grow(Math.ceil((end - size) / PAGE));
    this.top = end;
    return ptr;
  }

  /** Bump allocation over the regions reserved from the host, taking a new one when none has room. */
  private hostRegion(bytes: number): number {
    const h = this.host!;
    for (;;) {
      const c = h.chunks[h.chunk];
      if (!c) {
        const size = Math.max(bytes, h.chunks[0]?.size ?? 0);
        h.chunks.push({ ptr: h.alloc(size), size });
        h.top = 0;
        continue;
      }
      if (h.top + bytes <= c.size) {
        const ptr = c.ptr + h.top;
        h.top += bytes;
        return ptr;
      }
      h.chunk++;
      h.top = 0;
    }
  }

  /** Copy a tile into kernel memory, once per tile object. */
  private stage(tile: Uint16Array): number {
    // already in this memory (decoded there): in place
    if (tile.buffer === this.memory.buffer) return tile.byteOffset;
    if (this.staged === tile) return this.stagePtr;
    if (tile.byteLength > this.stageBytes) {
      this.stagePtr = this.alloc(tile.byteLength);
      this.stageBytes = tile.byteLength;
    }
    new Uint16Array(this.memory.buffer, this.stagePtr, tile.length).set(tile);
    this.staged = tile;
    return this.stagePtr;
  }

  /** f64 scratch of `n` zeros for kernel outputs. */
  private scratch(n: number): number {
    if (n * 8 > this.scratchBytes) {
      this.scratchPtr = this.alloc(n * 8);
      this.scratchBytes = n * 8;
    }
    new Float64Array(this.memory.buffer, this.scratchPtr, n).fill(0);
    return this.scratchPtr;
  }

  /** out[f] += sum of frame f of the tile (depth frames). */
  frameSums(tile: Uint16Array, depth: number, out: TypedArray): void {
    if (this.totalsOf === tile && depth === 1) {
      out[0] += this.totals[0]!;
      return;
    }
    const src = this.stage(tile);
    const dst = this.scratch(depth);
    this.k.frame_sums_u16(src, tile.length / depth, depth, dst);
    const res = new Float64Array(this.memory.buffer, dst, depth);
    for (let f = 0; f < depth; f++) out[f] += res[f]!;
  }

  /** Centre-of-mass sums per frame of a whole tile: out[3f..3f+2] += (sum v, sum v y, sum v x), y0/x0 the tile's origin. */
  comSums(tile: Uint16Array, depth: number, rows: number, w: number, y0: number, x0: number, out: TypedArray): void {
    const src = this.stage(tile);
    const dst = this.scratch(3 * depth);
    this.k.com_sums_u16(src, rows, w, depth, y0, x0, dst);
    const res = new Float64Array(this.memory.buffer, dst, 3 * depth);
    for (let i = 0; i < 3 * depth; i++) out[i] += res[i]!;
  }

  /** The kernel-memory copy of a constant table (once per instance and array). */
  private upload(a: Uploadable): number {
    let ptr = this.uploads.get(a);
    if (ptr === undefined) {
      ptr = this.alloc(Math.max(a.byteLength, 8));
      new Uint8Array(this.memory.buffer, ptr, a.byteLength).set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
      this.uploads.set(a, ptr);
    }
    return ptr;
  }

  /**
   * out[at + f * stride] += sum of frame f's pixels over `count` runs starting at runs[2 * start]
   * (pairs: first pixel, length), pixel indices relative to `first` (the tile's first pixel).
   */
  runsSum(tile: Uint16Array, depth: number, runs: Int32Array, start: number, count: number, first: number, out: TypedArray, at: number, stride: number): void {
    const src = this.stage(tile);
    const dst = this.scratch(depth);
    this.k.runs_sum_u16(src, first, this.upload(runs) + 8 * start, count, depth, tile.length / depth, dst, 1);
    const res = new Float64Array(this.memory.buffer, dst, depth);
    for (let f = 0; f < depth; f++) out[at + f * stride] += res[f]!;
  }

  /** out[at + f * stride] += sum_j pixel(idx[j] - first) * val[j] for j in [start, start + count): the JavaScript loop's order. */
  sparseDot(tile: Uint16Array, depth: number, idx: Int32Array, val: Float64Array, start: number, count: number, first: number, out: TypedArray, at: number, stride: number): void {
    const src = this.stage(tile);
    const dst = this.scratch(depth);
    this.k.sparse_dot_u16(src, first, this.upload(idx) + 4 * start, this.upload(val) + 8 * start, count, depth, tile.length / depth, dst, 1);
    const res = new Float64Array(this.memory.buffer, dst, depth);
    for (let f = 0; f < depth; f++) out[at + f * stride] += res[f]!;
  }

  /** out[at + f * stride] += dot(frame f, mask[offset ..]) over the tile's pixels per frame. */
  denseDot(tile: Uint16Array, depth: number, mask: Float64Array, offset: number, out: TypedArray, at: number, stride: number): void {
    const src = this.stage(tile);
    const dst = this.scratch(depth);
    this.k.dense_dot_u16_f64(src, this.upload(mask) + 8 * offset, tile.length / depth, depth, dst, 1);
    const res = new Float64Array(this.memory.buffer, dst, depth);
    for (let f = 0; f < depth; f++) out[at + f * stride] += res[f]!;
  }

  /** Zeroed per-pixel StdDev state. */
  stdDevState(pixels: number): KernelStdDevState {
    const sum = this.alloc(pixels * 8);
    const varsum = this.alloc(pixels * 8);
    const s = this.alloc(pixels * 4);
    const q = this.alloc(pixels * 8);
    for (const [p, bytes] of [[sum, 8], [varsum, 8], [s, 4], [q, 8]] as const) new Uint8Array(this.memory.buffer, p, pixels * bytes).fill(0);
    return { sum, varsum, s, q, pixels };
  }

  /** Add a tile's frames to the pending batch of pixels [offset, offset + n). The batch must stay within STDDEV_MAX_DEPTH frames. */
  stdDevAdd(tile: Uint16Array, depth: number, state: KernelStdDevState, offset: number): void {
    this.k.sq_sums_u16(this.stage(tile), tile.length / depth, depth, state.s + 4 * offset, state.q + 8 * offset);
  }

  /** Merge the pending batch of `depth` frames of pixels [offset, offset + n) into (sum, varsum), `n0` frames merged there before. */
  stdDevFlush(state: KernelStdDevState, offset: number, n: number, depth: number, n0: number): void {
    this.k.stddev_flush(n, depth, n0, (n0 * depth) / (n0 + depth), state.s + 4 * offset, state.q + 8 * offset, state.sum + 8 * offset, state.varsum + 8 * offset);
  }

  /** Copy the state out: sum and varsum (whole partition slice). */
  readStdDev(state: KernelStdDevState, sum: TypedArray, varsum: TypedArray): void {
    sum.set(new Float64Array(this.memory.buffer, state.sum, state.pixels));
    varsum.set(new Float64Array(this.memory.buffer, state.varsum, state.pixels));
  }

  accumulator(pixels: number): KernelAccumulator {
    const ptr = this.alloc(pixels * 4);
    new Uint32Array(this.memory.buffer, ptr, pixels).fill(0);
    return { ptr, pixels, frames: 0, flushed: false };
  }

  /** acc[offset + i] += sum over the tile's frames of pixel i. Flush first if `frames` could overflow. */
  sumFrames(tile: Uint16Array, depth: number, acc: KernelAccumulator, offset: number): void {
    const n = tile.length / depth;
    if (depth === 1) {
      // one frame: its total comes for free (SumSigUDF on the same tile reuses it)
      this.totals[0] = this.k.sum_frame_u16_u32_total(this.stage(tile), n, acc.ptr + 4 * offset);
      this.totalsOf = tile;
    } else this.k.sum_frames_u16_u32(this.stage(tile), n, depth, acc.ptr + 4 * offset);
    acc.frames += depth;
  }

  /** out[i] += acc[i], then acc = 0. The first flush into a zeroed `out` is a plain (native) conversion. */
  flush(acc: KernelAccumulator, out: TypedArray): void {
    const a = new Uint32Array(this.memory.buffer, acc.ptr, acc.pixels);
    if (!acc.flushed) out.set(a);
    else for (let i = 0; i < acc.pixels; i++) out[i] += a[i]!;
    a.fill(0);
    acc.frames = 0;
    acc.flushed = true;
  }
}
