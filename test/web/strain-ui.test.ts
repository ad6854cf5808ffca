/**
 * Strain maps in the page: an acquisition with StrainMapUDF (its four maps known by
 * construction in the synthetic controller, NaN in the vacuum) shows exx, eyy, exy and rotation
 * by default next to the other maps, in the diverging colour map with a range symmetric about 0
 * (the largest |value|, since the 0.2 %/99.8 % percentiles of under 250 values are the extremes),
 * 0 in the white middle, NaN transparent; the lattice vectors and fit error only under "all maps".
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { lutOf } from '../../src/web/app/colormaps.js';
import { strainAt, SyntheticController, STRAIN_UDF } from './synthetic-controller.js';

const CHROMIUM = '/usr/bin/chromium';
const SCAN: [number, number] = [16, 16];
const NAMES = ['exx', 'eyy', 'exy', 'rotation'] as const;

let server: MergerServer;
let browser: Browser;
let controller: SyntheticController;

describe.skipIf(!existsSync(CHROMIUM))('strain maps in the page', () => {
  beforeAll(async () => {
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
    controller = new SyntheticController();
    server = await buildMergerServer({ controller, stores: controller.registry, staticDir: join(PROJECT_ROOT, 'dist', 'web'), logger: createLogger('web-test', { level: 'warn' }) });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await server?.close().catch(() => {});
  });

  it('shows exx, eyy, exy, rotation by default, diverging and symmetric about 0', async () => {
    const post = async (path: string, body: unknown) => {
      const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(r.ok, `${path}: ${r.status} ${await r.clone().text()}`).toBe(true);
      return (await r.json()) as { id: string };
    };
    const { id } = await post('/api/acquisitions', {
      scanShape: SCAN,
      mode: 'single',
      udfs: [
        { id: 'sumsig', name: 'SumSigUDF' },
        { id: 'strain', name: STRAIN_UDF, params: {} },
      ],
    });
    await post(`/api/acquisitions/${id}/start`, {});
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    controller.advance(SCAN[0] * SCAN[1]);
    const store = controller.registry.get(id)!;
    await page.waitForFunction((v) => (window as any).tessera.rendered.version >= v, store.version);
    // every view has painted the data it holds
    await page.waitForFunction(() => [...(window as any).tessera.navViews.values()].every((e: any) => e.view.info && e.view.info.width > 0));

    const maps = await page.evaluate(() => [...document.querySelectorAll('#nav-grid .view')].map((el) => (el as HTMLElement).dataset.map));
    expect(maps).toEqual(['sumsig/intensity', 'strain/exx', 'strain/eyy', 'strain/exy', 'strain/rotation']);

    const lut = lutOf('rdbu_r');
    for (const name of NAMES) {
      // the reference: the known maps
      const ref = Array.from({ length: SCAN[0] * SCAN[1] }, (_, i) => strainAt(Math.floor(i / SCAN[1]), i % SCAN[1], SCAN)?.[name] ?? NaN);
      const finite = ref.filter(Number.isFinite);
      expect(finite.length).toBeLessThan(250);
      expect(Math.min(...finite)).toBeLessThan(0);
      expect(Math.max(...finite)).toBeGreaterThan(0);
      const half = Math.max(...finite.map(Math.abs));
      const got = await page.evaluate((key) => {
        const { view } = (window as any).tessera.navViews.get(key);
        const img = view.image as HTMLCanvasElement;
        return {
          info: view.info,
          diverging: 'diverging' in view.root.dataset,
          values: Array.from(view.source.values as Float64Array),
          pixels: Array.from(img.getContext('2d')!.getImageData(0, 0, img.width, img.height).data),
        };
      }, `strain/${name}`);
      expect(got.diverging).toBe(true);
      expect(got.info).toMatchObject({ cmap: 'rdbu_r', log: false, lo: -half, hi: half });
      expect(got.values).toEqual(ref);
      const px = (i: number) => got.pixels.slice(i * 4, i * 4 + 4);
      const at = (v: number) => ref.findIndex((r) => r === v);
      // vacuum (NaN): transparent
      expect(px(ref.findIndex((r) => Number.isNaN(r)))[3]).toBe(0);
      // the extremes: the ends of the colour map (blue for the most negative, red for the most positive)
      const lowest = px(at(Math.min(...finite)));
      const highest = px(at(Math.max(...finite)));
      const end = Math.max(...finite) === half ? 255 : Math.floor(((Math.max(...finite) + half) / (2 * half)) * 256);
      expect(highest.slice(0, 3)).toEqual(Array.from(lut.subarray(Math.min(255, end) * 3, Math.min(255, end) * 3 + 3)));
      expect(highest[0]!).toBeGreaterThan(highest[2]!);
      expect(lowest[2]!).toBeGreaterThan(lowest[0]!);
      if (Math.min(...finite) === -half) expect(lowest.slice(0, 3)).toEqual(Array.from(lut.subarray(0, 3)));
      // 0 (the centre row or column of exx, eyy) in the white middle
      const zero = at(0);
      if (zero >= 0) for (const c of px(zero).slice(0, 3)) expect(c).toBeGreaterThanOrEqual(240);
    }

    // the lattice vectors and fit error: with "all maps"
    await page.check('.maps .panel-head input[type="checkbox"]');
    await page.waitForFunction(() => document.querySelector('#nav-grid .view[data-map="strain/fitError"]') !== null);
    const all = await page.evaluate(() => [...document.querySelectorAll('#nav-grid .view')].map((el) => (el as HTMLElement).dataset.map));
    expect(all).toEqual(expect.arrayContaining(['strain/a#0', 'strain/a#1', 'strain/fitError']));
    expect(await page.evaluate(() => 'diverging' in (document.querySelector('#nav-grid .view[data-map="strain/fitError"]') as HTMLElement).dataset)).toBe(false);
    expect(errors).toEqual([]);
    await page.close();
  });
});
