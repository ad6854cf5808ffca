/**
 * The merger -> browser protocol: msgpack messages over one WebSocket (docs/protocol.md).
 *
 * Shared by the server (src/merger/ws-stream.ts) and the client (src/client/tessera-client.ts),
 * so it imports nothing from Node: the browser UI uses it as it is.
 *
 * Typed arrays travel as plain msgpack `bin` (msgpackr without `moreTypes` writes any typed
 * array as its raw bytes, little-endian as in memory). The element type is not in the bytes:
 * every buffer is declared once in a `layout` entry with its `dtype` and `shape`, and the
 * client copies the bytes into a typed array of that dtype. That keeps the encoding readable
 * by any msgpack library (numpy.frombuffer(data, dtype) in Python) and lets the client copy
 * straight into its mirror without an alignment-fixing copy.
 */
import { Packr, Unpackr } from 'msgpackr';

/** Bumped on any incompatible change of the messages below. */
export const WS_PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------------------------
// dtypes and typed arrays: numpy's names, as in src/udf/dtype.ts (whose result dtypes are a
// subset), plus the 64-bit integers and complex types that results of other origins may carry

export const DTYPES = [
  'bool',
  'int8',
  'uint8',
  'int16',
  'uint16',
  'int32',
  'uint32',
  'int64',
  'uint64',
  'float32',
  'float64',
  'complex64',
  'complex128',
] as const;
export type DType = (typeof DTYPES)[number];

export type TypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | Float32Array
  | Float64Array;

type TypedArrayCtor = { new (length: number): TypedArray; new (buffer: ArrayBufferLike, byteOffset: number, length: number): TypedArray; BYTES_PER_ELEMENT: number };

interface DtypeInfo {
  ctor: TypedArrayCtor;
  /** typed-array scalars per element: 2 for complex (interleaved re, im), else 1 */
  scalars: number;
  /** bytes per element */
  bytes: number;
}

const DTYPE_INFO: Record<DType, DtypeInfo> = {
  bool: { ctor: Uint8Array, scalars: 1, bytes: 1 },
  int8: { ctor: Int8Array, scalars: 1, bytes: 1 },
  uint8: { ctor: Uint8Array, scalars: 1, bytes: 1 },
  int16: { ctor: Int16Array, scalars: 1, bytes: 2 },
  uint16: { ctor: Uint16Array, scalars: 1, bytes: 2 },
  int32: { ctor: Int32Array, scalars: 1, bytes: 4 },
  uint32: { ctor: Uint32Array, scalars: 1, bytes: 4 },
  int64: { ctor: BigInt64Array, scalars: 1, bytes: 8 },
  uint64: { ctor: BigUint64Array, scalars: 1, bytes: 8 },
  float32: { ctor: Float32Array, scalars: 1, bytes: 4 },
  float64: { ctor: Float64Array, scalars: 1, bytes: 8 },
  complex64: { ctor: Float32Array, scalars: 2, bytes: 8 },
  complex128: { ctor: Float64Array, scalars: 2, bytes: 16 },
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPE_INFO, value);
}

/** Bytes of one element of `dtype` (a complex element is its real and imaginary part). */
export function dtypeBytes(dtype: DType): number {
  return DTYPE_INFO[dtype].bytes;
}

/** Typed-array scalars per element of `dtype` (2 for complex, else 1). */
export function dtypeScalars(dtype: DType): number {
  return DTYPE_INFO[dtype].scalars;
}

/** A zeroed typed array holding `elements` elements of `dtype`. */
export function allocateTyped(dtype: DType, elements: number): TypedArray {
  const info = DTYPE_INFO[dtype];
  return new info.ctor(elements * info.scalars);
}

/** True if `array` is the typed-array class that holds `dtype`. */
export function matchesDtype(array: TypedArray, dtype: DType): boolean {
  return array.constructor === DTYPE_INFO[dtype].ctor;
}

/** The bytes of a typed array, without copying. */
export function bytesOf(array: TypedArray): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/** Elements of `dtype` held by a typed array (scalars / 2 for complex). */
export function elementsOf(array: TypedArray, dtype: DType): number {
  return array.length / DTYPE_INFO[dtype].scalars;
}

/** A typed array of `dtype` over (a copy of) received bytes. */
export function typedFromBytes(dtype: DType, bytes: Uint8Array): TypedArray {
  const info = DTYPE_INFO[dtype];
  const scalarBytes = info.bytes / info.scalars;
  if (bytes.byteLength % info.bytes !== 0) {
    throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  // the bytes usually sit at an arbitrary offset inside the received message: copy to align
  const aligned = bytes.byteOffset % scalarBytes === 0 ? bytes : bytes.slice();
  return new info.ctor(aligned.buffer, aligned.byteOffset, aligned.byteLength / scalarBytes);
}

export function productOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// shared value types

export type BufferKind = 'nav' | 'sig' | 'single';

export type AcquisitionState = 'defined' | 'running' | 'stopping' | 'done' | 'aborted' | 'failed';

/** A result buffer as the client must allocate it. */
export interface BufferDeclaration {
  /** `${udf}/${name}`: the buffer's name in `buffers` entries and subscription filters */
  key: string;
  udf: string;
  name: string;
  kind: BufferKind;
  dtype: DType;
  /** full logical shape; nav buffers: [...scanShape, ...extraShape] */
  shape: number[];
  /** store version at which the buffer was (re)declared: a different value means "reallocate" */
  definedAt: number;
}

/**
 * Changed elements of one buffer: `data` holds elements [start, end) of the flattened (row-major)
 * buffer, (end - start) * dtypeBytes(dtype) bytes. Elements outside every range are unchanged.
 */
export interface BufferRange {
  start: number;
  end: number;
  data: Uint8Array;
}

export interface BufferUpdate {
  key: string;
  ranges: BufferRange[];
}

export interface StateInfo {
  state: AcquisitionState;
  /** why, for aborted/failed */
  message: string | null;
  /** ms since the epoch at which the state was entered */
  since: number;
}

export interface Progress {
  framesMerged: number;
  framesTotal: number | null;
  framesPerSecond: number;
  etaSeconds: number | null;
}

export type SectorState = 'unknown' | 'alive' | 'missing';

export interface SectorStatus {
  sector: number;
  state: SectorState;
  datagrams: number;
  datagramsPerSecond: number;
  /** blocks never received */
  lost: number;
  duplicates: number;
  late: number;
  corrupt: number;
  /** frames with at least one missing block */
  damagedFrames: number;
}

/** Descriptive data about the acquisition (scan shape, UDFs and their parameters, mode, …). */
export type AcquisitionInfo = { scanShape: number[] } & Record<string, unknown>;

/** Reserved UDF id of the damage map's buffers (user UDF ids cannot start with `_`). */
export const DAMAGE_UDF = '_damage';
/** per scan position: sectors that arrived complete (uint8, 0..sectors) */
export const DAMAGE_SECTORS = 'sectorsComplete';
/** per scan position: blocks missing over all sectors (uint16) */
export const DAMAGE_BLOCKS = 'blocksMissing';

// ---------------------------------------------------------------------------------------------
// server -> client

export interface HelloMessage {
  v: number;
  type: 'hello';
  protocol: number;
  server: string;
  /** updates per second the server sends at most to one client */
  maxRate: number;
  /** largest client message the server accepts, bytes */
  maxPayload: number;
}

/** What changed in one (acquisition, epoch) since version `from` (0: everything). */
export interface UpdateBody {
  acquisition: string;
  epoch: number;
  from: number;
  version: number;
  /** all buffers the subscription covers; present in snapshots and whenever it changed */
  layout?: BufferDeclaration[];
  buffers: BufferUpdate[];
  info?: AcquisitionInfo;
  state?: StateInfo;
  progress?: Progress;
  sectors?: SectorStatus[];
}

export interface UpdateMessage extends UpdateBody {
  v: number;
  /** snapshot: start a new mirror (first update, new acquisition or epoch, re-subscription) */
  type: 'snapshot' | 'diff';
  /** server clock when the message was built, ms since the epoch */
  t: number;
}

export interface ErrorMessage {
  v: number;
  type: 'error';
  code: string;
  message: string;
}

export interface PongMessage {
  v: number;
  type: 'pong';
  id: number;
  t: number;
}

export type ServerMessage = HelloMessage | UpdateMessage | ErrorMessage | PongMessage;

// ---------------------------------------------------------------------------------------------
// client -> server

export interface SubscribeMessage {
  v: number;
  type: 'subscribe';
  /** an acquisition id, or 'current' to follow whatever acquisition the merger runs */
  acquisition: string;
  /** 'latest' (default) follows new epochs of a continuous scan */
  epoch?: 'latest' | number;
  /** buffer keys (`udf/name`) or UDF ids to receive; default all (the damage map is `_damage`) */
  buffers?: string[];
  /** updates per second wanted, at most the server's maxRate */
  maxRate?: number;
}

export interface UnsubscribeMessage {
  v: number;
  type: 'unsubscribe';
}

export interface PingMessage {
  v: number;
  type: 'ping';
  id: number;
}

export type ClientMessage = SubscribeMessage | UnsubscribeMessage | PingMessage;

/** JSON schemas of the client messages (compiled by the server with ajv). */
export const CLIENT_MESSAGE_SCHEMAS = {
  subscribe: {
    type: 'object',
    additionalProperties: false,
    required: ['v', 'type', 'acquisition'],
    properties: {
      v: { type: 'integer' },
      type: { const: 'subscribe' },
      acquisition: { type: 'string', minLength: 1, maxLength: 200 },
      epoch: { anyOf: [{ const: 'latest' }, { type: 'integer', minimum: 0 }] },
      buffers: { type: 'array', maxItems: 1000, items: { type: 'string', minLength: 1, maxLength: 400 } },
      maxRate: { type: 'number', exclusiveMinimum: 0 },
    },
  },
  unsubscribe: {
    type: 'object',
    additionalProperties: false,
    required: ['v', 'type'],
    properties: { v: { type: 'integer' }, type: { const: 'unsubscribe' } },
  },
  ping: {
    type: 'object',
    additionalProperties: false,
    required: ['v', 'type', 'id'],
    properties: { v: { type: 'integer' }, type: { const: 'ping' }, id: { type: 'number' } },
  },
} as const;

// ---------------------------------------------------------------------------------------------
// encoding

// Plain msgpack maps (no msgpackr records), typed arrays as bin: any msgpack decoder reads it.
const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/** Room for everything but the binary parts of a large message (keys, layout, status). */
export const HEADER_SLACK = 64 * 1024;
const SMALL_BUFFER = 8192;
// msgpackr writes strings with Buffer#utf8Write when Node's Buffer exists: give it Buffers there
const NodeBuffer = (globalThis as { Buffer?: { allocUnsafeSlow(n: number): Uint8Array } }).Buffer;

/** An output buffer for `encodeMessage` (a Buffer in Node, a Uint8Array elsewhere). */
export function allocMessageBuffer(bytes: number): Uint8Array {
  return NodeBuffer ? NodeBuffer.allocUnsafeSlow(bytes) : new Uint8Array(bytes);
}

/** Bytes an output buffer needs for a message whose binary parts weigh `payloadBytes`. */
export const messageBufferBytes = (payloadBytes: number): number => payloadBytes + HEADER_SLACK;

/**
 * Encode a message. A large one (`payloadBytes`: its binary parts) goes into an output buffer
 * of its own: `target` if given and big enough (from `allocMessageBuffer`, and no longer in use:
 * the sender reuses one per client), else a new one sized to fit. While it waits in a slow
 * socket it then holds its own memory only, not a shared encoder buffer several times its
 * size. The shared encoder never writes over bytes it returned, so small messages stay valid
 * while a socket holds them.
 */
export function encodeMessage(message: ServerMessage | ClientMessage, payloadBytes = 0, target?: Uint8Array): Uint8Array {
  if (payloadBytes < SMALL_BUFFER) return packr.pack(message);
  const need = messageBufferBytes(payloadBytes);
  packr.useBuffer(target && target.byteLength >= need ? target : allocMessageBuffer(need));
  const out = packr.pack(message);
  // small messages continue in a fresh small buffer, not in the rest of this one
  packr.useBuffer(allocMessageBuffer(SMALL_BUFFER));
  return out;
}

/** Decode one message; throws on bytes that are not one msgpack value. */
export function decodeMessage(bytes: Uint8Array): unknown {
  return unpackr.unpack(bytes);
}

/** Bytes of all ranges of an update (for `encodeMessage`'s size hint). */
export function updatePayloadBytes(body: UpdateBody): number {
  let n = 0;
  for (const b of body.buffers) for (const r of b.ranges) n += r.data.byteLength;
  return n;
}
