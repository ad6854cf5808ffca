import { describe, expect, it } from 'vitest';
import { decodeUint12, encodeUint12 } from '../../src/k2is/uint12.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('12-bit packing (spec A.4 worked examples)', () => {
  it.each([
    [[1, 2, 3, 4], '012000034000'],
    [[0xabc, 0xdef], 'bcfade'],
    [[4095, 0, 0, 4095], 'ff0f0000f0ff'],
    [[0x123, 0x456], '236145'],
  ])('%j <-> %s', (pixels, bytes) => {
    expect(hex(encodeUint12(pixels))).toBe(bytes);
    expect(Array.from(decodeUint12(Buffer.from(bytes, 'hex')))).toEqual(pixels);
  });

  it('round-trips every 12-bit value in both positions', () => {
    const pixels = new Uint16Array(8192);
    for (let v = 0; v < 4096; v++) {
      pixels[2 * v] = v;
      pixels[2 * v + 1] = 4095 - v;
    }
    expect(decodeUint12(encodeUint12(pixels))).toEqual(pixels);
  });

  it('rejects odd pixel counts and lengths that are not whole triplets', () => {
    expect(() => encodeUint12([1, 2, 3])).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => decodeUint12(new Uint8Array(4))).toThrow(
      expect.objectContaining({ code: 'TESSERA_ERR_BAD_PACKED_LENGTH' }),
    );
  });
});
