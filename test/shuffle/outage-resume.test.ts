/**
 * Whole-frame UDFs when a continuous acquisition goes on on the same detector acquisition after
 * a link outage, on real ZeroMQ sockets in process: eight real SliceSenders (fed synthetic sector
 * tiles), the ShuffleService, the merger's ShuffleLink and a worker DEALER that keeps the frames.
 *
 * The first leg runs round 5 (start null: index i = acquisition frame i). The link breaks, the
 * merger resumes {n 1, epoch R 2, afterRound 5} with start null: the shuffle waits for a detector
 * acquisition after round 5, so the rejoined round 5 is not used yet. The merger sees round 5
 * again and names it (the same resume with start {5, 0}, docs/shuffle.md): frames of round 5 from
 * index R x P on map to epoch index / P again (the old mapping), never a frame before R x P, and
 * a new camera run (round 6) is not used. Reference: each frame's pixels say which run and index
 * it is; the worker's frames must be exactly the expected ones, with their epochs and positions.
 */
import { describe, expect, it } from 'vitest';
import { SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { waitUntil } from '../merger/live-helpers.js';
import { closeAfterEach, sliceSenderRig, valueOf } from './helpers.js';

const closers = closeAfterEach();

const SCAN: [number, number] = [2, 4];
const P = SCAN[0] * SCAN[1];

describe('whole-frame UDFs across a link outage', () => {
  it('the rejoined detector acquisition is used once the merger names it, with its old mapping from R x P on; nothing of it before, no other run', async () => {
    const { service: s, link, worker, senders, acquire, begin, feedSelected, feedUnselected } = await sliceSenderRig(closers, { acquisition: 'acq-o', scan: SCAN });

    // the first leg: round 5 from index 0; the link breaks after frame 10 (epoch 1, position 2)
    begin(1, 5, 0);
    for (let i = 0; i < 11; i++) await feedSelected(1, 1, i);
    await waitUntil(() => senders.every((x) => x.book.list.every((r) => r.shutterRound === 5)), 20_000, 'round 5 pinned in every sender');
    const R = 2;
    const resume = { n: 1, epoch: R, afterRound: 5 };
    link.resume({ ...acquire, udfs: [], resume, rejoin: { shutterRound: 5, startIndex: 0 } });
    await waitUntil(() => senders.every((x) => x.book.list.length === 1 && x.book.list[0]!.afterRound === 5), 20_000, 'the resumed book in every sender');
    // the link back: the receivers rejoin round 5 (a new ShutterSync acquisition, joined at 40); not used yet
    begin(2, 5, 40);
    for (let i = 40; i < 43; i++) feedUnselected(1, 2, i);
    // the merger saw round 5 again: the same resume, round 5 named with its old mapping
    link.resume({ ...acquire, udfs: [], start: { shutterRound: 5, startIndex: 0 }, resume });
    await waitUntil(() => senders.every((x) => x.book.list.length === 1 && x.book.list[0]!.shutterRound === 5 && x.book.list[0]!.fromIndex === R * P), 20_000, 'the named book in every sender');
    expect(s.leg).toMatchObject({ n: 1, shutterRound: 5, afterRound: null, startIndex: 0, firstIndex: R * P });
    // a frame of round 5 before R x P (a straggler of the first leg): never used
    feedUnselected(1, 2, 11);
    for (let i = 43; i < 53; i++) await feedSelected(1, 2, i);
    // said again (the link to a restarted shuffle, a repeat): a no-op
    link.resume({ ...acquire, udfs: [], start: { shutterRound: 5, startIndex: 0 }, resume });
    await feedSelected(1, 2, 53);
    // a new camera run (round 6) before another resume: never used
    begin(3, 6, 0);
    for (let i = 0; i < 3; i++) feedUnselected(2, 3, i);

    const got = worker.frames.map((f) => ({ epoch: f.header.epoch, position: f.header.position, index: f.header.index, v: [...Array(8).keys()].map((k) => f.data[k * SECTOR_WIDTH]!) }));
    const want = [
      ...Array.from({ length: 11 }, (_, i) => i),
      ...Array.from({ length: 11 }, (_, i) => 43 + i),
    ].map((i) => ({ epoch: Math.floor(i / P), position: i % P, index: i, v: [...Array(8).keys()].map((k) => valueOf(1, i, k)) }));
    expect(got).toEqual(want);
    expect(s.acquisition?.start).toEqual({ shutterRound: 5, startIndex: 0 });
  }, 90_000);
});
