/**
 * A whole-frame UDF (FEMUDF behind `tessera shuffle` and a `tessera worker`) beside a tile UDF
 * (SumSigUDF) through a link outage under a continuous acquisition, every role a real process:
 * `tessera simulate --continuous --outage A:B` (8 s at 10 fps: 80 frames, more than the
 * assembler bridges, 4 x receiver.streamIdleMs 2 s). The receivers rejoin the same detector
 * acquisition; the merger, seeing its round again, names it to the shuffle, which selects it from
 * the resume epoch on with the old mapping. Reference: runUdf per frame over the simulator's truth
 * (the scan repeats: a position's truth is the same in every epoch). In the first whole epoch
 * after the outage the whole-frame results are there and equal the reference where all 8 sectors
 * arrived (1e-9), SumSigUDF bit-exact; no epoch of the outage exists; every whole-frame result in
 * any epoch equals the truth of its position (nothing shifted, nothing of another frame).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type LiveMirror, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { BLOCK_COLS, BLOCK_ROWS, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { blockOrigin } from '../../src/k2is/geometry.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { freeTcpPort, liveConfig, SIG, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, type RoleProcess } from '../receivers/process-helpers.js';
import { completeEpoch } from './faults-helpers.js';
import { cleanUp, defineAndStart, FRAME, FRAMES_BEFORE, lossesFromMirror, simulate, spawnReceiver, spawnRole, type Pipeline } from './pipeline-helpers.js';

const ownClients: TesseraClient[] = [];
afterEach(async () => {
  for (const c of ownClients.splice(0)) await c.close().catch(() => {});
  await cleanUp();
}, 30_000);

const FEM = { center: [930, 1024], radIn: 100, radOut: 400 };
const UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sumsig', name: 'SumSigUDF' },
  { id: 'fem', name: 'FEMUDF', params: FEM },
];
const SEED = 94;

async function launchWithShuffle(): Promise<Pipeline & { shuffle: RoleProcess; worker: RoleProcess }> {
  const base = await freeUdpPorts(8);
  const shuffleEndpoints = { slices: `tcp://127.0.0.1:${await freeTcpPort()}`, frames: `tcp://127.0.0.1:${await freeTcpPort()}` };
  const { path, dir } = await liveConfig({
    detector: { udp: { host: '127.0.0.1', basePort: base } },
    receiver: { statsIntervalMs: 1000, streamIdleMs: 2000 },
    merger: { chunkTimeoutMs: 2000, keepEpochs: 64 },
    shuffle: shuffleEndpoints,
  });
  const merger = spawnRole('merger', ['merger', '-c', path]);
  const url = String((await merger.waitForMsg('merger listening', 30_000)).url);
  const shuffle = spawnRole('shuffle', ['shuffle', '-c', path, '--fixed-rate']);
  await shuffle.waitForMsg('shuffle listening', 30_000);
  const worker = spawnRole('worker', ['worker', '-c', path]);
  const receivers = Array.from({ length: 8 }, (_, s) => spawnReceiver(path, s));
  onTestFailed(() => {
    for (const r of [merger, shuffle, worker, receivers[3]!]) writeFileSync(join(dir, `${r.name}-${r.child.pid}.log`), r.rawStderr.join('\n'));
    console.error(`logs of the failed test: ${dir}`);
  });
  const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  ownClients.push(client);
  await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 90_000, 'eight receivers alive');
  await waitUntil(async () => ((await client.api.status()).shuffle?.workers ?? 0) >= 1, 30_000, 'the shuffle with its worker in /api/status');
  return { config: path, dir, merger, receivers, client, url, shuffle, worker };
}

/** runUdf offline over the truth: FEMUDF per frame; SumSigUDF with the lost blocks zeroed. */
async function reference(scan: [number, number], losses = new Map<string, number>()): Promise<{ fem: Float64Array; sumsig: ArrayLike<number> }> {
  const n = scan[0] * scan[1];
  const sim = new SimulatedScan({ scanShape: scan, seed: SEED });
  const truth = new Uint16Array(n * FRAME);
  for (let i = 0; i < n; i++) sim.frame(i, truth.subarray(i * FRAME, (i + 1) * FRAME));
  const [f] = await runUdf(new MemoryDataSet({ data: truth, navShape: scan, sigShape: SIG }), [createUdf({ name: 'FEMUDF', params: FEM })]);
  for (let i = 0; i < n; i++) {
    for (let s = 0; s < 8; s++) {
      const bits = losses.get(`${s}/${i}`) ?? 0;
      for (let b = 0; b < 32; b++) {
        if (!(bits & (1 << b))) continue;
        const o = blockOrigin(b);
        for (let y = o.y; y < o.y + BLOCK_ROWS; y++) truth.fill(0, i * FRAME + y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x, i * FRAME + y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x + BLOCK_COLS);
      }
    }
  }
  const [s] = await runUdf(new MemoryDataSet({ data: truth, navShape: scan, sigShape: SIG }), [createUdf({ name: 'SumSigUDF', params: {} })]);
  return { fem: Float64Array.from(f!.intensity!.data as unknown as ArrayLike<number>), sumsig: s!.intensity!.data as unknown as ArrayLike<number> };
}

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
const validCount = (x: LiveMirror) => {
  const v = x.get('_shuffle', 'valid')?.data as Uint8Array | undefined;
  return v ? v.reduce((a, b) => a + b, 0) : 0;
};

describe('a whole-frame UDF through a link outage under a continuous acquisition', () => {
  it('the shuffle goes on on the rejoined detector acquisition with the old mapping: whole-frame results after the outage equal the truth of their positions', async () => {
    const scan: [number, number] = [4, 4];
    const n = scan[0] * scan[1];
    const fps = 10;
    const t0 = Date.now();
    const p = await launchWithShuffle();
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'continuous', chunkSize: 4 });
    await waitUntil(() => p.receivers.every((r) => r.lines.some((l) => l.msg === 'shuffle selection' && JSON.stringify(l.rules).includes(id))), 20_000, 'receivers hold the selection');
    const lead = FRAMES_BEFORE - 1;
    const A = lead + n + 6;
    const B = A + 8 * fps;
    const camera = simulate(p, scan, ['--fps', String(fps), '--seed', String(SEED), '--continuous', '--outage', `${A}:${B}`]);

    await waitUntil(async () => /resumed at epoch \d+ on the same detector acquisition/.test((await p.client.api.get(id)).message ?? ''), 60_000, 'the resume on the rejoined detector acquisition');
    const r = /; resumed at epoch (\d+) on the same detector acquisition \(link back; epochs (\d+) to/.exec((await p.client.api.get(id)).message ?? '')!;
    const [E, R] = [Number(r[1]), Number(r[2])];
    await p.shuffle.waitFor((l) => l.msg === 'shuffle: the resumed acquisition goes on on the detector acquisition the merger named' && l.acquisition === id, 10_000, 'the named leg at the shuffle');

    // the first whole epoch after the outage: the receivers' part complete, then the workers' results
    const F = E + 1;
    await waitUntil(async () => (await p.client.api.get(id)).epochs.includes(F), 30_000, `epoch ${F} begun`);
    await p.client.connect();
    p.client.subscribe({ acquisition: id, epoch: F });
    const mf = await p.client.waitFor((m) => m.acquisition === id && m.epoch === F && completeEpoch(m, n), 30_000);
    const losses = lossesFromMirror(mf, n);
    const full = await p.client.waitFor((x) => x.acquisition === id && x.epoch === F && validCount(x) >= n / 2, 30_000);
    camera.kill();
    await camera.exited;
    const ref = await reference(scan, losses);
    const sumsig = mf.get('sumsig', 'intensity')!.data as Float64Array;
    for (let i = 0; i < n; i++) expect(Object.is(sumsig[i], ref.sumsig[i]), `sumsig/intensity[${i}] of epoch ${F}: ${sumsig[i]} vs ${ref.sumsig[i]}`).toBe(true);

    // every whole-frame result of every epoch: its position's truth (a shifted mapping could not pass: positions differ)
    const telling = Array.from({ length: n }, (_, i) => i).filter((i) => !close(ref.fem[i]!, ref.fem[(i + 1) % n]!));
    expect(telling.length).toBeGreaterThanOrEqual(n - 2);
    const { epochs } = await p.client.api.get(id);
    for (let e = R; e < E; e++) expect(epochs, `epochs (${epochs.join(', ')})`).not.toContain(e);
    let checked = 0;
    let inF = 0;
    for (const e of epochs) {
      p.client.subscribe({ acquisition: id, epoch: e });
      const m = e === F ? full : await p.client.waitFor((x) => x.acquisition === id && x.epoch === e && x.get('_shuffle', 'valid') !== undefined, 5000).catch(() => null);
      if (!m) continue;
      const valid = m.get('_shuffle', 'valid')!.data as Uint8Array;
      const sectors = m.get('_shuffle', 'sectors')!.data as Uint8Array;
      const fem = m.get('fem', 'intensity')!.data as Float64Array;
      for (let i = 0; i < n; i++) {
        if (!valid[i] || sectors[i] !== 8) continue;
        if (!close(fem[i]!, ref.fem[i]!)) throw new Error(`epoch ${e}: fem/intensity[${i}] = ${fem[i]}, expected ${ref.fem[i]}`);
        checked++;
        if (e === F) inF++;
      }
    }
    expect(inF, `whole-frame results in epoch ${F}`).toBeGreaterThanOrEqual(n / 2);
    console.log(`outage with the shuffle: stream frames ${A}..${B - 1}; resume epoch ${R}, rejoined in epoch ${E}; ${inF}/${n} whole-frame results in epoch ${F}, ${checked} checked over ${epochs.length} epochs; ${Date.now() - t0} ms in all`);
  }, 120_000);
});
