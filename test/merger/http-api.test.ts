/**
 * The HTTP control API over real HTTP (fetch against a merger web server on a free port),
 * backed by the in-memory controller: each route's happy path and its 4xx replies, all of
 * them `{ code, message, statusCode }` with codes from the error catalogue.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import type { AcquisitionSummary, MergerStatus } from '../../src/merger/acquisition-schema.js';
import { InMemoryController, UDF_TYPES } from './in-memory-controller.js';

const logger = createLogger('test-http', { level: 'silent' });

class FailingStatusController extends InMemoryController {
  override status(): MergerStatus {
    throw new Error('disk on fire');
  }
}

describe('HTTP control API', () => {
  let server: MergerServer;
  let controller: InMemoryController;

  beforeAll(async () => {
    const registry = new LiveStoreRegistry();
    controller = new InMemoryController(registry);
    server = await buildMergerServer({ controller, stores: registry, logger, api: { defineBodyLimit: 64 * 1024 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const init: RequestInit = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const response = await fetch(server.url + path, init);
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : undefined, headers: response.headers };
  }

  async function expectError(method: string, path: string, body: unknown, status: number, code: string, headers?: Record<string, string>) {
    const reply = await call(method, path, body, headers);
    expect(reply.status, JSON.stringify(reply.body)).toBe(status);
    expect(reply.body).toEqual({ code, message: expect.any(String), statusCode: status });
    return reply.body as { message: string };
  }

  const define = (body: Record<string, unknown>) => call('POST', '/api/acquisitions', body);
  const vd = { name: 'virtualDetector', params: { cx: 4, cy: 4, ro: 2 } };

  it('GET /api/udfs lists the UDFs with their parameter schemas', async () => {
    const { status, body } = await call('GET', '/api/udfs');
    expect(status).toBe(200);
    expect(body.udfs.map((u: { name: string }) => u.name)).toEqual(UDF_TYPES.map((t) => t.name));
    expect(body.udfs[1].params).toMatchObject({ required: ['cx', 'cy', 'ro'] });
  });

  it('POST /api/acquisitions defines one, with defaults and unique UDF ids', async () => {
    const reply = await define({ scanShape: [8, 16], udfs: [{ name: 'sum' }, vd, vd, { id: 'rings', ...vd }] });
    expect(reply.status).toBe(201);
    const summary = reply.body as AcquisitionSummary;
    expect(summary).toMatchObject({
      state: 'defined',
      scanShape: [8, 16],
      mode: 'single',
      chunkSize: 16,
      record: { enabled: false, path: null },
      roi: null,
      epoch: 0,
      progress: { framesMerged: 0, framesTotal: 128 },
    });
    expect(summary.udfs).toEqual([
      { id: 'sum', name: 'sum', params: {} },
      { id: 'virtualDetector', name: 'virtualDetector', params: vd.params },
      { id: 'virtualDetector-2', name: 'virtualDetector', params: vd.params },
      { id: 'rings', name: 'virtualDetector', params: vd.params },
    ]);
    expect(reply.headers.get('location')).toBe(`/api/acquisitions/${summary.id}`);
    const got = await call('GET', `/api/acquisitions/${summary.id}`);
    expect(got.status).toBe(200);
    expect(got.body).toEqual(summary);
  });

  it('takes a ROI as a flat mask or as rectangles (their union), mode, recording and chunk size', async () => {
    const mask = Array.from({ length: 32 }, (_, i) => i % 3 === 0);
    const a = await define({ scanShape: [4, 8], udfs: [vd], roi: { mask }, mode: 'continuous', record: true, recordPath: 'x.h5', chunkSize: 4 });
    expect(a.status).toBe(201);
    expect(a.body).toMatchObject({ roi: { selected: mask.filter(Boolean).length }, mode: 'continuous', record: { enabled: true, path: 'x.h5' }, chunkSize: 4 });
    // two overlapping rectangles: 2x3 and 3x3 sharing 2x2 positions = 6 + 9 - 4
    const b = await define({ scanShape: [4, 8], udfs: [vd], roi: { rects: [{ y: 0, x: 0, height: 2, width: 3 }, { y: 0, x: 1, height: 3, width: 3 }] } });
    expect(b.status).toBe(201);
    expect(b.body.roi).toEqual({ selected: 11 });
  });

  it('rejects bad definitions with 400 and a code', async () => {
    await expectError('POST', '/api/acquisitions', { udfs: [] }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: [0, 5], udfs: [] }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4, 4], udfs: [] }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: ['4', 4], udfs: [] }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    const typo = await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [], chunksize: 4 }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    expect(typo.message).toMatch(/additional properties/);
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [], mode: 'forever' }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [{ id: '_damage', ...vd }] }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [{ id: 'a', ...vd }, { id: 'a', name: 'sum' }] }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [], chunkSize: 17 }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [], recordPath: 'x.h5' }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', '{"scanShape": [4, ', 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('POST', '/api/acquisitions', 'scanShape=4', 400, 'TESSERA_ERR_BAD_ARGUMENT', { 'content-type': 'text/plain' });
    await expectError('POST', '/api/acquisitions', '<scanShape/>', 415, 'TESSERA_ERR_BAD_ARGUMENT', { 'content-type': 'application/xml' });
    await expectError('POST', '/api/acquisitions', { scanShape: [256, 256], udfs: [], roi: { mask: new Array(65536).fill(true) } }, 413, 'TESSERA_ERR_PAYLOAD_TOO_LARGE');
  });

  it('rejects unknown UDFs, bad parameters and bad ROIs with their codes', async () => {
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [{ name: 'teleport' }] }, 400, 'TESSERA_ERR_UNKNOWN_UDF');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [{ name: 'virtualDetector', params: { cx: 1 } }] }, 400, 'TESSERA_ERR_UDF_PARAMS');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [vd], roi: { mask: [true, false] } }, 400, 'TESSERA_ERR_ROI');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [vd], roi: { mask: new Array(16).fill(0) } }, 400, 'TESSERA_ERR_ROI');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [vd], roi: { rects: [{ y: 3, x: 0, height: 2, width: 1 }] } }, 400, 'TESSERA_ERR_ROI');
    await expectError('POST', '/api/acquisitions', { scanShape: [4, 4], udfs: [vd], roi: { mask: [], rects: [] } }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
  });

  it('start, stop and abort move the state; a transition the state forbids is 409', async () => {
    const { body: a } = await define({ scanShape: [4, 4], udfs: [vd] });
    await expectError('POST', `/api/acquisitions/${a.id}/stop`, undefined, 409, 'TESSERA_ERR_ACQUISITION_STATE');
    expect((await call('POST', `/api/acquisitions/${a.id}/start`)).body.state).toBe('running');
    await expectError('POST', `/api/acquisitions/${a.id}/start`, undefined, 409, 'TESSERA_ERR_ACQUISITION_STATE');
    expect((await call('POST', `/api/acquisitions/${a.id}/stop`)).body.state).toBe('done');
    await expectError('POST', `/api/acquisitions/${a.id}/abort`, undefined, 409, 'TESSERA_ERR_ACQUISITION_STATE');
    const { body: b } = await define({ scanShape: [4, 4], udfs: [vd] });
    await call('POST', `/api/acquisitions/${b.id}/start`);
    const aborted = await call('POST', `/api/acquisitions/${b.id}/abort`);
    expect(aborted.status).toBe(200);
    expect(aborted.body.state).toBe('aborted');
    expect((await call('GET', `/api/acquisitions/${b.id}`)).body.state).toBe('aborted');
  });

  it('unknown acquisitions are 404, malformed ids 400', async () => {
    await expectError('GET', '/api/acquisitions/acq-999', undefined, 404, 'TESSERA_ERR_NOT_FOUND');
    await expectError('POST', '/api/acquisitions/acq-999/start', undefined, 404, 'TESSERA_ERR_NOT_FOUND');
    await expectError('GET', '/api/acquisitions/bad%20id', undefined, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('GET', '/api/no-such-route', undefined, 404, 'TESSERA_ERR_NOT_FOUND');
    await expectError('GET', '/no-such-file', undefined, 404, 'TESSERA_ERR_NOT_FOUND');
    await expectError('DELETE', '/api/acquisitions', undefined, 404, 'TESSERA_ERR_NOT_FOUND');
  });

  it('PATCH /api/acquisitions/:id/udfs/:udfId changes parameters from the next chunk', async () => {
    const { body: a } = await define({ scanShape: [8, 16], udfs: [{ id: 'ring', ...vd }] });
    await call('POST', `/api/acquisitions/${a.id}/start`);
    controller.mergeChunk(a.id, 0, 16);
    controller.mergeChunk(a.id, 16, 4);
    const reply = await call('PATCH', `/api/acquisitions/${a.id}/udfs/ring`, { params: { cx: 5, cy: 5, ri: 1, ro: 3 } });
    expect(reply.status).toBe(200);
    expect(reply.body).toEqual({ acquisition: a.id, udf: { id: 'ring', name: 'virtualDetector', params: { cx: 5, cy: 5, ri: 1, ro: 3 } }, appliesFromFrame: 32 });
    expect((await call('GET', `/api/acquisitions/${a.id}`)).body.udfs[0].params).toEqual({ cx: 5, cy: 5, ri: 1, ro: 3 });
    await expectError('PATCH', `/api/acquisitions/${a.id}/udfs/ring`, { params: { cx: 'middle', cy: 5, ro: 3 } }, 400, 'TESSERA_ERR_UDF_PARAMS');
    await expectError('PATCH', `/api/acquisitions/${a.id}/udfs/ring`, { cx: 5 }, 400, 'TESSERA_ERR_BAD_ARGUMENT');
    await expectError('PATCH', `/api/acquisitions/${a.id}/udfs/nope`, { params: {} }, 404, 'TESSERA_ERR_NOT_FOUND');
    await expectError('PATCH', `/api/acquisitions/acq-999/udfs/ring`, { params: {} }, 404, 'TESSERA_ERR_NOT_FOUND');
    await call('POST', `/api/acquisitions/${a.id}/stop`);
    await expectError('PATCH', `/api/acquisitions/${a.id}/udfs/ring`, { params: { cx: 1, cy: 1, ro: 1 } }, 409, 'TESSERA_ERR_ACQUISITION_STATE');
  });

  it('GET /api/status reports the current acquisition, its progress and the sectors', async () => {
    const { body: a } = await define({ scanShape: [4, 8], udfs: [vd] });
    await call('POST', `/api/acquisitions/${a.id}/start`);
    controller.mergeChunk(a.id, 0, 8);
    controller.registry.get(a.id)!.setSectorStatus(3, { state: 'missing', lost: 64 });
    const { status, body } = await call('GET', '/api/status');
    expect(status).toBe(200);
    expect(body.acquisition).toMatchObject({ id: a.id, state: 'running', progress: { framesMerged: 8, framesTotal: 32 } });
    expect(body.sectors).toHaveLength(8);
    expect(body.sectors[3]).toMatchObject({ sector: 3, state: 'missing', lost: 64 });
    expect(body.sectors[0]).toMatchObject({ sector: 0, state: 'unknown', lost: 0 });
  });

  it('an unexpected controller failure is a 500 with TESSERA_ERR_INTERNAL, and the server goes on', async () => {
    const registry = new LiveStoreRegistry();
    const failing = await buildMergerServer({ controller: new FailingStatusController(registry), stores: registry, logger });
    try {
      const response = await fetch(`${failing.url}/api/status`);
      expect(response.status).toBe(500);
      expect(await response.json()).toEqual({ code: 'TESSERA_ERR_INTERNAL', message: 'internal error: disk on fire', statusCode: 500 });
      expect((await fetch(`${failing.url}/api/udfs`)).status).toBe(200);
    } finally {
      await failing.close();
    }
  });
});

describe('static UI files', () => {
  it('serves the files of staticDir at / (never outside it), and no static route when it is empty', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-ui-'));
    const empty = mkdtempSync(join(tmpdir(), 'tessera-ui-empty-'));
    writeFileSync(join(dir, 'index.html'), '<h1>Tessera</h1>');
    writeFileSync(join(dir, 'app.js'), 'export const x = 1;');
    mkdirSync(join(dir, 'sub'));
    const registry = new LiveStoreRegistry();
    const server = await buildMergerServer({ controller: new InMemoryController(registry), stores: registry, logger, staticDir: dir });
    const bare = await buildMergerServer({ stores: registry, logger, staticDir: empty });
    try {
      const index = await fetch(`${server.url}/`);
      expect(index.status).toBe(200);
      expect(index.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await index.text()).toBe('<h1>Tessera</h1>');
      const js = await fetch(`${server.url}/app.js?v=2`);
      expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
      expect(await js.text()).toBe('export const x = 1;');
      for (const path of ['/sub/', '/missing.js', '/%2e%2e/package.json', '/..%2fpackage.json']) {
        const reply = await fetch(server.url + path);
        expect(reply.status, path).toBe(404);
        expect(await reply.json()).toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND' });
      }
      expect((await fetch(`${server.url}/%E0%A4%A`)).status).toBe(400);
      expect((await fetch(`${server.url}/api/udfs`)).status).toBe(200);
      expect(await (await fetch(`${server.url}/api/nothing`)).json()).toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND' });
      // no files, no static route; no controller, no API
      expect((await fetch(`${bare.url}/`)).status).toBe(404);
      expect((await fetch(`${bare.url}/api/udfs`)).status).toBe(404);
    } finally {
      await server.close();
      await bare.close();
      rmSync(dir, { recursive: true, force: true });
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
