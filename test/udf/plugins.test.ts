import { afterAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { loadUdfPlugins } from '../../src/udf/plugins.js';
import { createUdf, registeredUdfNames } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { WorkerPool } from '../../src/udf/worker-pool.js';
import { dataset } from './helpers.js';

const dir = join(import.meta.dirname, 'fixtures', 'plugins');

describe('UDF plugins', () => {
  let pool: WorkerPool | null = null;
  afterAll(() => pool?.close());

  it('loads .mjs and .ts plugins from a directory and runs them', async () => {
    const names = await loadUdfPlugins(dir);
    expect(names.sort()).toEqual(['MaxFrameUDF', 'ThresholdCountUDF']);
    expect(registeredUdfNames()).toContain('MaxFrameUDF');
    const ds = dataset([2, 3], [4, 8], 5);
    const [count, max] = await runUdf(ds, [createUdf({ name: 'ThresholdCountUDF', params: { threshold: 2000 } }), createUdf({ name: 'MaxFrameUDF', params: {} })]);
    const [h, w] = [4, 8];
    for (let k = 0; k < 6; k++) {
      let c = 0;
      for (let i = 0; i < h * w; i++) if (ds.data[k * h * w + i]! > 2000) c++;
      expect(count!.count!.data[k]).toBe(c);
    }
    for (let i = 0; i < h * w; i++) {
      let m = -Infinity;
      for (let k = 0; k < 6; k++) m = Math.max(m, ds.data[k * h * w + i]!);
      expect(max!.maximum!.data[i]).toBe(m);
    }
    pool = new WorkerPool({ threads: 2, plugins: [dir] });
    const [count2, max2] = await runUdf(ds, [createUdf({ name: 'ThresholdCountUDF', params: { threshold: 2000 } }), createUdf({ name: 'MaxFrameUDF', params: {} })], { pool });
    expect(Array.from(count2!.count!.data)).toEqual(Array.from(count!.count!.data));
    expect(Array.from(max2!.maximum!.data)).toEqual(Array.from(max!.maximum!.data));
  });
});
