/**
 * The receiver's link to the merger, on a real `tessera receiver` process and real ZeroMQ
 * sockets (no UDP traffic needed): it heartbeats with no merger there, is found by a merger
 * that starts late, survives garbage on the control socket (counted, dropped), refuses
 * acquisitions it cannot run with the error code, and reconnects to a restarted merger
 * (heartbeats resume) while counting what it could not send meanwhile.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import * as zmq from 'zeromq';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { encodeLive, LIVE_PROTOCOL_VERSION } from '../../src/protocol/live.js';
import { acquireMessage, standardLiveUdfs, TestMerger } from './live-helpers.js';
import { freeUdpPorts, spawnCli, writeConfig, type RoleProcess } from './process-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tessera-link-'));
const procs: RoleProcess[] = [];
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const p of procs.splice(0)) p.kill();
  for (const c of closers.splice(0)) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A TCP endpoint on 127.0.0.1 that nothing listens on right now. */
async function freeEndpoint(): Promise<string> {
  const s = new zmq.Pull({ linger: 0 });
  await s.bind('tcp://127.0.0.1:*');
  const e = s.lastEndpoint!;
  s.close();
  await new Promise((r) => setTimeout(r, 50));
  return e;
}

describe('receiver <-> merger link (process, real ZeroMQ)', () => {
  it('no merger yet, then a merger; garbage counted and dropped; refusals with codes; merger restart: heartbeats resume', async () => {
    const control = await freeEndpoint();
    const results = await freeEndpoint();
    const base = await freeUdpPorts(8);
    const cfg = writeConfig(dir, 'link.json', { detector: { udp: { basePort: base } }, merger: { control, results } });
    const rx = spawnCli('receiver-3', ['receiver', '--sector', '3', '--config', cfg, '--no-election']);
    procs.push(rx);
    await rx.waitForMsg('receiver listening', 30_000);
    await new Promise((r) => setTimeout(r, 1200)); // heartbeats with nobody listening

    let merger = await TestMerger.start(control, results);
    closers.push(() => merger.close());
    const first = await merger.until(() => merger.lastHeartbeat(3), 'a heartbeat from a merger that started late', 10_000);
    expect(first).toMatchObject({ role: 'receiver', sector: 3, pid: rx.child.pid, phase: 'armed', acquisition: null, lastIndex: null, shutterRound: null, positions: null });
    expect([...merger.peers]).toEqual(['receiver-3']);
    expect(first.counters['merger.controlDropped']).toBeGreaterThanOrEqual(3); // beats sent while nobody listened
    expect(first.counters.received).toBe(0);

    // garbage on the control socket
    const packr = new Packr({ useRecords: false });
    const garbage: Array<Buffer | Buffer[]> = [
      Buffer.from('not msgpack at all \xff\xfe'),
      packr.pack({ version: LIVE_PROTOCOL_VERSION, type: 'explode' }),
      packr.pack({ version: 99, type: 'acquire' }),
      packr.pack([1, 2, 3]),
      packr.pack({ version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'g', scanShape: [0, -1], udfs: [], chunkSize: 1, mode: 'single' }),
      packr.pack({ version: LIVE_PROTOCOL_VERSION, type: 'params', acquisition: 'g', udfId: 'x', fromFrame: 'soon' }),
      [encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'stop', acquisition: 'g' }), Buffer.from('extra frame')],
      Buffer.alloc(0),
    ];
    for (const g of garbage) await merger.send(3, g);
    await merger.until(() => (merger.lastHeartbeat(3)!.counters['merger.controlMalformed'] ?? 0) >= garbage.length, 'malformed messages counted', 10_000);
    expect(merger.lastHeartbeat(3)!.counters['merger.controlMalformed']).toBe(garbage.length);
    expect(rx.running).toBe(true);

    // refusals, by code
    const refuse = async (acquisition: string, udfs: Parameters<typeof acquireMessage>[0]['udfs'], code: string) => {
      await merger.send(3, acquireMessage({ acquisition, scanShape: [4, 4], udfs }));
      const f = await merger.until(() => merger.failures.find((x) => x.acquisition === acquisition), `failure for ${acquisition}`, 10_000);
      expect(f).toMatchObject({ sector: 3, code });
    };
    await refuse('unknown', [{ id: 'a', name: 'NoSuchUDF', params: {} }], 'TESSERA_ERR_UNKNOWN_UDF');
    await refuse('params', [{ id: 'a', name: 'SumUDF', params: { dtype: 'int8' } }], 'TESSERA_ERR_UDF_PARAMS');
    await refuse('whole', [{ id: 'a', name: 'LogsumUDF', params: {} }], 'TESSERA_ERR_UDF_NOT_TILED');
    await merger.send(3, acquireMessage({ acquisition: 'late', scanShape: [4, 4], udfs: [], start: { shutterRound: 1, startIndex: 0 } }));
    await merger.until(() => merger.ready.find((r) => r.acquisition === 'late'), 'ready for an acquisition waiting for its shutter round', 10_000);
    expect(merger.ready.map((r) => r.acquisition)).toEqual(['late']);

    // a valid acquisition is armed and reported
    await merger.acquire([3], acquireMessage({ acquisition: 'good', scanShape: [4, 8], udfs: standardLiveUdfs() }));
    await merger.until(() => merger.lastHeartbeat(3)?.acquisition === 'good' && merger.lastHeartbeat(3)?.positions === 32, 'heartbeat with the armed acquisition', 10_000);
    await merger.send(3, { version: LIVE_PROTOCOL_VERSION, type: 'params', acquisition: 'good', udfId: 'nope', params: {}, fromFrame: 0 });
    expect(await merger.until(() => merger.failures.find((x) => x.acquisition === 'good'), 'failure for a params change of an unknown UDF', 10_000)).toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    expect(merger.malformed).toBe(0);

    // the merger goes away: the receiver keeps running; it comes back on the same endpoints
    await merger.close();
    const droppedBefore = merger.lastHeartbeat(3)!.counters['merger.controlDropped']!;
    await new Promise((r) => setTimeout(r, 1500));
    expect(rx.running).toBe(true);
    merger = await TestMerger.start(control, results);
    closers.push(() => merger.close());
    const again = await merger.until(() => merger.lastHeartbeat(3), 'heartbeats after the merger restarted', 10_000);
    expect(again.acquisition).toBe('good'); // still armed
    expect(again.counters['merger.controlDropped']!).toBeGreaterThanOrEqual(droppedBefore + 3);
    const t0 = Date.now();
    await merger.until(() => merger.heartbeats.length >= 5, 'steady heartbeats', 10_000);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(rx.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
    expect(await rx.stop()).toEqual({ code: 0, signal: null });
  }, 60_000);
});
