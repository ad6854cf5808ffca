/**
 * Fault injection: the fault log must be exactly what happened to the emitted sequence, counted
 * here independently from the datagrams themselves (header validation and block_count).
 */
import { describe, expect, it } from 'vitest';
import { checkBlock, readBlockCount } from '../../src/k2is/header.js';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { K2ISStream, type Datagram } from '../../src/k2is/simulator/stream.js';
import { LOSS_KINDS, SectorFaultInjector, type FaultOptions, type FaultRecord } from '../../src/k2is/simulator/faults.js';

const scan = new SimulatedScan({ scanShape: [4, 5], seed: 5 });
const stream = new K2ISStream(scan, { framesBeforeScan: 3, framesAfterScan: 2, blockCountStart: 2 ** 32 - 300 });

function run(sector: number, options: FaultOptions): { input: Datagram[]; emitted: Datagram[]; log: FaultRecord[] } {
  const input = [...stream.datagrams(sector)];
  const log: FaultRecord[] = [];
  const inj = new SectorFaultInjector(sector, { burstPeriod: input.length, ...options }, (r) => log.push(r));
  const emitted: Datagram[] = [];
  for (const d of input) inj.push(d, emitted);
  inj.flush(emitted);
  return { input, emitted, log };
}

describe('fault injection', () => {
  const options: FaultOptions = { seed: 99, drop: 0.05, duplicate: 0.05, corrupt: 0.05, reorder: 8, burstDrop: 40 };

  it.each([0, 6])('the fault log of sector %i is exactly the set of lost and duplicated blocks', (sector) => {
    const { input, emitted, log } = run(sector, options);
    // independent count: how often each block_count arrives as a valid datagram
    const arrivals = new Map<number, number>();
    const original = new Map(input.map((d) => [d.blockCount, d.data]));
    for (const d of emitted) {
      if (checkBlock(d.data, 0, d.data.length) !== null) continue;
      const bc = readBlockCount(d.data);
      arrivals.set(bc, (arrivals.get(bc) ?? 0) + 1);
      // an intact datagram is bit-identical to what the stream produced
      expect(Buffer.compare(d.data, original.get(bc)!)).toBe(0);
    }
    const lost = input.filter((d) => !arrivals.has(d.blockCount)).map((d) => d.blockCount).sort((a, b) => a - b);
    const duplicated = [...arrivals].filter(([, n]) => n === 2).map(([bc]) => bc).sort((a, b) => a - b);
    expect([...arrivals.values()].every((n) => n === 1 || n === 2)).toBe(true);

    const loggedLost = log.filter((r) => LOSS_KINDS.has(r.kind)).map((r) => r.blockCount).sort((a, b) => a - b);
    const loggedDup = log.filter((r) => r.kind === 'duplicate').map((r) => r.blockCount).sort((a, b) => a - b);
    expect(loggedLost).toEqual(lost);
    expect(loggedDup).toEqual(duplicated);
    // every kind happened, and the burst is 40 consecutive datagrams
    const kinds = new Set(log.map((r) => r.kind));
    for (const k of ['drop', 'burst_drop', 'duplicate']) expect(kinds.has(k as FaultRecord['kind'])).toBe(true);
    expect([...kinds].some((k) => k.startsWith('corrupt_'))).toBe(true);
    const burst = log.filter((r) => r.kind === 'burst_drop').map((r) => r.blockCount);
    expect(burst.length).toBe(40);
    const base = input.findIndex((d) => d.blockCount === burst[0]);
    expect(burst).toEqual(input.slice(base, base + 40).map((d) => d.blockCount));
    // log records carry the truth of the datagram they name
    for (const r of log) {
      const d = input.find((x) => x.blockCount === r.blockCount)!;
      expect([r.sector, r.streamFrame, r.frameId, r.blockIndex]).toEqual([sector, d.streamFrame, d.frameId, d.blockIndex]);
    }
    // emitted = input - lost + duplicated (corrupt ones replace their block)
    const corrupt = log.filter((r) => r.kind.startsWith('corrupt_')).length;
    expect(emitted.length).toBe(input.length - lost.length + duplicated.length + corrupt);
  });

  it('corrupted datagrams fail validation for the reason their kind says', () => {
    const { emitted, log } = run(2, { seed: 3, corrupt: 0.3 });
    const expected: Record<string, string[]> = {
      corrupt_sync: ['bad_sync'],
      corrupt_truncated: ['too_short'],
      corrupt_oversized: ['too_long'],
      corrupt_coordinates: ['bad_coordinates'],
    };
    const corruptLog = new Map(log.map((r) => [r.blockCount, r.kind]));
    let seen = 0;
    for (const d of emitted) {
      const why = checkBlock(d.data, 0, d.data.length);
      if (why === null) {
        expect(corruptLog.has(readBlockCount(d.data))).toBe(false);
        continue;
      }
      seen++;
      const kind = corruptLog.get(d.blockCount)!;
      expect(expected[kind]).toContain(why);
    }
    expect(seen).toBe(log.length);
    expect(new Set(log.map((r) => r.kind)).size).toBe(4);
  });

  it('reordering permutes within the window and loses nothing', () => {
    const w = 6;
    const { input, emitted, log } = run(1, { seed: 8, reorder: w });
    expect(log).toEqual([]);
    expect(emitted.map((d) => d.blockCount).sort((a, b) => a - b)).toEqual(input.map((d) => d.blockCount).sort((a, b) => a - b));
    const pos = new Map(emitted.map((d, i) => [d.blockCount, i]));
    let moved = 0;
    input.forEach((d, i) => {
      const late = pos.get(d.blockCount)! - i;
      expect(late).toBeLessThanOrEqual(2 * w);
      if (late !== 0) moved++;
    });
    expect(moved).toBeGreaterThan(input.length / 2);
  });

  it('is deterministic for a seed and differs for another', () => {
    const a = run(4, options).log;
    const b = run(4, options).log;
    const c = run(4, { ...options, seed: 100 }).log;
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
  });

  it('rejects bad fault options', () => {
    expect(() => new SectorFaultInjector(0, { seed: 1, drop: 1.5 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => new SectorFaultInjector(0, { seed: 1, reorder: -1 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => new SectorFaultInjector(0, { seed: 1, burstDrop: 10, burstPeriod: 10 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });
});
