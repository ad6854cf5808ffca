import { afterAll, describe, expect, it } from 'vitest';
import { runUdf } from '../../src/udf/runner.js';
import { WorkerPool } from '../../src/udf/worker-pool.js';
import { SumUDF, SumSigUDF, ApplyMasksUDF, CoMUDF } from '../../src/udf/lib/index.js';
import { dataset } from './helpers.js';

describe('worker threads', () => {
  const pool = new WorkerPool({ threads: 2 });
  afterAll(() => pool.close());

  it('gives the same results as the in-process run', async () => {
    const ds = dataset([4, 6], [8, 16], 3);
    const make = () => [new SumUDF(), new SumSigUDF(), new ApplyMasksUDF({ masks: [{ type: 'disk', cy: 4, cx: 8, r: 3 }] }), new CoMUDF({ r: 5 })];
    const local = await runUdf(ds, make());
    const threaded = await runUdf(ds, make(), { pool });
    for (let i = 0; i < local.length; i++) {
      for (const key of Object.keys(local[i]!)) {
        expect(Array.from(threaded[i]![key]!.data), key).toEqual(Array.from(local[i]![key]!.data));
      }
    }
  });
});
