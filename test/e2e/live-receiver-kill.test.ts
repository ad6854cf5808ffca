/**
 * End to end with a receiver killed mid-scan (every role a real process on loopback): the
 * merger reports its sector missing within LIVENESS_MS, keeps merging with the sector filled
 * in and marked, and takes a restarted receiver back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LIVENESS_MS } from '../../src/protocol/live.js';
import { waitUntil } from '../merger/live-helpers.js';
import { cleanUp, follow, launch, simulate, spawnReceiver, UDFS } from './pipeline-helpers.js';

afterEach(cleanUp, 30_000);

describe('a receiver process killed and restarted during a continuous acquisition', () => {
  it('a killed receiver is missing in /api/status within LIVENESS_MS; the continuous acquisition goes on with its sector marked; restarted, it rejoins', async () => {
    const scan: [number, number] = [4, 8];
    const p = await launch();
    const sim = simulate(p, scan, ['--fps', '15', '--seed', '13', '--continuous']);
    // the receivers follow the detector's continuous scan; the acquisition joins it at the next repetition
    await waitUntil(() => p.merger.lines.some((l) => l.msg === 'election decided' || l.msg === 'election: round opened'), 20_000, 'the election');
    await new Promise((r) => setTimeout(r, 1500));
    const { id } = await p.client.api.define({ scanShape: scan, udfs: UDFS, mode: 'continuous' });
    const started = await p.client.api.start(id);
    expect(started.state).toBe('running');
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= 16, 30_000, 'frames merged');

    const killedAt = Date.now();
    p.receivers[3]!.kill();
    await waitUntil(async () => (await p.client.api.status()).sectors[3]!.state === 'missing', LIVENESS_MS + 8000, 'sector 3 missing');
    // on the merger's own clock: declared missing as soon as LIVENESS_MS passed without a heartbeat
    // (the test's view adds the load of this shared machine, so its bound is looser)
    const declared = p.merger.lines.find((l) => l.msg === 'sector missing: no heartbeat' && l.sector === 3)!;
    expect(declared.silentMs as number).toBeLessThan(LIVENESS_MS + 1500);
    expect(Date.now() - killedAt).toBeLessThan(LIVENESS_MS + 6000);
    const merged = (await p.client.api.get(id)).progress.framesMerged;
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= merged + 2 * scan[1], 20_000, 'merging goes on');
    const mirror = await follow(p, id, (m) => (m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined)?.some((v) => v === 7) ?? false, 20_000);
    expect(mirror.sectors[3]!.state).toBe('missing');
    expect(sim.running).toBe(true);

    // restart: the receiver comes back, takes the acquisition again and its sector completes chunks
    p.receivers[3] = spawnReceiver(p.config, 3);
    await waitUntil(async () => (await p.client.api.status()).sectors[3]!.state === 'alive', 30_000, 'sector 3 alive again');
    // it is told the acquisition again, joins at the next chunk boundary, and its sector
    // completes frames again: an epoch begun after it rejoined has positions with all 8 sectors
    await waitUntil(() => p.merger.lines.filter((l) => l.msg === 'receiver ready' && l.sector === 3).length >= 2, 20_000, 'sector 3 ready again');
    const epochAtRejoin = (await p.client.api.get(id)).epoch;
    await p.client.waitFor((m) => m.epoch !== null && m.epoch > epochAtRejoin && ((m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined)?.some((v) => v === 8) ?? false), 30_000);
    const status = await p.client.api.status();
    expect(status.acquisition).toMatchObject({ id, state: 'running' });
    expect(status.sectors[3]!.state).toBe('alive');
  }, 150_000);
});
