/**
 * Recording and replay from the browser, on the real pipeline (`tessera merger`, eight
 * `tessera receiver` processes, `tessera simulate`, then `tessera replay`; all real processes,
 * the UI in Debian's chromium):
 *
 * 1. start a single scan from the form, switch recording on with the page's **record** button,
 *    and off again with **stop recording** while the scan runs; the file appears in the data
 *    directory and reads back (readReducedFile) with the merged results the page showed at
 *    every position the file says was merged by then (and only those);
 * 2. `tessera replay` of that file: the page shows the time slider and, at the end, the file's
 *    final maps (the live page's values at the recorded positions); moving the slider to a time between two recorded rows shows exactly the
 *    positions whose recorded merge time is at or before it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { CLI_PATH, PROJECT_ROOT } from '../../src/paths.js';
import { waitUntil } from '../merger/live-helpers.js';
import { launch, Processes, simulate } from '../e2e/recording.helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const SCAN: [number, number] = [6, 8];
const NAV = SCAN[0] * SCAN[1];
/** CoM's gradients depend on the neighbours merged so far */
const NEIGHBOURHOOD = new Set(['divergence', 'curl']);

const ps = new Processes();
let browser: Browser | null = null;

afterAll(async () => {
  for (const p of browser?.contexts().flatMap((c) => c.pages()) ?? []) await p.close().catch(() => {});
  await browser?.close().catch(() => {});
  await ps.cleanup();
}, 40_000);

const t0 = Date.now();
const step = (what: string) => console.log(`record-replay-ui +${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);

/** Every nav buffer of the page's mirror (not the damage map) and the damage map, as plain arrays. */
function readNav(page: Page) {
  return page.evaluate(() => {
    const m = (window as any).tessera.mirror;
    const nav: Record<string, number[]> = {};
    for (const b of m.buffers.values()) if (b.kind === 'nav' && b.udf !== '_damage') nav[b.key] = Array.from(b.data as ArrayLike<number>);
    return {
      acquisition: m.acquisition as string,
      state: m.state?.state as string | undefined,
      framesMerged: m.progress?.framesMerged as number | undefined,
      nav,
      complete: Array.from(m.get('_damage', 'sectorsComplete').data as Uint8Array),
      blocks: Array.from(m.get('_damage', 'blocksMissing').data as ArrayLike<number>),
    };
  });
}

describe.skipIf(!existsSync(CHROMIUM) || !existsSync(CLI_PATH))('recording and replay in the browser', () => {
  it('records from the UI, reads the file back, replays it with a time slider', async () => {
    execFileSync(process.execPath, [join(PROJECT_ROOT, 'scripts/build-web.mjs')], { stdio: 'pipe' });
    const p = await launch(ps);
    step('pipeline up');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    page.setDefaultTimeout(60_000);
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(p.url);
    await page.waitForSelector('.udf[data-udf="ApplyMasksUDF"] textarea');
    // a live merger: no replay slider
    expect(await page.isHidden('#replay')).toBe(true);
    await page.fill('#scan-h', String(SCAN[0]));
    await page.fill('#scan-w', String(SCAN[1]));
    // no 30 MB signal image: the page stays well ahead of the scan on a loaded machine (this test is about the rows)
    await page.uncheck('input.udf-enabled[data-udf="SumUDF"]');
    await page.click('#btn-start');
    await page.waitForSelector('#acq-state[data-state="running"]', { timeout: 15_000 });
    const id = (await p.client.api.status()).acquisition!.id;
    await waitUntil(() => p.merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 15_000, 'eight receivers ready');

    // record on from the page
    await page.click('#btn-record');
    await page.waitForSelector('#record-state[data-state="recording"]', { timeout: 15_000 });
    expect(await page.textContent('#btn-record')).toBe('stop recording');
    simulate(ps, p, SCAN, ['--fps', '5', '--seed', '31']);
    step('recording, simulator running');

    // two rows in, off again from the page while the scan goes on
    await page.waitForFunction((n) => ((window as any).tessera.mirror.progress?.framesMerged ?? 0) >= n, 2 * SCAN[1]);
    await page.click('#btn-record');
    await page.waitForSelector('#record-state[data-state="closed"]', { timeout: 30_000 });
    const stoppedAt = await page.evaluate(() => (window as any).tessera.mirror.progress.framesMerged as number);
    step(`recording stopped at ${stoppedAt} frames merged`);
    const record = (await p.client.api.get(id)).record;
    expect(record).toMatchObject({ enabled: false, state: 'closed', error: null });
    expect(await page.textContent('#btn-record')).toBe('record');
    expect(await page.textContent('#record-state')).toContain(record.path!);

    // the scan goes on to the end without the recording
    await page.waitForSelector('#acq-state[data-state="done"]', { timeout: 60_000 });
    const shown = await readNav(page);
    expect(shown.acquisition).toBe(id);

    // the file: in the data directory, the acquisition's name, readable
    expect(readdirSync(p.dataDir).filter((f) => f.endsWith('.h5'))).toEqual([`${id}.h5`]);
    expect(record.path).toBe(join(p.dataDir, `${id}.h5`));

    const file = await readReducedFile(record.path!);
    expect(file.attrs).toMatchObject({ format: 'tessera-reduced/1', acquisition: id, final_state: 'recording stopped' });
    expect(file.navShape).toEqual(SCAN);
    const firstMergedAt = Array.from(file.datasets.merged_at!.data as Float64Array);
    const inFile = firstMergedAt.map((t, k) => (Number.isNaN(t) ? -1 : k)).filter((k) => k >= 0);
    // the file has what was merged when the recording stopped (the page saw at least that), not the rest of the scan
    expect(inFile.length).toBeGreaterThanOrEqual(2 * SCAN[1]);
    expect(inFile.length).toBeLessThan(NAV);
    expect(inFile.length).toBeLessThanOrEqual(stoppedAt);
    // at every recorded position the file equals the page: all UDFs' nav results and the damage
    let compared = 0;
    for (const [key, values] of Object.entries(shown.nav)) {
      const [udfId, name] = key.split('/') as [string, string];
      if (NEIGHBOURHOOD.has(name)) continue;
      const b = file.udfs[udfId]?.buffers[name];
      expect(b, `${key} in the file`).toBeDefined();
      const per = values.length / NAV;
      for (const k of inFile) {
        for (let j = 0; j < per; j++) expect(b!.data[k * per + j], `${key} at position ${k}`).toBe(values[k * per + j]);
      }
      compared++;
    }
    expect(compared).toBeGreaterThanOrEqual(3);
    const damage = file.datasets.damage!.data;
    for (const k of inFile) expect(damage[k], `damage at ${k}`).toBe(shown.complete[k]);
    step(`file equals the page at ${inFile.length} positions`);

    // 2. replay of the recording
    const replay = ps.spawn('replay', ['replay', record.path!, '--port', '0', '--static', join(PROJECT_ROOT, 'dist', 'web')]);
    const url = String((await replay.waitForMsg('replay listening', 30_000)).url);
    const timeline = (await (await fetch(`${url}/api/replay`)).json()) as { start: number; end: number };
    const rp = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    rp.setDefaultTimeout(30_000);
    rp.on('pageerror', (e) => pageErrors.push(e.message));
    await rp.goto(url);
    await rp.waitForSelector('#replay:not([hidden])');
    expect(Number(await rp.getAttribute('#replay-time', 'max'))).toBe(timeline.end - timeline.start);
    // the end: the file's final maps
    // (a recording switched off mid-run replays its end as still running, with the file's final state as the message)
    const atTheEnd = () => {
      const st = (window as any).tessera.mirror.state;
      return st?.state === 'running' && st?.message === 'recording stopped';
    };
    await rp.waitForFunction(atTheEnd);
    const mergedAt = firstMergedAt;
    const recorded = mergedAt.map((m) => (Number.isNaN(m) ? 0 : 1));
    // positions merged in the page's sense: some sector or block arrived (what the maps draw)
    const mergedIn = (st: Awaited<ReturnType<typeof readNav>>) => st.complete.map((c, k) => (c > 0 || st.blocks[k]! > 0 ? 1 : 0));
    const atEnd = await readNav(rp);
    expect(mergedIn(atEnd)).toEqual(recorded);
    expect(Object.keys(atEnd.nav).sort()).toEqual(Object.keys(shown.nav).sort());
    for (const [key, values] of Object.entries(atEnd.nav)) {
      const [udfId, name] = key.split('/') as [string, string];
      // at every position the file says was merged, the replay shows the file's value (positions
      // never merged are not compared: the file's derived maps such as CoM curl have values there)
      const inFileData = Array.from(file.udfs[udfId]!.buffers[name]!.data as ArrayLike<number>);
      const e = inFileData.length / recorded.length;
      expect(values.length, key).toBe(inFileData.length);
      expect(values.filter((_, i) => recorded[Math.floor(i / e)]), `${key} at the end`).toEqual(inFileData.filter((_, i) => recorded[Math.floor(i / e)]));
    }
    for (const k of inFile) expect(atEnd.complete[k]).toBe(shown.complete[k]);

    // an earlier time, halfway between two recorded merge times: exactly the positions merged by then
    const times = [...new Set(inFile.map((k) => mergedAt[k]!))].sort((a, b) => a - b);
    expect(times.length).toBeGreaterThanOrEqual(2);
    const i = Math.floor((times.length - 1) / 2);
    const t = Math.round((times[i]! + times[i + 1]!) / 2 - timeline.start);
    const expected = mergedAt.map((m) => (!Number.isNaN(m) && m <= timeline.start + t ? 1 : 0));
    const count = expected.reduce<number>((a, b) => a + b, 0);
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThan(inFile.length);
    await rp.fill('#replay-time', String(t));
    await rp.waitForFunction(() => (window as any).tessera.mirror.state?.state === 'running' && (window as any).tessera.mirror.state?.message === null);
    const earlier = await readNav(rp);
    expect(mergedIn(earlier)).toEqual(expected);
    expect(await rp.evaluate(() => (window as any).tessera.replay.t)).toBe(t);
    expect(await rp.textContent('#replay-label')).toContain(`${(t / 1000).toFixed(1)} s`);
    // the maps show the recorded values where merged by then, and nothing else
    const sumsig = Object.keys(earlier.nav).find((k) => /sumsig/i.test(k))!;
    const ref = file.udfs[sumsig.split('/')[0]!]!.buffers.intensity!.data;
    expect(earlier.nav[sumsig]).toEqual(expected.map((e, k) => (e ? ref[k]! : 0)));
    const drawn = await rp.evaluate((key) => {
      const v = (window as any).tessera.navViews.get(key).view;
      return Array.from(v.source.valid as Uint8Array);
    }, sumsig);
    expect(drawn).toEqual(expected);
    // back to the end with the button
    await rp.click('#replay button');
    await rp.waitForFunction(atTheEnd);
    expect(mergedIn(await readNav(rp))).toEqual(recorded);
    expect(pageErrors).toEqual([]);
    step('replay: end, an earlier time, the end again');
  }, 240_000);
});
