/**
 * The merger's side of an acquisition started just after the detector's shutter edge (the start
 * race): AcquisitionManager driven with the receivers' heartbeats and partials (computed by
 * PartitionTask over the sector slices of simulator frames, as receivers do).
 *  - heartbeats show the detector acquisition decided but no tile yet (lastIndex null): the
 *    start is its next safe repetition, not null (which the receivers would never run);
 *  - heartbeats still stale at the start (start null), then the receivers report they are armed
 *    but not bound while the detector acquisition is under way (runState): the merger names a
 *    concrete start and re-sends acquire; {r, 0} when one sector bound at index 0 already.
 * Merged results are compared with runUdf offline over the frames the mapping names, bit-exact.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquireMessage, LiveRunState } from '../../src/protocol/live.js';
import { computePartial, contextOf, waitUntil } from './live-helpers.js';
import { CHUNK, closeManagers, continuousDefinition, expectEqual, FULL, managerWithOutbox, N, offline, receiverHeartbeat, SCAN } from './manager-rig.js';

afterEach(closeManagers);

interface Beat {
  phase: string;
  acquisition?: string | null;
  shutterRound?: number | null;
  lastIndex?: number | null;
  runState?: LiveRunState | null;
  received?: number;
  sentAt?: number;
}

function setUp() {
  const { m, registry, sent, acquires } = managerWithOutbox();
  const heartbeat = (sector: number, b: Beat) =>
    m.onControl(
      receiverHeartbeat(sector, {
        phase: b.phase,
        acquisition: b.acquisition ?? null,
        lastIndex: b.lastIndex ?? null,
        shutterRound: b.shutterRound ?? null,
        runState: b.runState ?? null,
        counters: { received: b.received ?? 0 },
        sentAt: b.sentAt ?? Date.now(),
      }),
    );
  const all = (b: Beat) => {
    for (let s = 0; s < 8; s++) heartbeat(s, b);
  };
  const start = () => {
    const id = m.define(continuousDefinition).id;
    m.start(id);
    return id;
  };
  /** sector `s`'s partial of (epoch, chunk) over detector frames startIndex + epoch x N + position */
  const deliver = (acquire: AcquireMessage, sectors: number[], epoch: number, chunk: number, frame: (index: number) => Uint16Array) => {
    const context = contextOf(acquire);
    const startIndex = acquire.start?.startIndex ?? 0;
    for (const s of sectors) m.onPartial(computePartial(acquire, s, epoch, chunk, (pos) => frame(startIndex + epoch * N + pos), { context }));
  };
  return { m, registry, sent, heartbeat, all, acquires, start, deliver };
}

/** Detector frame `index` of a continuous scan of the simulated scene: frame index mod N. */
function detectorFrames(seed: number): (index: number) => Uint16Array {
  const sim = new SimulatedScan({ scanShape: SCAN, seed });
  const frames = Array.from({ length: N }, (_, i) => sim.frame(i));
  return (index) => frames[index % N]!;
}

/** Merge epoch 0 from every sector under the acquire's mapping and compare it with offline over those detector frames. */
async function expectEpochZero(t: ReturnType<typeof setUp>, id: string, acquire: AcquireMessage, frame: (index: number) => Uint16Array): Promise<void> {
  const all = [0, 1, 2, 3, 4, 5, 6, 7];
  t.deliver(acquire, all, 0, 0, frame);
  t.deliver(acquire, all, 0, 1, frame);
  const e0 = t.m.epochResults(id).find((e) => e.epoch === 0)!;
  expect(e0.complete).toBe(true);
  const s = acquire.start!.startIndex;
  expectEqual(e0.results.results(), await offline(Array.from({ length: N }, (_, p) => frame(s + p))), 'epoch 0');
}

describe('AcquisitionManager: an acquisition started right after the shutter edge', () => {
  it('heartbeats show the detector acquisition decided but no tile yet: the start is its next safe repetition (index -1 + in flight), not null', async () => {
    const t = setUp();
    t.all({ phase: 'acquiring', shutterRound: 5, lastIndex: null });
    const id = t.start();
    const acquire = t.acquires()[0]!;
    expect(t.acquires().length).toBe(8);
    // in flight: one chunk (no frame rate known): ceil((-1 + 1 + 4) / 8) x 8
    expect(acquire.start).toEqual({ shutterRound: 5, startIndex: 8 });
    await expectEpochZero(t, id, acquire, detectorFrames(21));
  });

  it('with the camera streaming before the edge, the datagram rate sizes the frames in flight', () => {
    const t = setUp();
    const t0 = Date.now() - 2000;
    // 12 800 datagrams/s = 400 frames/s per sector (32 blocks a frame): 200 frames in 500 ms
    t.all({ phase: 'armed', received: 0, sentAt: t0 });
    const seen = Date.now();
    t.all({ phase: 'acquiring', shutterRound: 2, lastIndex: null, received: 12_800, sentAt: t0 + 1000 });
    t.start();
    // plus the frames that may have come since the heartbeats, at 400 frames/s (a loaded machine
    // takes a while between them and the start)
    const since = Math.ceil((400 * (Date.now() - seen)) / 1000);
    const start = t.acquires()[0]!.start!;
    expect(start.shutterRound).toBe(2);
    expect(start.startIndex % N).toBe(0);
    expect(start.startIndex).toBeGreaterThanOrEqual(200);
    expect(start.startIndex).toBeLessThanOrEqual(200 + since + 2 * N);
  });

  it('stale heartbeats at the start (start null), then every receiver armed but not bound on round r: start named at the next safe repetition and acquire re-sent', async () => {
    const t = setUp();
    t.all({ phase: 'voting' });
    const id = t.start();
    expect(t.acquires()[0]!.start).toBeNull();
    // older receivers (no runState): nothing to go on
    t.all({ phase: 'acquiring', acquisition: id, shutterRound: 6, lastIndex: 3 });
    expect(t.acquires().length).toBe(8);
    // seven armed on round 6, one still voting: not yet (its vote may still bind it at index 0)
    for (let s = 0; s < 7; s++) t.heartbeat(s, { phase: 'acquiring', acquisition: id, shutterRound: 6, lastIndex: 3, runState: 'armed' });
    t.heartbeat(7, { phase: 'voting', acquisition: id, runState: 'armed' });
    expect(t.acquires().length).toBe(8);
    // the eighth armed on round 6 as well: every sector agrees, named at ceil((3 + 1 + 4) / 8) x 8
    t.heartbeat(7, { phase: 'acquiring', acquisition: id, shutterRound: 6, lastIndex: 2, runState: 'armed' });
    const named = t.acquires().slice(8);
    expect(named.length).toBe(8);
    expect(named.every((a) => a.acquisition === id && a.start?.shutterRound === 6 && a.start.startIndex === 8 && !a.resume)).toBe(true);
    expect(t.m.get(id).state).toBe('running');
    // once named, more heartbeats (still armed, not yet bound) do not name it again
    t.all({ phase: 'acquiring', acquisition: id, shutterRound: 6, lastIndex: 5, runState: 'armed' });
    expect(t.acquires().length).toBe(16);
    await expectEpochZero(t, id, named[0]!, detectorFrames(22));
  });

  it('a sector that never reaches round r (no stream): named after the grace time', async () => {
    const t = setUp();
    t.all({ phase: 'armed' });
    const id = t.start();
    for (let s = 0; s < 7; s++) t.heartbeat(s, { phase: 'acquiring', acquisition: id, shutterRound: 3, lastIndex: 10, runState: 'armed' });
    t.heartbeat(7, { phase: 'armed', acquisition: id, runState: 'armed' });
    expect(t.acquires().length).toBe(8);
    await new Promise((r) => setTimeout(r, 1100));
    expect(t.acquires().length).toBe(8);
    t.heartbeat(0, { phase: 'acquiring', acquisition: id, shutterRound: 3, lastIndex: 12, runState: 'armed' });
    const named = t.acquires().slice(8);
    expect(named.length).toBe(8);
    // the newest frame 12 (+ what came since: nothing at no known rate) + one chunk in flight: 24
    expect(named[0]!.start).toEqual({ shutterRound: 3, startIndex: 24 });
  });

  it('one sector bound at index 0 (its acquire came while its vote was open), the others armed: start {r, 0}, and the chunks they miss are filled in', async () => {
    const t = setUp();
    t.all({ phase: 'voting' });
    const id = t.start();
    const first = t.acquires()[0]!;
    t.heartbeat(0, { phase: 'acquiring', acquisition: id, shutterRound: 4, lastIndex: 2, runState: 'running' });
    expect(t.acquires().length).toBe(8);
    t.heartbeat(1, { phase: 'acquiring', acquisition: id, shutterRound: 4, lastIndex: 2, runState: 'armed' });
    const named = t.acquires().slice(8);
    expect(named.length).toBe(8);
    expect(named[0]!.start).toEqual({ shutterRound: 4, startIndex: 0 });
    // sector 0 ran from index 0; the others join at their next chunk boundary (position 4)
    const frame = detectorFrames(23);
    t.deliver(first, [0], 0, 0, frame);
    t.deliver(named[0]!, [0, 1, 2, 3, 4, 5, 6, 7], 0, 1, frame);
    await waitUntil(() => t.m.epochResults(id).find((e) => e.epoch === 0)?.complete ?? false, 10_000, 'epoch 0 complete (chunk 0 filled in)');
    const bits = t.registry.get(id, 0)!.getBuffer('_damage', 'sectorBlocks').data as Uint32Array;
    const damage = Array.from({ length: N }, (_, p) => Array.from(bits.subarray(p * 8, p * 8 + 8)));
    expect(damage).toEqual(Array.from({ length: N }, (_, p) => Array.from({ length: 8 }, (_, s) => (p < CHUNK && s > 0 ? FULL : 0))));
  });

  it('a start named in a detector acquisition that stops before the receivers reach it is withdrawn: the next camera run binds at index 0', async () => {
    const t = setUp();
    // the camera has just stopped; the heartbeats still show its detector acquisition (round 1)
    t.all({ phase: 'acquiring', shutterRound: 1, lastIndex: 100 });
    const id = t.start();
    expect(t.acquires()[0]!.start?.shutterRound).toBe(1);
    // armed, still in round 1, waiting for the named index: nothing to withdraw
    t.all({ phase: 'acquiring', acquisition: id, shutterRound: 1, lastIndex: 101, runState: 'armed' });
    // stream stopped in seven sectors; the eighth still in round 1: not yet
    for (let s = 0; s < 7; s++) t.heartbeat(s, { phase: 'armed', acquisition: id, runState: 'armed' });
    await new Promise((r) => setTimeout(r, 900));
    for (let s = 0; s < 7; s++) t.heartbeat(s, { phase: 'armed', acquisition: id, runState: 'armed' });
    expect(t.acquires().length).toBe(8);
    // every sector ended round 1: withdrawn only after three heartbeat periods, not at one stale heartbeat
    t.all({ phase: 'armed', acquisition: id, runState: 'armed' });
    expect(t.acquires().length).toBe(8);
    await new Promise((r) => setTimeout(r, 800));
    t.all({ phase: 'armed', acquisition: id, runState: 'armed' });
    const withdrawn = t.acquires().slice(8);
    expect(withdrawn.length).toBe(8);
    expect(withdrawn.every((a) => a.acquisition === id && a.start === null && !a.resume)).toBe(true);
    expect(t.m.get(id).state).toBe('running');
    // said once: more heartbeats of armed receivers with no detector acquisition send nothing
    await new Promise((r) => setTimeout(r, 800));
    t.all({ phase: 'armed', acquisition: id, runState: 'armed' });
    expect(t.acquires().length).toBe(16);
    // the next camera run (round 2) binds every sector at index 0: epoch 0 is its first repetition
    t.all({ phase: 'acquiring', acquisition: id, shutterRound: 2, lastIndex: 3, runState: 'running' });
    expect(t.acquires().length).toBe(16);
    const frame = detectorFrames(24);
    t.deliver(withdrawn[0]!, [0, 1, 2, 3, 4, 5, 6, 7], 0, 0, frame);
    t.deliver(withdrawn[0]!, [0, 1, 2, 3, 4, 5, 6, 7], 0, 1, frame);
    const e0 = t.m.epochResults(id).find((e) => e.epoch === 0)!;
    expect(e0.complete).toBe(true);
    expectEqual(e0.results.results(), await offline(Array.from({ length: N }, (_, p) => frame(p))), 'epoch 0');
  });

  it('withdrawn when the next camera run is already under way: then named in it, as for a start just after its edge', async () => {
    const t = setUp();
    t.all({ phase: 'acquiring', shutterRound: 1, lastIndex: 50 });
    const id = t.start();
    // the new camera run came before the stream-stopped end reached the merger: round 2, armed for round 1
    const beat = () => t.all({ phase: 'acquiring', acquisition: id, shutterRound: 2, lastIndex: 6, runState: 'armed' });
    beat();
    // past the withdrawal's grace (three heartbeat periods), then the heartbeats again
    await new Promise((r) => setTimeout(r, 800));
    beat();
    const after = t.acquires().slice(8);
    // withdrawn (start null), and at once named in round 2 (every sector armed there): ceil((6 + 1 + 4) / 8) x 8
    expect(after.map((a) => a.start)).toEqual([...new Array(8).fill(null), ...new Array(8).fill({ shutterRound: 2, startIndex: 16 })]);
  });
});
