/**
 * Faults survived, every role a real process on loopback (merger, eight receivers, the
 * continuous simulator). The merger is killed (SIGKILL) in the middle of a continuous
 * acquisition: the receivers keep running (and keep following the camera), reconnect on
 * their own to the restarted merger, which runs a new acquisition whose merged epoch equals
 * the offline engine over the ground truth. (A receiver killed and restarted is
 * test/e2e/live-receiver-kill.test.ts.)
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';
import { completeEpoch } from './faults-helpers.js';
import { cleanUp, expectResults, launch, lossesFromMirror, offline, simulate, spawnRole, UDFS } from './pipeline-helpers.js';

afterEach(cleanUp, 30_000);

describe('the merger killed and restarted during a continuous acquisition', () => {
  it('receivers keep running and reconnect; the new merger runs a new acquisition, exact over a whole epoch', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const seed = 21;
    // a long chunk timeout: on a loaded machine a receiver may fall seconds behind, and a zero-filled chunk is not what this test is about
    const p = await launch({ merger: { chunkTimeoutMs: 20_000, keepEpochs: 16 } });
    const sim = simulate(p, scan, ['--fps', '20', '--seed', String(seed), '--continuous']);
    await waitUntil(() => p.merger.lines.some((l) => l.msg === 'election decided' || l.msg === 'election: round opened'), 30_000, 'the election');
    await new Promise((r) => setTimeout(r, 1500));
    const first = await p.client.api.define({ scanShape: scan, udfs: UDFS, mode: 'continuous' });
    await p.client.api.start(first.id);
    await waitUntil(async () => (await p.client.api.get(first.id)).progress.framesMerged >= 16, 60_000, 'frames merged');

    // kill -9: no goodbye to anyone
    p.merger.kill();
    await p.merger.exited;
    const receivedBefore = p.receivers.map((r) => r.lines.length);
    await new Promise((r) => setTimeout(r, 3000));
    for (const r of p.receivers) expect(r.running, `${r.name} still running`).toBe(true);
    expect(sim.running).toBe(true);
    // they go on working (stats lines) and do not log errors about the missing merger
    expect(p.receivers.every((r, s) => r.lines.length > receivedBefore[s]!)).toBe(true);
    for (const r of p.receivers) expect(r.lines.filter((l) => (l.level ?? 0) >= 50), r.name).toEqual([]);

    // the same config, the same endpoints: the receivers reconnect without being told
    const merger = spawnRole('merger', ['merger', '-c', p.config]);
    await merger.waitForMsg('merger listening', 30_000);
    const client = new TesseraClient({ url: p.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    try {
      await waitUntil(async () => (await client.api.status().catch(() => null))?.sectors.every((s) => s.state === 'alive') ?? false, 30_000, 'eight receivers alive at the new merger');
      expect((await client.api.status()).acquisition).toBeNull();
      // the old acquisition's partials (the receivers still run it) are stale here, never merged
      const second = await client.api.define({ scanShape: scan, udfs: UDFS, mode: 'continuous' });
      expect(second.id).not.toBe(first.id);
      expect((await client.api.start(second.id)).state).toBe('running');
      // a fixed epoch: following 'latest', a lagging client may skip the moment an epoch is complete
      await waitUntil(async () => (await client.api.get(second.id)).epoch >= 1, 60_000, 'epoch 1 under way');
      await client.connect();
      client.subscribe({ acquisition: second.id, epoch: 1 });
      const mirror = await client.waitFor((m) => m.acquisition === second.id && m.epoch === 1 && completeEpoch(m, n), 90_000);
      const losses = lossesFromMirror(mirror, n);
      const ref = await offline(scan, seed, losses);
      try {
        expectResults(mirror, ref);
      } catch (err) {
        const totals = Object.fromEntries(['sum', 'sumsig', 'masks', 'com'].map((u) => [u, Array.from(mirror.get(u, u === 'com' ? 'field' : 'intensity')?.data as ArrayLike<number> ?? []).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0)]));
        console.error(`mismatch on epoch ${mirror.epoch}, version ${mirror.version}: totals ${JSON.stringify(totals)}`);
        throw err;
      }
      expect(merger.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
      await client.api.stop(second.id);
    } finally {
      await client.close().catch(() => {});
    }
  }, 180_000);
});
