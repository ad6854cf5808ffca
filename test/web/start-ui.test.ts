/**
 * What a user sees after `npm start`: `tessera start` (merger, eight receivers, the continuous
 * simulator, the default acquisition) with the page opened in Debian's chromium. The page
 * follows the running acquisition without any action, fills its form from it, shows the
 * default maps (virtual bright and dark field, CoM field and magnitude, frame sums) and the
 * sum image, and its maps equal the merger's results; the screenshot goes to the README.
 */
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { defaultAcquisition } from '../../src/commands/start.js';
import { CLI_PATH, PROJECT_ROOT } from '../../src/paths.js';
import { liveConfig, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const SCAN: [number, number] = [8, 12];
const OUTPUT = join(PROJECT_ROOT, 'test-output');

let start: RoleProcess | null = null;
let pids: number[] = [];
let browser: Browser | null = null;
let client: TesseraClient | null = null;

afterAll(async () => {
  await browser?.close().catch(() => {});
  await client?.close().catch(() => {});
  await start?.stop(15_000).catch(() => start?.kill());
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}, 40_000);

describe.skipIf(!existsSync(CHROMIUM) || !existsSync(CLI_PATH))('the page after npm start', () => {
  it('follows the default acquisition: form, maps equal to the merger, screenshot', async () => {
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
    const base = await freeUdpPorts(8);
    const { path } = await liveConfig({ detector: { udp: { host: '127.0.0.1', basePort: base } }, merger: { chunkTimeoutMs: 5000, keepEpochs: 8 } });
    start = spawnCli('start', ['start', '--config', path, '--scan', `${SCAN[0]}x${SCAN[1]}`, '--fps', '20']);
    // ten processes starting at once on a loaded 2-core machine: one patient budget for all of it
    const started = Date.now() + 120_000;
    const left = () => Math.max(1000, started - Date.now());
    await waitUntil(() => /tessera: (http:\/\/\S+)/.test(start!.stdout) || !start!.running, left(), 'the URL on stdout');
    if (!start.running) throw new Error(`tessera start exited: ${JSON.stringify(await start.exited)}\n${start.rawStderr.slice(-20).join('\n')}`);
    const url = /tessera: (http:\/\/\S+)/.exec(start.stdout)![1]!;
    await start.waitForMsg('pipeline running (Ctrl-C stops)', left());
    pids = start.lines.filter((l) => l.msg === 'started' && typeof l.pid === 'number').map((l) => l.pid as number);
    await start.waitForMsg('default acquisition started: open the URL in a browser', left());

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1500, height: 1250 } });
    // a loaded 2-core machine runs eight receivers, the simulator, the merger and chromium: be patient
    page.setDefaultTimeout(90_000);
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(url);
    await page.waitForSelector('#acq-state[data-state="running"]');

    // the form holds the running acquisition
    const wanted = defaultAcquisition(SCAN);
    expect(await page.inputValue('#scan-h')).toBe(String(SCAN[0]));
    expect(await page.inputValue('#scan-w')).toBe(String(SCAN[1]));
    expect(await page.isChecked('#continuous')).toBe(true);
    const masks = wanted.udfs.find((u) => u.name === 'ApplyMasksUDF')!.params!.masks;
    expect(JSON.parse(await page.inputValue('.udf[data-udf="ApplyMasksUDF"] textarea'))).toEqual(masks);
    expect(await page.evaluate(() => (window as any).tessera.detectors.masksOf('detectors'))).toEqual(masks);

    // the default maps and the sum image; a pass with some positions complete, read at once
    const read = () =>
      page.evaluate(() => {
        const t = (window as any).tessera;
        const m = t.mirror;
        const b = m.get('detectors', 'intensity');
        const done = m.get('_damage', 'sectorsComplete');
        return {
          sig: t.sigView.source !== null,
          epoch: m.epoch as number,
          values: b ? Array.from(b.data as Float64Array) : [],
          complete: done ? Array.from(done.data as Uint8Array) : [],
        };
      });
    let seen = await read();
    const deadline = Date.now() + 90_000;
    while (!(seen.sig && seen.complete.filter((c) => c === 8).length >= 8)) {
      if (Date.now() > deadline) throw new Error(`no pass with 8 complete positions in the page: ${JSON.stringify({ ...seen, values: undefined })}`);
      await new Promise((r) => setTimeout(r, 100));
      seen = await read();
    }
    const maps = await page.evaluate(() => [...(window as any).tessera.navViews.keys()]);
    expect(maps).toEqual(expect.arrayContaining(['sumsig/intensity', 'detectors/intensity#0', 'detectors/intensity#1', 'com/field', 'com/magnitude']));
    expect(await page.evaluate(() => (window as any).tessera.sigView.source.width)).toBe(2048);

    // the bright- and dark-field maps equal the merger's results for that epoch
    const complete = seen.complete.map((c, i) => (c === 8 ? i : -1)).filter((i) => i >= 0);
    client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    await client.connect();
    const status = await client.api.status();
    client.subscribe({ acquisition: status.acquisition!.id, epoch: seen.epoch, buffers: ['detectors', '_damage'] });
    const merged = await client.waitFor((m) => m.epoch === seen.epoch && complete.every((i) => m.get('_damage', 'sectorsComplete')?.data[i] === 8), 60_000);
    const bf = merged.get('detectors', 'intensity')!.data as Float64Array;
    for (const i of complete) {
      expect(seen.values[i * 2], `BF at ${i}`).toBe(bf[i * 2]);
      expect(seen.values[i * 2 + 1], `ADF at ${i}`).toBe(bf[i * 2 + 1]);
    }
    expect(Math.max(...complete.map((i) => bf[i * 2]!))).toBeGreaterThan(0);

    mkdirSync(OUTPUT, { recursive: true });
    await page.evaluate(() => (window as any).tessera.setPick(3, 5));
    // two animation frames: the pick is drawn before the screenshot
    await page.evaluate(() => new Promise((r) => (window as any).requestAnimationFrame(() => (window as any).requestAnimationFrame(r))));
    await page.screenshot({ path: join(OUTPUT, 'ui-npm-start.png'), fullPage: true });
    // the README's picture: refreshed only when asked (a test run must not change tracked files)
    if (process.env.TESSERA_UPDATE_SCREENSHOT === '1') copyFileSync(join(OUTPUT, 'ui-npm-start.png'), join(PROJECT_ROOT, 'docs', 'ui-screenshot.png'));
    expect(pageErrors).toEqual([]);
  }, 420_000);
});
