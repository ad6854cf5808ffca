/**
 * What an acquisition is, as the HTTP API takes it and hands it to the merger core: the JSON
 * schemas of the control API's bodies and replies, and the normalisation of a request
 * (defaults, UDF ids, the ROI as one flat mask) that the schemas cannot express.
 */
import { TesseraError } from '../errors.js';
import type { AcquisitionState, Progress, SectorStatus } from '../protocol/ws-messages.js';

export type AcquisitionMode = 'single' | 'continuous';

export interface UdfRequest {
  /** unique within the acquisition; default derived from the name */
  id?: string;
  name: string;
  params?: Record<string, unknown>;
}

export interface RoiRect {
  y: number;
  x: number;
  height: number;
  width: number;
}

/** A flat row-major mask over the scan (length h * w), or rectangles whose union is the ROI. */
export type RoiRequest = { mask: Array<boolean | 0 | 1> } | { rects: RoiRect[] };

export interface AcquisitionRequest {
  scanShape: [number, number];
  udfs: UdfRequest[];
  roi?: RoiRequest | null;
  mode?: AcquisitionMode;
  record?: boolean;
  recordPath?: string;
  /** frames per partial result; default one scan row */
  chunkSize?: number;
}

export interface UdfInstance {
  id: string;
  name: string;
  params: Record<string, unknown>;
}

/** A validated, normalised acquisition request: what the controller gets. */
export interface AcquisitionDefinition {
  scanShape: [number, number];
  udfs: UdfInstance[];
  /** flat row-major mask over the scan (1 = selected), null for all positions */
  roi: Uint8Array | null;
  mode: AcquisitionMode;
  record: { enabled: boolean; path: string | null };
  chunkSize: number;
}

/** An acquisition as the API reports it. */
export interface AcquisitionSummary {
  id: string;
  state: AcquisitionState;
  /** why, for aborted/failed */
  message: string | null;
  epoch: number;
  scanShape: [number, number];
  mode: AcquisitionMode;
  chunkSize: number;
  /** the recording's status (src/merger/recorder.ts RecordingStatus: state, error, lagMs, bytes, …) */
  record: { enabled: boolean; path: string | null } & Partial<RecordingSummary>;
  /** epochs the WebSocket stream still offers (subscribe with epoch: k), oldest first */
  epochs?: number[];
  udfs: UdfInstance[];
  /** selected scan positions, or null without ROI */
  roi: { selected: number } | null;
  progress: Progress;
  /**
   * how far the merged results lag behind the receivers while running: the newest merged
   * chunk's latency (its partials sent to it merged), ms; null when no chunk was merged in the
   * last MERGE_LAG_FRESH_MS (nothing streaming) or the acquisition is not running
   */
  mergeLagMs?: number | null;
}

export interface RecordingSummary {
  state: 'off' | 'recording' | 'closing' | 'closed' | 'failed';
  error: { code: string; message: string } | null;
  lagMs: number;
  batches: number;
  bytes: number;
  lastWriteMs: number | null;
  lastPublishMs: number | null;
  skippedEpochs: number;
  startedAt: string | null;
  endedAt: string | null;
}

/** Body of POST /api/acquisitions/:id/record */
export const recordBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['enabled'],
  properties: { enabled: { type: 'boolean' } },
} as const;

/** POST /acquisitions/:id/selection: which frames the shuffle gathers for whole-frame UDFs */
export const selectionBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['select'],
  // `all`, `every:N`, `list:P1,P2,…` (clicked scan positions), `rect:Y,X,H,W`
  properties: { select: { type: 'string', minLength: 3, maxLength: 1_000_000 } },
} as const;

const recordingSummarySchema = {
  type: 'object',
  properties: {
    enabled: { type: 'boolean' },
    path: { type: ['string', 'null'] },
    state: { type: 'string' },
    error: { anyOf: [{ type: 'null' }, { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } }] },
    lagMs: { type: 'number' },
    batches: { type: 'integer' },
    bytes: { type: 'number' },
    lastWriteMs: { type: ['number', 'null'] },
    lastPublishMs: { type: ['number', 'null'] },
    skippedEpochs: { type: 'integer' },
    startedAt: { type: ['string', 'null'] },
    endedAt: { type: ['string', 'null'] },
  },
} as const;

export interface MergerStatus {
  /** the current acquisition, or null */
  acquisition: AcquisitionSummary | null;
  sectors: SectorStatus[];
  /** the shuffle service of the whole-frame UDFs, as the merger hears it (absent without a shuffle link) */
  shuffle?: ShuffleState | null;
}

/** The shuffle service seen from the merger (src/shuffle/shuffle-link.ts). */
export interface ShuffleState {
  /** `absent`: never answered; `up`: its status came within LIVENESS_MS; `missing`: silent since (killed, host down) */
  state: 'absent' | 'up' | 'missing';
  /** frame workers it serves (0 while missing) */
  workers: number;
  pid: number | null;
  /** times another shuffle process answered (restarted) */
  restarts: number;
  /** ms since its last status */
  silentMs: number | null;
  /** frames it skipped (no worker free, e.g. none left), as its last status said */
  framesSkipped: number;
  /** frames workers had taken and never answered when their connection went (killed, or its host stopped answering heartbeats), as its last status said (absent: not known) */
  framesLostInWorkers?: number;
}

export interface UdfDescription {
  name: string;
  description: string;
  /** JSON schema of the UDF's parameters */
  params: Record<string, unknown>;
}

export interface UdfParamsChange {
  acquisition: string;
  udf: UdfInstance;
  /** the first frame processed with the new parameters */
  appliesFromFrame: number;
}

/** User UDF ids: `_` is reserved (the damage map is `_damage`), `/` separates buffer keys. */
export const UDF_ID_PATTERN = '^[A-Za-z][A-Za-z0-9_.-]{0,63}$';
const ACQUISITION_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$';

// ---------------------------------------------------------------------------------------------
// JSON schemas (fastify validates bodies and params with them, and serialises replies)

const dim = { type: 'integer', minimum: 1, maximum: 65536 } as const;
const params = { type: 'object', additionalProperties: true } as const;
const nullableNumber = { type: ['number', 'null'] } as const;

const udfInstance = {
  type: 'object',
  required: ['id', 'name', 'params'],
  properties: { id: { type: 'string' }, name: { type: 'string' }, params },
} as const;

export const acquisitionRequestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['scanShape', 'udfs'],
  properties: {
    scanShape: { type: 'array', items: dim, minItems: 2, maxItems: 2 },
    udfs: {
      type: 'array',
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          id: { type: 'string', pattern: UDF_ID_PATTERN },
          name: { type: 'string', minLength: 1, maxLength: 200 },
          params,
        },
      },
    },
    roi: {
      anyOf: [
        { type: 'null' },
        {
          type: 'object',
          additionalProperties: false,
          required: ['mask'],
          properties: { mask: { type: 'array', items: { enum: [true, false, 0, 1] } } },
        },
        {
          type: 'object',
          additionalProperties: false,
          required: ['rects'],
          properties: {
            rects: {
              type: 'array',
              minItems: 1,
              maxItems: 10_000,
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['y', 'x', 'height', 'width'],
                properties: {
                  y: { type: 'integer', minimum: 0 },
                  x: { type: 'integer', minimum: 0 },
                  height: { type: 'integer', minimum: 1 },
                  width: { type: 'integer', minimum: 1 },
                },
              },
            },
          },
        },
      ],
    },
    mode: { enum: ['single', 'continuous'] },
    record: { type: 'boolean' },
    recordPath: { type: 'string', minLength: 1, maxLength: 4096 },
    chunkSize: { type: 'integer', minimum: 1 },
  },
} as const;

export const acquisitionIdParamsSchema = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', pattern: ACQUISITION_ID_PATTERN } },
} as const;

/** GET /api/acquisitions/:id/frames/:position (a picked frame from the shuffle) */
export const framePathSchema = {
  type: 'object',
  required: ['id', 'position'],
  properties: { id: acquisitionIdParamsSchema.properties.id, position: { type: 'string', pattern: '^[0-9]{1,9}$' } },
} as const;

export const frameQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { timeoutMs: { type: 'string', pattern: '^[0-9]{1,6}$' } },
} as const;

export const udfParamsPathSchema = {
  type: 'object',
  required: ['id', 'udfId'],
  properties: { id: acquisitionIdParamsSchema.properties.id, udfId: { type: 'string', pattern: UDF_ID_PATTERN } },
} as const;

export const udfParamsBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['params'],
  properties: { params },
} as const;

const progressSchema = {
  type: 'object',
  properties: {
    framesMerged: { type: 'number' },
    framesTotal: nullableNumber,
    framesPerSecond: { type: 'number' },
    etaSeconds: nullableNumber,
  },
} as const;

const sectorSchema = {
  type: 'object',
  properties: {
    sector: { type: 'integer' },
    state: { type: 'string' },
    datagrams: { type: 'number' },
    datagramsPerSecond: { type: 'number' },
    lost: { type: 'number' },
    duplicates: { type: 'number' },
    late: { type: 'number' },
    corrupt: { type: 'number' },
    damagedFrames: { type: 'number' },
  },
} as const;

export const acquisitionSummarySchema = {
  type: 'object',
  required: ['id', 'state', 'scanShape', 'udfs'],
  properties: {
    id: { type: 'string' },
    state: { type: 'string' },
    message: { type: ['string', 'null'] },
    epoch: { type: 'integer' },
    scanShape: { type: 'array', items: { type: 'integer' } },
    mode: { type: 'string' },
    chunkSize: { type: 'integer' },
    record: recordingSummarySchema,
    epochs: { type: 'array', items: { type: 'integer' } },
    udfs: { type: 'array', items: udfInstance },
    roi: { anyOf: [{ type: 'null' }, { type: 'object', properties: { selected: { type: 'integer' } } }] },
    progress: progressSchema,
    mergeLagMs: { type: ['number', 'null'] },
  },
} as const;

export const mergerStatusSchema = {
  type: 'object',
  properties: {
    acquisition: { anyOf: [{ type: 'null' }, acquisitionSummarySchema] },
    sectors: { type: 'array', items: sectorSchema },
    shuffle: {
      anyOf: [
        { type: 'null' },
        {
          type: 'object',
          properties: { state: { type: 'string' }, workers: { type: 'integer' }, pid: { type: ['integer', 'null'] }, restarts: { type: 'integer' }, silentMs: { type: ['number', 'null'] }, framesSkipped: { type: 'integer' }, framesLostInWorkers: { type: 'integer' } },
        },
      ],
    },
  },
} as const;

export const udfListSchema = {
  type: 'object',
  properties: {
    udfs: {
      type: 'array',
      items: { type: 'object', properties: { name: { type: 'string' }, description: { type: 'string' }, params } },
    },
  },
} as const;

export const udfParamsChangeSchema = {
  type: 'object',
  properties: { acquisition: { type: 'string' }, udf: udfInstance, appliesFromFrame: { type: 'integer' } },
} as const;

export const errorReplySchema = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, statusCode: { type: 'integer' } },
} as const;

// ---------------------------------------------------------------------------------------------
// normalisation

function defaultUdfId(name: string): string {
  const id = name.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z]+/, '');
  return (id || 'udf').slice(0, 56);
}

/** Give every UDF a unique id (explicit ids win; defaults are the name, then name-2, name-3, …). */
function assignUdfIds(udfs: UdfRequest[]): UdfInstance[] {
  const taken = new Set<string>();
  for (const u of udfs) {
    if (u.id === undefined) continue;
    if (taken.has(u.id)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'udfs', `duplicate UDF id "${u.id}"`);
    taken.add(u.id);
  }
  return udfs.map((u) => {
    let id = u.id;
    if (id === undefined) {
      const base = defaultUdfId(u.name);
      id = base;
      for (let n = 2; taken.has(id); n++) id = `${base}-${n}`;
      taken.add(id);
    }
    return { id, name: u.name, params: { ...u.params } };
  });
}

function roiMask(roi: RoiRequest, [h, w]: [number, number]): Uint8Array {
  const mask = new Uint8Array(h * w);
  if ('mask' in roi) {
    if (roi.mask.length !== h * w) {
      throw new TesseraError('TESSERA_ERR_ROI', `mask has ${roi.mask.length} entries, the scan ${h} x ${w} = ${h * w}`);
    }
    roi.mask.forEach((v, i) => (mask[i] = v ? 1 : 0));
  } else {
    for (const r of roi.rects) {
      if (r.y + r.height > h || r.x + r.width > w) {
        throw new TesseraError('TESSERA_ERR_ROI', `rectangle ${JSON.stringify(r)} extends beyond the scan ${h} x ${w}`);
      }
      for (let y = r.y; y < r.y + r.height; y++) mask.fill(1, y * w + r.x, y * w + r.x + r.width);
    }
  }
  if (!mask.includes(1)) throw new TesseraError('TESSERA_ERR_ROI', 'selects no scan position');
  return mask;
}

/** Defaults and cross-field checks for a request that passed `acquisitionRequestSchema`. */
/** Largest scan (positions) an acquisition may have: 4096 x 4096; a float64 nav map is then 128 MiB. */
export const MAX_SCAN_POSITIONS = 1 << 24;

export function normalizeAcquisitionRequest(request: AcquisitionRequest): AcquisitionDefinition {
  const scanShape: [number, number] = [request.scanShape[0], request.scanShape[1]];
  const navSize = scanShape[0] * scanShape[1];
  // each nav buffer and ROI mask is allocated at define: an unbounded scan is a request to eat all memory
  if (navSize > MAX_SCAN_POSITIONS) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'scanShape', `${scanShape[0]} x ${scanShape[1]} is more than ${MAX_SCAN_POSITIONS} scan positions`);
  }
  const chunkSize = request.chunkSize ?? scanShape[1];
  if (chunkSize > navSize) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'chunkSize', `${chunkSize} is more than the ${navSize} scan positions`);
  }
  if (request.recordPath !== undefined && !request.record) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'recordPath', 'given without record: true');
  }
  return {
    scanShape,
    udfs: assignUdfIds(request.udfs),
    roi: request.roi ? roiMask(request.roi, scanShape) : null,
    mode: request.mode ?? 'single',
    record: { enabled: request.record ?? false, path: request.recordPath ?? null },
    chunkSize,
  };
}

/** The summary's view of a ROI mask. */
export function roiSummary(roi: Uint8Array | null): { selected: number } | null {
  if (!roi) return null;
  let selected = 0;
  for (const v of roi) selected += v;
  return { selected };
}
