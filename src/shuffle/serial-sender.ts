/**
 * One send at a time on a ZeroMQ socket (zeromq.js refuses concurrent sends), in order, with
 * a bounded queue: past `maxQueued` messages a send is refused and counted, never buffered
 * without bound.
 */
import type * as zmq from 'zeromq';

type Message = Array<Buffer | Uint8Array | string>;

export class SerialSender {
  sent = 0;
  failed = 0;
  refused = 0;
  private readonly queue: Array<{ m: Message; done?: (ok: boolean, err?: unknown) => void }> = [];
  private running = false;
  private closed = false;

  constructor(
    private readonly socket: { send(m: Message): Promise<void> } | zmq.Router | zmq.Dealer | zmq.Push,
    private readonly maxQueued = 256,
  ) {}

  get pending(): number {
    return this.queue.length;
  }

  /** `done(ok, err)`: err is the socket's error when the send failed (e.g. code EHOSTUNREACH: the ROUTER peer is gone) */
  send(m: Message, done?: (ok: boolean, err?: unknown) => void): boolean {
    if (this.closed || this.queue.length >= this.maxQueued) {
      this.refused++;
      done?.(false);
      return false;
    }
    this.queue.push({ m, done });
    if (!this.running) void this.loop();
    return true;
  }

  private async loop(): Promise<void> {
    this.running = true;
    while (this.queue.length && !this.closed) {
      const { m, done } = this.queue.shift()!;
      let ok = true;
      let error: unknown;
      try {
        await (this.socket as { send(m: Message): Promise<void> }).send(m);
        this.sent++;
      } catch (err) {
        ok = false;
        error = err;
        this.failed++;
      }
      done?.(ok, error);
    }
    this.running = false;
  }

  /** Wait (at most `ms`) until the queue is empty. */
  async drain(ms = 1000): Promise<void> {
    const end = Date.now() + ms;
    while ((this.queue.length || this.running) && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  }

  close(): void {
    this.closed = true;
    for (const { done } of this.queue.splice(0)) done?.(false);
  }
}
