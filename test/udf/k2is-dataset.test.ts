import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { K2ISDataSet } from '../../src/udf/k2is-dataset.js';
import { ApplyMasksUDF, CoMUDF, FEMUDF, SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import { planRun, runUdf } from '../../src/udf/runner.js';
import { WorkerPool } from '../../src/udf/worker-pool.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { writeSyntheticRecording } from '../k2is/fixtures.js';

const sameResults = (a: UDFResults[], b: UDFResults[]) =>
  a.forEach((res, i) => {
    for (const key of Object.keys(res)) {
      const x = res[key]!.data;
      const y = b[i]![key]!.data;
      expect(x.length, key).toBe(y.length);
      let diff = 0;
      for (let k = 0; k < x.length; k++) if (!Object.is(x[k], y[k])) diff++;
      expect(diff, `${key}: elements that differ`).toBe(0);
    }
  });

describe('K2ISDataSet (recorded sector files)', () => {
  let root: string;
  let ds: K2ISDataSet;
  let reference: MemoryDataSet;
  const make = () => [
    new SumUDF(),
    new SumSigUDF(),
    new ApplyMasksUDF({ masks: [{ type: 'disk', cy: 930, cx: 1024, r: 300 }, { type: 'point', y: 5, x: 2047 }] }),
    new CoMUDF({ r: 700 }),
  ];

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'tessera-udf-k2is-'));
    const syn = writeSyntheticRecording({ dir: root, frames: 8, flaggedFrom: 2, gtg: { sizeY: 2, sizeX: 3 }, leadingBlocks: [0, 3, 0, 0, 0, 7, 0, 0] });
    ds = K2ISDataSet.open(syn.gtgPath);
    // the reference: whole frames read through the recording's own frame reader, held in memory
    const frames = new Uint16Array(6 * 1860 * 2048);
    for (let k = 0; k < 6; k++) ds.recording.readFrame(k, frames.subarray(k * 1860 * 2048, (k + 1) * 1860 * 2048));
    reference = new MemoryDataSet({ data: frames, navShape: [2, 3], sigShape: [1860, 2048] });
  });
  afterAll(() => {
    ds?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('reads 8 sector slices of whole sector frames by default', () => {
    const plan = planRun(ds, make());
    expect(ds.navShape).toEqual([2, 3]);
    expect(plan.slices.map((s) => s.origin[1])).toEqual([0, 256, 512, 768, 1024, 1280, 1536, 1792]);
    expect(plan.tileShapes[0]).toEqual({ depth: 1, rows: 1860 });
    expect(plan.chunks).toEqual([[0, 3], [3, 6]]);
  });

  it('sector-split results equal the whole-frame single pass over the same frames', async () => {
    const split = await runUdf(ds, make(), { roi: [1, 1, 0, 1, 1, 1] });
    const single = await runUdf(reference, make(), { roi: [1, 1, 0, 1, 1, 1], sigSplit: 'whole', partitionFrames: 6, tileShape: { depth: 1, rows: 1860 } });
    sameResults(split, single);
  });

  it('whole-frame UDFs read whole frames; workers re-open the recording from its descriptor', async () => {
    const fem = () => [new FEMUDF({ center: [930, 1024], radIn: 100, radOut: 400 }), new SumSigUDF()];
    sameResults(await runUdf(ds, fem()), await runUdf(reference, fem()));
    const pool = new WorkerPool({ threads: 2 });
    try {
      sameResults(await runUdf(ds, make(), { pool }), await runUdf(ds, make()));
    } finally {
      await pool.close();
    }
  });
});
