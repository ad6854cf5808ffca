/**
 * ImageView on a full-size K2 IS signal image (1860 x 2048) in a real browser: wheel zoom
 * keeps the point under the cursor, drag pans, the readout shows the value of the pixel
 * under the cursor, manual and automatic contrast, colour maps, fit on double-click.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { lutOf } from '../../src/web/app/colormaps.js';
import { SyntheticController } from './synthetic-controller.js';

const CHROMIUM = '/usr/bin/chromium';
const [H, W] = [1860, 2048];
/** the test image: values 0..4095, uniformly spread */
const valueAt = (y: number, x: number) => (y * 7 + x * 3) % 4096;

let server: MergerServer;
let browser: Browser;
let page: Page;

describe.skipIf(!existsSync(CHROMIUM))('image view on a 1860 x 2048 image', () => {
  beforeAll(async () => {
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
    const controller = new SyntheticController();
    server = await buildMergerServer({ controller, stores: controller.registry, staticDir: join(PROJECT_ROOT, 'dist', 'web'), logger: createLogger('web-test', { level: 'warn' }) });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    await page.goto(server.url);
    await page.waitForFunction(() => (window as any).tessera !== undefined);
    await page.evaluate(
      ([h, w]) => {
        const values = new Float32Array(h * w);
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) values[y * w + x] = (y * 7 + x * 3) % 4096;
        const v = (window as any).tessera.sigView;
        v.setLog(false);
        v.setSource({ width: w, height: h, values });
      },
      [H, W],
    );
    await page.waitForFunction((w) => (window as any).tessera.sigView.info?.width === w, W);
  });

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await server?.close().catch(() => {});
  });

  const view = () =>
    page.evaluate(() => {
      const v = (window as any).tessera.sigView;
      const r = v.canvas.getBoundingClientRect();
      return { left: r.left, top: r.top, width: r.width, height: r.height, scale: v.scale as number, ox: v.ox as number, oy: v.oy as number, info: v.info, paintCost: v.paintCost as number };
    });
  const nextFrame = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(null)))));

  it('fits the image, with automatic contrast over its values', async () => {
    const v = await view();
    expect(v.scale).toBeCloseTo(Math.min(v.width / W, v.height / H), 6);
    // uniform values 0..4095: the 0.2 % and 99.8 % points of a sample
    expect(v.info.lo).toBeGreaterThanOrEqual(0);
    expect(v.info.lo).toBeLessThan(40);
    expect(v.info.hi).toBeGreaterThan(4050);
    expect(v.info.hi).toBeLessThanOrEqual(4095);
    console.log(`paint of a ${H} x ${W} float32 image: ${v.paintCost.toFixed(1)} ms`);
  });

  it('zooms around the cursor, pans by dragging, reads out the value under the cursor', async () => {
    let v = await view();
    // whole CSS pixels: pointer events carry integer coordinates
    const sx = Math.round(v.left + v.width * 0.6);
    const sy = Math.round(v.top + v.height * 0.4);
    const before = { x: (sx - v.left) / v.scale + v.ox, y: (sy - v.top) / v.scale + v.oy };
    await page.mouse.move(sx, sy);
    for (let i = 0; i < 4; i++) await page.mouse.wheel(0, -500);
    await nextFrame();
    v = await view();
    expect(v.scale).toBeGreaterThan(4);
    const after = { x: (sx - v.left) / v.scale + v.ox, y: (sy - v.top) / v.scale + v.oy };
    expect(after.x).toBeCloseTo(before.x, 2);
    expect(after.y).toBeCloseTo(before.y, 2);

    // drag 120 px left and 60 px up: the image moves with the pointer
    await page.mouse.down();
    await page.mouse.move(sx - 120, sy - 60, { steps: 4 });
    await page.mouse.up();
    const panned = await view();
    expect(panned.ox - v.ox).toBeCloseTo(120 / v.scale, 3);
    expect(panned.oy - v.oy).toBeCloseTo(60 / v.scale, 3);

    // the readout names the pixel under the cursor and its value
    const mx = Math.round(panned.left + 20 * panned.scale);
    const my = Math.round(panned.top + 10 * panned.scale);
    const px = { y: Math.floor((my - panned.top) / panned.scale + panned.oy), x: Math.floor((mx - panned.left) / panned.scale + panned.ox) };
    await page.mouse.move(mx, my);
    expect(await page.textContent('.sig-view .readout')).toBe(`y ${px.y}, x ${px.x}: ${valueAt(px.y, px.x)}`);

    await page.dblclick('.sig-view canvas');
    await nextFrame();
    const fitted = await view();
    expect(fitted.scale).toBeCloseTo(Math.min(fitted.width / W, fitted.height / H), 6);
  });

  it('maps values through the chosen colour map on a manual range', async () => {
    await page.selectOption('.sig-view select', 'greys');
    await page.fill('.sig-view input.range >> nth=0', '100');
    await page.fill('.sig-view input.range >> nth=1', '3000');
    await page.press('.sig-view input.range >> nth=1', 'Enter');
    await page.waitForFunction(() => {
      const i = (window as any).tessera.sigView.info;
      return i.cmap === 'greys' && i.lo === 100 && i.hi === 3000;
    });
    const lut = lutOf('greys');
    const samples: Array<[number, number]> = [[0, 0], [0, 33], [5, 7], [931, 1024], [1859, 2047], [400, 1500], [1000, 10]];
    const got = await page.evaluate((pts) => {
      const ctx = (window as any).tessera.sigView.image.getContext('2d');
      return pts.map(([y, x]) => Array.from(ctx.getImageData(x, y, 1, 1).data as Uint8ClampedArray));
    }, samples);
    samples.forEach(([y, x], i) => {
      const k = Math.max(0, Math.min(255, Math.floor(((valueAt(y, x) - 100) / 2900) * 256)));
      expect(got[i], `pixel (${y}, ${x}) = ${valueAt(y, x)}`).toEqual([lut[k * 3], lut[k * 3 + 1], lut[k * 3 + 2], 255]);
    });
    // back to automatic contrast
    await page.check('.sig-view .view-bar label:has-text("auto") input');
    await page.waitForFunction(() => (window as any).tessera.sigView.info.hi > 4000);
  });
});
