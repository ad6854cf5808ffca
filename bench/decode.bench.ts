/**
 * 12-bit decode throughput, in GB/s of packed input, against memcpy of the same bytes.
 *
 * Two regimes: in cache (one sector frame, 714 KB, decoded again and again) and large (64
 * sector frames, 45.7 MB in, 61 MB out, so both sides stream through memory). Decoders:
 * - wasm `decode`: the SIMD kernel over a contiguous buffer;
 * - wasm `decodeSectorRows`: whole sector frames cut into tiles of 1860, 930, 465 or 93 rows,
 *   one call per tile, as a receiver does (gathers 24-byte rows from the 32 blocks);
 * - a plain JavaScript decoder reading 32-bit words (defined below, a comparison point);
 * - the plain reference `decodeUint12` (byte by byte).
 * Before timing, the bench checks that every decoder agrees with the reference.
 */
import { SECTOR_FRAME_PAYLOAD_BYTES, SECTOR_HEIGHT, SECTOR_PIXELS, SECTOR_WIDTH } from '../src/k2is/constants.js';
import { Uint12Decoder } from '../src/k2is/decode12.js';
import { decodeUint12, encodeUint12 } from '../src/k2is/uint12.js';
import { formatBytes, measure, measureMemcpy, report } from './lib.js';

const LARGE_FRAMES = 64;
const TILE_ROWS = [1860, 930, 465, 93];
const REALTIME_FPS = 400;
const TIMING = { runs: 7, minTimeMs: 150 };

/**
 * Plain JavaScript, three 32-bit little-endian words (12 bytes) -> eight pixels written as
 * four 32-bit pixel pairs. `packed` must be 4-byte aligned and a multiple of 12 bytes long.
 */
export function decodeUint12Words(packed: Uint32Array, out: Uint32Array): void {
  for (let i = 0, o = 0; i < packed.length; i += 3, o += 4) {
    const w0 = packed[i]!;
    const w1 = packed[i + 1]!;
    const w2 = packed[i + 2]!;
    out[o] = (w0 & 0xfff) | (((w0 >>> 12) & 0xfff) << 16);
    out[o + 1] = ((w0 >>> 24) | ((w1 & 0xf) << 8)) | (((w1 >>> 4) & 0xfff) << 16);
    out[o + 2] = ((w1 >>> 16) & 0xfff) | (((w1 >>> 28) | ((w2 & 0xff) << 4)) << 16);
    out[o + 3] = ((w2 >>> 8) & 0xfff) | ((w2 >>> 20) << 16);
  }
}

function randomSectorFrame(): Uint8Array {
  const pixels = new Uint16Array(SECTOR_PIXELS);
  let x = 0x9e3779b9;
  for (let i = 0; i < pixels.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pixels[i] = x & 0xfff;
  }
  return encodeUint12(pixels);
}

function assertSame(what: string, got: Uint16Array, want: Uint16Array): void {
  if (!Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength))) {
    throw new Error(`${what} disagrees with the reference decoder: its figures would be meaningless`);
  }
}

export async function run(): Promise<void> {
  const F = SECTOR_FRAME_PAYLOAD_BYTES;
  const pixelsPerFrame = SECTOR_PIXELS;
  const frame = randomSectorFrame();

  const dec = Uint12Decoder.create({ initialBytes: (F + pixelsPerFrame * 2) * (LARGE_FRAMES + 1) + (1 << 20) });
  const cacheSrc = dec.alloc(F);
  const cacheDst = dec.alloc(pixelsPerFrame * 2);
  const largeSrc = dec.alloc(F * LARGE_FRAMES);
  const largeDst = dec.alloc(pixelsPerFrame * 2 * LARGE_FRAMES);
  // no alloc below this line: views of the memory stay valid
  dec.bytes(cacheSrc, F).set(frame);
  for (let f = 0; f < LARGE_FRAMES; f++) dec.bytes(largeSrc + f * F, F).set(frame);
  dec.bytes(largeDst, pixelsPerFrame * 2 * LARGE_FRAMES).fill(0);

  const regimes = [
    { name: 'cache', src: cacheSrc, dst: cacheDst, frames: 1 },
    { name: 'large', src: largeSrc, dst: largeDst, frames: LARGE_FRAMES },
  ];

  // correctness first
  const want = decodeUint12(frame);
  dec.decode(cacheSrc, cacheDst, F);
  assertSame('wasm decode', dec.u16(cacheDst, pixelsPerFrame), want);
  const words = new Uint16Array(pixelsPerFrame);
  decodeUint12Words(new Uint32Array(frame.buffer, frame.byteOffset, F / 4), new Uint32Array(words.buffer));
  assertSame('JS word decoder', words, want);
  // tiles: the same pixels as the reference once placed (blocks are checked in the tests;
  // here: rows decoded in tiles == rows decoded in one call)
  const whole = new Uint16Array(pixelsPerFrame);
  dec.decodeSectorRows(cacheSrc, cacheDst, 0, SECTOR_HEIGHT);
  whole.set(dec.u16(cacheDst, pixelsPerFrame));
  for (const rows of TILE_ROWS) {
    dec.bytes(cacheDst, pixelsPerFrame * 2).fill(0);
    for (let r = 0; r < SECTOR_HEIGHT; r += rows) dec.decodeSectorRows(cacheSrc, cacheDst + r * SECTOR_WIDTH * 2, r, rows);
    assertSame(`decodeSectorRows in tiles of ${rows} rows`, dec.u16(cacheDst, pixelsPerFrame), whole);
  }

  for (const regime of regimes) {
    const bytes = F * regime.frames;
    const label = `${regime.name} (${formatBytes(bytes)})`;
    const memcpy = measureMemcpy(bytes, TIMING);
    report(`memcpy Uint8Array.set, ${label}`, memcpy.set, 'GB/s');
    report(`memcpy Buffer.copy, ${label}`, memcpy.bufferCopy, 'GB/s');
    const ref = memcpy.best;
    const vsMemcpy = `memcpy ${formatBytes(bytes)}`;

    const { src, dst, frames } = regime;
    const wasm = measure(() => dec.decode(src, dst, bytes), { ...TIMING, bytes });
    report(`decode wasm, ${label}`, wasm, 'GB/s', wasm / ref, vsMemcpy);

    for (const rows of TILE_ROWS) {
      const tileBytes = rows * SECTOR_WIDTH * 2;
      const gbps = measure(
        () => {
          for (let f = 0; f < frames; f++) {
            const packed = src + f * F;
            let out = dst + f * pixelsPerFrame * 2;
            for (let r = 0; r < SECTOR_HEIGHT; r += rows, out += tileBytes) dec.decodeSectorRows(packed, out, r, rows);
          }
        },
        { ...TIMING, bytes },
      );
      report(`decodeSectorRows wasm, tiles of ${rows} rows, ${label}`, gbps, 'GB/s', gbps / ref, vsMemcpy);
      if (rows === 930 && regime.name === 'large') {
        const realtime = REALTIME_FPS * F;
        report(`decodeSectorRows wasm, tiles of 930 rows, ${label}, as frames`, (gbps * 1e9) / F, 'sector frames/s', (gbps * 1e9) / realtime, `one sector at ${REALTIME_FPS} fps`);
      }
    }

    const in32 = new Uint32Array(dec.memory.buffer, src, bytes / 4);
    const out32 = new Uint32Array(dec.memory.buffer, dst, bytes / 3);
    const js = measure(() => decodeUint12Words(in32, out32), { ...TIMING, bytes });
    report(`decode JS 32-bit words, ${label}`, js, 'GB/s', js / ref, vsMemcpy);

    const in8 = dec.bytes(src, bytes);
    const out16 = dec.u16(dst, (bytes / 3) * 2);
    const plain = measure(() => decodeUint12(in8, out16), { ...TIMING, bytes, runs: 5 });
    report(`decode plain reference, ${label}`, plain, 'GB/s', plain / ref, vsMemcpy);

    report(`speed-up, wasm decode / plain reference, ${label}`, wasm / plain, 'x');
    report(`speed-up, wasm decode / JS 32-bit words, ${label}`, wasm / js, 'x');
  }
}
