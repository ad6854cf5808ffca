/**
 * The K2 IS 12-bit packing (spec A.4), plain and obviously correct: two pixels a, b in three
 * bytes, read as one 24-bit little-endian integer V: a = V & 0xFFF, b = V >> 12.
 *
 * This is the reference the fast decoder (decode12.ts) is tested against, and the encoder the
 * simulator uses. Speed is not the point here.
 */
import { TesseraError } from '../errors.js';

/** Encode pixels (values 0..4095; an even count) into packed bytes. */
export function encodeUint12(pixels: ArrayLike<number>, out?: Uint8Array, outOffset = 0): Uint8Array {
  if (pixels.length % 2 !== 0) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'pixels', '12-bit packing needs an even number of pixels');
  }
  const n = (pixels.length / 2) * 3;
  const dst = out ?? new Uint8Array(n);
  for (let i = 0, o = outOffset; i < pixels.length; i += 2, o += 3) {
    const a = pixels[i]! & 0xfff;
    const b = pixels[i + 1]! & 0xfff;
    dst[o] = a & 0xff;
    dst[o + 1] = ((a >> 8) & 0x0f) | ((b & 0x0f) << 4);
    dst[o + 2] = (b >> 4) & 0xff;
  }
  return dst;
}

/** Decode packed bytes into pixels, byte by byte. */
export function decodeUint12(packed: Uint8Array, out?: Uint16Array): Uint16Array {
  if (packed.length % 3 !== 0) throw new TesseraError('TESSERA_ERR_BAD_PACKED_LENGTH', packed.length);
  const n = (packed.length / 3) * 2;
  const dst = out ?? new Uint16Array(n);
  for (let i = 0, o = 0; i < packed.length; i += 3, o += 2) {
    const b0 = packed[i]!;
    const b1 = packed[i + 1]!;
    const b2 = packed[i + 2]!;
    dst[o] = b0 | ((b1 & 0x0f) << 8);
    dst[o + 1] = ((b1 & 0xf0) >> 4) | (b2 << 4);
  }
  return dst;
}
