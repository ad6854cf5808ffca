/**
 * The WebSocket stream end to end: a real merger web server on a free port, real WebSocket
 * clients (TesseraClient over the `ws` package). The clients' mirrors are compared with an
 * independent model (plain arrays that the test updates alongside the store) and with the
 * store's own buffers.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type AppliedUpdate, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { LiveStoreRegistry, type LiveStore } from '../../src/merger/live-store.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { createLogger } from '../../src/log.js';
import { DAMAGE_BLOCKS, DAMAGE_SECTORS, DAMAGE_UDF, dtypeScalars, productOf, type DType } from '../../src/protocol/ws-messages.js';
import { InMemoryController } from './in-memory-controller.js';

const logger = createLogger('test-ws', { level: 'warn' });

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The expected state: plain arrays, updated by the test next to the store. */
interface ModelBuffer {
  dtype: DType;
  shape: number[];
  values: Array<number | bigint>;
}

const SCAN: [number, number] = [32, 48];
const NAV = SCAN[0] * SCAN[1];

class Model {
  readonly buffers = new Map<string, ModelBuffer>();
  define(key: string, dtype: DType, shape: number[]): void {
    const n = productOf(shape) * dtypeScalars(dtype);
    const zero = dtype === 'int64' || dtype === 'uint64' ? 0n : 0;
    this.buffers.set(key, { dtype, shape, values: new Array(n).fill(zero) });
  }
}

function randomValue(dtype: DType, rnd: () => number): number | bigint {
  switch (dtype) {
    case 'float32':
    case 'complex64':
      return Math.fround((rnd() - 0.5) * 1e6);
    case 'float64':
      return (rnd() - 0.5) * 1e12;
    case 'int16':
      return Math.floor(rnd() * 65536) - 32768;
    case 'int32':
      return Math.floor(rnd() * 2 ** 32) - 2 ** 31;
    case 'uint8':
      return Math.floor(rnd() * 256);
    case 'uint16':
      return Math.floor(rnd() * 65536);
    case 'uint64':
      return BigInt.asUintN(64, BigInt(Math.floor(rnd() * 2 ** 52)) * 4099n);
    default:
      throw new Error(dtype);
  }
}

function typedOf(dtype: DType, values: Array<number | bigint>) {
  switch (dtype) {
    case 'float32':
    case 'complex64':
      return Float32Array.from(values as number[]);
    case 'float64':
      return Float64Array.from(values as number[]);
    case 'int16':
      return Int16Array.from(values as number[]);
    case 'int32':
      return Int32Array.from(values as number[]);
    case 'uint8':
      return Uint8Array.from(values as number[]);
    case 'uint16':
      return Uint16Array.from(values as number[]);
    case 'uint64':
      return BigUint64Array.from(values as bigint[]);
    default:
      throw new Error(dtype);
  }
}

const BUFFERS: Array<[string, string, 'nav' | 'sig' | 'single', DType, number[]]> = [
  ['vd', 'intensity', 'nav', 'float32', [...SCAN]],
  ['masks', 'intensity', 'nav', 'int32', [...SCAN, 3]],
  ['field', 'shift', 'nav', 'complex64', [...SCAN]],
  ['count', 'n', 'nav', 'uint64', [...SCAN]],
  ['sum', 'image', 'sig', 'float64', [20, 30]],
  ['pick', 'frames', 'single', 'int16', [5]],
];

function setUp(store: LiveStore, model: Model): void {
  model.define(`${DAMAGE_UDF}/${DAMAGE_SECTORS}`, 'uint8', [...SCAN]);
  model.define(`${DAMAGE_UDF}/${DAMAGE_BLOCKS}`, 'uint16', [...SCAN]);
  for (const [udfId, name, kind, dtype, shape] of BUFFERS) {
    store.defineBuffer({ udfId, name, kind, dtype, shape });
    model.define(`${udfId}/${name}`, dtype, shape);
  }
}

/** One random change, applied to the store and to the model. */
function randomOp(store: LiveStore, model: Model, rnd: () => number): void {
  const pick = rnd();
  if (pick < 0.55) {
    const navKeys = [...model.buffers.keys()].filter((k) => !k.startsWith('_') && model.buffers.get(k)!.shape.length >= 2 && !k.startsWith('sum/'));
    const key = navKeys[Math.floor(rnd() * navKeys.length)]!;
    const buf = model.buffers.get(key)!;
    const per = (productOf(buf.shape) / NAV) * dtypeScalars(buf.dtype);
    // mostly row-sized chunks advancing, sometimes anywhere
    let start: number;
    let end: number;
    if (rnd() < 0.6) {
      const row = Math.floor(rnd() * SCAN[0]);
      start = row * SCAN[1];
      end = start + SCAN[1];
    } else {
      start = Math.floor(rnd() * NAV);
      end = Math.min(NAV, start + 1 + Math.floor(rnd() * 600));
    }
    const values = Array.from({ length: (end - start) * per }, () => randomValue(buf.dtype, rnd));
    const [udfId, name] = key.split('/') as [string, string];
    store.updateNavRange(udfId, name, start, end, typedOf(buf.dtype, values));
    buf.values.splice(start * per, values.length, ...values);
  } else if (pick < 0.62) {
    const buf = model.buffers.get('sum/image')!;
    buf.values = Array.from({ length: buf.values.length }, () => randomValue('float64', rnd));
    store.setSig('sum', 'image', typedOf('float64', buf.values));
  } else if (pick < 0.67) {
    const buf = model.buffers.get('pick/frames');
    if (!buf) return;
    buf.values = Array.from({ length: buf.values.length }, () => randomValue('int16', rnd));
    store.setSingle('pick', 'frames', typedOf('int16', buf.values));
  } else if (pick < 0.77) {
    const start = Math.floor(rnd() * NAV);
    const end = Math.min(NAV, start + 1 + Math.floor(rnd() * 200));
    const sectors = Array.from({ length: end - start }, () => Math.floor(rnd() * 9));
    const blocks = Array.from({ length: end - start }, () => Math.floor(rnd() * 257));
    store.setDamage(start, end, sectors, blocks);
    model.buffers.get(`${DAMAGE_UDF}/${DAMAGE_SECTORS}`)!.values.splice(start, sectors.length, ...sectors);
    model.buffers.get(`${DAMAGE_UDF}/${DAMAGE_BLOCKS}`)!.values.splice(start, blocks.length, ...blocks);
  } else if (pick < 0.85) {
    store.setProgress({ framesMerged: Math.floor(rnd() * NAV), framesTotal: NAV });
  } else if (pick < 0.92) {
    store.setSectorStatus(Math.floor(rnd() * 8), { state: rnd() < 0.5 ? 'alive' : 'missing', datagrams: Math.floor(rnd() * 1e6) });
  } else if (pick < 0.95) {
    store.setState(rnd() < 0.5 ? 'running' : 'stopping');
  } else if (pick < 0.98) {
    // a parameter change that alters the extra shape: the buffer is declared anew, zeroed
    const count = 1 + Math.floor(rnd() * 4);
    store.defineBuffer({ udfId: 'masks', name: 'intensity', kind: 'nav', dtype: 'int32', shape: [...SCAN, count] });
    model.define('masks/intensity', 'int32', [...SCAN, count]);
  } else if (model.buffers.has('pick/frames')) {
    store.removeBuffer('pick', 'frames');
    model.buffers.delete('pick/frames');
  } else {
    store.defineBuffer({ udfId: 'pick', name: 'frames', kind: 'single', dtype: 'int16', shape: [5] });
    model.define('pick/frames', 'int16', [5]);
  }
}

function expectMirrorMatches(client: TesseraClient, store: LiveStore, model: Model): void {
  const mirror = client.mirror;
  expect(mirror.version).toBe(store.version);
  expect([...mirror.buffers.keys()].sort()).toEqual([...model.buffers.keys()].sort());
  for (const [key, expected] of model.buffers) {
    const got = mirror.buffers.get(key)!;
    expect(got.shape, key).toEqual(expected.shape);
    expect(got.dtype, key).toBe(expected.dtype);
    expect(Array.from(got.data as ArrayLike<number | bigint>), key).toEqual(expected.values);
    const [udfId, name] = key.split('/') as [string, string];
    expect(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength).equals(
      Buffer.from(store.getBuffer(udfId, name).data.buffer, store.getBuffer(udfId, name).data.byteOffset, store.getBuffer(udfId, name).data.byteLength),
    ), key).toBe(true);
  }
  expect(mirror.progress).toEqual(store.getProgress());
  expect(mirror.sectors).toEqual(store.getSectors());
  expect(mirror.state).toEqual(store.getState());
}

const clients: TesseraClient[] = [];
async function connect(server: MergerServer): Promise<TesseraClient> {
  const client = new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  clients.push(client);
  await client.connect();
  return client;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('WebSocket stream', () => {
  let registry: LiveStoreRegistry;
  let server: MergerServer;

  beforeAll(async () => {
    registry = new LiveStoreRegistry({ keepEpochs: 2, keepAcquisitions: 3 });
    server = await buildMergerServer({ controller: new InMemoryController(registry), stores: registry, logger });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await server?.close();
  });

  it('greets with hello: protocol and server version, limits', async () => {
    const client = await connect(server);
    expect(client.hello).toMatchObject({ v: 1, type: 'hello', protocol: 1, maxRate: 60, maxPayload: 65536 });
    expect(typeof client.hello!.server).toBe('string');
  });

  it('snapshot then diffs reconstruct the store exactly, over random update sequences', async () => {
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const rnd = mulberry32(seed);
      const store = registry.create({ acquisition: `random-${seed}`, scanShape: SCAN });
      const model = new Model();
      setUp(store, model);
      for (let i = 0; i < 20; i++) randomOp(store, model, rnd);
      const client = await connect(server);
      const updates: AppliedUpdate[] = [];
      client.on('update', (u) => updates.push(u));
      const errors: unknown[] = [];
      client.on('error', (e) => errors.push(e));
      client.subscribe({ acquisition: `random-${seed}` });
      for (let i = 0; i < 300; i++) {
        randomOp(store, model, rnd);
        if (rnd() < 0.15) await sleep(Math.floor(rnd() * 25));
      }
      await client.waitFor((m) => m.version === store.version);
      expect(errors).toEqual([]);
      expectMirrorMatches(client, store, model);
      expect(updates[0]!.snapshot).toBe(true);
      expect(updates.length).toBeGreaterThan(2);
      expect(updates.slice(1).every((u) => !u.snapshot)).toBe(true);
      await client.close();
    }
  });

  it('sends only the changed range of a nav buffer, and unchanged buffers not at all', async () => {
    const store = registry.create({ acquisition: 'ranges', scanShape: SCAN });
    store.defineBuffer({ udfId: 'vd', name: 'intensity', kind: 'nav', dtype: 'float32', shape: [...SCAN] });
    store.defineBuffer({ udfId: 'masks', name: 'intensity', kind: 'nav', dtype: 'float32', shape: [...SCAN, 4] });
    store.defineBuffer({ udfId: 'sum', name: 'image', kind: 'sig', dtype: 'float32', shape: [8, 8] });
    store.setSig('sum', 'image', new Float32Array(64).fill(2));
    const w = SCAN[1];
    for (let row = 0; row < 3; row++) store.updateNavRange('vd', 'intensity', row * w, (row + 1) * w, new Float32Array(w).fill(row + 1));
    const client = await connect(server);
    client.subscribe({ acquisition: 'ranges', maxRate: 10 });
    const snapshot = await new Promise<AppliedUpdate>((r) => client.on('update', r));
    expect(snapshot.snapshot).toBe(true);
    // a late joiner's snapshot carries what was written: rows 0..2 of vd, the sig image
    expect(snapshot.changed).toEqual([
      { key: 'vd/intensity', start: 0, end: 3 * w },
      { key: 'sum/image', start: 0, end: 64 },
    ]);
    const next = new Promise<AppliedUpdate>((r) => client.on('update', r));
    store.updateNavRange('vd', 'intensity', 10 * w, 11 * w, new Float32Array(w).fill(7));
    store.updateNavRange('masks', 'intensity', 5 * w + 3, 5 * w + 9, new Float32Array(6 * 4).fill(9));
    store.updateNavRange('vd', 'intensity', 30 * w, 30 * w + 1, new Float32Array(1).fill(8));
    const diff = await next;
    expect(diff.snapshot).toBe(false);
    expect(diff.changed).toEqual([
      { key: 'vd/intensity', start: 10 * w, end: 11 * w },
      { key: 'vd/intensity', start: 30 * w, end: 30 * w + 1 },
      { key: 'masks/intensity', start: (5 * w + 3) * 4, end: (5 * w + 9) * 4 },
    ]);
    const vd = client.mirror.get('vd', 'intensity')!.data;
    expect(vd[10 * w + 5]).toBe(7);
    expect(vd[30 * w]).toBe(8);
    expect(vd[2 * w]).toBe(3);
    expect(client.mirror.get('masks', 'intensity')!.data[(5 * w + 3) * 4 + 2]).toBe(9);
  });

  it('a late joiner gets the whole current state first', async () => {
    const controller = new InMemoryController(registry);
    const acq = controller.define({
      scanShape: [8, 16],
      udfs: [{ id: 'vd', name: 'virtualDetector', params: { cx: 1, cy: 1, ro: 3 } }],
      roi: null,
      mode: 'single',
      record: { enabled: false, path: null },
      chunkSize: 16,
    });
    controller.start(acq.id);
    const early = await connect(server);
    early.subscribe({ acquisition: 'current' });
    for (let row = 0; row < 5; row++) controller.mergeChunk(acq.id, row * 16, 16);
    await early.waitFor((m) => m.progress?.framesMerged === 80);
    const late = await connect(server);
    const first = new Promise<AppliedUpdate>((r) => late.on('update', r));
    late.subscribe({ acquisition: 'current' });
    const snapshot = await first;
    expect(snapshot.snapshot).toBe(true);
    expect(late.mirror.acquisition).toBe(acq.id);
    const expected = Float32Array.from({ length: 128 }, (_, i) => (i < 80 ? i + 0.5 : 0));
    expect(Array.from(late.mirror.get('vd', 'intensity')!.data)).toEqual(Array.from(expected));
    expect(Array.from(late.mirror.get(DAMAGE_UDF, DAMAGE_SECTORS)!.data)).toEqual(Array.from({ length: 128 }, (_, i) => (i < 80 ? 8 : 0)));
    expect(late.mirror.state?.state).toBe('running');
    expect(late.mirror.info).toMatchObject({ scanShape: [8, 16], mode: 'single' });
    // both go on together
    for (let row = 5; row < 8; row++) controller.mergeChunk(acq.id, row * 16, 16);
    for (const c of [early, late]) {
      await c.waitFor((m) => m.progress?.framesMerged === 128);
      expect(Array.from(c.mirror.get('vd', 'intensity')!.data)).toEqual(Array.from({ length: 128 }, (_, i) => i + 0.5));
    }
  });

  it('follows epochs: "latest" switches with a snapshot, a fixed epoch stays until it is dropped', async () => {
    const fill = (store: LiveStore, value: number) =>
      store.updateNavRange('vd', 'intensity', 0, store.navSize, new Float32Array(store.navSize).fill(value));
    const make = (epoch: number) => {
      const store = registry.create({ acquisition: 'continuous', epoch, scanShape: [4, 4] });
      store.defineBuffer({ udfId: 'vd', name: 'intensity', kind: 'nav', dtype: 'float32', shape: [4, 4] });
      return store;
    };
    const e0 = make(0);
    fill(e0, 10);
    const latest = await connect(server);
    const fixed = await connect(server);
    latest.subscribe({ acquisition: 'continuous', epoch: 'latest' });
    fixed.subscribe({ acquisition: 'continuous', epoch: 0 });
    await latest.waitFor((m) => m.get('vd', 'intensity')?.data[0] === 10);
    await fixed.waitFor((m) => m.get('vd', 'intensity')?.data[0] === 10);

    const e1 = make(1);
    fill(e1, 11);
    fill(e0, 12); // late results of epoch 0 still reach its subscribers
    await latest.waitFor((m) => m.epoch === 1 && m.get('vd', 'intensity')?.data[15] === 11);
    await fixed.waitFor((m) => m.get('vd', 'intensity')?.data[15] === 12);
    expect(fixed.mirror.epoch).toBe(0);
    expect(latest.received.snapshots).toBe(2);
    expect(fixed.received.snapshots).toBe(1);

    // keepEpochs = 2: epoch 2 drops epoch 0, whose subscriber is told
    const gone = new Promise<unknown>((r) => fixed.on('error', r));
    const e2 = make(2);
    fill(e2, 13);
    expect(await gone).toMatchObject({ type: 'error', code: 'TESSERA_ERR_NOT_FOUND' });
    await latest.waitFor((m) => m.epoch === 2 && m.get('vd', 'intensity')?.data[3] === 13);
    expect(registry.epochs('continuous')).toEqual([1, 2]);
  });

  it('"current" follows a new acquisition; a subscription to an unknown one is an error', async () => {
    const client = await connect(server);
    client.subscribe({ acquisition: 'current' });
    const a = registry.create({ acquisition: 'first', scanShape: [2, 2] });
    a.setState('running');
    await client.waitFor((m) => m.acquisition === 'first' && m.state?.state === 'running');
    registry.create({ acquisition: 'second', scanShape: [3, 3] });
    await client.waitFor((m) => m.acquisition === 'second');
    expect(client.mirror.info?.scanShape).toEqual([3, 3]);

    const error = new Promise<unknown>((r) => client.on('error', r));
    client.subscribe({ acquisition: 'no-such-acquisition' });
    expect(await error).toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND' });
  });

  it('a buffer filter limits what is sent; maxRate limits how often', async () => {
    const store = registry.create({ acquisition: 'filtered', scanShape: [4, 4] });
    store.defineBuffer({ udfId: 'a', name: 'x', kind: 'nav', dtype: 'float32', shape: [4, 4] });
    store.defineBuffer({ udfId: 'b', name: 'y', kind: 'sig', dtype: 'float32', shape: [64, 64] });
    const client = await connect(server);
    client.subscribe({ acquisition: 'filtered', buffers: ['a'], maxRate: 5 });
    const t0 = performance.now();
    let i = 0;
    while (performance.now() - t0 < 1200) {
      store.updateNavRange('a', 'x', i % 16, (i % 16) + 1, [i]);
      store.setSig('b', 'y', new Float32Array(4096).fill(i));
      i++;
      await sleep(2);
    }
    await client.waitFor((m) => m.version === store.version);
    expect([...client.mirror.buffers.keys()]).toEqual(['a/x']);
    // 5/s over ~1.2 s: a snapshot and at most ~7 updates, whatever the machine's speed
    expect(client.received.updates).toBeLessThanOrEqual(9);
    expect(client.received.updates).toBeGreaterThanOrEqual(2);
    expect(i).toBeGreaterThan(50);
  });

  it('answers ping with pong', async () => {
    const client = await connect(server);
    const rtt = await client.ping();
    expect(rtt).toBeGreaterThanOrEqual(0);
  });
});
