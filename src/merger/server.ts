/**
 * The merger's web server: the HTTP control API under /api, the live WebSocket stream at /ws,
 * and the browser UI's files at / when there are any to serve.
 */
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { extname, resolve, sep } from 'node:path';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import { TesseraError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { installAccessControl, isLoopbackHost, resolveAccessPolicy, type HttpAccessPolicy } from './auth.js';
import { errorReplyOf, httpApiPlugin, tesseraErrorHandler, tesseraNotFoundHandler, type AcquisitionController, type HttpApiOptions } from './http-api.js';
import { LiveStore, LiveStoreRegistry } from './live-store.js';
import { MergerMetrics, metricsPlugin, type MetricsSources } from './metrics.js';
import { LiveStream, wsStreamPlugin, type LiveStreamOptions } from './ws-stream.js';

export interface MergerServerOptions {
  /** the merger core's control side; without one there is no /api (a stream-only server) */
  controller?: AcquisitionController | null;
  /** the live stores (a single store is put into a registry of its own, as the current one) */
  stores: LiveStoreRegistry | LiveStore;
  logger?: Logger;
  host?: string;
  /** 0 picks a free port */
  port?: number;
  /** directory of the browser UI's built files; served at / only if it holds files */
  staticDir?: string | null;
  ws?: Omit<LiveStreamOptions, 'registry' | 'logger'>;
  api?: Omit<HttpApiOptions, 'controller'>;
  /** who may control and who may read (src/merger/auth.ts); none: open (loopback) */
  access?: HttpAccessPolicy | null;
  /** what GET /metrics reports (src/merger/metrics.ts); none: no /metrics */
  metrics?: MetricsSources | null;
}

export interface MergerServer {
  fastify: FastifyInstance;
  stream: LiveStream;
  registry: LiveStoreRegistry;
  host: string;
  port: number;
  /** http://host:port */
  url: string;
  /** ws://host:port/ws */
  wsUrl: string;
  close(): Promise<void>;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm',
};

/** GET /* from `root` (index.html for /), never outside it. */
const staticFilesPlugin: FastifyPluginAsync<{ root: string }> = async (fastify, { root }) => {
  const base = resolve(root);
  fastify.get('/*', async (request, reply) => {
    let wanted: string;
    try {
      wanted = decodeURIComponent(request.url.split('?')[0]!);
    } catch {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'path', 'malformed percent-encoding');
    }
    const path = resolve(base, '.' + (wanted.endsWith('/') ? wanted + 'index.html' : wanted));
    if ((path !== base && !path.startsWith(base + sep)) || !existsSync(path) || !statSync(path).isFile()) {
      throw new TesseraError('TESSERA_ERR_NOT_FOUND', `file ${wanted}`);
    }
    return reply.type(CONTENT_TYPES[extname(path)] ?? 'application/octet-stream').send(createReadStream(path));
  });
};

function hasFiles(dir: string | null | undefined): dir is string {
  try {
    return !!dir && readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

/** Build, register and start the merger's web server. */
export async function buildMergerServer(options: MergerServerOptions): Promise<MergerServer> {
  const logger = options.logger ?? createLogger('merger-web');
  let registry: LiveStoreRegistry;
  if (options.stores instanceof LiveStore) {
    registry = new LiveStoreRegistry();
    registry.add(options.stores);
  } else registry = options.stores;

  // pino's Logger is a FastifyBaseLogger; the cast keeps fastify's instance type the default one
  const fastify = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // per-request lines would drown the log when the UI polls /api/status
    logController: new LogController({ disableRequestLogging: true }),
    // a malformed URL (bad percent-encoding) gets the API's error shape, like every other 4xx
    frameworkErrors: (error, _request, reply) => {
      void (reply as unknown as { code(n: number): { send(body: unknown): unknown } }).code(400).send(errorReplyOf(new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'url', error.message)));
    },
  });
  fastify.setErrorHandler(tesseraErrorHandler);
  fastify.setNotFoundHandler(tesseraNotFoundHandler);
  if (options.access) installAccessControl(fastify, options.access);
  const stream = new LiveStream({ ...options.ws, registry, logger: logger.child({ part: 'ws' }) });
  await fastify.register(wsStreamPlugin, { stream });
  if (options.metrics) await fastify.register(metricsPlugin, { metrics: new MergerMetrics(options.metrics, stream) });
  if (options.controller) await fastify.register(httpApiPlugin, { ...options.api, prefix: '/api', controller: options.controller });
  if (hasFiles(options.staticDir)) await fastify.register(staticFilesPlugin, { root: options.staticDir });

  const host = options.host ?? '127.0.0.1';
  // a server on the network without a control token would let anyone there start and stop acquisitions
  if (!options.access?.controlToken && !isLoopbackHost(host)) {
    await fastify.close();
    resolveAccessPolicy({ host, token: null }, {});
  }
  await fastify.listen({ host, port: options.port ?? 0 });
  const address = fastify.server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 0);
  const urlHost = host.includes(':') ? `[${host}]` : host;
  logger.info({ url: `http://${urlHost}:${port}` }, 'merger web server listening');
  return {
    fastify,
    stream,
    registry,
    host,
    port,
    url: `http://${urlHost}:${port}`,
    wsUrl: `ws://${urlHost}:${port}/ws`,
    close: async () => {
      await fastify.close();
    },
  };
}
