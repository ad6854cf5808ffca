/**
 * A continuous acquisition with a whole-frame UDF resumes after its detector acquisition ended,
 * on real ZeroMQ sockets in process: eight real SliceSenders (the receivers' side, fed synthetic
 * sector tiles), the ShuffleService, the merger's ShuffleLink and a worker DEALER that keeps the
 * frames it gets.
 *
 * Reference: the frames fed in, each with pixels that say which camera run and frame index they
 * are. The first detector acquisition (round 5, the acquire's start null) maps index i to
 * epoch i / P; the shuffle pins round 5 at its first slice, so frames of a new camera run
 * (round 6) before the resume are never sent; after the resume {n 1, epoch R, afterRound 5}
 * frames of round 6 map to epoch R + i / P and old-round stragglers and a third run (round 7)
 * are never used.
 */
import { describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { waitUntil } from '../merger/live-helpers.js';
import { closeAfterEach, sliceSenderRig, valueOf } from './helpers.js';

const closers = closeAfterEach();

const SCAN: [number, number] = [2, 4];
const P = SCAN[0] * SCAN[1];

describe('whole-frame UDFs across a resume', () => {
  it('frames of the next detector acquisition map from epoch R on; the old one after the end, a new one before the resume and a later one are never used', async () => {
    const { service: s, link, worker, senders, acquire, begin, feedSelected, feedUnselected } = await sliceSenderRig(closers, { acquisition: 'acq-r', scan: SCAN });

    // the first camera run: round 5, index 0 = frame 0; its first slice pins the round in every sender
    begin(1, 5);
    for (let i = 0; i < 11; i++) await feedSelected(1, 1, i);
    await waitUntil(() => senders.every((x) => x.book.list.every((r) => r.shutterRound === 5)), 20_000, 'round 5 pinned in every sender');
    expect(s.leg).toMatchObject({ n: 0, shutterRound: 5, startIndex: 0 });
    // the camera died after frame 10 (epoch 1, position 2): a new run (round 6) comes before the merger resumes: not sent
    begin(2, 6);
    for (let i = 0; i < 3; i++) await feedUnselected(2, 2, i);

    // the merger resumes at R = ceil(11 / 8) = 2 after round 5
    const R = 2;
    link.resume({ ...acquire, udfs: [], resume: { n: 1, epoch: R, afterRound: 5 } });
    await waitUntil(() => senders.every((x) => x.book.list.length === 1 && x.book.list[0]!.startIndex === -R * P), 20_000, 'the resumed book in every sender');
    expect(senders[0]!.book.list[0]).toMatchObject({ shutterRound: null, afterRound: 5, fromIndex: 0 });
    // a straggler of the old run: never used
    await feedUnselected(1, 1, 11);
    // the second camera run's frames map from epoch R on (index 0 = frame R x P)
    for (let i = 0; i < 12; i++) await feedSelected(2, 2, i);
    await waitUntil(() => senders.every((x) => x.book.list.every((r) => r.shutterRound === 6)), 20_000, 'round 6 pinned in every sender');
    expect(s.leg).toMatchObject({ n: 1, shutterRound: 6, startIndex: -R * P, firstIndex: 0 });
    // a third run before another resume: never used
    begin(3, 7);
    for (let i = 0; i < 3; i++) await feedUnselected(3, 3, i);
    // the resume said again (a receiver's re-sent acquire, or the link's to a restarted shuffle): a no-op
    link.resume({ ...acquire, udfs: [], resume: { n: 1, epoch: R, afterRound: 5 } });
    await feedSelected(2, 2, 12);

    // every frame the worker got: its epoch and position from the run it came from, its pixels that run's
    const got = worker.frames.map((f) => ({ epoch: f.header.epoch, position: f.header.position, index: f.header.index, v: [...Array(8).keys()].map((k) => f.data[k * SECTOR_WIDTH]!) }));
    const want = [
      ...Array.from({ length: 11 }, (_, i) => ({ epoch: Math.floor(i / P), position: i % P, index: i, v: [...Array(8).keys()].map((k) => valueOf(1, i, k)) })),
      ...Array.from({ length: 13 }, (_, i) => ({ epoch: R + Math.floor(i / P), position: i % P, index: i, v: [...Array(8).keys()].map((k) => valueOf(2, i, k)) })),
    ];
    expect(got).toEqual(want);
    // whole frames, nothing zero-filled: the last row of the last sector is that run's too
    const last = worker.frames[worker.frames.length - 1]!;
    expect(last.data[FRAME_HEIGHT * FRAME_WIDTH - 1]).toBe(valueOf(2, 12, 7));
    expect(last.header.damage).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    // the shuffle holds the resumed acquisition with its whole-frame UDFs (what a joining worker gets)
    expect(worker.acquire?.acquisition).toBe('acq-r');
    expect(s.acquisition?.resume).toEqual({ n: 1, epoch: R, afterRound: 5 });
    expect(s.acquisition?.udfs.map((u) => u.id)).toEqual(['fem']);
  }, 90_000);
});
