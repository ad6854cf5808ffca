import { afterAll, describe, expect, it } from 'vitest';
import { runUdf, runUdfIter } from '../../src/udf/runner.js';
import { WorkerPool } from '../../src/udf/worker-pool.js';
import { AutoUDF } from '../../src/udf/auto.js';
import { ApplyMasksUDF, CoMUDF, FEMUDF, StdDevUDF, SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import { UDF } from '../../src/udf/udf.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { dataset } from './helpers.js';

/** Integer results (sums of integer input) bit-exact; float statistics, whose merge order follows
 *  the threads' completion order, within 1e-12 relative. */
const FLOAT_STATS = new Set(['varsum', 'var', 'std', 'mean']);

function expectSame(a: UDFResults[], b: UDFResults[]): void {
  expect(a.length).toBe(b.length);
  a.forEach((res, i) => {
    expect(Object.keys(res)).toEqual(Object.keys(b[i]!));
    for (const key of Object.keys(res)) {
      const got = res[key]!.data;
      const want = b[i]![key]!.data;
      expect(got.length).toBe(want.length);
      want.forEach((v, k) => {
        if (!FLOAT_STATS.has(key) && (Number.isInteger(v) || Number.isNaN(v))) expect(got[k], `${key}[${k}]`).toBe(v);
        else expect(Math.abs(got[k]! - v), `${key}[${k}]`).toBeLessThanOrEqual(1e-12 * Math.abs(v));
      });
    }
  });
}

describe('worker threads', () => {
  const pool = new WorkerPool({ threads: 2 });
  afterAll(() => pool.close());
  const ds = dataset([4, 6], [8, 16], 3);
  const make = () => [
    new SumUDF(),
    new SumSigUDF(),
    new StdDevUDF(),
    new ApplyMasksUDF({ masks: [{ type: 'disk', cy: 4, cx: 8, r: 3 }, { type: 'sparse', format: 'coo', rows: [1, 2], cols: [3, 15], values: [2, 3] }] }),
    new CoMUDF({ r: 5 }),
  ];

  it('give the same results as the in-process run, with a ROI and corrections', async () => {
    const roi = Uint8Array.from({ length: 24 }, (_, i) => (i % 5 === 0 ? 0 : 1));
    const corrections = { dark: Float32Array.from({ length: 128 }, (_, i) => i % 9), gain: new Float32Array(128).fill(1.25), excludedPixels: [[3, 4]] as Array<[number, number]> };
    expectSame(await runUdf(ds, make(), { pool, roi, corrections }), await runUdf(ds, make(), { roi, corrections }));
    expectSame(await runUdf(ds, make(), { pool }), await runUdf(ds, make()));
  });

  it('run whole-frame UDFs and self-contained map functions', async () => {
    const make2 = () => [new FEMUDF({ center: [4, 8], radIn: 1, radOut: 4 }), new AutoUDF({ fn: (f: Uint16Array) => f[0]! + f[f.length - 1]! })];
    expectSame(await runUdf(ds, make2(), { pool }), await runUdf(ds, make2()));
  });

  it('runUdfIter with workers ends with the runUdf result and yields once per scan row', async () => {
    let steps = 0;
    let last: UDFResults[] = [];
    for await (const s of runUdfIter(ds, make(), { workers: 2 })) {
      steps++;
      last = s.buffers;
    }
    expect(steps).toBe(4);
    expectSame(last, await runUdf(ds, make()));
  });

  it('a UDF class the workers do not know is TESSERA_ERR_UNKNOWN_UDF, across the thread boundary', async () => {
    class LocalOnlyUDF extends UDF {
      getResultBuffers() {
        return { x: this.buffer({ kind: 'nav' }) };
      }
      override processTile(): void {}
    }
    await expect(runUdf(ds, new LocalOnlyUDF(), { pool })).rejects.toMatchObject({ code: 'TESSERA_ERR_UNKNOWN_UDF' });
    // params that cannot cross threads are refused before anything starts
    const closure = 7;
    await expect(runUdf(ds, new AutoUDF({ fn: (f: Uint16Array) => f[0]! * closure }), { pool })).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
  });
});
