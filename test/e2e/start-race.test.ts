/**
 * An acquisition started right after the detector's shutter edge (the start race), every role a
 * real process: `tessera simulate --continuous` begins, and the acquisition is defined and
 * started as soon as the merger logs 'election decided' (the receivers' heartbeats, every
 * 250 ms, do not show the detector acquisition yet), and again with a new camera run ~100 ms
 * after its edge, and a third time just as the camera stops (the start named in its detector
 * acquisition is withdrawn) before a new camera run. Before the fix the receivers that took the acquire after their vote decided
 * waited for a next edge that never came: 0 partials, `running` forever. Now the acquisition
 * runs: a complete epoch (after the first, which may lack the chunks before a late join) equals
 * runUdf offline over the simulator's truth (integer sums bit-exact; blocks the damage map
 * reports lost on a loaded machine zeroed in the reference), with no position lost whole.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { LiveMirror } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';
import { completeEpoch } from './faults-helpers.js';
import { cleanUp, expectDamageConsistent, expectResults, launch, lossesFromMirror, offline, simulate, UDFS, type Pipeline } from './pipeline-helpers.js';

afterEach(cleanUp, 30_000);

const FULL = 0xffffffff;
const SCAN: [number, number] = [4, 4];
const N = SCAN[0] * SCAN[1];

const decisions = (p: Pipeline) => p.merger.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('election decided')).length;

async function define(p: Pipeline): Promise<string> {
  return (await p.client.api.define({ scanShape: SCAN, udfs: UDFS, mode: 'continuous', chunkSize: 4 })).id;
}

/** Resolves as soon as the merger's log line of election decision number `n` comes (waitFor wakes at each line; its predicate is asked again over all lines each time, so it counts afresh). */
function decision(p: Pipeline, n: number): Promise<unknown> {
  return p.merger.waitFor(() => decisions(p) >= n, 30_000, `election decision ${n}`);
}

/** The acquisition runs: the epoch after its first one, complete, no position lost whole, equal to offline over the truth of `seed`. */
async function expectRuns(p: Pipeline, id: string, seed: number): Promise<{ epoch: number; mirror: LiveMirror }> {
  await waitUntil(async () => (await p.client.api.get(id)).epochs.length > 0, 20_000, `a first epoch of ${id} merged`);
  const epoch = Math.min(...(await p.client.api.get(id)).epochs) + 1;
  await waitUntil(async () => (await p.client.api.get(id)).epochs.includes(epoch), 20_000, `epoch ${epoch} of ${id} begun`);
  await p.client.connect();
  p.client.subscribe({ acquisition: id, epoch });
  const mirror = await p.client.waitFor((m) => m.acquisition === id && m.epoch === epoch && completeEpoch(m, N), 20_000);
  const bits = mirror.get('_damage', 'sectorBlocks')!.data as Uint32Array;
  const lostWhole = Array.from({ length: N }, (_, i) => i).filter((i) => bits.subarray(i * 8, i * 8 + 8).every((b) => b === FULL));
  expect(lostWhole, `positions of epoch ${epoch} lost whole`).toEqual([]);
  expectDamageConsistent(mirror, N);
  expectResults(mirror, await offline(SCAN, seed, lossesFromMirror(mirror, N)));
  expect((await p.client.api.get(id)).state).toBe('running');
  return { epoch, mirror };
}

/** How the merger started it: the start point, and whether it had to name one afterwards. */
function startedHow(p: Pipeline, id: string): string {
  const started = p.merger.lines.find((l) => l.msg === 'acquisition started' && l.acquisition === id);
  const named = p.merger.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('receivers armed after the shutter edge') && l.acquisition === id);
  return `start ${JSON.stringify(started?.start ?? null)}${named ? `, then named ${JSON.stringify(named.start)} (armed ${JSON.stringify(named.armed)}, bound ${JSON.stringify(named.bound)})` : ''}`;
}

describe('an acquisition started right after the shutter edge', () => {
  it('runs, as soon as the election decided and ~100 ms after it, and a complete epoch equals offline over the truth', async () => {
    const t0 = Date.now();
    const p = await launch({ merger: { keepEpochs: 4, chunkTimeoutMs: 3000 }, receiver: { streamIdleMs: 1500 } });

    const t1 = Date.now();
    // 1: defined before, started as soon as the merger logs the decision
    const a = await define(p);
    const first = simulate(p, SCAN, ['--fps', '12', '--seed', '71', '--continuous']);
    await decision(p, 1);
    await p.client.api.start(a);
    const r1 = await expectRuns(p, a, 71);
    const t2 = Date.now();
    await p.client.api.abort(a);
    first.kill();
    await first.exited;
    // the receivers end that detector acquisition (stream stopped) before the next camera run
    await waitUntil(() => p.receivers.every((r) => r.lines.some((l) => l.msg === 'no frame from the detector: stream stopped, acquisition ended')), 20_000, 'the stream stopped in every receiver');

    // 2: a new camera run (block_count running on), started ~100 ms after its edge
    const t3 = Date.now();
    const decided = decisions(p);
    const b = await define(p);
    const second = simulate(p, SCAN, ['--fps', '12', '--seed', '72', '--continuous', '--frame-id-start', '5', '--block-count-start', String(32 * 100_000)]);
    await decision(p, decided + 1);
    await new Promise((r) => setTimeout(r, 100));
    await p.client.api.start(b);
    const r2 = await expectRuns(p, b, 72);
    await p.client.api.abort(b);

    // 3: started the moment the receivers noticed the camera stopped: heartbeats up to 250 ms old
    // still show its detector acquisition under way, so the start is named in it; once every
    // sector shows it gone, that start is withdrawn, and the acquisition runs on the next camera run
    const t4 = Date.now();
    const c = await define(p);
    second.kill();
    await second.exited;
    const stops = (r: Pipeline['receivers'][number]) => r.lines.filter((l) => l.msg === 'no frame from the detector: stream stopped, acquisition ended').length;
    await Promise.all(p.receivers.map((r) => r.waitFor(() => stops(r) >= 2, 20_000, 'the second stream stopped')));
    await p.client.api.start(c);
    const third = simulate(p, SCAN, ['--fps', '12', '--seed', '73', '--continuous', '--frame-id-start', '9', '--block-count-start', String(32 * 200_000)]);
    const r3 = await expectRuns(p, c, 73);
    third.kill();
    const withdrawn = p.merger.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('the detector acquisition the start was named in ended') && l.acquisition === c);
    console.log(
      `start race: at the decision: ${startedHow(p, a)}, epoch ${r1.epoch} checked; 100 ms after: ${startedHow(p, b)}, epoch ${r2.epoch} checked; as the camera stopped: ${startedHow(p, c)}${withdrawn ? ', withdrawn' : ''}, epoch ${r3.epoch} checked; launch ${t1 - t0} ms, case 1 ${t2 - t1} ms, camera stop ${t3 - t2} ms, case 2 ${t4 - t3} ms, case 3 ${Date.now() - t4} ms`,
    );
  }, 120_000);
});
