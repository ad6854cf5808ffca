/**
 * `PartialRunner`: the tile sink that runs a live (merger) acquisition's UDFs on this
 * sector's 1860 x 256 slice and hands on one partial result per chunk of frames
 * (src/protocol/live.ts, PartialMessage).
 *
 * Frames are addressed by `index`, frames since scan position 0 of the detector acquisition
 * (ShutterSync). A merger acquisition starts at frame `startIndex` of one detector acquisition:
 *   acquire.start null                  -> index 0 of the next detector acquisition to start
 *   acquire.start {shutterRound, index} -> that index of the detector acquisition decided in
 *                                          that election round (possibly the one under way)
 * and then  rel = index - startIndex,  epoch = floor(rel / N),  position = rel mod N,
 * chunk k of an epoch = positions [k x chunkSize, min((k + 1) x chunkSize, N)). These come from
 * the index alone, so they do not depend on how ShutterSync itself cuts the stream.
 *
 * Per chunk one PartitionTask (src/udf/partition-task.ts) over partition {positions of the chunk,
 * this sector's columns}, fed the tiles as they come (zero-copy; a tile may span two chunks and
 * is cut). Every chunk from the first one on is sent, and every position of it is accounted
 * for: a frame of which no block arrived reaches the runner as a zero-filled, fully damaged
 * frame (SectorFrameAssembler emits it, ShutterSync bridges gaps); positions that still never
 * come (a gap ShutterSync did not bridge, the detector acquisition ending, stop after its
 * grace time) are fed as zero frames with damage 0xffffffff, and so are whole chunks skipped
 * over (up to MAX_FILL_FRAMES per gap; beyond that they are counted, not sent). So `damage` is
 * exactly the sector frame's missing-block bitmap, and the buffers are the UDFs over the frames
 * with missing blocks zero-filled.
 *
 * Joining late (the acquisition's start has passed: a restarted receiver, or one that joined
 * the detector acquisition under way) starts at the next chunk boundary; earlier chunks are
 * not this receiver's to send.
 *
 * Parameters (params message): from the first chunk whose first frame (rel, counted over
 * epochs) is >= fromFrame; the n-th change of a UDF gives paramsVersion n (0 = the acquire's).
 * A change that arrives after that chunk opened applies from the next chunk to open.
 *
 * End: single mode after the last chunk of epoch 0 (`done`); stop {atFrame} sends every chunk
 * before that frame and nothing from it on (atFrame null: the chunks in flight); if frames stop
 * coming meanwhile, after `stopGraceMs` the chunks in flight are completed as missing. abort
 * drops the chunks in flight; a new acquire replaces the run (as abort); the end of the
 * detector acquisition it is bound to ends it (`ended`; chunks in flight completed as missing).
 * When the detector acquisition ends under a running acquisition (the stream stopped:
 * ShutterSync 'stream_stopped'; it restarted: 'jump'; shutter off), `detectorEnded` keeps the
 * reason and the acquisition-relative index of the first frame that never came, for the
 * heartbeats: the merger completes the chunks that will never come and ends the acquisition.
 * The acquisition id stays reported (heartbeats) after done / stopped / ended, so that the
 * merger does not take the receiver for one that lost it; a repeated acquire of it is a no-op,
 * except one that names a concrete `start` for a run armed with start null (startNamed): the
 * acquire came after the shutter edge of the detector acquisition under way, which start null
 * ("the next one") would never bind; the merger, seeing `runState` 'armed' in the heartbeats,
 * names where it starts, and the armed run binds there at once.
 *
 * Resume (continuous only): the merger, having completed the epochs before R, re-sends the
 * acquire with `resume {n, epoch R, afterRound}`. A run ended with its detector acquisition (or
 * still armed, or running on a detector acquisition the merger has given up) goes back to
 * armed, keeping its UDFs, parameter versions and pending changes, and binds to the next
 * detector acquisition: with `start` null the first one started after the one it ended on and
 * decided after election round `afterRound`, index 0 there being frame R x N (startIndex =
 * -R x N); with `start` the merger's mapping ({shutterRound, startIndex}, chosen when the new
 * detector acquisition was already under way). One under way when the resume arrives is joined
 * at the next chunk boundary. Nothing of the earlier detector acquisition is processed after a
 * resume, so no chunk holds frames of two. Each `n` applies once (a repeated acquire is a no-op).
 *
 * Rejoin after a link outage: the camera kept streaming the same detector acquisition while no
 * datagram came for longer than streamIdleMs (ShutterSync ended it as 'stream_stopped'); when
 * the link is back, ShutterSync rejoins it through the election's query (same round, joinedAt >
 * 0, a new ShutterSync number). The merger's resume names the ended leg's mapping in
 * `rejoin` {round, startIndex}: a detector acquisition of that round is bound with it
 * (rel = index - the old startIndex, so epochs keep counting the detector's scan repetitions),
 * from the first chunk boundary at or after max(R x N, the first frame this receiver can still
 * see). Every sector computes the same mapping from the message, whichever frame it rejoined
 * at; the epochs between R and the join get no partial (the ChunkMerger jumps ahead). A resume
 * never binds a frame before R x N, with any mapping.
 */
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../src/k2is/constants.js';
import { TesseraError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import { LIVE_PROTOCOL_VERSION, toWire, type AcquireMessage, type DetectorEnded, type LiveRunState, type ParamsMessage, type PartialMessage, type WireArray } from '../src/protocol/live.js';
import type { RunContext } from '../src/udf/meta.js';
import { PartitionTask } from '../src/udf/partition-task.js';
import type { PartitionSlice } from '../src/udf/partition.js';
import { createUdf } from '../src/udf/registry.js';
import { makeRunContext } from '../src/udf/runner.js';
import { udfNameOf, type UDF, type UDFClass } from '../src/udf/udf.js';
import type { ScanConfig } from './shutter-sync.js';
import type { AcquisitionInfo, AcquisitionSummary, SectorTile, TileSink } from './tile.js';

const FULL = 0xffffffff;
const FRAME_PIXELS = SECTOR_HEIGHT * SECTOR_WIDTH;
/** whole chunks skipped over by a gap are sent as missing up to this many frames per gap */
export const MAX_FILL_FRAMES = 512;

/** (heartbeats report it: `runState`) */
export type RunState = LiveRunState;

export interface PartialRunnerOptions {
  sector: number;
  /** the detector's sectors (config detector.sectors): the frame is sectors x 256 wide */
  sectors: number;
  send: (p: PartialMessage) => void;
  /** how the ShutterSync cuts acquisitions: `next` from the next one on, `current` also the one under way */
  configureScan?: (next: ScanConfig, current?: ScanConfig) => void;
  /** an acquisition cannot go on (a UDF threw): tell the merger */
  onFailure?: (acquisition: string, err: TesseraError) => void;
  /** while stopping, how long without frames before the chunks in flight are completed as missing (default 2000 ms) */
  stopGraceMs?: number;
  log?: Logger;
}

export class PartialRunnerStats {
  chunksSent = 0;
  /** chunks sent without a single frame of their own (all positions missing) */
  chunksMissing = 0;
  /** chunks skipped over by a gap too long to fill (not sent) */
  chunksSkipped = 0;
  framesProcessed = 0;
  /** positions fed as zero frames because no frame came for them */
  framesFilled = 0;
  /** frames behind the chunk in flight (should not happen) */
  framesBehind = 0;
  paramsApplied = 0;
  /** time spent in UDF processing and partial building, ms */
  busyMs = 0;
  /** longest single tile hand-off (a chunk's end included: finish, encode, send): how long the receive loop waited */
  maxStallMs = 0;
}

interface Chunk {
  seq: number;
  epoch: number;
  chunk: number;
  navStart: number;
  navEnd: number;
  task: PartitionTask;
  damage: Uint32Array;
  versions: number[];
  /** positions [0, nextPos) were started (first band fed or filled) */
  nextPos: number;
  /** positions whose last band was fed (or filled) */
  done: number;
  /** at least one real frame (not a fill) */
  real: boolean;
}

/** A TesseraError remembered for a repeated acquire of a run that failed. */
type RunError = TesseraError;

interface Run {
  msg: AcquireMessage;
  positions: number;
  chunksPerEpoch: number;
  udfs: UDF[];
  versions: number[];
  pending: ParamsMessage[];
  context: RunContext;
  state: RunState;
  /** ShutterSync acquisition number it runs on, once bound */
  shutterAcquisition: number | null;
  startIndex: number;
  /** first acquisition-relative frame this receiver runs (> 0 when it joined late: a chunk boundary) */
  joinRel: number;
  open: Chunk[];
  /** newest chunk opened (epoch x chunksPerEpoch + chunk) */
  lastSeq: number;
  /** stop: first acquisition-relative frame not to process */
  stopAt: number | null;
  stopTimer: NodeJS.Timeout | null;
  error: RunError | null;
  /** ended with its detector acquisition: why, the acquisition-relative first frame that never came, the round, the resume it was on */
  detectorEnded: DetectorEnded | null;
  /** `n` of the merger's resume this run's mapping comes from (0: the acquire's start) */
  resumeN: number;
  /** after a resume: the ShutterSync acquisition number it ended on (only later ones are bound), else -1 */
  endedOn: number;
}

export class PartialRunner implements TileSink {
  readonly stats = new PartialRunnerStats();
  private run: Run | null = null;
  private detector: AcquisitionInfo | null = null;
  private newest: number | null = null;
  private zeros: Uint16Array | null = null;
  private readonly sig: PartitionSlice['sig'];
  private readonly sigShape: [number, number];

  constructor(private readonly o: PartialRunnerOptions) {
    this.sig = { origin: [0, SECTOR_WIDTH * o.sector], shape: [SECTOR_HEIGHT, SECTOR_WIDTH] };
    this.sigShape = [SECTOR_HEIGHT, SECTOR_WIDTH * o.sectors];
  }

  /** The merger acquisition this receiver was given (armed, running, or over here: done, stopped, ended), or null (none, aborted, failed). */
  get acquisition(): string | null {
    const r = this.run;
    return r && r.state !== 'aborted' && r.state !== 'failed' ? r.msg.acquisition : null;
  }

  /** True while the acquisition is armed, running or stopping here. */
  get active(): boolean {
    return this.run !== null && this.isActive(this.run);
  }

  get state(): RunState | null {
    return this.run?.state ?? null;
  }

  /** The acquisition ended here with its detector acquisition (state 'ended'): why, and the acquisition-relative index of the first frame that never came; else null. */
  get detectorEnded(): DetectorEnded | null {
    const r = this.run;
    return r && r.state === 'ended' ? r.detectorEnded : null;
  }

  /** Index of the newest frame seen in the detector acquisition under way, or null. */
  get lastIndex(): number | null {
    return this.detector ? this.newest : null;
  }

  /**
   * Arm an acquisition. Throws a TesseraError when it cannot run here (unknown UDF, bad params,
   * a UDF without processTile, bad ROI, a start already passed). The same acquisition again is
   * a no-op (the merger may repeat acquire until it sees ready).
   */
  arm(m: AcquireMessage): void {
    const cur = this.run;
    if (cur && cur.msg.acquisition === m.acquisition && cur.state !== 'aborted') {
      if (cur.error) throw cur.error;
      if (m.resume && m.resume.n > cur.resumeN && cur.msg.mode === 'continuous') this.resume(cur, m);
      else if (m.start !== null && cur.msg.start === null && (m.resume?.n ?? 0) === cur.resumeN) this.startNamed(cur, m);
      else if (m.start === null && cur.msg.start !== null && !m.resume && cur.resumeN === 0) this.withdrawStart(cur, m);
      return;
    }
    const positions = m.scanShape[0] * m.scanShape[1];
    const ids = new Set<string>();
    const udfs = m.udfs.map((u) => {
      if (ids.has(u.id)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'udfs', `UDF id "${u.id}" appears twice`);
      ids.add(u.id);
      return this.checkUdf(u.name, u.params);
    });
    const context = this.context(m, udfs);
    this.trial(context, udfs, positions, m.chunkSize);

    let bindNow = false;
    // start null = index 0 of the next detector acquisition. A receiver that joined the one
    // under way late (it was restarted while the shutter was on) never saw that edge: the
    // merger's re-sent acquire means the acquisition under way, from the next chunk boundary.
    const rejoin = m.start === null && !m.resume && this.detector !== null && this.detector.joinedAt > 0;
    if (rejoin) bindNow = true;
    // a resumed acquisition (this receiver restarted meanwhile): the detector acquisition after the
    // round, or the one that ended come back (rejoin)
    if (m.start === null && m.resume && this.detector !== null && resumeStart(m, positions, this.detector, -1) !== null) bindNow = true;
    if (m.start !== null) {
      const d = this.detector;
      if (d && d.round === m.start.shutterRound) bindNow = true;
      else if (d && (d.round === null || d.round > m.start.shutterRound)) {
        throw new TesseraError('TESSERA_ERR_LIVE_START', m.acquisition, `shutter round ${m.start.shutterRound} is not under way (current round ${String(d.round)})`);
      }
    }
    if (cur && this.isActive(cur)) this.abandon(cur, `replaced by acquisition ${m.acquisition}`);
    const run: Run = {
      msg: m,
      positions,
      chunksPerEpoch: Math.ceil(positions / Math.min(m.chunkSize, positions)),
      udfs,
      versions: udfs.map(() => 0),
      pending: [],
      context,
      state: 'armed',
      shutterAcquisition: null,
      startIndex: 0,
      joinRel: 0,
      open: [],
      lastSeq: -1,
      stopAt: null,
      stopTimer: null,
      error: null,
      detectorEnded: null,
      resumeN: m.resume?.n ?? 0,
      endedOn: -1,
    };
    this.run = run;
    // a single scan from the next edge ends with the scan; otherwise the detector acquisition
    // must not end before the merger's does (the runner decides that from the index)
    const repeat = m.start !== null || m.mode === 'continuous';
    const scan: ScanConfig = { scanPositions: positions, continuous: repeat };
    this.o.configureScan?.(scan, bindNow ? scan : undefined);
    this.o.log?.info({ acquisition: m.acquisition, scanShape: m.scanShape, chunkSize: m.chunkSize, mode: m.mode, start: m.start, udfs: m.udfs.map((u) => u.name) }, 'live acquisition armed');
    // the start has passed (e.g. this receiver restarted): join at the next chunk boundary
    if (bindNow) this.bind(run, this.detector!, this.startIndexOf(run, this.detector!), Math.max(this.detector!.joinedAt, this.newest === null ? 0 : this.newest + 1));
  }

  /**
   * The merger's resume `m` of this run (same acquisition, a newer `n`): back to armed for the
   * next detector acquisition (see the header). Chunks still open (a detector acquisition the
   * merger gave up on) are dropped: the merger completed those epochs already.
   */
  private resume(run: Run, m: AcquireMessage): void {
    const r = m.resume!;
    if (run.state === 'done' || run.state === 'stopped' || run.state === 'stopping') return; // the merger stopped it: stays stopped
    const d0 = this.detector;
    if (run.state === 'running' && d0 !== null && d0.acquisition === run.shutterAcquisition && resumeStart(m, run.positions, d0, -1) === run.startIndex) {
      // this run carries on with the detector acquisition the resume names, on the very mapping
      // it names (its link came back before the resume, or it never lost it): it keeps its
      // chunks, except those before the resume's epoch (the merger completed those)
      run.msg = m;
      run.resumeN = r.n;
      run.detectorEnded = null;
      const floor = r.epoch * run.positions;
      run.open = run.open.filter((c) => this.firstFrame(run, c.seq) >= floor);
      if (run.joinRel < floor) {
        run.joinRel = floor;
        run.lastSeq = Math.max(run.lastSeq, this.seqOf(run, floor) - 1);
      }
      this.o.log?.info({ acquisition: m.acquisition, resume: r, startIndex: run.startIndex }, 'live acquisition resumed: already running on the rejoined detector acquisition with that mapping');
      return;
    }
    const was = run.state;
    if (run.stopTimer) clearTimeout(run.stopTimer);
    run.stopTimer = null;
    run.open = [];
    run.msg = m;
    run.resumeN = r.n;
    run.detectorEnded = null;
    run.stopAt = null;
    if (run.shutterAcquisition !== null) run.endedOn = Math.max(run.endedOn, run.shutterAcquisition);
    run.shutterAcquisition = null;
    run.state = 'armed';
    const scan: ScanConfig = { scanPositions: run.positions, continuous: true };
    const d = this.detector;
    const bindNow = d !== null && this.resumeBinds(run, d);
    this.o.configureScan?.(scan, bindNow ? scan : undefined);
    this.o.log?.info({ acquisition: m.acquisition, resume: r, start: m.start, was, endedOn: run.endedOn }, 'live acquisition resumes with the next detector acquisition');
    if (bindNow) this.bind(run, d, this.startIndexOf(run, d), Math.max(d.joinedAt, this.newest === null ? 0 : this.newest + 1));
  }

  /**
   * The merger named a concrete `start` for a run armed with start null (the acquire came just
   * after the shutter edge, so this run waits for a detector acquisition that a continuous scan
   * never brings): while still armed, take it and bind at once when its detector acquisition is
   * the one under way (from the next chunk boundary, as any late join). A run already bound keeps
   * its mapping (the merger names {round, 0} when it saw one bound; anything else is logged).
   */
  private startNamed(run: Run, m: AcquireMessage): void {
    const start = m.start!;
    const d = this.detector;
    if (run.state !== 'armed') {
      const round = d && d.acquisition === run.shutterAcquisition ? d.round : null;
      if (run.state === 'running' || run.state === 'stopping') {
        if (round === start.shutterRound && run.startIndex === start.startIndex) run.msg = { ...run.msg, start };
        else this.o.log?.warn({ acquisition: m.acquisition, start, bound: { round, startIndex: run.startIndex } }, 'a start named after this receiver bound its run: kept the run as bound');
      }
      return;
    }
    if (!m.resume && d && d.round !== start.shutterRound && (d.round === null || d.round > start.shutterRound)) {
      throw new TesseraError('TESSERA_ERR_LIVE_START', m.acquisition, `shutter round ${start.shutterRound} is not under way (current round ${String(d.round)})`);
    }
    run.msg = { ...run.msg, start };
    const bindNow = d !== null && (run.msg.resume ? this.resumeBinds(run, d) : d.round === start.shutterRound);
    const scan: ScanConfig = { scanPositions: run.positions, continuous: true };
    this.o.configureScan?.(scan, bindNow ? scan : undefined);
    this.o.log?.info({ acquisition: m.acquisition, start, bindNow, round: d?.round ?? null }, 'live acquisition: the merger named its start');
    if (bindNow) this.bind(run, d, this.startIndexOf(run, d), Math.max(d.joinedAt, this.newest === null ? 0 : this.newest + 1));
  }

  /**
   * The merger withdrew the start it named (start null again): that detector acquisition ended
   * before this run or any other bound to it (AcquisitionManager.withdrawStaleStart). An armed
   * run binds at index 0 of the next detector acquisition; when one is under way already, at the
   * start the merger names in it next (startNamed). A run already bound keeps its mapping.
   */
  private withdrawStart(run: Run, m: AcquireMessage): void {
    if (run.state !== 'armed') {
      this.o.log?.warn({ acquisition: m.acquisition, state: run.state, start: run.msg.start }, 'the merger withdrew a start this receiver already bound to: kept the run as bound');
      return;
    }
    const withdrawn = run.msg.start;
    run.msg = { ...run.msg, start: null };
    this.o.configureScan?.({ scanPositions: run.positions, continuous: m.mode === 'continuous' });
    this.o.log?.warn({ acquisition: m.acquisition, withdrawn, round: this.detector?.round ?? null }, 'live acquisition: the merger withdrew the start it named (that detector acquisition ended first): binds to the next one');
  }

  /** Whether an armed resumed run binds to detector acquisition `a`. */
  private resumeBinds(run: Run, a: AcquisitionInfo): boolean {
    return resumeStart(run.msg, run.positions, a, run.endedOn) !== null;
  }

  /** Detector frame index of acquisition-relative frame 0 on detector acquisition `a` (negative after a resume with start null; the old leg's after a rejoin). */
  private startIndexOf(run: Run, a: AcquisitionInfo): number {
    const m = run.msg;
    if (m.resume) return resumeStart(m, run.positions, a, -1) ?? -m.resume.epoch * run.positions;
    return m.start !== null ? m.start.startIndex : 0;
  }

  /** A parameter change; throws when it cannot apply (unknown acquisition or UDF, bad params). */
  params(m: ParamsMessage): void {
    const run = this.run;
    if (!run || run.msg.acquisition !== m.acquisition || this.acquisition === null) {
      throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', `change parameters of ${m.acquisition}`, run?.msg.acquisition === m.acquisition ? run.state : 'unknown here');
    }
    const k = run.msg.udfs.findIndex((u) => u.id === m.udfId);
    if (k < 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'udfId', `"${m.udfId}" is not a UDF of acquisition ${m.acquisition}`);
    const udf = this.checkUdf(run.msg.udfs[k]!.name, m.params);
    const udfs = run.udfs.slice();
    udfs[k] = udf;
    this.trial(run.context, udfs, run.positions, run.msg.chunkSize);
    run.pending.push(m);
    this.o.log?.info({ acquisition: m.acquisition, udfId: m.udfId, fromFrame: m.fromFrame }, 'live parameter change queued');
  }

  /**
   * Send every chunk before acquisition-relative frame `atFrame` (null: the chunks in flight),
   * nothing from it on, then stop.
   */
  stop(acquisition: string, atFrame: number | null = null): void {
    const run = this.run;
    if (!run || run.msg.acquisition !== acquisition) return;
    if (run.state === 'armed') return this.setState(run, 'stopped');
    if (run.state !== 'running' && run.state !== 'stopping') return;
    const inFlight = run.open.length > 0 ? Math.max(...run.open.map((c) => this.firstFrame(run, c.seq) + (c.navEnd - c.navStart))) : this.firstFrame(run, run.lastSeq + 1);
    run.stopAt = atFrame ?? inFlight;
    run.state = 'stopping';
    this.o.log?.info({ acquisition, atFrame: run.stopAt }, 'live acquisition stopping');
    // chunks from stopAt on are not sent
    for (const c of run.open.slice()) if (this.firstFrame(run, c.seq) >= run.stopAt) run.open.splice(run.open.indexOf(c), 1);
    this.checkStopped(run);
    if (this.isActive(run)) this.armStopTimer(run);
  }

  /** Drop the chunk in flight and stop at once. */
  abort(acquisition: string): void {
    const run = this.run;
    if (!run || run.msg.acquisition !== acquisition) return;
    this.abandon(run, 'aborted');
  }

  // ---------------------------------------------------------------------------------------------
  // TileSink

  onAcquisitionStart(a: AcquisitionInfo): void {
    this.detector = a;
    this.newest = null;
    const run = this.run;
    if (run && this.comesBack(run, a)) {
      // this sector's link was out (the others' may not have been: then the merger, which waits
      // for every sector's end, sends no resume); the mapping is the one it ran on, so it needs
      // nobody's word: on from the next chunk boundary
      this.o.log?.warn({ acquisition: run.msg.acquisition, round: a.round, joinedAt: a.joinedAt, startIndex: run.startIndex }, 'the detector acquisition came back after the stream stopped: the live acquisition goes on with it');
      run.detectorEnded = null;
      this.bind(run, a, run.startIndex, a.joinedAt);
      return;
    }
    if (!run || run.state !== 'armed') return;
    const start = run.msg.start;
    if (run.msg.resume) {
      if (this.resumeBinds(run, a)) this.bind(run, a, this.startIndexOf(run, a), a.joinedAt);
    } else if (start === null) this.bind(run, a, 0, a.joinedAt);
    else if (a.round === start.shutterRound) this.bind(run, a, start.startIndex, a.joinedAt);
  }

  /** The run ended because the stream went silent, and `a` is that detector acquisition rejoined (same round, joined under way). */
  private comesBack(run: Run, a: AcquisitionInfo): boolean {
    const e = run.detectorEnded;
    return run.state === 'ended' && e !== null && e.reason === 'stream_stopped' && e.round !== null && a.round === e.round && a.joinedAt > 0;
  }

  onAcquisitionEnd(a: AcquisitionSummary): void {
    const newest = this.detector?.acquisition === a.acquisition ? this.newest : null;
    if (this.detector?.acquisition === a.acquisition) this.detector = null;
    const run = this.run;
    if (!run || run.shutterAcquisition !== a.acquisition) return;
    if (run.state !== 'running' && run.state !== 'stopping') return;
    if (run.state === 'running') {
      run.detectorEnded = { reason: a.reason, atFrame: Math.max(run.joinRel, newest === null ? 0 : newest + 1 - run.startIndex), round: a.round, resume: run.resumeN };
      this.o.log?.warn({ acquisition: run.msg.acquisition, ...run.detectorEnded, open: run.open.map((c) => [c.epoch, c.chunk]) }, 'detector acquisition ended under the live acquisition: chunks in flight completed with missing frames');
    }
    this.completeAll(run);
    if (this.isActive(run)) this.setState(run, run.state === 'stopping' ? 'stopped' : 'ended', { reason: a.reason });
  }

  onTile(tile: SectorTile): void {
    const last = tile.frames[tile.depth - 1];
    if (last && tile.acquisition === this.detector?.acquisition) this.newest = last.index;
    const run = this.run;
    if (!run || run.shutterAcquisition !== tile.acquisition || (run.state !== 'running' && run.state !== 'stopping')) return;
    const t0 = performance.now();
    try {
      this.feed(run, tile);
    } catch (err) {
      this.fail(run, err);
    }
    if (run.state === 'stopping') this.armStopTimer(run);
    const dt = performance.now() - t0;
    this.stats.busyMs += dt;
    if (dt > this.stats.maxStallMs) this.stats.maxStallMs = dt;
  }

  close(): void {
    const run = this.run;
    if (run && this.isActive(run)) this.abandon(run, 'receiver stopping');
  }

  // ---------------------------------------------------------------------------------------------

  private checkUdf(name: string, params: Record<string, unknown>): UDF {
    const udf = createUdf({ name, params });
    let method: string;
    try {
      method = udf.getMethod();
    } catch (err) {
      throw err instanceof TesseraError ? err : new TesseraError('TESSERA_ERR_UDF_DECLARATION', name, (err as Error).message);
    }
    if (method !== 'tile') throw new TesseraError('TESSERA_ERR_UDF_NOT_TILED', udfNameOf(udf.constructor as UDFClass));
    return udf;
  }

  private context(m: AcquireMessage, udfs: UDF[]): RunContext {
    return makeRunContext({ navShape: m.scanShape, sigShape: this.sigShape, datasetDtype: 'uint16', sectors: this.o.sectors, udfs, roi: m.roi ?? undefined });
  }

  /** Build (and drop) the first chunk's task: buffer declarations, task data and masks get checked now. */
  private trial(context: RunContext, udfs: UDF[], positions: number, chunkSize: number): void {
    new PartitionTask({ udfs, context, partition: { navStart: 0, navEnd: Math.min(chunkSize, positions), sig: this.sig } }).finish();
  }

  /** Run on detector acquisition `a` from frame `startIndex`; `firstIndex`: the first frame it can still see. */
  private bind(run: Run, a: AcquisitionInfo, startIndex: number, firstIndex: number): void {
    run.shutterAcquisition = a.acquisition;
    run.startIndex = startIndex;
    // a resume never sends a frame before its epoch (the merger completed those)
    const floor = run.msg.resume ? run.msg.resume.epoch * run.positions : 0;
    run.joinRel = this.nextBoundary(run, Math.max(floor, firstIndex - startIndex));
    run.lastSeq = this.seqOf(run, run.joinRel) - 1;
    run.state = 'running';
    this.o.log?.info({ acquisition: run.msg.acquisition, shutterAcquisition: a.acquisition, round: a.round, startIndex, joinedAt: run.joinRel, resume: run.resumeN }, 'live acquisition running');
    if (run.msg.mode === 'single' && run.joinRel >= run.positions) this.setState(run, 'done', { why: 'joined after the end of the scan' });
  }

  /** The first chunk boundary at or after acquisition-relative frame `rel`. */
  private nextBoundary(run: Run, rel: number): number {
    const N = run.positions;
    const size = Math.min(run.msg.chunkSize, N);
    const epoch = Math.floor(rel / N);
    const k = Math.ceil((rel - epoch * N) / size);
    return k * size >= N ? (epoch + 1) * N : epoch * N + k * size;
  }

  /** Chunk number over epochs of the chunk holding acquisition-relative frame `rel`. */
  private seqOf(run: Run, rel: number): number {
    const N = run.positions;
    const epoch = Math.floor(rel / N);
    return epoch * run.chunksPerEpoch + Math.floor((rel - epoch * N) / Math.min(run.msg.chunkSize, N));
  }

  /** Acquisition-relative first frame of chunk `seq`. */
  private firstFrame(run: Run, seq: number): number {
    const epoch = Math.floor(seq / run.chunksPerEpoch);
    return epoch * run.positions + (seq - epoch * run.chunksPerEpoch) * Math.min(run.msg.chunkSize, run.positions);
  }

  private feed(run: Run, tile: SectorTile): void {
    const N = run.positions;
    const size = Math.min(run.msg.chunkSize, N);
    const n = tile.rows * SECTOR_WIDTH;
    const row0 = tile.sigOrigin[0];
    const firstBand = row0 === 0;
    const lastBand = row0 + tile.rows === SECTOR_HEIGHT;
    let f = 0;
    while (f < tile.depth) {
      const rel = tile.frames[f]!.index - run.startIndex;
      if (rel < run.joinRel) {
        f++;
        continue;
      }
      const epoch = Math.floor(rel / N);
      const pos = rel - epoch * N;
      const k = Math.floor(pos / size);
      const seq = epoch * run.chunksPerEpoch + k;
      const chunkEnd = Math.min((k + 1) * size, N);
      let len = 1;
      while (f + len < tile.depth && pos + len < chunkEnd && tile.frames[f + len]!.index === tile.frames[f]!.index + len) len++;
      if (run.msg.mode === 'single' && epoch > 0) return;
      const c = this.chunkFor(run, seq, epoch, k, firstBand);
      if (c === null) {
        f += len;
        continue;
      }
      const at = pos - c.navStart;
      if (firstBand) {
        if (at < c.nextPos) {
          this.stats.framesBehind += len;
          f += len;
          continue;
        }
        if (at > c.nextPos) this.fill(c, at);
        for (let j = 0; j < len; j++) c.damage[at + j] = tile.damage[f + j]!;
        c.nextPos = at + len;
        c.real = true;
      }
      c.task.processTile({ data: tile.data.subarray(f * n, (f + len) * n), navStart: pos, depth: len, sigOrigin: [row0, tile.sigOrigin[1]], sigShape: [tile.rows, SECTOR_WIDTH] });
      if (lastBand) {
        c.done += len;
        this.stats.framesProcessed += len;
        if (c.done === c.navEnd - c.navStart) this.finishChunk(run, c);
        if (!this.isActive(run)) return;
      }
      f += len;
    }
  }

  /** The open chunk `seq`, opening it if need be; null when frames of it are not wanted. */
  private chunkFor(run: Run, seq: number, epoch: number, k: number, firstBand: boolean): Chunk | null {
    const open = run.open.find((c) => c.seq === seq);
    if (open) return open;
    if (!firstBand) return null; // its first band was not wanted either
    // frames of a later chunk: positions the older chunks never got will not come any more
    for (const c of run.open.slice()) {
      if (c.seq > seq) continue;
      this.fill(c, c.navEnd - c.navStart);
      if (c.done === c.navEnd - c.navStart) this.finishChunk(run, c);
    }
    if (!this.isActive(run)) return null;
    if (seq <= run.lastSeq) {
      this.stats.framesBehind++;
      return null;
    }
    // whole chunks skipped over: sent as missing (bounded)
    const gap = seq - run.lastSeq - 1;
    if (gap > 0) {
      this.o.log?.warn({ acquisition: run.msg.acquisition, from: run.lastSeq + 1, to: seq - 1 }, 'chunks without frames: sent as missing');
      let budget = MAX_FILL_FRAMES;
      for (let q = run.lastSeq + 1; q < seq && this.isActive(run); q++) {
        const e = Math.floor(q / run.chunksPerEpoch);
        const c = this.wanted(run, q) ? this.openChunk(run, q, e, q - e * run.chunksPerEpoch) : null;
        if (!c) break;
        if (c.navEnd - c.navStart > budget) {
          run.open.splice(run.open.indexOf(c), 1);
          this.stats.chunksSkipped += seq - q;
          break;
        }
        budget -= c.navEnd - c.navStart;
        this.fill(c, c.navEnd - c.navStart);
        this.finishChunk(run, c);
      }
      if (!this.isActive(run)) return null;
    }
    if (!this.wanted(run, seq)) {
      this.checkStopped(run);
      return null;
    }
    return this.openChunk(run, seq, epoch, k);
  }

  /** Whether chunk `seq` is to be run: single mode runs epoch 0 only; stop ends before stopAt. */
  private wanted(run: Run, seq: number): boolean {
    if (run.msg.mode === 'single' && seq >= run.chunksPerEpoch) return false;
    return run.stopAt === null || this.firstFrame(run, seq) < run.stopAt;
  }

  private openChunk(run: Run, seq: number, epoch: number, k: number): Chunk {
    run.lastSeq = seq;
    const size = Math.min(run.msg.chunkSize, run.positions);
    const navStart = k * size;
    const navEnd = Math.min(navStart + size, run.positions);
    this.applyParams(run, epoch * run.positions + navStart);
    const task = new PartitionTask({ udfs: run.udfs, context: run.context, partition: { navStart, navEnd, sig: this.sig }, tiling: { depth: 1, rows: SECTOR_HEIGHT } });
    const c: Chunk = { seq, epoch, chunk: k, navStart, navEnd, task, damage: new Uint32Array(navEnd - navStart), versions: run.versions.slice(), nextPos: 0, done: 0, real: false };
    run.open.push(c);
    return c;
  }

  private applyParams(run: Run, firstFrame: number): void {
    if (run.pending.length === 0) return;
    const keep: ParamsMessage[] = [];
    for (const p of run.pending) {
      if (p.fromFrame > firstFrame) {
        keep.push(p);
        continue;
      }
      const k = run.msg.udfs.findIndex((u) => u.id === p.udfId);
      run.udfs[k] = createUdf({ name: run.msg.udfs[k]!.name, params: p.params });
      run.versions[k]!++;
      this.stats.paramsApplied++;
      this.o.log?.info({ acquisition: run.msg.acquisition, udfId: p.udfId, fromFrame: p.fromFrame, chunkFirstFrame: firstFrame, paramsVersion: run.versions[k] }, 'live parameter change applied');
    }
    run.pending = keep;
  }

  /** Feed positions [c.nextPos, upTo) as zero frames, fully damaged. */
  private fill(c: Chunk, upTo: number): void {
    if (upTo <= c.nextPos) return;
    this.zeros ??= new Uint16Array(FRAME_PIXELS);
    for (let at = c.nextPos; at < upTo; at++) {
      c.task.processTile({ data: this.zeros, navStart: c.navStart + at, depth: 1, sigOrigin: [0, this.sig.origin[1]], sigShape: [SECTOR_HEIGHT, SECTOR_WIDTH] });
      c.damage[at] = FULL;
    }
    this.stats.framesFilled += upTo - c.nextPos;
    c.done += upTo - c.nextPos;
    c.nextPos = upTo;
  }

  private finishChunk(run: Run, c: Chunk): void {
    run.open.splice(run.open.indexOf(c), 1);
    const result = c.task.finish();
    const partial: PartialMessage = {
      version: LIVE_PROTOCOL_VERSION,
      type: 'partial',
      acquisition: run.msg.acquisition,
      sector: this.o.sector,
      epoch: c.epoch,
      chunk: c.chunk,
      navStart: c.navStart,
      navEnd: c.navEnd,
      frames: result.frames,
      sig: result.sig,
      udfs: result.udfs.map((buffers, i) => ({
        id: run.msg.udfs[i]!.id,
        paramsVersion: c.versions[i]!,
        buffers: Object.fromEntries(Object.entries(buffers).map(([name, a]): [string, WireArray] => [name, toWire(a)])),
      })),
      damage: c.damage,
      sentAt: Date.now(),
    };
    this.stats.chunksSent++;
    if (!c.real) this.stats.chunksMissing++;
    this.o.send(partial);
    if (run.msg.mode === 'single' && c.seq >= run.chunksPerEpoch - 1 && run.open.length === 0) this.setState(run, 'done');
    else this.checkStopped(run);
  }

  /** Stopping, nothing open, and the next chunk is past stopAt: stopped. */
  private checkStopped(run: Run): void {
    if (run.state !== 'stopping' || run.open.length > 0 || run.stopAt === null) return;
    if (this.firstFrame(run, run.lastSeq + 1) >= run.stopAt) this.setState(run, 'stopped');
  }

  /** While stopping: if no frame comes for stopGraceMs, complete what is open as missing and stop. */
  private armStopTimer(run: Run): void {
    if (run.stopTimer) clearTimeout(run.stopTimer);
    run.stopTimer = setTimeout(() => {
      run.stopTimer = null;
      if (this.run !== run || run.state !== 'stopping') return;
      this.o.log?.warn({ acquisition: run.msg.acquisition, open: run.open.map((c) => [c.epoch, c.chunk]), atFrame: run.stopAt }, 'stop: no frames any more: chunks in flight completed with missing frames');
      this.completeAll(run);
      if (this.isActive(run)) this.setState(run, 'stopped');
    }, this.o.stopGraceMs ?? 2000);
    run.stopTimer.unref?.();
  }

  /** Complete every open chunk with missing frames for the positions that did not come. */
  private completeAll(run: Run): void {
    for (const c of run.open.slice()) {
      this.fill(c, c.navEnd - c.navStart);
      c.done = c.navEnd - c.navStart;
      this.finishChunk(run, c);
    }
  }

  private isActive(run: Run): boolean {
    return this.run === run && (run.state === 'armed' || run.state === 'running' || run.state === 'stopping');
  }

  private abandon(run: Run, why: string): void {
    run.open = [];
    this.setState(run, 'aborted', { why });
  }

  private fail(run: Run, err: unknown): void {
    const e = err instanceof TesseraError ? err : new TesseraError('TESSERA_ERR_INTERNAL', (err as Error)?.message ?? String(err));
    this.o.log?.error({ err, acquisition: run.msg.acquisition }, 'live acquisition failed on this receiver');
    run.open = [];
    run.error = e;
    this.setState(run, 'failed');
    this.o.onFailure?.(run.msg.acquisition, e);
  }

  private setState(run: Run, state: RunState, extra: Record<string, unknown> = {}): void {
    if (run.stopTimer && state !== 'stopping') {
      clearTimeout(run.stopTimer);
      run.stopTimer = null;
    }
    run.state = state;
    this.o.log?.info({ acquisition: run.msg.acquisition, state, chunksSent: this.stats.chunksSent, ...extra }, 'live acquisition state');
  }
}

/**
 * Where a resumed acquisition `m` starts on detector acquisition `a` (the frame index of
 * acquisition-relative frame 0), or null when it does not run on it: `a` is one of the ended
 * ones (ShutterSync number <= `endedOn`); with `start`, only its round; else the leg that ended
 * come back (`rejoin`: same round, its old mapping) or one decided after `afterRound` (index 0
 * = frame R x P).
 */
function resumeStart(m: AcquireMessage, positions: number, a: AcquisitionInfo, endedOn: number): number | null {
  const r = m.resume;
  if (!r || a.acquisition <= endedOn) return null;
  if (m.start !== null) return a.round === m.start.shutterRound ? m.start.startIndex : null;
  if (m.rejoin && a.round === m.rejoin.shutterRound) return m.rejoin.startIndex;
  return roundAfter(a.round, r.afterRound) ? -r.epoch * positions : null;
}

/** Whether a detector acquisition of election round `round` comes after round `after` (unknown rounds: yes). */
function roundAfter(round: number | null, after: number | null): boolean {
  return round === null || after === null || round > after;
}
