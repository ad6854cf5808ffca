/**
 * Whole-frame UDFs through the shuffle, end to end with real processes: simulator -> 8
 * receivers -> shuffle -> 2 `tessera worker` -> merger -> WebSocket client. StrainMapUDF and
 * FEMUDF run behind the shuffle beside SumUDF in the receivers; the live results must equal
 * `runUdf` offline over the simulator's ground truth (same seed) for every frame processed
 * that arrived whole, and `_shuffle/valid` must mark exactly the processed frames.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { SIG } from '../merger/live-helpers.js';
import { ShufflePipeline } from '../shuffle/helpers.js';
import { expectWholeFrameResults, truthFrames } from './pipeline-helpers.js';

let p: ShufflePipeline;

afterEach(async () => {
  await p?.stopAll();
}, 30_000);

describe('whole-frame UDFs via the shuffle and two workers', () => {
  it('StrainMapUDF and FEMUDF live equal runUdf offline on the same frames, beside SumUDF', async () => {
    const scan: [number, number] = [2, 8];
    const seed = 5;
    const sim = new SimulatedScan({ scanShape: scan, seed });
    const strain = { lattice: { zero: [(FRAME_HEIGHT - 1) / 2, (FRAME_WIDTH - 1) / 2], a: [...sim.a0], b: [...sim.b0] }, template: { type: 'disk', radius: 22 }, maxRadius: 640 };
    const whole: AcquisitionRequest['udfs'] = [
      { id: 'strain', name: 'StrainMapUDF', params: strain },
      { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 100, radOut: 400 } },
    ];
    p = new ShufflePipeline();
    await p.launch({ workers: 2, shuffleArgs: ['--fixed-rate', '--max-queued', '16'] });
    const id = await p.defineAndStart({ scanShape: scan, udfs: [{ id: 'sum', name: 'SumUDF' }, ...whole], mode: 'single' });
    const camera = p.simulate(scan, ['--fps', '5', '--seed', String(seed)]);
    const n = scan[0] * scan[1];
    await p.client.connect();
    p.client.subscribe({ acquisition: id });
    // every frame accounted for: merged, or skipped by the shuffle (none with a queue this deep)
    const mirror = await p.client.waitFor((m) => {
      const c = m.get('_shuffle', 'counters')?.data as Float64Array | undefined;
      return m.acquisition === id && c !== undefined && c[0]! + c[1]! >= n && m.state?.state === 'done';
    }, 100_000);
    const counters = mirror.get('_shuffle', 'counters')!.data as Float64Array;
    expect(counters[1]).toBe(0);
    expect([...(mirror.get('_shuffle', 'valid')!.data as Uint8Array)]).toEqual(new Array(n).fill(1));
    expect((await camera.exited).code).toBe(0);

    const data = truthFrames(sim, n);
    const reference = await runUdf(new MemoryDataSet({ data, navShape: scan, sigShape: SIG }), whole.map((u) => createUdf({ name: u.name, params: u.params ?? {} })));
    // frames a receiver lost a datagram of (rare, a loaded machine) differ from the truth: skip them
    const sectors = mirror.get('_shuffle', 'sectors')!.data as Uint8Array;
    const whole8 = [...sectors.keys()].filter((i) => sectors[i] === 8);
    expect(whole8.length).toBeGreaterThanOrEqual((3 * n) / 4);
    const compared = expectWholeFrameResults(mirror, whole, reference, whole8, n);
    expect(compared).toBeGreaterThan(whole8.length * 10);
    // the receivers' SumUDF beside them: exact whenever no datagram was lost (the damage map says)
    const lost = [...(mirror.get('_damage', 'blocksMissing')!.data as Uint16Array)].reduce((a, b) => a + b, 0);
    if (lost === 0) {
      const [sum] = await runUdf(new MemoryDataSet({ data, navShape: scan, sigShape: SIG }), [createUdf({ name: 'SumUDF', params: {} })]);
      const got = mirror.get('sum', 'intensity')!.data as ArrayLike<number>;
      const want = sum!.intensity!.data as unknown as ArrayLike<number>;
      for (let k = 0; k < want.length; k++) if (got[k] !== want[k]) throw new Error(`sum/intensity[${k}] = ${got[k]}, expected ${want[k]}`);
    }
    // strain is finite outside the simulator's vacuum columns
    const exx = mirror.get('strain', 'exx')!.data as Float64Array;
    expect([...exx].filter(Number.isFinite).length).toBeGreaterThan(n / 2);
    // both workers took part
    const workers = p.roles.filter((r) => r.name.startsWith('worker-'));
    await Promise.all(workers.map((w) => w.stop(5000)));
    for (const w of workers) expect((w.lines.find((l) => l.msg === 'worker stopped: final counters')?.frames as number) ?? 0).toBeGreaterThan(0);
    expect(p.merger.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  }, 150_000);
});
