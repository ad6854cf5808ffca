/**
 * `ShutterSync`: where an acquisition starts and ends, in one sector's stream of assembled
 * frames (spec A.6, Tessera conventions 1 and 3).
 *
 * Scan position 0 is the frame immediately before the first shutter-active frame: the camera
 * raises the flag one frame late. So while armed the sync keeps the last few frames from before
 * the flag (`historyFrames`). On its first flagged frame after a flag-off frame (the edge) it
 * proposes that frame's key to the election (src/protocol/election.ts) and holds frames
 * (bounded by `bufferFrames`; beyond that their data is dropped and they count as fully
 * damaged) until the answer. The elected key may be earlier than its own (this sector lost the
 * true first flagged frame entirely; it is then in the history as a missing frame). From the
 * decision on, every frame maps to
 *   index = (frameKey - (firstActiveKey - 32)) / 32,  scanIndex = index mod N, epoch = index div N.
 *
 * End: a single scan ends after N positions; then the sync re-arms and waits for the flag to
 * go off and on again. A continuous acquisition repeats the scan (epochs) while the flag stays
 * on. A time series (no scan shape) runs until the flag goes off. Frames outside an
 * acquisition are released, never handed on.
 *
 * Stream stopped: while acquiring, no frame at all for `streamIdleMs` (the camera died or the
 * link broke, mid-frame or not) ends the acquisition with reason 'stream_stopped' (tick()).
 * The frames after the last one seen are not invented: the sinks complete what is in flight.
 * Flagged frames that come back afterwards ask the election for the acquisition under way (a
 * link outage: the same acquisition goes on, and is rejoined at its position), whether the
 * assembler bridged the gap or resynchronised.
 *
 * A new detector acquisition without the flag going off in between (the camera was restarted
 * with the shutter on) shows as a frame_id that does not follow on: within an acquisition
 * frame_id counts up by one per frame (mod 2^32; it may only reset where the flag appears,
 * spec A.6). A flagged frame whose frame_id breaks that ends the acquisition ('jump') and is
 * taken as the first flagged frame of the next one (an edge: proposed to the election), so
 * frames of two acquisitions are never mixed.
 *
 * A receiver that starts while the flag is already on never sees the edge: it queries the
 * election for an acquisition under way and joins it at the position its frames map to. The
 * same happens after the stream restarted (onResync).
 */
import type { ElectionAnswer } from '../src/protocol/election.js';
import { framesSinceScanStart } from '../src/protocol/election.js';
import type { Logger } from '../src/log.js';
import type { FrameSlotPool } from './frame-slots.js';
import type { AssembledFrame, ResyncEvent } from './sector-frame-assembler.js';
import type { AcquisitionInfo, AcquisitionSummary } from './tile.js';
import { ReceiverCounters } from './stats.js';

const FULL = 0xffffffff;

export interface FirstFrameElector {
  propose(p: { frameKey: number; frameId: number; sawEdge: boolean }): Promise<ElectionAnswer>;
}

/** `--no-election`: a single sector decides on its own first flag. */
export class LocalElector implements FirstFrameElector {
  /** counts decisions, so that shutter rounds stay distinct as with the coordinator */
  private rounds = 0;
  propose(p: { frameKey: number; sawEdge: boolean }): Promise<ElectionAnswer> {
    if (!p.sawEdge) return Promise.resolve({ kind: 'none' });
    return Promise.resolve({ kind: 'decision', firstActiveKey: p.frameKey, round: ++this.rounds, decidedBy: 'all', missing: [], late: false });
  }
}

/** What a detector acquisition is cut into: scan positions per repetition, and whether it repeats. */
export interface ScanConfig {
  /** scan positions per scan (H x W), or null for a time series */
  scanPositions: number | null;
  continuous: boolean;
}

/** A frame with its place in the acquisition. */
export interface ScanFrame {
  frame: AssembledFrame;
  acquisition: number;
  /** frames since scan position 0 */
  index: number;
  scanIndex: number;
  epoch: number;
  /** scan positions per epoch, null for a time series */
  positions: number | null;
}

export interface ShutterSyncOptions {
  sector: number;
  elector: FirstFrameElector;
  /** true when elector is LocalElector (decisions are then 'local') */
  local?: boolean;
  pool: FrameSlotPool;
  /** scan positions per scan (H x W), or null for a time series */
  scanPositions: number | null;
  /** repeat the scan while the flag stays on */
  continuous: boolean;
  /** frames with data held while the vote is open */
  bufferFrames: number;
  /** frames from before the flag kept while armed (default 4) */
  historyFrames?: number;
  /** while acquiring, no frame for this long ends the acquisition ('stream_stopped'); 0 or absent: never */
  streamIdleMs?: number;
  /** largest gap in frame indices bridged with missing frames (default 64) */
  maxGapFrames?: number;
  onFrame: (f: ScanFrame) => void;
  onAcquisitionStart?: (a: AcquisitionInfo) => void;
  onAcquisitionEnd?: (a: AcquisitionSummary) => void;
  counters?: ReceiverCounters;
  log?: Logger;
}

type State = 'armed' | 'voting' | 'acquiring';

export class ShutterSync {
  private state: State = 'armed';
  private history: AssembledFrame[] = [];
  private held: AssembledFrame[] = [];
  private heldWithData = 0;
  private sawOff = false;
  /** a query found nothing to join: wait for an edge instead of asking again */
  private queried = false;
  private voteId = 0;
  private voteSawEdge = false;
  private acquisitions = 0;
  private acq: AcquisitionInfo | null = null;
  private nextIndex = 0;
  private framesHandedOn = 0;
  /** a flagged frame was handed on in this acquisition */
  private flagSeen = false;
  /** frame_id and index of the newest flagged frame with data handed on (frame_id continuity) */
  private idRef: { frameId: number; index: number } | null = null;
  /** performance.now() of the last frame pushed */
  private lastFrameAt = 0;
  private readonly counters: ReceiverCounters;
  private readonly historyFrames: number;
  private readonly maxGap: number;
  /** applies from the next acquisition on (configure) */
  private scan: ScanConfig;

  constructor(private readonly o: ShutterSyncOptions) {
    this.scan = { scanPositions: o.scanPositions, continuous: o.continuous };
    this.counters = o.counters ?? new ReceiverCounters();
    this.historyFrames = o.historyFrames ?? 4;
    this.maxGap = o.maxGapFrames ?? 64;
  }

  get phase(): State {
    return this.state;
  }

  get acquisition(): AcquisitionInfo | null {
    return this.acq;
  }

  /** The scan configuration the next acquisition will start with. */
  get scanConfig(): ScanConfig {
    return { ...this.scan };
  }

  /**
   * Change the scan shape (and repetition) from the next acquisition on; with `current`, also
   * for the acquisition in progress. Frame indices do not depend on it (frames since scan
   * position 0), only scanIndex / epoch and where a single scan ends; so a merger acquisition
   * can start at an epoch boundary of a continuous detector acquisition already under way.
   */
  configure(next: ScanConfig, current?: ScanConfig): void {
    this.scan = { ...next };
    if (current && this.acq && this.state === 'acquiring') {
      this.acq = { ...this.acq, scanPositions: current.scanPositions, continuous: current.continuous };
      this.o.log?.info({ acquisition: this.acq.acquisition, ...current }, 'shutter sync: acquisition in progress reconfigured');
    }
  }

  /** Take the next assembled frame (in sequence order). Owns its slot from here on. */
  push(frame: AssembledFrame): void {
    this.lastFrameAt = performance.now();
    if (this.state === 'voting') this.hold(frame);
    else if (this.state === 'acquiring') this.place(frame);
    else this.armed(frame);
  }

  /**
   * The assembler started a new sequence (the camera restarted, or a loss too long to bridge):
   * continuity is broken, so the acquisition in progress (or the vote) ends. Re-armed, the sync
   * asks the election for the acquisition under way at its next flagged frame: after a long
   * loss it rejoins at the right position; a restarted camera starts a new acquisition.
   */
  onResync(e: ResyncEvent): void {
    this.o.log?.warn({ state: this.state, ...e }, 'shutter sync: stream restarted');
    if (this.state === 'acquiring') this.end('jump');
    if (this.state === 'voting') {
      this.voteId++; // its answer is stale now
      this.drop(this.held);
      this.held = [];
      this.state = 'armed';
    }
    this.drop(this.history);
    this.history = [];
    this.sawOff = false;
    this.queried = false;
  }

  /**
   * Called periodically (the receiver's ticker): an acquisition whose stream went silent for
   * streamIdleMs ends as 'stream_stopped'. Returns true when it ended one.
   */
  tick(now = performance.now()): boolean {
    const idle = this.o.streamIdleMs ?? 0;
    if (idle <= 0 || this.state !== 'acquiring' || now - this.lastFrameAt < idle) return false;
    this.o.log?.warn({ sector: this.o.sector, acquisition: this.acq?.acquisition, idleMs: Math.round(now - this.lastFrameAt), nextIndex: this.nextIndex }, 'no frame from the detector: stream stopped, acquisition ended');
    this.end('stream_stopped');
    return true;
  }

  /** End the acquisition in progress (shutdown). */
  stop(): void {
    if (this.state === 'acquiring') this.end('stopped');
    this.voteId++;
    this.drop(this.held);
    this.held = [];
    this.drop(this.history);
    this.history = [];
    this.state = 'armed';
  }

  private armed(frame: AssembledFrame): void {
    if (frame.blocks > 0 && frame.shutter) {
      if (this.sawOff) return this.startVote(frame, true);
      if (!this.queried) return this.startVote(frame, false);
      this.drop([frame]);
      return;
    }
    if (frame.blocks > 0) {
      this.sawOff = true;
      this.queried = false;
    }
    this.history.push(frame);
    if (this.history.length > this.historyFrames) this.drop(this.history.splice(0, this.history.length - this.historyFrames));
  }

  private startVote(frame: AssembledFrame, sawEdge: boolean): void {
    this.state = 'voting';
    this.voteSawEdge = sawEdge;
    this.held = sawEdge ? this.history : [];
    if (!sawEdge) this.drop(this.history);
    this.history = [];
    this.heldWithData = this.held.filter((f) => f.slot >= 0).length;
    this.hold(frame);
    const id = ++this.voteId;
    const proposal = { frameKey: frame.key, frameId: frame.frameId ?? 0, sawEdge };
    this.o.log?.info({ sector: this.o.sector, ...proposal }, sawEdge ? 'first shutter-active frame: proposing' : 'flag already on: asking for the acquisition under way');
    this.o.elector.propose(proposal).then(
      (answer) => this.onAnswer(id, proposal.frameKey, answer),
      (err: unknown) => {
        this.o.log?.error({ err }, 'election failed');
        this.onAnswer(id, proposal.frameKey, { kind: 'no_answer' });
      },
    );
  }

  private hold(frame: AssembledFrame): void {
    if (frame.slot >= 0) {
      if (this.heldWithData >= this.o.bufferFrames) {
        // keep the frame's place (scan positions stay aligned) but not its data
        this.o.pool.release(frame.slot);
        this.counters.framesDroppedWhileVoting++;
        frame = { ...frame, slot: -1, damage: FULL };
      } else {
        this.heldWithData++;
      }
    }
    this.held.push(frame);
  }

  private onAnswer(id: number, ownKey: number, answer: ElectionAnswer): void {
    if (id !== this.voteId || this.state !== 'voting') return; // stale: the vote was abandoned
    let firstActiveKey: number;
    let decidedBy: AcquisitionInfo['decidedBy'];
    let missing: number[] = [];
    let round: number | null = null;
    if (answer.kind === 'decision') {
      firstActiveKey = answer.firstActiveKey;
      round = answer.round;
      decidedBy = this.o.local ? 'local' : answer.decidedBy;
      missing = answer.missing;
    } else if (answer.kind === 'no_answer' && this.voteSawEdge) {
      this.o.log?.warn({ sector: this.o.sector, frameKey: ownKey }, 'no election answer: starting on this sector\'s own first flagged frame');
      firstActiveKey = ownKey;
      decidedBy = 'local';
    } else {
      // nothing to join: wait for the next edge
      this.o.log?.info({ sector: this.o.sector }, 'no acquisition under way: waiting for the shutter edge');
      this.drop(this.held);
      this.held = [];
      this.state = 'armed';
      this.queried = true;
      return;
    }
    const held = this.held;
    this.held = [];
    this.heldWithData = 0;
    const joinedAt = this.voteSawEdge ? 0 : Math.max(0, framesSinceScanStart(held[0]!.key, firstActiveKey));
    this.acq = {
      acquisition: ++this.acquisitions,
      sector: this.o.sector,
      firstActiveKey,
      round,
      scanPositions: this.scan.scanPositions,
      continuous: this.scan.continuous,
      joinedAt,
      decidedBy,
      missingSectors: missing,
    };
    this.counters.acquisitions = this.acquisitions;
    this.nextIndex = joinedAt;
    this.framesHandedOn = 0;
    this.flagSeen = false;
    this.idRef = null;
    this.state = 'acquiring';
    this.lastFrameAt = performance.now();
    this.o.log?.info({ ...this.acq, ownKey, heldFrames: held.length }, 'acquisition started');
    this.o.onAcquisitionStart?.(this.acq);
    for (let k = 0; k < held.length; k++) {
      if (this.state === 'acquiring') this.place(held[k]!);
      else this.push(held[k]!);
    }
  }

  private place(frame: AssembledFrame): void {
    const a = this.acq!;
    const N = a.scanPositions;
    const i = framesSinceScanStart(frame.key, a.firstActiveKey);
    if (i < this.nextIndex) {
      if (this.framesHandedOn === 0 && i < 0) return this.drop([frame]); // before position 0
      this.o.log?.warn({ index: i, expected: this.nextIndex }, 'frame behind the acquisition: ending it');
      this.end('jump');
      return this.push(frame);
    }
    if (N !== null && !a.continuous && i >= N) {
      this.end('complete');
      return this.push(frame);
    }
    if (frame.blocks > 0 && !frame.shutter && this.flagSeen) {
      // the flag went off: the acquisition is over. (Flag-off frames before this sector's own
      // first flagged one belong to the acquisition if the election says so.)
      this.end(N !== null && !a.continuous && this.nextIndex >= N ? 'complete' : 'shutter_off');
      return this.push(frame);
    }
    if (frame.blocks > 0 && frame.shutter && frame.frameId !== null && this.idRef !== null) {
      const expected = (this.idRef.frameId + (i - this.idRef.index)) >>> 0;
      if (frame.frameId !== expected) {
        this.o.log?.warn({ sector: this.o.sector, index: i, frameId: frame.frameId, expected }, 'frame_id does not follow on: a new detector acquisition started under this one');
        this.end('jump');
        this.history = [];
        return this.startVote(frame, true);
      }
    }
    if (i > this.nextIndex) {
      const gap = i - this.nextIndex;
      if (gap <= this.maxGap) {
        for (let k = this.nextIndex; k < i; k++) this.handOn(this.missingFrame(frame, k - i), k);
      } else {
        this.o.log?.warn({ from: this.nextIndex, to: i }, 'frames jumped: positions in between not handed on');
      }
    }
    this.handOn(frame, i);
  }

  private missingFrame(like: AssembledFrame, offsetFrames: number): AssembledFrame {
    return {
      key: (like.key + 32 * offsetFrames) >>> 0,
      seq: (like.seq + offsetFrames) >>> 0,
      stream: like.stream,
      frameId: null,
      shutter: true,
      damage: FULL,
      blocks: 0,
      slot: -1,
    };
  }

  private handOn(frame: AssembledFrame, index: number): void {
    const a = this.acq!;
    const N = a.scanPositions;
    this.nextIndex = index + 1;
    this.framesHandedOn++;
    if (frame.blocks > 0 && frame.shutter) {
      this.flagSeen = true;
      if (frame.frameId !== null) this.idRef = { frameId: frame.frameId, index };
    }
    this.counters.framesInScan++;
    const sf: ScanFrame = {
      frame,
      acquisition: a.acquisition,
      index,
      scanIndex: N === null ? index : index % N,
      epoch: N === null ? 0 : Math.floor(index / N),
      positions: N,
    };
    this.o.onFrame(sf);
    if (N !== null && !a.continuous && this.nextIndex >= N) this.end('complete');
  }

  private end(reason: AcquisitionSummary['reason']): void {
    const a = this.acq;
    if (!a || this.state !== 'acquiring') return;
    const summary: AcquisitionSummary = { ...a, frames: this.framesHandedOn, reason };
    this.acq = null;
    this.state = 'armed';
    // wait for the flag to go off and on again: asking for the acquisition just ended would only
    // rejoin it. Except when the stream went silent: frames that come back with the flag on are
    // that acquisition going on (a link outage; the merger resumes on it), so ask for it
    this.sawOff = false;
    this.queried = reason !== 'stream_stopped';
    this.history = [];
    this.o.log?.info(summary, 'acquisition ended');
    this.o.onAcquisitionEnd?.(summary);
  }

  private drop(frames: AssembledFrame[]): void {
    for (const f of frames) {
      this.o.pool.release(f.slot);
      this.counters.framesOutsideScan++;
    }
  }
}
