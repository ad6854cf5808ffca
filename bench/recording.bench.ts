/**
 * Reading a recorded K2 IS dataset (K2ISRecording): read + check + decode throughput, in GB/s
 * of sector-file bytes, against a plain positioned read of the same bytes from the same files
 * (both from the page cache: the files are written, then read once before timing), and against
 * memcpy of the same number of bytes. Also against the detector's real-time rate.
 *
 * The recording is written here (8 sector files, FRAMES frames, blocks with valid headers and a
 * pattern payload), so the bench needs nothing but disk space in the temp directory.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLOCK_SIZE,
  BLOCKS_PER_SECTOR_FRAME,
  FRAME_PIXELS,
  HEADER_SIZE,
  NUM_SECTORS,
  SECTOR_FRAME_BYTES,
  SECTOR_PIXELS,
} from '../src/k2is/constants.js';
import { encodeHeader, headerFor } from '../src/k2is/header.js';
import { BLOCK_ORDER } from '../src/k2is/geometry.js';
import { K2ISRecording } from '../src/k2is/recording.js';
import { formatBytes, measure, measureMemcpy, report } from './lib.js';

const FRAMES = 40; // 40 x 5.7 MB = 229 MB
const FLAGGED_FROM = 1;
const TIMING = { runs: 5, minTimeMs: 300, warmupMs: 300 };
const REALTIME_FPS = 400;

export function writeRecording(dir: string): string[] {
  const paths: string[] = [];
  const frame = Buffer.alloc(SECTOR_FRAME_BYTES);
  for (let s = 0; s < NUM_SECTORS; s++) {
    const path = join(dir, `Bench_${s + 1}.bin`);
    paths.push(path);
    const fd = openSync(path, 'w');
    for (let t = 0; t < FRAMES; t++) {
      for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) {
        const o = i * BLOCK_SIZE;
        const { x, y } = BLOCK_ORDER[i]!;
        encodeHeader(
          headerFor({ flags: t >= FLAGGED_FROM ? 1 : 0, blockCount: 1000 + t * 32 + i, frameId: 500 + t, pixelXStart: x, pixelYStart: y }),
          frame,
          o,
        );
        for (let b = HEADER_SIZE; b < BLOCK_SIZE; b++) frame[o + b] = (b * 7 + t + s) & 0xff;
      }
      writeSync(fd, frame);
    }
    closeSync(fd);
  }
  return paths;
}

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-rec-'));
  try {
    const paths = writeRecording(dir);
    // no SI Dimensions needed: the scan shape is given
    writeFileSync(join(dir, 'Bench_.gtg'), Buffer.alloc(0));
    const rec = K2ISRecording.open(paths[0]!, { scanShape: [FRAMES - 1] });
    const frames = rec.frameCount;
    const bytes = frames * NUM_SECTORS * SECTOR_FRAME_BYTES;
    console.log(`# ${frames} frames x 8 sectors, ${formatBytes(bytes)} of sector files, page cache`);

    // the reference: plain positioned reads of the same byte ranges, one sector frame (715 KB) per
    // read, the reader's own read size
    const fds = paths.map((p) => openSync(p, 'r'));
    const chunk = Buffer.alloc(SECTOR_FRAME_BYTES);
    const plainRead = (): void => {
      for (let k = 0; k < frames; k++) {
        const c = rec.frameIndexOf(k) ?? 0;
        for (let s = 0; s < NUM_SECTORS; s++) {
          readSync(fds[s]!, chunk, 0, SECTOR_FRAME_BYTES, (rec.sync.firstBlock[s]! + c * BLOCKS_PER_SECTOR_FRAME) * BLOCK_SIZE);
        }
      }
    };
    plainRead(); // into the page cache
    const plain = measure(plainRead, { bytes, ...TIMING });
    const memcpy = measureMemcpy(chunk.length, TIMING).best;
    report('plain file read, 715 KB per read (reference)', plain, 'GB/s', plain / memcpy, 'memcpy of 715 KB');

    const tiles = (depth: number, rows: number) => (): void => {
      for (const t of rec.tiles({ depth, rows })) if (t.data.length === 0) throw new Error('empty tile');
    };
    const realtime = NUM_SECTORS * SECTOR_FRAME_BYTES * REALTIME_FPS / 1e9;
    for (const [depth, rows] of [
      [4, 1860],
      [2, 930],
      [16, 93],
      [32, 930],
    ] as const) {
      const rate = measure(tiles(depth, rows), { bytes, ...TIMING });
      const tileBytes = depth * rows * 256 * 2;
      report(`tiles depth ${depth} x ${rows} rows (${formatBytes(tileBytes)} tiles), read+check+decode`, rate, 'GB/s', rate / plain, 'plain read');
      report(`  same, vs real time (8 sectors at ${REALTIME_FPS} fps)`, rate / realtime, 'x real time');
    }
    const out = new Uint16Array(FRAME_PIXELS);
    const whole = (): void => {
      for (let k = 0; k < frames; k++) rec.readFrame(k, out);
    };
    const frameRate = measure(whole, { bytes, ...TIMING });
    report('readFrame (1860 x 2048), read+check+decode', frameRate, 'GB/s', frameRate / plain, 'plain read');
    const sectorFrames = (): void => {
      for (let k = 0; k < frames; k++) for (let s = 0; s < NUM_SECTORS; s++) rec.readSectorFrame(k, s, sectorOut);
    };
    const sectorOut = new Uint16Array(SECTOR_PIXELS);
    const sectorRate = measure(sectorFrames, { bytes, ...TIMING });
    report('readSectorFrame (1860 x 256), read+check+decode', sectorRate, 'GB/s', sectorRate / plain, 'plain read');

    for (const fd of fds) closeSync(fd);
    rec.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
