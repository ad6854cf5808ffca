/**
 * The merger's HTTP control API (fastify plugin, register it with `{ prefix: '/api' }`).
 *
 * The routes validate and normalise requests and hand them to an `AcquisitionController`,
 * which the merger core implements (it owns acquisitions, UDFs and receivers). Every error
 * reply is `{ code, message, statusCode }` with a code from src/errors.ts.
 */
import { Ajv } from 'ajv';
import type { FastifyError, FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../errors.js';
import {
  acquisitionIdParamsSchema,
  acquisitionRequestSchema,
  acquisitionSummarySchema,
  errorReplySchema,
  framePathSchema,
  frameQuerySchema,
  mergerStatusSchema,
  normalizeAcquisitionRequest,
  recordBodySchema,
  selectionBodySchema,
  udfListSchema,
  udfParamsBodySchema,
  udfParamsChangeSchema,
  udfParamsPathSchema,
  type AcquisitionDefinition,
  type AcquisitionRequest,
  type AcquisitionSummary,
  type MergerStatus,
  type UdfDescription,
  type UdfParamsChange,
} from './acquisition-schema.js';
import type { PickedFrame } from '../shuffle/shuffle-link.js';

type Awaitable<T> = T | Promise<T>;

/** A picked frame as the HTTP API serves it: the shuffle's (src/shuffle/shuffle-link.ts). */
export type { PickedFrame };

/** longest wait a client may ask of GET …/frames/:position */
const MAX_PICK_TIMEOUT_MS = 120_000;

/**
 * What the HTTP API needs from the merger core. Methods throw TesseraErrors: NOT_FOUND for an
 * unknown acquisition or UDF id, ACQUISITION_STATE for a transition the state does not allow,
 * UNKNOWN_UDF / UDF_PARAMS for names and parameters the UDF engine rejects.
 */
export interface AcquisitionController {
  /** the UDFs an acquisition can run */
  listUdfs(): Awaitable<UdfDescription[]>;
  /** define an acquisition (state 'defined'); resolves UDF names and validates parameters */
  define(definition: AcquisitionDefinition): Awaitable<AcquisitionSummary>;
  get(id: string): Awaitable<AcquisitionSummary>;
  start(id: string): Awaitable<AcquisitionSummary>;
  /** finish after the frames in flight (state 'stopping', then 'done') */
  stop(id: string): Awaitable<AcquisitionSummary>;
  /** drop everything in flight at once (state 'aborted') */
  abort(id: string): Awaitable<AcquisitionSummary>;
  /** new parameters for one UDF, applied from the next chunk */
  updateUdfParams(id: string, udfId: string, params: Record<string, unknown>): Awaitable<UdfParamsChange>;
  status(): Awaitable<MergerStatus>;
  /** switch the recording of a defined or running acquisition on or off (optional: a controller without it answers 404) */
  setRecording?(id: string, enabled: boolean): Awaitable<AcquisitionSummary>;
  /** which frames the shuffle gathers for the whole-frame UDFs, from a frame safely ahead (optional: 404 without) */
  setSelection?(id: string, select: string): Awaitable<AcquisitionSummary>;
  /** the whole frame at a scan position, assembled by the shuffle (GET /api/acquisitions/:id/frames/:position; optional: 404 without) */
  pickFrame?(id: string, position: number, timeoutMs?: number): Awaitable<PickedFrame>;
  /** `tessera replay` only: the recording's time line (GET /api/replay) */
  replayTimeline?(): Awaitable<Record<string, unknown>>;
  /** `tessera replay` only: the time (ms since the recording's start, null: the end) that 'current' subscribers see (POST /api/replay/time) */
  setReplayTime?(t: number | null): Awaitable<Record<string, unknown>>;
}

export interface HttpApiOptions {
  controller: AcquisitionController;
  /** largest acquisition definition accepted (a ROI mask is one JSON entry per scan position) */
  defineBodyLimit?: number;
}

export interface ErrorReply {
  code: string;
  message: string;
  statusCode: number;
}

/** Map any error to the API's `{ code, message, statusCode }`. */
export function errorReplyOf(error: unknown): ErrorReply {
  if (error instanceof TesseraError) {
    return { code: error.code, message: error.message, statusCode: error.statusCode ?? 500 };
  }
  const e = error as Partial<FastifyError>;
  if (e.validation) {
    return { code: 'TESSERA_ERR_BAD_ARGUMENT', message: e.message ?? 'invalid request', statusCode: 400 };
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return { code: 'TESSERA_ERR_PAYLOAD_TOO_LARGE', message: e.message ?? 'request body too large', statusCode: 413 };
  }
  if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
    // fastify's own client errors (bad JSON, wrong content type, …)
    return { code: 'TESSERA_ERR_BAD_ARGUMENT', message: e.message ?? 'bad request', statusCode: e.statusCode };
  }
  return { code: 'TESSERA_ERR_INTERNAL', message: new TesseraError('TESSERA_ERR_INTERNAL', e.message ?? String(error)).message, statusCode: 500 };
}

/** Fastify error handler: every error as `{ code, message, statusCode }`, 5xx logged as errors. */
export function tesseraErrorHandler(this: FastifyInstance, error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const body = errorReplyOf(error);
  if (body.statusCode >= 500) request.log.error({ err: error }, 'request failed');
  else request.log.info({ code: body.code, url: request.url }, body.message);
  void reply.code(body.statusCode).send(body);
}

/** Fastify not-found handler in the same shape. */
export function tesseraNotFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  const error = new TesseraError('TESSERA_ERR_NOT_FOUND', `route ${request.method} ${request.url.split('?')[0]}`);
  void reply.code(404).send(errorReplyOf(error));
}

const errorReplies = { '4xx': errorReplySchema, '5xx': errorReplySchema };

export const httpApiPlugin: FastifyPluginAsync<HttpApiOptions> = async (fastify, options) => {
  const { controller } = options;
  // strict validation: an unknown key is an error, not silently dropped or coerced
  const ajv = new Ajv({ allErrors: false, removeAdditional: false, useDefaults: false, coerceTypes: false });
  fastify.setValidatorCompiler(({ schema }) => ajv.compile(schema));
  fastify.setErrorHandler(tesseraErrorHandler);
  fastify.setNotFoundHandler(tesseraNotFoundHandler);

  type IdParams = { Params: { id: string } };
  const byId = { params: acquisitionIdParamsSchema, response: { 200: acquisitionSummarySchema, ...errorReplies } };

  fastify.get('/udfs', { schema: { response: { 200: udfListSchema, ...errorReplies } } }, async () => ({
    udfs: await controller.listUdfs(),
  }));

  fastify.post<{ Body: AcquisitionRequest }>(
    '/acquisitions',
    {
      bodyLimit: options.defineBodyLimit ?? 32 * 1024 * 1024,
      schema: { body: acquisitionRequestSchema, response: { 201: acquisitionSummarySchema, ...errorReplies } },
    },
    async (request, reply) => {
      const summary = await controller.define(normalizeAcquisitionRequest(request.body));
      return reply.code(201).header('location', `${request.url.replace(/\/$/, '')}/${summary.id}`).send(summary);
    },
  );

  fastify.get<IdParams>('/acquisitions/:id', { schema: byId }, async (request) => controller.get(request.params.id));

  for (const action of ['start', 'stop', 'abort'] as const) {
    fastify.post<IdParams>(`/acquisitions/:id/${action}`, { schema: byId }, async (request) => controller[action](request.params.id));
  }

  fastify.patch<{ Params: { id: string; udfId: string }; Body: { params: Record<string, unknown> } }>(
    '/acquisitions/:id/udfs/:udfId',
    { schema: { params: udfParamsPathSchema, body: udfParamsBodySchema, response: { 200: udfParamsChangeSchema, ...errorReplies } } },
    async (request) => controller.updateUdfParams(request.params.id, request.params.udfId, request.body.params),
  );

  if (controller.setRecording) {
    fastify.post<{ Params: { id: string }; Body: { enabled: boolean } }>(
      '/acquisitions/:id/record',
      { schema: { params: acquisitionIdParamsSchema, body: recordBodySchema, response: { 200: acquisitionSummarySchema, ...errorReplies } } },
      async (request) => controller.setRecording!(request.params.id, request.body.enabled),
    );
  }

  if (controller.setSelection) {
    fastify.post<{ Params: { id: string }; Body: { select: string } }>(
      '/acquisitions/:id/selection',
      { schema: { params: acquisitionIdParamsSchema, body: selectionBodySchema, response: { 200: acquisitionSummarySchema, ...errorReplies } } },
      async (request) => controller.setSelection!(request.params.id, request.body.select),
    );
  }

  if (controller.pickFrame) {
    // the frame as raw little-endian uint16 rows; what it is in headers (docs/protocol.md, "Picked frames")
    fastify.get<{ Params: { id: string; position: string }; Querystring: { timeoutMs?: string } }>(
      '/acquisitions/:id/frames/:position',
      { schema: { params: framePathSchema, querystring: frameQuerySchema, response: errorReplies } },
      async (request, reply) => {
        const t = request.query.timeoutMs === undefined ? undefined : Math.min(Number(request.query.timeoutMs), MAX_PICK_TIMEOUT_MS);
        const f = await controller.pickFrame!(request.params.id, Number(request.params.position), t);
        const le = new Uint16Array(f.data.length);
        le.set(f.data);
        const body = Buffer.from(le.buffer);
        if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) body.swap16();
        return reply
          .header('content-type', 'application/octet-stream')
          .header('cache-control', 'no-store')
          .header('x-tessera-shape', '1860,2048')
          .header('x-tessera-dtype', 'uint16le')
          .header('x-tessera-acquisition', f.acquisition)
          .header('x-tessera-position', String(f.position))
          .header('x-tessera-epoch', String(f.epoch))
          .header('x-tessera-index', String(f.index))
          .header('x-tessera-damage', f.damage.join(','))
          .send(body);
      },
    );
  }

  if (controller.replayTimeline && controller.setReplayTime) {
    fastify.get('/replay', async () => controller.replayTimeline!());
    fastify.post<{ Body: { t: number | null } }>(
      '/replay/time',
      { schema: { body: { type: 'object', additionalProperties: false, required: ['t'], properties: { t: { type: ['number', 'null'] } } } } },
      async (request) => controller.setReplayTime!(request.body.t),
    );
  }

  fastify.get('/status', { schema: { response: { 200: mergerStatusSchema, ...errorReplies } } }, async () => controller.status());
};

