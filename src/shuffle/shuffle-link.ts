/**
 * `ShuffleLink`: the merger's side of the shuffle. A DEALER (routing id `merger`) on the
 * shuffle's `shuffle.slices` ROUTER: it says hello, sends the acquisition's whole-frame UDFs
 * (acquire / params / stop / abort, the receivers' message types) and reads the shuffle's
 * status. The workers' `frames` results (which arrive on the merger's results socket) are
 * routed here and merged by the acquisition's WholeFrameMerger.
 *
 * `available()`: a shuffle answered within LIVENESS_MS and has at least one worker. The
 * acquisition manager accepts whole-frame UDFs at define only then.
 */
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../k2is/constants.js';
import type { Logger } from '../log.js';
import type { LiveUdfSpec } from '../merger/chunk-merger.js';
import type { ShuffleState } from '../merger/acquisition-schema.js';
import type { LiveStoreRegistry } from '../merger/live-store.js';
import { encodeLive, LIVE_PROTOCOL_VERSION, LIVENESS_MS, type AcquireMessage, type MergerToReceiver, type ParamsMessage } from '../protocol/live.js';
import { DatasetResults } from '../udf/dataset-results.js';
import { wholeFrame } from '../udf/partition.js';
import { PartitionTask } from '../udf/partition-task.js';
import { createUdf } from '../udf/registry.js';
import { makeRunContext } from '../udf/runner.js';
import type { UDF, UDFSpec } from '../udf/udf.js';
import { TesseraError } from '../errors.js';
import { asFrameResults, asPicked, asStatus, decodeShuffle, encodeShuffle, HELLO_MS, SHUFFLE_PROTOCOL_VERSION, type ShuffleStatus } from './protocol.js';
import type { SelectionBase } from './selection.js';
import { WholeFrameMerger } from './whole-frame-merger.js';

export interface ShuffleLinkOptions {
  /** the shuffle's slices endpoint (config shuffle.slices) */
  endpoint: string;
  registry: LiveStoreRegistry;
  keepEpochs: number;
  /** accept whole-frame UDFs without a live shuffle (they then wait for one) */
  assumeAvailable?: boolean;
  /** how long a picked frame may take to come at least (default 10 s); longer when a scan period at the shuffle's frame rate is longer (+ 2 s) */
  pickTimeoutMs?: number;
  /** keep merging a finished acquisition's late results this long (default 60 s: workers trail the scan) */
  graceMs?: number;
  log?: Logger;
}

/** Whether a UDF runs behind the shuffle (no processTile). */
export function isWholeFrame(spec: UDFSpec | UDF): boolean {
  const udf = typeof (spec as UDF).getMethod === 'function' ? (spec as UDF) : createUdf(spec as UDFSpec);
  return udf.getMethod() !== 'tile';
}

/** A whole frame the shuffle assembled for a pick (GET /api/acquisitions/:id/frames/:position). */
export interface PickedFrame {
  acquisition: string;
  position: number;
  epoch: number;
  /** frame index (since scan position 0 of the detector acquisition) */
  index: number;
  /** per sector: missing blocks (0 = complete, 0xffffffff = the sector never arrived, zero-filled) */
  damage: number[];
  /** 1860 x 2048, row-major */
  data: Uint16Array;
}

interface PendingPick {
  acquisition: string;
  position: number;
  resolve: (f: PickedFrame) => void;
  reject: (err: TesseraError) => void;
  timer: NodeJS.Timeout;
}

/** the shuffle's refusals of a pick, as the HTTP API says them */
const PICK_REFUSALS: Record<string, () => TesseraError> = {
  'unknown-acquisition': () => new TesseraError('TESSERA_ERR_PICK_GONE', 'the shuffle does not run this acquisition'),
  'outside-scan': () => new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'position', 'outside the scan'),
  'outside-roi': () => new TesseraError('TESSERA_ERR_PICK_GONE', 'the position is outside the acquisition\'s ROI'),
  ended: () => new TesseraError('TESSERA_ERR_PICK_GONE', 'the acquisition sends no more frames'),
  passed: () => new TesseraError('TESSERA_ERR_PICK_GONE', 'the single scan is already past that position'),
  busy: () => new TesseraError('TESSERA_ERR_PICK_GONE', 'too many picks waiting, try again'),
};

interface LinkedAcquisition {
  message: AcquireMessage;
  merger: WholeFrameMerger;
  ended: boolean;
  /** parameter changes and the last selection, said again to a restarted shuffle after the acquisition */
  params: ParamsMessage[];
  select: SelectionBase | null;
  /** when the acquisition was last said again to a shuffle that did not run it */
  resentAt: number;
}

export class ShuffleLink {
  status: ShuffleStatus | null = null;
  statusAt = 0;
  /** times a shuffle process other than the last one answered (restarted) */
  restarts = 0;
  /** the shuffle went silent for LIVENESS_MS (logged once per loss) */
  private missing = false;
  readonly dropped: Record<string, number> = {};
  private readonly dealer: zmq.Dealer;
  private readonly acquisitions = new Map<string, LinkedAcquisition>();
  private current: LinkedAcquisition | null = null;
  private readonly timer: NodeJS.Timeout;
  private readonly loop: Promise<void>;
  private sendChain: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly picks = new Map<number, PendingPick>();
  private pickRequests = 0;

  constructor(private readonly o: ShuffleLinkOptions) {
    this.dealer = new zmq.Dealer({ routingId: 'merger', linger: 0, immediate: true, sendTimeout: 0, reconnectInterval: 100, reconnectMaxInterval: 1000, sendHighWaterMark: 256 });
    this.dealer.connect(o.endpoint);
    this.loop = this.receiveLoop();
    this.hello();
    this.timer = setInterval(() => {
      this.hello();
      this.checkAlive();
    }, HELLO_MS);
  }

  /** The shuffle as /api/status shows it: `absent` (never answered), `up`, or `missing` (silent for LIVENESS_MS). */
  state(): ShuffleState {
    const s = this.status;
    if (!s) return { state: 'absent', workers: 0, pid: null, restarts: 0, silentMs: null, framesSkipped: 0, framesLostInWorkers: 0 };
    const silentMs = Date.now() - this.statusAt;
    const up = silentMs < LIVENESS_MS;
    return { state: up ? 'up' : 'missing', workers: up ? s.workers : 0, pid: s.pid, restarts: this.restarts, silentMs, framesSkipped: s.framesSkipped, framesLostInWorkers: s.framesLostInWorkers ?? 0 };
  }

  private checkAlive(): void {
    if (this.missing || !this.status || Date.now() - this.statusAt < LIVENESS_MS) return;
    this.missing = true;
    this.o.log?.warn({ pid: this.status.pid, silentMs: Date.now() - this.statusAt, acquisition: this.current?.ended === false ? this.current.message.acquisition : null }, 'shuffle missing: no status');
  }

  available(): boolean {
    return this.o.assumeAvailable === true || (this.status !== null && Date.now() - this.statusAt < LIVENESS_MS && this.status.workers > 0);
  }

  /** Refuse, before the acquisition exists, what the shuffle could not run (TESSERA_ERR_NEEDS_WHOLE_FRAMES / _UDF_PARAMS). */
  check(specs: UDFSpec[], scanShape: [number, number], roi: Uint8Array | null): void {
    if (specs.length === 0) return;
    if (!this.available()) throw new TesseraError('TESSERA_ERR_NEEDS_WHOLE_FRAMES', specs.map((s) => s.name).join(', '));
    const udfs = specs.map((s) => createUdf(s));
    for (const u of udfs) {
      if (u.getMethod() === 'partition') throw new TesseraError('TESSERA_ERR_UDF_PARAMS', u.constructor.name, 'processPartition UDFs need every frame of a partition: the shuffle runs processFrame UDFs');
    }
    try {
      const context = makeRunContext({ navShape: scanShape, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: 8, udfs, roi });
      new DatasetResults(udfs, context);
      const first = context.roi ? context.roi.indexOf(1) : 0;
      new PartitionTask({ udfs, context, partition: { navStart: first, navEnd: first + 1, sig: wholeFrame(context.sigShape) } }).finish();
    } catch (err) {
      if (err instanceof TesseraError && err.statusCode !== undefined && err.statusCode < 500) throw err;
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', specs.map((s) => s.name).join(', '), (err as Error).message);
    }
  }

  /** Check new parameters of a whole-frame UDF: usable, and the same result buffers (else TESSERA_ERR_UDF_PARAMS). */
  checkChange(previous: UDFSpec, next: UDFSpec, scanShape: [number, number], roi: Uint8Array | null): void {
    this.check([next], scanShape, roi);
    const layout = (spec: UDFSpec) => {
      const udf = createUdf(spec);
      const context = makeRunContext({ navShape: scanShape, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: 8, udfs: [udf], roi });
      return JSON.stringify(Object.entries(new DatasetResults([udf], context).declarations[0]!).map(([k, v]) => [k, v.kind, v.dtype, v.extraShape, v.use]));
    };
    if (layout(previous) !== layout(next)) throw new TesseraError('TESSERA_ERR_UDF_PARAMS', next.name, 'these parameters change the shape of its results: define a new acquisition instead');
  }

  /** Start an acquisition's whole-frame part: `message` carries only the whole-frame UDFs. */
  start(message: AcquireMessage, mode: 'single' | 'continuous'): WholeFrameMerger | null {
    if (message.udfs.length === 0) return null;
    const udfs: LiveUdfSpec[] = message.udfs.map((u) => ({ id: u.id, name: u.name, params: u.params }));
    const instances = udfs.map((u) => createUdf({ name: u.name, params: u.params }));
    const context = makeRunContext({ navShape: message.scanShape, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: 8, udfs: instances, roi: message.roi });
    const merger = new WholeFrameMerger({ acquisition: message.acquisition, udfs, context, registry: this.o.registry, scanShape: message.scanShape, keepEpochs: mode === 'single' ? 1 : this.o.keepEpochs, log: this.o.log });
    const a: LinkedAcquisition = { message, merger, ended: false, params: [], select: null, resentAt: 0 };
    this.acquisitions.set(message.acquisition, a);
    this.current = a;
    this.send(message);
    this.o.log?.info({ acquisition: message.acquisition, udfs: udfs.map((u) => u.name) }, 'whole-frame UDFs sent to the shuffle');
    return merger;
  }

  /**
   * A continuous acquisition resumes after its detector acquisition ended (`acquire` with
   * `resume`, as the receivers get it): the shuffle maps the next detector acquisition's frames
   * from epoch R on, so the workers' results land there. `message` may carry the receivers'
   * UDFs: the shuffle gets this acquisition's whole-frame ones. A restarted shuffle is told the
   * resumed acquisition from then on.
   */
  resume(message: AcquireMessage): void {
    if (!message.resume || !this.reissue(message)) return;
    this.o.log?.info({ acquisition: message.acquisition, resume: message.resume, start: message.start }, 'whole-frame UDFs resume with the next detector acquisition');
  }

  /**
   * The merger withdrew the start it had named (back to start null: its detector acquisition
   * ended before anything bound, AcquisitionManager.withdrawStaleStart): the shuffle maps the
   * next detector acquisition from index 0, as the receivers do.
   */
  withdrawStart(message: AcquireMessage): void {
    if (message.start !== null || message.resume || !this.reissue(message)) return;
    this.o.log?.info({ acquisition: message.acquisition }, 'whole-frame UDFs: the named start was withdrawn, the next detector acquisition is the acquisition\'s');
  }

  /**
   * The merger's new acquire for a running acquisition (its start or resume changed): sent to the
   * shuffle with the acquisition's whole-frame UDFs (the merger's lists the receivers' UDFs); false when
   * the acquisition is unknown here or ended.
   */
  private reissue(message: AcquireMessage): boolean {
    const a = this.acquisitions.get(message.acquisition);
    if (!a || a.ended) return false;
    a.message = { ...message, udfs: a.message.udfs };
    this.send(a.message);
    return true;
  }

  /** New parameters for a whole-frame UDF, for chunks from acquisition-relative frame `fromFrame` on (the workers apply them as the receivers do). */
  params(acquisition: string, udfId: string, params: Record<string, unknown>, fromFrame: number): void {
    const a = this.acquisitions.get(acquisition);
    if (!a) return;
    const index = a.message.udfs.findIndex((u) => u.id === udfId);
    if (index < 0) return;
    a.merger.setParams(index, params, fromFrame);
    const m: ParamsMessage = { version: LIVE_PROTOCOL_VERSION, type: 'params', acquisition, udfId, params, fromFrame };
    a.params.push(m);
    this.send(m);
  }

  /**
   * Another base selection for the running acquisition (frames the user clicked: `{kind:
   * 'list', positions}`; a region: `{kind: 'mask', mask}`; `{kind: 'every', n}`; `{kind: 'all'}`):
   * the shuffle applies it from a frame safely ahead, in every receiver alike.
   */
  select(acquisition: string, base: SelectionBase): void {
    const a = this.acquisitions.get(acquisition);
    if (!a) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${acquisition} with whole-frame UDFs`);
    a.select = base;
    this.sendRaw(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'select', acquisition, base }));
  }

  /**
   * The whole frame at scan `position`: one the shuffle just assembled, else the next one of
   * that position (the shuffle selects it for this pick, besides the workers' own selection).
   * Rejects with TESSERA_ERR_PICK_TIMEOUT (504) after `timeoutMs`, TESSERA_ERR_PICK_GONE (409)
   * when the frame cannot come (a single scan past it, the acquisition ended).
   */
  pick(acquisition: string, position: number, timeoutMs?: number): Promise<PickedFrame> {
    const a = this.acquisitions.get(acquisition);
    if (!a) return Promise.reject(new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${acquisition} with whole-frame UDFs`));
    if (timeoutMs === undefined) timeoutMs = this.pickBound(a.message);
    const request = ++this.pickRequests;
    return new Promise<PickedFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.picks.delete(request);
        reject(new TesseraError('TESSERA_ERR_PICK_TIMEOUT', position, timeoutMs));
      }, timeoutMs);
      this.picks.set(request, { acquisition, position, resolve, reject, timer });
      this.sendRaw(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'pick', acquisition, position, request, timeoutMs }));
    });
  }

  /** The default wait for a pick: a scan period at the frame rate the shuffle sees, plus a margin (at least pickTimeoutMs, at most 10 minutes). */
  pickBound(m: AcquireMessage): number {
    const floor = this.o.pickTimeoutMs ?? 10_000;
    const rate = this.status?.frameRate ?? 0;
    if (rate <= 0) return floor;
    const period = (m.scanShape[0] * m.scanShape[1] * 1000) / rate;
    return Math.round(Math.min(600_000, Math.max(floor, period + 2000)));
  }

  private onPicked(raw: Buffer, pixels: Buffer | undefined): void {
    const m = asPicked(decodeShuffle(raw));
    const p = this.picks.get(m.request);
    // late (timed out here) or not ours: nothing waits for it
    if (!p || p.acquisition !== m.acquisition || p.position !== m.position) {
      this.dropped.stalePick = (this.dropped.stalePick ?? 0) + 1;
      return;
    }
    this.picks.delete(m.request);
    clearTimeout(p.timer);
    if (m.error !== undefined) return p.reject((PICK_REFUSALS[m.error] ?? (() => new TesseraError('TESSERA_ERR_PICK_GONE', m.error!)))());
    if (!pixels || pixels.byteLength !== FRAME_HEIGHT * FRAME_WIDTH * 2) return p.reject(new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'picked', `${pixels?.byteLength ?? 0} bytes of pixels`));
    const data = new Uint16Array(FRAME_HEIGHT * FRAME_WIDTH);
    new Uint8Array(data.buffer).set(pixels);
    p.resolve({ acquisition: m.acquisition, position: m.position, epoch: m.epoch, index: m.index, damage: m.damage, data });
  }

  /** The acquisition ended (stop, done, abort, failure): results still on the way are merged for graceMs. */
  end(acquisition: string, how: 'stop' | 'abort', atFrame: number | null = null): void {
    const a = this.acquisitions.get(acquisition);
    if (!a || a.ended) return;
    a.ended = true;
    this.send(how === 'stop' ? { version: LIVE_PROTOCOL_VERSION, type: 'stop', acquisition, atFrame } : { version: LIVE_PROTOCOL_VERSION, type: 'abort', acquisition });
    const t = setTimeout(() => {
      a.merger.close();
      if (this.acquisitions.get(acquisition) === a && this.current !== a) this.acquisitions.delete(acquisition);
    }, how === 'abort' ? 0 : (this.o.graceMs ?? 60_000));
    t.unref();
  }

  merger(acquisition: string): WholeFrameMerger | null {
    return this.acquisitions.get(acquisition)?.merger ?? null;
  }

  /** A worker's `frames` message from the merger's results socket. */
  onResults(raw: Uint8Array): void {
    try {
      const m = asFrameResults(decodeShuffle(raw));
      const a = this.acquisitions.get(m.acquisition);
      if (!a) {
        this.dropped.stale = (this.dropped.stale ?? 0) + 1;
        return;
      }
      a.merger.add(m);
    } catch (err) {
      const code = (err as TesseraError).code ?? 'error';
      this.dropped[code] = (this.dropped[code] ?? 0) + 1;
      this.o.log?.warn({ err: (err as Error).message, code }, 'whole-frame results dropped');
    }
  }

  counters(): Record<string, unknown> {
    const c = this.current;
    return { shuffle: this.status, available: this.available(), dropped: this.dropped, wholeFrames: c ? c.merger.counters : null };
  }

  private send(m: MergerToReceiver): void {
    this.sendRaw(encodeLive(m));
  }

  private sendRaw(bytes: Buffer): void {
    if (this.closed) return;
    this.sendChain = this.sendChain.then(() => this.dealer.send(bytes).catch(() => {}));
  }

  private hello(): void {
    this.sendRaw(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'hello', sector: 0, pid: process.pid, ruleVersion: 0 }));
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.dealer.receive();
      } catch {
        return;
      }
      try {
        if (frames.length > 1 || decodeShuffle(frames[0]!).type === 'picked') {
          this.onPicked(frames[0]!, frames[1]);
          continue;
        }
        const s = asStatus(decodeShuffle(frames[0]!));
        const previous = this.status;
        const wasMissing = this.missing;
        this.status = s;
        this.statusAt = Date.now();
        this.missing = false;
        if (!previous) this.o.log?.info({ workers: s.workers, pid: s.pid }, 'shuffle connected');
        else if (previous.pid !== s.pid) {
          this.restarts++;
          this.o.log?.warn({ workers: s.workers, pid: s.pid, previousPid: previous.pid, restarts: this.restarts }, 'shuffle connected: a new process');
        } else if (wasMissing) this.o.log?.info({ workers: s.workers, pid: s.pid }, 'shuffle answers again');
        const c = this.current;
        if (c) c.merger.setStatus(s);
        // a restarted shuffle does not know the running acquisition: tell it again, with what changed since
        // (its workers get the same from it; the receivers get its rule book at their next hello)
        if (c && !c.ended && s.acquisition !== c.message.acquisition && (previous?.pid !== s.pid || Date.now() - c.resentAt >= 2000)) {
          c.resentAt = Date.now();
          this.send(c.message);
          for (const p of c.params) this.send(p);
          if (c.select) this.sendRaw(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'select', acquisition: c.message.acquisition, base: c.select }));
          this.o.log?.info({ acquisition: c.message.acquisition, pid: s.pid, params: c.params.length, select: c.select?.kind ?? null }, 'acquisition sent to the shuffle again');
        }
      } catch (err) {
        this.dropped.status = (this.dropped.status ?? 0) + 1;
        this.o.log?.warn({ err: (err as Error).message }, 'shuffle link: malformed message dropped');
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const p of this.picks.values()) {
      clearTimeout(p.timer);
      p.reject(new TesseraError('TESSERA_ERR_PICK_GONE', 'the merger stops'));
    }
    this.picks.clear();
    for (const a of this.acquisitions.values()) a.merger.close();
    await this.sendChain.catch(() => {});
    this.dealer.close();
    await this.loop.catch(() => {});
  }
}
