/**
 * `tessera offline` with invalid input: each mistake is one line on stderr naming the problem
 * (a TesseraError code), exit code 2, no stack trace, and no output file (not even a partial one).
 * Runs the compiled CLI: build first.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_PATH } from '../../src/paths.js';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME } from '../../src/k2is/constants.js';
import { killChildren, plainLines, runCli, simulateRecording } from './offline.helpers.js';

describe.skipIf(!existsSync(CLI_PATH))('tessera offline: invalid input', () => {
  let dir: string;
  let rec: string;
  let outDir: string;
  const names = Array.from({ length: 8 }, (_, i) => `Bad_${i + 1}.bin`);

  /** A fresh copy of the good recording that a test may break. */
  function copyRecording(sub: string, withGtg = true): string {
    const d = join(dir, sub);
    mkdirSync(d);
    for (const n of names) copyFileSync(join(rec, n), join(d, n));
    if (withGtg) copyFileSync(join(rec, 'Bad_.gtg'), join(d, 'Bad_.gtg'));
    return d;
  }

  /** Run offline, expect exit 2 with one plain stderr line carrying `code`, and nothing written. */
  async function expectFailure(args: string[], code: string, mention?: string | RegExp): Promise<string> {
    const output = join(outDir, 'x.h5');
    const r = await runCli(['offline', ...args, ...(args.includes('--output') ? [] : ['--output', output])]);
    const lines = plainLines(r.stderr);
    expect(r.code, r.stderr).toBe(2);
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^tessera: error ${code}: `));
    if (mention !== undefined) expect(lines[0]).toMatch(mention);
    expect(r.stderr).not.toMatch(/^\s+at /m); // no stack trace
    expect(r.stdout).toBe('');
    expect(readdirSync(outDir)).toEqual([]);
    return r.stderr;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-offline-err-'));
    rec = join(dir, 'rec');
    outDir = join(dir, 'out');
    mkdirSync(rec);
    mkdirSync(outDir);
    await simulateRecording(rec, 'Bad', ['--scan', '3x3', '--seed', '5', '--frames-before', '2', '--frames-after', '1']);
    rmSync(join(rec, 'Bad-truth.npy'));
  }, 120_000);
  afterEach(killChildren);
  afterAll(() => {
    killChildren();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the good recording works (so the failures below are the mistakes, not the setup)', async () => {
    const output = join(dir, 'good.h5');
    const r = await runCli(['offline', '--input', rec, '--udf', 'SumSig', '--workers', '0', '--output', output]);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(output)).toBe(true);
  });

  it('a missing sector file', async () => {
    const d = copyRecording('missing');
    rmSync(join(d, 'Bad_6.bin'));
    await expectFailure(['--input', d, '--udf', 'Sum'], 'TESSERA_ERR_SECTOR_FILES', /expected 8 sector files.*found 7/);
  });

  it('an input that does not exist', async () => {
    await expectFailure(['--input', join(dir, 'nowhere'), '--udf', 'Sum'], 'TESSERA_ERR_SECTOR_FILES', /nowhere does not exist/);
  });

  it('inconsistent sector file sizes: one sector stops early, so the scan is not covered', async () => {
    const d = copyRecording('short');
    truncateSync(join(d, 'Bad_4.bin'), 4 * BLOCKS_PER_SECTOR_FRAME * BLOCK_SIZE);
    await expectFailure(['--input', join(d, 'Bad_.gtg'), '--udf', 'Sum'], 'TESSERA_ERR_SECTOR_FILES', /needs 9 frames but the recording has only \d.*sector file sizes differ/);
  });

  it('a sector file shorter than one block', async () => {
    const d = copyRecording('tiny');
    truncateSync(join(d, 'Bad_2.bin'), 100);
    await expectFailure(['--input', d, '--udf', 'Sum'], 'TESSERA_ERR_SECTOR_FILES', /Bad_2\.bin/);
  });

  it('no scan shape: no .gtg and no --scan', async () => {
    const d = copyRecording('nogtg', false);
    await expectFailure(['--input', join(d, 'Bad_1.bin'), '--udf', 'Sum'], 'TESSERA_ERR_NO_SCAN_SHAPE');
  });

  it('an unknown UDF, listing the known ones', async () => {
    await expectFailure(['--input', rec, '--udf', 'Sum', '--udf', 'NoSuchThing'], 'TESSERA_ERR_UNKNOWN_UDF', /"NoSuchThing".*SumUDF/);
  });

  it('bad parameters: schema and constructor checks', async () => {
    await expectFailure(['--input', rec, '--udf', 'ApplyMasks:{"masks":[]}'], 'TESSERA_ERR_UDF_PARAMS', /ApplyMasksUDF/);
    await expectFailure(['--input', rec, '--udf', 'CoM:{"r":10,"ri":20}'], 'TESSERA_ERR_UDF_PARAMS', /CoMUDF/);
  });

  it('bad JSON, and params that are not an object', async () => {
    await expectFailure(['--input', rec, '--udf', 'Sum:{"dtype":'], 'TESSERA_ERR_BAD_ARGUMENT', /--udf.*not valid JSON/);
    await expectFailure(['--input', rec, '--udf', 'Sum:[1,2]'], 'TESSERA_ERR_BAD_ARGUMENT', /must be a JSON object/);
  });

  it('bad --scan and --sync-offset values', async () => {
    await expectFailure(['--input', rec, '--udf', 'Sum', '--scan', '3by3'], 'TESSERA_ERR_BAD_ARGUMENT', /--scan/);
    await expectFailure(['--input', rec, '--udf', 'Sum', '--sync-offset', '1000'], 'TESSERA_ERR_BAD_ARGUMENT', /syncOffset/);
  });

  it('missing --input, --udf or --output', async () => {
    await expectFailure(['--udf', 'Sum'], 'TESSERA_ERR_BAD_ARGUMENT', /--input/);
    await expectFailure(['--input', rec], 'TESSERA_ERR_BAD_ARGUMENT', /--udf/);
    const r = await runCli(['offline', '--input', rec, '--udf', 'Sum']);
    expect(r.code).toBe(2);
    expect(plainLines(r.stderr)).toEqual([expect.stringMatching(/^tessera: error TESSERA_ERR_BAD_ARGUMENT: .*--output/)]);
  });

  it('an output that cannot be written names the path', async () => {
    const target = join(dir, 'no-such-dir', 'x.h5');
    await expectFailure(['--input', rec, '--udf', 'Sum', '--output', target], 'TESSERA_ERR_OUTPUT', new RegExp(`${target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*does not exist`));
    await expectFailure(['--input', rec, '--udf', 'Sum', '--output', outDir], 'TESSERA_ERR_OUTPUT', /is a directory/);
  });

  it('a damaged block found during the run: the error, and no file (the partial output is removed)', async () => {
    const d = copyRecording('damaged');
    // the sync word of a block in the middle: synchronisation (at the ends) passes, reading fails
    const fd = openSync(join(d, 'Bad_7.bin'), 'r+');
    writeSync(fd, new Uint8Array(8), 0, 8, (5 * BLOCKS_PER_SECTOR_FRAME + 3) * BLOCK_SIZE);
    closeSync(fd);
    const stderr = await expectFailure(['--input', d, '--udf', 'Sum', '--udf', 'SumSig', '--workers', '0'], 'TESSERA_ERR_BAD_BLOCK', /Bad_7\.bin/);
    expect(stderr).toContain('offline run starting'); // it failed after the output was opened
  });

  it('SIGINT stops a run: exit 130, one line, no file', async () => {
    const output = join(outDir, 'int.h5');
    let sent = false;
    // 1600 scan positions, nearly all blank: long enough to be interrupted
    const r = await runCli(
      ['offline', '--input', rec, '--scan', '40x40', '--allow-blank-frames', '--udf', 'StdDev', '--workers', '0', '--partition-frames', '4', '--output', output],
      {
        onStderr: (chunk, child) => {
          if (!sent && chunk.includes('offline run starting')) {
            sent = true;
            child.kill('SIGINT');
          }
        },
      },
    );
    expect(sent).toBe(true);
    expect(r.code, r.stderr).toBe(130);
    expect(plainLines(r.stderr)).toEqual(['tessera offline: interrupted by SIGINT: nothing written']);
    expect(readdirSync(outDir)).toEqual([]);
  });
});
