/**
 * `ReceiverLink`: the merger's two ZeroMQ sockets towards the receivers (src/protocol/live.ts):
 * a ROUTER on `merger.control` (heartbeats, ready and failure in; acquire, params, stop and
 * abort out, addressed by routing id `receiver-<sector>`) and a PULL on `merger.results` (one
 * partial result per sector and chunk).
 *
 * Every incoming message is validated; a bad one (not msgpack, wrong version, wrong fields, a
 * routing id that does not match the sector it claims, too large for `maxMessageSize`) is
 * counted by reason, logged (rate-limited) and dropped: a receiver can never crash the merger.
 */
import * as zmq from 'zeromq';
import { TesseraError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  decodePartialMessage,
  decodeReceiverMessage,
  encodeLive,
  MAX_LIVE_MESSAGE_BYTES,
  type MergerToReceiver,
  type PartialMessage,
  type ReceiverToMerger,
} from '../protocol/live.js';
import { FRAMES_TAG } from '../shuffle/protocol.js';

export interface ReceiverLinkOptions {
  control: string;
  results: string;
  log?: Logger;
  /** largest message accepted on either socket (default MAX_LIVE_MESSAGE_BYTES) */
  maxMessageBytes?: number;
  onControl: (message: ReceiverToMerger, routingId: string) => void;
  /** `bytes`: size of the message on the wire */
  onPartial: (message: PartialMessage, bytes: number) => void;
  /** frame workers' results (two frames: FRAMES_TAG, msgpack), for the shuffle link */
  onFrameResults?: (raw: Buffer) => void;
}

export interface LinkCounters {
  controlMessages: number;
  partials: number;
  partialBytes: number;
  sent: number;
  /** messages dropped before they reached the merger core, by reason (error code or 'frames') */
  dropped: Record<string, number>;
  /** sends to a receiver that is not connected */
  unroutable: number;
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Partials queued in the merger's PULL socket at most (each up to a sector's sig buffers, ~4 MB for Sum): bounds memory when the merger falls behind. */
const RESULTS_HIGH_WATER_MARK = 64;

export const routingIdOf = (sector: number): string => `receiver-${sector}`;

export class ReceiverLink {
  readonly counters: LinkCounters = { controlMessages: 0, partials: 0, partialBytes: 0, sent: 0, dropped: {}, unroutable: 0 };
  private readonly router: zmq.Router;
  private readonly pull: zmq.Pull;
  private closed = false;
  private loops: Promise<void>[] = [];
  private sendChain: Promise<void> = Promise.resolve();
  private droppedTotal = 0;
  controlEndpoint = '';
  resultsEndpoint = '';

  private constructor(private readonly o: ReceiverLinkOptions) {
    const maxMessageSize = o.maxMessageBytes ?? MAX_LIVE_MESSAGE_BYTES;
    // handover: a restarted receiver takes its routing id over from the dead connection
    this.router = new zmq.Router({ linger: 0, maxMessageSize, handover: true, mandatory: true, sendTimeout: 1000 });
    this.pull = new zmq.Pull({ linger: 0, maxMessageSize, receiveHighWaterMark: RESULTS_HIGH_WATER_MARK });
  }

  static async open(o: ReceiverLinkOptions): Promise<ReceiverLink> {
    const link = new ReceiverLink(o);
    try {
      await link.router.bind(o.control);
      await link.pull.bind(o.results);
    } catch (err) {
      link.router.close();
      link.pull.close();
      throw new TesseraError('TESSERA_ERR_BIND', `${o.control} / ${o.results}`, (err as Error).message);
    }
    link.controlEndpoint = link.router.lastEndpoint ?? o.control;
    link.resultsEndpoint = link.pull.lastEndpoint ?? o.results;
    link.loops = [link.controlLoop(), link.resultsLoop()];
    o.log?.info({ control: link.controlEndpoint, results: link.resultsEndpoint }, 'receiver link listening');
    return link;
  }

  private drop(reason: string, err: unknown, extra: Record<string, unknown> = {}): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    this.droppedTotal++;
    if (this.droppedTotal <= 20 || this.droppedTotal % 1000 === 0) {
      this.o.log?.warn({ reason, err: (err as Error).message, dropped: this.droppedTotal, ...extra }, 'receiver link: bad message dropped');
    }
  }

  private async controlLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.router.receive();
      } catch (err) {
        if (this.closed) return;
        this.o.log?.error({ err }, 'receiver link: control receive failed');
        return;
      }
      this.counters.controlMessages++;
      const routingId = frames[0]!.toString('latin1');
      try {
        if (frames.length !== 2) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'control', `${frames.length - 1} frames, expected 1`);
        const message = decodeReceiverMessage(frames[1]!);
        if (routingId !== routingIdOf(message.sector)) {
          throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', message.type, `routing id "${routingId}" does not match sector ${message.sector}`);
        }
        this.o.onControl(message, routingId);
      } catch (err) {
        this.drop((err as TesseraError).code ?? 'error', err, { routingId });
      }
      if (this.counters.controlMessages % 64 === 0) await yieldToEventLoop();
    }
  }

  private async resultsLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.pull.receive();
      } catch (err) {
        if (this.closed) return;
        this.o.log?.error({ err }, 'receiver link: results receive failed');
        return;
      }
      try {
        if (frames.length === 2 && this.o.onFrameResults && frames[0]!.toString('latin1') === FRAMES_TAG) {
          this.o.onFrameResults(frames[1]!);
          await yieldToEventLoop();
          continue;
        }
        if (frames.length !== 1) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'partial', `${frames.length} frames, expected 1`);
        const message = decodePartialMessage(frames[0]!);
        this.counters.partials++;
        this.counters.partialBytes += frames[0]!.byteLength;
        this.o.onPartial(message, frames[0]!.byteLength);
      } catch (err) {
        this.drop((err as TesseraError).code ?? 'error', err);
      }
      // receive() resolves at once while messages are queued: without this, a backlog of
      // partials would starve timers and the control socket (heartbeats) for as long as it lasts
      await yieldToEventLoop();
    }
  }

  /** Send to one receiver; false if it is not connected (counted, not thrown). */
  send(sector: number, message: MergerToReceiver): Promise<boolean> {
    const bytes = encodeLive(message);
    const id = routingIdOf(sector);
    // one send at a time per socket (zeromq.js)
    const result = this.sendChain.then(async () => {
      if (this.closed) return false;
      try {
        await this.router.send([id, bytes]);
        this.counters.sent++;
        return true;
      } catch (err) {
        this.counters.unroutable++;
        this.o.log?.debug({ sector, type: message.type, err: (err as Error).message }, 'receiver link: not delivered');
        return false;
      }
    });
    this.sendChain = result.then(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.sendChain.catch(() => {});
    this.router.close();
    this.pull.close();
    await Promise.all(this.loops.map((l) => l.catch(() => {})));
  }
}
