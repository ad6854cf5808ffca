/**
 * Access to the merger's web server: who may control acquisitions and who may watch.
 *
 * - Loopback by default: with no token configured and the server bound to a loopback address,
 *   everything is open (one user, one machine).
 * - On a network address the merger needs a control token (config `merger.http.token`, or the
 *   environment variable TESSERA_CONTROL_TOKEN): without one it refuses to start.
 * - Once a control token is set (on any address), every control action (any request to /api
 *   that is not GET/HEAD: define, start, stop, abort, params, record, shutdown, and whatever
 *   comes later) needs `Authorization: Bearer <token>`. Reads (GET /api/*, /metrics, the
 *   WebSocket /ws) need the control token or the viewer token (`viewerToken`,
 *   TESSERA_VIEWER_TOKEN), unless `publicRead: true`. The browser UI's static files are public:
 *   they hold no data.
 * - Browsers cannot set headers on a WebSocket, so /ws (and any read) also takes the token as
 *   the query parameter `access_token` (RFC 6750 §2.3).
 *
 * Tokens are compared in constant time (SHA-256 of both sides, then timingSafeEqual), so the
 * reply time says nothing about how much of a guess was right, nor about the token's length.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { TesseraError } from '../errors.js';
import { errorReplyOf } from './http-api.js';

export interface HttpAccessConfig {
  host: string;
  token?: string | null;
  viewerToken?: string | null;
  publicRead?: boolean;
}

export type AccessLevel = 'control' | 'read' | 'public';

export interface HttpAccessPolicy {
  /** null: no token, everything open (loopback only) */
  controlToken: string | null;
  viewerToken: string | null;
  publicRead: boolean;
  /** false: loopback */
  network: boolean;
}

/** Shortest token accepted: a guessable token is no token. */
export const MIN_TOKEN_LENGTH = 16;

/** 127.0.0.0/8, ::1, ::ffff:127.x and `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h) || /^0*:0*:0*:0*:0*:0*:0*:0*1$/.test(h);
  return false;
}

/**
 * The access policy of a merger's HTTP config (environment variables fill in tokens the
 * config leaves null). Throws TESSERA_ERR_BAD_CONFIG for a network address without a control
 * token, and for tokens that are too short.
 */
export function resolveAccessPolicy(http: HttpAccessConfig, env: NodeJS.ProcessEnv = process.env): HttpAccessPolicy {
  const controlToken = http.token ?? (env.TESSERA_CONTROL_TOKEN || null);
  const viewerToken = http.viewerToken ?? (env.TESSERA_VIEWER_TOKEN || null);
  const network = !isLoopbackHost(http.host);
  if (network && !controlToken) {
    throw new TesseraError(
      'TESSERA_ERR_BAD_CONFIG',
      'key "merger.http.token"',
      `merger.http.host ${http.host} is a network address: control actions need a token (set merger.http.token or TESSERA_CONTROL_TOKEN, or bind to 127.0.0.1)`,
    );
  }
  for (const [key, t] of [['merger.http.token', controlToken], ['merger.http.viewerToken', viewerToken]] as const) {
    if (t !== null && t.length < MIN_TOKEN_LENGTH) throw new TesseraError('TESSERA_ERR_BAD_CONFIG', `key "${key}"`, `a token needs at least ${MIN_TOKEN_LENGTH} characters`);
  }
  if (viewerToken !== null && viewerToken === controlToken) throw new TesseraError('TESSERA_ERR_BAD_CONFIG', 'key "merger.http.viewerToken"', 'must differ from the control token');
  return { controlToken, viewerToken, publicRead: http.publicRead ?? false, network };
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time string equality (independent of where the strings differ and of their lengths). */
export function tokenEquals(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** What a request needs: control for changes under /api, read for data, public for the UI's files. */
export function accessLevelOf(method: string, url: string): AccessLevel {
  const path = url.split('?')[0]!;
  const api = path === '/api' || path.startsWith('/api/');
  if (api && method !== 'GET' && method !== 'HEAD') return 'control';
  if (api || path === '/ws' || path === '/metrics') return 'read';
  // anything else that changes state (none today) is control too
  return method === 'GET' || method === 'HEAD' ? 'public' : 'control';
}

/** The bearer token of a request: the Authorization header, or `access_token` in the query. */
export function tokenOf(request: { headers: Record<string, string | string[] | undefined>; url: string }): string | null {
  const h = request.headers.authorization;
  const header = Array.isArray(h) ? h[0] : h;
  if (header) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return m ? m[1]! : null;
  }
  const q = request.url.indexOf('?');
  if (q < 0) return null;
  const v = new URLSearchParams(request.url.slice(q + 1)).get('access_token');
  return v || null;
}

/** Whether a token (or none) grants the access level under a policy. */
export function allowed(policy: HttpAccessPolicy, level: AccessLevel, token: string | null): boolean {
  if (level === 'public' || policy.controlToken === null) return true;
  const isControl = token !== null && tokenEquals(token, policy.controlToken);
  if (level === 'control') return isControl;
  if (policy.publicRead || isControl) return true;
  return token !== null && policy.viewerToken !== null && tokenEquals(token, policy.viewerToken);
}

/**
 * Install the access check as the server's first onRequest hook (before any route or plugin
 * is registered, so that it covers all of them, the WebSocket upgrade included).
 */
export function installAccessControl(fastify: FastifyInstance, policy: HttpAccessPolicy): void {
  if (policy.controlToken === null) return;
  let refused = 0;
  fastify.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const level = accessLevelOf(request.method, request.url);
    if (allowed(policy, level, tokenOf(request))) return;
    refused++;
    if (refused <= 20 || refused % 1000 === 0) request.log.warn({ method: request.method, url: request.url.split('?')[0], level, remote: request.ip, refused }, 'request refused: no valid token');
    const body = errorReplyOf(new TesseraError('TESSERA_ERR_UNAUTHORIZED'));
    // a refused WebSocket upgrade: nobody reads or ends that socket (@fastify/websocket's own onResponse cleanup needs its onRequest hook, which this reply skips), so close() would wait on it forever
    if (request.headers.upgrade) reply.raw.once('finish', () => request.raw.socket?.destroy());
    await reply.code(401).header('www-authenticate', 'Bearer realm="tessera"').send(body);
  });
}
