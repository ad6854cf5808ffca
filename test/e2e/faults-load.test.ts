/**
 * Load: 20 WebSocket clients on the real pipeline (merger, eight receivers, continuous
 * simulator, all processes): 6 slow ones that subscribe to everything (the 15 MB images too)
 * and then read nothing, 2 fast ones that take everything, 12 fast ones that take the maps.
 * The merged results stay exact (a whole epoch equal to the offline engine over the ground
 * truth, for a full client and, map by map, for every map client), every fast client keeps
 * getting updates while the slow ones are stuck, and the merger holds at most one update per
 * slow client (its send buffers stay bounded, /metrics shows them waiting).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { encodeMessage, WS_PROTOCOL_VERSION } from '../../src/protocol/ws-messages.js';
import { waitUntil } from '../merger/live-helpers.js';
import { completeEpoch, metric } from './faults-helpers.js';
import { cleanUp, expectResults, launch, lossesFromMirror, offline, simulate, UDFS } from './pipeline-helpers.js';

let sockets: WebSocket[] = [];
let extra: TesseraClient[] = [];
afterEach(async () => {
  for (const s of sockets) s.terminate();
  sockets = [];
  for (const c of extra) await c.close().catch(() => {});
  extra = [];
  await cleanUp();
}, 30_000);

/** waitFor, with the mirror's state in the error. */
async function epochComplete(c: TesseraClient, id: string, n: number, what: string) {
  try {
    return await c.waitFor((m) => m.acquisition === id && m.epoch === 1 && completeEpoch(m, n), 120_000);
  } catch (err) {
    const m = c.mirror;
    const complete = m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined;
    throw new Error(`${what}: ${(err as Error).message}; mirror acquisition ${m.acquisition} epoch ${m.epoch} progress ${JSON.stringify(m.progress)} complete ${complete ? Array.from(complete).join('') : 'none'}`);
  }
}

describe('20 WebSocket clients, 6 of them reading nothing, while the pipeline runs', () => {
  it('results exact, fast clients keep getting updates, slow clients cost one update each', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const seed = 51;
    // epochs kept long enough for every client to see epoch 1 complete on a loaded machine
    const p = await launch({ merger: { chunkTimeoutMs: 20_000, keepEpochs: 16 } });
    simulate(p, scan, ['--fps', '15', '--seed', String(seed), '--continuous']);
    await waitUntil(() => p.merger.lines.some((l) => l.msg === 'election decided' || l.msg === 'election: round opened'), 30_000, 'the election');
    await new Promise((r) => setTimeout(r, 1500));
    const { id } = await p.client.api.define({ scanShape: scan, udfs: UDFS, mode: 'continuous' });
    await p.client.api.start(id);

    // 6 slow clients: subscribe to everything, then stop reading (the TCP window fills, then the merger's buffer)
    const wsUrl = p.url.replace('http', 'ws') + '/ws';
    for (let k = 0; k < 6; k++) {
      const ws = new WebSocket(wsUrl);
      sockets.push(ws);
      await new Promise((r) => ws.once('open', r));
      ws.send(encodeMessage({ v: WS_PROTOCOL_VERSION, type: 'subscribe', acquisition: id } as never));
      ws.pause();
    }
    // 14 fast clients
    const make = () => {
      const c = new TesseraClient({ url: p.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
      extra.push(c);
      return c;
    };
    const full = [make(), make()];
    const maps = Array.from({ length: 12 }, make);
    // a fixed epoch (1): following 'latest', a lagging client may skip the moment an epoch is complete
    await waitUntil(async () => (await p.client.api.get(id)).epoch >= 1, 60_000, 'epoch 1 under way');
    for (const c of full) {
      await c.connect();
      c.subscribe({ acquisition: id, epoch: 1 });
    }
    for (const c of maps) {
      await c.connect();
      c.subscribe({ acquisition: id, epoch: 1, buffers: ['masks', 'com', '_damage'], maxRate: 20 });
    }

    // wait until the slow clients are really stuck: each has an update it cannot take
    await waitUntil(async () => metric(await (await fetch(`${p.url}/metrics`)).text(), 'tessera_ws_clients_waiting') >= 6, 60_000, 'six clients stuck');
    const stuckAt = full.concat(maps).map((c) => c.received.updates);

    // every fast client goes on: updates after the slow ones got stuck, and a whole epoch, exact
    const mirror = await epochComplete(full[0]!, id, n, 'full client');
    const losses = lossesFromMirror(mirror, n);
    const reference = await offline(scan, seed, losses);
    // the comparison means something only if most of the data arrived
    expect(losses.size, 'sector frames with lost blocks').toBeLessThan((n * 8) / 4);
    expectResults(mirror, reference);
    const masksRef = reference[2]!.intensity!.data as ArrayLike<number>;
    for (const c of maps) {
      const m = await epochComplete(c, id, n, 'map client');
      const got = m.get('masks', 'intensity')!.data as ArrayLike<number>;
      expect(Array.from(got)).toEqual(Array.from(masksRef));
      expect(m.get('sum', 'intensity')).toBeUndefined(); // the filter held
    }
    // epoch 1 is finished: follow the running epochs for a while, every fast client keeps getting updates
    const fast = full.concat(maps);
    for (const c of fast) c.subscribe({ acquisition: id, maxRate: 20, ...(maps.includes(c) ? { buffers: ['masks', 'com', '_damage'] } : {}) });
    const before = fast.map((c) => c.received.updates);
    await waitUntil(() => fast.every((c, k) => c.received.updates >= before[k]! + 3), 60_000, 'three more updates for every fast client');
    const now = fast.map((c) => c.received.updates);

    // the slow clients cost one update each: the merger's send buffers hold at most one update per client
    const text = await (await fetch(`${p.url}/metrics`)).text();
    const stats = { clients: metric(text, 'tessera_ws_clients'), waiting: metric(text, 'tessera_ws_clients_waiting'), closedSlow: metric(text, 'tessera_ws_closed_slow_total'), maxBuffered: metric(text, 'tessera_ws_max_buffered_bytes'), buffered: metric(text, 'tessera_ws_buffered_bytes'), rss: metric(text, 'process_resident_memory_bytes') };
    console.log(`load: ${JSON.stringify(stats)}; ${losses.size} sector frames of epoch 1 with lost blocks; fast client updates ${Math.min(...now)}..${Math.max(...now)} (stuck at ${Math.min(...stuckAt)}..${Math.max(...stuckAt)})`);
    // every slow client still holds its one update, or was closed for reading nothing (after stallTimeoutMs, 30 s); no fast one was
    expect(stats.clients + stats.closedSlow).toBe(20);
    expect(stats.waiting + stats.closedSlow).toBeGreaterThanOrEqual(6);
    expect(stats.closedSlow).toBeLessThanOrEqual(6);
    // one snapshot of everything (two 1860 x 2048 float64 images and the maps) is < 64 MB
    expect(stats.maxBuffered).toBeLessThan(64 * 1024 * 1024);
    expect(stats.buffered).toBeLessThan(6 * 64 * 1024 * 1024);
    expect(p.merger.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  }, 240_000);
});
