/**
 * `AcquisitionManager`: the merger core behind the HTTP API (AcquisitionController). It owns
 * the acquisition (one at a time), tells the receivers what to run over the control channel,
 * follows them through their heartbeats (SectorMonitor), merges their partial results
 * (ChunkMerger) and feeds the live stores (LiveFeed).
 *
 * Start point: when the receivers report a detector acquisition under way (a continuous scan:
 * heartbeats with shutterRound and lastIndex, or phase acquiring before the first tile), the
 * acquisition starts at the first scan repetition that begins safely after the newest frame in
 * flight; otherwise at the next shutter edge. Heartbeats lag the edge, so receivers that report
 * being armed but not bound while the detector acquisition is under way get a start named
 * afterwards (nameStart). Parameter changes apply from the first chunk boundary safely after the frames
 * in flight, and the reply says from which frame; a stop names its last frame the same way.
 *
 * UDFs that need whole frames (no processTile) run behind the shuffle service (src/shuffle/,
 * docs/shuffle.md): the ShuffleLink gets them, and its WholeFrameMerger merges the workers'
 * results into the same live stores. Without a shuffle that has a worker, define refuses them
 * with TESSERA_ERR_NEEDS_WHOLE_FRAMES.
 */
import { TesseraError } from '../errors.js';
import type { Logger } from '../log.js';
import { BLOCKS_PER_SECTOR_FRAME, FRAME_HEIGHT, FRAME_WIDTH } from '../k2is/constants.js';
import {
  chunkRange,
  HEARTBEAT_MS,
  LIVE_PROTOCOL_VERSION,
  type AcquireMessage,
  type DetectorEnded,
  type MergerToReceiver,
  type PartialMessage,
  type ReceiverToMerger,
  type ResumeInfo,
} from '../protocol/live.js';
import type { AcquisitionState } from '../protocol/ws-messages.js';
import { DatasetResults } from '../udf/dataset-results.js';
import { getUdfClass, registeredUdfNames, createUdf } from '../udf/registry.js';
import { makeRunContext } from '../udf/runner.js';
import type { RunContext } from '../udf/meta.js';
import { PartitionTask } from '../udf/partition-task.js';
import type { UDF } from '../udf/udf.js';
import {
  roiSummary,
  type AcquisitionDefinition,
  type AcquisitionSummary,
  type MergerStatus,
  type UdfDescription,
  type UdfParamsChange,
} from './acquisition-schema.js';
import { ChunkMerger, type EpochResults, type MergedChunk } from './chunk-merger.js';
import type { AcquisitionController } from './http-api.js';
import { LiveFeed } from './live-feed.js';
import type { LiveStoreRegistry } from './live-store.js';
import { SectorMonitor, type SectorView } from './sector-monitor.js';
import { isWholeFrame, type PickedFrame, type ShuffleLink } from '../shuffle/shuffle-link.js';
import { parseSelection } from '../shuffle/selection.js';
import { recordingPath } from './record-path.js';
import { AcquisitionRecorder, DEFAULT_RECORDER_SETTINGS, type RecorderSettings, type RecordingStatus } from './recorder.js';

export interface AcquisitionManagerOptions {
  registry: LiveStoreRegistry;
  /** sends one control message to one sector's receiver; false if it is not connected */
  send: (sector: number, message: MergerToReceiver) => Promise<boolean>;
  sectors?: number;
  sigShape?: [number, number];
  chunkTimeoutMs?: number;
  keepEpochs?: number;
  /** frames this long at the observed frame rate are taken to be in flight (start, params, stop) */
  inFlightMs?: number;
  livenessMs?: number;
  /** the shuffle service: whole-frame UDFs run behind it when it is there (src/shuffle/shuffle-link.ts) */
  shuffle?: ShuffleLink | null;
  /** recordings: data directory, write and snapshot intervals */
  recorder?: Partial<RecorderSettings>;
  log?: Logger;
}

interface Acquisition {
  id: string;
  definition: AcquisitionDefinition;
  state: AcquisitionState;
  message: string | null;
  context: RunContext;
  merger: ChunkMerger;
  feed: LiveFeed;
  paramsVersions: number[];
  start: AcquireMessage['start'];
  ready: Set<number>;
  /** sectors whose receiver refused the acquisition (failure message): not waited for */
  failed: Map<number, { why: string; pid: number | null }>;
  /** per sector: when acquire was last sent */
  acquireSent: Map<number, number>;
  /** per sector: stop/abort messages sent again after the end */
  endResent: Map<number, number>;
  stopAt: number | null;
  stopTimer: NodeJS.Timeout | null;
  rate: { t: number; frames: number; fps: number };
  recorder: AcquisitionRecorder;
  /** recordings of this acquisition so far (a restarted recording gets a new file) */
  recordings: number;
  /** the detector acquisition ended under it (every live sector said so): noticed at, and the grace timer */
  detectorEnd: { message: string; timer: NodeJS.Timeout | null } | null;
  /**
   * Continuous: the latest resume after a detector end (sent in `acquire`), with what the status
   * says about it; `start` is then the resumed leg's mapping, null until its round is known.
   */
  resume: (ResumeInfo & { rejoin: AcquireMessage['rejoin']; stopped: string; resumed: boolean }) | null;
  /** started with `start` null: when a receiver was first seen armed but not bound while its detector acquisition was under way (nameStart) */
  unboundSince: number | null;
  /** a named start whose detector acquisition every sector has left unbound: since when (withdrawStaleStart) */
  staleStartSince: number | null;
  /** when the merger last logged that it merges behind the receivers (rate limit) */
  lagWarnedAt: number;
}

/** how long nameStart waits for sectors whose vote may still bind them at index 0 before it names a start anyway */
const NAME_START_GRACE_MS = 4 * HEARTBEAT_MS;
/** how long every sector must show a named start's detector acquisition gone before the start is withdrawn (a few heartbeats: not one stale one) */
const STALE_START_GRACE_MS = 3 * HEARTBEAT_MS;

/** the newest merged chunk's latency is reported as the merge lag this long after it was merged */
const MERGE_LAG_FRESH_MS = 10_000;
/** a merge lag above this is logged (at most every MERGE_LAG_WARN_EVERY_MS): the live view is that far behind */
const MERGE_LAG_WARN_MS = 5000;
const MERGE_LAG_WARN_EVERY_MS = 10_000;

const TERMINAL: AcquisitionState[] = ['done', 'aborted', 'failed'];

export class AcquisitionManager implements AcquisitionController {
  readonly monitor: SectorMonitor;
  readonly sectors: number;
  private readonly sigShape: [number, number];
  private current: Acquisition | null = null;
  private readonly acquisitions = new Map<string, Acquisition>();
  private next = 1;
  private lastSectorPush = 0;
  private readonly prefix = Date.now().toString(36);
  /** partials for an acquisition that is not the current one */
  stalePartials = 0;

  constructor(private readonly o: AcquisitionManagerOptions) {
    this.sectors = o.sectors ?? 8;
    this.sigShape = o.sigShape ?? [FRAME_HEIGHT, FRAME_WIDTH];
    this.monitor = new SectorMonitor({
      sectors: this.sectors,
      livenessMs: o.livenessMs,
      log: o.log,
      onState: (v, previous) => this.onSectorState(v, previous),
      onHeartbeat: (v) => this.onHeartbeat(v),
    });
  }

  // -------------------------------------------------------------------------------------------
  // receivers

  onControl(message: ReceiverToMerger): void {
    switch (message.type) {
      case 'heartbeat':
        this.monitor.heartbeat(message);
        return;
      case 'ready': {
        const a = this.acquisitions.get(message.acquisition);
        if (a) {
          a.ready.add(message.sector);
          this.o.log?.info({ acquisition: a.id, sector: message.sector, ready: a.ready.size }, 'receiver ready');
        }
        return;
      }
      case 'failure': {
        const a = this.acquisitions.get(message.acquisition);
        if (!a || TERMINAL.includes(a.state)) return;
        const why = `sector ${message.sector}: ${message.code}: ${message.message}`;
        a.failed.set(message.sector, { why, pid: this.monitor.view(message.sector).last?.pid ?? null });
        a.ready.delete(message.sector);
        // one sector that cannot run it (e.g. a restarted receiver that cannot rejoin) is a
        // missing sector; the acquisition fails only when no live sector can run it
        if (this.monitor.alive().every((v) => a.failed.has(v.sector))) this.fail(a, why);
        else {
          this.o.log?.warn({ acquisition: a.id, sector: message.sector, code: message.code, err: message.message }, 'a receiver cannot run the acquisition: its sector is filled in as missing');
          a.merger.recheck();
        }
      }
    }
  }

  onPartial(message: PartialMessage): void {
    this.monitor.seen(message.sector);
    const a = this.current;
    if (!a || a.id !== message.acquisition || (a.state !== 'running' && a.state !== 'stopping')) {
      this.stalePartials++;
      return;
    }
    if (a.stopAt !== null && message.epoch * a.merger.positions + message.navStart >= a.stopAt) return;
    // after a resume, the epochs before it are finished: a straggler of them is late, not a new epoch
    if (a.resume && message.epoch < a.resume.epoch) {
      a.merger.counters.dropped.late = (a.merger.counters.dropped.late ?? 0) + 1;
      return;
    }
    a.merger.add(message);
  }

  private onSectorState(v: SectorView, previous: string): void {
    const a = this.current;
    if (v.state === 'missing' && a && (a.state === 'running' || a.state === 'stopping')) a.merger.recheck();
    if (previous !== v.state) this.pushSectors(true);
  }

  private onHeartbeat(v: SectorView): void {
    this.pushSectors(false);
    const a = this.current;
    const h = v.last!;
    if (!a) return;
    const t = Date.now();
    // a restarted receiver (another pid) may try again what the previous one refused
    const failed = a.failed.get(v.sector);
    if (failed && failed.pid !== h.pid) a.failed.delete(v.sector);
    if (a.state === 'running' && h.acquisition !== a.id && !a.failed.has(v.sector)) {
      // a receiver that started (or restarted) after the acquire: it joins
      const sent = a.acquireSent.get(v.sector) ?? 0;
      if (t - sent > 4 * HEARTBEAT_MS) {
        a.acquireSent.set(v.sector, t);
        void this.o.send(v.sector, this.acquireMessage(a));
      }
    } else if ((a.state === 'stopping' || TERMINAL.includes(a.state)) && h.acquisition === a.id) {
      // a receiver that missed the stop or abort hears it again, a few times (its heartbeat keeps
      // naming the acquisition after the end, so this cannot be the condition alone)
      const sent = a.acquireSent.get(v.sector) ?? 0;
      const resent = a.endResent.get(v.sector) ?? 0;
      if (t - sent > 4 * HEARTBEAT_MS && resent < 3) {
        a.acquireSent.set(v.sector, t);
        a.endResent.set(v.sector, resent + 1);
        void this.o.send(v.sector, a.state === 'stopping' || a.state === 'done' ? this.stopMessage(a) : { version: LIVE_PROTOCOL_VERSION, type: 'abort', acquisition: a.id });
      }
    }
    if (a.state === 'stopping') this.maybeFinishStop(a);
    if (a.state === 'running') {
      this.learnResumedRound(a, h);
      this.withdrawStaleStart(a);
      this.nameStart(a);
      this.checkDetectorEnded(a);
    }
  }

  /**
   * Started with `start` null ("index 0 of the next detector acquisition") just after the shutter
   * edge: the heartbeats the start point came from did not show the detector acquisition yet, and
   * a receiver that took the acquire after its election decided stays armed for a next detector
   * acquisition that a continuous scan never brings. Its heartbeats show it (runState 'armed',
   * phase 'acquiring', shutterRound r): the merger then names a concrete start and re-sends
   * acquire, which an armed receiver takes (PartialRunner.startNamed). So that every sector
   * agrees on the mapping:
   *  - a sector already bound in round r (its acquire came before its vote decided) runs with
   *    index 0 of r as frame 0: start = {r, 0}, the others join at the next chunk boundary;
   *  - whole-frame UDFs: the shuffle, told start null, maps frames that way too: {r, 0};
   *  - otherwise, once every live sector is armed in round r (or after NAME_START_GRACE_MS, for
   *    sectors that never get there, e.g. no stream): the first scan repetition safely after
   *    the frames in flight, as at a start.
   */
  private nameStart(a: Acquisition): void {
    if (a.start !== null || a.resume !== null) return;
    const views = this.monitor.alive().filter((v) => !a.failed.has(v.sector));
    const decided = (v: SectorView) => {
      const h = v.last!;
      return h.acquisition === a.id && h.phase === 'acquiring' && h.shutterRound !== null && (h.runState === 'armed' || h.runState === 'running' || h.runState === 'stopping');
    };
    const waiting = views.filter((v) => decided(v) && v.last!.runState === 'armed');
    if (waiting.length === 0) {
      a.unboundSince = null;
      return;
    }
    const t = Date.now();
    a.unboundSince ??= t;
    const round = Math.max(...waiting.map((v) => v.last!.shutterRound!));
    const inRound = views.filter((v) => decided(v) && v.last!.shutterRound === round);
    const bound = inRound.filter((v) => v.last!.runState !== 'armed').map((v) => v.sector);
    const wholeFrames = !!this.o.shuffle && a.definition.udfs.some((u) => isWholeFrame(u));
    const settled = inRound.length === views.length;
    if (bound.length === 0 && !wholeFrames && !settled && t - a.unboundSince < NAME_START_GRACE_MS) return;
    if (bound.length > 0 || wholeFrames) a.start = { shutterRound: round, startIndex: 0 };
    else {
      const last = Math.max(...inRound.map((v) => this.newestIndexOf(v)));
      const P = a.merger.positions;
      a.start = { shutterRound: round, startIndex: Math.ceil((last + 1 + this.inFlightFramesAtEdge(a)) / P) * P };
    }
    a.unboundSince = null;
    const armed = waiting.map((v) => v.sector);
    this.o.log?.warn({ acquisition: a.id, start: a.start, armed, bound, settled, wholeFrames }, 'receivers armed after the shutter edge: the acquisition starts at a named point of the detector acquisition under way');
    for (let s = 0; s < this.sectors; s++) a.acquireSent.set(s, t);
    this.broadcast(this.acquireMessage(a));
  }

  /**
   * A start named in a detector acquisition that ended before any sector bound to it: the camera
   * stopped within streamIdleMs before the start, when the heartbeats still showed its detector
   * acquisition under way, so the start named its next repetition, which never comes; a new
   * camera run is another election round, which that start does not bind either. When every
   * live sector has taken the acquire and is still armed, with no detector acquisition or a
   * newer one, the start goes back to null: index 0 of the next detector acquisition, or, when
   * one is under way already, the point nameStart names in it. Receivers and the shuffle take
   * the withdrawal while nothing is bound (PartialRunner.withdrawStart).
   */
  private withdrawStaleStart(a: Acquisition): void {
    const start = a.start;
    if (start === null || a.resume !== null) return;
    const views = this.monitor.alive().filter((v) => !a.failed.has(v.sector));
    const gone = (v: SectorView) => {
      const h = v.last!;
      return h.acquisition === a.id && h.runState === 'armed' && (h.shutterRound === null || h.shutterRound > start.shutterRound);
    };
    if (views.length === 0 || !views.every(gone)) {
      a.staleStartSince = null;
      return;
    }
    const t = Date.now();
    a.staleStartSince ??= t;
    if (t - a.staleStartSince < STALE_START_GRACE_MS) return;
    a.start = null;
    a.staleStartSince = null;
    a.unboundSince = null;
    this.o.log?.warn(
      { acquisition: a.id, withdrawn: start, rounds: views.map((v) => v.last!.shutterRound) },
      'the detector acquisition the start was named in ended before the receivers reached it: the acquisition starts with the next detector acquisition',
    );
    for (let s = 0; s < this.sectors; s++) a.acquireSent.set(s, t);
    const withdrawn = this.acquireMessage(a);
    this.broadcast(withdrawn);
    this.o.shuffle?.withdrawStart(withdrawn);
  }

  /**
   * The newest frame index a sector may have reached in its detector acquisition: its heartbeat's
   * lastIndex (-1 before its first tile), plus the frames that may have come since that heartbeat.
   */
  private newestIndexOf(v: SectorView): number {
    const h = v.last!;
    const age = Math.max(0, Date.now() - v.lastSeen);
    return (h.lastIndex ?? -1) + Math.ceil((this.frameRateOf(v) * age) / 1000);
  }

  /** A sector's frame rate: from lastIndex between heartbeats, or before that (just after an edge) from its datagram rate (the camera streams acquiring or not). */
  private frameRateOf(v: SectorView): number {
    return Math.max(v.framesPerSecond, v.status.datagramsPerSecond / BLOCKS_PER_SECTOR_FRAME);
  }

  /** inFlightFrames with the frame rates known just after an edge (frameRateOf). */
  private inFlightFramesAtEdge(a: Acquisition): number {
    const fps = Math.max(0, ...this.monitor.alive().map((v) => this.frameRateOf(v)));
    return Math.max(this.inFlightFrames(a), Math.ceil((fps * (this.o.inFlightMs ?? 500)) / 1000));
  }

  /**
   * A resume sent with start null: the first heartbeat showing a detector acquisition decided
   * after the ended one names its round, so that re-sent acquires (a receiver restarted) and the
   * frames in flight (stop, params) use the concrete mapping the receivers bound to.
   */
  private learnResumedRound(a: Acquisition, h: NonNullable<SectorView['last']>): void {
    const r = a.resume;
    if (!r || a.start !== null || h.shutterRound === null || h.lastIndex === null) return;
    if (r.rejoin && h.shutterRound === r.rejoin.shutterRound) {
      // the detector acquisition that ended came back (a link outage; every sector ended it before
      // the resume, so a frame of that round now is of the rejoined stream): its old mapping
      a.start = { ...r.rejoin };
      this.o.log?.info({ acquisition: a.id, resume: r.n, start: a.start }, 'resumed acquisition: the detector acquisition that ended came back (link outage): it goes on with its mapping');
      // whole-frame UDFs: the shuffle, waiting for a detector acquisition after the round, is told this one (from frame R x P on)
      this.o.shuffle?.resume(this.acquireMessage(a));
      return;
    }
    if (r.afterRound !== null && h.shutterRound <= r.afterRound) return;
    a.start = { shutterRound: h.shutterRound, startIndex: -r.epoch * a.merger.positions };
    this.o.log?.info({ acquisition: a.id, resume: r.n, start: a.start }, 'resumed acquisition: the detector acquisition it runs on');
  }

  /**
   * The detector acquisition ended under this one (stream stopped, restarted, shutter off) when
   * every live sector running it reports detectorEnded. After chunkTimeoutMs (the chunks in
   * flight arrive) a single scan ends: the chunks that never came are completed as missing and
   * the state is done with a message; a continuous one says so and stays stoppable.
   */
  private checkDetectorEnded(a: Acquisition): void {
    if (a.detectorEnd) return;
    const running = this.monitor.alive().filter((v) => v.last!.acquisition === a.id && !a.failed.has(v.sector));
    // only ends of the current leg count: a heartbeat from before a resume reached the receiver is stale
    const leg = a.resume?.n ?? 0;
    const ended = (d: DetectorEnded | null | undefined) => !!d && (d.resume ?? 0) === leg;
    if (running.length === 0 || running.some((v) => !ended(v.last!.detectorEnded))) return;
    const ends = running.map((v) => v.last!.detectorEnded!);
    const at = Math.max(...ends.map((e) => e.atFrame));
    const reason = ends.some((e) => e.reason === 'stream_stopped') ? 'stream_stopped' : ends[0]!.reason;
    const what = reason === 'stream_stopped' ? 'detector stream stopped' : reason === 'jump' ? 'detector stream restarted' : reason === 'shutter_off' ? 'detector acquisition ended (shutter off)' : `detector acquisition ended (${reason})`;
    const N = a.merger.positions;
    const where = a.definition.mode === 'single' ? `scan position ${at}` : `scan position ${at % N} of epoch ${Math.floor(at / N)}`;
    const message = `${what} at ${where}`;
    a.detectorEnd = { message, timer: null };
    this.o.log?.warn({ acquisition: a.id, reason, atFrame: at, sectors: running.map((v) => v.sector) }, 'the detector acquisition ended under the acquisition');
    a.detectorEnd.timer = setTimeout(() => {
      a.detectorEnd!.timer = null;
      if (a.state !== 'running') return;
      a.merger.flush();
      if (a.definition.mode === 'single') {
        a.merger.completeMissing(0);
        this.finish(a);
      } else {
        this.resumeLater(a, at, ends, message);
      }
    }, this.o.chunkTimeoutMs ?? 1500);
    a.detectorEnd.timer.unref?.();
  }

  /**
   * A continuous acquisition whose detector acquisition ended (at acquisition-relative frame
   * `at`, the first that never came) carries on with the next one: the epochs before R =
   * ceil(at / N), the first with no frame, are completed (the positions that never came marked
   * missing) and so finished like any epoch with damage; the receivers get the acquire again
   * with `resume` {n, epoch R, afterRound}: index 0 of the next detector acquisition is frame
   * R x N, or, when one is already under way, its first scan repetition safely after the frames
   * in flight (`start`). The merger decides for every sector, so they cannot disagree, and no
   * epoch gets frames of two detector acquisitions. `rejoin` names the ended leg's mapping
   * (legMapping): after a link outage the camera still streams the same detector acquisition, the
   * receivers rejoin it (same round) and go on with that mapping from a chunk boundary at or after
   * R x N; epochs R .. up to there get no partial (ChunkMerger jumps ahead), and learnResumedRound
   * makes it the `start` once a heartbeat shows that round again (re-sent acquires, stop, params).
   */
  private resumeLater(a: Acquisition, at: number, ends: DetectorEnded[], message: string): void {
    const N = a.merger.positions;
    const R = Math.ceil(at / N);
    a.merger.completeBefore(R);
    if (a.state !== 'running') return;
    const rounds = ends.map((e) => e.round).filter((r): r is number => typeof r === 'number');
    if (a.start) rounds.push(a.start.shutterRound);
    const afterRound = rounds.length ? Math.max(...rounds) : null;
    const rejoin = this.legMapping(a, ends);
    a.resume = { n: (a.resume?.n ?? 0) + 1, epoch: R, afterRound, rejoin, stopped: message, resumed: false };
    a.start = this.resumePoint(a, a.resume);
    a.detectorEnd = null;
    // whole-frame UDFs resume too: the shuffle maps the next detector acquisition (and only it) from epoch R on
    this.o.shuffle?.resume(this.acquireMessage(a));
    this.setState(a, 'running', `${message}; resumes at epoch ${R} with the next detector acquisition`);
    const t = Date.now();
    for (let s = 0; s < this.sectors; s++) a.acquireSent.set(s, t);
    this.broadcast(this.acquireMessage(a));
    this.o.log?.warn({ acquisition: a.id, atFrame: at, resume: a.resume, start: a.start }, 'continuous acquisition: resumes with the next detector acquisition');
  }

  /**
   * The mapping of the leg that just ended ({its round, its startIndex}), for a rejoin after a
   * link outage (acquire.rejoin); null when the sectors ended in different or unknown rounds, or
   * the merger's start names another round.
   */
  private legMapping(a: Acquisition, ends: DetectorEnded[]): { shutterRound: number; startIndex: number } | null {
    const round = ends[0]?.round;
    if (typeof round !== 'number' || ends.some((e) => e.round !== round)) return null;
    if (a.start) return a.start.shutterRound === round ? { shutterRound: round, startIndex: a.start.startIndex } : null;
    const r = a.resume;
    if (!r) return { shutterRound: round, startIndex: 0 };
    if (r.rejoin && r.rejoin.shutterRound === round) return { shutterRound: round, startIndex: r.rejoin.startIndex };
    return { shutterRound: round, startIndex: -r.epoch * a.merger.positions };
  }

  /** A detector acquisition decided after the ended one already under way: its first repetition safely ahead is epoch R; else null (the next one's index 0). */
  private resumePoint(a: Acquisition, r: ResumeInfo): AcquireMessage['start'] {
    const under = this.monitor.alive().filter((v) => v.last!.lastIndex !== null && v.last!.shutterRound !== null && (r.afterRound === null || v.last!.shutterRound! > r.afterRound));
    if (under.length === 0) return null;
    const round = Math.max(...under.map((v) => v.last!.shutterRound!));
    const last = Math.max(...under.filter((v) => v.last!.shutterRound === round).map((v) => v.last!.lastIndex!));
    const N = a.merger.positions;
    const s = Math.ceil((last + 1 + this.inFlightFrames(a)) / N) * N;
    return { shutterRound: round, startIndex: s - r.epoch * N };
  }

  private pushSectors(force: boolean): void {
    const t = Date.now();
    if (!force && t - this.lastSectorPush < HEARTBEAT_MS) return;
    this.lastSectorPush = t;
    this.current?.feed.setSectors(this.monitor.statuses());
  }

  // -------------------------------------------------------------------------------------------
  // AcquisitionController

  listUdfs(): UdfDescription[] {
    return registeredUdfNames().map((name) => {
      const cls = getUdfClass(name) as ReturnType<typeof getUdfClass> & { description?: string };
      let description = typeof cls.description === 'string' ? cls.description : '';
      try {
        if (new cls({}).getMethod() !== 'tile') description = `${description ? description + ' ' : ''}(whole frames: needs the shuffle service)`.trim();
      } catch {
        // params required: the method is still the class's
      }
      return { name, description, params: (cls.paramsSchema as Record<string, unknown> | undefined) ?? { type: 'object' } };
    });
  }

  private instantiate(definition: AcquisitionDefinition): UDF[] {
    return definition.udfs.map((u) => {
      getUdfClass(u.name);
      const udf = createUdf({ name: u.name, params: u.params });
      if (udf.getMethod() !== 'tile' && !this.o.shuffle?.available()) throw new TesseraError('TESSERA_ERR_NEEDS_WHOLE_FRAMES', u.name);
      return udf;
    });
  }

  /** Run the UDFs' declarations and per-slice set-up once, so bad parameters fail here as a 400. */
  private trial(udfs: ReadonlyArray<UDF | { name: string; params: Record<string, unknown> }>, context: RunContext): DatasetResults {
    try {
      const results = new DatasetResults(udfs as UDF[], context);
      const sectorWidth = this.sigShape[1] / this.sectors;
      const nav = context.roi ? context.roi.indexOf(1) : 0;
      new PartitionTask({ udfs: udfs as UDF[], context, partition: { navStart: nav, navEnd: nav + 1, sig: { origin: [0, 0], shape: [this.sigShape[0], sectorWidth] } } }).finish();
      return results;
    } catch (err) {
      if (err instanceof TesseraError && err.statusCode !== undefined && err.statusCode < 500) throw err;
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', udfs.map((u) => (u as { name?: string }).name ?? u.constructor.name).join(', '), (err as Error).message);
    }
  }

  define(definition: AcquisitionDefinition): AcquisitionSummary {
    const busy = this.current;
    if (busy && (busy.state === 'running' || busy.state === 'stopping')) throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'define another acquisition', `${busy.id} ${busy.state}`);
    const all = this.instantiate(definition);
    // whole-frame UDFs run behind the shuffle, in a context of their own (src/shuffle/)
    const udfs = all.filter((u) => u.getMethod() === 'tile');
    this.o.shuffle?.check(definition.udfs.filter((_, i) => all[i]!.getMethod() !== 'tile').map((u) => ({ name: u.name, params: u.params })), definition.scanShape, definition.roi);
    const context = makeRunContext({ navShape: definition.scanShape, sigShape: this.sigShape, datasetDtype: 'uint16', sectors: this.sectors, udfs, roi: definition.roi });
    this.trial(udfs, context);
    if (definition.record.enabled) recordingPath(this.recorderSettings.dataDir, 'check', definition.record.path);
    if (busy && busy.state === 'defined') this.discard(busy);
    const id = `acq-${this.prefix}-${this.next++}`;
    const a = this.build(id, definition, context);
    this.acquisitions.set(id, a);
    this.current = a;
    this.o.registry.setCurrent(id);
    this.o.log?.info({ acquisition: id, scanShape: definition.scanShape, udfs: definition.udfs.map((u) => u.name), mode: definition.mode, chunkSize: definition.chunkSize }, 'acquisition defined');
    return this.summary(a);
  }

  private build(id: string, definition: AcquisitionDefinition, context: RunContext, paramsVersions?: number[]): Acquisition {
    const positions = definition.scanShape[0] * definition.scanShape[1];
    const selected = roiSummary(definition.roi)?.selected ?? positions;
    const udfs = definition.udfs.filter((u) => !isWholeFrame(u)).map((u) => ({ id: u.id, name: u.name, params: u.params }));
    const feed = new LiveFeed({
      registry: this.o.registry,
      acquisition: id,
      scanShape: definition.scanShape,
      udfs,
      info: { mode: definition.mode, chunkSize: definition.chunkSize, udfs: definition.udfs, roi: roiSummary(definition.roi) },
      framesPerEpoch: selected,
      sectors: this.sectors,
      log: this.o.log,
    });
    // the merger's callbacks need the record the merger is part of
    let a: Acquisition | null = null;
    const rs = this.recorderSettings;
    const recorder = new AcquisitionRecorder({
      acquisition: id,
      definition,
      navShape: definition.scanShape,
      sigShape: this.sigShape,
      udfs,
      writeIntervalMs: rs.writeIntervalMs,
      snapshotIntervalMs: rs.snapshotIntervalMs,
      epochs: () => a?.merger.epochList ?? [],
      stats: () => ({ sectors: this.monitor.statuses(), merge: a!.merger.counters }),
      onStatus: (record) => feed.mergeInfo({ record }),
      log: this.o.log,
    });
    const merger = new ChunkMerger({
      acquisition: id,
      udfs,
      context,
      chunkSize: definition.chunkSize,
      mode: definition.mode,
      sectors: this.sectors,
      chunkTimeoutMs: this.o.chunkTimeoutMs ?? 1500,
      keepEpochs: this.o.keepEpochs ?? 2,
      isMissing: (s) => this.monitor.view(s).state !== 'alive' || (a?.failed.has(s) ?? false),
      onEpoch: (e) => {
        feed.addEpoch(e);
        recorder.addEpoch(e);
      },
      onChunk: (c) => this.onChunk(a!, c),
      log: this.o.log,
    });
    a = {
      id,
      definition,
      state: 'defined',
      message: null,
      context,
      merger,
      feed,
      paramsVersions: paramsVersions ?? definition.udfs.map(() => 0),
      start: null,
      ready: new Set(),
      failed: new Map(),
      acquireSent: new Map(),
      endResent: new Map(),
      stopAt: null,
      stopTimer: null,
      rate: { t: Date.now(), frames: 0, fps: 0 },
      recorder,
      recordings: 0,
      detectorEnd: null,
      resume: null,
      unboundSince: null,
      staleStartSince: null,
      lagWarnedAt: 0,
    };
    feed.setSectors(this.monitor.statuses());
    return a;
  }

  private discard(a: Acquisition): void {
    a.merger.close();
    this.acquisitions.delete(a.id);
    this.o.registry.remove(a.id);
  }

  private need(id: string): Acquisition {
    const a = this.acquisitions.get(id);
    if (!a) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${id}`);
    return a;
  }

  get(id: string): AcquisitionSummary {
    return this.summary(this.need(id));
  }

  /** Frames the receivers may hold or process beyond their newest one: inFlightMs at the frame rate, at least one chunk. */
  private inFlightFrames(a: Acquisition): number {
    const fps = Math.max(0, ...this.monitor.alive().map((v) => v.framesPerSecond));
    return Math.max(a.definition.chunkSize, Math.ceil((fps * (this.o.inFlightMs ?? 500)) / 1000));
  }

  private startPoint(a: Acquisition): AcquireMessage['start'] {
    // a detector acquisition under way: a frame of it seen, or decided (phase acquiring) with no
    // tile yet, just after its edge (counted at index -1): its next repetition safely ahead
    const running = this.monitor.alive().filter((v) => v.last!.shutterRound !== null && (v.last!.lastIndex !== null || v.last!.phase === 'acquiring'));
    if (running.length === 0) return null;
    // the newest detector acquisition, and the newest frame in it
    const round = Math.max(...running.map((v) => v.last!.shutterRound!));
    const inRound = running.filter((v) => v.last!.shutterRound === round);
    const early = inRound.some((v) => v.last!.lastIndex === null);
    const last = Math.max(...inRound.map((v) => (early ? this.newestIndexOf(v) : v.last!.lastIndex!)));
    const acqPositions = a.definition.scanShape[0] * a.definition.scanShape[1];
    const detector = inRound.find((v) => v.last!.positions !== null)?.last!.positions ?? acqPositions;
    if (detector !== acqPositions) {
      this.o.log?.warn({ detectorPositions: detector, acquisitionPositions: acqPositions }, 'the detector scans another number of positions than the acquisition: epochs will not line up with its scan');
    }
    const startIndex = Math.ceil((last + 1 + (early ? this.inFlightFramesAtEdge(a) : this.inFlightFrames(a))) / detector) * detector;
    return { shutterRound: round, startIndex };
  }

  private acquireMessage(a: Acquisition): AcquireMessage {
    const d = a.definition;
    return {
      version: LIVE_PROTOCOL_VERSION,
      type: 'acquire',
      acquisition: a.id,
      scanShape: d.scanShape,
      roi: d.roi,
      udfs: d.udfs.filter((u) => !isWholeFrame(u)).map((u) => ({ id: u.id, name: u.name, params: u.params })),
      chunkSize: d.chunkSize,
      mode: d.mode,
      start: a.start,
      resume: a.resume ? { n: a.resume.n, epoch: a.resume.epoch, afterRound: a.resume.afterRound } : null,
      // the ended leg's mapping, should its detector acquisition come back (a link outage)
      ...(a.resume?.rejoin && a.start === null ? { rejoin: a.resume.rejoin } : {}),
    };
  }

  private stopMessage(a: Acquisition): MergerToReceiver {
    return { version: LIVE_PROTOCOL_VERSION, type: 'stop', acquisition: a.id, atFrame: a.stopAt };
  }

  private broadcast(message: MergerToReceiver): void {
    for (let s = 0; s < this.sectors; s++) void this.o.send(s, message);
  }

  private setState(a: Acquisition, state: AcquisitionState, message: string | null = null): void {
    a.state = state;
    a.message = message;
    a.feed.setState(state, message);
    this.o.log?.info({ acquisition: a.id, state, message }, 'acquisition state');
  }

  start(id: string): AcquisitionSummary {
    const a = this.need(id);
    if (a.state !== 'defined') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'start', a.state);
    a.start = this.startPoint(a);
    const t = Date.now();
    for (let s = 0; s < this.sectors; s++) a.acquireSent.set(s, t);
    this.broadcast(this.acquireMessage(a));
    this.o.shuffle?.start({ ...this.acquireMessage(a), udfs: a.definition.udfs.filter((u) => isWholeFrame(u)).map((u) => ({ id: u.id, name: u.name, params: u.params })) }, a.definition.mode);
    a.rate = { t, frames: 0, fps: 0 };
    this.setState(a, 'running');
    if (a.definition.record.enabled) this.startRecording(a).catch((err: unknown) => this.o.log?.error({ acquisition: a.id, err }, 'cannot start the recording'));
    this.o.log?.info({ acquisition: id, start: a.start, alive: this.monitor.alive().map((v) => v.sector) }, 'acquisition started');
    return this.summary(a);
  }

  /** The first acquisition-relative chunk boundary safely after the frames in flight and merged. */
  private nextSafeFrame(a: Acquisition): number {
    const positions = a.merger.positions;
    let frontier = 0;
    for (const e of a.merger.epochList) {
      const [, end] = e.chunksMerged > 0 ? chunkRange(e.chunksMerged - 1, a.definition.chunkSize, positions) : [0, 0];
      frontier = Math.max(frontier, e.epoch * positions + end);
    }
    const base = a.start?.startIndex ?? 0;
    // a resume whose detector acquisition has not begun: no frame of it in flight yet
    const pending = a.resume !== null && a.start === null;
    for (const v of this.monitor.alive()) {
      const h = v.last!;
      if (!pending && h.acquisition === a.id && h.lastIndex !== null && (a.start === null || h.shutterRound === a.start.shutterRound)) {
        frontier = Math.max(frontier, h.lastIndex - base + 1);
      }
    }
    const want = frontier + this.inFlightFrames(a);
    const epoch = Math.floor(want / positions);
    const within = want - epoch * positions;
    const chunk = Math.ceil(within / a.definition.chunkSize);
    const at = chunk * a.definition.chunkSize;
    return at >= positions ? (epoch + 1) * positions : epoch * positions + at;
  }

  stop(id: string): AcquisitionSummary {
    const a = this.need(id);
    if (a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'stop', a.state);
    a.stopAt = this.nextSafeFrame(a);
    this.setState(a, 'stopping');
    this.broadcast(this.stopMessage(a));
    this.o.shuffle?.end(a.id, 'stop', a.stopAt);
    const t = Date.now();
    for (let s = 0; s < this.sectors; s++) a.acquireSent.set(s, t);
    // the chunks before stopAt arrive, or the timeout fills them in
    a.stopTimer = setTimeout(() => this.finish(a), (this.o.chunkTimeoutMs ?? 1500) + 2000);
    this.maybeFinishStop(a);
    return this.summary(a);
  }

  private maybeFinishStop(a: Acquisition): void {
    if (a.state !== 'stopping' || a.stopAt === null) return;
    const positions = a.merger.positions;
    const lastEpoch = Math.floor((a.stopAt - 1) / positions);
    for (const e of a.merger.epochList) {
      if (e.epoch > lastEpoch) continue;
      const endChunk = e.epoch < lastEpoch ? e.chunks : Math.ceil((a.stopAt - e.epoch * positions) / a.definition.chunkSize);
      if (e.chunksMerged < endChunk) return;
    }
    if (a.stopAt > 0 && !a.merger.epochList.some((e) => e.epoch === lastEpoch)) return;
    this.finish(a);
  }

  private finish(a: Acquisition): void {
    if (a.state !== 'stopping' && a.state !== 'running') return;
    if (a.stopTimer) clearTimeout(a.stopTimer);
    a.stopTimer = null;
    if (a.detectorEnd?.timer) clearTimeout(a.detectorEnd.timer);
    if (a.state === 'running' && a.definition.mode === 'single') a.stopAt = a.merger.positions;
    a.merger.flush();
    a.merger.close();
    a.feed.flush();
    if (a.state === 'running') this.broadcast(this.stopMessage(a));
    this.o.shuffle?.end(a.id, 'stop', a.stopAt);
    this.setState(a, 'done', a.detectorEnd?.message ?? null);
    void a.recorder.close('done');
  }

  private fail(a: Acquisition, message: string): void {
    if (a.stopTimer) clearTimeout(a.stopTimer);
    a.merger.close();
    this.broadcast({ version: LIVE_PROTOCOL_VERSION, type: 'abort', acquisition: a.id });
    this.setState(a, 'failed', message);
    this.o.shuffle?.end(a.id, 'abort');
    void a.recorder.close('failed');
    this.o.log?.error({ acquisition: a.id, message }, 'acquisition failed');
  }

  abort(id: string): AcquisitionSummary {
    const a = this.need(id);
    if (TERMINAL.includes(a.state)) throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'abort', a.state);
    if (a.stopTimer) clearTimeout(a.stopTimer);
    a.merger.close();
    if (a.state !== 'defined') this.broadcast({ version: LIVE_PROTOCOL_VERSION, type: 'abort', acquisition: a.id });
    this.setState(a, 'aborted', 'aborted by request');
    this.o.shuffle?.end(a.id, 'abort');
    void a.recorder.close('aborted');
    return this.summary(a);
  }

  private onChunk(a: Acquisition, c: MergedChunk): void {
    a.feed.chunk(c);
    a.recorder.chunk(c);
    if (a.resume && !a.resume.resumed && c.epoch.epoch >= a.resume.epoch && a.state === 'running') {
      a.resume.resumed = true;
      const r = a.resume;
      // the same detector acquisition rejoined after a link outage: epochs R .. E-1 passed without frames
      const rejoined = r.rejoin && c.epoch.epoch > r.epoch && (a.start === null || a.start.shutterRound === r.rejoin.shutterRound);
      this.setState(a, 'running', rejoined ? `${r.stopped}; resumed at epoch ${c.epoch.epoch} on the same detector acquisition (link back; epochs ${r.epoch} to ${c.epoch.epoch - 1} passed without frames)` : `${r.stopped}; resumed at epoch ${r.epoch}`);
    }
    const t = Date.now();
    const lagMs = c.sentAt > 0 ? t - c.sentAt : 0;
    if (lagMs > MERGE_LAG_WARN_MS && t - a.lagWarnedAt >= MERGE_LAG_WARN_EVERY_MS) {
      a.lagWarnedAt = t;
      this.o.log?.warn({ acquisition: a.id, epoch: c.epoch.epoch, chunk: c.chunk, lagMs }, 'merging behind the receivers: the live results lag the detector (merger short of CPU, or partials queued)');
    }
    if (t - a.rate.t >= 1000) {
      a.rate = { t, frames: a.merger.framesMerged, fps: ((a.merger.framesMerged - a.rate.frames) * 1000) / (t - a.rate.t) };
    }
    if (a.definition.mode === 'single' && c.epoch.complete && a.state === 'running') this.finish(a);
    else if (a.state === 'stopping') this.maybeFinishStop(a);
  }

  updateUdfParams(id: string, udfId: string, params: Record<string, unknown>): UdfParamsChange {
    const a = this.need(id);
    const index = a.definition.udfs.findIndex((u) => u.id === udfId);
    if (index < 0) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `UDF ${udfId} in acquisition ${id}`);
    if (a.state !== 'defined' && a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'change parameters', a.state);
    const udf = a.definition.udfs[index]!;
    const spec = { name: udf.name, params: { ...params } };
    const candidate = createUdf(spec);
    if (isWholeFrame(candidate)) {
      // behind the shuffle: checked on a whole frame, applied by the workers from a chunk boundary
      this.o.shuffle?.checkChange({ name: udf.name, params: udf.params }, spec, a.definition.scanShape, a.definition.roi);
      udf.params = spec.params;
      let from = 0;
      if (a.state === 'running') {
        a.paramsVersions[index]!++;
        from = this.nextSafeFrame(a);
        this.o.shuffle?.params(a.id, udfId, spec.params, from);
      }
      this.o.log?.info({ acquisition: id, udfId, fromFrame: from }, 'whole-frame UDF parameters changed');
      return { acquisition: id, udf: { ...udf, params: { ...udf.params } }, appliesFromFrame: from };
    }
    const before = this.trial([{ name: udf.name, params: udf.params }], a.context).declarations[0]!;
    const after = this.trial([candidate], a.context).declarations[0]!;
    const layout = (d: typeof before) => JSON.stringify(Object.entries(d).map(([k, v]) => [k, v.kind, v.dtype, v.extraShape, v.use]));
    if (layout(before) !== layout(after)) {
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', udf.name, 'these parameters change the shape of its results: define a new acquisition instead');
    }
    let version = a.paramsVersions[index]!;
    let fromFrame = 0;
    udf.params = spec.params;
    if (a.state === 'defined') {
      // nothing runs yet: the acquire message will carry the new parameters (version 0)
      a.merger.close();
      this.o.registry.remove(a.id);
      const rebuilt = this.build(a.id, a.definition, a.context, a.paramsVersions);
      this.acquisitions.set(a.id, rebuilt);
      this.current = rebuilt;
      this.o.registry.setCurrent(a.id);
    } else {
      version = ++a.paramsVersions[index]!;
      fromFrame = this.nextSafeFrame(a);
      a.merger.setParams(index, spec.params, version, fromFrame);
      this.broadcast({ version: LIVE_PROTOCOL_VERSION, type: 'params', acquisition: a.id, udfId, params: spec.params, fromFrame });
      a.feed.updateInfo({ mode: a.definition.mode, chunkSize: a.definition.chunkSize, udfs: a.definition.udfs, roi: roiSummary(a.definition.roi) });
    }
    this.o.log?.info({ acquisition: id, udfId, version, fromFrame }, 'UDF parameters changed');
    return { acquisition: id, udf: { ...udf, params: { ...udf.params } }, appliesFromFrame: fromFrame };
  }

  status(): MergerStatus {
    return { acquisition: this.current ? this.summary(this.current) : null, sectors: this.monitor.statuses(), shuffle: this.o.shuffle?.state() ?? null };
  }

  private summary(a: Acquisition): AcquisitionSummary {
    const d = a.definition;
    const positions = d.scanShape[0] * d.scanShape[1];
    const framesTotal = d.mode === 'single' ? (roiSummary(d.roi)?.selected ?? positions) : null;
    const framesMerged = a.merger.framesMerged;
    const fps = a.state === 'running' || a.state === 'stopping' ? a.rate.fps : 0;
    const newest = a.merger.epochList.reduce((m, e) => Math.max(m, e.epoch), 0);
    return {
      id: a.id,
      state: a.state,
      message: a.message,
      epoch: newest,
      scanShape: d.scanShape,
      mode: d.mode,
      chunkSize: d.chunkSize,
      record: a.recorder.status(),
      epochs: this.o.registry.epochs(a.id),
      udfs: d.udfs.map((u) => ({ ...u, params: { ...u.params } })),
      roi: roiSummary(d.roi),
      progress: {
        framesMerged,
        framesTotal,
        framesPerSecond: fps,
        etaSeconds: framesTotal !== null && fps > 0 ? Math.max(0, framesTotal - framesMerged) / fps : null,
      },
      mergeLagMs: this.mergeLag(a),
    };
  }

  /** How far the merged results lag behind the receivers (AcquisitionSummary.mergeLagMs). */
  private mergeLag(a: Acquisition): number | null {
    const lag = a.feed.lastLatency;
    if ((a.state !== 'running' && a.state !== 'stopping') || !lag || Date.now() - lag.at > MERGE_LAG_FRESH_MS) return null;
    return lag.ms;
  }

  private get recorderSettings(): RecorderSettings {
    return { ...DEFAULT_RECORDER_SETTINGS, ...this.o.recorder };
  }

  /** Start writing the acquisition's recording (inside the data directory); errors end up in its status. */
  private async startRecording(a: Acquisition): Promise<RecordingStatus> {
    const n = ++a.recordings;
    let path = recordingPath(this.recorderSettings.dataDir, a.id, a.definition.record.path);
    if (n > 1) path = path.replace(/(\.h5)?$/, `-${n}.h5`);
    return a.recorder.start(path);
  }

  /** Switch the recording of a defined or running acquisition on or off (HTTP API). */
  async setRecording(id: string, enabled: boolean): Promise<AcquisitionSummary> {
    const a = this.need(id);
    if (a.state !== 'defined' && a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', enabled ? 'start recording' : 'stop recording', a.state);
    const state = a.recorder.status().state;
    a.definition.record.enabled = enabled;
    if (a.state === 'running') {
      if (enabled && state !== 'recording' && state !== 'closing') await this.startRecording(a);
      // stop() also clears `enabled` when the file is already closed or failed
      else if (!enabled) await a.recorder.stop('recording stopped');
    }
    return this.summary(a);
  }

  /**
   * Which frames the shuffle gathers for the whole-frame UDFs (HTTP API): `all`, `every:N`,
   * `list:P1,…` (e.g. the positions the user clicked), `rect:Y,X,H,W`. The shuffle applies it
   * in every receiver alike from a frame safely ahead.
   */
  setSelection(id: string, select: string): AcquisitionSummary {
    const a = this.need(id);
    if (!this.o.shuffle || !a.definition.udfs.some((u) => isWholeFrame(u))) {
      throw new TesseraError('TESSERA_ERR_NOT_FOUND', `whole-frame UDFs in acquisition ${id} (the selection is the shuffle's)`);
    }
    if (a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'change the frame selection', a.state);
    const [h, w] = a.definition.scanShape;
    const base = parseSelection(select, [h, w]);
    if (base.kind === 'list' && base.positions.some((p) => p < 0 || p >= h * w)) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'select', `a listed position is outside the ${h} x ${w} scan`);
    }
    this.o.shuffle.select(a.id, base);
    this.o.log?.info({ acquisition: id, select: select.length > 80 ? `${select.slice(0, 80)}…` : select }, 'frame selection changed');
    return this.summary(a);
  }

  /**
   * The whole frame at a scan position, from the shuffle (HTTP API GET …/frames/:position): one
   * it just assembled, or the next pass's (the shuffle selects it for this pick only).
   */
  async pickFrame(id: string, position: number, timeoutMs?: number): Promise<PickedFrame> {
    const a = this.need(id);
    if (!this.o.shuffle || !a.definition.udfs.some((u) => isWholeFrame(u))) {
      throw new TesseraError('TESSERA_ERR_NOT_FOUND', `a frame source for acquisition ${id} (frames come from the shuffle, which runs its whole-frame UDFs)`);
    }
    if (a.state === 'defined') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'pick a frame', a.state);
    const [h, w] = a.definition.scanShape;
    if (!Number.isInteger(position) || position < 0 || position >= h * w) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'position', `${position} is outside the ${h} x ${w} scan`);
    return this.o.shuffle.pick(a.id, position, timeoutMs);
  }

  /** For /metrics: the current acquisition's merge latencies (ms) since the last call, and its chunks waiting for sectors. */
  takeMergeFigures(): { latenciesMs: number[]; pendingChunks: number } {
    const a = this.current;
    if (!a) return { latenciesMs: [], pendingChunks: 0 };
    return { latenciesMs: a.feed.latencies.splice(0), pendingChunks: a.merger.pendingChunks };
  }

  /** Counters for logs and benchmarks. */
  counters(): Record<string, unknown> {
    const a = this.current;
    return { acquisition: a?.id ?? null, state: a?.state ?? null, merge: a?.merger.counters ?? null, stalePartials: this.stalePartials };
  }

  /** The current acquisition's merged results per epoch (tests, recording). */
  epochResults(id: string): EpochResults[] {
    return this.need(id).merger.epochList.slice();
  }

  /** Close every recording still open (the merger stops): each file is complete at its path. */
  async closeRecordings(): Promise<void> {
    await Promise.all([...this.acquisitions.values()].map((a) => a.recorder.close('merger stopped')));
  }

  close(): void {
    this.monitor.close();
    for (const a of this.acquisitions.values()) {
      if (a.stopTimer) clearTimeout(a.stopTimer);
      a.merger.close();
    }
  }
}
