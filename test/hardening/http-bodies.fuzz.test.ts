/**
 * HTTP requests under fuzzing, against a real merger (startMerger in this process: the real
 * AcquisitionManager behind the real routes; requests through fastify.inject, so thousands
 * of them take seconds). Random bytes, random JSON and mutated valid bodies to every control
 * route, random paths: every reply is a 4xx or 2xx with `{ code: 'TESSERA_ERR_…' }` for errors,
 * never a 500; bodies over the limits are 413 TESSERA_ERR_PAYLOAD_TOO_LARGE; huge scans are
 * refused, not allocated; the merger still works afterwards.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startMerger, type MergerProcess } from '../../src/merger/merger-process.js';
import { liveConfig } from '../merger/live-helpers.js';

const log = createLogger('test-http-fuzz', { level: 'silent' });
let merger: MergerProcess;

beforeAll(async () => {
  const { path } = await liveConfig();
  merger = await startMerger({ config: loadConfig(path), log, election: false, staticDir: null, statsIntervalMs: 0 });
});
afterAll(async () => {
  await merger?.close();
});

interface Reply {
  status: number;
  body: Record<string, unknown> | null;
}

async function inject(method: string, url: string, payload?: string | Buffer, contentType = 'application/json'): Promise<Reply> {
  const r = await merger.server.fastify.inject({ method: method as 'POST', url, payload, headers: payload === undefined ? {} : { 'content-type': contentType } });
  let body: Record<string, unknown> | null = null;
  try {
    body = JSON.parse(r.body) as Record<string, unknown>;
  } catch {
    body = null;
  }
  return { status: r.statusCode, body };
}

function expectClean(r: Reply, what: string): void {
  expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBeLessThan(500);
  if (r.status >= 400) {
    expect(r.body, what).toMatchObject({ code: expect.stringMatching(/^TESSERA_ERR_[A-Z_]+$/), statusCode: r.status });
  }
}

// cheap UDFs: a define builds their contexts (a mask UDF renders 1860 x 2048 masks each time)
const VALID = { scanShape: [4, 8], udfs: [{ id: 'sum', name: 'SumUDF', params: {} }, { id: 'sumsig', name: 'SumSigUDF' }], roi: { rects: [{ y: 0, x: 1, height: 2, width: 3 }] }, mode: 'single', chunkSize: 8 };

/** VALID with one key (at any depth) replaced by random JSON or removed. */
const mutatedValid = fc
  .tuple(fc.nat(), fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined }))
  .map(([k, value]) => {
    const copy = structuredClone(VALID) as Record<string, unknown>;
    const slots: Array<[Record<string, unknown>, string]> = [];
    const walk = (o: unknown) => {
      if (o && typeof o === 'object') for (const key of Object.keys(o)) {
        slots.push([o as Record<string, unknown>, key]);
        walk((o as Record<string, unknown>)[key]);
      }
    };
    walk(copy);
    const [holder, key] = slots[k % slots.length]!;
    if (value === undefined) delete holder[key];
    else holder[key] = value;
    return JSON.stringify(copy);
  });

const bodies = fc.oneof(fc.constant(JSON.stringify(VALID)), fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)), mutatedValid);

describe('HTTP API under fuzzing (real merger core)', () => {
  it('POST /api/acquisitions: random and mutated bodies are 201 or a clean 4xx', async () => {
    let defined = 0;
    await fc.assert(
      fc.asyncProperty(bodies, async (payload) => {
        const r = await inject('POST', '/api/acquisitions', payload);
        expectClean(r, 'define');
        if (r.status === 201) defined++;
      }),
      { numRuns: 250 },
    );
    expect(defined).toBeGreaterThan(10);
  });

  it('PATCH params, start/stop/abort and GET with random ids and bodies: clean 4xx or 2xx', async () => {
    const { body } = await inject('POST', '/api/acquisitions', JSON.stringify(VALID));
    const id = String(body!.id);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(id, 'nope', '..', '%2e%2e', 'a'.repeat(300), '%00', '😀', '%ZZ'),
        fc.constantFrom('sum', 'sumsig', 'x', '%00'),
        bodies,
        fc.constantFrom('start', 'stop', 'abort'),
        async (aid, udf, payload, action) => {
          expectClean(await inject('PATCH', `/api/acquisitions/${aid}/udfs/${udf}`, payload), 'params');
          expectClean(await inject('GET', `/api/acquisitions/${aid}`), 'get');
          if (aid !== id) expectClean(await inject('POST', `/api/acquisitions/${aid}/${action}`), action);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('random paths and methods: clean 404/400/405, never a 500', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'), fc.webPath(), fc.string({ maxLength: 40 }), async (method, path, junk) => {
        const url = `/api${path}${encodeURIComponent(junk)}`;
        expectClean(await inject(method, url, method === 'GET' || method === 'OPTIONS' ? undefined : '{}'), `${method} ${url}`);
      }),
      { numRuns: 300 },
    );
  });

  it('wrong content types and bodies over the limits are refused cleanly', async () => {
    expectClean(await inject('POST', '/api/acquisitions', 'scanShape=1', 'application/x-www-form-urlencoded'), 'form');
    expectClean(await inject('POST', '/api/acquisitions', JSON.stringify(VALID), 'text/plain'), 'text');
    const big = Buffer.alloc(33 * 1024 * 1024, 0x20);
    const r = await inject('POST', '/api/acquisitions', big);
    expect(r.status).toBe(413);
    expect(r.body).toMatchObject({ code: 'TESSERA_ERR_PAYLOAD_TOO_LARGE' });
    const p = await inject('PATCH', '/api/acquisitions/x/udfs/y', Buffer.alloc(2 * 1024 * 1024, 0x20));
    expect(p.status).toBe(413);
  });

  it('huge scans are refused or defined without allocating them; deeply nested JSON is refused', async () => {
    for (const scanShape of [[65536, 65536], [65536, 1], [1, 65536]]) {
      const r = await inject('POST', '/api/acquisitions', JSON.stringify({ ...VALID, scanShape, roi: { rects: [{ y: 0, x: 0, height: 1, width: 1 }] } }));
      expectClean(r, `scan ${scanShape.join('x')}`);
    }
    expect(process.memoryUsage().rss).toBeLessThan(1024 ** 3);
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    expectClean(await inject('POST', '/api/acquisitions', deep), 'deep');
    // and the merger still works
    const ok = await inject('POST', '/api/acquisitions', JSON.stringify(VALID));
    expect(ok.status).toBe(201);
    expect((await inject('GET', '/api/status')).status).toBe(200);
  });
});
