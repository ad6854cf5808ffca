/**
 * The merger's recorder (src/merger/recorder.ts, recorder-worker.ts): what one batch costs.
 *
 * - writing a whole image (1860 x 2048 float64, 30 MB: a sum) into the recording: created once,
 *   overwritten in place (the final dataset), appended as a snapshot row; and a 256 x 256
 *   float64 nav map overwritten in place (what every batch writes per nav buffer), each in MB/s
 *   against memcpy of the same bytes;
 * - publishing (copy to <path>.tmp + rename, what keeps a recording readable after SIGKILL) of
 *   a 64 MB and a 256 MB recording, against a Buffer copy of the same bytes in memory;
 * - the live path's share: copying a batch's arrays out of the merged results (slice) against
 *   memcpy (it is the same operation: the ratio says the recorder adds nothing to it).
 *
 * Medians of several runs; the files go to the temp directory (page cache: the disk itself is
 * not measured).
 */
import { copyFileSync, constants as fsConstants, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ReducedFileWriter } from '../src/io/reduced-file.js';
import { measureMemcpy, median, report } from './lib.js';

const SIG = [1860, 2048];
const NAV = [256, 256];
const RUNS = 5;

function timeMs(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-recorder-'));
  try {
    const image = new Float64Array(SIG[0]! * SIG[1]!).map((_, i) => i % 4093);
    const nav = new Float64Array(NAV[0]! * NAV[1]!).map((_, i) => i);
    const imageMB = image.byteLength / 1e6;
    const mem = measureMemcpy(image.byteLength, { runs: 3, minTimeMs: 100 });
    const memMBs = mem.best * 1000;

    const w = await ReducedFileWriter.create(join(dir, 'bench.h5'));
    const create: number[] = [];
    const overwrite: number[] = [];
    const append: number[] = [];
    const navWrite: number[] = [];
    const flush: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      create.push(timeMs(() => w.writeArray(`/udf/sum${r}/intensity`, image, SIG, { dtype: 'float64' })));
      overwrite.push(timeMs(() => w.writeArray(`/udf/sum${r}/intensity`, image, SIG, { dtype: 'float64' })));
      append.push(timeMs(() => w.appendRows('/snapshots/sum/intensity', image, SIG, { dtype: 'float64' })));
      w.writeArray('/udf/sumsig/intensity', nav, NAV, { dtype: 'float64' });
      navWrite.push(timeMs(() => w.writeArray('/udf/sumsig/intensity', nav, NAV, { dtype: 'float64' })));
      flush.push(timeMs(() => w.flush()));
    }
    w.close();
    for (const [name, ms] of [['image create', create], ['image overwrite in place', overwrite], ['image append as snapshot', append]] as const) {
      const mbs = imageMB / (median(ms) / 1000);
      report(`recorder ${name} (30 MB)`, mbs, 'MB/s', mbs / memMBs, 'memcpy');
    }
    const navMBs = nav.byteLength / 1e6 / (median(navWrite) / 1000);
    report('recorder nav map overwrite (256x256 float64)', median(navWrite), 'ms', navMBs / memMBs, 'memcpy MB/s');
    report('recorder flush', median(flush), 'ms');

    for (const mb of [64, 256]) {
      const path = join(dir, `pub-${mb}.h5`);
      const bytes = Buffer.alloc(mb * 1e6, 7);
      writeFileSync(`${path}.writing`, bytes);
      const pub: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        pub.push(
          timeMs(() => {
            copyFileSync(`${path}.writing`, `${path}.tmp`, fsConstants.COPYFILE_FICLONE);
            renameSync(`${path}.tmp`, path);
          }),
        );
      }
      const copy = Buffer.alloc(bytes.length);
      const ref: number[] = [];
      for (let r = 0; r < RUNS; r++) ref.push(timeMs(() => bytes.copy(copy)));
      report(`recorder publish of a ${mb} MB recording`, median(pub), 'ms', median(pub) / median(ref), 'in-memory copy time');
    }

    const slice: number[] = [];
    for (let r = 0; r < RUNS; r++) slice.push(timeMs(() => image.slice()));
    const sliceMBs = imageMB / (median(slice) / 1000);
    report('recorder live-path copy of a 30 MB image (slice)', median(slice), 'ms', sliceMBs / memMBs, 'memcpy MB/s');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
