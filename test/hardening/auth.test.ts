/**
 * Access control of the merger's web server (src/merger/auth.ts) over real HTTP and real
 * WebSocket upgrades: control actions need the control token, reads the control or the viewer
 * token (or publicRead), the UI's files are public; a missing or wrong token is 401
 * TESSERA_ERR_UNAUTHORIZED and changes nothing. A merger on a network address without a
 * control token refuses to start (in process and as a real `tessera merger` process).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { loadConfig } from '../../src/config.js';
import { isTesseraError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { accessLevelOf, allowed, isLoopbackHost, resolveAccessPolicy, tokenEquals, tokenOf } from '../../src/merger/auth.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { startMerger } from '../../src/merger/merger-process.js';
import { buildMergerServer, type MergerServer } from '../../src/merger/server.js';
import { decodeMessage, encodeMessage, WS_PROTOCOL_VERSION } from '../../src/protocol/ws-messages.js';
import { InMemoryController } from '../merger/in-memory-controller.js';
import { liveConfig } from '../merger/live-helpers.js';
import { spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

const logger = createLogger('test-auth', { level: 'silent' });
const CONTROL = 'control-token-0123456789abcdef';
const VIEWER = 'viewer-token-0123456789abcdef';
const DEFINE = { scanShape: [4, 8], udfs: [{ name: 'sum' }] };

function expectCode(fn: () => unknown, code: string, text?: string): void {
  try {
    fn();
  } catch (err) {
    expect(isTesseraError(err) ? err.code : err).toBe(code);
    if (text) expect((err as Error).message).toContain(text);
    return;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}

describe('access policy', () => {
  it('loopback addresses are recognised, network ones are not', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.5', 'merger.lab', '128.0.0.1', '::ffff:10.0.0.1']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('a network address without a control token is a BAD_CONFIG naming merger.http.token; short or shared tokens too', () => {
    expectCode(() => resolveAccessPolicy({ host: '0.0.0.0' }, {}), 'TESSERA_ERR_BAD_CONFIG', 'merger.http.token');
    expectCode(() => resolveAccessPolicy({ host: '10.1.2.3', token: null, viewerToken: VIEWER }, {}), 'TESSERA_ERR_BAD_CONFIG', 'merger.http.token');
    expectCode(() => resolveAccessPolicy({ host: '0.0.0.0', token: 'short' }, {}), 'TESSERA_ERR_BAD_CONFIG', 'merger.http.token');
    expectCode(() => resolveAccessPolicy({ host: '0.0.0.0', token: CONTROL, viewerToken: CONTROL }, {}), 'TESSERA_ERR_BAD_CONFIG', 'viewerToken');
    expect(resolveAccessPolicy({ host: '0.0.0.0' }, { TESSERA_CONTROL_TOKEN: CONTROL })).toMatchObject({ controlToken: CONTROL, network: true });
    expect(resolveAccessPolicy({ host: '127.0.0.1' }, {})).toEqual({ controlToken: null, viewerToken: null, publicRead: false, network: false });
  });

  it('classifies requests: changes under /api are control, data reads are read, the UI is public', () => {
    expect(accessLevelOf('POST', '/api/acquisitions')).toBe('control');
    expect(accessLevelOf('POST', '/api/acquisitions/a1/start?x=1')).toBe('control');
    expect(accessLevelOf('PATCH', '/api/acquisitions/a1/udfs/sum')).toBe('control');
    expect(accessLevelOf('DELETE', '/api/anything')).toBe('control');
    expect(accessLevelOf('POST', '/api/shutdown')).toBe('control');
    expect(accessLevelOf('GET', '/api/status')).toBe('read');
    expect(accessLevelOf('GET', '/ws?access_token=x')).toBe('read');
    expect(accessLevelOf('GET', '/metrics')).toBe('read');
    expect(accessLevelOf('GET', '/')).toBe('public');
    expect(accessLevelOf('GET', '/app/main.js')).toBe('public');
    expect(accessLevelOf('POST', '/')).toBe('control');
  });

  it('token comparison and extraction', () => {
    expect(tokenEquals(CONTROL, CONTROL)).toBe(true);
    expect(tokenEquals(CONTROL, CONTROL + 'x')).toBe(false);
    expect(tokenEquals('', CONTROL)).toBe(false);
    expect(tokenOf({ headers: { authorization: `Bearer ${CONTROL}` }, url: '/api/status' })).toBe(CONTROL);
    expect(tokenOf({ headers: { authorization: `bearer  ${CONTROL} ` }, url: '/' })).toBe(CONTROL);
    expect(tokenOf({ headers: { authorization: `Basic ${CONTROL}` }, url: '/?access_token=zzz' })).toBe(null);
    expect(tokenOf({ headers: {}, url: `/ws?a=1&access_token=${VIEWER}` })).toBe(VIEWER);
    expect(tokenOf({ headers: {}, url: '/ws' })).toBe(null);
    const p = resolveAccessPolicy({ host: '0.0.0.0', token: CONTROL, viewerToken: VIEWER }, {});
    expect(allowed(p, 'control', VIEWER)).toBe(false);
    expect(allowed(p, 'read', VIEWER)).toBe(true);
    expect(allowed(p, 'read', null)).toBe(false);
    expect(allowed({ ...p, publicRead: true }, 'read', null)).toBe(true);
    expect(allowed({ ...p, publicRead: true }, 'control', null)).toBe(false);
  });
});

describe('a merger web server with tokens', () => {
  let server: MergerServer;
  let open: MergerServer;
  let controller: InMemoryController;
  let staticDir: string;

  beforeAll(async () => {
    staticDir = mkdtempSync(join(tmpdir(), 'tessera-auth-ui-'));
    writeFileSync(join(staticDir, 'index.html'), '<html>ui</html>');
    const registry = new LiveStoreRegistry();
    controller = new InMemoryController(registry);
    // a token on loopback is enforced too: configured means wanted
    server = await buildMergerServer({ controller, stores: registry, logger, staticDir, access: resolveAccessPolicy({ host: '127.0.0.1', token: CONTROL, viewerToken: VIEWER }, {}) });
    const registry2 = new LiveStoreRegistry();
    open = await buildMergerServer({ controller: new InMemoryController(registry2), stores: registry2, logger, access: resolveAccessPolicy({ host: '127.0.0.1', token: CONTROL, publicRead: true }, {}) });
  });
  afterAll(async () => {
    await server?.close();
    await open?.close();
  });

  async function call(base: MergerServer, method: string, path: string, token?: string, body?: unknown) {
    const headers: Record<string, string> = {};
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(base.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* static file */
    }
    return { status: r.status, body: parsed as Record<string, unknown>, headers: r.headers };
  }

  const refused = (r: { status: number; body: Record<string, unknown> }) => {
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ code: 'TESSERA_ERR_UNAUTHORIZED', message: expect.any(String), statusCode: 401 });
  };

  it('control actions without, with a wrong or with the viewer token are 401 and change nothing; with the control token they work', async () => {
    for (const token of [undefined, 'wrong-token-0123456789abcdef', VIEWER, CONTROL.slice(0, -1), `${CONTROL}x`]) {
      const r = await call(server, 'POST', '/api/acquisitions', token, DEFINE);
      refused(r);
      expect(r.headers.get('www-authenticate')).toContain('Bearer');
    }
    const defined = await call(server, 'POST', '/api/acquisitions', CONTROL, DEFINE);
    expect(defined.status).toBe(201);
    const id = String(defined.body.id);
    for (const action of ['start', 'stop', 'abort']) {
      refused(await call(server, 'POST', `/api/acquisitions/${id}/${action}`));
      refused(await call(server, 'POST', `/api/acquisitions/${id}/${action}`, VIEWER));
    }
    refused(await call(server, 'PATCH', `/api/acquisitions/${id}/udfs/sum`, VIEWER, { params: {} }));
    // routes that do not exist yet (record, shutdown) are refused before routing: no probing without a token
    refused(await call(server, 'POST', '/api/shutdown'));
    expect((await call(server, 'GET', `/api/acquisitions/${id}`, CONTROL)).body.state).toBe('defined');
    const started = await call(server, 'POST', `/api/acquisitions/${id}/start`, CONTROL);
    expect(started.status).toBe(200);
    expect(started.body.state).toBe('running');
    expect((await call(server, 'POST', `/api/acquisitions/${id}/stop`, CONTROL)).status).toBe(200);
  });

  it('reads need the viewer or control token (header or access_token query); the UI files are public', async () => {
    refused(await call(server, 'GET', '/api/status'));
    refused(await call(server, 'GET', '/api/status', 'wrong-token-0123456789abcdef'));
    refused(await call(server, 'GET', '/api/udfs'));
    expect((await call(server, 'GET', '/api/status', VIEWER)).status).toBe(200);
    expect((await call(server, 'GET', '/api/status', CONTROL)).status).toBe(200);
    expect((await call(server, 'GET', `/api/status?access_token=${VIEWER}`)).status).toBe(200);
    refused(await call(server, 'GET', `/api/status?access_token=nope-0123456789abcdef`));
    const ui = await call(server, 'GET', '/');
    expect(ui.status).toBe(200);
    expect(ui.body).toBe('<html>ui</html>');
  });

  function wsOpen(url: string, headers: Record<string, string> = {}): Promise<{ status: number; ws: WebSocket | null; first: Promise<Record<string, unknown>> | null }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(url, { headers });
      ws.once('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode ?? 0, ws: null, first: null });
        res.resume();
        ws.terminate();
      });
      const first = new Promise<Record<string, unknown>>((r) => ws.once('message', (d: Buffer) => r(decodeMessage(d) as Record<string, unknown>)));
      ws.once('open', () => resolve({ status: 101, ws, first }));
      ws.once('error', () => {});
    });
  }

  it('the WebSocket upgrade without a valid token is refused with 401; with the viewer token (query or header) it streams', async () => {
    expect((await wsOpen(server.wsUrl)).status).toBe(401);
    expect((await wsOpen(`${server.wsUrl}?access_token=wrong-token-0123456789abcdef`)).status).toBe(401);
    const viaQuery = await wsOpen(`${server.wsUrl}?access_token=${VIEWER}`);
    expect(viaQuery.status).toBe(101);
    expect((await viaQuery.first!).type).toBe('hello');
    // the stream answers subscriptions as usual
    const replies: Array<Record<string, unknown>> = [];
    viaQuery.ws!.on('message', (d: Buffer) => replies.push(decodeMessage(d) as Record<string, unknown>));
    viaQuery.ws!.send(encodeMessage({ v: WS_PROTOCOL_VERSION, type: 'ping', id: 7 } as never));
    const deadline = Date.now() + 5000;
    while (!replies.some((m) => m.type === 'pong') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(replies.find((m) => m.type === 'pong')).toMatchObject({ id: 7 });
    viaQuery.ws!.close();
    const viaHeader = await wsOpen(server.wsUrl, { authorization: `Bearer ${CONTROL}` });
    expect(viaHeader.status).toBe(101);
    viaHeader.ws!.close();
  });

  it('TesseraClient with a token drives the API and the stream; without one it gets TESSERA_ERR_UNAUTHORIZED', async () => {
    const anonymous = new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    await expect(anonymous.api.status()).rejects.toMatchObject({ code: 'TESSERA_ERR_UNAUTHORIZED', statusCode: 401 });
    const client = new TesseraClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketConstructor, token: CONTROL });
    const { id } = await client.api.define(DEFINE as never);
    expect((await client.api.start(id)).state).toBe('running');
    const hello = await client.connect();
    expect(hello.type).toBe('hello');
    await client.close();
  });

  it('publicRead: reads and the stream without a token, control still needs it', async () => {
    expect((await call(open, 'GET', '/api/status')).status).toBe(200);
    const ws = await wsOpen(open.wsUrl);
    expect(ws.status).toBe(101);
    ws.ws!.close();
    refused(await call(open, 'POST', '/api/acquisitions', undefined, DEFINE));
    expect((await call(open, 'POST', '/api/acquisitions', CONTROL, DEFINE)).status).toBe(201);
  });

  it('buildMergerServer refuses a network address without a control token', async () => {
    const registry = new LiveStoreRegistry();
    await expect(buildMergerServer({ controller: new InMemoryController(registry), stores: registry, logger, host: '0.0.0.0' })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_CONFIG' });
  });
});

describe('the merger process on a network address', () => {
  let proc: RoleProcess | null = null;
  afterEach(async () => {
    await proc?.stop(5000);
    proc = null;
  });

  it('startMerger refuses 0.0.0.0 without a token before binding anything', async () => {
    const { path } = await liveConfig({ merger: { http: { host: '0.0.0.0', port: 0 } } });
    const config = loadConfig(path);
    await expect(startMerger({ config, log: logger })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_CONFIG' });
    // nothing was bound: the same control endpoint can be taken at once
    const ok = await startMerger({ config: { ...config, merger: { ...config.merger, http: { host: '127.0.0.1', port: 0 } } }, log: logger, election: false });
    await ok.close();
  });

  it('`tessera merger` on 0.0.0.0 without a token exits with a clear TESSERA_ERR_BAD_CONFIG naming merger.http.token', async () => {
    const { path } = await liveConfig({ merger: { http: { host: '0.0.0.0', port: 0 } } });
    proc = spawnCli('merger', ['merger', '-c', path], { TESSERA_CONTROL_TOKEN: '' });
    const exit = await proc.exited;
    expect(exit.code).toBe(2);
    const stderr = proc.rawStderr.join('\n');
    expect(stderr).toContain('TESSERA_ERR_BAD_CONFIG');
    expect(stderr).toContain('merger.http.token');
  });

  it('`tessera merger` on 0.0.0.0 with a token: control without it is 401, with it 201', async () => {
    const { path, ports } = await liveConfig({ merger: { http: { host: '0.0.0.0', token: CONTROL } } });
    proc = spawnCli('merger', ['merger', '-c', path]);
    await proc.waitForMsg('merger listening', 30_000);
    const url = `http://127.0.0.1:${ports.http}`;
    const no = await fetch(`${url}/api/acquisitions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(DEFINE) });
    expect(no.status).toBe(401);
    expect(((await no.json()) as { code: string }).code).toBe('TESSERA_ERR_UNAUTHORIZED');
    const yes = await fetch(`${url}/api/acquisitions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${CONTROL}` }, body: JSON.stringify({ scanShape: [4, 8], udfs: [{ name: 'SumUDF' }] }) });
    expect(yes.status).toBe(201);
  }, 60_000);
});
