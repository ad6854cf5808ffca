/**
 * Garbage from WebSocket clients: every malformed message gets an `error` reply with a code
 * (or, for oversize messages and floods of bad ones, a close with a reason), is counted, and
 * the server goes on serving everyone else.
 */
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { createLogger } from '../../src/log.js';
import { LiveStoreRegistry, type LiveStore } from '../../src/merger/live-store.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { decodeMessage, encodeMessage, WS_PROTOCOL_VERSION, type ServerMessage } from '../../src/protocol/ws-messages.js';
import { InMemoryController } from './in-memory-controller.js';

const logger = createLogger('test-ws-garbage', { level: 'silent' });

/** A raw client that records every server message and its close. */
async function rawClient(url: string) {
  const socket = new WebSocket(url);
  const messages: ServerMessage[] = [];
  const waiters: Array<() => void> = [];
  let closed: { code: number; reason: string } | null = null;
  socket.on('message', (data: Buffer) => {
    messages.push(decodeMessage(data) as ServerMessage);
    for (const w of waiters.splice(0)) w();
  });
  const closedPromise = new Promise<{ code: number; reason: string }>((r) =>
    socket.on('close', (code, reason) => {
      closed = { code, reason: reason.toString() };
      r(closed);
    }),
  );
  socket.on('error', () => {});
  await new Promise((r) => socket.once('open', r));
  let pingId = 1;
  return {
    socket,
    messages,
    closedPromise,
    get closed() {
      return closed;
    },
    /** send raw bytes or text, then a ping; resolves with what came back before the pong */
    async exchange(data: Uint8Array | string): Promise<ServerMessage[]> {
      const from = messages.length;
      const id = pingId++;
      socket.send(data);
      socket.send(encodeMessage({ v: WS_PROTOCOL_VERSION, type: 'ping', id }));
      while (!messages.slice(from).some((m) => m.type === 'pong' && m.id === id)) {
        if (closed) throw new Error(`closed: ${JSON.stringify(closed)}`);
        await new Promise<void>((r) => waiters.push(r));
      }
      return messages.slice(from).filter((m) => !(m.type === 'pong' && m.id === id));
    },
  };
}

const plainPackr = new Packr({ useRecords: false });
const pack = (value: unknown) => plainPackr.pack(value);

describe('garbage from WebSocket clients', () => {
  let registry: LiveStoreRegistry;
  let server: MergerServer;
  let store: LiveStore;
  const sockets: WebSocket[] = [];

  beforeAll(async () => {
    registry = new LiveStoreRegistry();
    server = await buildMergerServer({ controller: new InMemoryController(registry), stores: registry, logger });
    store = registry.create({ acquisition: 'live', scanShape: [4, 4] });
    store.defineBuffer({ udfId: 'vd', name: 'intensity', kind: 'nav', dtype: 'float32', shape: [4, 4] });
  });
  afterEach(() => {
    for (const s of sockets.splice(0)) s.terminate();
  });
  afterAll(async () => {
    await server?.close();
  });

  async function connect() {
    const c = await rawClient(server.wsUrl);
    sockets.push(c.socket);
    return c;
  }

  /** A well-behaved client still gets exact data. */
  async function expectServerStillServes(): Promise<void> {
    const client = new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    await client.connect();
    client.subscribe({ acquisition: 'live' });
    const value = Math.random();
    store.updateNavRange('vd', 'intensity', 0, 16, new Float32Array(16).fill(value));
    await client.waitFor((m) => m.version === store.version);
    expect(client.mirror.get('vd', 'intensity')!.data[15]).toBe(Math.fround(value));
    await client.close();
  }

  it.each([
    ['not msgpack', new Uint8Array([0xc1, 0xc1, 0xc1]), 'TESSERA_ERR_BAD_MESSAGE'],
    ['truncated msgpack', new Uint8Array([0x83, 0xa1, 0x76]), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a text frame', '{"v":1,"type":"subscribe","acquisition":"live"}', 'TESSERA_ERR_BAD_MESSAGE'],
    ['not a map', pack(42), 'TESSERA_ERR_BAD_MESSAGE'],
    ['an array', pack([1, 'subscribe']), 'TESSERA_ERR_BAD_MESSAGE'],
    ['no version', pack({ type: 'subscribe', acquisition: 'live' }), 'TESSERA_ERR_PROTOCOL_VERSION'],
    ['another protocol version', pack({ v: 99, type: 'subscribe', acquisition: 'live' }), 'TESSERA_ERR_PROTOCOL_VERSION'],
    ['an unknown type', pack({ v: 1, type: 'delete-everything' }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a prototype key as type', pack({ v: 1, type: 'constructor' }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['no type', pack({ v: 1, acquisition: 'live' }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a wrong field type', pack({ v: 1, type: 'subscribe', acquisition: 5 }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a missing field', pack({ v: 1, type: 'subscribe' }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['an unknown field', pack({ v: 1, type: 'subscribe', acquisition: 'live', evil: true }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a negative epoch', pack({ v: 1, type: 'subscribe', acquisition: 'live', epoch: -1 }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a zero rate', pack({ v: 1, type: 'subscribe', acquisition: 'live', maxRate: 0 }), 'TESSERA_ERR_BAD_MESSAGE'],
    ['a filter of numbers', pack({ v: 1, type: 'subscribe', acquisition: 'live', buffers: [1, 2] }), 'TESSERA_ERR_BAD_MESSAGE'],
  ])('%s: an error reply with code %s, the connection stays usable', async (_what, data, code) => {
    const before = server.stream.stats().badMessages;
    const client = await connect();
    const replies = await client.exchange(data as Uint8Array | string);
    expect(replies).toHaveLength(1);
    expect(replies[0]).toMatchObject({ v: WS_PROTOCOL_VERSION, type: 'error', code });
    expect(typeof (replies[0] as { message: string }).message).toBe('string');
    expect(server.stream.stats().badMessages).toBe(before + 1);
    // the same connection can still subscribe
    const ok = await client.exchange(encodeMessage({ v: 1, type: 'subscribe', acquisition: 'live' }));
    expect(ok.some((m) => m.type === 'snapshot')).toBe(true);
  });

  it('an oversize message closes the connection with 1009; others are unaffected', async () => {
    const before = server.stream.stats().oversize;
    const client = await connect();
    client.socket.send(new Uint8Array(server.stream.maxPayload + 1));
    const closed = await client.closedPromise;
    expect(closed.code).toBe(1009);
    expect(server.stream.stats().oversize).toBe(before + 1);
    await expectServerStillServes();
  });

  it('a flood of malformed messages closes the connection with 1008 and a reason', async () => {
    const client = await connect();
    for (let i = 0; i < 40; i++) client.socket.send(new Uint8Array([0xc1]));
    const closed = await client.closedPromise;
    expect(closed.code).toBe(1008);
    expect(closed.reason).toMatch(/^TESSERA_ERR_BAD_MESSAGE/);
    const errors = client.messages.filter((m) => m.type === 'error');
    expect(errors.length).toBe(15); // replies until the 16th malformed message in a row closes
    await expectServerStillServes();
  });

  it('fuzz: random bytes and random msgpack values never crash the server and always get an answer', async () => {
    const client = await connect();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc.anything().map((v) => pack(v)),
          fc.record({ v: fc.constant(1), type: fc.constantFrom('subscribe', 'ping', 'unsubscribe'), acquisition: fc.anything(), epoch: fc.anything() }, { requiredKeys: ['v', 'type'] }).map((v) => pack(v)),
        ),
        async (bytes) => {
          const replies = await client.exchange(bytes);
          // each message is either valid (a subscription, unsubscription or ping) or answered with an error
          expect(replies.every((m) => ['error', 'snapshot', 'diff', 'pong'].includes(m.type))).toBe(true);
          if (replies.some((m) => m.type === 'error')) expect(replies.filter((m) => m.type === 'error')).toHaveLength(1);
        },
      ),
      { numRuns: 300 },
    );
    expect(client.closed).toBeNull();
    await expectServerStillServes();
  });
});
