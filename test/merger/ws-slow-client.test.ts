/**
 * Latest-wins under a slow client: one client stops reading (its TCP socket paused, so the
 * kernel buffers fill and the server's writes stall) while the store changes at a high rate.
 * The merger's memory and that client's socket buffer must stay bounded, a fast client on the
 * same store must keep getting frequent updates, and when the slow client reads again it must
 * end up with exactly the store's state. A client that never reads again is closed.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { LiveMirror, TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { createLogger } from '../../src/log.js';
import { LiveStoreRegistry, type LiveStore } from '../../src/merger/live-store.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { decodeMessage, encodeMessage, WS_PROTOCOL_VERSION, type ServerMessage, type UpdateMessage } from '../../src/protocol/ws-messages.js';
import { InMemoryController } from './in-memory-controller.js';

const logger = createLogger('test-ws-slow', { level: 'warn' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const SCAN: [number, number] = [256, 256];
const SIG: [number, number] = [512, 512]; // 1 MiB of float32 per sig update: the kernel buffers fill fast
// each test starts its own server; the stream numbers clients in connection order
const SLOW_ID = 1;
const FAST_ID = 2;

/** A raw `ws` client that we can stop reading: its socket is paused, TCP flow control does the rest. */
async function rawClient(url: string, acquisition: string) {
  const socket = new WebSocket(url);
  const mirror = new LiveMirror();
  let updates = 0;
  let closed: { code: number; reason: string } | null = null;
  socket.on('message', (data: Buffer) => {
    const message = decodeMessage(data) as ServerMessage;
    if (message.type === 'snapshot' || message.type === 'diff') {
      mirror.apply(message as UpdateMessage);
      updates++;
    }
  });
  socket.on('close', (code, reason) => (closed = { code, reason: reason.toString() }));
  socket.on('error', () => {});
  await new Promise((r, j) => {
    socket.once('open', r);
    socket.once('error', j);
  });
  socket.send(encodeMessage({ v: WS_PROTOCOL_VERSION, type: 'subscribe', acquisition }));
  return {
    socket,
    mirror,
    get updates() {
      return updates;
    },
    get closed() {
      return closed;
    },
  };
}

/** Changes the store as fast as a busy merger would: a nav row, the sig image, progress. */
function startWriter(store: LiveStore): { stop: () => Promise<number> } {
  let running = true;
  let changes = 0;
  const row = new Float32Array(SCAN[1]);
  const image = new Float32Array(SIG[0] * SIG[1]);
  const done = (async () => {
    for (let i = 0; running; i++) {
      const r = i % SCAN[0];
      row.fill(i);
      store.updateNavRange('vd', 'intensity', r * SCAN[1], (r + 1) * SCAN[1], row);
      image[i % image.length] = i;
      store.setSig('sum', 'intensity', image);
      store.setProgress({ framesMerged: i * SCAN[1] });
      changes += 3;
      await sleep(2);
    }
    return changes;
  })();
  return {
    stop: async () => {
      running = false;
      return done;
    },
  };
}

function makeStore(registry: LiveStoreRegistry, id: string): LiveStore {
  const store = registry.create({ acquisition: id, scanShape: SCAN });
  store.defineBuffer({ udfId: 'vd', name: 'intensity', kind: 'nav', dtype: 'float32', shape: SCAN });
  store.defineBuffer({ udfId: 'sum', name: 'intensity', kind: 'sig', dtype: 'float32', shape: SIG });
  return store;
}

describe('slow clients', () => {
  const servers: MergerServer[] = [];
  const sockets: WebSocket[] = [];
  const clients: TesseraClient[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.terminate();
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  it('a client that reads nothing for 10 s: memory flat, its buffer bounded, a fast client unaffected, exact state after', async () => {
    const registry = new LiveStoreRegistry();
    const server = await buildMergerServer({ controller: new InMemoryController(registry), stores: registry, logger });
    servers.push(server);
    const store = makeStore(registry, 'busy');

    const slow = await rawClient(server.wsUrl, 'busy');
    sockets.push(slow.socket);
    const fast = new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    clients.push(fast);
    await fast.connect();
    fast.subscribe({ acquisition: 'busy' });
    await fast.waitFor((m) => m.acquisition === 'busy');
    slow.socket.pause();

    const writer = startWriter(store);
    const samples: Array<{ t: number; memory: number; slowBuffered: number }> = [];
    const fastAtStart = fast.received.updates;
    const t0 = performance.now();
    while (performance.now() - t0 < 10_000) {
      await sleep(250);
      const mem = process.memoryUsage();
      const slowStats = server.stream.clientStats().find((c) => c.id === SLOW_ID);
      samples.push({ t: performance.now() - t0, memory: mem.heapUsed + mem.arrayBuffers, slowBuffered: slowStats?.bufferedAmount ?? 0 });
    }
    const seconds = (performance.now() - t0) / 1000;
    const fastUpdates = fast.received.updates - fastAtStart;
    const changes = await writer.stop();
    const stats = server.stream.clientStats();
    const slowStats = stats.find((c) => c.id === SLOW_ID)!;
    const fastStats = stats.find((c) => c.id === FAST_ID)!;

    if (process.env.TESSERA_TEST_VERBOSE) console.log({ seconds, fastUpdates, changes, slow: slowStats, fast: fastStats, samples: samples.map((s) => Math.round(s.memory / 1e6)) });
    // what one update can weigh: the sig image, a nav diff of at most the whole map, headers
    const maxMessage = SIG[0] * SIG[1] * 4 + SCAN[0] * SCAN[1] * 4 + 64 * 1024;
    // the slow client holds one message at most in the server's user-space buffer
    expect(slowStats.maxBufferedAmount).toBeLessThanOrEqual(maxMessage);
    expect(Math.max(...samples.map((s) => s.slowBuffered))).toBeLessThanOrEqual(maxMessage);
    // and got few updates (its kernel buffers took a handful before the socket stalled)
    expect(slowStats.updates).toBeLessThan(fastStats.updates / 4);
    // memory: no growth with time. A per-update queue would grow by ~60 x 1.3 MB per second
    // (~750 MB over the run); allow GC noise of well under that.
    const early = Math.max(...samples.filter((s) => s.t > 1000 && s.t < 3000).map((s) => s.memory));
    const late = Math.max(...samples.filter((s) => s.t > 8000).map((s) => s.memory));
    expect(late - early).toBeLessThan(96 * 1024 * 1024);
    // the fast client was not held back by the slow one
    expect(fastUpdates / seconds).toBeGreaterThanOrEqual(20);
    expect(changes / seconds).toBeGreaterThan(fastUpdates / seconds);

    // reading again, the slow client catches up to exactly the store's state, in few updates
    slow.socket.resume();
    const deadline = performance.now() + 20_000;
    while (slow.mirror.version !== store.version && performance.now() < deadline) await sleep(20);
    expect(slow.mirror.version).toBe(store.version);
    for (const [udf, name] of [['vd', 'intensity'], ['sum', 'intensity']] as const) {
      expect(Buffer.from(slow.mirror.get(udf, name)!.data.buffer).equals(Buffer.from(store.getBuffer(udf, name).data.buffer))).toBe(true);
    }
    expect(slow.mirror.progress).toEqual(store.getProgress());
    expect(slow.closed).toBeNull();
  }, 60_000);

  it('a client that never reads again is closed after the stall bound, and the others go on', async () => {
    const registry = new LiveStoreRegistry();
    const server = await buildMergerServer({
      controller: new InMemoryController(registry),
      stores: registry,
      logger,
      ws: { stallTimeoutMs: 1500 },
    });
    servers.push(server);
    const store = makeStore(registry, 'stall');
    const slow = await rawClient(server.wsUrl, 'stall');
    sockets.push(slow.socket);
    await sleep(100);
    slow.socket.pause();
    const writer = startWriter(store);
    const deadline = performance.now() + 15_000;
    while (server.stream.stats().closedSlow === 0 && performance.now() < deadline) await sleep(50);
    await writer.stop();
    expect(server.stream.stats().closedSlow).toBe(1);
    expect(server.stream.clientStats().map((c) => c.id)).not.toContain(SLOW_ID);
    slow.socket.resume();
    const closeDeadline = performance.now() + 10_000;
    while (!slow.closed && performance.now() < closeDeadline) await sleep(20);
    expect(slow.closed).not.toBeNull();
    // the server still serves new clients
    const next = new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    clients.push(next);
    await next.connect();
    next.subscribe({ acquisition: 'stall' });
    await next.waitFor((m) => m.version === store.version);
  }, 60_000);
});
