/**
 * `tessera simulate --outage A:B`: a link outage. Stream frames A .. B-1 are not sent at all, in
 * any sector, while the camera streams on (block_count and frame_id of the frames after it
 * count on as if those had been sent); each datagram left out is an `outage` record in the
 * fault log. Checked against the in-process generator (K2ISStream) frame by frame, in process
 * (SectorFaultInjector) and as a real process over real UDP sockets.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { resolveSimulateOptions } from '../../src/commands/simulate.js';
import { readBlockCount, readFrameId } from '../../src/k2is/header.js';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { K2ISStream, type Datagram } from '../../src/k2is/simulator/stream.js';
import { SectorFaultInjector, type FaultOptions, type FaultRecord } from '../../src/k2is/simulator/faults.js';
import { simulateProcessHarness } from './simulate-helpers.js';

const { dir, sectorSockets, runCli } = simulateProcessHarness('tessera-outage-');

const scan = new SimulatedScan({ scanShape: [2, 3], seed: 4 });
const stream = new K2ISStream(scan, { framesBeforeScan: 2, framesAfterScan: 1, continuous: true, frameIdStart: 50, blockCountStart: 640 });

function run(sector: number, options: FaultOptions, frames: number): { input: Datagram[]; emitted: Datagram[]; log: FaultRecord[] } {
  const input: Datagram[] = [];
  for (const d of stream.datagrams(sector, 0, frames)) {
    if (d.streamFrame >= frames) break;
    input.push(d);
  }
  const log: FaultRecord[] = [];
  const inj = new SectorFaultInjector(sector, { burstPeriod: 6 * 32, ...options }, (r) => log.push(r));
  const emitted: Datagram[] = [];
  for (const d of input) inj.push(d, emitted);
  inj.flush(emitted);
  return { input, emitted, log };
}

describe('simulator link outage', () => {
  it('leaves out exactly the datagrams of stream frames A .. B-1, logs each as an outage, and the other faults keep their pattern', () => {
    for (const sector of [0, 7]) {
      const { input, emitted, log } = run(sector, { seed: 3, outage: [5, 9] }, 14);
      const outside = input.filter((d) => d.streamFrame < 5 || d.streamFrame >= 9);
      expect(emitted.map((d) => d.blockCount)).toEqual(outside.map((d) => d.blockCount));
      for (let i = 0; i < emitted.length; i++) expect(Buffer.compare(emitted[i]!.data, outside[i]!.data)).toBe(0);
      // the frames after it carry the block_count and frame_id the camera gave them: it streamed on
      expect(emitted.filter((d) => d.streamFrame === 9).map((d) => readBlockCount(d.data)).sort((x, y) => x - y)).toEqual(Array.from({ length: 32 }, (_, i) => 640 + 9 * 32 + i));
      expect(emitted.filter((d) => d.streamFrame === 9).every((d) => readFrameId(d.data) === 50 + 9)).toBe(true);
      const inOutage = input.filter((d) => d.streamFrame >= 5 && d.streamFrame < 9);
      expect(log).toEqual(inOutage.map((d) => ({ sector, streamFrame: d.streamFrame, frameId: d.frameId, blockCount: d.blockCount, blockIndex: d.blockIndex, kind: 'outage' })));
      expect(log.length).toBe(4 * 32);
    }
    // random drops outside the outage fall where they fall without it
    const withOut = run(2, { seed: 9, drop: 0.1, outage: [3, 6] }, 12);
    const without = run(2, { seed: 9, drop: 0.1 }, 12);
    const drops = (l: FaultRecord[]) => l.filter((r) => r.kind === 'drop' && (r.streamFrame < 3 || r.streamFrame >= 6)).map((r) => r.blockCount);
    expect(drops(withOut.log)).toEqual(drops(without.log));
    expect(drops(without.log).length).toBeGreaterThan(0);
    expect(() => new SectorFaultInjector(0, { seed: 1, outage: [6, 6] })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });

  it('--outage A:B is parsed and checked', () => {
    const config = loadConfig();
    expect(resolveSimulateOptions({ outage: '10:25' }, config).faults).toMatchObject({ outage: [10, 25] });
    expect(resolveSimulateOptions({}, config).faults).toMatchObject({ outage: null });
    for (const bad of ['25:10', '7:7', '5', 'a:b', '-1:4', '3:']) {
      expect(() => resolveSimulateOptions({ outage: bad }, config), bad).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    }
  });

  it('as a process over UDP: no datagram of the outage arrives, the others do, bit for bit, and the fault log lists the outage', async () => {
    const { base, got } = await sectorSockets();
    const log = join(dir, 'faults.jsonl');
    const code = await runCli([
      '--udp', `127.0.0.1:${base}`, '--scan', '2x3', '--seed', '4', '--fps', '100', '--frames-before', '2', '--frames-after', '1',
      '--continuous', '--frame-id-start', '50', '--block-count-start', '640', '--max-frames', '20', '--outage', '6:13', '--fault-log', log,
    ]);
    expect(code.code, code.stderr).toBe(0);
    expect(code.stderr).toContain('link outage: stream frames not sent');
    await new Promise((r) => setTimeout(r, 200));
    const records = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as FaultRecord);
    for (let s = 0; s < 8; s++) {
      const want: Uint8Array[] = [];
      const lost: Datagram[] = [];
      for (const d of stream.datagrams(s, 0, 20)) {
        if (d.streamFrame >= 20) break;
        if (d.streamFrame >= 6 && d.streamFrame < 13) lost.push(d);
        else want.push(d.data);
      }
      expect(got[s]!.length, `sector ${s}: datagrams`).toBe(want.length);
      expect(got[s]!.findIndex((g, i) => Buffer.compare(g, want[i]!) !== 0), `sector ${s}: first differing datagram`).toBe(-1);
      const mine = records.filter((r) => r.sector === s);
      expect(mine.every((r) => r.kind === 'outage')).toBe(true);
      expect(mine.map((r) => r.blockCount).sort((a, b) => a - b)).toEqual(lost.map((d) => d.blockCount).sort((a, b) => a - b));
    }
    const done = code.stderr.split('\n').filter((l) => l.includes('simulation done')).map((l) => JSON.parse(l));
    expect(done[0].faults).toMatchObject({ outage: 8 * 32 * 7 });
  }, 60_000);
});
