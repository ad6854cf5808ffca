/**
 * The first-frame election: the eight sector receivers agree on where an acquisition starts.
 *
 * Each receiver proposes the key (block_count of block 0, see receivers/sector-frame-assembler.ts)
 * of the first shutter-active frame it saw. The coordinator decides when every expected sector
 * has voted, or after `timeoutMs` with the votes it has (naming the missing sectors): the
 * earliest key wins. A sector that lost that frame entirely proposed a later one; it then treats
 * the elected frame as missing. Every receiver maps
 *   scanIndex = (frameKey - (firstActiveKey - 32)) / 32   (mod 2^32)
 * so that scan position 0 is the frame just before the first flagged one (Tessera convention 1).
 *
 * Transport: the coordinator's ROUTER binds `election.endpoint`, receivers' DEALERs connect.
 * Messages are msgpack maps with a `version`; every incoming message is validated, and a bad
 * one is counted, logged and ignored (never a crash). Clients re-send until answered, so the
 * coordinator is idempotent: a repeated vote replaces the earlier one, and a vote that arrives
 * after the decision for the same shutter edge (a late or restarted receiver) is answered with
 * the decision already made. A receiver that starts while the flag is already on did not see
 * the edge: it sends a `query` (`sawEdge: false`) and joins the acquisition under way, if any.
 *
 * The coordinator is a plain class so that any process can host it (`tessera start` now, the
 * merger later).
 */
import { pack, unpack } from 'msgpackr';
import * as zmq from 'zeromq';
import { TesseraError } from '../errors.js';
import { shown } from './fields.js';
import type { Logger } from '../log.js';

export const ELECTION_PROTOCOL_VERSION = 1;
const STEP = 32;
const MAX_SECTOR = 7;
/** election messages are a few dozen bytes: anything much larger is dropped by ZeroMQ unread */
export const MAX_ELECTION_MESSAGE_BYTES = 64 * 1024;

export interface ProposeMessage {
  version: number;
  type: 'propose';
  /** chosen by the client, echoed in the answer */
  requestId: number;
  sector: number;
  /** key of the first shutter-active frame the sector saw (u32) */
  frameKey: number;
  frameId: number;
  /** false: the receiver started with the flag already on (a query, not a vote) */
  sawEdge: boolean;
}

export interface DecisionMessage {
  version: number;
  type: 'decision';
  requestId: number;
  /** 1, 2, … per coordinator: one per acquisition edge */
  round: number;
  firstActiveKey: number;
  voters: number[];
  missing: number[];
  decidedBy: 'all' | 'timeout';
  /** the decision had already been made when this request arrived */
  late: boolean;
}

export interface NoDecisionMessage {
  version: number;
  type: 'no_decision';
  requestId: number;
}

export type ElectionMessage = ProposeMessage | DecisionMessage | NoDecisionMessage;

function bad(what: string, why: string): never {
  throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', what, why);
}

function u32(m: Record<string, unknown>, key: string): number {
  const v = m[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) bad(shown(m.type), `${key} is not a u32: ${shown(v)}`);
  return v;
}

function sectorList(m: Record<string, unknown>, key: string): number[] {
  const v = m[key];
  if (!Array.isArray(v) || v.length > 64 || !v.every((s) => Number.isInteger(s) && s >= 0 && s <= MAX_SECTOR)) {
    bad(shown(m.type), `${key} is not a list of sectors`);
  }
  return v as number[];
}

/** Decode and validate one message; throws TESSERA_ERR_BAD_MESSAGE / _PROTOCOL_VERSION. */
export function decodeElectionMessage(bytes: Uint8Array): ElectionMessage {
  let m: unknown;
  try {
    m = unpack(bytes);
  } catch (err) {
    bad('election', `not msgpack: ${(err as Error).message}`);
  }
  if (m === null || typeof m !== 'object' || Array.isArray(m)) bad('election', 'not a map');
  const r = m as Record<string, unknown>;
  if (typeof r.version !== 'number') bad('election', 'no version field');
  if (r.version !== ELECTION_PROTOCOL_VERSION) throw new TesseraError('TESSERA_ERR_PROTOCOL_VERSION', shown(r.version), ELECTION_PROTOCOL_VERSION);
  const requestId = r.requestId;
  if (typeof requestId !== 'number' || !Number.isSafeInteger(requestId) || requestId < 0) bad(shown(r.type), 'requestId missing');
  switch (r.type) {
    case 'propose': {
      const sector = r.sector;
      if (typeof sector !== 'number' || !Number.isInteger(sector) || sector < 0 || sector > MAX_SECTOR) bad('propose', `bad sector ${shown(sector)}`);
      if (typeof r.sawEdge !== 'boolean') bad('propose', 'sawEdge is not a boolean');
      return { version: ELECTION_PROTOCOL_VERSION, type: 'propose', requestId, sector, frameKey: u32(r, 'frameKey'), frameId: u32(r, 'frameId'), sawEdge: r.sawEdge };
    }
    case 'decision': {
      if (r.decidedBy !== 'all' && r.decidedBy !== 'timeout') bad('decision', 'decidedBy');
      if (typeof r.late !== 'boolean') bad('decision', 'late is not a boolean');
      const round = r.round;
      if (typeof round !== 'number' || !Number.isSafeInteger(round) || round < 1) bad('decision', 'round');
      return {
        version: ELECTION_PROTOCOL_VERSION,
        type: 'decision',
        requestId,
        round,
        firstActiveKey: u32(r, 'firstActiveKey'),
        voters: sectorList(r, 'voters'),
        missing: sectorList(r, 'missing'),
        decidedBy: r.decidedBy,
        late: r.late,
      };
    }
    case 'no_decision':
      return { version: ELECTION_PROTOCOL_VERSION, type: 'no_decision', requestId };
    default:
      bad('election', `unknown type ${shown(r.type)}`);
  }
}

export function encodeElectionMessage(m: ElectionMessage): Buffer {
  return pack(m);
}

/** The frame key of scan position `scanIndex` of the acquisition whose first flagged frame is `firstActiveKey`. */
export function scanPositionKey(firstActiveKey: number, scanIndex: number): number {
  return (firstActiveKey - STEP + STEP * scanIndex) >>> 0;
}

/** Frames since scan position 0 (negative before it): (frameKey - (firstActiveKey - 32)) / 32, signed. */
export function framesSinceScanStart(frameKey: number, firstActiveKey: number): number {
  const d = (frameKey - ((firstActiveKey - STEP) >>> 0)) | 0;
  return d / STEP;
}

// ---------------------------------------------------------------------------------------------

export interface Decision {
  round: number;
  firstActiveKey: number;
  voters: number[];
  missing: number[];
  decidedBy: 'all' | 'timeout';
  /** the proposals, by sector */
  proposals: Record<number, { frameKey: number; frameId: number }>;
}

export interface ElectionCoordinatorOptions {
  /** ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:7210 (port 0: any free port, see `endpoint`) */
  endpoint: string;
  /** sectors whose votes are awaited */
  expectedSectors: readonly number[];
  timeoutMs: number;
  /** a vote within this many frames of the last decision belongs to the same edge (default 8) */
  sameEdgeFrames?: number;
  log?: Logger;
  onDecision?: (d: Decision) => void;
}

interface Ballot {
  identity: Buffer;
  msg: ProposeMessage;
}

interface Round {
  number: number;
  votes: Map<number, Ballot>;
  queries: Ballot[];
  timer: NodeJS.Timeout;
}

export class ElectionCoordinator {
  readonly stats = { messages: 0, malformed: 0, proposals: 0, queries: 0, decisions: 0 };
  readonly decisions: Decision[] = [];
  private readonly router = new zmq.Router({ linger: 0, maxMessageSize: MAX_ELECTION_MESSAGE_BYTES });
  private round: Round | null = null;
  private rounds = 0;
  private sendChain: Promise<void> = Promise.resolve();
  private closed = false;
  private loop: Promise<void> | null = null;
  private readonly sameEdge: number;
  private readonly expected: ReadonlySet<number>;
  private boundEndpoint = '';

  private constructor(private readonly options: ElectionCoordinatorOptions) {
    this.sameEdge = (options.sameEdgeFrames ?? 8) * STEP;
    this.expected = new Set(options.expectedSectors);
  }

  static async start(options: ElectionCoordinatorOptions): Promise<ElectionCoordinator> {
    const c = new ElectionCoordinator(options);
    try {
      await c.router.bind(options.endpoint);
    } catch (err) {
      c.router.close();
      throw new TesseraError('TESSERA_ERR_ELECTION', `cannot bind ${options.endpoint}: ${(err as Error).message}`);
    }
    c.boundEndpoint = c.router.lastEndpoint ?? options.endpoint;
    c.loop = c.receiveLoop();
    options.log?.info({ endpoint: c.boundEndpoint, expectedSectors: options.expectedSectors, timeoutMs: options.timeoutMs }, 'election coordinator listening');
    return c;
  }

  /** The endpoint actually bound (with the port the OS chose for port 0). */
  get endpoint(): string {
    return this.boundEndpoint;
  }

  get latest(): Decision | null {
    return this.decisions[this.decisions.length - 1] ?? null;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.round) clearTimeout(this.round.timer);
    await this.sendChain.catch(() => {});
    this.router.close();
    await this.loop?.catch(() => {});
  }

  private async receiveLoop(): Promise<void> {
    const log = this.options.log;
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.router.receive();
      } catch (err) {
        if (this.closed) return;
        log?.error({ err }, 'election coordinator: receive failed');
        return;
      }
      this.stats.messages++;
      const identity = frames[0]!;
      try {
        if (frames.length !== 2) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'election', `${frames.length - 1} frames, expected 1`);
        const msg = decodeElectionMessage(frames[1]!);
        if (msg.type !== 'propose') throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', msg.type, 'receivers only send proposals');
        this.onPropose({ identity, msg });
      } catch (err) {
        this.stats.malformed++;
        if (this.stats.malformed <= 10 || this.stats.malformed % 100 === 0) {
          log?.warn({ code: (err as TesseraError).code, err: (err as Error).message, malformed: this.stats.malformed }, 'election: malformed message ignored');
        }
      }
    }
  }

  private onPropose(b: Ballot): void {
    const m = b.msg;
    const latest = this.latest;
    if (!m.sawEdge) {
      this.stats.queries++;
      if (this.round) this.round.queries.push(b);
      else this.answerQuery(b, latest);
      return;
    }
    this.stats.proposals++;
    if (this.round) {
      this.round.votes.set(m.sector, b);
      this.maybeDecide();
      return;
    }
    if (latest && Math.abs((m.frameKey - latest.firstActiveKey) | 0) <= this.sameEdge) {
      this.options.log?.info({ sector: m.sector, frameKey: m.frameKey, round: latest.round }, 'election: late vote answered with the decision made');
      this.reply(b.identity, this.decisionMessage(latest, m.requestId, true));
      return;
    }
    const number = ++this.rounds;
    const timer = setTimeout(() => this.decide('timeout'), this.options.timeoutMs);
    this.round = { number, votes: new Map([[m.sector, b]]), queries: [], timer };
    this.options.log?.info({ round: number, sector: m.sector, frameKey: m.frameKey, frameId: m.frameId }, 'election: round opened');
    this.maybeDecide();
  }

  private maybeDecide(): void {
    const r = this.round!;
    for (const s of this.expected) if (!r.votes.has(s)) return;
    this.decide('all');
  }

  private decide(by: 'all' | 'timeout'): void {
    const r = this.round;
    if (!r || this.closed) return;
    clearTimeout(r.timer);
    this.round = null;
    const ballots = [...r.votes.values()];
    const ref = ballots[0]!.msg.frameKey;
    let best = ref;
    for (const b of ballots) if (((b.msg.frameKey - ref) | 0) < ((best - ref) | 0)) best = b.msg.frameKey;
    const voters = [...r.votes.keys()].sort((a, b) => a - b);
    const missing = [...this.expected].filter((s) => !r.votes.has(s)).sort((a, b) => a - b);
    const proposals: Decision['proposals'] = {};
    for (const b of ballots) proposals[b.msg.sector] = { frameKey: b.msg.frameKey, frameId: b.msg.frameId };
    const d: Decision = { round: r.number, firstActiveKey: best, voters, missing, decidedBy: by, proposals };
    this.decisions.push(d);
    if (this.decisions.length > 100) this.decisions.shift();
    this.stats.decisions++;
    const log = this.options.log;
    if (missing.length > 0) log?.warn({ round: d.round, firstActiveKey: best, voters, missing }, 'election decided at timeout without some sectors');
    else log?.info({ round: d.round, firstActiveKey: best, voters, proposals }, 'election decided');
    for (const b of ballots) this.reply(b.identity, this.decisionMessage(d, b.msg.requestId, false));
    for (const q of r.queries) this.answerQuery(q, d);
    try {
      this.options.onDecision?.(d);
    } catch (err) {
      log?.error({ err }, 'election: onDecision failed');
    }
  }

  private answerQuery(b: Ballot, d: Decision | null): void {
    // a receiver that joined late can use the decision if its frames are at or after the start
    if (d && ((b.msg.frameKey - d.firstActiveKey) | 0) >= 0) this.reply(b.identity, this.decisionMessage(d, b.msg.requestId, true));
    else this.reply(b.identity, { version: ELECTION_PROTOCOL_VERSION, type: 'no_decision', requestId: b.msg.requestId });
  }

  private decisionMessage(d: Decision, requestId: number, late: boolean): DecisionMessage {
    return {
      version: ELECTION_PROTOCOL_VERSION,
      type: 'decision',
      requestId,
      round: d.round,
      firstActiveKey: d.firstActiveKey,
      voters: d.voters,
      missing: d.missing,
      decidedBy: d.decidedBy,
      late,
    };
  }

  private reply(identity: Buffer, m: ElectionMessage): void {
    if (this.closed) return;
    // zeromq allows one send in flight per socket: chain them
    this.sendChain = this.sendChain
      .then(() => this.router.send([identity, encodeElectionMessage(m)]))
      .catch((err: Error) => this.options.log?.warn({ err: err.message }, 'election: reply failed'));
  }
}

// ---------------------------------------------------------------------------------------------

export type ElectionAnswer =
  | { kind: 'decision'; firstActiveKey: number; round: number; decidedBy: 'all' | 'timeout'; missing: number[]; late: boolean }
  /** answer to a query: no acquisition to join */
  | { kind: 'none' }
  /** no answer from the coordinator in time: the caller decides on its own */
  | { kind: 'no_answer' };

export interface ElectionClientOptions {
  endpoint: string;
  sector: number;
  /** re-send an unanswered request this often (default 500 ms) */
  resendMs?: number;
  /** give up waiting after this long (default 10 s) */
  answerTimeoutMs?: number;
  log?: Logger;
}

interface PendingRequest {
  resolve: (a: ElectionAnswer) => void;
  message: ProposeMessage;
  resend: NodeJS.Timeout;
  giveUp: NodeJS.Timeout;
}

export class ElectionClient {
  readonly stats = { sent: 0, answers: 0, malformed: 0, unmatched: 0 };
  private readonly dealer = new zmq.Dealer({ linger: 0, maxMessageSize: MAX_ELECTION_MESSAGE_BYTES });
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private sendChain: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly loop: Promise<void>;

  constructor(private readonly options: ElectionClientOptions) {
    this.dealer.connect(options.endpoint);
    this.loop = this.receiveLoop();
  }

  /**
   * Propose the first flagged frame (sawEdge true), or ask for the acquisition under way
   * (sawEdge false). Resolves with the coordinator's answer, or `no_answer` after answerTimeoutMs.
   */
  propose(p: { frameKey: number; frameId: number; sawEdge: boolean }): Promise<ElectionAnswer> {
    if (this.closed) return Promise.resolve({ kind: 'no_answer' });
    const requestId = this.nextRequestId++;
    const message: ProposeMessage = {
      version: ELECTION_PROTOCOL_VERSION,
      type: 'propose',
      requestId,
      sector: this.options.sector,
      frameKey: p.frameKey >>> 0,
      frameId: p.frameId >>> 0,
      sawEdge: p.sawEdge,
    };
    return new Promise((resolve) => {
      const finish = (a: ElectionAnswer) => {
        const req = this.pending.get(requestId);
        if (!req) return;
        clearInterval(req.resend);
        clearTimeout(req.giveUp);
        this.pending.delete(requestId);
        resolve(a);
      };
      const resend = setInterval(() => this.send(message), this.options.resendMs ?? 500);
      const giveUp = setTimeout(() => {
        this.options.log?.warn({ sector: this.options.sector, endpoint: this.options.endpoint }, 'election: no answer from the coordinator');
        finish({ kind: 'no_answer' });
      }, this.options.answerTimeoutMs ?? 10_000);
      this.pending.set(requestId, { resolve: finish, message, resend, giveUp });
      this.send(message);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const req of [...this.pending.values()]) req.resolve({ kind: 'no_answer' });
    await this.sendChain.catch(() => {});
    this.dealer.close();
    await this.loop.catch(() => {});
  }

  private send(m: ProposeMessage): void {
    if (this.closed) return;
    this.stats.sent++;
    this.sendChain = this.sendChain
      .then(() => this.dealer.send(encodeElectionMessage(m)))
      .catch((err: Error) => {
        if (!this.closed) this.options.log?.warn({ err: err.message }, 'election: send failed');
      });
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.dealer.receive();
      } catch (err) {
        if (!this.closed) this.options.log?.error({ err }, 'election client: receive failed');
        return;
      }
      try {
        if (frames.length !== 1) throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'election', `${frames.length} frames, expected 1`);
        const m = decodeElectionMessage(frames[0]!);
        if (m.type === 'propose') throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', 'propose', 'the coordinator does not propose');
        const req = this.pending.get(m.requestId);
        if (!req) {
          this.stats.unmatched++; // an answer to a request already answered (re-sends)
          continue;
        }
        this.stats.answers++;
        if (m.type === 'no_decision') req.resolve({ kind: 'none' });
        else req.resolve({ kind: 'decision', firstActiveKey: m.firstActiveKey, round: m.round, decidedBy: m.decidedBy, missing: m.missing, late: m.late });
      } catch (err) {
        this.stats.malformed++;
        if (this.stats.malformed <= 10) this.options.log?.warn({ err: (err as Error).message }, 'election client: malformed message ignored');
      }
    }
  }
}
