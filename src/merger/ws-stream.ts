/**
 * The merger's WebSocket stream: live results to browsers, latest-wins per client.
 *
 * Each client has one sender loop and at most one update in its socket at a time. When the
 * previous update has been written out (the socket's write callback), the rate limit allows
 * (at most `maxRate` per second) and the store has changed, the loop asks the store for
 * everything that changed since the client's last version and sends it as one message. A slow
 * client therefore gets fewer, bigger updates; nothing is queued per update and the memory a
 * client costs is one message at most. A client that takes no update for `stallTimeoutMs`
 * is closed (code 4008, reason TESSERA_ERR_SLOW_CLIENT). See docs/protocol.md.
 */
import fastifyWebsocket from '@fastify/websocket';
import { Ajv, type ValidateFunction } from 'ajv';
import type { FastifyPluginAsync } from 'fastify';
import type { WebSocket } from 'ws';
import { TesseraError, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import {
  allocMessageBuffer,
  CLIENT_MESSAGE_SCHEMAS,
  decodeMessage,
  encodeMessage,
  messageBufferBytes,
  updatePayloadBytes,
  WS_PROTOCOL_VERSION,
  type ClientMessage,
  type ServerMessage,
  type SubscribeMessage,
  type UpdateMessage,
} from '../protocol/ws-messages.js';
import type { LiveStore, LiveStoreRegistry } from './live-store.js';

export interface LiveStreamOptions {
  registry: LiveStoreRegistry;
  logger: Logger;
  /** updates per second per client, at most (clients may ask for fewer) */
  maxRate?: number;
  /** largest client message accepted, bytes; larger ones close the socket with 1009 */
  maxPayload?: number;
  /** close a client whose pending update has not been written out after this long */
  stallTimeoutMs?: number;
  /** close a client after this many malformed messages in a row */
  maxBadMessages?: number;
  /** replies other than updates (errors, pongs) are dropped while the socket buffers more than this */
  controlBufferLimit?: number;
  serverVersion?: string;
}

/** Updates with at least this many payload bytes are encoded into the client's own buffer. */
const REUSE_OUTPUT_FROM = 256 * 1024;

export const WS_CLOSE_SLOW_CLIENT = 4008;
export const WS_CLOSE_BAD_MESSAGES = 1008;
export const WS_CLOSE_GOING_AWAY = 1001;
export const WS_CLOSE_INTERNAL_ERROR = 1011;

interface Subscription {
  acquisition: string;
  epoch: number | 'latest';
  filter: ReadonlySet<string> | null;
}

interface Client {
  id: number;
  socket: WebSocket;
  remote: string;
  sub: Subscription | null;
  /** the store the client's mirror follows (null: the next update is a snapshot) */
  store: LiveStore | null;
  lastVersion: number;
  minIntervalMs: number;
  lastSentAt: number;
  /** when the update now in the socket was handed over; null if none is */
  inFlightSince: number | null;
  timer: NodeJS.Timeout | null;
  /** output buffer of large updates, reused once the previous update has been written out */
  out: Uint8Array | null;
  closed: boolean;
  badInARow: number;
  updates: number;
  snapshots: number;
  bytes: number;
  maxBufferedAmount: number;
}

export interface ClientStats {
  id: number;
  remote: string;
  subscribed: string | null;
  lastVersion: number;
  updates: number;
  snapshots: number;
  bytes: number;
  bufferedAmount: number;
  maxBufferedAmount: number;
  inFlightMs: number | null;
}

export interface StreamStats {
  clients: number;
  connections: number;
  updates: number;
  bytes: number;
  badMessages: number;
  oversize: number;
  closedSlow: number;
  droppedControl: number;
}

/** Sends the live stores to WebSocket clients; `attach` each accepted socket. */
export class LiveStream {
  readonly maxRate: number;
  readonly maxPayload: number;
  readonly stallTimeoutMs: number;
  private readonly registry: LiveStoreRegistry;
  private readonly log: Logger;
  private readonly maxBadMessages: number;
  private readonly controlBufferLimit: number;
  private readonly serverVersion: string;
  private readonly clients = new Set<Client>();
  private readonly validators: Record<string, ValidateFunction>;
  private readonly counters = { connections: 0, updates: 0, bytes: 0, badMessages: 0, oversize: 0, closedSlow: 0, droppedControl: 0 };
  private nextId = 1;
  private wakeScheduled = false;
  private readonly offRegistry: () => void;
  private readonly watchdog: NodeJS.Timeout;

  constructor(options: LiveStreamOptions) {
    this.registry = options.registry;
    this.log = options.logger;
    this.maxRate = options.maxRate ?? 60;
    this.maxPayload = options.maxPayload ?? 64 * 1024;
    this.stallTimeoutMs = options.stallTimeoutMs ?? 30_000;
    this.maxBadMessages = options.maxBadMessages ?? 16;
    this.controlBufferLimit = options.controlBufferLimit ?? 1024 * 1024;
    this.serverVersion = options.serverVersion ?? '0.1.0';
    const ajv = new Ajv({ allErrors: false });
    this.validators = Object.fromEntries(Object.entries(CLIENT_MESSAGE_SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]));
    this.offRegistry = this.registry.onChange(this.scheduleWake);
    this.watchdog = setInterval(() => this.closeStalled(), Math.min(1000, this.stallTimeoutMs / 4));
    this.watchdog.unref();
  }

  /** Take over an accepted WebSocket: greet it and serve its subscriptions. */
  attach(socket: WebSocket, remote = 'unknown'): void {
    const client: Client = {
      id: this.nextId++,
      socket,
      remote,
      sub: null,
      store: null,
      lastVersion: 0,
      minIntervalMs: 1000 / this.maxRate,
      lastSentAt: 0,
      inFlightSince: null,
      timer: null,
      out: null,
      closed: false,
      badInARow: 0,
      updates: 0,
      snapshots: 0,
      bytes: 0,
      maxBufferedAmount: 0,
    };
    this.clients.add(client);
    this.counters.connections++;
    socket.on('message', (data, isBinary) => this.onMessage(client, data as Buffer, isBinary));
    socket.on('close', (code, reason) => {
      this.forget(client);
      this.log.debug({ client: client.id, code, reason: reason.toString() }, 'ws client closed');
    });
    this.log.info({ client: client.id, remote }, 'ws client connected');
    this.sendControl(client, {
      v: WS_PROTOCOL_VERSION,
      type: 'hello',
      protocol: WS_PROTOCOL_VERSION,
      server: this.serverVersion,
      maxRate: this.maxRate,
      maxPayload: this.maxPayload,
    });
  }

  /** An 'error' event of an attached socket (ws closes the socket itself for protocol errors). */
  onSocketError(socket: WebSocket, error: Error & { code?: string }): void {
    const client = [...this.clients].find((c) => c.socket === socket);
    if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      this.counters.oversize++;
      this.log.warn({ client: client?.id, maxPayload: this.maxPayload }, 'ws client sent an oversize message: closed (1009)');
      return;
    }
    this.log.warn({ client: client?.id, err: error.message, code: error.code }, 'ws client socket error: closed');
    socket.terminate();
  }

  stats(): StreamStats {
    return { clients: this.clients.size, ...this.counters };
  }

  clientStats(): ClientStats[] {
    const now = performance.now();
    return [...this.clients].map((c) => ({
      id: c.id,
      remote: c.remote,
      subscribed: c.sub ? `${c.sub.acquisition}@${c.sub.epoch}` : null,
      lastVersion: c.lastVersion,
      updates: c.updates,
      snapshots: c.snapshots,
      bytes: c.bytes,
      bufferedAmount: c.socket.bufferedAmount,
      maxBufferedAmount: c.maxBufferedAmount,
      inFlightMs: c.inFlightSince === null ? null : now - c.inFlightSince,
    }));
  }

  /** Close every client (1001) and stop; resolves when all sockets are gone. */
  async close(graceMs = 500): Promise<void> {
    this.offRegistry();
    clearInterval(this.watchdog);
    const open = [...this.clients];
    for (const c of open) c.socket.close(WS_CLOSE_GOING_AWAY, 'server shutting down');
    const deadline = Date.now() + graceMs;
    while (open.some((c) => !c.closed) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const c of open) if (!c.closed) c.socket.terminate();
    for (const c of open) this.forget(c);
  }

  // -------------------------------------------------------------------------------------------
  // the sender loop

  private readonly scheduleWake = (): void => {
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      for (const c of this.clients) this.pump(c);
    });
  };

  private pump(c: Client): void {
    if (c.closed || c.inFlightSince !== null || c.timer !== null || c.sub === null) return;
    const store = this.registry.get(c.sub.acquisition, c.sub.epoch);
    if (!store) {
      // 'current' with no acquisition yet waits; a named one that went away is an error
      if (c.store !== null && c.sub.acquisition !== 'current') {
        this.sendError(c, new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${c.sub.acquisition} epoch ${c.sub.epoch}`));
        c.sub = null;
        c.store = null;
      }
      return;
    }
    const snapshot = store !== c.store;
    if (!snapshot && store.version === c.lastVersion) return;
    const now = performance.now();
    const wait = c.lastSentAt + c.minIntervalMs - now;
    if (wait > 0) {
      c.timer = setTimeout(() => {
        c.timer = null;
        this.pump(c);
      }, wait);
      return;
    }
    let bytes: Uint8Array;
    let version: number;
    try {
      const body = store.diffSince(snapshot ? 0 : c.lastVersion, { filter: c.sub.filter });
      const message: UpdateMessage = { v: WS_PROTOCOL_VERSION, type: snapshot ? 'snapshot' : 'diff', t: Date.now(), ...body };
      const payloadBytes = updatePayloadBytes(body);
      // a fresh 15 MB buffer per update costs page faults and GC; one per client is enough
      if (payloadBytes >= REUSE_OUTPUT_FROM && (!c.out || c.out.byteLength < messageBufferBytes(payloadBytes))) {
        c.out = allocMessageBuffer(messageBufferBytes(payloadBytes));
      }
      bytes = encodeMessage(message, payloadBytes, c.out ?? undefined);
      version = body.version;
    } catch (err) {
      // a bug or an allocation failure: lose this client, never the server
      this.log.error({ client: c.id, err }, 'cannot build a ws update: closing the client');
      c.socket.close(WS_CLOSE_INTERNAL_ERROR, 'TESSERA_ERR_INTERNAL: cannot build an update');
      this.forget(c);
      return;
    }
    c.store = store;
    c.lastVersion = version;
    c.lastSentAt = now;
    c.inFlightSince = now;
    c.updates++;
    if (snapshot) c.snapshots++;
    c.bytes += bytes.byteLength;
    this.counters.updates++;
    this.counters.bytes += bytes.byteLength;
    c.socket.send(bytes, { binary: true }, (err) => {
      c.inFlightSince = null;
      if (err) {
        if (!c.closed) this.log.debug({ client: c.id, err: err.message }, 'ws send failed');
        return;
      }
      this.pump(c);
    });
    c.maxBufferedAmount = Math.max(c.maxBufferedAmount, c.socket.bufferedAmount);
  }

  private closeStalled(): void {
    const now = performance.now();
    for (const c of this.clients) {
      if (c.closed || c.inFlightSince === null || now - c.inFlightSince < this.stallTimeoutMs) continue;
      this.counters.closedSlow++;
      const reason = new TesseraError('TESSERA_ERR_SLOW_CLIENT', Math.round(now - c.inFlightSince));
      this.log.warn({ client: c.id, remote: c.remote, bufferedAmount: c.socket.bufferedAmount }, reason.message);
      // the close frame waits behind the unread data: the reason reaches a client that
      // resumes reading within a second, any other is cut off
      c.socket.close(WS_CLOSE_SLOW_CLIENT, `${reason.code}: ${reason.message}`);
      const socket = c.socket;
      setTimeout(() => socket.terminate(), 1000).unref();
      this.forget(c);
    }
  }

  private forget(c: Client): void {
    c.closed = true;
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    this.clients.delete(c);
  }

  // -------------------------------------------------------------------------------------------
  // client messages

  private onMessage(c: Client, data: Buffer, isBinary: boolean): void {
    let message: ClientMessage;
    try {
      message = this.parse(data, isBinary);
    } catch (err) {
      const error = err instanceof TesseraError ? err : new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'ws', String(err));
      this.counters.badMessages++;
      c.badInARow++;
      this.log.warn({ client: c.id, code: error.code, err: error.message, inARow: c.badInARow }, 'bad ws client message');
      if (c.badInARow >= this.maxBadMessages) {
        c.socket.close(WS_CLOSE_BAD_MESSAGES, `TESSERA_ERR_BAD_MESSAGE: ${c.badInARow} malformed messages in a row`);
        this.forget(c);
        return;
      }
      this.sendError(c, error);
      return;
    }
    c.badInARow = 0;
    switch (message.type) {
      case 'subscribe':
        this.subscribe(c, message);
        break;
      case 'unsubscribe':
        c.sub = null;
        c.store = null;
        break;
      case 'ping':
        this.sendControl(c, { v: WS_PROTOCOL_VERSION, type: 'pong', id: message.id, t: Date.now() });
        break;
    }
  }

  private parse(data: Buffer, isBinary: boolean): ClientMessage {
    if (!isBinary) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'ws', 'text frame: messages are binary msgpack');
    let value: unknown;
    try {
      value = decodeMessage(data);
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'ws', `not msgpack: ${(err as Error).message}`);
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'ws', 'expected a map with "v" and "type"');
    }
    const { v, type } = value as { v?: unknown; type?: unknown };
    if (v !== WS_PROTOCOL_VERSION) throw new TesseraError('TESSERA_ERR_PROTOCOL_VERSION', JSON.stringify(v) ?? 'none', WS_PROTOCOL_VERSION);
    const validate = typeof type === 'string' && Object.hasOwn(this.validators, type) ? this.validators[type]! : null;
    if (!validate) {
      throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'ws', `unknown type ${JSON.stringify(type)} (known: ${Object.keys(this.validators).join(', ')})`);
    }
    if (!validate(value)) {
      const e = validate.errors![0]!;
      throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', `ws ${type}`, `${e.instancePath || '(message)'} ${e.message}`);
    }
    return value as ClientMessage;
  }

  private subscribe(c: Client, m: SubscribeMessage): void {
    const epoch = m.epoch ?? 'latest';
    if (m.acquisition !== 'current' && !this.registry.get(m.acquisition, epoch)) {
      this.sendError(c, new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${m.acquisition} epoch ${epoch}`));
      c.sub = null;
      c.store = null;
      return;
    }
    c.sub = { acquisition: m.acquisition, epoch, filter: m.buffers ? new Set(m.buffers) : null };
    c.minIntervalMs = 1000 / Math.min(m.maxRate ?? this.maxRate, this.maxRate);
    c.store = null;
    this.log.debug({ client: c.id, sub: c.sub.acquisition, epoch }, 'ws client subscribed');
    this.pump(c);
  }

  private sendError(c: Client, error: TesseraError): void {
    this.sendControl(c, { v: WS_PROTOCOL_VERSION, type: 'error', code: error.code satisfies ErrorCode, message: error.message });
  }

  /** Send a small reply; dropped (counted) while the client is not reading. */
  private sendControl(c: Client, message: ServerMessage): void {
    if (c.closed) return;
    if (c.socket.bufferedAmount > this.controlBufferLimit) {
      this.counters.droppedControl++;
      return;
    }
    c.socket.send(encodeMessage(message), { binary: true });
  }
}

export interface WsStreamPluginOptions {
  stream: LiveStream;
  /** route of the stream (default /ws) */
  path?: string;
}

/** Fastify plugin: the WebSocket route, served by `stream`. */
export const wsStreamPlugin: FastifyPluginAsync<WsStreamPluginOptions> = async (fastify, { stream, path = '/ws' }) => {
  await fastify.register(fastifyWebsocket, {
    options: { maxPayload: stream.maxPayload, perMessageDeflate: false },
    errorHandler: (error, socket) => stream.onSocketError(socket, error),
    preClose: async () => {
      await stream.close();
      fastify.websocketServer.close();
    },
  });
  fastify.get(path, { websocket: true }, (socket, request) => {
    stream.attach(socket, `${request.ip}:${request.socket.remotePort ?? ''}`);
  });
};
