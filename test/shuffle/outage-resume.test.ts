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
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
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
const valueOf = (run: number, index: number, sector: number) => (run * 211 + index * 13 + sector) & 0xfff;

describe('whole-frame UDFs across a link outage', () => {
  it('the rejoined detector acquisition is used once the merger names it, with its old mapping from R x P on; nothing of it before, no other run', async () => {
    const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const s = await ShuffleService.start({ slices, frames, fixedRate: true });
    closers.push(() => s.close());
    const link = new ShuffleLink({ endpoint: slices, registry: new LiveStoreRegistry(), keepEpochs: 8 });
    closers.push(() => link.close());
    const worker = new TestWorker(frames);
    closers.push(() => worker.close());
    const senders = Array.from({ length: 8 }, (_, sector) => new SliceSender({ sector, endpoint: slices }));
    closers.push(() => Promise.all(senders.map((x) => x.close())));
    await waitUntil(() => link.available(), 20_000, 'the link sees the shuffle with a worker');

    const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
    const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'acq-o', scanShape: SCAN, roi: null, udfs: [fem], chunkSize: 4, mode: 'continuous', start: null, resume: null };
    link.start(acquire, 'continuous');
    await waitUntil(() => senders.every((x) => x.book.list.some((r) => r.acquisition === 'acq-o')), 20_000, 'every sender holds the book');

    const begin = (acq: number, round: number, joinedAt: number) => {
      for (const x of senders) x.onAcquisitionStart({ acquisition: acq, sector: 0, firstActiveKey: 0, round, scanPositions: P, continuous: true, joinedAt, decidedBy: 'all', missingSectors: [] });
    };
    const pixels = new Uint16Array(ROWS * SECTOR_WIDTH);
    const feed = (run: number, acq: number, index: number) => {
      for (let sector = 0; sector < 8; sector++) {
        pixels.fill(valueOf(run, index, sector));
        const tile: SectorTile = { data: pixels, sector, acquisition: acq, epoch: 0, scanIndex: index % P, depth: 1, rows: ROWS, sigOrigin: [0, sector * SECTOR_WIDTH], sigShape: [ROWS, SECTOR_WIDTH], damage: Uint32Array.of(0), frames: [{ index, frameKey: index, frameId: index }] };
        senders[sector]!.onTile(tile);
      }
    };
    const sent = () => senders.reduce((n, x) => n + x.stats.slicesSent + x.stats.slicesDropped, 0);
    const feedSelected = async (run: number, acq: number, index: number) => {
      const before = worker.frames.length;
      feed(run, acq, index);
      await waitUntil(() => worker.frames.length === before + 1, 20_000, `frame ${index} of run ${run} at the worker`);
    };
    const feedUnselected = (run: number, acq: number, index: number) => {
      const before = sent();
      feed(run, acq, index);
      expect(sent(), `frame ${index} of run ${run}: no slice sent`).toBe(before);
    };

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
