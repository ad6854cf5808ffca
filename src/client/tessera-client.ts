/**
 * A client for the merger's protocol (docs/protocol.md), for Node and the browser.
 *
 * `LiveMirror` keeps a local copy of one acquisition epoch's live state: it applies snapshots
 * and diffs into typed arrays of each buffer's dtype. `TesseraClient` connects to the merger's
 * WebSocket (the constructor is an option: `ws` in Node, the global one in a browser),
 * subscribes, keeps the mirror, emits events, and wraps the HTTP control API.
 */
import type { AcquisitionRequest, AcquisitionSummary, MergerStatus, UdfDescription, UdfParamsChange } from '../merger/acquisition-schema.js';
import {
  allocateTyped,
  decodeMessage,
  dtypeBytes,
  encodeMessage,
  productOf,
  WS_PROTOCOL_VERSION,
  type AcquisitionInfo,
  type BufferDeclaration,
  type ClientMessage,
  type ErrorMessage,
  type HelloMessage,
  type Progress,
  type SectorStatus,
  type ServerMessage,
  type StateInfo,
  type SubscribeMessage,
  type TypedArray,
  type UpdateMessage,
} from '../protocol/ws-messages.js';

export interface MirrorBuffer extends BufferDeclaration {
  data: TypedArray;
  /** store version of the last update that changed it */
  version: number;
}

export interface ChangedRange {
  key: string;
  /** element range [start, end) of the flattened buffer */
  start: number;
  end: number;
}

export interface AppliedUpdate {
  snapshot: boolean;
  acquisition: string;
  epoch: number;
  from: number;
  version: number;
  /** server clock when the update was built (ms since the epoch) */
  t: number;
  /** bytes of the message */
  bytes: number;
  layoutChanged: boolean;
  changed: ChangedRange[];
}

/** Thrown by `LiveMirror.apply` for an update that does not fit the mirror. */
export class MirrorSyncError extends Error {
  readonly code = 'TESSERA_ERR_BAD_MESSAGE';
}

/** The client's copy of one acquisition epoch's live state. */
export class LiveMirror {
  acquisition: string | null = null;
  epoch: number | null = null;
  version = 0;
  readonly buffers = new Map<string, MirrorBuffer>();
  info: AcquisitionInfo | null = null;
  state: StateInfo | null = null;
  progress: Progress | null = null;
  sectors: SectorStatus[] = [];

  get(udf: string, name: string): MirrorBuffer | undefined {
    return this.buffers.get(`${udf}/${name}`);
  }

  /** A copy that later updates do not touch (buffers copied). */
  clone(): LiveMirror {
    const copy = new LiveMirror();
    copy.acquisition = this.acquisition;
    copy.epoch = this.epoch;
    copy.version = this.version;
    for (const [key, b] of this.buffers) copy.buffers.set(key, { ...b, data: b.data.slice() });
    copy.info = this.info;
    copy.state = this.state;
    copy.progress = this.progress;
    copy.sectors = this.sectors;
    return copy;
  }

  apply(message: UpdateMessage, bytes = 0): AppliedUpdate {
    const snapshot = message.type === 'snapshot';
    if (snapshot) {
      if (!message.layout) throw new MirrorSyncError('snapshot without layout');
      this.acquisition = message.acquisition;
      this.epoch = message.epoch;
      this.version = 0;
      this.buffers.clear();
      this.info = null;
      this.state = null;
      this.progress = null;
      this.sectors = [];
    } else if (message.acquisition !== this.acquisition || message.epoch !== this.epoch || message.from !== this.version) {
      throw new MirrorSyncError(
        `diff ${message.acquisition}@${message.epoch} from ${message.from} does not follow ${this.acquisition}@${this.epoch} version ${this.version}`,
      );
    }
    if (message.layout) this.applyLayout(message.layout);
    const changed: ChangedRange[] = [];
    for (const update of message.buffers) {
      const buffer = this.buffers.get(update.key);
      if (!buffer) throw new MirrorSyncError(`update of undeclared buffer ${update.key}`);
      const size = productOf(buffer.shape);
      const itemBytes = dtypeBytes(buffer.dtype);
      const target = new Uint8Array(buffer.data.buffer, buffer.data.byteOffset, buffer.data.byteLength);
      for (const { start, end, data } of update.ranges) {
        if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= size)) {
          throw new MirrorSyncError(`range [${start}, ${end}) outside ${update.key} (${size} elements)`);
        }
        if (data.byteLength !== (end - start) * itemBytes) {
          throw new MirrorSyncError(`range [${start}, ${end}) of ${update.key}: ${data.byteLength} bytes, expected ${(end - start) * itemBytes}`);
        }
        target.set(data, start * itemBytes);
        changed.push({ key: update.key, start, end });
      }
      buffer.version = message.version;
    }
    if (message.info) this.info = message.info;
    if (message.state) this.state = message.state;
    if (message.progress) this.progress = message.progress;
    if (message.sectors) this.sectors = message.sectors;
    this.version = message.version;
    return {
      snapshot,
      acquisition: message.acquisition,
      epoch: message.epoch,
      from: message.from,
      version: message.version,
      t: message.t,
      bytes,
      layoutChanged: message.layout !== undefined,
      changed,
    };
  }

  private applyLayout(layout: BufferDeclaration[]): void {
    const keep = new Set<string>();
    for (const decl of layout) {
      keep.add(decl.key);
      const existing = this.buffers.get(decl.key);
      if (existing && existing.definedAt === decl.definedAt) continue;
      this.buffers.set(decl.key, { ...decl, data: allocateTyped(decl.dtype, productOf(decl.shape)), version: 0 });
    }
    for (const key of [...this.buffers.keys()]) if (!keep.has(key)) this.buffers.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------

/** The part of the WebSocket API the client uses (browsers' WebSocket and the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface TesseraClientOptions {
  /** the merger's base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  /** WebSocket class; default globalThis.WebSocket (browsers; Node 22+) */
  WebSocket?: WebSocketConstructor;
  fetch?: typeof fetch;
  /** path of the stream (default /ws) */
  wsPath?: string;
  /** bearer token (control or viewer) for a merger that requires one (src/merger/auth.ts) */
  token?: string | null;
}

export type SubscribeOptions = Partial<Omit<SubscribeMessage, 'v' | 'type'>>;

interface ClientEvents {
  hello: HelloMessage;
  update: AppliedUpdate;
  /** `error` messages from the server, and updates the mirror could not apply */
  error: ErrorMessage | MirrorSyncError;
  close: { code: number; reason: string };
}

/** An HTTP API error reply. */
export class TesseraApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly statusCode: number,
  ) {
    super(message);
    this.name = 'TesseraApiError';
  }
}

export class TesseraClient {
  readonly mirror = new LiveMirror();
  hello: HelloMessage | null = null;
  /** updates and bytes received */
  readonly received = { updates: 0, snapshots: 0, bytes: 0 };
  private socket: WebSocketLike | null = null;
  private lastSubscribe: SubscribeMessage | null = null;
  private readonly listeners: { [K in keyof ClientEvents]: Set<(value: ClientEvents[K]) => void> } = {
    hello: new Set(),
    update: new Set(),
    error: new Set(),
    close: new Set(),
  };
  private readonly pings = new Map<number, (t: number) => void>();
  private nextPing = 1;
  private readonly baseUrl: string;
  private readonly WebSocketCtor: WebSocketConstructor;
  private readonly fetchFn: typeof fetch;
  private readonly wsPath: string;
  private readonly token: string | null;

  constructor(options: TesseraClientOptions) {
    this.baseUrl = options.url.replace(/\/$/, '');
    const ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!ctor) throw new Error('no WebSocket class: pass options.WebSocket (e.g. from the ws package)');
    this.WebSocketCtor = ctor;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.wsPath = options.wsPath ?? '/ws';
    this.token = options.token ?? null;
  }

  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  private emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    for (const l of this.listeners[event]) l(value);
  }

  /** Open the stream; resolves with the server's hello. */
  connect(): Promise<HelloMessage> {
    // browsers cannot set headers on a WebSocket: the token goes in the query (RFC 6750 §2.3)
    const query = this.token ? `?access_token=${encodeURIComponent(this.token)}` : '';
    // one connection at a time: connect() again closes the one before, whose updates would
    // otherwise keep coming into this mirror between the new socket's
    const old = this.socket;
    if (old) {
      old.onmessage = null;
      old.onerror = null;
      old.onclose = null;
      if (old.readyState < 2) old.close(1000, 'client reconnecting');
    }
    this.hello = null;
    this.lastSubscribe = null;
    const socket = new this.WebSocketCtor(this.baseUrl.replace(/^http/, 'ws') + this.wsPath + query);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    return new Promise((resolvePromise, reject) => {
      const off = this.on('hello', (hello) => {
        off();
        resolvePromise(hello);
      });
      socket.onerror = (ev) => {
        if (!this.hello) reject(new Error(`cannot connect to ${this.baseUrl}${this.wsPath}: ${(ev as { message?: string }).message ?? 'error'}`));
      };
      socket.onclose = (ev) => {
        if (!this.hello) reject(new Error(`connection closed before hello (${ev.code} ${ev.reason})`));
        this.emit('close', { code: ev.code, reason: ev.reason });
      };
      socket.onmessage = (ev) => this.onMessage(ev.data);
    });
  }

  private onMessage(data: unknown): void {
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
    if (!bytes) {
      this.emit('error', new MirrorSyncError('text frame from server'));
      return;
    }
    let message: ServerMessage;
    try {
      message = decodeMessage(bytes) as ServerMessage;
    } catch (err) {
      this.emit('error', new MirrorSyncError(`undecodable message: ${(err as Error).message}`));
      return;
    }
    switch (message.type) {
      case 'hello':
        this.hello = message;
        this.emit('hello', message);
        break;
      case 'snapshot':
      case 'diff': {
        let applied: AppliedUpdate;
        try {
          applied = this.mirror.apply(message, bytes.byteLength);
        } catch (err) {
          // out of step: ask for a fresh snapshot
          this.emit('error', err as MirrorSyncError);
          if (this.lastSubscribe) this.send(this.lastSubscribe);
          return;
        }
        this.received.updates++;
        if (applied.snapshot) this.received.snapshots++;
        this.received.bytes += bytes.byteLength;
        this.emit('update', applied);
        break;
      }
      case 'error':
        this.emit('error', message);
        break;
      case 'pong':
        this.pings.get(message.id)?.(message.t);
        this.pings.delete(message.id);
        break;
    }
  }

  private send(message: ClientMessage): void {
    if (!this.socket) throw new Error('not connected');
    this.socket.send(encodeMessage(message));
  }

  /** Follow an acquisition (default: the current one, latest epoch). The first update is a snapshot. */
  subscribe(options: SubscribeOptions = {}): void {
    const message: SubscribeMessage = { v: WS_PROTOCOL_VERSION, type: 'subscribe', acquisition: options.acquisition ?? 'current' };
    if (options.epoch !== undefined) message.epoch = options.epoch;
    if (options.buffers !== undefined) message.buffers = options.buffers;
    if (options.maxRate !== undefined) message.maxRate = options.maxRate;
    this.lastSubscribe = message;
    this.send(message);
  }

  unsubscribe(): void {
    this.lastSubscribe = null;
    this.send({ v: WS_PROTOCOL_VERSION, type: 'unsubscribe' });
  }

  /** Round trip to the server, ms. */
  ping(): Promise<number> {
    const id = this.nextPing++;
    const t0 = performance.now();
    return new Promise((resolvePromise) => {
      this.pings.set(id, () => resolvePromise(performance.now() - t0));
      this.send({ v: WS_PROTOCOL_VERSION, type: 'ping', id });
    });
  }

  /**
   * Resolves at the first update (or immediately) for which `predicate(mirror)` holds, with a
   * copy of the mirror as it was then: ws delivers the frames of one TCP read synchronously, so
   * the next update (a new epoch's snapshot clears the mirror) can land before the caller runs.
   */
  waitFor(predicate: (mirror: LiveMirror) => boolean, timeoutMs = 10_000): Promise<LiveMirror> {
    if (predicate(this.mirror)) return Promise.resolve(this.mirror.clone());
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`waitFor: condition not met within ${timeoutMs} ms (mirror version ${this.mirror.version})`));
      }, timeoutMs);
      const off = this.on('update', () => {
        if (!predicate(this.mirror)) return;
        clearTimeout(timer);
        off();
        resolvePromise(this.mirror.clone());
      });
    });
  }

  /** Close the stream; resolves when it is closed. */
  close(): Promise<void> {
    const socket = this.socket;
    if (!socket || socket.readyState === 3) return Promise.resolve();
    return new Promise((resolvePromise) => {
      const off = this.on('close', () => {
        off();
        resolvePromise();
      });
      socket.close(1000, 'client closing');
    });
  }

  // -------------------------------------------------------------------------------------------
  // HTTP control API

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.fetchFn(`${this.baseUrl}/api${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const e = (parsed ?? {}) as Partial<{ code: string; message: string }>;
      throw new TesseraApiError(e.code ?? 'TESSERA_ERR_INTERNAL', e.message ?? `${method} ${path}: HTTP ${response.status}`, response.status);
    }
    return parsed as T;
  }

  readonly api = {
    udfs: async (): Promise<UdfDescription[]> => (await this.request<{ udfs: UdfDescription[] }>('GET', '/udfs')).udfs,
    define: (request: AcquisitionRequest): Promise<AcquisitionSummary> => this.request('POST', '/acquisitions', request),
    get: (id: string): Promise<AcquisitionSummary> => this.request('GET', `/acquisitions/${encodeURIComponent(id)}`),
    start: (id: string): Promise<AcquisitionSummary> => this.request('POST', `/acquisitions/${encodeURIComponent(id)}/start`),
    stop: (id: string): Promise<AcquisitionSummary> => this.request('POST', `/acquisitions/${encodeURIComponent(id)}/stop`),
    abort: (id: string): Promise<AcquisitionSummary> => this.request('POST', `/acquisitions/${encodeURIComponent(id)}/abort`),
    updateUdfParams: (id: string, udfId: string, params: Record<string, unknown>): Promise<UdfParamsChange> =>
      this.request('PATCH', `/acquisitions/${encodeURIComponent(id)}/udfs/${encodeURIComponent(udfId)}`, { params }),
    status: (): Promise<MergerStatus> => this.request('GET', '/status'),
  };
}
