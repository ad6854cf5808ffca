/**
 * The shuffle service and the merger's ShuffleLink on real ZeroMQ sockets, in process: bad
 * input on every socket is counted and dropped (never a crash, the service goes on), slices
 * that no rule selects are dropped, a selected frame is reassembled and handed to a worker by
 * credit, and a worker's `frames` results are merged by the acquisition's WholeFrameMerger.
 */
import { describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { LIVE_PROTOCOL_VERSION, toWire, type AcquireMessage } from '../../src/protocol/live.js';
import { asFrameHeader, asSelection, decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION } from '../../src/shuffle/protocol.js';
import { waitUntil } from '../merger/live-helpers.js';
import { closeAfterEach, startShuffleWithLink } from './helpers.js';

const closers = closeAfterEach();

const V = SHUFFLE_PROTOCOL_VERSION;

describe('shuffle service on real sockets', () => {
  it('drops bad input (counted), ignores unselected slices, reassembles a selected frame for a worker; the link merges its results', async () => {
    const { slices, frames, service: s, registry, link } = await startShuffleWithLink(closers, { keepEpochs: 2 });
    const receivers = Array.from({ length: 8 }, (_, k) => {
      const d = new zmq.Dealer({ routingId: `slices-${k}`, linger: 0 });
      d.connect(slices);
      closers.push(() => d.close());
      return d;
    });
    const worker = new zmq.Dealer({ routingId: 'w1', linger: 0 });
    worker.connect(frames);
    closers.push(() => worker.close());

    // garbage on both sockets first
    await receivers[0]!.send(Buffer.from([0xc1, 0x00]));
    await receivers[0]!.send(encodeShuffle({ version: 99, type: 'hello', sector: 0, pid: 1, ruleVersion: 0 } as never));
    await receivers[0]!.send(encodeShuffle({ version: V, type: 'slice', sector: 0, round: 1, index: 0, acquisition: 'x', row0: 0, rows: 1, damage: 0 }));
    await worker.send(encodeShuffle({ version: V, type: 'credit', pid: 1, n: -3 } as never));
    await waitUntil(() => (s.dropped.TESSERA_ERR_BAD_MESSAGE ?? 0) >= 3 && (s.dropped.TESSERA_ERR_PROTOCOL_VERSION ?? 0) >= 1, 20_000, 'bad messages counted');

    // a worker and the merger's link: whole-frame UDFs are available now
    await worker.send(encodeShuffle({ version: V, type: 'credit', pid: 1, n: 4 }));
    await waitUntil(() => link.available(), 20_000, 'the link sees a shuffle with a worker');
    for (let k = 0; k < 8; k++) await receivers[k]!.send(encodeShuffle({ version: V, type: 'hello', sector: k, pid: 1, ruleVersion: 0 }));
    const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
    const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'acq-x', scanShape: [2, 4], roi: null, udfs: [fem], chunkSize: 4, mode: 'single', start: { shutterRound: 1, startIndex: 10 } };
    registry.create({ acquisition: 'acq-x', epoch: 0, scanShape: [2, 4], sectors: 8, info: {} });
    link.start(acquire, 'single');
    // the receivers get the selection: from index 10 on
    // (a hello with a stale version got the empty book first: read up to the acquisition's)
    const nextBook = async (n: number) => {
      for (;;) {
        const [raw] = await receivers[3]!.receive();
        const b = asSelection(decodeShuffle(raw!));
        if (b.rules.length >= n) return b;
      }
    };
    const book = await nextBook(1);
    expect(book.rules[0]).toMatchObject({ acquisition: 'acq-x', shutterRound: 1, startIndex: 10, fromIndex: 10, decimate: 1 });
    const got: Buffer[][] = [];
    void (async () => {
      for (;;) {
        try {
          got.push(await worker.receive());
        } catch {
          return;
        }
      }
    })();
    await waitUntil(() => got.some((m) => m.length === 1), 20_000, 'the worker got the acquisition');

    // frame index 9 is before the acquisition: dropped; index 13 (position 3) is reassembled
    const frame = Uint16Array.from({ length: FRAME_HEIGHT * FRAME_WIDTH }, (_, i) => (i * 13) & 0xfff);
    const sliceOf = (k: number) => {
      const out = new Uint16Array(FRAME_HEIGHT * SECTOR_WIDTH);
      for (let y = 0; y < FRAME_HEIGHT; y++) out.set(frame.subarray(y * FRAME_WIDTH + k * SECTOR_WIDTH, y * FRAME_WIDTH + (k + 1) * SECTOR_WIDTH), y * SECTOR_WIDTH);
      return Buffer.from(out.buffer);
    };
    for (const index of [9, 13]) {
      for (let k = 0; k < 8; k++) await receivers[k]!.send([encodeShuffle({ version: V, type: 'slice', sector: k, round: 1, index, acquisition: 'acq-x', row0: 0, rows: FRAME_HEIGHT, damage: 0 }), sliceOf(k)]);
    }
    await waitUntil(() => got.some((m) => m.length === 2), 20_000, 'a frame at the worker');
    const m = got.find((x) => x.length === 2)!;
    expect(asFrameHeader(decodeShuffle(m[0]!))).toMatchObject({ acquisition: 'acq-x', epoch: 0, position: 3, index: 13, damage: [0, 0, 0, 0, 0, 0, 0, 0] });
    expect(Buffer.compare(m[1]!, Buffer.from(frame.buffer))).toBe(0);
    expect(s.dropped.unselected).toBe(8);

    // the user clicks positions 1 and 6: a new rule from a safe index on, in every receiver
    link.select('acq-x', { kind: 'list', positions: [1, 6] });
    const book2 = await nextBook(2);
    expect(book2.rules).toHaveLength(2);
    expect(book2.rules[1]).toMatchObject({ base: { kind: 'list', positions: [1, 6] } });
    expect(book2.rules[1]!.fromIndex).toBeGreaterThan(13);
    expect(() => link.select('acq-other', { kind: 'all' })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_NOT_FOUND' }));

    // the worker's results reach the link (as the merger's results socket hands them on)
    const intensity = Float64Array.of(42.5);
    const results = encodeShuffle({ version: V, type: 'frames', acquisition: 'acq-x', worker: 'w1', epoch: 0, positions: Int32Array.of(3), sectors: Uint8Array.of(8), udfs: [{ id: 'fem', paramsVersion: 0, buffers: { intensity: toWire(intensity) } }], sentAt: Date.now() });
    link.onResults(results);
    link.onResults(results); // a duplicate is dropped
    link.onResults(Buffer.from([1, 2, 3]));
    const merger = link.merger('acq-x')!;
    expect(merger.counters.framesMerged).toBe(1);
    expect(merger.counters.dropped.duplicate).toBe(1);
    expect(link.dropped.TESSERA_ERR_BAD_MESSAGE).toBe(1);
    const r = merger.results(0)!;
    expect([...r.valid]).toEqual([0, 0, 0, 1, 0, 0, 0, 0]);
    expect((r.results[0]!.intensity!.data as unknown as Float64Array)[3]).toBe(42.5);
    merger.publish();
    const store = registry.get('acq-x', 0)!;
    expect([...(store.getBuffer('_shuffle', 'valid').data as Uint8Array)]).toEqual([0, 0, 0, 1, 0, 0, 0, 0]);
    expect((store.getBuffer('fem', 'intensity').data as Float64Array)[3]).toBe(42.5);
  }, 90_000);
});
