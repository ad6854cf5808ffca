/**
 * The page's picked frame from GET /api/acquisitions/:id/frames/:position (a real merger HTTP
 * server and a real browser; the controller serves known frames, as the merger does from the
 * shuffle, see pick.test.ts for the shuffle side): a click on a scan position shows exactly that
 * frame (1860 x 2048, read back from the view's data), and a frame that does not come says why.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TesseraError } from '../../src/errors.js';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { createLogger } from '../../src/log.js';
import type { PickedFrame } from '../../src/merger/http-api.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { SyntheticController } from '../web/synthetic-controller.js';

const CHROMIUM = '/usr/bin/chromium';
const SCAN: [number, number] = [16, 16];
const N = FRAME_HEIGHT * FRAME_WIDTH;

const pixel = (position: number, i: number) => (i * 7 + position * 31 + (i >> 11) * 5) & 0xfff;

/** the same checksum as the page computes: position-weighted, so a shifted or transposed frame differs */
function checksum(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s = (s + values[i]! * ((i % 1009) + 1)) % 2147483647;
  return s;
}

class PickingController extends SyntheticController {
  readonly asked: Array<{ id: string; position: number }> = [];
  pickFrame(id: string, position: number): PickedFrame {
    this.asked.push({ id, position });
    if (position >= 200) throw new TesseraError('TESSERA_ERR_PICK_TIMEOUT', position, 100);
    const data = new Uint16Array(N);
    for (let i = 0; i < N; i++) data[i] = pixel(position, i);
    return { acquisition: id, position, epoch: 0, index: 1000 + position, damage: [0, 0, 5, 0, 0, 0, 0, 0], data };
  }
}

let server: MergerServer;
let browser: Browser;
let controller: PickingController;

describe.skipIf(!existsSync(CHROMIUM))('picked frame from the merger route in the page', () => {
  beforeAll(async () => {
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
    controller = new PickingController();
    server = await buildMergerServer({ controller, stores: controller.registry, staticDir: join(PROJECT_ROOT, 'dist', 'web'), logger: createLogger('web-test', { level: 'warn' }) });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  }, 120_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await server?.close().catch(() => {});
  });

  it('a clicked position shows exactly its frame; a frame that does not come says why', async () => {
    const post = async (path: string, body: unknown) => {
      const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(r.ok, `${path}: ${r.status}`).toBe(true);
      return (await r.json()) as { id: string };
    };
    const { id } = await post('/api/acquisitions', { scanShape: SCAN, mode: 'single', udfs: [{ id: 'sumsig', name: 'SumSigUDF' }] });
    await post(`/api/acquisitions/${id}/start`, {});
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    controller.advance(SCAN[0] * SCAN[1]);
    const store = controller.registry.get(id)!;
    await page.waitForFunction((v) => (window as any).tessera.rendered.version >= v, store.version);

    await page.evaluate(() => (window as any).tessera.setPick(3, 5));
    const position = 3 * SCAN[1] + 5;
    await page.waitForFunction(() => (window as any).tessera.pickView.source?.width === 2048, undefined, { timeout: 30_000 });
    const got = await page.evaluate(() => {
      const v = (window as any).tessera.pickView;
      const values = v.source.values as ArrayLike<number>;
      let s = 0;
      for (let i = 0; i < values.length; i++) s = (s + values[i]! * ((i % 1009) + 1)) % 2147483647;
      return { width: v.source.width, height: v.source.height, length: values.length, checksum: s, first: Array.from(values).slice(0, 4), last: values[values.length - 1], title: v.root.textContent as string };
    });
    const ref = Array.from({ length: N }, (_, i) => pixel(position, i));
    expect(got).toMatchObject({ width: FRAME_WIDTH, height: FRAME_HEIGHT, length: N, first: ref.slice(0, 4), last: ref[N - 1] });
    expect(got.checksum).toBe(checksum(ref));
    expect(got.title).toContain(`frame ${position}`);
    expect(controller.asked).toContainEqual({ id, position });
    // the mirror keeps changing: the page does not fetch the same frame again
    const asked = controller.asked.length;
    await new Promise((r) => setTimeout(r, 500));
    expect(controller.asked.length).toBe(asked);

    // a frame that does not come: the page says why instead of showing one
    await page.evaluate(() => (window as any).tessera.setPick(13, 0));
    await page.waitForFunction(() => document.querySelector('#pick-info')?.textContent?.includes('TESSERA_ERR_PICK_TIMEOUT'), undefined, { timeout: 30_000 });
    expect(await page.evaluate(() => (window as any).tessera.pickView.source)).toBeNull();
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);
});
