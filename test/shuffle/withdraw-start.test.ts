/**
 * A start the merger named in a detector acquisition that ended before anything bound, then
 * withdrew (AcquisitionManager.withdrawStaleStart), on real ZeroMQ sockets in process: eight
 * real SliceSenders, the ShuffleService, the merger's ShuffleLink and a worker DEALER. While the
 * start names round 1, frames of a new camera run (round 2) are never sent; once withdrawn
 * (start null) the shuffle maps the detector acquisition it sees next from index 0, as the
 * receivers do. Reference: each frame's pixels say which camera run and index it is.
 */
import { describe, expect, it } from 'vitest';
import { SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { waitUntil } from '../merger/live-helpers.js';
import { closeAfterEach, sliceSenderRig, valueOf } from './helpers.js';

const closers = closeAfterEach();

const SCAN: [number, number] = [2, 4];
const P = SCAN[0] * SCAN[1];

describe('whole-frame UDFs when the named start is withdrawn', () => {
  it('no frame of another round while the start names round 1; after the withdrawal the next detector acquisition maps from index 0', async () => {
    const { service: s, link, worker, senders, acquire, begin, feedSelected, feedUnselected } = await sliceSenderRig(closers, { acquisition: 'acq-w', scan: SCAN, start: { shutterRound: 1, startIndex: 16 } });
    expect(s.leg).toMatchObject({ n: 0, shutterRound: 1, startIndex: 16 });
    // round 1 ended before index 16; a new camera run (round 2) does not match the named start
    begin(2, 2);
    for (let i = 0; i < 3; i++) feedUnselected(2, 2, i);
    begin(3, 3);

    link.withdrawStart({ ...acquire, udfs: [], start: null });
    await waitUntil(() => senders.every((x) => x.book.list.length === 1 && x.book.list[0]!.shutterRound === null), 20_000, 'the start-null book in every sender');
    expect(s.leg).toMatchObject({ n: 0, shutterRound: null, afterRound: null, startIndex: 0, firstIndex: 0 });
    for (let i = 0; i < P + 2; i++) await feedSelected(3, 3, i);
    expect(s.leg.shutterRound).toBe(3);
    // said again (a re-sent acquire): a no-op once slices came
    link.withdrawStart({ ...acquire, udfs: [], start: null });
    await feedSelected(3, 3, P + 2);

    const got = worker.frames.map((f) => ({ epoch: f.header.epoch, position: f.header.position, v: [...Array(8).keys()].map((k) => f.data[k * SECTOR_WIDTH]!) }));
    const want = Array.from({ length: P + 3 }, (_, i) => ({ epoch: Math.floor(i / P), position: i % P, v: [...Array(8).keys()].map((k) => valueOf(3, i, k)) }));
    expect(got).toEqual(want);
    expect(s.acquisition?.start).toBeNull();
    expect(s.acquisition?.udfs.map((u) => u.id)).toEqual(['fem']);
  }, 60_000);
});
