import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, openSync, closeSync, writeSync, readSync, renameSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { K2ISRecording } from '../../src/k2is/recording.js';
import { discoverSectorFiles } from '../../src/k2is/sector-files.js';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, FRAME_WIDTH, SECTOR_HEIGHT } from '../../src/k2is/constants.js';
import { expectedFrame, writeSyntheticRecording, type SyntheticRecording } from './fixtures.js';

const code = (c: string) => expect.objectContaining({ code: c });

/** Overwrite whole block `to` of a sector file with block `from`: a good header in the wrong place. */
function copyBlock(path: string, from: number, to: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(BLOCK_SIZE);
  readSync(fd, b, 0, BLOCK_SIZE, from * BLOCK_SIZE);
  writeSync(fd, b, 0, BLOCK_SIZE, to * BLOCK_SIZE);
  closeSync(fd);
}

describe('K2ISRecording: clear errors for broken datasets', () => {
  let root: string;
  let base: SyntheticRecording;
  let n = 0;

  /** A fresh copy of the small base recording to break. */
  function copy(): SyntheticRecording {
    const dir = join(root, `copy${n++}`);
    cpSync(base.dir, dir, { recursive: true });
    const re = (p: string) => join(dir, p.slice(base.dir.length + 1));
    return { ...base, dir, gtgPath: re(base.gtgPath), binPaths: base.binPaths.map(re) };
  }

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'tessera-recerr-'));
    base = writeSyntheticRecording({
      dir: join(root, 'base'),
      frames: 4,
      flaggedFrom: 1,
      leadingBlocks: [0, 3, 0, 0, 0, 5, 0, 0],
      trailingBlocks: [0, 0, 2, 0, 0, 0, 0, 7],
      gtg: { sizeY: 1, sizeX: 3 },
    });
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('opens the unbroken base recording', () => {
    const r = K2ISRecording.open(base.gtgPath);
    expect(r.navShape).toEqual([1, 3]);
    expect(r.imageCount).toBe(4);
    r.close();
  });

  it('a missing sector file: TESSERA_ERR_SECTOR_FILES naming the 7 found', () => {
    const c = copy();
    unlinkSync(c.binPaths[4]!);
    let err: unknown;
    try {
      K2ISRecording.open(c.gtgPath);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'TESSERA_ERR_SECTOR_FILES' });
    expect((err as Error).message).toContain('found 7');
    expect((err as Error).message).toContain('Capture7_4.bin');
    expect(() => K2ISRecording.open(c.binPaths[0]!)).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
    expect(() => K2ISRecording.open(c.dir)).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
  });

  it('a ninth .bin with the same prefix: TESSERA_ERR_SECTOR_FILES', () => {
    const c = copy();
    cpSync(c.binPaths[0]!, join(c.dir, 'Capture7_9.bin'));
    expect(() => K2ISRecording.open(c.gtgPath)).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
  });

  it('discovery: prefixes, digits, case-insensitive extensions, name order', () => {
    const c = copy();
    // other captures in the same directory do not get mixed in
    cpSync(c.binPaths[0]!, join(c.dir, 'Capture8_1.bin'));
    writeFileSync(join(c.dir, 'notes.txt'), 'x');
    // upper-case extensions still count
    renameSync(c.binPaths[7]!, join(c.dir, 'Capture7_8.BIN'));
    const viaBin = discoverSectorFiles(c.binPaths[2]!);
    expect(viaBin.files.map((f) => f.path)).toEqual([...c.binPaths.slice(0, 7), join(c.dir, 'Capture7_8.BIN')]);
    expect(viaBin.gtgPath).toBe(c.gtgPath);
    expect(viaBin.gtgExists).toBe(true);
    expect(discoverSectorFiles(c.gtgPath).files.map((f) => f.sector)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // the directory holds 9 .bin files now: ambiguous
    expect(() => discoverSectorFiles(c.dir)).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
    expect(() => discoverSectorFiles(join(c.dir, 'notes.txt'))).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
    expect(() => discoverSectorFiles(join(root, 'nowhere', 'x.gtg'))).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
    // sizes: whole blocks and the truncated rest
    const withTail = discoverSectorFiles(base.gtgPath).files[2]!;
    expect(withTail.blocks).toBe(4 * 32 + 2);
    expect(withTail.trailingBytes).toBe(0);
  });

  it('a missing .gtg without a scan shape: TESSERA_ERR_NO_SCAN_SHAPE; with one, it opens as a scan', () => {
    const c = copy();
    unlinkSync(c.gtgPath);
    expect(() => K2ISRecording.open(c.binPaths[0]!)).toThrow(code('TESSERA_ERR_NO_SCAN_SHAPE'));
    expect(() => K2ISRecording.open(c.gtgPath)).toThrow(code('TESSERA_ERR_NO_SCAN_SHAPE'));
    const r = K2ISRecording.open(c.binPaths[0]!, { scanShape: [3] });
    try {
      expect(r.mode).toBe('scan');
      expect(r.frameIndexOf(0)).toBe(0);
      const f = r.readFrame(1);
      const e = expectedFrame(1);
      expect(f[12345]).toBe(e[12345]);
      expect(f[SECTOR_HEIGHT * FRAME_WIDTH - 1]).toBe(e[SECTOR_HEIGHT * FRAME_WIDTH - 1]);
    } finally {
      r.close();
    }
  });

  it.each(['garbage', 'truncated'] as const)('an unreadable .gtg (%s): TESSERA_ERR_GTG; with a scan shape, it opens', (kind) => {
    const dir = join(root, `gtg-${kind}`);
    cpSync(base.dir, dir, { recursive: true });
    const gtg = join(dir, 'Capture7_.gtg');
    writeSyntheticRecording({ dir: join(root, `gtg-src-${kind}`), frames: 1, flaggedFrom: 0, gtg: kind });
    cpSync(join(root, `gtg-src-${kind}`, 'Capture7_.gtg'), gtg);
    let err: unknown;
    try {
      K2ISRecording.open(gtg);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'TESSERA_ERR_GTG' });
    expect((err as Error).message).toContain(gtg);
    const r = K2ISRecording.open(gtg, { scanShape: [1, 3] });
    expect(r.navShape).toEqual([1, 3]);
    r.close();
  });

  it('a .gtg with a nonsense scan size: TESSERA_ERR_GTG', () => {
    const c = copy();
    writeSyntheticRecording({ dir: join(root, 'zero-gtg'), frames: 1, flaggedFrom: 0, gtg: { sizeY: 0, sizeX: 3 } });
    cpSync(join(root, 'zero-gtg', 'Capture7_.gtg'), c.gtgPath);
    expect(() => K2ISRecording.open(c.gtgPath)).toThrow(code('TESSERA_ERR_GTG'));
  });

  it('a sector file of garbage: TESSERA_ERR_SYNC naming the file', () => {
    const c = copy();
    const junk = Buffer.alloc(10 * BLOCK_SIZE);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 2654435761) >>> 24;
    writeFileSync(c.binPaths[6]!, junk);
    let err: unknown;
    try {
      K2ISRecording.open(c.gtgPath);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'TESSERA_ERR_SYNC' });
    expect((err as Error).message).toContain('Capture7_7.bin');
    expect((err as Error).message).toContain('bad_sync');
  });

  it('a sector file shorter than one block: TESSERA_ERR_SECTOR_FILES', () => {
    const c = copy();
    truncateSync(c.binPaths[1]!, 1000);
    expect(() => K2ISRecording.open(c.gtgPath)).toThrow(code('TESSERA_ERR_SECTOR_FILES'));
  });

  it('no frame with the shutter flag: TESSERA_ERR_SYNC', () => {
    const syn = writeSyntheticRecording({ dir: join(root, 'noflag'), frames: 2, flaggedFrom: 99, gtg: { sizeY: 1, sizeX: 2 } });
    expect(() => K2ISRecording.open(syn.gtgPath)).toThrow(code('TESSERA_ERR_SYNC'));
  });

  it('sectors with no common complete frame: TESSERA_ERR_SYNC', () => {
    const c = copy();
    truncateSync(c.binPaths[3]!, 20 * BLOCK_SIZE); // less than one frame
    expect(() => K2ISRecording.open(c.gtgPath)).toThrow(code('TESSERA_ERR_SYNC'));
  });

  it('a damaged block mid-file: TESSERA_ERR_BAD_BLOCK on the frame that has it, or zeros when asked', () => {
    const c = copy();
    // sector 2 (no leading blocks), complete frame 2, block 7: break its sync word
    const at = (2 * BLOCKS_PER_SECTOR_FRAME + 7) * BLOCK_SIZE;
    const fd = openSync(c.binPaths[2]!, 'r+');
    writeSync(fd, Buffer.from([0xde, 0xad]), 0, 2, at);
    closeSync(fd);
    const r = K2ISRecording.open(c.gtgPath); // nav k reads complete frame k
    try {
      expect(r.frameIndexOf(2)).toBe(2);
      let err: unknown;
      try {
        r.readFrame(2);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'TESSERA_ERR_BAD_BLOCK' });
      expect((err as Error).message).toMatch(/Capture7_3\.bin.*sector 2, complete frame 2, block 7.*bad_sync/);
      expect(() => [...r.tiles({ sectors: [2] })]).toThrow(code('TESSERA_ERR_BAD_BLOCK'));
      // the other frames read fine
      expect(r.readFrame(1)[5]).toBe(expectedFrame(1)[5]);
    } finally {
      r.close();
    }
    const z = K2ISRecording.open(c.gtgPath, { onBadBlock: 'zero' });
    try {
      const f = z.readFrame(2);
      const e = expectedFrame(2);
      // block 7 in send order: x = 128, y = 0 in sector 2 -> columns 512 + 128 .. +16, rows 0..929
      let zeros = 0;
      let diff = 0;
      for (let row = 0; row < SECTOR_HEIGHT; row++) {
        for (let col = 0; col < FRAME_WIDTH; col++) {
          const i = row * FRAME_WIDTH + col;
          const inBlock = row < 930 && col >= 640 && col < 656;
          if (inBlock) zeros += f[i] === 0 ? 1 : 0;
          else diff += f[i] !== e[i] ? 1 : 0;
        }
      }
      expect(zeros).toBe(930 * 16);
      expect(diff).toBe(0);
      expect(z.damage.badBlocks).toBe(1);
      expect(z.damage.examples[0]).toContain('block 7');
    } finally {
      z.close();
    }
  });

  it('blocks of the wrong frame inside a frame: TESSERA_ERR_BAD_BLOCK', () => {
    const c = copy();
    // copy block 3 of complete frame 1 over block 3 of complete frame 2 in sector 0: good header, wrong frame
    copyBlock(c.binPaths[0]!, 32 + 3, 2 * 32 + 3);
    const r = K2ISRecording.open(c.gtgPath, { scanShape: [4] });
    try {
      expect(r.frameIndexOf(2)).toBe(2);
      expect(() => r.readSectorFrame(2, 0)).toThrow(code('TESSERA_ERR_BAD_BLOCK'));
      r.readSectorFrame(3, 0);
    } finally {
      r.close();
    }
  });

  it('a damaged last or first complete frame is dropped with a warning', () => {
    const c = copy();
    copyBlock(c.binPaths[0]!, 32 + 3, 3 * 32 + 3); // last complete frame of sector 0
    const r = K2ISRecording.open(c.gtgPath);
    try {
      expect(r.imageCount).toBe(3);
      expect(r.sync.warnings).toHaveLength(1);
      expect(r.sync.warnings[0]).toMatch(/dropped the last complete frame.*frame_id/);
      expect(r.sync.lastBlock[0]).toBe(3 * 32 - 1);
    } finally {
      r.close();
    }
    const d = copy();
    copyBlock(d.binPaths[4]!, 2 * 32 + 5, 5); // first complete frame of sector 4
    const r2 = K2ISRecording.open(d.gtgPath);
    try {
      expect(r2.imageCount).toBe(3);
      expect(r2.sync.warnings).toHaveLength(2);
      expect(r2.sync.warnings[0]).toMatch(/sectors disagree on where the first complete frame starts.*32, 5, 32/);
      expect(r2.sync.warnings[1]).toMatch(/dropped the first complete frame.*sector 4.*block 5/);
      expect(r2.nativeSyncOffset).toBe(0); // the flag was on old frame 1, now frame 0
      expect(r2.sync.leadingBlocksSkipped).toEqual([32, 35, 32, 32, 32, 37, 32, 32]);
      expect(r2.frameIndexOf(1)).toBe(0);
      expect(r2.readFrame(1)[777]).toBe(expectedFrame(1)[777]);
    } finally {
      r2.close();
    }
  });
});
