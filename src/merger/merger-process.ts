/**
 * The merger process (`tessera merger`): the receiver link (ZeroMQ), the acquisition manager,
 * the web server (HTTP API, WebSocket stream, browser UI) and, as the one central process,
 * the first-frame election coordinator that the receivers vote with.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { TesseraConfig } from '../config.js';
import { createLogger, type Logger } from '../log.js';
import { PROJECT_ROOT } from '../paths.js';
import { ElectionCoordinator } from '../protocol/election.js';
import { loadConfiguredPlugins } from '../udf/plugins.js';
import { AcquisitionManager } from './acquisition-manager.js';
import { resolveAccessPolicy } from './auth.js';
import { LiveStoreRegistry } from './live-store.js';
import { ReceiverLink } from './receiver-link.js';
import { ShuffleLink } from '../shuffle/shuffle-link.js';
import { buildMergerServer, type MergerServer } from './server.js';

export interface MergerProcessOptions {
  config: TesseraConfig;
  log?: Logger;
  /** override config.merger.hostElection */
  election?: boolean;
  /** directory of the browser UI (default dist/web when it exists) */
  staticDir?: string | null;
  /** log counters this often (default 5 s; 0: never) */
  statsIntervalMs?: number;
  /** override LIVENESS_MS (tests whose fake receivers share a busy process with the merger) */
  livenessMs?: number;
}

export interface MergerProcess {
  manager: AcquisitionManager;
  link: ReceiverLink;
  server: MergerServer;
  registry: LiveStoreRegistry;
  election: ElectionCoordinator | null;
  url: string;
  close(): Promise<void>;
}

export const DEFAULT_STATIC_DIR = join(PROJECT_ROOT, 'dist', 'web');

export async function startMerger(o: MergerProcessOptions): Promise<MergerProcess> {
  const { config } = o;
  const log = o.log ?? createLogger('merger');
  // refuse a network address without a control token before anything is bound
  const access = resolveAccessPolicy(config.merger.http);
  const plugins = await loadConfiguredPlugins(config);
  if (plugins.length) log.info({ plugins }, 'UDF plugins loaded');
  const registry = new LiveStoreRegistry({ keepEpochs: config.merger.keepEpochs });
  let link: ReceiverLink | null = null;
  // whole-frame UDFs run behind the shuffle service when one answers (src/shuffle/)
  const shuffle = new ShuffleLink({ endpoint: config.shuffle.slices, registry, keepEpochs: config.merger.keepEpochs, log });
  const manager = new AcquisitionManager({
    shuffle,
    registry,
    send: (sector, message) => (link ? link.send(sector, message) : Promise.resolve(false)),
    sectors: config.detector.sectors,
    chunkTimeoutMs: config.merger.chunkTimeoutMs,
    keepEpochs: config.merger.keepEpochs,
    livenessMs: o.livenessMs,
    recorder: { dataDir: config.dataDir, ...config.recorder },
    log,
  });
  const cleanups: Array<() => Promise<void> | void> = [() => shuffle.close(), () => manager.close()];
  // (cleanups run last first) the recordings are closed after the link stops, before the manager
  cleanups.push(() => manager.closeRecordings());
  const close = async () => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    link = await ReceiverLink.open({
      control: config.merger.control,
      results: config.merger.results,
      log,
      onControl: (m) => manager.onControl(m),
      onPartial: (m) => manager.onPartial(m),
      onFrameResults: (raw) => shuffle.onResults(raw),
    });
    cleanups.push(() => link!.close());
    let election: ElectionCoordinator | null = null;
    if (o.election ?? config.merger.hostElection) {
      const sectors = Array.from({ length: config.detector.sectors }, (_, s) => s);
      election = await ElectionCoordinator.start({ endpoint: config.election.endpoint, expectedSectors: sectors, timeoutMs: config.election.timeoutMs, log });
      cleanups.push(() => election!.close());
    }
    const staticDir = o.staticDir === undefined ? (existsSync(DEFAULT_STATIC_DIR) ? DEFAULT_STATIC_DIR : null) : o.staticDir;
    const metrics = { status: () => manager.status(), counters: () => manager.counters(), takeMergeFigures: () => manager.takeMergeFigures(), link: () => link!.counters };
    const server = await buildMergerServer({ controller: manager, stores: registry, logger: log, host: config.merger.http.host, port: config.merger.http.port, staticDir, access, metrics });
    cleanups.push(() => server.close());
    const every = o.statsIntervalMs ?? 5000;
    if (every > 0) {
      const timer = setInterval(() => log.info({ link: link!.counters, ...manager.counters() }, 'merger stats'), every);
      timer.unref();
      cleanups.push(() => clearInterval(timer));
    }
    return { manager, link, server, registry, election, url: server.url, close };
  } catch (err) {
    await close();
    throw err;
  }
}
