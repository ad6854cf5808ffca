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
import { afterEach, describe, expect, it } from 'vitest';
import { waitUntil } from '../merger/live-helpers.js';
import { epochMirror } from './faults-helpers.js';
import {
  cleanUp,
  defineAndStart,
  FRAMES_BEFORE,
  launchWithShuffle,
  lossesFromMirror,
  nearlyEqual as close,
  simulate,
  validCount,
  wholeFrameReference,
  WHOLE_FRAME_UDFS as UDFS,
} from './pipeline-helpers.js';

afterEach(async () => {
  await cleanUp();
}, 30_000);

const SEED = 94;
/** runUdf offline over the truth: FEMUDF per frame; SumSigUDF with the lost blocks zeroed. */
const reference = (scan: [number, number], losses = new Map<string, number>()) => wholeFrameReference(scan, SEED, losses);

describe('a whole-frame UDF through a link outage under a continuous acquisition', () => {
  it('the shuffle goes on on the rejoined detector acquisition with the old mapping: whole-frame results after the outage equal the truth of their positions', async () => {
    const scan: [number, number] = [4, 4];
    const n = scan[0] * scan[1];
    const fps = 10;
    const t0 = Date.now();
    const p = await launchWithShuffle({ chunkTimeoutMs: 2000 });
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
    const mf = await epochMirror(p, id, F, n);
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
