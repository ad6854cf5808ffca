/**
 * The merger -> browser stream: how many updates per second a client gets, and how many bytes.
 *
 * A merger web server runs in a worker thread (its own event loop, as the merger process is
 * separate from the browser); it fills a 256 x 256 float32 navigation map row by row and
 * changes a 1860 x 2048 float32 sig image (the sum) about a thousand times a second, far
 * faster than any client can follow. A client on the main thread (TesseraClient over `ws`)
 * mirrors the state. Figures:
 * - updates/s received, against the 60 updates/s cap (the target is >= 20);
 * - payload bytes/s received, against msgpack (msgpackr) encoding the same arrays in this
 *   thread: the stream's end-to-end rate vs the encoder alone;
 * - server side, one full update (diff + encode of the image and a row): GB/s vs memcpy;
 * - latency from the update's build on the server to its application in the client's mirror.
 * Each figure is the median of several runs.
 */
import { Packr } from 'msgpackr';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../src/client/tessera-client.js';
import { createLogger } from '../src/log.js';
import { LiveStore, LiveStoreRegistry } from '../src/merger/live-store.js';
import { buildMergerServer } from '../src/merger/server.js';
import { allocMessageBuffer, encodeMessage, messageBufferBytes, updatePayloadBytes, WS_PROTOCOL_VERSION } from '../src/protocol/ws-messages.js';
import { formatBytes, measure, measureMemcpy, median, report } from './lib.js';

const SCAN: [number, number] = [256, 256];
const SIG: [number, number] = [1860, 2048];
const RUNS = 5;
const RUN_MS = 2000;
const MAX_RATE = 60;

function makeStore(): LiveStore {
  const store = new LiveStore({ acquisition: 'bench', scanShape: SCAN });
  store.defineBuffer({ udfId: 'vd', name: 'intensity', kind: 'nav', dtype: 'float32', shape: SCAN });
  store.defineBuffer({ udfId: 'sum', name: 'intensity', kind: 'sig', dtype: 'float32', shape: SIG });
  return store;
}

/** The worker: a merger web server whose store changes continuously until told to stop. */
async function serveInWorker(): Promise<void> {
  const registry = new LiveStoreRegistry();
  const store = registry.add(makeStore());
  const server = await buildMergerServer({ stores: registry, logger: createLogger('bench-ws', { level: 'warn' }) });
  const row = new Float32Array(SCAN[1]);
  const image = store.getBuffer('sum', 'intensity').data as Float32Array;
  let i = 0;
  const timer = setInterval(() => {
    const r = i % SCAN[0];
    store.updateNavRange('vd', 'intensity', r * SCAN[1], (r + 1) * SCAN[1], row.fill(i));
    image[(i * 7919) % image.length] += 1; // merged in place, as the merger core does
    store.touch('sum', 'intensity');
    i++;
  }, 1);
  parentPort!.on('message', async (m) => {
    if (m !== 'stop') return;
    clearInterval(timer);
    await server.close();
    parentPort!.postMessage({ stopped: true, changes: i });
  });
  parentPort!.postMessage({ url: server.url });
}

if (!isMainThread && (workerData as { wsBenchServer?: boolean } | null)?.wsBenchServer) await serveInWorker();

interface StreamFigures {
  updatesPerSecond: number;
  bytesPerSecond: number;
  latencyMedianMs: number;
  latencyP99Ms: number;
}

async function measureStream(url: string, buffers?: string[]): Promise<StreamFigures> {
  const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  await client.connect();
  client.subscribe({ acquisition: 'bench', ...(buffers ? { buffers } : {}) });
  await client.waitFor((m) => m.acquisition === 'bench', 30_000);
  let updates = 0;
  let bytes = 0;
  const latencies: number[] = [];
  client.on('update', (u) => {
    updates++;
    bytes += u.bytes;
    latencies.push(Date.now() - u.t);
  });
  await new Promise((r) => setTimeout(r, 500)); // warm-up
  const rates: number[] = [];
  const byteRates: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const [u0, b0, t0] = [updates, bytes, performance.now()];
    await new Promise((r) => setTimeout(r, RUN_MS));
    const seconds = (performance.now() - t0) / 1000;
    rates.push((updates - u0) / seconds);
    byteRates.push((bytes - b0) / seconds);
  }
  await client.close();
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    updatesPerSecond: median(rates),
    bytesPerSecond: median(byteRates),
    latencyMedianMs: median(latencies),
    latencyP99Ms: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? NaN,
  };
}

export async function run(): Promise<void> {
  // references in this thread, on the same arrays: msgpack encoding, and a full update's cost
  const nav = new Float32Array(SCAN[0] * SCAN[1]);
  const image = new Float32Array(SIG[0] * SIG[1]);
  const packr = new Packr({ useRecords: false });
  const rawBytes = nav.byteLength + image.byteLength;
  const msgpackGBs = measure(() => packr.pack({ nav, image }), { bytes: rawBytes, runs: 5, minTimeMs: 300 });
  const reused = allocMessageBuffer(messageBufferBytes(rawBytes));
  const msgpackReusedGBs = measure(
    () => {
      packr.useBuffer(reused);
      packr.pack({ nav, image });
    },
    { bytes: rawBytes, runs: 5, minTimeMs: 300 },
  );
  const store = makeStore();
  let v = store.version;
  const row = new Float32Array(SCAN[1]);
  const updateBytes = image.byteLength + row.byteLength;
  const out = allocMessageBuffer(messageBufferBytes(updateBytes)); // the stream's per-client buffer
  const updateGBs = measure(
    () => {
      store.updateNavRange('vd', 'intensity', 0, SCAN[1], row);
      store.touch('sum', 'intensity');
      const body = store.diffSince(v);
      v = body.version;
      encodeMessage({ v: WS_PROTOCOL_VERSION, type: 'diff', t: 0, ...body }, updatePayloadBytes(body), out);
    },
    { bytes: updateBytes, runs: 5, minTimeMs: 300 },
  );
  const memcpy = measureMemcpy(updateBytes, { runs: 5, minTimeMs: 200 });
  report('ws server: diff + encode of one update (sig image + a nav row)', updateGBs, 'GB/s', updateGBs / memcpy.best, `memcpy ${memcpy.best.toFixed(1)} GB/s`);

  const worker = new Worker(new URL(import.meta.url), { workerData: { wsBenchServer: true } });
  try {
    const { url } = await new Promise<{ url: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const full = await measureStream(url);
    report(`ws updates/s, ${SCAN.join('x')} float32 nav filled by rows + ${SIG.join('x')} float32 sig`, full.updatesPerSecond, '/s', full.updatesPerSecond / MAX_RATE, `the ${MAX_RATE}/s cap`);
    report('ws payload received (full subscription)', full.bytesPerSecond / 1e9, 'GB/s', full.bytesPerSecond / 1e9 / msgpackGBs, `msgpackr pack of the same arrays, ${msgpackGBs.toFixed(2)} GB/s`);
    report('ws payload received (full subscription), vs the encoder alone', full.bytesPerSecond / 1e9, 'GB/s', full.bytesPerSecond / 1e9 / msgpackReusedGBs, `msgpackr pack into a reused buffer, ${msgpackReusedGBs.toFixed(1)} GB/s`);
    report('ws latency server build -> client mirror, median (full subscription)', full.latencyMedianMs, 'ms', full.latencyMedianMs / 100, '100 ms target');
    report('ws latency server build -> client mirror, p99 (full subscription)', full.latencyP99Ms, 'ms', full.latencyP99Ms / 100, '100 ms target');
    const navOnly = await measureStream(url, ['vd']);
    report('ws updates/s, nav map only', navOnly.updatesPerSecond, '/s', navOnly.updatesPerSecond / MAX_RATE, `the ${MAX_RATE}/s cap`);
    report(`ws bytes per update, nav map only (rows written since the last update)`, navOnly.bytesPerSecond / navOnly.updatesPerSecond, 'B', navOnly.bytesPerSecond / navOnly.updatesPerSecond / nav.byteLength, `the whole map, ${formatBytes(nav.byteLength)}`);
    report('ws latency server build -> client mirror, p99 (nav map only)', navOnly.latencyP99Ms, 'ms', navOnly.latencyP99Ms / 100, '100 ms target');
    worker.postMessage('stop');
    await new Promise((resolve) => worker.once('message', resolve));
  } finally {
    await worker.terminate();
  }
}
