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
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import { ShuffleLink } from '../../src/shuffle/shuffle-link.js';
import { ShuffleService } from '../../src/shuffle/shuffle-service.js';
import { SliceSender } from '../../receivers/slice-sender.js';
import type { SectorTile } from '../../receivers/tile.js';
import { freeTcpPort, waitUntil } from '../merger/live-helpers.js';
import { TestWorker } from './helpers.js';

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

const SCAN: [number, number] = [2, 4];
const P = SCAN[0] * SCAN[1];
const ROWS = FRAME_HEIGHT;

/** the pixel value of (camera run, frame index, sector): tells where a frame came from */
const valueOf = (run: number, index: number, sector: number) => (run * 211 + index * 13 + sector) & 0xfff;

describe('whole-frame UDFs across a resume', () => {
  it('frames of the next detector acquisition map from epoch R on; the old one after the end, a new one before the resume and a later one are never used', async () => {
    const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const s = await ShuffleService.start({ slices, frames, fixedRate: true });
    closers.push(() => s.close());
    const registry = new LiveStoreRegistry();
    const link = new ShuffleLink({ endpoint: slices, registry, keepEpochs: 8 });
    closers.push(() => link.close());
    const worker = new TestWorker(frames);
    closers.push(() => worker.close());
    const senders = Array.from({ length: 8 }, (_, sector) => new SliceSender({ sector, endpoint: slices }));
    closers.push(() => Promise.all(senders.map((x) => x.close())));
    await waitUntil(() => link.available(), 20_000, 'the link sees the shuffle with a worker');

    const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
    const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'acq-r', scanShape: SCAN, roi: null, udfs: [fem], chunkSize: 4, mode: 'continuous', start: null, resume: null };
    link.start(acquire, 'continuous');
    await waitUntil(() => senders.every((x) => x.book.list.some((r) => r.acquisition === 'acq-r')), 20_000, 'every sender holds the book');

    /** detector acquisition `acq` (ShutterSync number) of election round `round` begins at every receiver */
    const begin = (acq: number, round: number) => {
      for (const x of senders) x.onAcquisitionStart({ acquisition: acq, sector: 0, firstActiveKey: 0, round, scanPositions: P, continuous: true, joinedAt: 0, decidedBy: 'all', missingSectors: [] });
    };
    const pixels = new Uint16Array(ROWS * SECTOR_WIDTH);
    /** one frame of camera run `run` (detector acquisition `acq`) at every receiver; resolves when the worker has `expect` frames */
    const feed = async (run: number, acq: number, index: number) => {
      for (let sector = 0; sector < 8; sector++) {
        pixels.fill(valueOf(run, index, sector));
        const tile: SectorTile = { data: pixels, sector, acquisition: acq, epoch: 0, scanIndex: index % P, depth: 1, rows: ROWS, sigOrigin: [0, sector * SECTOR_WIDTH], sigShape: [ROWS, SECTOR_WIDTH], damage: Uint32Array.of(0), frames: [{ index, frameKey: index, frameId: index }] };
        senders[sector]!.onTile(tile);
      }
    };
    const sent = () => senders.reduce((n, x) => n + x.stats.slicesSent + x.stats.slicesDropped, 0);
    const feedSelected = async (run: number, acq: number, index: number) => {
      const before = worker.frames.length;
      await feed(run, acq, index);
      await waitUntil(() => worker.frames.length === before + 1, 20_000, `frame ${index} of run ${run} at the worker`);
    };
    const feedUnselected = async (run: number, acq: number, index: number) => {
      const before = sent();
      await feed(run, acq, index);
      expect(sent(), `frame ${index} of run ${run}: no slice sent`).toBe(before);
    };

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
