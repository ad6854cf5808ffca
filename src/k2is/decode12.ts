/**
 * The fast K2 IS 12-bit decoder (spec A.4): a WebAssembly SIMD kernel (decode12.wat) that
 * turns 24 packed bytes into one 16-pixel block row with two byte swizzles, two multiplies and
 * two shifts (the .wat explains why). `decodeUint12` in uint12.ts is the plain reference it
 * is tested against. Figures: `npm run bench decode`.
 *
 * The kernel works on its own linear memory, so data lives there rather than being copied in
 * and out on the hot path. `Uint12Decoder` owns one memory and a bump arena in it:
 *
 *   const dec = Uint12Decoder.create();
 *   const frame = dec.alloc(SECTOR_FRAME_PAYLOAD_BYTES);    // receiver writes payloads here,
 *   dec.bytes(frame, SECTOR_FRAME_PAYLOAD_BYTES)             //   block i at i * PAYLOAD_SIZE
 *     .set(payload, blockIndex(x, y) * PAYLOAD_SIZE);
 *   const tile = dec.alloc(930 * 256 * 2);
 *   dec.decodeSectorRows(frame, tile, 0, 930);               // sector rows 0..929 -> tile
 *   udf.processTile(dec.u16(tile, 930 * 256));               // zero-copy view
 *
 * - `alloc(bytes)` returns a 16-byte-aligned offset, growing the memory when needed.
 *   `mark()` / `release(mark)` free everything allocated after the mark (an arena, no free
 *   list). Growing the memory detaches every earlier view of it: call `bytes()` / `u16()`
 *   again after any `alloc`, never keep views across one.
 * - `decode(src, dst, nBytes)`: contiguous; nBytes is a multiple of 3, any length and any
 *   alignment; writes nBytes * 2 / 3 pixels.
 * - `decodeSectorRows(packed, dst, rowStart, rowCount, blockStride?)`: the 32 blocks of one
 *   sector frame, in the camera's send order (index = geometry.blockIndex(x, y)), each
 *   `blockStride` bytes after the previous (PAYLOAD_SIZE for bare payloads; BLOCK_SIZE for
 *   whole datagrams copied as they arrived, with `packed` pointing past the first header).
 *   Writes sector rows [rowStart, rowStart + rowCount) as rowCount x 256 uint16, row-major.
 *   The loops over blocks and rows run inside wasm: one call per tile.
 *
 * Source and destination must not overlap, and destinations are 2-byte aligned (checked). Arguments are checked before the
 * kernel runs, so a bad pointer is a TesseraError, never a half-written tile. The kernel
 * never reads past the bytes it decodes: buffers need no padding.
 *
 * `decodeUint12Fast(packed, out?)` copies in and out of a shared decoder: for tools and
 * tests, not the hot path; its memory stays at the largest size it has needed.
 */
import { readFileSync } from 'node:fs';
import { TesseraError } from '../errors.js';
import { BLOCKS_PER_SECTOR_FRAME, PAYLOAD_SIZE, SECTOR_HEIGHT, SECTOR_WIDTH } from './constants.js';

/** The part of the WebAssembly JS API used here: the project compiles without lib.dom, where
 *  TypeScript declares it. */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: unknown };
  Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE_BYTES = 65_536;
/** one page short of 4 GiB, so that no address computed in the kernel wraps around 2^32 */
const MAX_PAGES = 65_535;
const ALIGN = 16;
/** offset 0 is never handed out, so that a zero pointer is always a bug */
const HEAP_BASE = ALIGN;

interface KernelExports {
  decode(src: number, dst: number, nBytes: number): void;
  decodeSectorRows(packed: number, dst: number, rowStart: number, rowCount: number, blockStride: number): void;
}

let compiled: object | undefined;

function kernelModule(): object {
  if (compiled === undefined) {
    const url = new URL('./decode12.wasm', import.meta.url);
    let bytes: Buffer;
    try {
      bytes = readFileSync(url);
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_WASM_MODULE', url.pathname, `${(err as Error).message} (run npm run build)`);
    }
    compiled = new wasm.Module(bytes);
  }
  return compiled;
}

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', name, `expected a non-negative integer, got ${value}`);
  }
}

export interface Uint12DecoderOptions {
  /** initial size of the linear memory in bytes (rounded up to 64 KiB pages); default 1 MiB */
  initialBytes?: number;
}

export class Uint12Decoder {
  readonly memory: WasmMemory;
  readonly #kernel: KernelExports;
  #top = HEAP_BASE;

  private constructor(memory: WasmMemory, kernel: KernelExports) {
    this.memory = memory;
    this.#kernel = kernel;
  }

  static create(options: Uint12DecoderOptions = {}): Uint12Decoder {
    const initialBytes = options.initialBytes ?? 1 << 20;
    checkCount('initialBytes', initialBytes);
    const initial = Math.max(1, Math.ceil(initialBytes / PAGE_BYTES));
    if (initial > MAX_PAGES) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'initialBytes', 'more than 4 GiB');
    const memory = new wasm.Memory({ initial, maximum: MAX_PAGES });
    const instance = new wasm.Instance(kernelModule(), { env: { memory } });
    return new Uint12Decoder(memory, instance.exports as unknown as KernelExports);
  }

  alloc(bytes: number): number {
    checkCount('bytes', bytes);
    const ptr = this.#top;
    const end = ptr + Math.ceil(bytes / ALIGN) * ALIGN;
    const size = this.memory.buffer.byteLength;
    if (end > size) {
      const pages = Math.ceil((end - size) / PAGE_BYTES);
      if (size / PAGE_BYTES + pages > MAX_PAGES) {
        throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'bytes', `${bytes} more bytes do not fit in 4 GiB of wasm memory`);
      }
      this.memory.grow(pages);
    }
    this.#top = end;
    return ptr;
  }

  /** The arena's current top: `release(mark)` frees everything allocated after this call. */
  mark(): number {
    return this.#top;
  }

  release(mark: number): void {
    if (!Number.isSafeInteger(mark) || mark < HEAP_BASE || mark > this.#top || mark % ALIGN !== 0) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'mark', `${mark} is not a mark of this arena`);
    }
    this.#top = mark;
  }

  bytes(ptr: number, length: number): Uint8Array<ArrayBuffer> {
    return new Uint8Array(this.memory.buffer, ptr, length);
  }

  u16(ptr: number, length: number): Uint16Array<ArrayBuffer> {
    return new Uint16Array(this.memory.buffer, ptr, length);
  }

  decode(srcPtr: number, dstPtr: number, nBytes: number): void {
    checkCount('nBytes', nBytes);
    if (nBytes % 3 !== 0) throw new TesseraError('TESSERA_ERR_BAD_PACKED_LENGTH', nBytes);
    this.#checkRanges(srcPtr, nBytes, dstPtr, (nBytes / 3) * 4);
    this.#kernel.decode(srcPtr, dstPtr, nBytes);
  }

  decodeSectorRows(packedPtr: number, dstPtr: number, rowStart: number, rowCount: number, blockStride = PAYLOAD_SIZE): void {
    checkCount('rowStart', rowStart);
    checkCount('rowCount', rowCount);
    if (rowStart + rowCount > SECTOR_HEIGHT) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'rows', `[${rowStart}, ${rowStart + rowCount}) is not within 0..${SECTOR_HEIGHT}`);
    }
    checkCount('blockStride', blockStride);
    if (blockStride < PAYLOAD_SIZE) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'blockStride', `${blockStride} < one block payload (${PAYLOAD_SIZE})`);
    }
    const packedBytes = (BLOCKS_PER_SECTOR_FRAME - 1) * blockStride + PAYLOAD_SIZE;
    this.#checkRanges(packedPtr, packedBytes, dstPtr, rowCount * SECTOR_WIDTH * 2);
    if (rowCount > 0) this.#kernel.decodeSectorRows(packedPtr, dstPtr, rowStart, rowCount, blockStride);
  }

  #checkRanges(src: number, srcBytes: number, dst: number, dstBytes: number): void {
    const size = this.memory.buffer.byteLength;
    checkCount('srcPtr', src);
    checkCount('dstPtr', dst);
    if (src + srcBytes > size) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'srcPtr', `[${src}, ${src + srcBytes}) is outside the ${size}-byte memory`);
    if (dst + dstBytes > size) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dstPtr', `[${dst}, ${dst + dstBytes}) is outside the ${size}-byte memory`);
    if (dst % 2 !== 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dstPtr', `${dst} is not 2-byte aligned`);
    if (srcBytes > 0 && dstBytes > 0 && src < dst + dstBytes && dst < src + srcBytes) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dstPtr', 'source and destination overlap');
    }
  }
}

let shared: Uint12Decoder | undefined;

/** Decode `packed` (a multiple of 3 bytes) into `out` or a new array. Copies in and out. */
export function decodeUint12Fast(packed: Uint8Array, out?: Uint16Array): Uint16Array {
  if (packed.length % 3 !== 0) throw new TesseraError('TESSERA_ERR_BAD_PACKED_LENGTH', packed.length);
  const n = (packed.length / 3) * 2;
  const dst = out ?? new Uint16Array(n);
  if (dst.length < n) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'out', `${dst.length} pixels, need ${n}`);
  shared ??= Uint12Decoder.create();
  const mark = shared.mark();
  try {
    const src = shared.alloc(packed.length);
    const pixels = shared.alloc(n * 2);
    shared.bytes(src, packed.length).set(packed);
    shared.decode(src, pixels, packed.length);
    dst.set(shared.u16(pixels, n));
  } finally {
    shared.release(mark);
  }
  return dst;
}
