/**
 * A FrameWorker on real sockets behind an in-process ShuffleService, its results merged by the
 * merger's ShuffleLink: every frame's whole-frame UDF result equals runUdf on that frame, and a
 * parameter change applies from the chunk it names on (the chunks before keep the old ones),
 * as in the receivers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import { encodeShuffle, FRAMES_TAG, SHUFFLE_PROTOCOL_VERSION } from '../../src/shuffle/protocol.js';
import { ShuffleLink } from '../../src/shuffle/shuffle-link.js';
import { ShuffleService } from '../../src/shuffle/shuffle-service.js';
import { FrameWorker } from '../../src/shuffle/worker.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { freeTcpPort, SIG, waitUntil } from '../merger/live-helpers.js';

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

const FRAME = FRAME_HEIGHT * FRAME_WIDTH;

function frameOf(index: number): Uint16Array {
  const f = new Uint16Array(FRAME);
  let x = index * 2654435761;
  for (let i = 0; i < FRAME; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    f[i] = (x >>> 20) & 0x3ff;
  }
  return f;
}

describe('frame worker behind the shuffle', () => {
  it('results equal runUdf per frame; new parameters apply from the chunk they name', async () => {
    const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const results = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const shuffle = await ShuffleService.start({ slices, frames, fixedRate: true, maxQueued: 16 });
    closers.push(() => shuffle.close());
    const registry = new LiveStoreRegistry();
    const link = new ShuffleLink({ endpoint: slices, registry, keepEpochs: 2 });
    closers.push(() => link.close());
    const pull = new zmq.Pull({ linger: 0 });
    await pull.bind(results);
    closers.push(() => pull.close());
    void (async () => {
      for (;;) {
        try {
          const m = await pull.receive();
          if (m.length === 2 && m[0]!.toString() === FRAMES_TAG) link.onResults(m[1]!);
        } catch {
          return;
        }
      }
    })();
    const worker = FrameWorker.start({ frames, results, credits: 4, flushMs: 50 });
    closers.push(() => worker.close());
    await waitUntil(() => link.available(), 20_000, 'a shuffle with a worker');
    const receivers = Array.from({ length: 8 }, (_, k) => {
      const d = new zmq.Dealer({ routingId: `slices-${k}`, linger: 0 });
      d.connect(slices);
      closers.push(() => d.close());
      return d;
    });

    const before = { center: [930, 1024], radIn: 10, radOut: 400 };
    const after = { center: [900, 1000], radIn: 50, radOut: 200 };
    const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'acq-p', scanShape: [2, 4], roi: null, udfs: [{ id: 'fem', name: 'FEMUDF', params: before }], chunkSize: 4, mode: 'single', start: { shutterRound: 1, startIndex: 0 } };
    registry.create({ acquisition: 'acq-p', epoch: 0, scanShape: [2, 4], sectors: 8, info: {} });
    link.start(acquire, 'single');
    await waitUntil(() => shuffle.acquisition?.acquisition === 'acq-p', 20_000, 'the shuffle has the acquisition');
    const send = async (index: number) => {
      const f = frameOf(index);
      for (let k = 0; k < 8; k++) {
        const px = new Uint16Array(FRAME_HEIGHT * SECTOR_WIDTH);
        for (let y = 0; y < FRAME_HEIGHT; y++) px.set(f.subarray(y * FRAME_WIDTH + k * SECTOR_WIDTH, y * FRAME_WIDTH + (k + 1) * SECTOR_WIDTH), y * SECTOR_WIDTH);
        await receivers[k]!.send([encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'slice', sector: k, round: 1, index, acquisition: 'acq-p', row0: 0, rows: FRAME_HEIGHT, damage: 0 }), Buffer.from(px.buffer)]);
      }
    };
    const merger = link.merger('acq-p')!;
    for (const i of [0, 1, 2, 3]) await send(i);
    await waitUntil(() => merger.counters.framesMerged >= 4, 30_000, 'chunk 0 merged');
    // parameters the UDF refuses are refused before anything is sent
    expect(() => link.checkChange({ name: 'FEMUDF', params: before }, { name: 'FEMUDF', params: { radIn: 5 } }, [2, 4], null)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    link.checkChange({ name: 'FEMUDF', params: before }, { name: 'FEMUDF', params: after }, [2, 4], null);
    // the new parameters apply from frame 4: chunk 1
    link.params('acq-p', 'fem', after, 4);
    await new Promise((r) => setTimeout(r, 300));
    for (const i of [4, 5, 6, 7]) await send(i);
    await waitUntil(() => merger.counters.framesMerged >= 8, 30_000, 'chunk 1 merged');

    const got = merger.results(0)!;
    expect([...got.valid]).toEqual(new Array(8).fill(1));
    const live = got.results[0]!.intensity!.data as unknown as Float64Array;
    for (let i = 0; i < 8; i++) {
      const [r] = await runUdf(new MemoryDataSet({ data: frameOf(i), navShape: [1], sigShape: SIG }), [createUdf({ name: 'FEMUDF', params: i < 4 ? before : after })]);
      const want = (r!.intensity!.data as unknown as Float64Array)[0]!;
      expect(Math.abs(live[i]! - want), `frame ${i}`).toBeLessThanOrEqual(1e-9 * Math.abs(want));
    }
    // the two parameter sets really differ on these frames
    const [old4] = await runUdf(new MemoryDataSet({ data: frameOf(4), navShape: [1], sigShape: SIG }), [createUdf({ name: 'FEMUDF', params: before })]);
    expect((old4!.intensity!.data as unknown as Float64Array)[0]).not.toBeCloseTo(live[4]!, 6);
  }, 90_000);
});
