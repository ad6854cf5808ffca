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

  it('loads .mjs and .mts plugins from a directory and runs them', async () => {
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

describe('UDF plugins in the compiled build (as the CLI roles load them)', () => {
  it('a separate node process loads .mjs natively and .mts through tsx, from a directory outside the project', async () => {
    const { mkdtempSync, cpSync, rmSync, existsSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { spawnSync } = await import('node:child_process');
    const { pathToFileURL } = await import('node:url');
    const { PROJECT_ROOT } = await import('../../src/paths.js');
    const engine = join(PROJECT_ROOT, 'dist', 'src', 'udf', 'index.js');
    expect(existsSync(engine), 'dist/ is missing: run npm run build').toBe(true);
    const tmp = mkdtempSync(join(tmpdir(), 'tessera-plugins-'));
    try {
      cpSync(dir, tmp, { recursive: true });
      const script = `
        const udf = await import(${JSON.stringify(pathToFileURL(engine).href)});
        const names = await udf.loadUdfPlugins(${JSON.stringify(tmp)});
        const data = new Uint16Array(2 * 4 * 8).map((_, i) => (i * 37) % 4096);
        const ds = new udf.MemoryDataSet({ data, navShape: [2], sigShape: [4, 8] });
        const [count, max] = await udf.runUdf(ds, [udf.createUdf({ name: 'ThresholdCountUDF', params: { threshold: 2000 } }), udf.createUdf({ name: 'MaxFrameUDF', params: {} })]);
        console.log(JSON.stringify({ names: names.sort(), count: Array.from(count.count.data), max: Array.from(max.maximum.data).slice(0, 4) }));
      `;
      const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, cwd: tmp });
      expect(res.stderr).toBe('');
      const out = JSON.parse(res.stdout.trim());
      const data = new Uint16Array(64).map((_, i) => (i * 37) % 4096);
      const count = [0, 1].map((k) => data.subarray(k * 32, k * 32 + 32).filter((v) => v > 2000).length);
      const max = [0, 1, 2, 3].map((i) => Math.max(data[i]!, data[32 + i]!));
      expect(out).toEqual({ names: ['MaxFrameUDF', 'ThresholdCountUDF'], count, max });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('a .ts plugin outside an ES module package is refused with a hint (TESSERA_ERR_UDF_PLUGIN)', async () => {
    const { mkdtempSync, copyFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const tmp = mkdtempSync(join(tmpdir(), 'tessera-plugins-cjs-'));
    try {
      copyFileSync(join(dir, 'max-frame.mts'), join(tmp, 'max-frame.ts'));
      await expect(loadUdfPlugins(tmp)).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PLUGIN', message: expect.stringContaining('.mts') });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('a file that exports no UDF class, or a missing path, is TESSERA_ERR_UDF_PLUGIN', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const tmp = mkdtempSync(join(tmpdir(), 'tessera-plugins-bad-'));
    try {
      writeFileSync(join(tmp, 'nothing.mjs'), 'export const x = 1;\n');
      await expect(loadUdfPlugins(tmp)).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PLUGIN' });
      writeFileSync(join(tmp, 'nothing.mjs'), 'this is not javascript\n');
      await expect(loadUdfPlugins(tmp)).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PLUGIN' });
      await expect(loadUdfPlugins(join(tmp, 'missing'))).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PLUGIN' });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
