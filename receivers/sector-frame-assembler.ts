/**
 * `SectorFrameAssembler`: one sector's datagrams in, whole sector frames out, strictly in
 * sequence, whatever the network did to the datagrams on the way.
 *
 * Frame identity is the block_count, not the frame_id (Tessera convention 2): block i in send
 * order of a frame carries K + i, the same K in all eight sectors, so
 *   frameKey = (blockCount - blockIndex(x, y)) mod 2^32
 * names the frame in every sector and consecutive frames' keys differ by 32. frame_id jumps,
 * resets (284990 -> 2) and wraps are then no events at all; block_count's own wrap at 2^32 is
 * handled by doing all key arithmetic modulo 2^32 (`(a - b) | 0` is the signed distance).
 * frame_id is still cross-checked: a block whose frame_id differs from the first block placed
 * in its frame is dropped as `inconsistent_frame_id`.
 *
 * Blocks are placed by their header coordinates, never by arrival order, into a packed slot
 * (frame-slots.ts). Per frame a 32-bit bitmap records which blocks arrived; the emitted
 * `damage` is its complement: bit i set = block i (send order) missing and zero-filled.
 *
 * Emission and give-up: the oldest pending frame (`nextKey`) is emitted as soon as it is
 * complete. It is given up (emitted damaged) when a frame more than `maxFramesInFlight` newer
 * has arrived, or by `tick(now)` once `frameTimeoutMs` have passed since the first block of
 * it or of any newer frame arrived. Frames of which no block arrived are emitted too, fully
 * damaged, so that sequence numbers stay aligned with the stream.
 *
 * A block far from the frames in flight (more than maxFramesInFlight frames ahead of the
 * newest, more than maxFramesInFlight behind the next to emit, or off their block_count
 * grid) is counted `out_of_window` and kept aside. A run of `jumpConfirmBlocks` such blocks
 * that agree with each other confirms a jump of the stream (restart, new acquisition, a loss
 * longer than the window): pending frames are flushed, and the stream resynchronises on the
 * run, whose blocks are then placed normally (and counted by their new fate). A forward jump
 * of at most `maxGapFillFrames` is a long loss within the same stream: the frames in between
 * are emitted as missing. Anything else starts a new sequence (`stream` + 1, `onResync`).
 *
 * Restart after silence: a camera that restarts with its block_count at the old values sends
 * keys just behind the frames already emitted, which would pass for stragglers and duplicates
 * until its keys catch up, and then be taken as the old stream's continuation. Stragglers do
 * not arrive after the stream has been silent for `restartSilenceMs` (a K2 streams all the
 * time, acquiring or not), so after such a silence blocks behind the next frame are jump
 * candidates instead: a run of them confirms a restart, and the new stream never mixes with
 * the old one. The first block placed at or after the next frame ends the suspicion.
 *
 * `push` never throws, whatever the bytes: every datagram is counted exactly once (stats.ts).
 */
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, HEADER_SIZE, PAYLOAD_SIZE } from '../src/k2is/constants.js';
import { checkBlock, readBlockCount, readFlags, readFrameId, readPixelXStart, readPixelYStart } from '../src/k2is/header.js';
import { blockIndex } from '../src/k2is/geometry.js';
import type { Logger } from '../src/log.js';
import type { FrameSlotPool } from './frame-slots.js';
import { ReceiverCounters, type RejectionReason } from './stats.js';

const FULL = 0xffffffff;
const STEP = BLOCKS_PER_SECTOR_FRAME; // key distance of consecutive frames

/** A sector frame as emitted. */
export interface AssembledFrame {
  /** block_count of the frame's block 0 in send order (mod 2^32) */
  key: number;
  /** (key - first key of the stream) / 32 mod 2^32 */
  seq: number;
  /** which sequence this frame belongs to: + 1 at every resync that could not bridge a gap */
  stream: number;
  /** frame_id of the frame's blocks, or null when none arrived */
  frameId: number | null;
  /** the shutter-active flag (majority of the blocks that arrived; false when none did) */
  shutter: boolean;
  /** bit i (send order) set: block i never arrived and was zero-filled */
  damage: number;
  /** blocks that arrived */
  blocks: number;
  /** slot in the FrameSlotPool holding the packed payloads, or -1 when no block arrived. The
   *  receiver of the frame owns the slot and must release it. */
  slot: number;
}

export interface ResyncEvent {
  /** next key the assembler expected before the jump (null if it had no stream yet) */
  fromKey: number | null;
  toKey: number;
  /** signed distance in frames (NaN when there was no stream) */
  frames: number;
  /** 'gap': frames in between emitted as missing, sequence continues; 'restart': new sequence */
  kind: 'gap' | 'restart';
}

export type PushOutcome = 'ok' | 'duplicate' | 'straggler' | 'out_of_window' | RejectionReason;

export interface SectorFrameAssemblerOptions {
  maxFramesInFlight: number;
  frameTimeoutMs: number;
  /** consecutive consistent out-of-window blocks that confirm a jump (default 32) */
  jumpConfirmBlocks?: number;
  /** a confirmed forward jump up to this many frames is bridged with missing frames (default 4 x maxFramesInFlight) */
  maxGapFillFrames?: number;
  /** after this long without a valid block, blocks behind the next frame are restart candidates, not stragglers (0 or absent: never) */
  restartSilenceMs?: number;
  onFrame: (frame: AssembledFrame) => void;
  onResync?: (event: ResyncEvent) => void;
  counters?: ReceiverCounters;
  log?: Logger;
}

class PendingFrame {
  key = 0;
  slot = -1;
  frameId = 0;
  received = 0;
  count = 0;
  flagged = 0;
  firstArrival = 0;
}

export class SectorFrameAssembler {
  readonly counters: ReceiverCounters;
  private readonly pool: FrameSlotPool;
  private readonly window: number; // in key units (frames x 32)
  private readonly timeoutMs: number;
  private readonly confirm: number;
  private readonly maxGapFill: number;
  private readonly restartSilenceMs: number;
  private readonly onFrame: (frame: AssembledFrame) => void;
  private readonly onResync: ((event: ResyncEvent) => void) | undefined;
  private readonly log: Logger | undefined;

  private readonly pending = new Map<number, PendingFrame>();
  private readonly spare: PendingFrame[] = [];
  /** key of the next frame to emit; null before the first block */
  private nextKey: number | null = null;
  /** newest key accepted */
  private head = 0;
  private seq = 0;
  private stream = 0;
  private emittedAny = false;
  /** arrival time of the newest valid block */
  private lastBlockAt = -Infinity;
  /** the stream was silent for restartSilenceMs: blocks behind nextKey may be a restarted camera */
  private afterSilence = false;

  // out-of-window run (jump candidates), kept as copies so a confirmed run can be replayed
  private readonly candidates: Uint8Array;
  private candCount = 0;
  private candBase = 0;
  private replaying = false;
  private consumerErrors = 0;

  constructor(pool: FrameSlotPool, options: SectorFrameAssemblerOptions) {
    this.pool = pool;
    this.window = options.maxFramesInFlight * STEP;
    this.timeoutMs = options.frameTimeoutMs;
    this.confirm = Math.max(1, options.jumpConfirmBlocks ?? 32);
    this.maxGapFill = options.maxGapFillFrames ?? 4 * options.maxFramesInFlight;
    this.restartSilenceMs = options.restartSilenceMs ?? 0;
    this.onFrame = options.onFrame;
    this.onResync = options.onResync;
    this.counters = options.counters ?? new ReceiverCounters();
    this.log = options.log;
    this.candidates = new Uint8Array(this.confirm * BLOCK_SIZE);
  }

  /** Slots the assembler can hold at once (pending frames): size pools from this. */
  static slotsNeeded(maxFramesInFlight: number): number {
    return maxFramesInFlight + 2;
  }

  get pendingFrames(): number {
    return this.pending.size;
  }

  /** The key of the next frame to emit, or null before any block arrived. */
  get nextFrameKey(): number | null {
    return this.nextKey;
  }

  /** Take one datagram (`length` bytes of `buf`). Never throws on any input. */
  push(buf: Uint8Array, length = buf.length, now = performance.now()): PushOutcome {
    const c = this.counters;
    c.received++;
    c.bytesReceived += length;
    const reason = checkBlock(buf, 0, Math.min(length, buf.length));
    if (reason !== null) {
      c.rejected[reason]++;
      return reason;
    }
    const idx = blockIndex(readPixelXStart(buf), readPixelYStart(buf));
    const key = (readBlockCount(buf) - idx) >>> 0;
    if (this.restartSilenceMs > 0 && !this.replaying) {
      if (this.nextKey !== null && now - this.lastBlockAt >= this.restartSilenceMs) this.afterSilence = true;
      this.lastBlockAt = now;
    }

    if (this.nextKey === null) this.startStream(key);
    const next = this.nextKey!;
    const d = (key - next) | 0;
    if (d % STEP !== 0) return this.outOfWindow(buf, key);
    if (d < 0) {
      const behindHead = (this.head - key) | 0;
      if (!this.emittedAny && behindHead >= 0 && behindHead <= this.window) {
        // still at the start: an earlier frame arrived late, so the stream begins there
        this.nextKey = key;
        this.seq = 0;
      } else if (-d <= this.window && !this.afterSilence) {
        this.candCount = 0;
        c.stragglers++;
        return 'straggler';
      } else {
        return this.outOfWindow(buf, key);
      }
    } else if (((key - this.head) | 0) > this.window) {
      return this.outOfWindow(buf, key);
    }
    this.candCount = 0;
    this.afterSilence = false;

    let p = this.pending.get(key);
    const frameId = readFrameId(buf);
    if (p === undefined) {
      const slot = this.pool.acquire();
      if (slot < 0) {
        c.rejected.no_free_slot++;
        return 'no_free_slot';
      }
      p = this.spare.pop() ?? new PendingFrame();
      p.key = key;
      p.slot = slot;
      p.frameId = frameId;
      p.received = 0;
      p.count = 0;
      p.flagged = 0;
      p.firstArrival = now;
      this.pending.set(key, p);
      c.pendingFrames = this.pending.size;
    } else if (p.frameId !== frameId) {
      c.rejected.inconsistent_frame_id++;
      return 'inconsistent_frame_id';
    }
    const bit = 1 << idx;
    if ((p.received & bit) !== 0) {
      c.duplicates++;
      return 'duplicate';
    }
    this.pool.bytes(p.slot).set(buf.subarray(HEADER_SIZE, BLOCK_SIZE), idx * PAYLOAD_SIZE);
    p.received |= bit;
    p.count++;
    if ((readFlags(buf) & 1) !== 0) p.flagged++;
    c.ok++;
    c.bytesOk += BLOCK_SIZE;
    if (((key - this.head) | 0) > 0) this.head = key;
    this.emitReady();
    return 'ok';
  }

  /**
   * Give up frames that waited too long: the newest pending frame whose first block is
   * `frameTimeoutMs` old, and every frame before it. Call regularly (the receiver does every
   * few ms); this is also what ends the last frames of a stream that stopped.
   */
  tick(now = performance.now()): void {
    if (this.nextKey === null || this.pending.size === 0) return;
    let latest: number | null = null;
    for (const p of this.pending.values()) {
      if (now - p.firstArrival >= this.timeoutMs && (latest === null || ((p.key - latest) | 0) > 0)) latest = p.key;
    }
    if (latest === null) return;
    while (this.nextKey !== null && ((latest - this.nextKey) | 0) >= 0) this.emitNext();
    this.emitReady();
  }

  /** Emit every pending frame now (end of stream, shutdown), damaged where blocks are missing. */
  flush(): void {
    if (this.nextKey === null || this.pending.size === 0) return;
    let last = -1;
    for (const key of this.pending.keys()) last = Math.max(last, (key - this.nextKey) | 0);
    for (let n = last / STEP; n >= 0; n--) this.emitNext();
    if (this.pending.size > 0) {
      // cannot happen (pending frames are on the grid, at or after nextKey); never loop on it
      this.log?.error({ keys: [...this.pending.keys()], nextKey: this.nextKey }, 'pending frames off the sequence: dropped');
      for (const p of this.pending.values()) this.pool.release(p.slot);
      this.pending.clear();
      this.counters.pendingFrames = 0;
    }
  }

  private startStream(key: number): void {
    this.nextKey = key;
    this.head = key;
    this.seq = 0;
    this.emittedAny = false;
  }

  private emitReady(): void {
    for (;;) {
      const next = this.nextKey!;
      const p = this.pending.get(next);
      if (p !== undefined && p.count === BLOCKS_PER_SECTOR_FRAME) this.emitNext();
      else if (((this.head - next) | 0) > this.window) this.emitNext();
      else return;
    }
  }

  /** Emit the frame at nextKey as it is (complete, damaged or missing) and advance. */
  private emitNext(): void {
    const c = this.counters;
    const key = this.nextKey!;
    const p = this.pending.get(key);
    let frame: AssembledFrame;
    if (p !== undefined) {
      const damage = ~p.received >>> 0;
      if (damage !== 0) {
        for (let i = 0; i < BLOCKS_PER_SECTOR_FRAME; i++) if ((damage & (1 << i)) !== 0) this.pool.zeroBlock(p.slot, i);
        c.framesDamaged++;
        c.blocksZeroFilled += BLOCKS_PER_SECTOR_FRAME - p.count;
      } else {
        c.framesComplete++;
      }
      frame = {
        key,
        seq: this.seq,
        stream: this.stream,
        frameId: p.frameId,
        shutter: p.flagged > 0 && p.flagged * 2 >= p.count,
        damage,
        blocks: p.count,
        slot: p.slot,
      };
      this.pending.delete(key);
      this.spare.push(p);
      c.pendingFrames = this.pending.size;
    } else {
      c.framesMissing++;
      c.blocksZeroFilled += BLOCKS_PER_SECTOR_FRAME;
      frame = { key, seq: this.seq, stream: this.stream, frameId: null, shutter: false, damage: FULL, blocks: 0, slot: -1 };
    }
    this.nextKey = (key + STEP) >>> 0;
    if (((this.nextKey - this.head) | 0) > 0) this.head = this.nextKey;
    this.seq = (this.seq + 1) >>> 0;
    this.emittedAny = true;
    this.deliver(frame);
  }

  private deliver(frame: AssembledFrame): void {
    try {
      this.onFrame(frame);
    } catch (err) {
      // a consumer bug must not stop the receive loop; the frame's slot is reclaimed
      this.pool.release(frame.slot);
      if (this.consumerErrors++ < 10) this.log?.error({ err, key: frame.key }, 'frame consumer failed');
    }
  }

  private outOfWindow(buf: Uint8Array, key: number): PushOutcome {
    this.counters.outOfWindow++;
    if (this.replaying) return 'out_of_window';
    if (this.candCount > 0) {
      const d = (key - this.candBase) | 0;
      if (d % STEP !== 0 || d > this.window || -d > this.window) this.candCount = 0;
    }
    if (this.candCount === 0) this.candBase = key;
    this.candidates.set(buf.subarray(0, BLOCK_SIZE), this.candCount * BLOCK_SIZE);
    this.candCount++;
    if (this.candCount >= this.confirm) this.resync();
    return 'out_of_window';
  }

  private resync(): void {
    const c = this.counters;
    const run = this.candCount;
    const base = this.candBase;
    this.candCount = 0;
    this.afterSilence = false;
    c.resyncs++;
    const from = this.nextKey;
    this.flush();
    // after the flush nextKey is one past the newest frame emitted
    const next = this.nextKey;
    const gap = next === null ? NaN : ((base - next) | 0) / STEP;
    let kind: ResyncEvent['kind'];
    if (next !== null && Number.isInteger(gap) && gap >= 0 && gap <= this.maxGapFill) {
      kind = 'gap';
      this.head = base;
      while (this.nextKey !== base) this.emitNext();
    } else {
      kind = 'restart';
      this.stream++;
      this.nextKey = null;
    }
    const event: ResyncEvent = { fromKey: from, toKey: base, frames: next === null ? NaN : ((base - next) | 0) / STEP, kind };
    this.log?.warn({ ...event, confirmedBy: run }, kind === 'gap' ? 'long loss: frames in between emitted as missing' : 'stream jumped: resynchronised');
    if (kind === 'restart') {
      try {
        this.onResync?.(event);
      } catch (err) {
        this.log?.error({ err }, 'resync consumer failed');
      }
    }
    // The run's blocks were counted out_of_window; now they are placed and counted by their new fate.
    c.outOfWindow -= run;
    c.received -= run;
    c.bytesReceived -= run * BLOCK_SIZE;
    this.replaying = true;
    try {
      const now = performance.now();
      for (let i = 0; i < run; i++) this.push(this.candidates.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE), BLOCK_SIZE, now);
    } finally {
      this.replaying = false;
    }
  }
}
