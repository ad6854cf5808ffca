/**
 * POST /api/acquisitions/:id/selection: which frames the shuffle gathers for whole-frame UDFs
 * (e.g. the scan positions the user clicked). A real merger with a real shuffle service and a
 * worker's credit on ZeroMQ; the receivers' slice sockets are the test's own DEALERs, which
 * must receive the new rule. Bad selections are 400s, a finished acquisition a 409, and one
 * without whole-frame UDFs a 404.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startMerger, type MergerProcess } from '../../src/merger/merger-process.js';
import { asSelection, decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION } from '../../src/shuffle/protocol.js';
import { ShuffleService } from '../../src/shuffle/shuffle-service.js';
import { FakeReceiver, freeTcpPort, liveConfig, waitUntil } from './live-helpers.js';

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function post(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

describe('frame selection route', () => {
  it('hands a clicked-positions rule to every receiver through the shuffle; refuses bad selections', async () => {
    const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const { path } = await liveConfig({ shuffle: { slices, frames } });
    const shuffle = await ShuffleService.start({ slices, frames, fixedRate: true });
    closers.push(() => shuffle.close());
    const merger: MergerProcess = await startMerger({ config: loadConfig(path), log: createLogger('selection-test', { level: 'silent' }), election: false, staticDir: null, statsIntervalMs: 0, livenessMs: 10_000 });
    closers.push(() => merger.close());
    const receivers = await Promise.all(Array.from({ length: 8 }, (_, s) => new FakeReceiver(s, merger.link.controlEndpoint, merger.link.resultsEndpoint).connect()));
    closers.push(() => receivers.forEach((r) => r.close()));
    // a worker with credit: whole-frame UDFs become available
    const worker = new zmq.Dealer({ routingId: 'w1', linger: 0 });
    worker.connect(frames);
    closers.push(() => worker.close());
    await worker.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'credit', pid: 1, n: 4 }));
    // the receivers' slice sockets: they learn the selection rules
    const sliceSockets = Array.from({ length: 8 }, (_, k) => {
      const d = new zmq.Dealer({ routingId: `slices-${k}`, linger: 0 });
      d.connect(slices);
      closers.push(() => d.close());
      return d;
    });
    for (let k = 0; k < 8; k++) await sliceSockets[k]!.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'hello', sector: k, pid: 1, ruleVersion: 0 }));
    const api = `${merger.url}/api`;

    const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
    let defined!: { status: number; body: Record<string, unknown> };
    await waitUntil(async () => {
      defined = await post(`${api}/acquisitions`, { scanShape: [4, 8], udfs: [fem, { id: 'sum', name: 'SumUDF' }], mode: 'continuous' });
      return defined.status === 201;
    }, 20_000, 'whole-frame UDFs accepted once the shuffle has a worker');
    const id = defined.body.id as string;
    expect((await post(`${api}/acquisitions/${id}/start`, {})).status).toBe(200);
    const clicked = await post(`${api}/acquisitions/${id}/selection`, { select: 'list:1,6,31' });
    expect(clicked.status).toBe(200);
    // every receiver's slice socket gets a book whose newest rule is the clicked positions
    await Promise.all(
      sliceSockets.map(async (d) => {
        for (;;) {
          const [raw] = await d.receive();
          const book = asSelection(decodeShuffle(raw!));
          const last = book.rules[book.rules.length - 1];
          if (last && last.acquisition === id && last.base.kind === 'list') {
            expect(last.base).toEqual({ kind: 'list', positions: [1, 6, 31] });
            return;
          }
        }
      }),
    );

    for (const bad of ['list:32', 'list:-1', 'every:0', 'nonsense', 'rect:1,2']) {
      const r = await post(`${api}/acquisitions/${id}/selection`, { select: bad });
      expect(r.status, bad).toBe(400);
      expect(r.body.code, bad).toBe('TESSERA_ERR_BAD_ARGUMENT');
    }
    expect((await post(`${api}/acquisitions/${id}/selection`, { select: 'all', extra: 1 })).status).toBe(400);
    expect((await post(`${api}/acquisitions/nope/selection`, { select: 'all' })).status).toBe(404);

    expect((await post(`${api}/acquisitions/${id}/abort`, {})).status).toBe(200);
    const after = await post(`${api}/acquisitions/${id}/selection`, { select: 'all' });
    expect(after.status).toBe(409);
    expect(after.body.code).toBe('TESSERA_ERR_ACQUISITION_STATE');

    // a tile-only acquisition has no frame selection
    const tileOnly = await post(`${api}/acquisitions`, { scanShape: [4, 8], udfs: [{ name: 'SumUDF' }] });
    expect(tileOnly.status).toBe(201);
    expect((await post(`${api}/acquisitions/${tileOnly.body.id as string}/selection`, { select: 'all' })).status).toBe(404);
  }, 90_000);
});
