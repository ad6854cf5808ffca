import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BLOCK_COLS,
  BLOCK_ROWS,
  BLOCK_SIZE,
  BLOCKS_PER_SECTOR_FRAME,
  HEADER_SIZE,
  PAYLOAD_SIZE,
  SECTOR_FRAME_PAYLOAD_BYTES,
  SECTOR_HEIGHT,
  SECTOR_WIDTH,
} from '../../src/k2is/constants.js';
import { Uint12Decoder, decodeUint12Fast } from '../../src/k2is/decode12.js';
import { BLOCK_ORDER, blockIndex } from '../../src/k2is/geometry.js';
import { encodeHeader, headerFor, readPixelXStart, readPixelYStart } from '../../src/k2is/header.js';
import { decodeUint12, encodeUint12 } from '../../src/k2is/uint12.js';

const SENTINEL = 0xa5;

function randomBytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Index of the first pixel where a and b differ, -1 if equal (fast on large arrays, unlike
 *  toEqual, and the failure still says where). */
function firstDifference(a: Uint16Array, b: Uint16Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  if (Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))) return -1;
  return a.findIndex((v, i) => v !== b[i]);
}

/** Decode `packed` at byte offsets srcShift / dstShift from 16-byte alignment, with sentinel
 *  bytes around the output; returns the pixels and whether the sentinels survived. */
function decodeAt(dec: Uint12Decoder, packed: Uint8Array, srcShift: number, dstShift: number) {
  const mark = dec.mark();
  const nPix = (packed.length / 3) * 2;
  const src = dec.alloc(packed.length + srcShift) + srcShift;
  const guarded = dec.alloc(64 + nPix * 2 + 64);
  const dst = guarded + 32 + dstShift;
  dec.bytes(guarded, 64 + nPix * 2 + 64).fill(SENTINEL);
  dec.bytes(src, packed.length).set(packed);
  dec.decode(src, dst, packed.length);
  const pixels = dec.u16(dst, nPix).slice();
  const before = dec.bytes(guarded, dst - guarded);
  const after = dec.bytes(dst + nPix * 2, guarded + 64 + nPix * 2 + 64 - (dst + nPix * 2));
  const guardsIntact = before.every((v) => v === SENTINEL) && after.every((v) => v === SENTINEL);
  dec.release(mark);
  return { pixels, guardsIntact };
}

describe('Uint12Decoder.decode (contiguous)', () => {
  const dec = Uint12Decoder.create();

  it.each([
    [[1, 2, 3, 4], '012000034000'],
    [[0xabc, 0xdef], 'bcfade'],
    [[4095, 0, 0, 4095], 'ff0f0000f0ff'],
    [[0x123, 0x456], '236145'],
  ])('spec A.4 example %j <- %s', (pixels, hex) => {
    expect(Array.from(decodeUint12Fast(Buffer.from(hex, 'hex')))).toEqual(pixels);
  });

  it('decodes every 12-bit value in both positions of a pair', () => {
    const pixels = new Uint16Array(2 * 4096 * 2);
    for (let v = 0; v < 4096; v++) {
      pixels[2 * v] = v; // v as pixel a ...
      pixels[2 * v + 1] = (v * 2654435761) >>> 20; // ... next to a scrambled b
      pixels[8192 + 2 * v] = (v * 40503) & 0xfff; // and v as pixel b
      pixels[8192 + 2 * v + 1] = v;
    }
    expect(decodeUint12Fast(encodeUint12(pixels))).toEqual(pixels);
  });

  it('matches the reference for every length up to 50 rows, at every alignment, without writing outside the output', () => {
    const data = randomBytes(1203, 7);
    for (let n = 0; n <= 1200; n += 3) {
      const packed = data.subarray(data.length - n); // not 16-byte aligned in its own buffer either
      const want = decodeUint12(packed);
      const shift = n % 16;
      const { pixels, guardsIntact } = decodeAt(dec, packed, shift, 2 * (n % 8));
      expect(guardsIntact, `length ${n}`).toBe(true);
      expect(pixels, `length ${n}`).toEqual(want);
    }
  });

  it('matches the reference on large buffers (a sector frame and a bit, odd offsets)', () => {
    for (const n of [SECTOR_FRAME_PAYLOAD_BYTES, SECTOR_FRAME_PAYLOAD_BYTES + 21, 3 * 1_000_001]) {
      const packed = randomBytes(n, n);
      const { pixels, guardsIntact } = decodeAt(dec, packed, 5, 6);
      expect(guardsIntact).toBe(true);
      expect(firstDifference(pixels, decodeUint12(packed)), `length ${n}`).toBe(-1);
    }
  });

  it('agrees with the reference on arbitrary data (property)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 3000 }),
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 7 }),
        (raw, srcShift, dstHalfShift) => {
          const packed = raw.subarray(0, raw.length - (raw.length % 3));
          const { pixels, guardsIntact } = decodeAt(dec, packed, srcShift, 2 * dstHalfShift);
          return guardsIntact && firstDifference(pixels, decodeUint12(packed)) === -1;
        },
      ),
      { numRuns: 300 },
    );
  });

  it('decodeUint12Fast writes into a given array and rejects bad input', () => {
    const packed = encodeUint12([7, 4095, 0, 1, 2048, 3]);
    const out = new Uint16Array(8).fill(9);
    expect(decodeUint12Fast(packed, out)).toBe(out);
    expect(Array.from(out)).toEqual([7, 4095, 0, 1, 2048, 3, 9, 9]);
    expect(() => decodeUint12Fast(new Uint8Array(4))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_PACKED_LENGTH' }));
    expect(() => decodeUint12Fast(packed, new Uint16Array(5))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });

  it('rejects lengths, pointers and overlaps that would corrupt memory', () => {
    const d = Uint12Decoder.create({ initialBytes: 65536 });
    const src = d.alloc(300);
    const dst = d.alloc(400);
    const size = d.memory.buffer.byteLength;
    const bad = (fn: () => void, code: string) => expect(fn).toThrow(expect.objectContaining({ code }));
    bad(() => d.decode(src, dst, 299), 'TESSERA_ERR_BAD_PACKED_LENGTH');
    bad(() => d.decode(size - 3, dst, 6), 'TESSERA_ERR_BAD_ARGUMENT');
    bad(() => d.decode(src, size - 4, 6), 'TESSERA_ERR_BAD_ARGUMENT');
    bad(() => d.decode(src, dst + 1, 30), 'TESSERA_ERR_BAD_ARGUMENT'); // odd destination
    bad(() => d.decode(src, src + 100, 300), 'TESSERA_ERR_BAD_ARGUMENT'); // overlap
    bad(() => d.decode(-16, dst, 3), 'TESSERA_ERR_BAD_ARGUMENT');
    bad(() => d.decode(1.5, dst, 3), 'TESSERA_ERR_BAD_ARGUMENT');
  });
});

describe('Uint12Decoder arena', () => {
  it('hands out 16-byte aligned, disjoint blocks and reuses them after release', () => {
    const dec = Uint12Decoder.create({ initialBytes: 65536 });
    const a = dec.alloc(5);
    const mark = dec.mark();
    const b = dec.alloc(17);
    const c = dec.alloc(0);
    expect(a).toBeGreaterThan(0);
    for (const p of [a, b, c]) expect(p % 16).toBe(0);
    expect(b).toBeGreaterThanOrEqual(a + 5);
    expect(c).toBeGreaterThanOrEqual(b + 17);
    dec.release(mark);
    expect(dec.alloc(17)).toBe(b);
    expect(() => dec.release(dec.mark() + 16)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => dec.alloc(-1)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });

  it('keeps data and keeps decoding when the memory grows (views re-created)', () => {
    const dec = Uint12Decoder.create({ initialBytes: 65536 });
    const packed = randomBytes(3000, 11);
    const src = dec.alloc(packed.length);
    dec.bytes(src, packed.length).set(packed);
    const oldView = dec.bytes(src, packed.length);
    const sizeBefore = dec.memory.buffer.byteLength;

    const dst = dec.alloc(5 * 1024 * 1024); // forces growth
    expect(dec.memory.buffer.byteLength).toBeGreaterThan(sizeBefore);
    expect(oldView.byteLength).toBe(0); // detached by memory.grow: why views must be re-created
    expect(dec.bytes(src, packed.length)).toEqual(packed);

    dec.decode(src, dst, packed.length);
    expect(dec.u16(dst, 2000)).toEqual(decodeUint12(packed));

    // a source in the grown region, near the very end of memory
    const end = dec.memory.buffer.byteLength;
    dec.bytes(end - 3000, 3000).set(packed);
    dec.decode(end - 3000, dst, 3000);
    expect(dec.u16(dst, 2000)).toEqual(decodeUint12(packed));
  });
});

describe('Uint12Decoder.decodeSectorRows', () => {
  // ground truth: a known value for every sector pixel
  const pixelAt = (row: number, col: number) => (row * 37 + col * 11 + ((row * col) >> 3)) & 0xfff;

  /** The 32 datagrams of one sector frame as the camera sends them: header + packed payload,
   *  in send order. */
  function sectorDatagrams(frameId: number): Uint8Array[] {
    return BLOCK_ORDER.map(({ x, y }, i) => {
      const dgram = new Uint8Array(BLOCK_SIZE);
      encodeHeader(headerFor({ flags: 1, blockCount: frameId * 32 + i, frameId, pixelXStart: x, pixelYStart: y }), dgram);
      const pixels = new Uint16Array(BLOCK_ROWS * BLOCK_COLS);
      for (let r = 0; r < BLOCK_ROWS; r++) {
        for (let c = 0; c < BLOCK_COLS; c++) pixels[r * BLOCK_COLS + c] = pixelAt(y + r, x + c);
      }
      encodeUint12(pixels, dgram, HEADER_SIZE);
      return dgram;
    });
  }

  const datagrams = sectorDatagrams(5);
  const expected = new Uint16Array(SECTOR_HEIGHT * SECTOR_WIDTH);
  for (let r = 0; r < SECTOR_HEIGHT; r++) for (let c = 0; c < SECTOR_WIDTH; c++) expected[r * SECTOR_WIDTH + c] = pixelAt(r, c);

  const dec = Uint12Decoder.create();
  // bare payloads, each placed by its header's coordinates (not by arrival order: shuffled)
  const payloads = dec.alloc(SECTOR_FRAME_PAYLOAD_BYTES);
  // whole datagrams, the same way, decoded with a stride of one datagram
  const whole = dec.alloc(BLOCKS_PER_SECTOR_FRAME * BLOCK_SIZE);
  const shuffled = [...datagrams].reverse();
  for (const dgram of shuffled) {
    const idx = blockIndex(readPixelXStart(dgram), readPixelYStart(dgram));
    dec.bytes(payloads + idx * PAYLOAD_SIZE, PAYLOAD_SIZE).set(dgram.subarray(HEADER_SIZE));
    dec.bytes(whole + idx * BLOCK_SIZE, BLOCK_SIZE).set(dgram);
  }

  const ranges: Array<[number, number]> = [
    [0, 1860],
    [0, 930],
    [930, 930],
    [0, 465],
    [465, 465],
    [465, 930], // crosses the block boundary at 930
    [929, 2],
    [837, 186],
    [1767, 93],
    [1859, 1],
    [0, 1],
    [0, 0],
  ];

  it.each(ranges)('rows [%i, +%i) equal the plain placement', (rowStart, rowCount) => {
    const mark = dec.mark();
    const n = rowCount * SECTOR_WIDTH;
    const guarded = dec.alloc(n * 2 + 64);
    dec.bytes(guarded, n * 2 + 64).fill(SENTINEL);
    const want = expected.subarray(rowStart * SECTOR_WIDTH, (rowStart + rowCount) * SECTOR_WIDTH);

    dec.decodeSectorRows(payloads, guarded, rowStart, rowCount);
    expect(firstDifference(dec.u16(guarded, n), want)).toBe(-1);
    expect(dec.bytes(guarded + n * 2, 64).every((v) => v === SENTINEL)).toBe(true);

    dec.bytes(guarded, n * 2).fill(0);
    dec.decodeSectorRows(whole + HEADER_SIZE, guarded, rowStart, rowCount, BLOCK_SIZE);
    expect(firstDifference(dec.u16(guarded, n), want)).toBe(-1);
    dec.release(mark);
  });

  it('rejects row ranges outside the sector and a packed frame past the end of memory', () => {
    const tile = dec.alloc(256 * 2 * 4);
    const bad = (fn: () => void) => expect(fn).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    bad(() => dec.decodeSectorRows(payloads, tile, 1858, 4));
    bad(() => dec.decodeSectorRows(payloads, tile, -1, 1));
    bad(() => dec.decodeSectorRows(payloads, tile, 0, 1, PAYLOAD_SIZE - 1));
    bad(() => dec.decodeSectorRows(dec.memory.buffer.byteLength - PAYLOAD_SIZE, tile, 0, 1));
    bad(() => dec.decodeSectorRows(payloads, payloads + 1000, 0, 1)); // tile inside the frame
  });
});
