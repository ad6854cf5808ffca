import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allTags, dmText, getEntry, getNumber, getTag, parseDm, readDmFile, type DmFile } from '../../src/k2is/dm4-reader.js';
import { buildDm, dm, gtgBytes, type DmNode } from './fixtures.js';
import { dm as w, encodeDm4, k2isGtgTags } from '../../src/k2is/dm4-writer.js';

const dm4Error = expect.objectContaining({ code: 'TESSERA_ERR_DM4' });

function tree(): DmNode[] {
  return [
    dm.group('ImageList', [
      dm.group('', [
        dm.group('ImageData', [
          dm.int32('DataType', 10),
          dm.group('Dimensions', [dm.uint32('', 2048), dm.uint32('', 1860)]),
          dm.float32Array('Data', [1.5, -2, 3.25]),
        ]),
        dm.group('ImageTags', [dm.text('Name', 'K2 IS capture'), dm.bool('Flag', true)]),
      ]),
    ]),
    dm.group('SI Dimensions', [dm.int32('Size X', 35), dm.int32('Size Y', 34)]),
    dm.group('Types', [
      dm.int16('i16', -1234),
      dm.uint16('u16', 65000),
      dm.float32('f32', 0.5),
      dm.float64('f64', Math.PI),
      dm.int8('i8', -7),
      dm.uint8('u8', 200),
      dm.int64('i64', -(2n ** 40n)),
      dm.uint64('u64 big', 2n ** 60n + 3n),
      dm.string('s18', 'héllo'),
      dm.struct('Point', -5, 2.5, 7),
      dm.structArray('Pairs', [
        [1, 2],
        [3, 4],
      ]),
      dm.int32('Label.With.Dots', 99),
    ]),
  ];
}

function checkTree(f: DmFile): void {
  expect(getNumber(f, 'SI Dimensions.Size Y')).toBe(34);
  expect(getNumber(f, '.SI Dimensions.Size X')).toBe(35);
  expect(getNumber(f, 'ImageList.1.ImageData.DataType')).toBe(10);
  expect(getNumber(f, 'ImageList.1.ImageData.Dimensions.1')).toBe(2048);
  expect(getNumber(f, 'ImageList.1.ImageData.Dimensions.2')).toBe(1860);
  expect(Array.from(getTag(f, 'ImageList.1.ImageData.Data') as Float32Array)).toEqual([1.5, -2, 3.25]);
  expect(dmText(getTag(f, 'ImageList.1.ImageTags.Name'))).toBe('K2 IS capture');
  expect(getTag(f, 'ImageList.1.ImageTags.Flag')).toBe(true);
  expect(getTag(f, 'Types.i16')).toBe(-1234);
  expect(getTag(f, 'Types.u16')).toBe(65000);
  expect(getTag(f, 'Types.f32')).toBe(0.5);
  expect(getTag(f, 'Types.f64')).toBe(Math.PI);
  expect(getTag(f, 'Types.i8')).toBe(-7);
  expect(getTag(f, 'Types.u8')).toBe(200);
  expect(getTag(f, 'Types.i64')).toBe(-(2 ** 40));
  expect(getTag(f, 'Types.u64 big')).toBe(2n ** 60n + 3n);
  expect(getTag(f, 'Types.s18')).toBe('héllo');
  expect(getTag(f, 'Types.Point')).toEqual([-5, 2.5, 7]);
  expect(getTag(f, 'Types.Pairs')).toEqual([
    [1, 2],
    [3, 4],
  ]);
  expect(getTag(f, 'Types.Label.With.Dots')).toBe(99);
  expect(getTag(f, 'Types.missing')).toBeUndefined();
  expect(getTag(f, 'SI Dimensions')).toBeUndefined(); // a group, not a value
  expect(getEntry(f, 'SI Dimensions')?.kind).toBe('group');
  const keys = allTags(f);
  expect(keys.get('.SI Dimensions.Size Y')).toBe(34);
  expect(keys.get('.ImageList.1.ImageData.Dimensions.2')).toBe(1860);
}

describe('DM4 tag reader', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-dm4-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads hand-written DM4 bytes (independent of the fixture builder)', () => {
    const hex = [
      '00000004', // version 4
      '0000000000000000', // root length (not used by readers)
      '00000001', // little-endian values
      '01 00 0000000000000001', // root: sorted, closed, 1 entry
      '14 000d', Buffer.from('SI Dimensions').toString('hex'), // group "SI Dimensions"
      '000000000000005c', // its size: 10 + 2 x (1 + 2 + 6 + 8 + 24) = 92
      '01 00 0000000000000002',
      '15 0006', Buffer.from('Size X').toString('hex'), '0000000000000018', // data tag, 24 bytes follow
      '25252525 0000000000000001 0000000000000003 23000000', // %%%% [int32] 35
      '15 0006', Buffer.from('Size Y').toString('hex'), '0000000000000018',
      '25252525 0000000000000001 0000000000000003 22000000', // 34
      '0000000000000000',
    ].join('');
    const bytes = Buffer.from(hex.replace(/ /g, ''), 'hex');
    const f = parseDm(bytes, 'hand.dm4');
    expect(f.version).toBe(4);
    expect(f.littleEndian).toBe(true);
    expect(getNumber(f, 'SI Dimensions.Size Y')).toBe(34);
    expect(getNumber(f, 'SI Dimensions.Size X')).toBe(35);
    // the builder writes the same bytes for the same tree
    expect(Buffer.from(buildDm([dm.group('SI Dimensions', [dm.int32('Size X', 35), dm.int32('Size Y', 34)])])).subarray(16)).toEqual(
      bytes.subarray(16),
    );
  });

  it('reads big-endian values when the byte order flag is 0', () => {
    const hex =
      '00000004 0000000000000000 00000000 01 00 0000000000000001' +
      '15 0001 41 000000000000001c 25252525 0000000000000001 0000000000000007 400921fb54442d18';
    const f = parseDm(Buffer.from(hex.replace(/ /g, ''), 'hex'));
    expect(f.littleEndian).toBe(false);
    expect(getTag(f, 'A')).toBe(Math.PI);
  });

  it('reads every value type, nested and unlabelled groups, dotted labels, in DM4 and DM3', () => {
    checkTree(parseDm(buildDm(tree(), 4)));
    const f3 = parseDm(buildDm(tree(), 3));
    expect(f3.version).toBe(3);
    checkTree(f3);
  });

  it('reads a .gtg the way LiberTEM does (SI Dimensions), from a file', () => {
    const p = join(dir, 'scan.gtg');
    writeFileSync(p, gtgBytes({ sizeY: 34, sizeX: 35 }));
    const f = readDmFile(p);
    expect([getNumber(f, 'SI Dimensions.Size Y'), getNumber(f, 'SI Dimensions.Size X')]).toEqual([34, 35]);
    writeFileSync(p, gtgBytes('time-series'));
    expect(getNumber(readDmFile(p), 'SI Dimensions.Size Y')).toBeUndefined();
  });

  it('locates but does not read large arrays, and skips unknown types by their DM4 size', () => {
    const big = new Uint8Array(3 << 20).fill(7);
    const bytes = buildDm([
      dm.raw('Big', [20, 10, big.length], big),
      dm.raw('Mystery', [99, 1, 2, 3], new Uint8Array([1, 2, 3, 4, 5])),
      dm.int32('After', 42),
    ]);
    const p = join(dir, 'big.dm4');
    writeFileSync(p, bytes);
    for (const f of [parseDm(bytes), readDmFile(p)]) {
      const v = getTag(f, 'Big') as { unread: true; offset: number; byteLength: number; count: number };
      expect(v.unread).toBe(true);
      expect(v.byteLength).toBe(big.length);
      expect(bytes[v.offset]).toBe(7);
      expect(bytes[v.offset - 1]).not.toBe(7); // the offset is the first value byte
      expect(getEntry(f, 'Mystery')).toMatchObject({ kind: 'data', value: undefined, byteLength: 5 });
      expect(getTag(f, 'After')).toBe(42);
    }
    // DM3 has no sizes: an unknown type cannot be skipped
    expect(() => parseDm(buildDm([dm.raw('Mystery', [99], new Uint8Array(4))], 3))).toThrow(dm4Error);
  });

  it('gives TESSERA_ERR_DM4 for empty, foreign and missing files', () => {
    expect(() => parseDm(new Uint8Array(0))).toThrow(dm4Error);
    expect(() => parseDm(Buffer.from('PK\x03\x04 this is a zip file, honestly'))).toThrow(dm4Error);
    expect(() => parseDm(Buffer.from('000000040000000000000000000000020100', 'hex'))).toThrow(dm4Error); // byte order 2
    expect(() => readDmFile(join(dir, 'does-not-exist.gtg'))).toThrow(dm4Error);
  });

  it('gives TESSERA_ERR_DM4 for every truncation of a valid file, never another error', () => {
    const bytes = buildDm(tree(), 4);
    const bytes3 = buildDm(tree(), 3);
    for (const b of [bytes, bytes3]) {
      for (let n = 0; n < b.length - 8; n++) {
        // the last 8 bytes are end-of-file padding the reader does not need
        expect(() => parseDm(b.subarray(0, n)), `cut at ${n}`).toThrow(dm4Error);
      }
    }
  });

  it('refuses absurd counts and sizes at once, without allocating them', () => {
    const huge = (word: string): Buffer => Buffer.from(('00000004 0000000000000000 00000001 01 00' + word).replace(/ /g, ''), 'hex');
    expect(() => parseDm(huge('000000ffffffffff'))).toThrow(dm4Error); // 2^40 entries
    // a data tag declaring 2^50 bytes
    expect(() => parseDm(Buffer.concat([huge('0000000000000001'), Buffer.from('15000141' + '0004000000000000', 'hex')]))).toThrow(dm4Error);
    // an array of 2^40 float64 within a small tag
    const arr = Buffer.concat([
      huge('0000000000000001'),
      Buffer.from('15000141' + '0000000000000024' + '25252525' + '0000000000000003' + '0000000000000014' + '0000000000000007' + '0000010000000000', 'hex'),
    ]);
    expect(() => parseDm(arr)).toThrow(dm4Error);
    // groups nested 100 deep
    let nested: DmNode = dm.int32('x', 1);
    for (let i = 0; i < 100; i++) nested = dm.group(`g${i}`, [nested]);
    expect(() => parseDm(buildDm([nested]))).toThrow(dm4Error);
  });

  it('never throws anything but TESSERA_ERR_DM4 on random or mutated bytes (fuzz)', () => {
    const valid = buildDm(tree(), 4);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }),
          fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((edits) => {
            const b = Uint8Array.from(valid);
            for (const [i, v] of edits) b[i] = v;
            return b;
          }),
        ),
        (b) => {
          try {
            parseDm(b);
          } catch (err) {
            expect(err).toMatchObject({ code: 'TESSERA_ERR_DM4' });
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("round-trips the simulator's DM4 writer (src/k2is/dm4-writer.ts)", () => {
    const bytes = encodeDm4(
      k2isGtgTags([34, 35], {
        Types: {
          i16: w.int16(-3),
          u16: w.uint16(65535),
          u32: w.uint32(4_000_000_000),
          f32: w.float32(0.25),
          f64: 1.5,
          i32: -7,
          b: true,
          i8: w.int8(-128),
          u8: w.uint8(255),
          i64: w.int64(-(2n ** 50n)),
          u64: w.uint64(2n ** 63n),
          text: 'Gatan K2 IS',
          pixels: new Uint16Array([1, 2, 65535]),
          floats: new Float64Array([0.5, -1e300]),
          list: [1, 'two', { three: 3 }],
        },
      }),
    );
    const f = parseDm(bytes, 'writer');
    expect(f.version).toBe(4);
    expect(getNumber(f, 'SI Dimensions.Size Y')).toBe(34);
    expect(getNumber(f, 'SI Dimensions.Size X')).toBe(35);
    expect(getNumber(f, 'SI Image Tags.SI.Acquisition.Spatial Sampling.Height (pixels)')).toBe(34);
    expect(getNumber(f, 'SI Image Tags.SI.Acquisition.Spatial Sampling.Width (pixels)')).toBe(35);
    expect(getTag(f, 'Types.i16')).toBe(-3);
    expect(getTag(f, 'Types.u16')).toBe(65535);
    expect(getTag(f, 'Types.u32')).toBe(4_000_000_000);
    expect(getTag(f, 'Types.f32')).toBe(0.25);
    expect(getTag(f, 'Types.f64')).toBe(1.5);
    expect(getTag(f, 'Types.i32')).toBe(-7);
    expect(getTag(f, 'Types.b')).toBe(true);
    expect(getTag(f, 'Types.i8')).toBe(-128);
    expect(getTag(f, 'Types.u8')).toBe(255);
    expect(getTag(f, 'Types.i64')).toBe(-(2 ** 50));
    expect(getTag(f, 'Types.u64')).toBe(2n ** 63n);
    expect(dmText(getTag(f, 'Types.text'))).toBe('Gatan K2 IS');
    expect(Array.from(getTag(f, 'Types.pixels') as Uint16Array)).toEqual([1, 2, 65535]);
    expect(Array.from(getTag(f, 'Types.floats') as Float64Array)).toEqual([0.5, -1e300]);
    expect(getTag(f, 'Types.list.1')).toBe(1);
    expect(dmText(getTag(f, 'Types.list.2'))).toBe('two');
    expect(getTag(f, 'Types.list.3.three')).toBe(3);
    expect(getEntry(f, 'SI Dimensions')).toMatchObject({ kind: 'group', sorted: true, open: false });
  });
});
