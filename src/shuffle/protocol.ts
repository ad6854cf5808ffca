/**
 * The shuffle's messages (docs/protocol.md, "Shuffle and frame workers"). msgpack maps with
 * `version` and `type`, like src/protocol/live.ts; pixels travel as a second ZeroMQ frame
 * (no msgpack copy of 1 MB slices or 7.6 MB frames).
 *
 *   shuffle.slices  shuffle ROUTER binds.
 *     receivers' SliceSender DEALER (routing id `slices-<sector>`):
 *       -> `hello` (every HELLO_MS, carries the rule version it holds)
 *       -> [`slice` header, uint16 pixels]  rows [row0, row0 + rows) of one sector frame
 *       <- `selection` (the RuleBook: every change, and again to a receiver with an old version)
 *     the merger's ShuffleLink DEALER (routing id `merger`):
 *       -> `acquire` / `params` / `stop` / `abort` (src/protocol/live.ts, with the whole-frame UDFs),
 *          `select` (another base selection for the running acquisition),
 *          `pick` (the frame at one scan position, for the browser)
 *       <- `status` (every STATUS_MS: workers, counters, decimation)
 *       <- [`picked` header, uint16 1860 x 2048 pixels] (or `picked` with `error` alone)
 *   shuffle.frames  shuffle ROUTER binds; each `tessera worker` DEALER connects:
 *       -> `credit` {n, window}: n more frames wanted (the first one is the hello; n = 0 every
 *          second: alive); `window`, the frames it keeps asked for, is what a shuffle that does
 *          not know it yet (restarted) grants it
 *       <- `acquire` / `params` / `stop` / `abort` (forwarded), [`frame` header, uint16 1860 x 2048 pixels],
 *          `ping` (every second: a worker gone shows as a failed send at once)
 *   merger.results  workers PUSH [`frames`, msgpack `frames`]: results of the frames they processed.
 */
import { Packr, Unpackr } from 'msgpackr';
import { bad, bytes, envelope, int, obj, shown, str, type Obj } from '../protocol/fields.js';
import { isDType } from '../udf/dtype.js';
import { LIVE_PROTOCOL_VERSION, type WireArray } from '../protocol/live.js';
import { checkRule, type SelectionBase, type SelectionRule } from './selection.js';

export const SHUFFLE_PROTOCOL_VERSION = LIVE_PROTOCOL_VERSION;
export const HELLO_MS = 500;
export const STATUS_MS = 500;
/** the first frame of a worker's results message on merger.results (a partial has one frame) */
export const FRAMES_TAG = 'frames';

export interface HelloMessage {
  version: number;
  type: 'hello';
  sector: number;
  pid: number;
  ruleVersion: number;
}

export interface SliceHeader {
  version: number;
  type: 'slice';
  sector: number;
  /** election round of the detector acquisition (null: a local one) */
  round: number | null;
  index: number;
  /** the merger acquisition of the rule that selected it */
  acquisition: string;
  row0: number;
  rows: number;
  /** missing blocks of the whole sector frame (tile.ts) */
  damage: number;
}

export interface SelectionMessage {
  version: number;
  type: 'selection';
  ruleVersion: number;
  rules: SelectionRule[];
}

export interface ShuffleStatus {
  version: number;
  type: 'status';
  pid: number;
  acquisition: string | null;
  workers: number;
  /** frames all 8 sectors of which arrived, and those completed with zeros */
  framesComplete: number;
  framesIncomplete: number;
  framesDispatched: number;
  /** selected frames dropped for lack of a free worker (back-pressure) */
  framesSkipped: number;
  /** current decimation: about 1 of this many base-selected frames is selected */
  decimate: number;
  /** frames per second the receivers' slices arrive at (over the last second; the pick timeout derives from it) */
  frameRate?: number;
  /** frames workers had taken and not answered (no credit back) when their connection went: their results never come */
  framesLostInWorkers?: number;
  sentAt: number;
}

/** merger -> shuffle: a new base selection for the running acquisition (clicked frames, a ROI, every n-th), from a safe frame on */
export interface SelectMessage {
  version: number;
  type: 'select';
  acquisition: string;
  base: SelectionBase;
}

/** merger -> shuffle: the frame at scan `position`, for the link's request `request` (waits at most `timeoutMs`) */
export interface PickMessage {
  version: number;
  type: 'pick';
  acquisition: string;
  position: number;
  request: number;
  timeoutMs: number;
}

/** shuffle -> merger: [`picked`, uint16 1860 x 2048 pixels] or, with `error` (`passed`: the scan is past that position), alone */
export interface PickedMessage {
  version: number;
  type: 'picked';
  acquisition: string;
  request: number;
  position: number;
  epoch: number;
  index: number;
  damage: number[];
  error?: string;
}

export interface CreditMessage {
  version: number;
  type: 'credit';
  pid: number;
  n: number;
  /** frames the worker keeps asked for (its --credits): granted by a shuffle that does not know it yet, e.g. a restarted one */
  window?: number;
}

/** shuffle -> worker: nothing to do; a send to a worker whose connection is gone fails (EHOSTUNREACH) */
export interface PingMessage {
  version: number;
  type: 'ping';
  sentAt: number;
}

export interface FrameHeader {
  version: number;
  type: 'frame';
  acquisition: string;
  epoch: number;
  position: number;
  index: number;
  /** per sector: its missing blocks (0xffffffff: the sector never arrived, zero-filled) */
  damage: number[];
}

export interface FrameResultsMessage {
  version: number;
  type: 'frames';
  acquisition: string;
  worker: string;
  epoch: number;
  /** scan positions processed, ascending; nav buffers hold one row per entry in this order */
  positions: Int32Array;
  /** per position: sectors that arrived complete (0..8) */
  sectors: Uint8Array;
  udfs: Array<{ id: string; paramsVersion: number; buffers: Record<string, WireArray> }>;
  sentAt: number;
}

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false });

export function encodeShuffle(m: HelloMessage | SliceHeader | SelectionMessage | SelectMessage | PickMessage | PickedMessage | ShuffleStatus | CreditMessage | PingMessage | FrameHeader | FrameResultsMessage): Buffer {
  if (m.type === 'selection') {
    return packr.pack({ ...m, rules: m.rules.map((r) => ({ ...r, base: r.base.kind === 'mask' ? { kind: 'mask', mask: r.base.mask } : r.base })) });
  }
  if (m.type === 'frames') {
    const pos = m.positions;
    return packr.pack({ ...m, positions: new Uint8Array(pos.buffer, pos.byteOffset, pos.byteLength) });
  }
  return packr.pack(m);
}

/** Decode the msgpack envelope of any shuffle message (version and type checked). */
export function decodeShuffle(raw: Uint8Array): Obj {
  return envelope(raw, unpackr, 'shuffle', SHUFFLE_PROTOCOL_VERSION);
}

export function asHello(m: Obj): HelloMessage {
  return { version: SHUFFLE_PROTOCOL_VERSION, type: 'hello', sector: int(m, 'sector', 0, 63), pid: int(m, 'pid'), ruleVersion: int(m, 'ruleVersion') };
}

export function asSlice(m: Obj): SliceHeader {
  return {
    version: SHUFFLE_PROTOCOL_VERSION,
    type: 'slice',
    sector: int(m, 'sector', 0, 63),
    round: m.round === null || m.round === undefined ? null : int(m, 'round'),
    index: int(m, 'index'),
    acquisition: str(m, 'acquisition'),
    row0: int(m, 'row0', 0, 1 << 16),
    rows: int(m, 'rows', 1, 1 << 16),
    damage: int(m, 'damage', 0, 0xffffffff),
  };
}

function asBase(v: unknown): SelectionBase {
  const b = obj(v, 'selection.base');
  switch (b.kind) {
    case 'all':
    case 'none':
      return { kind: b.kind };
    case 'every':
      return { kind: 'every', n: int(b, 'n', 1) };
    case 'mask':
      return { kind: 'mask', mask: Uint8Array.from(bytes(b, 'mask')) };
    case 'list':
      if (!Array.isArray(b.positions) || b.positions.length > 1 << 20) bad('selection', 'positions is not a list');
      return { kind: 'list', positions: (b.positions as unknown[]).map((p) => (Number.isInteger(p) ? (p as number) : bad('selection', 'a position is not an integer'))) };
    default:
      return bad('selection', `base kind ${shown(b.kind)}`);
  }
}

export function asSelection(m: Obj): SelectionMessage {
  if (!Array.isArray(m.rules) || m.rules.length > 64) bad('selection', 'rules is not a list');
  const rules = (m.rules as unknown[]).map((v) => {
    const r = obj(v, 'selection.rule');
    const rule: SelectionRule = {
      acquisition: str(r, 'acquisition'),
      shutterRound: r.shutterRound === null || r.shutterRound === undefined ? null : int(r, 'shutterRound'),
      afterRound: r.afterRound === null || r.afterRound === undefined ? null : int(r, 'afterRound'),
      // negative after a resume
      startIndex: int(r, 'startIndex', -Number.MAX_SAFE_INTEGER),
      positions: int(r, 'positions', 1),
      fromIndex: int(r, 'fromIndex'),
      base: asBase(r.base),
      decimate: int(r, 'decimate', 1),
    };
    try {
      return checkRule(rule);
    } catch (err) {
      return bad('selection', (err as Error).message);
    }
  });
  return { version: SHUFFLE_PROTOCOL_VERSION, type: 'selection', ruleVersion: int(m, 'ruleVersion'), rules };
}

export function asSelect(m: Obj): SelectMessage {
  return { version: SHUFFLE_PROTOCOL_VERSION, type: 'select', acquisition: str(m, 'acquisition'), base: asBase(m.base) };
}

export function asPick(m: Obj): PickMessage {
  return { version: SHUFFLE_PROTOCOL_VERSION, type: 'pick', acquisition: str(m, 'acquisition'), position: int(m, 'position', 0, 1 << 30), request: int(m, 'request'), timeoutMs: int(m, 'timeoutMs', 0, 600_000) };
}

export function asPicked(m: Obj): PickedMessage {
  if (!Array.isArray(m.damage) || m.damage.length > 64 || !m.damage.every((d) => Number.isInteger(d) && d >= 0 && d <= 0xffffffff)) bad('picked', 'damage is not a list of bitmaps');
  const out: PickedMessage = { version: SHUFFLE_PROTOCOL_VERSION, type: 'picked', acquisition: str(m, 'acquisition'), request: int(m, 'request'), position: int(m, 'position'), epoch: int(m, 'epoch'), index: int(m, 'index'), damage: m.damage as number[] };
  if (m.error !== undefined) out.error = str(m, 'error');
  return out;
}

export function asCredit(m: Obj): CreditMessage {
  return { version: SHUFFLE_PROTOCOL_VERSION, type: 'credit', pid: int(m, 'pid'), n: int(m, 'n', 0, 1024), ...(m.window === undefined ? {} : { window: int(m, 'window', 1, 1024) }) };
}

export function asStatus(m: Obj): ShuffleStatus {
  return {
    version: SHUFFLE_PROTOCOL_VERSION,
    type: 'status',
    pid: int(m, 'pid'),
    acquisition: m.acquisition === null || m.acquisition === undefined ? null : str(m, 'acquisition'),
    workers: int(m, 'workers'),
    framesComplete: int(m, 'framesComplete'),
    framesIncomplete: int(m, 'framesIncomplete'),
    framesDispatched: int(m, 'framesDispatched'),
    framesSkipped: int(m, 'framesSkipped'),
    decimate: int(m, 'decimate', 1),
    ...(typeof m.frameRate === 'number' && Number.isFinite(m.frameRate) && m.frameRate >= 0 ? { frameRate: m.frameRate } : {}),
    ...(m.framesLostInWorkers === undefined ? {} : { framesLostInWorkers: int(m, 'framesLostInWorkers') }),
    sentAt: int(m, 'sentAt'),
  };
}

export function asFrameHeader(m: Obj): FrameHeader {
  if (!Array.isArray(m.damage) || m.damage.length > 64 || !m.damage.every((d) => Number.isInteger(d) && d >= 0 && d <= 0xffffffff)) bad('frame', 'damage is not a list of bitmaps');
  return {
    version: SHUFFLE_PROTOCOL_VERSION,
    type: 'frame',
    acquisition: str(m, 'acquisition'),
    epoch: int(m, 'epoch'),
    position: int(m, 'position'),
    index: int(m, 'index'),
    damage: m.damage as number[],
  };
}

export function asFrameResults(m: Obj): FrameResultsMessage {
  if (m.type !== 'frames') bad('frames', `type ${shown(m.type)}`);
  const posBytes = bytes(m, 'positions');
  if (posBytes.byteLength % 4 !== 0) bad('frames', 'positions is not int32');
  const positions = new Int32Array(posBytes.byteLength / 4);
  new Uint8Array(positions.buffer).set(posBytes);
  const sectors = Uint8Array.from(bytes(m, 'sectors'));
  if (sectors.length !== positions.length) bad('frames', `${sectors.length} sector counts for ${positions.length} positions`);
  for (let i = 1; i < positions.length; i++) if (!(positions[i]! > positions[i - 1]!)) bad('frames', 'positions are not ascending');
  if (positions.length > 0 && positions[0]! < 0) bad('frames', 'a negative position');
  if (!Array.isArray(m.udfs) || m.udfs.length > 64) bad('frames', 'udfs is not a list');
  const udfs = (m.udfs as unknown[]).map((u, i) => {
    const o = obj(u, `frames.udfs[${i}]`);
    const b = obj(o.buffers, `frames.udfs[${i}].buffers`);
    const buffers: Record<string, WireArray> = {};
    for (const [name, w] of Object.entries(b)) {
      const x = obj(w, name);
      if (!isDType(x.dtype) || !(x.data instanceof Uint8Array)) bad('frames', `buffer ${name} is not a typed array`);
      buffers[name] = { dtype: x.dtype, data: x.data };
    }
    return { id: str(o, 'id'), paramsVersion: int(o, 'paramsVersion'), buffers };
  });
  return { version: SHUFFLE_PROTOCOL_VERSION, type: 'frames', acquisition: str(m, 'acquisition'), worker: str(m, 'worker'), epoch: int(m, 'epoch'), positions, sectors, udfs, sentAt: int(m, 'sentAt') };
}
