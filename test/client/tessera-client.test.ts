/**
 * The protocol client: typed arrays of every dtype through the real encoding and back into
 * the mirror, the mirror's consistency checks, recovery from a mirror out of step (a fresh
 * snapshot), and the HTTP helpers against a real merger web server.
 */
import { Unpackr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { LiveMirror, MirrorSyncError, TesseraApiError, TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { createLogger } from '../../src/log.js';
import { LiveStore, LiveStoreRegistry } from '../../src/merger/live-store.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { decodeMessage, DTYPES, encodeMessage, WS_PROTOCOL_VERSION, type DType, type UpdateMessage } from '../../src/protocol/ws-messages.js';
import { InMemoryController } from '../merger/in-memory-controller.js';
import { waitUntil } from '../merger/live-helpers.js';

const logger = createLogger('test-client', { level: 'silent' });

/** Values of a dtype with its extremes, and the typed array class the mirror must use. */
const SAMPLES: Record<DType, [unknown[], string]> = {
  bool: [[0, 1, 1, 0], 'Uint8Array'],
  int8: [[-128, 127, 0, -1], 'Int8Array'],
  uint8: [[0, 255, 7, 128], 'Uint8Array'],
  int16: [[-32768, 32767, 0, -2], 'Int16Array'],
  uint16: [[0, 65535, 300, 1], 'Uint16Array'],
  int32: [[-(2 ** 31), 2 ** 31 - 1, 0, -3], 'Int32Array'],
  uint32: [[0, 2 ** 32 - 1, 5, 2 ** 31], 'Uint32Array'],
  int64: [[-(2n ** 63n), 2n ** 63n - 1n, 0n, -4n], 'BigInt64Array'],
  uint64: [[0n, 2n ** 64n - 1n, 2n ** 53n + 1n, 9n], 'BigUint64Array'],
  float32: [[Math.fround(0.1), -0, Infinity, NaN], 'Float32Array'],
  float64: [[0.1, -1e300, 5e-324, -Infinity], 'Float64Array'],
  complex64: [[Math.fround(1.5), Math.fround(-2.25), 0, NaN, 3, 4, -5, 6], 'Float32Array'],
  complex128: [[0.1, 0.2, -0.3, 1e-310, 7, 8, 9, 10], 'Float64Array'],
};

describe('LiveMirror and the typed-array encoding', () => {
  it.each(DTYPES)('%s: nav, sig and single buffers arrive as typed arrays of that dtype, values exact', (dtype) => {
    const [values, ctorName] = SAMPLES[dtype];
    const scalars = dtype.startsWith('complex') ? 2 : 1;
    const store = new LiveStore({ acquisition: 'a', scanShape: [2, 2] });
    store.defineBuffer({ udfId: 'n', name: 'x', kind: 'nav', dtype, shape: [2, 2] });
    store.defineBuffer({ udfId: 's', name: 'x', kind: 'sig', dtype, shape: [4] });
    store.defineBuffer({ udfId: 'g', name: 'x', kind: 'single', dtype, shape: [values.length / scalars] });
    const typed = (n: number) => {
      const ctor = (globalThis as unknown as Record<string, new (a: unknown[]) => ArrayLike<unknown>>)[ctorName]!;
      return new ctor(values.concat(values).slice(0, n));
    };
    store.updateNavRange('n', 'x', 1, 3, typed(2 * scalars) as never);
    store.setSig('s', 'x', typed(4 * scalars) as never);
    store.setSingle('g', 'x', typed(values.length) as never);

    const message: UpdateMessage = { v: WS_PROTOCOL_VERSION, type: 'snapshot', t: 0, ...store.diffSince(0) };
    const bytes = encodeMessage(message, 1 << 16);
    // on the wire: plain msgpack maps, typed arrays as bin (any msgpack decoder reads them as bytes)
    const plain = new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(bytes) as UpdateMessage;
    expect(plain.buffers[0]!.ranges[0]!.data).toBeInstanceOf(Uint8Array);
    const mirror = new LiveMirror();
    mirror.apply(decodeMessage(bytes) as UpdateMessage, bytes.byteLength);
    const nav = mirror.get('n', 'x')!;
    expect(nav.data.constructor.name).toBe(ctorName);
    // positions 1 and 2 written, 0 and 3 still zero
    const zeros = new Array(scalars).fill(dtype === 'int64' || dtype === 'uint64' ? 0n : 0);
    const expectedNav = [...zeros, ...values.slice(0, 2 * scalars), ...zeros];
    expect(Array.from(nav.data as ArrayLike<unknown>)).toEqual(expectedNav);
    expect(Array.from(mirror.get('s', 'x')!.data as ArrayLike<unknown>)).toEqual(Array.from(typed(4 * scalars)));
    expect(Array.from(mirror.get('g', 'x')!.data as ArrayLike<unknown>)).toEqual(Array.from(typed(values.length)));
    expect(mirror.get('g', 'x')!.shape).toEqual([values.length / scalars]);
  });

  function snapshotAndDiff() {
    const store = new LiveStore({ acquisition: 'a', scanShape: [4] });
    store.defineBuffer({ udfId: 'v', name: 'i', kind: 'nav', dtype: 'float32', shape: [4] });
    const roundTrip = (m: UpdateMessage) => decodeMessage(encodeMessage(m)) as UpdateMessage;
    const snapshot = roundTrip({ v: 1, type: 'snapshot', t: 0, ...store.diffSince(0) });
    const from = store.version;
    store.updateNavRange('v', 'i', 1, 3, [5, 6]);
    const diff = roundTrip({ v: 1, type: 'diff', t: 0, ...store.diffSince(from) });
    return { snapshot, diff };
  }

  it('applies a snapshot then a diff, and reports the changed element ranges', () => {
    const { snapshot, diff } = snapshotAndDiff();
    const mirror = new LiveMirror();
    expect(mirror.apply(snapshot).snapshot).toBe(true);
    const applied = mirror.apply(diff);
    expect(applied.changed).toEqual([{ key: 'v/i', start: 1, end: 3 }]);
    expect(Array.from(mirror.get('v', 'i')!.data)).toEqual([0, 5, 6, 0]);
  });

  it('refuses updates that do not fit the mirror', () => {
    const { snapshot, diff } = snapshotAndDiff();
    const fresh = () => {
      const m = new LiveMirror();
      m.apply(snapshot);
      return m;
    };
    expect(() => new LiveMirror().apply(diff)).toThrow(MirrorSyncError);
    expect(() => fresh().apply({ ...diff, from: diff.from - 1 })).toThrow(/does not follow/);
    expect(() => fresh().apply({ ...diff, acquisition: 'other' })).toThrow(MirrorSyncError);
    expect(() => fresh().apply({ ...diff, epoch: 3 })).toThrow(MirrorSyncError);
    const range = diff.buffers[0]!.ranges[0]!;
    expect(() => fresh().apply({ ...diff, buffers: [{ key: 'v/i', ranges: [{ ...range, end: 5 }] }] })).toThrow(/outside/);
    expect(() => fresh().apply({ ...diff, buffers: [{ key: 'v/i', ranges: [{ ...range, data: range.data.subarray(1) }] }] })).toThrow(/bytes/);
    expect(() => fresh().apply({ ...diff, buffers: [{ key: 'nope/x', ranges: [] }] })).toThrow(/undeclared/);
    const { layout: _layout, ...bare } = snapshot;
    expect(() => new LiveMirror().apply(bare as UpdateMessage)).toThrow(/layout/);
  });
});

describe('TesseraClient against a real server', () => {
  let server: MergerServer;
  let registry: LiveStoreRegistry;
  const client = () => new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });

  beforeAll(async () => {
    registry = new LiveStoreRegistry();
    server = await buildMergerServer({ controller: new InMemoryController(registry), stores: registry, logger });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('recovers from a mirror out of step by asking for a fresh snapshot', async () => {
    const store = registry.create({ acquisition: 'resync', scanShape: [8] });
    store.defineBuffer({ udfId: 'v', name: 'i', kind: 'nav', dtype: 'float32', shape: [8] });
    const c = client();
    await c.connect();
    c.subscribe({ acquisition: 'resync' });
    await c.waitFor((m) => m.acquisition === 'resync');
    const errors: unknown[] = [];
    c.on('error', (e) => errors.push(e));
    c.mirror.version += 1000; // as if an update had been lost
    store.updateNavRange('v', 'i', 0, 8, [1, 2, 3, 4, 5, 6, 7, 8]);
    await c.waitFor((m) => m.version === store.version);
    expect(errors[0]).toBeInstanceOf(MirrorSyncError);
    expect(c.received.snapshots).toBe(2);
    expect(Array.from(c.mirror.get('v', 'i')!.data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    await c.close();
  });

  it('waitFor gives the mirror as the predicate saw it, even if the next update (a new epoch) lands before the caller runs', async () => {
    const store = registry.create({ acquisition: 'held', scanShape: [4] });
    store.defineBuffer({ udfId: 'v', name: 'i', kind: 'nav', dtype: 'float32', shape: [4] });
    const c = client();
    await c.connect();
    c.subscribe({ acquisition: 'held' });
    const waiting = c.waitFor((m) => m.get('v', 'i')?.data[2] === 7);
    // ws hands over every frame of one TCP read synchronously: the next one is applied in the
    // same turn, after waitFor's listener and before its caller resumes
    let replaced = false;
    c.on('update', () => {
      if (replaced || c.mirror.get('v', 'i')?.data[2] !== 7) return;
      replaced = true;
      const next = new LiveStore({ acquisition: 'held', scanShape: [4] });
      c.mirror.apply({ v: WS_PROTOCOL_VERSION, type: 'snapshot', t: 0, ...next.diffSince(0), epoch: 1 });
    });
    store.updateNavRange('v', 'i', 0, 4, [5, 6, 7, 8]);
    const seen = await waiting;
    expect(replaced).toBe(true);
    expect(c.mirror.get('v', 'i')).toBeUndefined();
    expect(Array.from(seen.get('v', 'i')!.data)).toEqual([5, 6, 7, 8]);
    expect(seen.epoch).toBe(0);
    await c.close();
  });

  it('connect() again closes the connection before: only the new one feeds the mirror, no sync error', async () => {
    const a = registry.create({ acquisition: 'first', scanShape: [4] }, false);
    a.defineBuffer({ udfId: 'v', name: 'i', kind: 'nav', dtype: 'float32', shape: [4] });
    const b = registry.create({ acquisition: 'second', scanShape: [4] }, false);
    b.defineBuffer({ udfId: 'v', name: 'i', kind: 'nav', dtype: 'float32', shape: [4] });
    const c = client();
    const errors: unknown[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    c.subscribe({ acquisition: 'first' });
    await c.waitFor((m) => m.acquisition === 'first');
    await c.connect();
    c.subscribe({ acquisition: 'second' });
    await c.waitFor((m) => m.acquisition === 'second');
    // updates of the first keep coming on the old socket if it is still open: they must not land here
    for (let k = 1; k <= 5; k++) a.updateNavRange('v', 'i', 0, 4, [k, k, k, k]);
    b.updateNavRange('v', 'i', 0, 4, [9, 8, 7, 6]);
    await c.waitFor((m) => m.get('v', 'i')?.data[0] === 9);
    await new Promise((r) => setTimeout(r, 100));
    expect(c.mirror.acquisition).toBe('second');
    expect(Array.from(c.mirror.get('v', 'i')!.data)).toEqual([9, 8, 7, 6]);
    expect(errors).toEqual([]);
    await waitUntil(() => server.stream.stats().clients === 1, 5000, 'the old connection closed at the server');
    await c.close();
  });

  it('wraps the HTTP API; errors are TesseraApiErrors with code and status', async () => {
    const c = client();
    expect((await c.api.udfs()).map((u) => u.name)).toContain('virtualDetector');
    const a = await c.api.define({ scanShape: [4, 4], udfs: [{ id: 'ring', name: 'virtualDetector', params: { cx: 1, cy: 1, ro: 2 } }] });
    expect(a.state).toBe('defined');
    expect((await c.api.start(a.id)).state).toBe('running');
    expect((await c.api.get(a.id)).state).toBe('running');
    expect((await c.api.updateUdfParams(a.id, 'ring', { cx: 2, cy: 2, ro: 1 })).appliesFromFrame).toBe(0);
    expect((await c.api.status()).acquisition?.id).toBe(a.id);
    expect((await c.api.stop(a.id)).state).toBe('done');
    const b = await c.api.define({ scanShape: [4, 4], udfs: [] });
    expect((await c.api.abort(b.id)).state).toBe('aborted');
    const failure = await c.api.start(a.id).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(TesseraApiError);
    expect(failure).toMatchObject({ code: 'TESSERA_ERR_ACQUISITION_STATE', statusCode: 409 });
    await expect(c.api.get('missing')).rejects.toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND', statusCode: 404 });
    await expect(c.api.define({ scanShape: [4, 4], udfs: [{ name: 'nope' }] })).rejects.toMatchObject({ code: 'TESSERA_ERR_UNKNOWN_UDF', statusCode: 400 });
  });

  it('fails to connect with a clear error when nothing listens', async () => {
    const c = new TesseraClient({ url: 'http://127.0.0.1:1', WebSocket: WebSocket as unknown as WebSocketConstructor });
    await expect(c.connect()).rejects.toThrow(/cannot connect|closed before hello/);
  });
});
