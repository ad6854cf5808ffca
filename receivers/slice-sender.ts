/**
 * `SliceSender`: a TileSink that sends the sector slices of the frames the shuffle selected
 * (src/shuffle/selection.ts) to the shuffle service (`shuffle.slices`), decoded (uint16).
 *
 * A DEALER (routing id `slices-<sector>`) says hello every HELLO_MS with the rule version it
 * holds; the shuffle answers with its RuleBook when that is stale. Every receiver applies the
 * same rules to the same frame indices, so the 8 sectors send the same frames. The rules name
 * the detector acquisition (election round) they hold for, so after a resume of the merger's
 * acquisition only frames of the new detector acquisition are sent (selection.ts).
 *
 * Never blocks the receive path: sends queue at once or fail at once (sendTimeout 0, bounded
 * high-water mark); a slice that cannot be queued is counted and dropped (the shuffle then
 * completes that frame with zeros and marks it). The tile is a view of the decoder's memory,
 * valid only during onTile, so the selected rows are copied once into the message.
 */
import * as zmq from 'zeromq';
import { SECTOR_WIDTH } from '../src/k2is/constants.js';
import type { Logger } from '../src/log.js';
import { asSelection, decodeShuffle, encodeShuffle, HELLO_MS, SHUFFLE_PROTOCOL_VERSION, type SliceHeader } from '../src/shuffle/protocol.js';
import { RuleBook } from '../src/shuffle/selection.js';
import type { AcquisitionInfo, SectorTile, TileSink } from './tile.js';
import { trySend } from '../src/protocol/try-send.js';

export interface SliceSenderOptions {
  sector: number;
  /** the shuffle's slices endpoint (config shuffle.slices) */
  endpoint: string;
  /** slices queued towards the shuffle at most (default 32, about 30 MB) */
  highWaterMark?: number;
  log?: Logger;
}

export class SliceSenderStats {
  slicesSent = 0;
  bytesSent = 0;
  /** selected slices that could not be queued (shuffle absent or too slow) */
  slicesDropped = 0;
  selections = 0;
}

export class SliceSender implements TileSink {
  readonly stats = new SliceSenderStats();
  readonly book = new RuleBook();
  private readonly socket: zmq.Dealer;
  private readonly rounds = new Map<number, number | null>();
  private readonly timer: NodeJS.Timeout;
  private readonly loop: Promise<void>;
  private closed = false;

  constructor(private readonly o: SliceSenderOptions) {
    this.socket = new zmq.Dealer({
      routingId: `slices-${o.sector}`,
      linger: 0,
      immediate: true,
      sendTimeout: 0,
      sendHighWaterMark: o.highWaterMark ?? 32,
      reconnectInterval: 100,
      reconnectMaxInterval: 1000,
      maxMessageSize: 64 * 1024 * 1024,
    });
    this.socket.connect(o.endpoint);
    this.loop = this.receiveLoop();
    this.hello();
    this.timer = setInterval(() => this.hello(), HELLO_MS);
  }

  onAcquisitionStart(a: AcquisitionInfo): void {
    this.rounds.set(a.acquisition, a.round);
    if (this.rounds.size > 64) this.rounds.delete(this.rounds.keys().next().value as number);
  }

  onTile(tile: SectorTile): void {
    if (this.closed || this.book.list.length === 0) return;
    const round = this.rounds.get(tile.acquisition) ?? null;
    const n = tile.rows * SECTOR_WIDTH;
    for (let f = 0; f < tile.depth; f++) {
      const index = tile.frames[f]!.index;
      const rule = this.book.selects(index, round);
      if (!rule) continue;
      const header: SliceHeader = {
        version: SHUFFLE_PROTOCOL_VERSION,
        type: 'slice',
        sector: this.o.sector,
        round,
        index,
        acquisition: rule.acquisition,
        row0: tile.sigOrigin[0],
        rows: tile.rows,
        damage: tile.damage[f]! >>> 0,
      };
      const src = tile.data.subarray(f * n, (f + 1) * n);
      const pixels = Buffer.allocUnsafe(src.byteLength);
      pixels.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
      this.send([encodeShuffle(header), pixels], (ok) => {
        if (ok) {
          this.stats.slicesSent++;
          this.stats.bytesSent += pixels.byteLength;
        } else {
          const d = ++this.stats.slicesDropped;
          if (d <= 5 || d % 100 === 0) this.o.log?.warn({ dropped: d, index }, 'shuffle not taking slices: dropped');
        }
      });
    }
  }

  counters(): Record<string, number> {
    return { ...this.stats, ruleVersion: this.book.version };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.socket.close();
    await this.loop.catch(() => {});
  }

  private hello(): void {
    if (this.closed) return;
    this.send([encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'hello', sector: this.o.sector, pid: process.pid, ruleVersion: this.book.version })], () => {});
  }

  private send(m: Buffer[], done: (ok: boolean) => void): void {
    trySend(this.socket, m, done);
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.socket.receive();
      } catch {
        return;
      }
      try {
        const m = decodeShuffle(frames[0]!);
        if (m.type !== 'selection') throw new Error(`unexpected ${String(m.type)}`);
        const s = asSelection(m);
        this.book.replace(s.rules, s.ruleVersion);
        this.stats.selections++;
        this.o.log?.info({ ruleVersion: s.ruleVersion, rules: s.rules.map((r) => ({ acquisition: r.acquisition, fromIndex: r.fromIndex, base: r.base.kind, decimate: r.decimate })) }, 'shuffle selection');
      } catch (err) {
        this.o.log?.warn({ err: (err as Error).message }, 'shuffle link: malformed message dropped');
      }
    }
  }
}
