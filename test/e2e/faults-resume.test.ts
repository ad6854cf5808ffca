/**
 * A continuous acquisition carries on when the detector stream comes back (issue 8), every role
 * a real process: the camera (`tessera simulate --continuous`) is killed in the middle of a scan
 * (SIGKILL: mid-frame if it is sending one), a few seconds of silence (receiver.streamIdleMs 2 s
 * ends the detector acquisition), then a new camera run: another scene, frame_id from scratch,
 * block_count running on past the old one's as a real camera's counter does, flag off then on.
 * The acquisition stays `running` and resumes by itself at the start of a fresh epoch R:
 *  - the interrupted epoch is complete: the positions that never came are marked missing (all 8
 *    sectors 0xffffffff) and everything equals runUdf offline over the first camera's truth with
 *    what the damage map says was lost zeroed;
 *  - epoch R equals runUdf offline over the new camera's truth exactly (integer sums bit-exact;
 *    blocks the damage map reports lost on a loaded machine zeroed in the reference), with no
 *    position lost whole: no frame of the first camera in it, none of the second before it.
 *
 * The second case runs a whole-frame UDF (FEMUDF, behind `tessera shuffle` and a `tessera
 * worker`) beside a tile UDF (SumSigUDF) through the same kill, silence and new camera run: the
 * whole-frame part resumes too (the shuffle maps the new detector acquisition from epoch R on).
 * Reference: runUdf per frame over each camera run's truth (SimulatedScan, seeds 91 and 92, which
 * differ at the positions compared). In every epoch every position `_shuffle/valid` marks that
 * arrived with all 8 sectors equals the run it belongs to (epochs < R: the first, >= R: the new
 * one), within 1e-9; the interrupted epoch has no whole-frame result after the stop; epoch R has
 * whole-frame results and its SumSigUDF is bit-exact over the new run.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { TesseraClient } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';
import { epochMirror, lostWhole } from './faults-helpers.js';
import {
  cleanUp,
  defineAndStart,
  expectDamageConsistent,
  expectResults,
  launch,
  launchWithShuffle,
  lossesFromMirror,
  nearlyEqual as close,
  offline,
  simulate,
  UDFS,
  validCount,
  wholeFrameReference,
  WHOLE_FRAME_UDFS,
} from './pipeline-helpers.js';

afterEach(async () => {
  await cleanUp();
}, 30_000);

describe('the camera dies mid-scan under a continuous acquisition, then streams again', () => {
  it('the acquisition stays running, the interrupted epoch completes with the missing positions marked, and it resumes at a fresh epoch equal to offline over the new camera', async () => {
    // 32 positions: at 16 (tried for speed) a loaded machine that lags the camera lands the kill
    // early in an epoch more often, and with the chunks before it timed out no position before the
    // stop had data ("positions before the stop lost whole: expected 8 to be less than 8")
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const t0 = Date.now();
    const p = await launch({ merger: { chunkTimeoutMs: 3000, keepEpochs: 4 }, receiver: { streamIdleMs: 2000 } });
    const id = await defineAndStart(p, { scanShape: scan, udfs: UDFS, mode: 'continuous', chunkSize: 4 });
    const first = simulate(p, scan, ['--fps', '8', '--seed', '91', '--continuous']);
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= n + 8, 60_000, 'epoch 0 and the start of epoch 1 merged');
    first.kill();
    await first.exited;
    const killedAt = Date.now();

    // silence: streamIdleMs, then the merger's grace (chunkTimeoutMs), then the resume
    await waitUntil(async () => /resumes at epoch/.test((await p.client.api.get(id)).message ?? ''), 30_000, 'the resume decided');
    const waiting = await p.client.api.get(id);
    const m = /^detector stream stopped at scan position (\d+) of epoch (\d+); resumes at epoch (\d+) with the next detector acquisition$/.exec(waiting.message ?? '');
    expect(m, `message: ${waiting.message}`).not.toBeNull();
    const [at, stoppedEpoch, R] = [Number(m![1]), Number(m![2]), Number(m![3])];
    expect(waiting.state).toBe('running');
    expect(stoppedEpoch).toBeGreaterThanOrEqual(1);
    // R is the epoch after the last one with a frame: the stopped one, or the next when it stopped at its position 0
    expect(R).toBe(at === 0 ? stoppedEpoch : stoppedEpoch + 1);

    // the interrupted epoch: complete, the positions from `at` on missing in every sector, the rest the first camera's truth
    const interrupted = R - 1;
    const mi = await epochMirror(p, id, interrupted, n);
    const lostI = lostWhole(mi, n);
    // (stopped at position 0 of an epoch: the interrupted one is the epoch before, whole)
    const cameAll = at === 0 ? n : at;
    for (let i = cameAll; i < n; i++) expect(lostI, `position ${i} of epoch ${interrupted}, after the stop`).toContain(i);
    expect(lostI.filter((i) => i < cameAll).length, 'positions before the stop lost whole').toBeLessThan(cameAll);
    expectDamageConsistent(mi, n);
    expectResults(mi, await offline(scan, 91, lossesFromMirror(mi, n)));

    // the camera streams again: a new detector acquisition, block_count running on
    const second = simulate(p, scan, ['--fps', '10', '--seed', '92', '--continuous', '--frame-id-start', '5', '--block-count-start', String(32 * 100_000)]);
    const silenceMs = Date.now() - killedAt;
    const mr = await epochMirror(p, id, R, n);
    const resumed = await p.client.api.get(id);
    expect(resumed.state).toBe('running');
    expect(resumed.message).toBe(`detector stream stopped at scan position ${at} of epoch ${stoppedEpoch}; resumed at epoch ${R}`);
    expect(lostWhole(mr, n), `positions of epoch ${R} lost whole`).toEqual([]);
    expectDamageConsistent(mr, n);
    expectResults(mr, await offline(scan, 92, lossesFromMirror(mr, n)));
    second.kill();
    console.log(`resume: stopped at position ${at} of epoch ${stoppedEpoch}, ${n - at} positions marked missing, ${silenceMs} ms of silence, resumed at epoch ${R}; ${Date.now() - t0} ms in all`);
  }, 120_000);
});

/** One epoch's whole-frame buffers (and the tile UDF's, the damage map), copied out of the mirror; null when no whole-frame result was ever published there. */
interface WholeFrameEpoch {
  epoch: number;
  valid: Uint8Array;
  sectors: Uint8Array;
  fem: Float64Array;
}

async function wholeFrameEpoch(client: TesseraClient, id: string, epoch: number): Promise<WholeFrameEpoch | null> {
  client.subscribe({ acquisition: id, epoch });
  const m = await client.waitFor((x) => x.acquisition === id && x.epoch === epoch && x.get('_shuffle', 'valid') !== undefined && x.get('fem', 'intensity') !== undefined, 5000).catch(() => null);
  if (!m) return null;
  return { epoch, valid: (m.get('_shuffle', 'valid')!.data as Uint8Array).slice(), sectors: (m.get('_shuffle', 'sectors')!.data as Uint8Array).slice(), fem: (m.get('fem', 'intensity')!.data as Float64Array).slice() };
}

describe('a whole-frame UDF beside a tile UDF when the camera dies and streams again', () => {
  it('the shuffle part resumes too: epoch R holds whole-frame results over the new camera run, no epoch a result from a frame of the other run', async () => {
    const scan: [number, number] = [4, 4];
    const n = scan[0] * scan[1];
    const t0 = Date.now();
    const p = await launchWithShuffle({ chunkTimeoutMs: 3000 });
    const id = await defineAndStart(p, { scanShape: scan, udfs: WHOLE_FRAME_UDFS, mode: 'continuous', chunkSize: 4 });
    // every receiver holds the shuffle's selection for it before the camera starts
    await waitUntil(() => p.receivers.every((r) => r.lines.some((l) => l.msg === 'shuffle selection' && JSON.stringify(l.rules).includes(id))), 20_000, 'receivers hold the selection');
    const first = simulate(p, scan, ['--fps', '8', '--seed', '91', '--continuous']);
    await waitUntil(async () => (await p.client.api.get(id)).progress.framesMerged >= n + 6, 60_000, 'epoch 0 and the start of epoch 1 merged');
    first.kill();
    await first.exited;

    await waitUntil(async () => /resumes at epoch/.test((await p.client.api.get(id)).message ?? ''), 30_000, 'the resume decided');
    const m = /^detector stream stopped at scan position (\d+) of epoch (\d+); resumes at epoch (\d+) with the next detector acquisition$/.exec((await p.client.api.get(id)).message ?? '');
    expect(m).not.toBeNull();
    const [at, stoppedEpoch, R] = [Number(m![1]), Number(m![2]), Number(m![3])];
    // the shuffle took the resume (it no longer ends the whole-frame part there)
    await p.shuffle.waitFor((l) => l.msg === 'shuffle: acquisition resumes with the next detector acquisition' && l.acquisition === id, 10_000, 'the resume at the shuffle');
    expect(p.merger.lines.some((l) => /whole-frame UDFs do not resume/.test(String(l.msg)))).toBe(false);

    const second = simulate(p, scan, ['--fps', '10', '--seed', '92', '--continuous', '--frame-id-start', '5', '--block-count-start', String(32 * 100_000)]);
    // epoch R: the receivers' part complete, then the worker's results over it (they trail)
    const mr = await epochMirror(p, id, R, n);
    const losses = lossesFromMirror(mr, n);
    // all of them; or, when a frame of R was skipped or came incomplete on a loaded machine (15 of
    // 16 seen: the wait then ran its 40 s while the camera went on for 25 more epochs), those that
    // come before the camera is four epochs further: the shuffle holds at most 4 frames for the
    // worker (--max-queued), so what comes later is not of epoch R
    await Promise.race([
      p.client.waitFor((x) => x.acquisition === id && x.epoch === R && validCount(x) === n, 40_000).catch(() => null),
      waitUntil(async () => (await p.client.api.get(id)).epoch >= R + 4, 40_000, `epoch ${R + 4}`).catch(() => null),
    ]);
    const [refA, refB] = [await wholeFrameReference(scan, 91), await wholeFrameReference(scan, 92, losses)];
    // the tile UDF of epoch R: bit-exact over the new run
    const sumsig = mr.get('sumsig', 'intensity')!.data as Float64Array;
    for (let i = 0; i < n; i++) expect(Object.is(sumsig[i], refB.sumsig[i]), `sumsig/intensity[${i}] of epoch ${R}: ${sumsig[i]} vs ${refB.sumsig[i]}`).toBe(true);
    second.kill();
    await second.exited;

    // the two runs tell apart at the positions compared: a result from the wrong run could not pass
    const telling = Array.from({ length: n }, (_, i) => i).filter((i) => !close(refA.fem[i]!, refB.fem[i]!));
    expect(telling.length, 'positions where the two camera runs give another FEM result').toBeGreaterThanOrEqual(n - 2);
    const cameAll = at === 0 ? n : at;
    const { epochs } = await p.client.api.get(id);
    let wholeR = 0;
    let checked = 0;
    for (const e of epochs) {
      const c = await wholeFrameEpoch(p.client, id, e);
      if (!c) continue;
      const ref = e < R ? refA : refB;
      for (let i = 0; i < n; i++) {
        // after the stop no frame of the first run came; none of the second may land there
        if (e === R - 1 && i >= cameAll) expect(c.valid[i], `epoch ${e} position ${i}: after the stop`).toBe(0);
        if (!c.valid[i] || c.sectors[i] !== 8) continue;
        if (!close(c.fem[i]!, ref.fem[i]!)) throw new Error(`epoch ${e}: fem/intensity[${i}] = ${c.fem[i]}, expected ${ref.fem[i]} (camera run ${e < R ? 1 : 2}); the other run gives ${(e < R ? refB : refA).fem[i]}`);
        checked++;
        if (e === R) wholeR++;
      }
    }
    expect(wholeR, `whole-frame results in epoch ${R}`).toBeGreaterThanOrEqual(n / 2);
    expect(checked).toBeGreaterThan(wholeR);
    console.log(`resume with the shuffle: stopped at position ${at} of epoch ${stoppedEpoch}, resumed at epoch ${R}; ${wholeR}/${n} whole-frame results in epoch ${R}, ${checked} checked over ${epochs.length} epochs; ${Date.now() - t0} ms in all`);
  }, 150_000);
});
