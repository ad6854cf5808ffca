/**
 * `tessera simulate --write-bin` recordings read back by K2ISRecording equal the simulator's
 * ground truth (--truth .npy, rendered by the scene independently of the block stream). Runs the
 * compiled CLI: build first (`npx tsc -p tsconfig.json; node scripts/build-wasm.mjs`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI_PATH } from '../../src/paths.js';
import { K2ISRecording } from '../../src/k2is/recording.js';
import { readNpy } from '../../src/k2is/npy.js';
import { FRAME_PIXELS, SECTOR_WIDTH } from '../../src/k2is/constants.js';

const run = promisify(execFile);

async function simulate(dir: string, name: string, args: string[]): Promise<void> {
  await run(
    process.execPath,
    [CLI_PATH, 'simulate', '--write-bin', dir, '--name', name, '--truth', join(dir, `${name}-truth.npy`), ...args],
    { timeout: 120_000, env: { ...process.env, TESSERA_LOG_LEVEL: 'warn' } },
  );
}

function countDiff(a: Uint16Array, b: ArrayLike<number>, offset: number): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[offset + i]) n++;
  return n;
}

describe.skipIf(!existsSync(CLI_PATH))('simulator recordings (tessera simulate --write-bin) read back', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-simrec-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('with leading garbage, an incomplete end, frames before the flag and a frame_id reset: every frame equals the truth', async () => {
    await simulate(dir, 'Cap', [
      '--scan', '3x4',
      '--seed', '7',
      '--frames-before', '4',
      '--frames-after', '2',
      '--frame-id-start', '284985',
      '--frame-id-reset', '2',
      '--block-count-start', '4294967000', // block_count wraps at 2^32 about 9 frames in
      '--leading-garbage',
      '--incomplete-end',
    ]);
    const truth = readNpy(join(dir, 'Cap-truth.npy'));
    expect(truth.shape).toEqual([12, 1860, 2048]);
    const rec = K2ISRecording.open(join(dir, 'Cap_5.bin'));
    try {
      expect(rec.navShape).toEqual([3, 4]); // from the simulator's .gtg
      expect(rec.mode).toBe('scan');
      expect(rec.sync.warnings).toEqual([]);
      expect(rec.sync.firstFlaggedFrameId).toBe(2);
      expect(rec.sync.leadingBlocksSkipped.some((n) => n > 0 && n < 32)).toBe(true);
      expect(rec.sync.truncatedBytes.some((n) => n > 0)).toBe(true);
      const frame = new Uint16Array(FRAME_PIXELS);
      for (let k = 0; k < 12; k++) {
        rec.readFrame(k, frame);
        expect(countDiff(frame, truth.data, k * FRAME_PIXELS), `frame ${k}`).toBe(0);
      }
      // tiles in the receiver layout agree too
      for (const t of rec.tiles({ depth: 5, rows: 930, sectors: [0, 7] })) {
        for (let j = 0; j < t.depth; j++) {
          const k = t.navStart + j;
          for (let r = 0; r < t.sigShape[0]; r++) {
            const row = t.data.subarray((j * t.sigShape[0] + r) * SECTOR_WIDTH, (j * t.sigShape[0] + r + 1) * SECTOR_WIDTH);
            const at = k * FRAME_PIXELS + (t.sigOrigin[0] + r) * 2048 + t.sigOrigin[1];
            if (countDiff(row, truth.data, at) !== 0) expect.fail(`tile nav ${k} sector ${t.sector} row ${t.sigOrigin[0] + r}`);
          }
        }
      }
    } finally {
      rec.close();
    }
  });

  it('a tidy recording opened from its directory, with a sync_offset one frame later', async () => {
    const sub = join(dir, 'tidy');
    await run('mkdir', ['-p', sub]);
    await simulate(sub, 'Tidy', ['--scan', '2x3', '--seed', '3', '--frames-before', '2', '--frames-after', '1']);
    const truth = readNpy(join(sub, 'Tidy-truth.npy'));
    const rec = K2ISRecording.open(sub, { syncOffset: undefined });
    const later = K2ISRecording.open(sub, { syncOffset: rec.nativeSyncOffset + 1 });
    try {
      expect(rec.navShape).toEqual([2, 3]);
      expect(rec.getSyncOffsetInfo()).toEqual({ frames_skipped_start: 1, frames_ignored_end: 1, frames_inserted_start: 0, frames_inserted_end: 0 });
      for (let k = 0; k < 6; k++) expect(countDiff(rec.readFrame(k), truth.data, k * FRAME_PIXELS), `frame ${k}`).toBe(0);
      for (let k = 0; k < 5; k++) expect(countDiff(later.readFrame(k), truth.data, (k + 1) * FRAME_PIXELS), `later frame ${k}`).toBe(0);
      expect(later.getSyncOffsetInfo()).toMatchObject({ frames_skipped_start: 2, frames_ignored_end: 0 });
    } finally {
      rec.close();
      later.close();
    }
  });
});
