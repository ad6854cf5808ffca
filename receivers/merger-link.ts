/**
 * `MergerLink`: a receiver's two ZeroMQ sockets to the merger (src/protocol/live.ts).
 *
 *   control  DEALER, routing id `receiver-<sector>`, connects to config `merger.control`:
 *            heartbeat every HEARTBEAT_MS from the start on (the first one is the hello),
 *            ready / failure; receives acquire / params / stop / abort.
 *   results  PUSH, connects to config `merger.results`: one partial result per chunk.
 *
 * The merger may not be there yet, may go away and come back (restart): ZeroMQ reconnects on
 * its own and heartbeats simply go on. Nothing waits for the merger and nothing queues without
 * bound: both sockets are `immediate` (no queue towards a peer that is not connected) with a
 * small send high-water mark, and every send has a zero timeout, so a message that cannot be
 * queued at once is dropped and counted. The receive path (UDP) therefore never blocks on the
 * merger, and memory stays flat while it is gone.
 *
 * A malformed control message (not msgpack, wrong version, unknown type, bad fields, several
 * frames) is counted, logged (the first few, then every 100th) and dropped.
 */
import * as zmq from 'zeromq';
import type { Logger } from '../src/log.js';
import {
  decodeMergerMessage,
  encodeLive,
  HEARTBEAT_MS,
  LIVE_PROTOCOL_VERSION,
  type FailureMessage,
  type HeartbeatMessage,
  type MergerToReceiver,
  type PartialMessage,
  type ReadyMessage,
} from '../src/protocol/live.js';
import { trySend } from '../src/protocol/try-send.js';

/** What a heartbeat reports besides the envelope; gathered fresh for every beat. */
export type HeartbeatState = Omit<HeartbeatMessage, 'version' | 'type' | 'role' | 'sector' | 'pid' | 'sentAt'>;

export interface MergerLinkOptions {
  sector: number;
  /** config merger.control (the merger's ROUTER) */
  control: string;
  /** config merger.results (the merger's PULL) */
  results: string;
  heartbeat: () => HeartbeatState;
  onMessage: (m: MergerToReceiver) => void;
  heartbeatMs?: number;
  /** messages ZeroMQ may queue per socket towards a connected merger (default control 64, results 16) */
  controlHighWaterMark?: number;
  resultsHighWaterMark?: number;
  /** largest control message accepted (default 64 MiB: an ROI of a large scan) */
  maxControlBytes?: number;
  log?: Logger;
}

export class MergerLinkStats {
  heartbeatsSent = 0;
  /** control messages (heartbeats included) that could not be queued: merger absent or not reading */
  controlDropped = 0;
  controlReceived = 0;
  /** control messages dropped as malformed */
  controlMalformed = 0;
  partialsSent = 0;
  partialBytesSent = 0;
  /** partial results that could not be queued (merger absent or too slow) */
  partialsDropped = 0;
}

export class MergerLink {
  readonly stats = new MergerLinkStats();
  readonly routingId: string;
  private readonly control: zmq.Dealer;
  private readonly results: zmq.Push;
  private readonly timer: NodeJS.Timeout;
  private readonly loop: Promise<void>;
  private closed = false;

  constructor(private readonly o: MergerLinkOptions) {
    this.routingId = `receiver-${o.sector}`;
    const common = { linger: 0, immediate: true, sendTimeout: 0, reconnectInterval: 100, reconnectMaxInterval: 1000 };
    this.control = new zmq.Dealer({
      ...common,
      routingId: this.routingId,
      sendHighWaterMark: o.controlHighWaterMark ?? 64,
      receiveHighWaterMark: 64,
      maxMessageSize: o.maxControlBytes ?? 64 * 1024 * 1024,
    });
    this.results = new zmq.Push({ ...common, sendHighWaterMark: o.resultsHighWaterMark ?? 16 });
    this.control.connect(o.control);
    this.results.connect(o.results);
    this.loop = this.receiveLoop();
    this.heartbeat();
    this.timer = setInterval(() => this.heartbeat(), o.heartbeatMs ?? HEARTBEAT_MS);
  }

  ready(acquisition: string): void {
    const m: ReadyMessage = { version: LIVE_PROTOCOL_VERSION, type: 'ready', acquisition, sector: this.o.sector };
    this.sendControl(encodeLive(m));
  }

  failure(acquisition: string, code: string, message: string): void {
    const m: FailureMessage = { version: LIVE_PROTOCOL_VERSION, type: 'failure', acquisition, sector: this.o.sector, code, message: message.slice(0, 4000) };
    this.sendControl(encodeLive(m));
  }

  /** Queue a partial result without waiting; counted as sent or dropped once ZeroMQ answers. */
  sendPartial(m: PartialMessage): void {
    if (this.closed) return;
    const bytes = encodeLive(m);
    trySend(this.results, bytes, (ok) => {
      if (ok) {
        this.stats.partialsSent++;
        this.stats.partialBytesSent += bytes.byteLength;
        return;
      }
      const n = ++this.stats.partialsDropped;
      if (n <= 5 || n % 100 === 0) this.o.log?.warn({ dropped: n, acquisition: m.acquisition, epoch: m.epoch, chunk: m.chunk }, 'merger not taking partial results: dropped');
    });
  }

  /** The link's counters, flat, for heartbeats and stats lines. */
  counters(): Record<string, number> {
    return { ...this.stats };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.control.close();
    this.results.close();
    await this.loop.catch(() => {});
  }

  private heartbeat(): void {
    if (this.closed) return;
    let m: HeartbeatMessage;
    try {
      m = { version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: 'receiver', sector: this.o.sector, pid: process.pid, ...this.o.heartbeat(), sentAt: Date.now() };
    } catch (err) {
      this.o.log?.error({ err }, 'heartbeat state failed');
      return;
    }
    this.sendControl(encodeLive(m), () => this.stats.heartbeatsSent++);
  }

  private sendControl(bytes: Buffer, sent?: () => void): void {
    if (this.closed) return;
    trySend(this.control, bytes, (ok) => (ok ? sent?.() : this.stats.controlDropped++));
  }


  private async receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.control.receive();
      } catch (err) {
        if (!this.closed) this.o.log?.error({ err }, 'merger link: receive failed');
        return;
      }
      this.stats.controlReceived++;
      let m: MergerToReceiver;
      try {
        if (frames.length !== 1) throw new Error(`${frames.length} frames, expected 1`);
        m = decodeMergerMessage(frames[0]!);
      } catch (err) {
        const n = ++this.stats.controlMalformed;
        if (n <= 10 || n % 100 === 0) {
          this.o.log?.warn({ err: (err as Error).message, code: (err as { code?: string }).code, malformed: n }, 'merger link: malformed control message dropped');
        }
        continue;
      }
      try {
        this.o.onMessage(m);
      } catch (err) {
        this.o.log?.error({ err, type: m.type }, 'merger link: handling a control message failed');
      }
    }
  }
}
