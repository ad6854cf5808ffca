/**
 * The live pipeline's messages between processes (docs/protocol.md, "Between processes"):
 * the merger's control channel to receivers (and later frame workers), and the partial
 * results they push back.
 *
 * Transport (endpoints from config `merger.control` / `merger.results`):
 *   control  merger ROUTER binds, each receiver DEALER connects (routing id `receiver-<sector>`).
 *            receiver -> merger: heartbeat (every `HEARTBEAT_MS`; the first one is the hello),
 *                                ready, failure
 *            merger -> receiver: acquire, params, stop, abort
 *   results  merger PULL binds, receivers PUSH connect: one `partial` per chunk of frames.
 *
 * Every message is a msgpack map with `version` and `type`; typed arrays travel as msgpack
 * `bin` with their dtype beside them (`WireArray`), so any msgpack reader can decode them.
 * Every decoder validates: a bad message is a TESSERA_ERR_BAD_MESSAGE (or _PROTOCOL_VERSION)
 * that the receiving loop counts, logs and drops, never a crash.
 *
 * Frames are addressed by `index`: frames since scan position 0 of the detector's shutter
 * acquisition (see receivers/shutter-sync.ts), so `epoch = floor(index / positions)` and
 * `scanIndex = index mod positions`. A merger acquisition starts at an epoch boundary
 * (`startIndex`): at the next shutter edge, or, when the shutter is already on (a continuous
 * scan under way), at the next repetition of the scan.
 *
 * What the merger (src/merger/*) relies on — receiver side, please keep to it:
 *  - Acquisition-relative frames: `rel = index - startIndex` (startIndex = 0 when `start` is
 *    null), `epoch = floor(rel / P)` with P = scanShape[0] x scanShape[1] of the acquire
 *    message, position `rel mod P`; chunk k of an epoch is positions `chunkRange(k, …)`
 *    below: [k x chunkSize, min((k + 1) x chunkSize, P)) — the last chunk of an epoch may be
 *    shorter; chunks never straddle epochs.
 *  - One partial per sector and chunk, also for a chunk with no ROI-selected frame (frames 0,
 *    empty nav buffers) and for frames that were entirely lost (zero-filled, damage 0xffffffff):
 *    the merger waits for every live sector's partial of a chunk (at most
 *    `merger.chunkTimeoutMs`, then it zero-fills the sector and marks it missing).
 *  - `sig` is the sector's slice: origin [0, 256 x sector], shape [1860, 256]; the buffers
 *    are exactly the PartitionTask's `finish()` arrays (dtype as declared, no resultOnly ones),
 *    in the acquire message's UDF order; `paramsVersion` is 0 for the acquire's params and the
 *    n-th `params` message for that UDF gives n (per UDF, counted from 1).
 *  - `damage` bit b of a position = block b of this sector's frame was zero-filled.
 *  - Heartbeat `counters`: flat names from receivers/stats.ts ReceiverCounters: the merger reads
 *    `received` (datagrams), `blocksZeroFilled` (lost), `duplicates`, `stragglers` (late),
 *    `rejected` (total, or `rejected.<reason>` keys, summed), `framesDamaged`, `framesMissing`.
 *  - While a merger acquisition is running, the heartbeat's `acquisition` is its id; when a
 *    heartbeat names another (or null), the merger re-sends `acquire` (a restarted receiver
 *    rejoins that way: it gets the acquisition's original `start`, which has passed by then —
 *    please join at the next chunk boundary instead of refusing). `ready` after an acquire.
 *    `failure`: the merger fills that sector in as missing (not waited for) until a receiver
 *    with another pid appears; only when every live sector failed does the acquisition fail.
 *  - `runState` in a heartbeat: the receiver's run of the named acquisition. 'armed' while the
 *    phase is 'acquiring' with `start` null means the acquire came after this detector
 *    acquisition's edge: the merger names a concrete `start` and re-sends `acquire`; the receiver
 *    takes the new `start` while still armed (docs/protocol.md, "Start right after the edge").
 *  - `detectorEnded` in a heartbeat: the detector acquisition ended (stream stopped, restarted,
 *    shutter off) under the named merger acquisition (docs/protocol.md, "Detector stream
 *    stops"); the merger ends it once every live sector running it says so (a continuous one:
 *    completes the epochs before the resume epoch and re-sends `acquire` with `resume`, and
 *    `rejoin`: the ended leg's mapping, used if that detector acquisition comes back after a
 *    link outage).
 *  - `stop` carries `atFrame` (acquisition-relative, a chunk boundary): finish and send every
 *    chunk before it, nothing from it on, then leave the acquisition. `abort`: drop at once.
 *  - `params` apply from chunks whose first frame (acquisition-relative, counted over epochs:
 *    epoch x P + navStart) is >= `fromFrame`.
 */
import { Packr, Unpackr } from 'msgpackr';
import { bad, bytes, envelope as checkEnvelope, int, obj, shown, str, type Obj } from './fields.js';
import { allocate, dtypeOf, isDType, itemSize, type DType, type TypedArray } from '../udf/dtype.js';

export const LIVE_PROTOCOL_VERSION = 1;
/** receivers send a heartbeat this often; the merger calls a sector missing after LIVENESS_MS without one */
export const HEARTBEAT_MS = 250;
export const LIVENESS_MS = 2000;
/** largest message the merger accepts on either socket (zmq maxMessageSize) */
export const MAX_LIVE_MESSAGE_BYTES = 256 * 1024 * 1024;

/** A typed array on the wire: its dtype and its bytes (little-endian, as in memory). */
export interface WireArray {
  dtype: DType;
  data: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// receiver -> merger (control)

export interface HeartbeatMessage {
  version: number;
  type: 'heartbeat';
  role: 'receiver';
  sector: number;
  pid: number;
  /** ShutterSync phase: 'armed' | 'voting' | 'running' | … */
  phase: string;
  /** merger acquisition the receiver is armed for or running, or null */
  acquisition: string | null;
  /** index of the newest frame handed on in the current shutter acquisition, or null */
  lastIndex: number | null;
  /** shutter round of the current detector acquisition (election round), or null */
  shutterRound: number | null;
  /** scan positions per epoch the receiver is configured for, or null */
  positions: number | null;
  /**
   * The merger acquisition named in `acquisition` ended on this receiver because the detector
   * acquisition it ran on ended first: `reason` 'stream_stopped' (no frame for
   * receiver.streamIdleMs), 'jump' (the stream restarted), 'shutter_off'; `atFrame` the
   * acquisition-relative index of the first frame that never came (the chunk in flight was sent
   * with its missing positions filled and marked); `round` the election round of the detector
   * acquisition that ended (null: not decided by an election); `resume` the `n` of the acquire's
   * `resume` the run was on (0: the acquisition's own start). Absent or null otherwise (older
   * receivers; round and resume absent: null and 0).
   */
  detectorEnded?: DetectorEnded | null;
  /**
   * State of the receiver's run of the merger acquisition named in `acquisition` (PartialRunner):
   * 'armed' = took the acquire but not bound to a detector acquisition yet, 'running' = bound, …
   * (LIVE_RUN_STATES). The merger reads it to notice a receiver armed for an acquisition with
   * `start` null while its detector acquisition is already under way (the acquire came just after
   * the shutter edge): it then names a concrete `start`. Absent or null: no run, or an older receiver.
   */
  runState?: LiveRunState | null;
  /** cumulative counters (ReceiverCounters snapshot): datagrams, rejected by reason, duplicates, … */
  counters: Record<string, number>;
  /** receiver's clock, ms since epoch */
  sentAt: number;
}

/** States of a receiver's run of a merger acquisition (receivers/partial-runner.ts), as heartbeats report them. */
export const LIVE_RUN_STATES = ['armed', 'running', 'stopping', 'done', 'stopped', 'aborted', 'ended', 'failed'] as const;
export type LiveRunState = (typeof LIVE_RUN_STATES)[number];

export interface DetectorEnded {
  reason: string;
  atFrame: number;
  round?: number | null;
  resume?: number;
}

export interface ReadyMessage {
  version: number;
  type: 'ready';
  acquisition: string;
  sector: number;
}

/** The receiver cannot run the acquisition (unknown UDF, bad params, out of memory, …). */
export interface FailureMessage {
  version: number;
  type: 'failure';
  acquisition: string;
  sector: number;
  code: string;
  message: string;
}

export type ReceiverToMerger = HeartbeatMessage | ReadyMessage | FailureMessage;

// ---------------------------------------------------------------------------------------------
// merger -> receiver (control)

export interface LiveUdf {
  id: string;
  name: string;
  params: Record<string, unknown>;
}

export interface AcquireMessage {
  version: number;
  type: 'acquire';
  acquisition: string;
  scanShape: [number, number];
  /** flat row-major ROI mask over the scan, or null */
  roi: Uint8Array | null;
  /** the tile-capable UDFs the receivers run, in run order (the merger runs whole-frame ones elsewhere) */
  udfs: LiveUdf[];
  /** frames per partial result */
  chunkSize: number;
  mode: 'single' | 'continuous';
  /**
   * where the acquisition starts: null = at the next shutter edge (index 0 of the next
   * detector acquisition); otherwise at this frame index of detector acquisition `shutterRound`.
   * `startIndex` may be negative after a resume: rel = index - startIndex.
   */
  start: { shutterRound: number; startIndex: number } | null;
  /**
   * A continuous acquisition carrying on after its detector acquisition ended (docs/protocol.md,
   * "Detector stream stops"): the `n`-th resume (1, 2, …) goes on at the start of epoch `epoch`
   * (acquisition-relative frame epoch x P). With `start` null: index 0 of the first detector
   * acquisition decided after election round `afterRound` (null: the next one to start) is frame
   * epoch x P (startIndex = -epoch x P); with `start`: that mapping. Absent/null: no resume.
   */
  resume?: ResumeInfo | null;
  /**
   * With `resume` and `start` null: the mapping of the leg that ended ({its round, its
   * startIndex}), for the case that its detector acquisition comes back after a link outage (the
   * camera kept streaming it; the receivers rejoin it through the election's query: same round).
   * A detector acquisition of that round then runs with rel = index - startIndex, as before the
   * end, from the first chunk boundary at or after resume.epoch x P. Absent/null: only a detector
   * acquisition decided after `afterRound` resumes (older mergers, or the round was not known).
   */
  rejoin?: { shutterRound: number; startIndex: number } | null;
}

export interface ResumeInfo {
  n: number;
  epoch: number;
  afterRound: number | null;
}

export interface ParamsMessage {
  version: number;
  type: 'params';
  acquisition: string;
  udfId: string;
  params: Record<string, unknown>;
  /** apply from the first chunk whose first frame index (relative to the acquisition start) is >= this */
  fromFrame: number;
}

export interface StopMessage {
  version: number;
  type: 'stop' | 'abort';
  acquisition: string;
  /**
   * stop only: the first acquisition-relative frame not to process (a chunk boundary); chunks
   * before it are finished and sent. null/absent: stop after the chunk in progress.
   */
  atFrame?: number | null;
}

/** Scan positions [navStart, navEnd) of chunk `chunk` of an epoch of `positions` positions. */
export function chunkRange(chunk: number, chunkSize: number, positions: number): [number, number] {
  return [chunk * chunkSize, Math.min((chunk + 1) * chunkSize, positions)];
}

/** Chunks per epoch. */
export function chunksPerEpoch(chunkSize: number, positions: number): number {
  return Math.ceil(positions / chunkSize);
}

export type MergerToReceiver = AcquireMessage | ParamsMessage | StopMessage;

// ---------------------------------------------------------------------------------------------
// receiver -> merger (results)

export interface PartialMessage {
  version: number;
  type: 'partial';
  acquisition: string;
  sector: number;
  /** repetition of the scan since the acquisition started (0 first) */
  epoch: number;
  /** chunk number within the epoch: frames [chunk x chunkSize, …) */
  chunk: number;
  /** scan positions [navStart, navEnd) of the epoch; `frames` of them selected by the ROI */
  navStart: number;
  navEnd: number;
  frames: number;
  /** the signal slice the results cover */
  sig: { origin: [number, number]; shape: [number, number] };
  /** one entry per UDF of the acquisition, in run order: buffer name -> array */
  udfs: Array<{ id: string; paramsVersion: number; buffers: Record<string, WireArray> }>;
  /** per scan position of [navStart, navEnd): missing-block bitmap of this sector's frame (0 = complete) */
  damage: Uint32Array;
  sentAt: number;
}

// ---------------------------------------------------------------------------------------------
// encoding

// no structured-clone records: plain maps any msgpack reader understands
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

export function toWire(array: TypedArray): WireArray {
  return { dtype: dtypeOf(array), data: new Uint8Array(array.buffer, array.byteOffset, array.byteLength) };
}

/** Copy the bytes into a fresh, aligned typed array of the dtype. */
export function fromWire(w: WireArray, what: string): TypedArray {
  const size = itemSize(w.dtype);
  if (w.data.byteLength % size !== 0) bad(what, `${w.data.byteLength} bytes is not a whole number of ${w.dtype}`);
  const out = allocate(w.dtype, w.data.byteLength / size);
  new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(w.data);
  return out;
}

export function encodeLive(message: ReceiverToMerger | MergerToReceiver | PartialMessage): Buffer {
  return packr.pack(message);
}

function detectorEnded(v: unknown): DetectorEnded {
  const d: Obj = { ...obj(v, 'heartbeat.detectorEnded'), type: 'heartbeat.detectorEnded' };
  return { reason: str(d, 'reason', 64), atFrame: int(d, 'atFrame'), round: intOrNull(d, 'round'), resume: d.resume === undefined || d.resume === null ? 0 : int(d, 'resume') };
}
function runState(v: unknown): LiveRunState {
  if (!(LIVE_RUN_STATES as readonly unknown[]).includes(v)) bad('heartbeat', `unknown runState ${shown(v)}`);
  return v as LiveRunState;
}
function resumeInfo(v: unknown): ResumeInfo {
  const r: Obj = { ...obj(v, 'acquire.resume'), type: 'acquire.resume' };
  return { n: int(r, 'n', 1), epoch: int(r, 'epoch'), afterRound: intOrNull(r, 'afterRound') };
}
function intOrNull(m: Obj, key: string): number | null {
  return m[key] === null || m[key] === undefined ? null : int(m, key);
}
function wire(v: unknown, what: string): WireArray {
  const w = obj(v, what);
  if (!isDType(w.dtype)) bad(what, `unknown dtype ${shown(w.dtype)}`);
  if (!(w.data instanceof Uint8Array)) bad(what, 'data is not binary');
  return { dtype: w.dtype, data: w.data };
}
function pair(m: Obj, key: string, min: number): [number, number] {
  const v = m[key];
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => Number.isInteger(x) && x >= min && x <= 1 << 20)) bad(shown(m.type), `${key} is not a pair of integers`);
  return [v[0] as number, v[1] as number];
}
function params(m: Obj, key: string): Record<string, unknown> {
  return obj(m[key] ?? {}, `${shown(m.type)}.${key}`);
}

function envelope(raw: Uint8Array): Obj {
  return checkEnvelope(raw, unpackr, 'live', LIVE_PROTOCOL_VERSION);
}

const SECTOR_MAX = 63;

/** Decode and validate a message a receiver sent on the control channel. */
export function decodeReceiverMessage(raw: Uint8Array): ReceiverToMerger {
  const m = envelope(raw);
  const version = LIVE_PROTOCOL_VERSION;
  switch (m.type) {
    case 'heartbeat': {
      if (m.role !== 'receiver') bad('heartbeat', `unknown role ${shown(m.role)}`);
      const counters = obj(m.counters, 'heartbeat.counters');
      const clean: Record<string, number> = {};
      for (const [k, v] of Object.entries(counters).slice(0, 256)) if (typeof v === 'number' && Number.isFinite(v)) clean[k] = v;
      return {
        version,
        type: 'heartbeat',
        role: 'receiver',
        sector: int(m, 'sector', 0, SECTOR_MAX),
        pid: int(m, 'pid'),
        phase: str(m, 'phase', 64),
        acquisition: m.acquisition === null || m.acquisition === undefined ? null : str(m, 'acquisition'),
        lastIndex: intOrNull(m, 'lastIndex'),
        shutterRound: intOrNull(m, 'shutterRound'),
        positions: intOrNull(m, 'positions'),
        detectorEnded: m.detectorEnded === null || m.detectorEnded === undefined ? null : detectorEnded(m.detectorEnded),
        runState: m.runState === null || m.runState === undefined ? null : runState(m.runState),
        counters: clean,
        sentAt: int(m, 'sentAt'),
      };
    }
    case 'ready':
      return { version, type: 'ready', acquisition: str(m, 'acquisition'), sector: int(m, 'sector', 0, SECTOR_MAX) };
    case 'failure':
      return { version, type: 'failure', acquisition: str(m, 'acquisition'), sector: int(m, 'sector', 0, SECTOR_MAX), code: str(m, 'code'), message: str(m, 'message', 4096) };
    default:
      bad('live', `unknown receiver message type ${shown(m.type)}`);
  }
}

/** Decode and validate a message the merger sent on the control channel. */
export function decodeMergerMessage(raw: Uint8Array): MergerToReceiver {
  const m = envelope(raw);
  const version = LIVE_PROTOCOL_VERSION;
  switch (m.type) {
    case 'acquire': {
      const scanShape = pair(m, 'scanShape', 1);
      const roi = m.roi === null || m.roi === undefined ? null : bytes(m, 'roi');
      if (roi !== null && roi.length !== scanShape[0] * scanShape[1]) bad('acquire', `roi has ${roi.length} entries for a ${scanShape[0]} x ${scanShape[1]} scan`);
      if (!Array.isArray(m.udfs) || m.udfs.length > 64) bad('acquire', 'udfs is not a list');
      const udfs = m.udfs.map((u, i) => {
        const o = obj(u, `acquire.udfs[${i}]`);
        return { id: str(o, 'id'), name: str(o, 'name'), params: params(o, 'params') };
      });
      if (m.mode !== 'single' && m.mode !== 'continuous') bad('acquire', `mode ${shown(m.mode)}`);
      let start: AcquireMessage['start'] = null;
      if (m.start !== null && m.start !== undefined) {
        const s = obj(m.start, 'acquire.start');
        start = { shutterRound: int(s, 'shutterRound'), startIndex: int(s, 'startIndex', -Number.MAX_SAFE_INTEGER) };
      }
      const resume = m.resume === null || m.resume === undefined ? null : resumeInfo(m.resume);
      if (resume !== null && m.mode !== 'continuous') bad('acquire', 'resume of a single scan');
      // (the mapping of a resumed leg that may come back; absent from older mergers)
      let rejoin: AcquireMessage['rejoin'] = null;
      if (m.rejoin !== null && m.rejoin !== undefined) {
        if (resume === null) bad('acquire', 'rejoin without resume');
        const j: Obj = { ...obj(m.rejoin, 'acquire.rejoin'), type: 'acquire.rejoin' };
        rejoin = { shutterRound: int(j, 'shutterRound'), startIndex: int(j, 'startIndex', -Number.MAX_SAFE_INTEGER) };
      }
      return { version, type: 'acquire', acquisition: str(m, 'acquisition'), scanShape, roi, udfs, chunkSize: int(m, 'chunkSize', 1), mode: m.mode, start, resume, ...(rejoin ? { rejoin } : {}) };
    }
    case 'params':
      return { version, type: 'params', acquisition: str(m, 'acquisition'), udfId: str(m, 'udfId'), params: params(m, 'params'), fromFrame: int(m, 'fromFrame') };
    case 'stop':
      return { version, type: 'stop', acquisition: str(m, 'acquisition'), atFrame: intOrNull(m, 'atFrame') };
    case 'abort':
      return { version, type: 'abort', acquisition: str(m, 'acquisition') };
    default:
      bad('live', `unknown merger message type ${shown(m.type)}`);
  }
}

/** Decode and validate a partial result (shapes are checked against the acquisition by the merger). */
export function decodePartialMessage(raw: Uint8Array): PartialMessage {
  const m = envelope(raw);
  if (m.type !== 'partial') bad('live', `expected a partial result, got ${shown(m.type)}`);
  const navStart = int(m, 'navStart');
  const navEnd = int(m, 'navEnd');
  if (navEnd <= navStart) bad('partial', `empty frame range [${navStart}, ${navEnd})`);
  const sigObj = obj(m.sig, 'partial.sig');
  const sig = { origin: pair(sigObj, 'origin', 0), shape: pair(sigObj, 'shape', 1) };
  if (!Array.isArray(m.udfs) || m.udfs.length > 64) bad('partial', 'udfs is not a list');
  const udfs = m.udfs.map((u, i) => {
    const o = obj(u, `partial.udfs[${i}]`);
    const b = obj(o.buffers, `partial.udfs[${i}].buffers`);
    const buffers: Record<string, WireArray> = {};
    for (const [name, w] of Object.entries(b)) buffers[name] = wire(w, `partial.udfs[${i}].${name}`);
    return { id: str(o, 'id'), paramsVersion: int(o, 'paramsVersion'), buffers };
  });
  const damageBytes = bytes(m, 'damage');
  if (damageBytes.byteLength !== (navEnd - navStart) * 4) bad('partial', `damage has ${damageBytes.byteLength} bytes for ${navEnd - navStart} frames`);
  const damage = fromWire({ dtype: 'uint32', data: damageBytes }, 'partial.damage') as Uint32Array;
  return {
    version: LIVE_PROTOCOL_VERSION,
    type: 'partial',
    acquisition: str(m, 'acquisition'),
    sector: int(m, 'sector', 0, SECTOR_MAX),
    epoch: int(m, 'epoch'),
    chunk: int(m, 'chunk'),
    navStart,
    navEnd,
    frames: int(m, 'frames', 0, navEnd - navStart),
    sig,
    udfs,
    damage,
    sentAt: int(m, 'sentAt'),
  };
}

/** The buffers of a decoded partial as typed arrays (fresh, aligned copies). */
export function partialArrays(p: PartialMessage): Array<Record<string, TypedArray>> {
  return p.udfs.map((u) => Object.fromEntries(Object.entries(u.buffers).map(([name, w]) => [name, fromWire(w, `partial ${u.id}.${name}`)])));
}
