/**
 * The browser live view on the real pipeline: `tessera merger` (serving dist/web), eight
 * `tessera receiver` processes and `tessera simulate --continuous`, all real processes on
 * loopback, the UI in Debian's chromium. Start a continuous acquisition from the form (the
 * standard UDFs with the UI's default virtual detectors); the bright-field map in the page
 * equals the merger's results (a second client over WebSocket) and the disk sums over the
 * simulator's ground truth; drag the detector: the merger gets the moved disk and the next
 * pass's map equals the truth under it; stop from the UI; a screenshot (test-output/ui-live-pipeline.png).
 * A `tessera shuffle` with two `tessera worker`s runs beside them: the line under the sector
 * table shows it up with the workers /api/status counts, and missing once it is SIGKILLed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import { CLI_PATH, PROJECT_ROOT } from '../../src/paths.js';
import { freeTcpPort, liveConfig, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const SCAN: [number, number] = [4, 8];
/** positions of a pass that must have arrived complete (all 8 sectors) before comparing: the machine may be loaded and lose datagrams */
const ENOUGH = 6;
const NAV = SCAN[0] * SCAN[1];
const SEED = 21;
const OUTPUT = join(PROJECT_ROOT, 'test-output');
type Disk = { type: 'disk'; cy: number; cx: number; r: number };

const roles: RoleProcess[] = [];
let browser: Browser | null = null;
let client: TesseraClient | null = null;

afterAll(async () => {
  await browser?.close().catch(() => {});
  await client?.close().catch(() => {});
  // the camera first, then the receivers, then the merger; SIGKILL whatever lingers
  for (const group of [roles.filter((r) => r.name === 'simulator'), roles.filter((r) => r.name.startsWith('receiver')), roles.filter((r) => r.name === 'shuffle' || r.name.startsWith('worker')), roles.filter((r) => r.name === 'merger')]) {
    await Promise.all(group.map((r) => r.stop(5000).catch(() => r.kill())));
  }
}, 40_000);

function spawnRole(name: string, args: string[]): RoleProcess {
  const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
  roles.push(r);
  return r;
}

/** Sum of the truth frame's pixels inside the disk (ApplyMasksUDF's rule d <= r). */
function diskSum(frame: Uint16Array, m: Disk): number {
  let s = 0;
  for (let y = Math.max(0, Math.ceil(m.cy - m.r)); y <= Math.min(FRAME_HEIGHT - 1, Math.floor(m.cy + m.r)); y++) {
    for (let x = Math.max(0, Math.ceil(m.cx - m.r)); x <= Math.min(FRAME_WIDTH - 1, Math.floor(m.cx + m.r)); x++) {
      if ((y - m.cy) ** 2 + (x - m.cx) ** 2 <= m.r * m.r) s += frame[y * FRAME_WIDTH + x]!;
    }
  }
  return s;
}

const truth = new SimulatedScan({ scanShape: SCAN, seed: SEED });
const truthFrames = new Map<number, Uint16Array>();
function truthFrame(i: number): Uint16Array {
  let f = truthFrames.get(i);
  if (!f) {
    f = new Uint16Array(FRAME_HEIGHT * FRAME_WIDTH);
    truth.frame(i, f);
    truthFrames.set(i, f);
  }
  return f;
}

/** The page's bright-field map: values, merged positions, and which store they belong to. */
function readBrightField(page: Page) {
  return page.evaluate(() => {
    const t = (window as any).tessera;
    const m = t.mirror;
    const b = m.get('ApplyMasksUDF', 'intensity');
    const done = m.get('_damage', 'sectorsComplete');
    const per = b.shape[2];
    return {
      acquisition: m.acquisition as string,
      epoch: m.epoch as number,
      values: Array.from({ length: b.shape[0] * b.shape[1] }, (_, i) => b.data[i * per] as number),
      complete: Array.from(done.data as Uint8Array),
      shown: Array.from({ length: b.shape[0] * b.shape[1] }, (_, i) => t.navViews.get('ApplyMasksUDF/intensity#0').view.source.values[i * per] as number),
    };
  });
}

type PageState = Awaited<ReturnType<typeof readBrightField>>;

/** Poll the page until `pred` holds of its bright-field state; say what it last was if it never does. */
async function pageState(page: Page, pred: (s: PageState) => boolean, timeoutMs: number, what: string | (() => string)): Promise<PageState> {
  const deadline = Date.now() + timeoutMs;
  let last: PageState | null = null;
  let lastError = '';
  for (;;) {
    try {
      last = await readBrightField(page);
      if (pred(last)) return last;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (Date.now() > deadline) {
      const progress = await page.evaluate(() => JSON.stringify((window as any).tessera.mirror.progress)).catch(() => '?');
      throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}: page at ${last ? `${last.acquisition} epoch ${last.epoch}, complete ${last.complete.join('')}` : lastError}, progress ${progress}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const t0 = Date.now();
/** progress lines, so that a timeout on a loaded machine says how far it got */
const step = (what: string) => console.log(`live-pipeline-ui +${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);

describe.skipIf(!existsSync(CHROMIUM) || !existsSync(CLI_PATH))('live view on the real pipeline', () => {
  it('starts from the UI, shows the merged maps, moves a detector, stops', async () => {
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
    const base = await freeUdpPorts(8);
    // more epochs kept than by default: on a loaded machine the page may be a pass behind when the second client asks for its epoch
    const { path } = await liveConfig({
      detector: { udp: { host: '127.0.0.1', basePort: base } },
      receiver: { statsIntervalMs: 1000 },
      merger: { keepEpochs: 8 },
      shuffle: { slices: `tcp://127.0.0.1:${await freeTcpPort()}`, frames: `tcp://127.0.0.1:${await freeTcpPort()}` },
    });
    const merger = spawnRole('merger', ['merger', '-c', path, '--static', join(PROJECT_ROOT, 'dist', 'web')]);
    const url = String((await merger.waitForMsg('merger listening', 30_000)).url);
    // the shuffle and its workers (idle here: no whole-frame UDF), for the page's shuffle line
    const shuffle = spawnRole('shuffle', ['shuffle', '-c', path]);
    for (let w = 0; w < 2; w++) spawnRole(`worker-${w}`, ['worker', '-c', path]);
    for (let s = 0; s < 8; s++) spawnRole(`receiver-${s}`, ['receiver', '--sector', String(s), '-c', path]);
    client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    await waitUntil(async () => (await client!.api.status()).sectors.every((s) => s.state === 'alive'), 30_000, 'eight receivers alive');
    await waitUntil(async () => (await client!.api.status()).shuffle?.workers === 2, 30_000, 'the shuffle up with two workers');

    step('pipeline up, eight receivers alive');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1500, height: 1300 } });
    // a loaded 2-core machine runs eight receivers, the simulator, the merger and chromium: be patient
    page.setDefaultTimeout(90_000);
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(url);
    await page.waitForSelector('.udf[data-udf="ApplyMasksUDF"] textarea');
    // the page shows the eight live receivers
    await page.waitForFunction(() => document.querySelectorAll('#sectors tr[data-state="alive"]').length === 8, undefined, { timeout: 10_000 });
    // and, below them, the shuffle with the workers the merger counts
    await page.waitForSelector('#shuffle-status[data-state="up"]', { timeout: 10_000 });
    const shuffleUp = (await client.api.status()).shuffle!;
    expect(shuffleUp).toMatchObject({ state: 'up', workers: 2, pid: shuffle.child.pid });
    expect(await page.getAttribute('#shuffle-status', 'data-workers')).toBe(String(shuffleUp.workers));
    expect(await page.innerText('#shuffle-status')).toBe('shuffle: up, 2 workers');

    // the form's defaults: Sum, SumSig, ApplyMasks (a bright-field disk and an annular ring sized to the K2 frame), CoM
    await page.fill('#scan-h', String(SCAN[0]));
    await page.fill('#scan-w', String(SCAN[1]));
    await page.check('#continuous');
    // float32 sums (exact here) halve the 30 MB signal image updates on this loaded machine
    await page.selectOption('.udf[data-udf="SumUDF"] select[name="dtype"]', '"float32"');
    await page.click('#btn-start');
    step('started from the form');
    await page.waitForSelector('#acq-state[data-state="running"]', { timeout: 15_000 });
    const summary = (await client.api.status()).acquisition!;
    expect(summary.udfs.map((u) => u.name).sort()).toEqual(['ApplyMasksUDF', 'CoMUDF', 'SumSigUDF', 'SumUDF']);
    expect(summary.udfs.find((u) => u.name === 'SumUDF')!.params).toEqual({ dtype: 'float32' });
    const masks = summary.udfs.find((u) => u.name === 'ApplyMasksUDF')!.params.masks as Array<Record<string, unknown>>;
    const bf = masks[0] as Disk;
    expect(bf).toEqual({ type: 'disk', cy: 930, cx: 1024, r: 116 });
    expect(masks[1]).toEqual({ type: 'ring', cy: 930, cx: 1024, ri: 233, ro: 620 });
    await waitUntil(() => merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === summary.id).length >= 8, 15_000, 'eight receivers ready');
    spawnRole('simulator', ['simulate', '-c', path, '--scan', `${SCAN[0]}x${SCAN[1]}`, '--frames-before', '8', '--fps', '10', '--seed', String(SEED), '--continuous']);

    // a pass with enough positions merged in the page: its map equals the merger's (a second
    // client, subscribed to that epoch) and the truth
    step('simulator running');
    const seen = await pageState(page, (st) => st.complete.filter((c) => c === 8).length >= ENOUGH, 90_000, `${ENOUGH} positions merged`);
    expect(seen.acquisition).toBe(summary.id);
    expect(seen.shown).toEqual(seen.values);
    const complete = seen.complete.map((c, i) => (c === 8 ? i : -1)).filter((i) => i >= 0);
    const streamErrors: string[] = [];
    client.on('error', (e) => streamErrors.push(`${(e as { code?: string }).code}: ${e.message}`));
    await client.connect();
    client.subscribe({ acquisition: summary.id, epoch: seen.epoch, buffers: ['ApplyMasksUDF', '_damage'] });
    const merged = await client
      .waitFor((m) => m.epoch === seen.epoch && complete.every((i) => m.get('_damage', 'sectorsComplete')?.data[i] === 8), 30_000)
      .catch((err: Error) => {
        throw new Error(`${err.message}; stream errors: ${streamErrors.join('; ') || 'none'}`);
      });
    const mergedBf = merged.get('ApplyMasksUDF', 'intensity')!.data as Float64Array;
    for (const i of complete) {
      expect(seen.values[i], `position ${i}`).toBe(mergedBf[i * 2]);
      expect(seen.values[i], `position ${i} vs truth`).toBe(diskSum(truthFrame(i), bf));
    }
    await client.close();

    step('page map equals the merger and the truth');
    // drag the bright-field disk by its centre, 40 frame pixels to the right
    await page.click('.detectors button[data-mode="pan"]');
    const geo = await page.evaluate(() => {
      const v = (window as any).tessera.sigView;
      const r = v.canvas.getBoundingClientRect();
      return { left: r.left, top: r.top, scale: v.scale as number, ox: v.ox as number, oy: v.oy as number };
    });
    const from = { x: Math.round(geo.left + (bf.cx + 0.5 - geo.ox) * geo.scale), y: Math.round(geo.top + (bf.cy + 0.5 - geo.oy) * geo.scale) };
    const dx = Math.round(40 * geo.scale);
    await page.mouse.move(from.x, from.y);
    await page.mouse.down();
    await page.mouse.move(from.x + dx, from.y, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction(() => (window as any).tessera.detectors.log.length > 0, undefined, { timeout: 10_000 });
    const entry = await page.evaluate(() => (window as any).tessera.detectors.log.at(-1));
    expect(entry.error).toBeNull();
    const moved = entry.masks[0] as Disk;
    expect(moved.r).toBe(bf.r);
    expect(Math.abs(moved.cx - (bf.cx + dx / geo.scale))).toBeLessThanOrEqual(0.1);
    expect(Math.abs(moved.cy - bf.cy)).toBeLessThanOrEqual(1 / geo.scale + 0.1);
    // the merger has the moved disk, and said from which frame
    const after = (await client.api.get(summary.id)).udfs.find((u) => u.name === 'ApplyMasksUDF')!;
    expect((after.params.masks as unknown[])[0]).toEqual(moved);
    expect(entry.appliesFromFrame).toBeGreaterThanOrEqual(NAV);
    await expect.poll(() => page.textContent('.detector-status')).toContain('applied from frame');

    step('detector moved');
    // passes that start after the change: their map is the truth under the moved disk
    const epoch = Math.ceil(entry.appliesFromFrame / NAV);
    const next = await pageState(page, (st) => st.epoch >= epoch && st.complete.filter((c) => c === 8).length >= ENOUGH, 60_000, `epoch ${epoch}: ${ENOUGH} positions merged`);
    let checked = 0;
    for (let i = 0; i < NAV; i++) {
      if (next.complete[i] !== 8) continue;
      expect(next.values[i], `epoch ${epoch}, position ${i}`).toBe(diskSum(truthFrame(i), moved));
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(ENOUGH);
    // the previous passes are in the history
    expect(await page.evaluate(() => (window as any).tessera.history.records.length)).toBeGreaterThanOrEqual(1);

    step('new pass equals the truth under the moved disk');
    mkdirSync(OUTPUT, { recursive: true });
    await page.evaluate(() => (window as any).tessera.setPick(3, 5));
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(OUTPUT, 'ui-live-pipeline.png'), fullPage: true });

    step('screenshot taken');
    await page.click('#btn-stop');
    await page.waitForSelector('#acq-state[data-state="done"]', { timeout: 30_000 });
    expect((await client.api.get(summary.id)).state).toBe('done');

    // the shuffle killed: the page says it is missing (red), as /api/status does
    shuffle.kill();
    await page.waitForSelector('#shuffle-status[data-state="missing"]', { timeout: 30_000 });
    const shuffleGone = (await client.api.status()).shuffle!;
    expect(shuffleGone).toMatchObject({ state: 'missing', workers: 0 });
    const missing = await page.innerText('#shuffle-status');
    expect(missing).toMatch(/^shuffle missing \d+ s/);
    expect(await page.getAttribute('#shuffle-status', 'data-workers')).toBe('0');
    expect(await page.evaluate(() => document.querySelector('#shuffle-status')!.classList.contains('bad'))).toBe(true);
    step(`shuffle killed: "${missing}"`);
    expect(pageErrors).toEqual([]);
    expect(merger.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  }, 300_000);
});
