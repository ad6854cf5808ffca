/**
 * `ShuffleService`: the `tessera shuffle` process. It takes the merger's acquisitions (the
 * whole-frame UDFs), tells the receivers which frames to send (selection.ts), reassembles
 * their sector slices into whole frames (frame-assembler.ts) and hands them to the workers by
 * credit (dispatcher.ts). When the workers fall behind it skips frames (counted) and lowers
 * the selection rate with a new rule from a frame safely ahead, instead of buffering.
 *
 * Sockets (protocol.ts): a ROUTER on `shuffle.slices` (receivers and the merger) and a ROUTER
 * on `shuffle.frames` (workers). Every message is validated; a bad one is counted and dropped.
 */
import * as zmq from 'zeromq';
import { TesseraError } from '../errors.js';
import type { Logger } from '../log.js';
import { decodeMergerMessage, encodeLive, type AcquireMessage, type MergerToReceiver, type ParamsMessage, MAX_LIVE_MESSAGE_BYTES } from '../protocol/live.js';
import { FrameDispatcher, RateController } from './dispatcher.js';
import { type AssembledFrame, WholeFrameAssembler } from './frame-assembler.js';
import {
  asCredit,
  asHello,
  asPick,
  asSelect,
  asSlice,
  decodeShuffle,
  encodeShuffle,
  SHUFFLE_PROTOCOL_VERSION,
  STATUS_MS,
  type FrameHeader,
  type PickedMessage,
  type PickMessage,
  type ShuffleStatus,
} from './protocol.js';
import { RuleBook, type SelectionBase, type SelectionRule } from './selection.js';
import { SerialSender } from './serial-sender.js';

export const MERGER_ID = 'merger';

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface ShuffleServiceOptions {
  slices: string;
  frames: string;
  /** base selection of every acquisition (default all frames of its ROI) */
  select?: SelectionBase;
  frameTimeoutMs?: number;
  /** frames being assembled at most */
  maxFrames?: number;
  /** assembled frames waiting for a worker at most */
  maxQueued?: number;
  /** never decimate (tests that need every frame) */
  fixedRate?: boolean;
  workerTimeoutMs?: number;
  /**
   * a worker connection that answers no ZMTP heartbeat for this long is closed (default
   * WORKER_HEARTBEAT_TIMEOUT_MS): a frozen or powered-off worker host then counts as gone
   */
  workerHeartbeatTimeoutMs?: number;
  log?: Logger;
}

/** assembled frames kept for picks that come just after (the browser clicks a position it just saw) */
const RECENT_FRAMES = 4;
/** pick requests waiting at most */
const MAX_PICKS = 64;
/** how often every worker is pinged: a send to one whose connection is gone fails at once */
const PING_MS = 1000;

/**
 * ZMTP heartbeats on the workers' connections. libzmq's I/O thread answers them, not the
 * worker's event loop, so a worker busy with a long frame answers and one whose host froze,
 * lost power or dropped off the network (no TCP reset) does not: its connection is closed, and
 * the next ping finds it gone and counts the frames it had (a worker only busy keeps them).
 */
const WORKER_HEARTBEAT_MS = 1000;
const WORKER_HEARTBEAT_TIMEOUT_MS = 5000;
const workerHeartbeats = (timeoutMs: number) => ({ heartbeatInterval: Math.min(WORKER_HEARTBEAT_MS, Math.ceil(timeoutMs / 2)), heartbeatTimeout: timeoutMs });

/** a send to a ROUTER peer that is not connected (mandatory): the worker is gone */
const isGone = (err: unknown): boolean => (err as { code?: string } | undefined)?.code === 'EHOSTUNREACH';

interface PendingPick {
  request: number;
  deadline: number;
  /** a frame of the position with a sector missing: sent if no whole one comes before the deadline */
  partial?: OutFrame;
}

/**
 * Which detector acquisition the acquisition's frames come from now, and how they map: the
 * acquisition's own start (n = 0), or its n-th resume after a detector end (docs/shuffle.md,
 * "Resume after a detector end"). Rules are made for the current leg only.
 */
export interface Leg {
  /** the merger's resume count (acquire.resume.n), 0 before any */
  n: number;
  /** the detector acquisition's election round; null until known (pinned at its first slice) */
  shutterRound: number | null;
  /** with shutterRound null: the leg's detector acquisition is decided after this round */
  afterRound: number | null;
  /** frame index of acquisition-relative frame 0 (negative after a resume) */
  startIndex: number;
  /** the leg's first frame index (0, or the merger's start in a detector acquisition under way) */
  firstIndex: number;
}

/** The leg an acquire names; `previousRound`: the detector acquisition the leg before ran on, if known. */
export function legOf(m: AcquireMessage, previousRound: number | null): Leg {
  const n = m.resume?.n ?? 0;
  const first = m.resume ? m.resume.epoch * m.scanShape[0] * m.scanShape[1] : 0;
  if (m.start) return { n, shutterRound: m.start.shutterRound, afterRound: null, startIndex: m.start.startIndex, firstIndex: Math.max(0, m.start.startIndex + first) };
  if (!m.resume) return { n, shutterRound: null, afterRound: null, startIndex: 0, firstIndex: 0 };
  const rounds = [m.resume.afterRound, previousRound].filter((r): r is number => r !== null);
  return { n, shutterRound: null, afterRound: rounds.length ? Math.max(...rounds) : null, startIndex: -first, firstIndex: 0 };
}

interface OutFrame {
  index: number;
  header: FrameHeader;
  data: Uint16Array;
}

export class ShuffleService {
  readonly book = new RuleBook();
  /** the rules without the picked positions: which assembled frames go to the workers */
  readonly workerBook = new RuleBook();
  readonly pickCounters = { requested: 0, answered: 0, fromRecent: 0, refused: 0, expired: 0, unpicked: 0 };
  /** scan position -> pick requests waiting for its next frame */
  private readonly picks = new Map<number, PendingPick[]>();
  /** positions the receivers' current rule adds for picks */
  private pickRulePositions = new Set<number>();
  private readonly recent: OutFrame[] = [];
  /** buffers handed to ZeroMQ for the merger: never reused */
  private readonly pinned = new WeakSet<Uint16Array>();
  readonly assembler: WholeFrameAssembler;
  readonly dispatcher: FrameDispatcher<OutFrame>;
  readonly rate: RateController;
  readonly dropped: Record<string, number> = {};
  slicesEndpoint = '';
  framesEndpoint = '';
  acquisition: AcquireMessage | null = null;
  /** the running acquisition's current leg (its start, or its latest resume) */
  leg: Leg = { n: 0, shutterRound: null, afterRound: null, startIndex: 0, firstIndex: 0 };
  /** the running acquisition's parameter changes, in order: a worker that joins later gets them after the acquisition */
  private paramsLog: ParamsMessage[] = [];
  /** workers that said their credit window: they know the ping (others are found gone by a failed frame send or their silence) */
  private readonly pingable = new Set<string>();
  /** workers forgotten because their connection went away (a failed send) */
  workersLost = 0;
  /** frames handed back to the dispatcher after a send to a gone worker failed */
  framesResent = 0;
  /** frames workers had taken and not answered when their connection went (their results never come) */
  framesLostInWorkers = 0;
  /** per gone worker, its frames counted lost that a failed send may still hand back (not lost: sent elsewhere) */
  private readonly lostWith = new Map<string, number>();
  private base: SelectionBase;
  private readonly sliceRouter: zmq.Router;
  private readonly frameRouter: zmq.Router;
  private readonly sliceOut: SerialSender;
  private readonly frameOut: SerialSender;
  private readonly receivers = new Set<string>();
  private mergerSeen = false;
  private newestIndex = -1;
  private rateWindow = { t: Date.now(), slices: 0, fps: 0 };
  private timers: NodeJS.Timeout[] = [];
  private loops: Promise<void>[] = [];
  private closed = false;
  private droppedTotal = 0;
  /** frame buffers that were never sent, for the assembler to reuse (bounds garbage at high skip rates) */
  private readonly spare: Uint16Array[] = [];

  private constructor(private readonly o: ShuffleServiceOptions) {
    this.base = o.select ?? { kind: 'all' };
    // versions count from the start time: a restarted shuffle never repeats the version of a book receivers still hold
    this.book.version = Date.now();
    const common = { linger: 0, maxMessageSize: MAX_LIVE_MESSAGE_BYTES, mandatory: true, handover: true, sendTimeout: 2000 };
    // per receiver: a few slices queued in ZeroMQ at most (8 x 1 MB x 8 sectors), the rest waits at the senders or is dropped there
    this.sliceRouter = new zmq.Router({ ...common, receiveHighWaterMark: 8 });
    this.frameRouter = new zmq.Router({ ...common, sendHighWaterMark: 16, ...workerHeartbeats(o.workerHeartbeatTimeoutMs ?? WORKER_HEARTBEAT_TIMEOUT_MS) });
    this.sliceOut = new SerialSender(this.sliceRouter, 1024);
    this.frameOut = new SerialSender(this.frameRouter, 64);
    this.assembler = new WholeFrameAssembler({ frameTimeoutMs: o.frameTimeoutMs ?? 2000, maxFrames: o.maxFrames ?? 16, onFrame: (f) => this.onFrame(f), allocate: () => this.spare.pop() ?? null });
    this.dispatcher = new FrameDispatcher<OutFrame>({
      maxQueued: o.maxQueued ?? 4,
      workerTimeoutMs: o.workerTimeoutMs ?? 10_000,
      send: (w, f) =>
        this.frameOut.send([w, encodeShuffle(f.header), Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength)], (ok, err) => {
          if (ok) return;
          if (isGone(err)) {
            this.workerGone(w);
            // never reached the worker: not lost with it; another one (or the queue) takes it
            const counted = this.lostWith.get(w) ?? 0;
            if (counted > 0) {
              this.lostWith.set(w, counted - 1);
              this.framesLostInWorkers--;
            }
            if (this.acquisition?.acquisition === f.header.acquisition) {
              this.framesResent++;
              this.dispatcher.requeue(f);
              return;
            }
          }
          this.drop('frame-send', err);
        }),
      // a skipped frame was never handed to ZeroMQ: its buffer is reused
      onSkip: (f) => this.recycle(f.data),
    });
    this.rate = new RateController({ windowMs: 1000, quietMs: 5000, maxDecimate: 1024 });
  }

  static async start(o: ShuffleServiceOptions): Promise<ShuffleService> {
    const s = new ShuffleService(o);
    try {
      await s.sliceRouter.bind(o.slices);
      await s.frameRouter.bind(o.frames);
    } catch (err) {
      s.sliceRouter.close();
      s.frameRouter.close();
      throw new TesseraError('TESSERA_ERR_BIND', `${o.slices} / ${o.frames}`, (err as Error).message);
    }
    s.slicesEndpoint = s.sliceRouter.lastEndpoint ?? o.slices;
    s.framesEndpoint = s.frameRouter.lastEndpoint ?? o.frames;
    s.loops = [s.sliceLoop(), s.frameLoop()];
    s.timers.push(setInterval(() => s.tick(), 50));
    s.timers.push(setInterval(() => s.sendStatus(), STATUS_MS));
    s.timers.push(setInterval(() => s.pingWorkers(), PING_MS));
    return s;
  }

  private drop(reason: string, err?: unknown): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.droppedTotal++;
    if (this.droppedTotal <= 20 || this.droppedTotal % 1000 === 0) this.o.log?.warn({ reason, err: (err as Error | undefined)?.message, dropped: this.droppedTotal }, 'shuffle: message dropped');
  }

  // ------------------------------------------------------------------------------------------
  // receivers and the merger

  private async sliceLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.sliceRouter.receive();
      } catch {
        return;
      }
      // receive() resolves at once while slices are queued: yield, or a backlog would starve the
      // timers (frame timeouts, the rate controller, status) for as long as it lasts
      await yieldToEventLoop();
      const id = frames[0]!.toString('latin1');
      try {
        if (id === MERGER_ID) {
          if (frames.length !== 2) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'merger', `${frames.length - 1} frames`);
          this.mergerSeen = true;
          // the merger says hello (so that it gets status before any acquisition), then live.ts messages
          const head = decodeShuffle(frames[1]!);
          if (head.type === 'hello') continue;
          if (head.type === 'pick') {
            this.onPick(asPick(head));
            continue;
          }
          if (head.type === 'select') {
            const sel = asSelect(head);
            if (sel.acquisition === this.acquisition?.acquisition) this.select(sel.base);
            else this.drop('stale-select');
            continue;
          }
          this.onMerger(decodeMergerMessage(frames[1]!));
          continue;
        }
        const m = decodeShuffle(frames[1]!);
        if (m.type === 'hello') {
          const h = asHello(m);
          this.receivers.add(id);
          if (h.ruleVersion !== this.book.version) this.sendSelection(id);
        } else if (m.type === 'slice') {
          if (frames.length !== 3) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'slice', 'no pixel frame');
          this.onSlice(asSlice(m), frames[2]!);
        } else throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'shuffle', `unexpected ${String(m.type)}`);
      } catch (err) {
        this.drop((err as TesseraError).code ?? 'error', err);
      }
    }
  }

  private onSlice(h: ReturnType<typeof asSlice>, pixels: Buffer): void {
    this.rateWindow.slices++;
    const rule = this.book.selects(h.index, h.round);
    if (!rule || rule.acquisition !== h.acquisition) return this.drop('unselected');
    if (pixels.byteLength !== h.rows * 256 * 2) return this.drop('shape');
    // a view when aligned (zeromq's own allocation), else one copy
    // the first slice of a leg whose detector acquisition was not named: that one from now on, no other
    if (rule.shutterRound === null && h.round !== null) this.pinRound(h.round);
    const data = pixels.byteOffset % 2 === 0 ? new Uint16Array(pixels.buffer, pixels.byteOffset, pixels.byteLength / 2) : new Uint16Array(Uint8Array.from(pixels).buffer);
    this.newestIndex = Math.max(this.newestIndex, h.index);
    this.assembler.add({ acquisition: h.acquisition, round: h.round, index: h.index, sector: h.sector, row0: h.row0, rows: h.rows, damage: h.damage, pixels: data });
  }

  private onMerger(m: MergerToReceiver): void {
    switch (m.type) {
      case 'acquire': {
        if (this.acquisition?.acquisition === m.acquisition) {
          if (m.resume && m.resume.n > this.leg.n && m.mode === 'continuous') this.resume(m);
          // the same resume with its detector acquisition named before a slice of it came: the one
          // that ended, come back after a link outage (the merger saw its round again)
          else if (m.resume && m.resume.n === this.leg.n && m.start && this.leg.n > 0 && this.leg.shutterRound === null && m.mode === 'continuous') this.resume(m, 'named');
          // the start the merger named was withdrawn before a slice of it came (its detector
          // acquisition ended first): the next detector acquisition from index 0
          else if (!m.resume && m.start === null && this.leg.n === 0 && this.acquisition.start !== null && this.newestIndex === -1) this.resume(m, 'withdrawn');
          return;
        }
        this.acquisition = m;
        this.leg = legOf(m, null);
        this.rate.reset();
        this.newestIndex = -1;
        this.paramsLog = [];
        this.book.clear();
        this.workerBook.clear();
        this.clearPicks();
        this.addRule(this.ruleFor(m, this.leg.firstIndex, 1));
        this.o.log?.info({ acquisition: m.acquisition, udfs: m.udfs.map((u) => u.name), start: m.start, resume: m.resume ?? null, leg: this.leg, select: this.base.kind }, 'shuffle: acquisition');
        this.broadcastSelection();
        for (const w of this.dispatcher.workers.keys()) this.toWorker(w, m);
        return;
      }
      case 'params': {
        if (m.acquisition !== this.acquisition?.acquisition) return;
        // the merger says them again after a restart of this process: once is enough
        const same = (p: ParamsMessage) => p.udfId === m.udfId && p.fromFrame === m.fromFrame && JSON.stringify(p.params) === JSON.stringify(m.params);
        if (this.paramsLog.some(same)) return;
        this.paramsLog.push(m);
        for (const w of this.dispatcher.workers.keys()) this.toWorker(w, m);
        return;
      }
      case 'stop':
      case 'abort': {
        const a = this.acquisition;
        if (!a || a.acquisition !== m.acquisition) return;
        if (m.type === 'abort') {
          this.paramsLog = [];
          this.book.clear();
          this.workerBook.clear();
          this.clearPicks();
          this.dispatcher.clear();
          this.acquisition = null;
        } else {
          const start = this.leg.startIndex;
          const at = m.atFrame ?? Math.max(0, this.newestIndex + 1 - start);
          this.clearPicks();
          this.addRule({ ...this.ruleFor(a, Math.max(this.leg.firstIndex, start + at), 1), base: { kind: 'none' } });
        }
        this.broadcastSelection();
        for (const w of this.dispatcher.workers.keys()) this.toWorker(w, m);
        this.o.log?.info({ acquisition: m.acquisition, type: m.type }, 'shuffle: acquisition ends');
      }
    }
  }

  /**
   * The merger's n-th resume of the running acquisition after its detector acquisition ended:
   * frames of the next detector acquisition (decided after the one that ended, or the one the
   * merger names) map to acquisition-relative frames from R x P on. The old leg's rules go, so
   * no frame of the ended detector acquisition is selected after this; frames of it already
   * queued for the workers keep their epochs (< R). Decimation, picks and parameters carry on.
   * `named`: the merger named the leg's detector acquisition (the same `n`, `start` set) before
   * any slice of it came: the one that ended, rejoined after a link outage, with its old mapping
   * from frame R x P on (docs/shuffle.md); the rules are made again for it.
   */
  private resume(m: AcquireMessage, how: 'next' | 'named' | 'withdrawn' = 'next'): void {
    const previous = this.leg;
    this.acquisition = m;
    this.leg = legOf(m, how === 'named' ? previous.afterRound : previous.shutterRound);
    this.newestIndex = -1;
    this.book.clear();
    this.workerBook.clear();
    this.addRule(this.ruleFor(m, this.leg.firstIndex, this.rate.decimate));
    this.broadcastSelection();
    const what = {
      next: 'shuffle: acquisition resumes with the next detector acquisition',
      named: 'shuffle: the resumed acquisition goes on on the detector acquisition the merger named',
      withdrawn: 'shuffle: the named start was withdrawn: the acquisition starts with the next detector acquisition',
    }[how];
    this.o.log?.info({ acquisition: m.acquisition, resume: m.resume, start: m.start, leg: this.leg, previousRound: previous.shutterRound }, what);
  }

  /** The leg's detector acquisition is the one of election round `round` (its first slice came). */
  private pinRound(round: number): void {
    this.leg = { ...this.leg, shutterRound: round, afterRound: null };
    this.workerBook.pin(round);
    if (this.book.pin(round)) this.broadcastSelection();
    this.o.log?.info({ acquisition: this.acquisition?.acquisition, round, leg: this.leg.n }, 'shuffle: the detector acquisition of the acquisition');
  }

  /** The acquisition's rule: the base selection within its ROI. */
  private ruleFor(a: AcquireMessage, fromIndex: number, decimate: number): SelectionRule {
    const positions = a.scanShape[0] * a.scanShape[1];
    let base = this.base;
    if (a.roi) {
      const roi = a.roi;
      const mask = new Uint8Array(positions);
      for (let p = 0; p < positions; p++) {
        if (!roi[p]) continue;
        if (base.kind === 'all') mask[p] = 1;
        else if (base.kind === 'mask') mask[p] = base.mask[p] ?? 0;
        else if (base.kind === 'list') mask[p] = base.positions.includes(p) ? 1 : 0;
        // with a ROI, every n-th counts scan positions
        else if (base.kind === 'every') mask[p] = p % base.n === 0 ? 1 : 0;
      }
      base = base.kind === 'none' ? base : { kind: 'mask', mask };
    }
    const leg = this.leg;
    return { acquisition: a.acquisition, shutterRound: leg.shutterRound, afterRound: leg.afterRound, startIndex: leg.startIndex, positions, fromIndex, base, decimate };
  }

  /** Change the base selection of the running acquisition from a frame safely ahead. */
  select(base: SelectionBase): void {
    this.base = base;
    const a = this.acquisition;
    if (!a) return;
    const from = this.safeIndex(a);
    this.addRule(this.ruleFor(a, from, this.rate.decimate));
    this.broadcastSelection();
    this.o.log?.info({ acquisition: a.acquisition, select: base.kind, fromIndex: from }, 'shuffle: selection changed');
  }

  /** The workers' rule, and for the receivers the same widened by the positions picks wait for. */
  private addRule(rule: SelectionRule): void {
    this.workerBook.add(rule);
    this.pickRulePositions = rule.base.kind === 'none' ? new Set() : new Set(this.picks.keys());
    this.book.add(this.withPicks(rule));
  }

  /** A superset of `rule` that also takes the picked positions (undecimated: the workers' book filters). */
  private withPicks(rule: SelectionRule): SelectionRule {
    if (this.pickRulePositions.size === 0) return rule;
    const b = rule.base;
    const n = rule.positions;
    let mask: Uint8Array;
    if (b.kind === 'all' || (b.kind === 'every' && n % b.n !== 0)) return { ...rule, base: { kind: 'all' }, decimate: 1 };
    if (b.kind === 'mask') mask = Uint8Array.from(b.mask);
    else {
      mask = new Uint8Array(n);
      if (b.kind === 'list') for (const p of b.positions) mask[p] = 1;
      // every n-th frame with n dividing the scan: the same positions in every epoch
      else if (b.kind === 'every') for (let p = 0; p < n; p += b.n) mask[p] = 1;
    }
    for (const p of this.pickRulePositions) mask[p] = 1;
    return { ...rule, base: { kind: 'mask', mask }, decimate: 1 };
  }

  /** The rule in force from a safe index on again, with the current picks. */
  private reissueRule(a: AcquireMessage): void {
    const last = this.workerBook.list[this.workerBook.list.length - 1];
    if (!last) return;
    this.addRule({ ...last, fromIndex: Math.max(this.safeIndex(a), last.fromIndex) });
    this.broadcastSelection();
  }

  private clearPicks(): void {
    this.picks.clear();
    this.pickRulePositions = new Set();
  }

  private pickReply(m: Omit<PickedMessage, 'version' | 'type'>, data?: Uint16Array): void {
    const header = encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'picked', ...m });
    if (!data) {
      this.sliceOut.send([MERGER_ID, header]);
      return;
    }
    this.pinned.add(data);
    this.sliceOut.send([MERGER_ID, header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
    this.pickCounters.answered++;
  }

  /** The merger wants the frame at a scan position: a recent one at once, else the next one (selected for it). */
  private onPick(m: PickMessage): void {
    this.pickCounters.requested++;
    const a = this.acquisition;
    const none = { epoch: 0, index: 0, damage: [] as number[] };
    const refuse = (error: string) => {
      this.pickCounters.refused++;
      this.pickReply({ acquisition: m.acquisition, request: m.request, position: m.position, ...none, error });
    };
    if (!a || a.acquisition !== m.acquisition) return refuse('unknown-acquisition');
    const positions = a.scanShape[0] * a.scanShape[1];
    if (m.position >= positions) return refuse('outside-scan');
    if (a.roi && !a.roi[m.position]) return refuse('outside-roi');
    for (let i = this.recent.length - 1; i >= 0; i--) {
      const r = this.recent[i]!;
      if (r.header.acquisition !== a.acquisition || r.header.position !== m.position) continue;
      this.pickCounters.fromRecent++;
      return this.pickReply({ acquisition: a.acquisition, request: m.request, position: m.position, epoch: r.header.epoch, index: r.index, damage: r.header.damage }, r.data);
    }
    const last = this.workerBook.list[this.workerBook.list.length - 1];
    if (!last || last.base.kind === 'none') return refuse('ended');
    if (a.mode === 'single' && this.leg.startIndex + m.position < this.safeIndex(a)) return refuse('passed');
    let waiting = 0;
    for (const w of this.picks.values()) waiting += w.length;
    if (waiting >= MAX_PICKS) return refuse('busy');
    const list = this.picks.get(m.position) ?? [];
    // answer a little before the link gives up, so that a partial frame still reaches it
    list.push({ request: m.request, deadline: Date.now() + m.timeoutMs - Math.min(1000, m.timeoutMs / 4) });
    this.picks.set(m.position, list);
    if (!this.pickRulePositions.has(m.position)) this.reissueRule(a);
  }

  private expirePicks(): void {
    const t = Date.now();
    for (const [p, list] of this.picks) {
      const live = list.filter((w) => w.deadline > t);
      for (const w of list) {
        if (w.deadline > t) continue;
        if (w.partial) this.pickReply({ acquisition: w.partial.header.acquisition, request: w.request, position: p, epoch: w.partial.header.epoch, index: w.partial.index, damage: w.partial.header.damage }, w.partial.data);
        else this.pickCounters.expired++;
      }
      if (live.length) this.picks.set(p, live);
      else this.picks.delete(p);
    }
    // no pick waits for a position the receivers still send for picks: back to the workers' rule
    const a = this.acquisition;
    if (a && this.pickRulePositions.size > 0 && [...this.pickRulePositions].every((p) => !this.picks.has(p))) this.reissueRule(a);
  }

  private safeIndex(a: AcquireMessage): number {
    const margin = Math.max(32, Math.ceil(this.rateWindow.fps * 0.5));
    return Math.max(this.leg.firstIndex, this.newestIndex + 1 + margin);
  }

  private sendSelection(id: string): void {
    this.sliceOut.send([id, encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'selection', ruleVersion: this.book.version, rules: [...this.book.list] })]);
  }

  private broadcastSelection(): void {
    for (const id of this.receivers) this.sendSelection(id);
  }

  // ------------------------------------------------------------------------------------------
  // frames and workers

  private onFrame(f: AssembledFrame): void {
    const a = this.acquisition;
    if (!a || a.acquisition !== f.acquisition) return this.recycle(f.data), this.drop('stale-frame');
    // the leg's mapping: a frame of a detector acquisition no rule names any more (the one before a resume) is not used
    const rule = this.book.at(f.index, f.round);
    if (!rule) return this.recycle(f.data), this.drop('stale-leg');
    const positions = a.scanShape[0] * a.scanShape[1];
    const rel = f.index - rule.startIndex;
    if (rel < 0) return this.recycle(f.data), this.drop('stale-leg');
    const epoch = Math.floor(rel / positions);
    if (a.mode === 'single' && epoch > 0) return this.recycle(f.data), this.drop('after-scan');
    const header: FrameHeader = { version: SHUFFLE_PROTOCOL_VERSION, type: 'frame', acquisition: a.acquisition, epoch, position: rel % positions, index: f.index, damage: f.damage };
    const out: OutFrame = { index: f.index, header, data: f.data };
    this.recent.push(out);
    if (this.recent.length > RECENT_FRAMES) this.recent.shift();
    let waiting = this.picks.get(header.position);
    // a sector missing (receivers that learnt the pick's rule at different frames): a continuous scan brings the position again
    if (waiting && a.mode === 'continuous' && f.damage.includes(0xffffffff)) {
      this.pinned.add(f.data);
      for (const w of waiting) w.partial = out;
      waiting = undefined;
    }
    if (waiting) {
      this.picks.delete(header.position);
      for (const w of waiting) this.pickReply({ acquisition: a.acquisition, request: w.request, position: header.position, epoch, index: f.index, damage: f.damage }, f.data);
    }
    // picks widen the receivers' selection: only what the workers' own rule takes goes to them
    if (this.workerBook.selects(f.index, f.round)) this.dispatcher.offer(out);
    else if (!waiting) this.pickCounters.unpicked++;
  }

  private recycle(data: Uint16Array): void {
    if (this.pinned.has(data) || this.recent.some((r) => r.data === data)) return;
    if (this.spare.length < 8) this.spare.push(data);
  }

  private toWorker(id: string, m: MergerToReceiver): void {
    this.frameOut.send([id, encodeLive(m)]);
  }

  private async frameLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.frameRouter.receive();
      } catch {
        return;
      }
      const id = frames[0]!.toString('latin1');
      try {
        if (frames.length !== 2) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'worker', `${frames.length - 1} frames`);
        const c = asCredit(decodeShuffle(frames[1]!));
        let n = c.n;
        if (!this.dispatcher.workers.has(id)) {
          // a worker this process does not know: new, or one that asked a previous shuffle (restarted) or
          // whose connection dropped for frames that never came: its whole window is open here
          n = Math.max(c.n, c.window ?? 0);
          if (c.window !== undefined) this.pingable.add(id);
          this.o.log?.info({ worker: id, pid: c.pid, credits: n }, 'shuffle: worker joined');
          if (this.acquisition) {
            this.toWorker(id, this.acquisition);
            for (const p of this.paramsLog) this.toWorker(id, p);
          }
        }
        this.lostWith.delete(id);
        this.dispatcher.credit(id, n, c.window);
      } catch (err) {
        this.drop((err as TesseraError).code ?? 'error', err);
      }
    }
  }

  /** A worker whose connection is gone: forgotten at once (its frames go to the others), not after workerTimeoutMs of silence. */
  private workerGone(id: string): void {
    this.pingable.delete(id);
    // the frames it had and never answered: their results never come (the merger shows those
    // positions not valid); the ones a failed send hands back are taken off again
    const lost = this.dispatcher.unanswered(id) ?? 0;
    if (!this.dispatcher.remove(id)) return;
    this.workersLost++;
    this.framesLostInWorkers += lost;
    this.lostWith.set(id, lost);
    this.o.log?.warn({ worker: id, workers: this.dispatcher.live, framesUnanswered: lost }, 'shuffle: worker gone (disconnected)');
  }

  private pingWorkers(): void {
    const ping = encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'ping', sentAt: Date.now() });
    for (const id of this.pingable) this.frameOut.send([id, ping], (ok, err) => !ok && isGone(err) && this.workerGone(id));
  }

  private tick(): void {
    this.assembler.tick();
    this.expirePicks();
    for (const w of this.dispatcher.expire()) this.o.log?.warn({ worker: w }, 'shuffle: worker gone (silent)');
    const t = Date.now();
    if (t - this.rateWindow.t >= 1000) {
      this.rateWindow = { t, slices: 0, fps: (this.rateWindow.slices * 1000) / (t - this.rateWindow.t) / 8 };
    }
    const a = this.acquisition;
    if (!a || this.o.fixedRate) return;
    const next = this.rate.update(this.dispatcher.counters.skipped, this.dispatcher.idleCredits > 0);
    if (next !== null) {
      const from = this.safeIndex(a);
      this.addRule(this.ruleFor(a, from, next));
      this.broadcastSelection();
      this.o.log?.info({ decimate: next, fromIndex: from, skipped: this.dispatcher.counters.skipped }, 'shuffle: selection rate changed');
    }
  }

  status(): ShuffleStatus {
    const c = this.assembler.counters;
    return {
      version: SHUFFLE_PROTOCOL_VERSION,
      type: 'status',
      pid: process.pid,
      acquisition: this.acquisition?.acquisition ?? null,
      workers: this.dispatcher.live,
      framesComplete: c.framesComplete,
      framesIncomplete: c.framesIncomplete,
      framesDispatched: this.dispatcher.counters.dispatched,
      framesSkipped: this.dispatcher.counters.skipped,
      decimate: this.rate.decimate,
      frameRate: this.rateWindow.fps,
      framesLostInWorkers: this.framesLostInWorkers,
      sentAt: Date.now(),
    };
  }

  private sendStatus(): void {
    if (this.mergerSeen) this.sliceOut.send([MERGER_ID, encodeShuffle(this.status())]);
  }

  counters(): Record<string, unknown> {
    return { ...this.status(), workersLost: this.workersLost, framesResent: this.framesResent, assembler: this.assembler.counters, picks: this.pickCounters, dispatcher: this.dispatcher.counters, dropped: this.dropped, receivers: this.receivers.size, ruleVersion: this.book.version, sliceRate: this.rateWindow.fps, queued: this.dispatcher.queued, openFrames: this.assembler.openFrames, rssMB: Math.round(process.memoryUsage().rss / 1048576) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.sliceOut.close();
    this.frameOut.close();
    this.sliceRouter.close();
    this.frameRouter.close();
    await Promise.all(this.loops.map((l) => l.catch(() => {})));
  }
}
