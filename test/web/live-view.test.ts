/**
 * The browser live view in a real browser (Debian's chromium driven by playwright-core),
 * served by the merger's web server, steering a SyntheticController (real HTTP API, real
 * WebSocket stream, real LiveStores; synthetic frames with known content).
 *
 * Start an acquisition from the form; the navigation maps (the data behind them and the
 * canvas pixels) equal the merged results and an independent reference over the frames;
 * draw a virtual detector on the signal image: the PATCH carries the drawn geometry and the
 * next pass shows the new map; drag it; stop; a screenshot (test-output/ui.png; the README's comes from test/web/start-ui.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { lutOf } from '../../src/web/app/colormaps.js';
import { frameAt, SIG, SyntheticController, type SimpleMask } from './synthetic-controller.js';

const SCAN: [number, number] = [24, 32];
const NAV = SCAN[0] * SCAN[1];
const CHUNK = SCAN[1];
const BF: SimpleMask = { type: 'disk', cy: 96, cx: 128, r: 22 };
const ADF: SimpleMask = { type: 'ring', cy: 96, cx: 128, ri: 30, ro: 90 };
const OUTPUT = join(PROJECT_ROOT, 'test-output');

/** Plain reference: the sum of frame pixels inside a disk or ring (ApplyMasksUDF's rule ri < d <= r). */
function maskSum(frame: Uint16Array, m: SimpleMask): number {
  const [, w] = SIG;
  const ro = m.type === 'disk' ? m.r : m.ro;
  const ri = m.type === 'ring' ? m.ri : -1;
  let s = 0;
  for (let i = 0; i < frame.length; i++) {
    const d2 = (Math.floor(i / w) - m.cy) ** 2 + ((i % w) - m.cx) ** 2;
    if (d2 <= ro * ro && d2 > (ri < 0 ? -1 : ri * ri)) s += frame[i]!;
  }
  return s;
}

const framesCache = new Map<number, Uint16Array>();
function frame(index: number): Uint16Array {
  let f = framesCache.get(index);
  if (!f) {
    f = frameAt(Math.floor(index / SCAN[1]), index % SCAN[1], SCAN);
    framesCache.set(index, f);
  }
  return f;
}

let controller: SyntheticController;
let server: MergerServer;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

describe.skipIf(!existsSync('/usr/bin/chromium'))('browser live view', () => {
beforeAll(async () => {
  execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
  controller = new SyntheticController();
  server = await buildMergerServer({
    controller,
    stores: controller.registry,
    staticDir: join(PROJECT_ROOT, 'dist', 'web'),
    logger: createLogger('web-test', { level: 'warn' }),
  });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1500, height: 1200 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(server.url);
  await page.waitForSelector('.udf[data-udf="ApplyMasksUDF"] textarea');
});

afterAll(async () => {
  controller?.pause();
  await browser?.close().catch(() => {});
  await server?.close().catch(() => {});
});

/** Wait until the page has drawn the current store's newest version. */
async function settled(): Promise<void> {
  const store = controller.registry.get('current')!;
  await page.waitForFunction(
    ([acq, epoch, version]) => {
      const r = (window as any).tessera.rendered;
      // maps and images come on two streams: both at the store's newest version
      return r.acquisition === acq && r.epoch === epoch && r.version === version && r.imagesVersion === version;
    },
    [store.acquisition, store.epoch, store.version] as const,
    { timeout: 15_000 },
  );
  // a view redraw scheduled by that render runs in the same animation frame; one more to be sure
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
}

interface MapReadback {
  values: number[];
  pixels: number[];
  info: { lo: number; hi: number; log: boolean; cmap: string; vector: boolean; width: number; height: number };
}

function readMap(id: string): Promise<MapReadback> {
  return page.evaluate((mapId) => {
    const t = (window as any).tessera;
    const entry = t.navViews.get(mapId);
    if (!entry) throw new Error(`no map ${mapId}; maps: ${[...t.navViews.keys()].join(', ')}`);
    const view = entry.view;
    const src = view.source;
    const values = Array.from({ length: src.width * src.height }, (_, i) => src.values[i * (src.stride ?? 1) + (src.offset ?? 0)]);
    const pixels = Array.from(view.image.getContext('2d').getImageData(0, 0, src.width, src.height).data as Uint8ClampedArray);
    return { values, pixels, info: view.info };
  }, id);
}

/** The canvas shows `values` through the colour map on the view's range; positions >= merged are transparent. */
function expectPixels(map: MapReadback, merged: number): void {
  const lut = lutOf(map.info.cmap as 'viridis');
  const { lo, hi } = map.info;
  expect(hi).toBeGreaterThan(lo);
  let checked = 0;
  for (let i = 0; i < map.values.length; i++) {
    const px = map.pixels.slice(i * 4, i * 4 + 4);
    if (i >= merged) {
      expect(px[3], `position ${i} not merged yet`).toBe(0);
      continue;
    }
    const t = map.info.log ? Math.log1p(Math.max(0, map.values[i]!)) : map.values[i]!;
    const k = Math.max(0, Math.min(255, Math.floor(((t - lo) / (hi - lo)) * 256)));
    expect(px, `pixel ${i} (value ${map.values[i]}, range ${lo}..${hi})`).toEqual([lut[k * 3], lut[k * 3 + 1], lut[k * 3 + 2], 255]);
    checked++;
  }
  expect(checked).toBe(merged);
}

  it('starts an acquisition from the form; maps and signal image equal the merged results and the reference', async () => {
    await page.fill('#scan-h', String(SCAN[0]));
    await page.fill('#scan-w', String(SCAN[1]));
    await page.check('#continuous');
    await page.fill('.udf[data-udf="ApplyMasksUDF"] textarea', JSON.stringify([BF, ADF]));
    await page.click('#btn-start');
    await page.waitForSelector('#acq-state[data-state="running"]');

    const acq = controller.status().acquisition!;
    expect(acq.state).toBe('running');
    expect(acq.scanShape).toEqual(SCAN);
    expect(acq.mode).toBe('continuous');
    expect(acq.udfs.map((u) => u.name).sort()).toEqual(['ApplyMasksUDF', 'CoMUDF', 'SumSigUDF', 'SumUDF']);
    expect(acq.udfs.find((u) => u.name === 'ApplyMasksUDF')!.params).toEqual({ masks: [BF, ADF] });

    const half = NAV / 2;
    expect(controller.advance(half)).toBe(half);
    await settled();
    const store = controller.registry.get('current')!;

    // two streams: the signal image alone on one, everything else on the other
    const split = await page.evaluate(() => {
      const s = (window as any).tessera.streams;
      return { maps: [...s.maps.mirror.buffers.keys()].sort(), images: [...s.images.mirror.buffers.keys()] };
    });
    expect(split.images).toEqual(['SumUDF/intensity']);
    expect(split.maps).toEqual(store.listBuffers().map((b) => b.key).filter((k) => k !== 'SumUDF/intensity').sort());

    const bf = await readMap('ApplyMasksUDF/intensity#0');
    const adf = await readMap('ApplyMasksUDF/intensity#1');
    const live = store.getBuffer('ApplyMasksUDF', 'intensity').data as Float64Array;
    for (let i = 0; i < NAV; i++) {
      const want = i < half ? [maskSum(frame(i), BF), maskSum(frame(i), ADF)] : [0, 0];
      expect([bf.values[i], adf.values[i]], `position ${i}`).toEqual(want);
      expect([live[i * 2], live[i * 2 + 1]]).toEqual(want);
    }
    expectPixels(bf, half);
    expectPixels(adf, half);

    const sumSig = await readMap('SumSigUDF/intensity');
    for (let i = 0; i < half; i++) expect(sumSig.values[i]).toBe(frame(i).reduce((a, v) => a + v, 0));
    expectPixels(sumSig, half);

    // the colour-wheel view of the CoM field and its magnitude map
    const field = store.getBuffer('CoMUDF', 'field').data as Float64Array;
    const magnitude = await readMap('CoMUDF/magnitude');
    for (let i = 0; i < half; i++) expect(magnitude.values[i]).toBeCloseTo(Math.hypot(field[i * 2]!, field[i * 2 + 1]!), 12);
    expect((await readMap('CoMUDF/field')).info.vector).toBe(true);

    // the signal image: the sum of the merged frames, on a log scale
    const sig = await page.evaluate(() => {
      const v = (window as any).tessera.sigView;
      return { w: v.source.width, h: v.source.height, log: v.info.log, values: Array.from(v.source.values as Float64Array) };
    });
    expect([sig.h, sig.w]).toEqual(SIG);
    expect(sig.log).toBe(true);
    const sum = new Float64Array(SIG[0] * SIG[1]);
    for (let i = 0; i < half; i++) frame(i).forEach((v, j) => (sum[j] += v));
    expect(sig.values).toEqual(Array.from(sum));
    expect(pageErrors).toEqual([]);
  });

  it('renders latest-wins: at most one render per animation frame, and it catches up at once', async () => {
    const before = await page.evaluate(() => (window as any).tessera.rendered.renders as number);
    const t0 = Date.now();
    // store changes as fast as timers go (sector counters), for a second
    const store = controller.registry.get('current')!;
    const v0 = store.version;
    let k = 0;
    const churn = setInterval(() => {
      for (let i = 0; i < 5; i++) store.setSectorStatus(i, { datagrams: ++k });
    }, 1);
    // at least a second and a thousand changes (a loaded machine runs fewer timers a second)
    const deadline = Date.now() + 15_000;
    while ((Date.now() - t0 < 1000 || store.version - v0 <= 1000) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    clearInterval(churn);
    expect(store.version - v0).toBeGreaterThan(1000);
    const elapsed = (Date.now() - t0) / 1000;
    const renders = (await page.evaluate(() => (window as any).tessera.rendered.renders as number)) - before;
    // headless chromium animates at 60/s; the stream sends at most 60 updates/s
    expect(renders).toBeGreaterThan(0);
    expect(renders).toBeLessThanOrEqual(Math.ceil(70 * (elapsed + 0.5)));
    const t1 = Date.now();
    await settled();
    // generous for a loaded 2-core machine; a queued backlog of ~500 renders would take far longer
    expect(Date.now() - t1).toBeLessThan(5000);
  });

  it('draws a virtual detector: the PATCH carries the drawn disk, and the next pass shows its map', async () => {
    const store0 = controller.registry.get('current')!;
    const mergedBefore = store0.getProgress().framesMerged;
    expect(mergedBefore).toBeGreaterThan(0);
    expect(mergedBefore).toBeLessThan(NAV);
    await page.click('.detectors button[data-mode="disk"]');
    // where image point (x, y) is on screen
    const geo = await page.evaluate(() => {
      const v = (window as any).tessera.sigView;
      const r = v.canvas.getBoundingClientRect();
      return { left: r.left, top: r.top, scale: v.scale, ox: v.ox, oy: v.oy };
    });
    const screen = (x: number, y: number) => ({ x: geo.left + (x - geo.ox) * geo.scale, y: geo.top + (y - geo.oy) * geo.scale });
    // a disk on the spot at (cy, cx) = (96 - 38.4, 128 - 64): centre, then radius 12 pixels
    const want = { cy: 57.6, cx: 64, r: 12 };
    const a = screen(want.cx + 0.5, want.cy + 0.5);
    const b = screen(want.cx + 0.5 + want.r, want.cy + 0.5);
    const patches = controller.patches.length;
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    await page.mouse.move(b.x, b.y, { steps: 6 });
    await page.mouse.up();
    await expect.poll(() => controller.patches.length, { timeout: 10_000 }).toBe(patches + 1);

    const patch = controller.patches.at(-1)!;
    expect(patch.udfId).toBe('ApplyMasksUDF');
    const masks = patch.params.masks as SimpleMask[];
    expect(masks.slice(0, 2)).toEqual([BF, ADF]);
    expect(masks).toHaveLength(3);
    const drawn = masks[2] as Extract<SimpleMask, { type: 'disk' }>;
    expect(drawn.type).toBe('disk');
    // mouse positions are whole CSS pixels: the geometry is right within one screen pixel
    const tol = 1 / geo.scale + 0.1;
    expect(Math.abs(drawn.cy - want.cy)).toBeLessThanOrEqual(tol);
    expect(Math.abs(drawn.cx - want.cx)).toBeLessThanOrEqual(tol);
    expect(Math.abs(drawn.r - want.r)).toBeLessThanOrEqual(2 * tol);
    // applies from the next chunk, and the page says so
    expect(patch.appliesFromFrame).toBe(Math.ceil(mergedBefore / CHUNK) * CHUNK);
    await expect.poll(() => page.textContent('.detector-status')).toContain(`applied from frame ${patch.appliesFromFrame.toLocaleString('en-US')}`);

    // finish this pass and run the next one: the new detector's map is complete there
    controller.advance(NAV - mergedBefore);
    // (a real pass takes seconds: the page sees its end before the next epoch starts)
    await settled();
    controller.advance(NAV);
    const store1 = controller.registry.get('current')!;
    expect(store1.epoch).toBe(1);
    expect(store1.getProgress().framesMerged).toBe(NAV);
    await settled();
    const vd = await readMap('ApplyMasksUDF/intensity#2');
    const bf = await readMap('ApplyMasksUDF/intensity#0');
    for (let i = 0; i < NAV; i++) {
      expect(vd.values[i], `position ${i}`).toBe(maskSum(frame(i), drawn));
      expect(bf.values[i]).toBe(maskSum(frame(i), BF));
    }
    expectPixels(vd, NAV);
    // the spot is there only in the crystal: the new map has contrast
    expect(Math.max(...vd.values)).toBeGreaterThan(Math.min(...vd.values) + 1000);
    // the finished pass is in the history
    const history = await page.evaluate(() => (window as any).tessera.history.records.map((r: any) => [r.acquisition, r.epoch, r.framesMerged]));
    expect(history).toEqual([[store1.acquisition, 0, NAV]]);
    await expect.poll(() => page.locator('#epochs li img').count()).toBe(1);
  });

  it('moves a detector by dragging it', async () => {
    await page.click('.detectors button[data-mode="pan"]');
    const last = controller.patches.at(-1)!.params.masks as SimpleMask[];
    const disk = last[2] as Extract<SimpleMask, { type: 'disk' }>;
    const geo = await page.evaluate(() => {
      const v = (window as any).tessera.sigView;
      const r = v.canvas.getBoundingClientRect();
      return { left: r.left, top: r.top, scale: v.scale, ox: v.ox, oy: v.oy };
    });
    const screen = (x: number, y: number) => ({ x: geo.left + (x - geo.ox) * geo.scale, y: geo.top + (y - geo.oy) * geo.scale });
    const from = screen(disk.cx + 0.5, disk.cy + 0.5);
    const dx = 20 * geo.scale;
    const patches = controller.patches.length;
    await page.mouse.move(from.x, from.y);
    await page.mouse.down();
    await page.mouse.move(from.x + dx, from.y, { steps: 5 });
    await page.mouse.up();
    await expect.poll(() => controller.patches.length, { timeout: 10_000 }).toBe(patches + 1);
    const moved = (controller.patches.at(-1)!.params.masks as SimpleMask[])[2] as Extract<SimpleMask, { type: 'disk' }>;
    expect(moved.r).toBe(disk.r);
    expect(moved.cy).toBeCloseTo(disk.cy, 0);
    expect(Math.abs(moved.cx - (disk.cx + 20))).toBeLessThanOrEqual(1 / geo.scale + 0.1);
  });

  it('a refused detector change is reverted on the image and offered for the next acquisition', async () => {
    controller.refuseShapeChange = true;
    const before = controller.status().acquisition!.udfs.find((u) => u.id === 'ApplyMasksUDF')!.params.masks as SimpleMask[];
    await page.click('.detectors button[data-mode="ring"]');
    const geo = await page.evaluate(() => {
      const v = (window as any).tessera.sigView;
      const r = v.canvas.getBoundingClientRect();
      return { left: r.left, top: r.top, scale: v.scale, ox: v.ox, oy: v.oy };
    });
    const screen = (x: number, y: number) => ({ x: geo.left + (x - geo.ox) * geo.scale, y: geo.top + (y - geo.oy) * geo.scale });
    const a = screen(170.5, 140.5);
    const b = screen(170.5 + 15, 140.5);
    const log = await page.evaluate(() => (window as any).tessera.detectors.log.length);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    await page.mouse.move(b.x, b.y, { steps: 4 });
    await page.mouse.up();
    await page.waitForFunction((n) => (window as any).tessera.detectors.log.length > n, log);
    const entry = await page.evaluate(() => (window as any).tessera.detectors.log.at(-1));
    expect(entry.error).toMatch(/shape/);
    expect(entry.masks).toHaveLength(before.length + 1);
    // the image shows what runs; the form holds the new set for "Start new"
    expect(await page.evaluate(() => (window as any).tessera.detectors.masksOf('ApplyMasksUDF'))).toEqual(before);
    expect(JSON.parse(await page.inputValue('.udf[data-udf="ApplyMasksUDF"] textarea'))).toEqual(entry.masks);
    expect(controller.status().acquisition!.udfs.find((u) => u.id === 'ApplyMasksUDF')!.params.masks).toEqual(before);
    await page.click('.detectors button[data-mode="pan"]');
    controller.refuseShapeChange = false;
  });

  it('a page opened during an acquisition follows it and fills its form from it', async () => {
    const second = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    try {
      await second.goto(server.url);
      await second.waitForSelector('#acq-state[data-state="running"]');
      const acq = controller.status().acquisition!;
      expect(await second.inputValue('#scan-h')).toBe(String(SCAN[0]));
      expect(await second.inputValue('#scan-w')).toBe(String(SCAN[1]));
      expect(await second.isChecked('#continuous')).toBe(true);
      const masks = acq.udfs.find((u) => u.id === 'ApplyMasksUDF')!.params.masks;
      expect(JSON.parse(await second.inputValue('.udf[data-udf="ApplyMasksUDF"] textarea'))).toEqual(masks);
      // the same maps, from its own subscription
      await second.waitForFunction((v) => (window as any).tessera.rendered.version >= v, controller.registry.get('current')!.version);
      expect(await second.evaluate(() => [...(window as any).tessera.navViews.keys()].sort())).toEqual(await page.evaluate(() => [...(window as any).tessera.navViews.keys()].sort()));
    } finally {
      await second.close();
    }
  });

  it('switches the recording of the running acquisition on and off', async () => {
    expect(await page.textContent('#btn-record')).toBe('record');
    await page.click('#btn-record');
    await page.waitForSelector('#record-state[data-state="recording"]');
    const id = controller.status().acquisition!.id;
    expect(controller.status().acquisition!.record).toMatchObject({ enabled: true, path: `/data/${id}.h5`, state: 'recording' });
    expect(await page.textContent('#record-state')).toContain(`/data/${id}.h5`);
    await page.click('#btn-record');
    await page.waitForSelector('#record-state[data-state="closed"]');
    expect(controller.status().acquisition!.record).toMatchObject({ enabled: false, state: 'closed' });
  });

  it('says how far behind the detector the merger merges, once that is over a second; nothing otherwise', async () => {
    const lag = () => page.evaluate(() => document.querySelector('#acq-state #merge-lag')?.textContent ?? null);
    // the page polls the status every second
    const until = (want: string | null) => page.waitForFunction((w) => (document.querySelector('#acq-state #merge-lag')?.textContent ?? null) === w, want, { timeout: 10_000 });
    controller.mergeLagMs = 7340;
    const chunk = controller.status().acquisition!.chunkSize;
    await until(` · merging 7.3 s behind the detector (chunks of ${chunk} frames: a larger chunk helps)`);
    expect(await page.evaluate(() => getComputedStyle(document.querySelector('#merge-lag')!).color)).toBe('rgb(255, 224, 130)');
    await (await page.$('#acq-state'))!.screenshot({ path: join(OUTPUT, 'ui-merge-lag.png') });
    controller.mergeLagMs = 400;
    await until(null);
    controller.mergeLagMs = null;
    await page.waitForTimeout(1200);
    expect(await lag()).toBeNull();
    expect(await page.textContent('#acq-state')).toContain('running');
  });

  it('shows the shuffle under the sectors as /api/status has it; nothing when it is absent', async () => {
    const line = '#shuffle-status';
    /** the line as the page shows it, once it reflects `state` (the page polls the status every second) */
    const shown = async (state: string | null) => {
      await page.waitForFunction(
        ([sel, st]) => {
          const el = document.querySelector(sel) as HTMLElement | null;
          return !!el && (st === null ? el.hidden : !el.hidden && el.dataset.state === st);
        },
        [line, state] as const,
        { timeout: 10_000 },
      );
      return page.evaluate((sel) => {
        const el = document.querySelector(sel) as HTMLElement;
        return { text: el.innerText, visible: el.offsetParent !== null, bad: el.classList.contains('bad'), workers: el.dataset.workers, color: getComputedStyle(el).color };
      }, line);
    };
    // no shuffle in the deployment: nothing
    controller.shuffle = null;
    expect((await shown(null)).visible).toBe(false);
    controller.shuffle = { state: 'absent', workers: 0, pid: null, restarts: 0, silentMs: null, framesSkipped: 0 };
    await page.waitForTimeout(1500);
    expect((await shown(null)).visible).toBe(false);

    controller.shuffle = { state: 'up', workers: 2, pid: 1234, restarts: 0, silentMs: 300, framesSkipped: 0 };
    const up = await shown('up');
    expect(up).toMatchObject({ text: 'shuffle: up, 2 workers', visible: true, bad: false, workers: '2' });

    controller.shuffle = { state: 'up', workers: 0, pid: 1234, restarts: 0, silentMs: 300, framesSkipped: 1536 };
    const none = await shown('no-worker');
    expect(none).toMatchObject({ text: 'shuffle: up, no worker, 1,536 frames skipped', visible: true, bad: true, workers: '0' });
    expect(none.color).toBe('rgb(239, 154, 154)');

    controller.shuffle = { state: 'missing', workers: 0, pid: 1234, restarts: 1, silentMs: 12_400, framesSkipped: 1536 };
    const missing = await shown('missing');
    expect(missing).toMatchObject({ text: 'shuffle missing 12 s, 1,536 frames skipped, restarted 1×', visible: true, bad: true, workers: '0' });
    expect(missing.color).toBe('rgb(239, 154, 154)');
    // in the sectors panel, below the table
    expect(await page.evaluate(() => document.querySelector('#shuffle-status')!.previousElementSibling?.id)).toBe('sectors');

    // back up (for the screenshot)
    controller.shuffle = { state: 'up', workers: 2, pid: 1240, restarts: 1, silentMs: 200, framesSkipped: 0 };
    expect((await shown('up')).text).toBe('shuffle: up, 2 workers, restarted 1×');
  });

  it('shows the running UI (screenshot), then stops from the UI', async () => {
    mkdirSync(OUTPUT, { recursive: true });
    // a pass in progress, a picked scan position
    controller.advance(NAV / 2 + CHUNK * 3);
    await settled();
    await page.evaluate(() => (window as any).tessera.setPick(6, 9));
    await page.waitForFunction(() => document.querySelector('#pick-info')?.textContent?.includes('scan y 6, x 9'));
    await page.screenshot({ path: join(OUTPUT, 'ui.png'), fullPage: true });

    await page.click('#btn-stop');
    await page.waitForSelector('#acq-state[data-state="done"]');
    expect(controller.status().acquisition!.state).toBe('done');
    expect(await page.isDisabled('#btn-stop')).toBe(true);
    expect(pageErrors).toEqual([]);
  });
});
