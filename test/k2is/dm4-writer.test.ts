/**
 * DM4 writer: structure checked byte by byte by a small independent walker written from the
 * format description (header, groups, entries with their DM4 size field, "%%%%", info words,
 * little-endian values, 8 zero bytes at the end), and cross-checked with Tessera's DM4 reader.
 */
import { describe, expect, it } from 'vitest';
import { dm, encodeDm4, k2isGtgTags } from '../../src/k2is/dm4-writer.js';
import { dmText, getNumber, getTag, parseDm } from '../../src/k2is/dm4-reader.js';

type Walked = Map<string, { info: bigint[]; value: Uint8Array }>;

/** Walk a DM4 file the way ncempy does, checking every size field on the way. */
function walk(bytes: Uint8Array): { tags: Walked; groups: Map<string, { sorted: number; open: number; n: number }> } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  expect(v.getUint32(0)).toBe(4); // version, big-endian
  expect(v.getBigUint64(4)).toBe(BigInt(bytes.length - 24)); // root length = file length - 24
  expect(v.getUint32(12)).toBe(1); // little-endian values
  expect([...bytes.subarray(bytes.length - 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  const tags: Walked = new Map();
  const groups = new Map<string, { sorted: number; open: number; n: number }>();
  let o = 16;
  const group = (path: string) => {
    const sorted = bytes[o]!;
    const open = bytes[o + 1]!;
    const n = Number(v.getBigUint64(o + 2));
    o += 10;
    groups.set(path, { sorted, open, n });
    for (let i = 0; i < n; i++) {
      const kind = bytes[o]!;
      const len = v.getUint16(o + 1);
      const label = len > 0 ? Buffer.from(bytes.subarray(o + 3, o + 3 + len)).toString('latin1') : String(i + 1);
      o += 3 + len;
      const size = Number(v.getBigUint64(o));
      o += 8;
      const end = o + size;
      const full = path ? `${path}.${label}` : label;
      if (kind === 20) {
        group(full);
      } else {
        expect(kind).toBe(21);
        expect(Buffer.from(bytes.subarray(o, o + 4)).toString('latin1')).toBe('%%%%');
        const ninfo = Number(v.getBigUint64(o + 4));
        const info = Array.from({ length: ninfo }, (_, k) => v.getBigUint64(o + 12 + 8 * k));
        o += 12 + 8 * ninfo;
        tags.set(full, { info, value: bytes.slice(o, end) });
        o = end;
      }
      expect(o, `size field of ${full}`).toBe(end);
    }
  };
  group('');
  expect(o).toBe(bytes.length - 8);
  return { tags, groups };
}

describe('DM4 writer', () => {
  it('writes the K2 IS .gtg tags LiberTEM reads (SI Dimensions.Size Y / Size X)', () => {
    const bytes = encodeDm4(k2isGtgTags([34, 35]));
    const { tags, groups } = walk(bytes);
    const sizeY = tags.get('SI Dimensions.Size Y')!;
    const sizeX = tags.get('SI Dimensions.Size X')!;
    expect(sizeY.info).toEqual([3n]); // int32
    expect(Buffer.from(sizeY.value).readInt32LE(0)).toBe(34);
    expect(Buffer.from(sizeX.value).readInt32LE(0)).toBe(35);
    expect(groups.get('')).toEqual({ sorted: 1, open: 0, n: 2 });
    expect(groups.get('SI Dimensions')).toEqual({ sorted: 1, open: 0, n: 2 });
    expect(Buffer.from(tags.get('SI Image Tags.SI.Acquisition.Spatial Sampling.Height (pixels)')!.value).readInt32LE(0)).toBe(34);
    // the other engineer's reader agrees
    const file = parseDm(bytes);
    expect(getNumber(file, 'SI Dimensions.Size Y')).toBe(34);
    expect(getNumber(file, 'SI Dimensions.Size X')).toBe(35);
  });

  it('encodes every value kind as DigitalMicrograph does', () => {
    const root = {
      zeta: 'Å text',
      alpha: { b: dm.float32(1.5), a: dm.uint16(65535), c: dm.int64(-5n), d: dm.uint64(2n ** 40n) },
      flag: true,
      list: [dm.int16(-2), 'x', { inner: 2.25 }],
      arr: new Float32Array([1, -2.5]),
      big: 3_000_000_000,
    };
    const bytes = encodeDm4(root);
    const { tags, groups } = walk(bytes);
    // named groups are sorted by label; lists keep their order and are marked unsorted
    expect(groups.get('')).toEqual({ sorted: 1, open: 0, n: 6 });
    expect(groups.get('list')).toEqual({ sorted: 0, open: 0, n: 3 });
    const order = [...tags.keys()];
    expect(order.indexOf('alpha.a')).toBeLessThan(order.indexOf('alpha.b'));
    expect(order.indexOf('arr')).toBeLessThan(order.indexOf('zeta'));
    const z = tags.get('zeta')!;
    expect(z.info).toEqual([20n, 4n, 6n]); // array of uint16 code units
    expect(Buffer.from(z.value).toString('utf16le')).toBe('Å text');
    expect(tags.get('alpha.b')!.info).toEqual([6n]);
    expect(Buffer.from(tags.get('alpha.b')!.value).readFloatLE(0)).toBe(1.5);
    expect(Buffer.from(tags.get('alpha.a')!.value).readUInt16LE(0)).toBe(65535);
    expect(Buffer.from(tags.get('alpha.c')!.value).readBigInt64LE(0)).toBe(-5n);
    expect(tags.get('alpha.d')!.info).toEqual([12n]);
    expect(tags.get('flag')!.info).toEqual([8n]);
    expect([...tags.get('flag')!.value]).toEqual([1]);
    expect(tags.get('list.1')!.info).toEqual([2n]);
    expect(Buffer.from(tags.get('list.3.inner')!.value).readDoubleLE(0)).toBe(2.25);
    expect(tags.get('arr')!.info).toEqual([20n, 6n, 2n]);
    expect(tags.get('big')!.info).toEqual([7n]); // beyond int32: double
    const file = parseDm(bytes);
    expect(dmText(getTag(file, 'zeta'))).toBe('Å text');
    expect(getNumber(file, 'alpha.b')).toBe(1.5);
  });

  it('rejects labels that DM cannot store', () => {
    expect(() => encodeDm4({ 'λ': 1 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_DM4' }));
    expect(() => encodeDm4({ '': 1 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_DM4' }));
  });
});
