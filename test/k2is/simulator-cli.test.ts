/**
 * `tessera simulate` as a real process (the compiled CLI: build first): real UDP sockets on
 * 127.0.0.1 receive every datagram, compared bit for bit with the in-process generator; the
 * recording files, the .gtg and the truth .npy are read back independently.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI_PATH } from '../../src/paths.js';
import { loadConfig } from '../../src/config.js';
import { resolveSimulateOptions } from '../../src/commands/simulate.js';
import { NpyFile } from '../../src/k2is/npy.js';
import { K2ISRecording } from '../../src/k2is/recording.js';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { K2ISStream, type Datagram } from '../../src/k2is/simulator/stream.js';
import { SectorFaultInjector, type FaultOptions, type FaultRecord } from '../../src/k2is/simulator/faults.js';
import { simulateProcessHarness } from './simulate-helpers.js';

const BLOCK = 22360;
const { children, dir, sectorSockets, runCli } = simulateProcessHarness('tessera-sim-');

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectSameDatagrams(got: Buffer[], want: Uint8Array[], label: string): void {
  expect(got.length, `${label}: datagram count`).toBe(want.length);
  const firstDiff = got.findIndex((g, i) => Buffer.compare(g, want[i]!) !== 0);
  expect(firstDiff, `${label}: first differing datagram`).toBe(-1);
}

describe('tessera simulate over real UDP', () => {
  it('delivers exactly the in-process stream, every sector, bit for bit', async () => {
    const { base, got } = await sectorSockets();
    const args = ['--udp', `127.0.0.1:${base}`, '--scan', '2x3', '--seed', '21', '--fps', '100', '--frames-before', '3', '--frames-after', '2'];
    args.push('--frame-id-start', String(2 ** 32 - 4), '--frame-id-reset', '2', '--block-count-start', String(2 ** 32 - 40));
    const r = await runCli(args);
    expect(r.code, r.stderr).toBe(0);
    await settle(200);
    const stream = new K2ISStream(new SimulatedScan({ scanShape: [2, 3], seed: 21 }), {
      framesBeforeScan: 3,
      framesAfterScan: 2,
      frameIdStart: 2 ** 32 - 4,
      frameIdReset: 2,
      blockCountStart: 2 ** 32 - 40,
    });
    for (let s = 0; s < 8; s++) expectSameDatagrams(got[s]!, [...stream.datagrams(s)].map((d) => d.data), `sector ${s}`);
    // the run logs its achieved rate at the end
    const done = r.stderr.split('\n').filter((l) => l.includes('simulation done')).map((l) => JSON.parse(l));
    expect(done[0]).toMatchObject({ frames: stream.totalFrames, udpErrors: 0, render: 'inline' });
    expect(done[0].datagramsPerSecond).toBeGreaterThan(0);
    // paced at 100 frames/s: never faster than the schedule (a loaded machine may be slower)
    expect(done[0].seconds).toBeGreaterThanOrEqual((stream.totalFrames - 1) / 100 - 0.002);
  });

  it('with faults: receives what the seeded injectors emit, and the fault log says what they did', async () => {
    const { base, got } = await sectorSockets();
    const log = join(dir, 'faults.jsonl');
    const faults = { drop: 0.04, duplicate: 0.04, corrupt: 0.04, reorder: 5, burstDrop: 12 };
    const r = await runCli([
      '--udp', `127.0.0.1:${base}`, '--scan', '2x2', '--seed', '8', '--fps', '100', '--frames-before', '2', '--frames-after', '1',
      '--frame-id-start', '7', '--sectors', '1,4', '--drop', '0.04', '--duplicate', '0.04', '--corrupt', '0.04', '--reorder', '5', '--burst-drop', '12',
      '--fault-log', log, '--render-worker', // the other tests render inline, this one in a worker
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('"render":"worker"');
    await settle(200);
    const stream = new K2ISStream(new SimulatedScan({ scanShape: [2, 2], seed: 8 }), { framesBeforeScan: 2, framesAfterScan: 1, frameIdStart: 7 });
    const expectedLog: FaultRecord[] = [];
    for (let s = 0; s < 8; s++) {
      if (s !== 1 && s !== 4) {
        expect(got[s]!.length).toBe(0);
        continue;
      }
      const input = [...stream.datagrams(s)];
      const opts: FaultOptions = { seed: 8, ...faults, burstPeriod: input.length };
      const inj = new SectorFaultInjector(s, opts, (rec) => expectedLog.push(rec));
      const out: Datagram[] = [];
      for (const d of input) inj.push(d, out);
      inj.flush(out);
      expectSameDatagrams(got[s]!, out.map((d) => d.data), `sector ${s}`);
    }
    const key = (x: FaultRecord) => `${x.sector}/${x.blockCount}/${x.kind}`;
    const written = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as FaultRecord);
    expect(written.map(key).sort()).toEqual(expectedLog.map(key).sort());
    expect(written.length).toBeGreaterThan(24); // a burst of 12 per sector plus random faults
    expect(written[0]).toEqual(expect.objectContaining({ sector: expect.any(Number), streamFrame: expect.any(Number), frameId: expect.any(Number), blockIndex: expect.any(Number) }));
  });

  it('continuous mode repeats the scan in epochs until SIGINT, then exits cleanly', async () => {
    const { base, got } = await sectorSockets();
    const child = spawn(process.execPath, [CLI_PATH, 'simulate', '--udp', `127.0.0.1:${base}`, '--sectors', '2', '--scan', '1x3', '--seed', '6',
      '--frame-id-start', '0', '--frames-before', '2', '--continuous', '--fps', '200'], { env: { ...process.env, TESSERA_LOG_JSON: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    while (got[2]!.length < 32 * 12 && Date.now() < deadline) await settle(20);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(stderr).toContain('simulation done');
    const stream = new K2ISStream(new SimulatedScan({ scanShape: [1, 3], seed: 6 }), { framesBeforeScan: 2, framesAfterScan: 0, continuous: true });
    const frames = Math.floor(got[2]!.length / 32);
    expect(frames).toBeGreaterThanOrEqual(12);
    expectSameDatagrams(got[2]!.slice(0, 32 * frames), [...stream.datagrams(2, 0, frames)].map((d) => d.data), 'sector 2');
    // epoch 2 shows scan position 1 with the same pixels as epoch 0 (and the flag on)
    expect(Buffer.compare(got[2]![32 * stream.streamFrameOfScan(1, 2) + 5]!.subarray(40), got[2]![32 * stream.streamFrameOfScan(1, 0) + 5]!.subarray(40))).toBe(0);
    expect(got[2]![32 * stream.streamFrameOfScan(1, 2)]![9]).toBe(1);
    expect(stderr.split('\n').some((l) => l.includes('"stoppedEarly":true'))).toBe(true);
  });

  it('sends to a multicast group through loopback', async () => {
    const group = '225.1.1.1';
    const { base, socks, got } = await sectorSockets('0.0.0.0', true);
    for (const s of socks) s.addMembership(group, '127.0.0.1');
    const r = await runCli(['--multicast', group, '--udp', `127.0.0.1:${base}`, '--multicast-interface', '127.0.0.1', '--scan', '1x2', '--seed', '1', '--frame-id-start', '1000', '--fps', '100', '--frames-before', '1', '--frames-after', '0']);
    expect(r.code, r.stderr).toBe(0);
    await settle(200);
    const stream = new K2ISStream(new SimulatedScan({ scanShape: [1, 2], seed: 1 }), { framesBeforeScan: 1, framesAfterScan: 0, frameIdStart: 1000 });
    for (let s = 0; s < 8; s++) expectSameDatagrams(got[s]!, [...stream.datagrams(s)].map((d) => d.data), `sector ${s}`);
  });
});

describe('tessera simulate --write-bin and --truth', () => {
  it('writes untidy sector files, a .gtg with the scan shape, a sidecar and the truth', async () => {
    const out = join(dir, 'rec');
    const truth = join(dir, 'truth.npy');
    const r = await runCli([
      '--scan', '2x3', '--seed', '4', '--frame-id-start', '1000', '--frames-before', '3', '--frames-after', '1', '--frame-id-reset', '2',
      '--write-bin', out, '--name', 'Cap', '--leading-garbage', '--incomplete-end', '--truth', truth,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const scan = new SimulatedScan({ scanShape: [2, 3], seed: 4 });
    const stream = new K2ISStream(scan, { framesBeforeScan: 3, framesAfterScan: 1, frameIdStart: 1000, frameIdReset: 2 });
    const sidecar = JSON.parse(readFileSync(join(out, 'Cap.json'), 'utf8'));
    const lead: number[] = sidecar.layout.leadingBlocks;
    const trail: number[] = sidecar.layout.trailingBlocks;
    const trunc: number[] = sidecar.layout.truncatedBytes;
    expect(new Set(lead).size).toBeGreaterThan(1); // a different number per sector
    for (let s = 0; s < 8; s++) {
      const file = readFileSync(join(out, `Cap_${s + 1}.bin`));
      expect(lead[s]).toBeGreaterThanOrEqual(1);
      expect(lead[s]).toBeLessThanOrEqual(31);
      expect(trail[s]).toBeGreaterThanOrEqual(1);
      expect(trunc[s]).toBeGreaterThanOrEqual(1);
      expect(trunc[s]).toBeLessThan(BLOCK);
      const n = stream.totalFrames;
      expect(file.length).toBe((lead[s]! + 32 * (n - 1) + trail[s]!) * BLOCK + trunc[s]!);
      // expected bytes: the tail of frame 0, frames 1..n-1, the head of frame n, then a cut block
      const blocks = [...stream.datagrams(s, 0, n + 1)].map((d) => d.data);
      const want = Buffer.concat([
        ...blocks.slice(32 - lead[s]!, 32 * n),
        ...blocks.slice(32 * n, 32 * n + trail[s]!),
        blocks[32 * n + trail[s]!]!.subarray(0, trunc[s]!),
      ]);
      expect(Buffer.compare(file, want), `sector file ${s + 1}`).toBe(0);
    }
    expect(existsSync(join(out, 'Cap_.gtg'))).toBe(true);
    const gtg = readFileSync(join(out, 'Cap_.gtg'));
    expect(gtg.readUInt32BE(0)).toBe(4);
    expect(gtg.readBigUInt64BE(4)).toBe(BigInt(gtg.length - 24));
    expect(gtg.readUInt32BE(12)).toBe(1);
    // find each label and read its int32 after "%%%%", info length 1 and info word 3 (int32)
    const readTag = (label: string) => {
      const at = gtg.indexOf(Buffer.concat([Buffer.from([0x15, 0, label.length]), Buffer.from(label, 'latin1')]));
      expect(at, label).toBeGreaterThan(0);
      const p = at + 3 + label.length + 8;
      expect(gtg.subarray(p, p + 4).toString('latin1')).toBe('%%%%');
      expect(gtg.readBigUInt64BE(p + 4)).toBe(1n);
      expect(gtg.readBigUInt64BE(p + 12)).toBe(3n);
      return gtg.readInt32LE(p + 20);
    };
    expect(gtg.indexOf(Buffer.from('SI Dimensions', 'latin1'))).toBeGreaterThan(0);
    expect(readTag('Size Y')).toBe(2);
    expect(readTag('Size X')).toBe(3);

    const npy = NpyFile.open(truth);
    expect(npy.shape).toEqual([6, 1860, 2048]);
    expect(npy.dtype).toBe('<u2');
    for (let i = 0; i < 6; i++) {
      const a = npy.read(i, 1);
      const b = scan.frame(i);
      expect(Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer)), `truth frame ${i}`).toBe(0);
    }
    npy.close();
    expect(statSync(truth).size).toBe(128 + 6 * 1860 * 2048 * 2);

    // Tessera's recording reader (written independently, LiberTEM's sync rules) opens it from a
    // sector file, finds the .gtg by the camera's naming and gives back the truth frames.
    const rec = K2ISRecording.open(join(out, 'Cap_3.bin'));
    try {
      expect(rec.navShape).toEqual([2, 3]);
      for (let i = 0; i < 6; i++) {
        const a = rec.readFrame(i);
        const b = scan.frame(i);
        expect(Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer)), `recording frame ${i}`).toBe(0);
      }
    } finally {
      rec.close();
    }
  });
});

describe('tessera simulate options', () => {
  it.each([
    [['--drop', '2'], '--drop'],
    [['--scan', '3by3'], '--scan'],
    [['--sectors', '0,9'], '--sectors'],
    [['--udp', 'localhost'], '--udp'],
    [['--frame-id-start', '4294967296'], '--frame-id-start'],
    [['--multicast', '10.0.0.1'], '--multicast'],
    [['--write-bin', '/tmp/x', '--frames-before', '1', '--leading-garbage'], '--leading-garbage'],
    [['--name', 'x'], '--name'],
  ])('%j fails with TESSERA_ERR_BAD_ARGUMENT naming %s', async (args, option) => {
    const r = await runCli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('TESSERA_ERR_BAD_ARGUMENT');
    expect(r.stderr).toContain(option);
  });

  it('--help documents every option', async () => {
    const r = await new Promise<string>((resolve) => {
      const c = spawn(process.execPath, [CLI_PATH, 'simulate', '--help']);
      children.push(c);
      let text = '';
      c.stdout.on('data', (d) => (text += d));
      c.on('exit', () => resolve(text));
    });
    for (const o of [
      '--scan', '--seed', '--fps', '--udp', '--multicast', '--sectors', '--continuous', '--frames-before', '--frames-after',
      '--pad-after', '--frame-id-start', '--frame-id-reset', '--block-count-start', '--drop', '--duplicate', '--reorder',
      '--burst-drop', '--corrupt', '--fault-log', '--write-bin', '--name', '--leading-garbage', '--truth', '--config',
    ]) {
      expect(r, o).toContain(o);
    }
  });

  it('resolves defaults from the config and adds --pad-after to the frames after the scan', () => {
    const config = loadConfig();
    const o = resolveSimulateOptions({ padAfter: '400', framesAfter: '3' }, config);
    expect(o.stream.framesAfterScan).toBe(403);
    expect(o.scene.scanShape).toEqual(config.simulator.scan);
    expect(o.fps).toBe(config.simulator.fps);
    expect(o.udp).toMatchObject({ host: config.detector.udp.host, basePort: config.detector.udp.basePort, multicast: false });
    const files = resolveSimulateOptions({ writeBin: '/tmp/r', truth: '/tmp/t.npy' }, config);
    expect(files.udp).toBeNull();
    const cfgFile = join(dir, 'cfg.json');
    writeFileSync(cfgFile, JSON.stringify({ simulator: { scan: [5, 7], seed: 77 } }));
    const fromFile = resolveSimulateOptions({}, loadConfig(cfgFile));
    expect(fromFile.scene).toEqual({ scanShape: [5, 7], seed: 77 });
  });
});
