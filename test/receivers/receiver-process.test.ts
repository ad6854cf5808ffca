/**
 * Real receiver processes (compiled CLI) fed over real UDP on 127.0.0.1 with datagrams built
 * here from known pixels: the --dump-frames output must equal the pixels bit for bit, with
 * exactly the withheld blocks zero-filled and marked as damage, across a block_count wrap and a
 * frame_id reset, under reordering, duplicates and corrupt datagrams. Two receivers with the
 * election: the sector that lost the first flagged frame entirely still maps every frame to the
 * right scan position.
 */
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ElectionCoordinator } from '../../src/protocol/election.js';
import { firstDiff, frameDatagrams, sectorPixels, shuffled, withDamage } from './datagrams.js';
import { freeUdpPorts, readDumpFrame, readDumpIndex, spawnCli, until, writeConfig, type RoleProcess } from './process-helpers.js';

const FULL = 0xffffffff;
const dir = mkdtempSync(join(tmpdir(), 'tessera-rx-'));
const procs: RoleProcess[] = [];
const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const p of procs.splice(0)) p.kill();
  for (const c of closers.splice(0)) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The test stream: frames 0, 1 flag off (1 = scan position 0), 2.. flag on; keys cross 2^32. */
const BASE_KEY = 2 ** 32 - 32 * 3;
const SCAN: [number, number] = [2, 3];
const POSITIONS = 6;
const STREAM_FRAMES = 9;
const keyOf = (f: number) => (BASE_KEY + 32 * f) >>> 0;
const frameIdOf = (f: number) => (f < 2 ? 284989 + f : f); // reset 284990 -> 2 at the flag
const pixelsCache = new Map<string, Uint16Array>();
const pixelsOf = (sector: number, f: number) => {
  const k = `${sector}/${f}`;
  if (!pixelsCache.has(k)) pixelsCache.set(k, sectorPixels(42, sector, f));
  return pixelsCache.get(k)!;
};

async function udpSender() {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  closers.push(() => new Promise<void>((r) => s.close(() => r())));
  return (port: number, d: Uint8Array) => new Promise<void>((resolve, reject) => s.send(d, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
}

/** Send a sector's stream, frame by frame, shuffled within each frame, without `withheld` blocks. */
async function sendStream(send: (port: number, d: Uint8Array) => Promise<void>, port: number, sector: number, withheld: Map<number, number[]>, extras: (f: number, dgs: Uint8Array[]) => Uint8Array[] = () => []) {
  for (let f = 0; f < STREAM_FRAMES; f++) {
    const dgs = frameDatagrams({ key: keyOf(f), frameId: frameIdOf(f), shutter: f >= 2, pixels: pixelsOf(sector, f) });
    const keep = dgs.filter((_, i) => !(withheld.get(f) ?? []).includes(i));
    for (const d of shuffled([...keep, ...extras(f, dgs)], 1000 * sector + f + 1)) await send(port, d);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function damageOf(blocks: number[] | undefined): number {
  return (blocks ?? []).reduce((m, i) => (m | (1 << i)) >>> 0, 0);
}

function expectDump(path: string, sector: number, withheld: Map<number, number[]>) {
  const index = readDumpIndex(path);
  expect(index.map((l) => l.index)).toEqual([0, 1, 2, 3, 4, 5]);
  for (let k = 0; k < POSITIONS; k++) {
    const f = k + 1; // scan position k is stream frame k + 1
    const lost = withheld.get(f);
    const damage = lost === undefined ? 0 : lost.length === 32 ? FULL : damageOf(lost);
    expect(index[k]).toEqual({
      sector,
      acquisition: 1,
      index: k,
      scanIndex: k,
      epoch: 0,
      frameKey: keyOf(f),
      frameId: damage === FULL ? null : frameIdOf(f),
      damage,
    });
    const got = readDumpFrame(path, k);
    expect(firstDiff(got, withDamage(pixelsOf(sector, f), damage)), `sector ${sector} position ${k}`).toBe(-1);
  }
}

const ALL = Array.from({ length: 32 }, (_, i) => i);

describe('tessera receiver (process, real UDP)', () => {
  it('dumps the scan bit for bit, with exactly the withheld blocks as damage', async () => {
    const base = await freeUdpPorts(1);
    const sector = 0;
    const cfg = writeConfig(dir, 'one.json', { detector: { udp: { basePort: base } }, receiver: { statsIntervalMs: 200 } });
    const dump = join(dir, 'one.bin');
    const rx = spawnCli('receiver', ['receiver', '--sector', String(sector), '--config', cfg, '--no-election', '--scan', `${SCAN[0]}x${SCAN[1]}`, '--dump-frames', dump]);
    procs.push(rx);
    await rx.waitForMsg('receiver listening');
    const send = await udpSender();
    // position 2 loses blocks 0 and 17, position 3 (stream frame 4) is lost whole, position 4 loses block 31
    const withheld = new Map<number, number[]>([
      [3, [0, 17]],
      [4, ALL],
      [5, [31]],
    ]);
    const extras = (f: number, dgs: Uint8Array[]) => {
      if (f !== 2) return [];
      const badSync = Uint8Array.from(dgs[9]!);
      badSync[3] = 0x56;
      return [dgs[5]!, badSync, dgs[7]!.subarray(0, 1000)]; // a duplicate, a bad sync word, a truncated one
    };
    await sendStream(send, base + sector, sector, withheld, extras);
    await rx.waitFor((l) => l.msg === 'acquisition ended', 20_000);
    const exit = await rx.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    const final = rx.lines.find((l) => l.msg === 'receiver stopped: final counters')!;
    expect(final).toMatchObject({
      received: STREAM_FRAMES * 32 - 35 + 3,
      ok: STREAM_FRAMES * 32 - 35,
      duplicates: 1,
      rejected: { bad_sync: 1, too_short: 1 },
      framesComplete: STREAM_FRAMES - 3,
      framesDamaged: 2,
      framesMissing: 1,
      blocksZeroFilled: 35,
      framesInScan: POSITIONS,
    });
    expectDump(dump, sector, withheld);
  });

  it('two receivers and the election: a sector that lost the first flagged frame maps every frame alike', async () => {
    const base = await freeUdpPorts(2);
    const coord = await ElectionCoordinator.start({ endpoint: 'tcp://127.0.0.1:*', expectedSectors: [0, 1], timeoutMs: 10_000 });
    closers.push(() => coord.close());
    const cfg = writeConfig(dir, 'two.json', { detector: { udp: { basePort: base } }, election: { endpoint: coord.endpoint, timeoutMs: 10_000 } });
    const dumps = [join(dir, 's0.bin'), join(dir, 's1.bin')];
    const rxs = [0, 1].map((s) => spawnCli(`receiver-${s}`, ['receiver', '--sector', String(s), '--config', cfg, '--scan', `${SCAN[0]}x${SCAN[1]}`, '--dump-frames', dumps[s]!]));
    procs.push(...rxs);
    await Promise.all(rxs.map((r) => r.waitForMsg('receiver listening')));
    const send = await udpSender();
    const withheld = [new Map<number, number[]>(), new Map<number, number[]>([[2, ALL]])]; // sector 1 never sees the first flagged frame
    await Promise.all([0, 1].map((s) => sendStream(send, base + s, s, withheld[s]!)));
    await Promise.all(rxs.map((r) => r.waitFor((l) => l.msg === 'acquisition ended', 20_000)));
    await until(() => coord.decisions.length === 1, 5000, 'the decision');
    expect(coord.latest).toMatchObject({ firstActiveKey: keyOf(2), voters: [0, 1], missing: [], decidedBy: 'all' });
    expect(coord.latest!.proposals).toEqual({ 0: { frameKey: keyOf(2), frameId: 2 }, 1: { frameKey: keyOf(3), frameId: 3 } });
    for (const r of rxs) expect(await r.stop()).toEqual({ code: 0, signal: null });
    expectDump(dumps[0]!, 0, withheld[0]!);
    expectDump(dumps[1]!, 1, withheld[1]!);
  });

  it('multicast: two receivers of one sector joined to the group both get the whole stream', async () => {
    const base = await freeUdpPorts(1);
    const group = '239.255.42.17';
    const cfg = writeConfig(dir, 'mc.json', { detector: { udp: { basePort: base, multicast: group, interface: '127.0.0.1' } } });
    const dumps = [join(dir, 'mc-a.bin'), join(dir, 'mc-b.bin')];
    const rxs = dumps.map((d, k) => spawnCli(`receiver-${k}`, ['receiver', '--sector', '0', '--config', cfg, '--no-election', '--scan', `${SCAN[0]}x${SCAN[1]}`, '--dump-frames', d]));
    procs.push(...rxs);
    await Promise.all(rxs.map((r) => r.waitForMsg('receiver listening')));
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    closers.push(() => new Promise<void>((r) => s.close(() => r())));
    s.setMulticastInterface('127.0.0.1');
    s.setMulticastLoopback(true);
    const send = (_port: number, d: Uint8Array) => new Promise<void>((resolve, reject) => s.send(d, base, group, (e) => (e ? reject(e) : resolve())));
    const withheld = new Map<number, number[]>([[4, [3, 30]]]);
    await sendStream(send, base, 0, withheld);
    await Promise.all(rxs.map((r) => r.waitFor((l) => l.msg === 'acquisition ended', 20_000)));
    for (const r of rxs) expect(await r.stop()).toEqual({ code: 0, signal: null });
    for (const d of dumps) expectDump(d, 0, withheld);
  });

  it('a second receiver of the same sector fails clearly instead of sharing the port', async () => {
    const base = await freeUdpPorts(1);
    const cfg = writeConfig(dir, 'taken.json', { detector: { udp: { basePort: base } } });
    const first = spawnCli('receiver-a', ['receiver', '--sector', '0', '--config', cfg, '--no-election']);
    procs.push(first);
    await first.waitForMsg('receiver listening');
    const second = spawnCli('receiver-b', ['receiver', '--sector', '0', '--config', cfg, '--no-election']);
    procs.push(second);
    const exit = await second.exited;
    expect(exit.code).toBe(2);
    expect(second.rawStderr.join('\n')).toContain('TESSERA_ERR_UDP_BIND');
    expect(first.running).toBe(true);
  });

  it('rejects a bad command line with a clear error', async () => {
    const rx = spawnCli('receiver', ['receiver', '--sector', '9', '--no-election']);
    procs.push(rx);
    expect((await rx.exited).code).toBe(2);
    expect(rx.rawStderr.join('\n')).toContain('TESSERA_ERR_BAD_ARGUMENT');
  });
});
