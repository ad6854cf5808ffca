/**
 * The whole live pipeline with the shuffle, every role a real process on loopback:
 * `tessera merger`, eight `tessera receiver`, `tessera shuffle`, `tessera worker` x N (or a
 * test worker: a real DEALER on the shuffle's frames socket that keeps the frames it gets),
 * and `tessera simulate`. Everything spawned is killed in `stopAll` (call it in afterEach).
 * For the in-process tests: the ShuffleService with the merger's ShuffleLink on real sockets
 * (startShuffleWithLink), and eight real SliceSenders fed synthetic tiles (sliceSenderRig).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import * as zmq from 'zeromq';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { decodeMergerMessage, LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import { asFrameHeader, decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION, type FrameHeader } from '../../src/shuffle/protocol.js';
import { ShuffleLink } from '../../src/shuffle/shuffle-link.js';
import { ShuffleService } from '../../src/shuffle/shuffle-service.js';
import { SliceSender } from '../../receivers/slice-sender.js';
import type { SectorTile } from '../../receivers/tile.js';
import { freeTcpPort, liveConfig, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

export const FRAMES_BEFORE = 8;

export class ShufflePipeline {
  roles: RoleProcess[] = [];
  clients: TesseraClient[] = [];
  testWorkers: TestWorker[] = [];
  config = '';
  dir = '';
  url = '';
  frames = '';
  merger!: RoleProcess;
  shuffle!: RoleProcess;
  receivers: RoleProcess[] = [];
  client!: TesseraClient;

  spawn(name: string, args: string[]): RoleProcess {
    const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
    this.roles.push(r);
    return r;
  }

  async launch(o: { workers?: number; workerArgs?: string[]; shuffleArgs?: string[]; testWorker?: boolean; chunkTimeoutMs?: number } = {}): Promise<void> {
    const base = await freeUdpPorts(8);
    const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
    this.frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
    const { path, dir } = await liveConfig({
      detector: { udp: { host: '127.0.0.1', basePort: base } },
      receiver: { statsIntervalMs: 1000 },
      merger: { chunkTimeoutMs: o.chunkTimeoutMs ?? 5000 },
      shuffle: { slices, frames: this.frames },
    });
    this.config = path;
    this.dir = dir;
    onTestFailed(() => {
      for (const r of this.roles) writeFileSync(join(dir, `${r.name}-${r.child.pid}.log`), r.rawStderr.join('\n'));
      console.error(`logs of the failed test: ${dir}`);
    });
    this.merger = this.spawn('merger', ['merger', '-c', path]);
    this.url = String((await this.merger.waitForMsg('merger listening', 30_000)).url);
    this.shuffle = this.spawn('shuffle', ['shuffle', '-c', path, ...(o.shuffleArgs ?? [])]);
    await this.shuffle.waitForMsg('shuffle listening', 30_000);
    for (let w = 0; w < (o.workers ?? 0); w++) this.spawn(`worker-${w}`, ['worker', '-c', path, ...(o.workerArgs ?? [])]);
    if (o.testWorker) this.testWorkers.push(new TestWorker(this.frames));
    this.receivers = Array.from({ length: 8 }, (_, s) => this.spawn(`receiver-${s}`, ['receiver', '--sector', String(s), '-c', path]));
    this.client = new TesseraClient({ url: this.url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    this.clients.push(this.client);
    await waitUntil(async () => (await this.client.api.status()).sectors.every((s) => s.state === 'alive'), 40_000, 'eight receivers alive');
    // the merger has heard from the shuffle with its workers
    await waitUntil(() => this.merger.lines.some((l) => l.msg === 'shuffle connected'), 20_000, 'shuffle connected to the merger');
    await waitUntil(() => this.shuffle.lines.filter((l) => l.msg === 'shuffle: worker joined').length >= (o.workers ?? 0) + (o.testWorker ? 1 : 0), 20_000, 'workers joined');
    await new Promise((r) => setTimeout(r, 800)); // a status with the workers reached the merger
  }

  async defineAndStart(request: Parameters<TesseraClient['api']['define']>[0]): Promise<string> {
    const { id } = await this.client.api.define(request);
    await this.client.api.start(id);
    await waitUntil(() => this.merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 20_000, 'eight receivers ready');
    // every receiver holds the shuffle's selection for the acquisition
    await waitUntil(() => this.receivers.every((r) => r.lines.some((l) => l.msg === 'shuffle selection' && JSON.stringify(l.rules).includes(id))), 20_000, 'receivers hold the selection');
    return id;
  }

  simulate(scan: [number, number], args: string[]): RoleProcess {
    return this.spawn('simulator', ['simulate', '-c', this.config, '--scan', `${scan[0]}x${scan[1]}`, '--frames-before', String(FRAMES_BEFORE), ...args]);
  }

  async stopAll(): Promise<void> {
    for (const c of this.clients) await c.close().catch(() => {});
    for (const w of this.testWorkers) w.close();
    await Promise.all(this.roles.map((r) => r.stop(5000).catch(() => r.kill())));

  }
}

export interface ReceivedFrame {
  header: FrameHeader;
  data: Uint16Array;
}

const isPing = (raw: Buffer): boolean => {
  try {
    return decodeShuffle(raw).type === 'ping';
  } catch {
    return false;
  }
};

/**
 * A worker made of a real DEALER: asks for frames by credit and keeps what it gets. With
 * `sayWindow` its credits carry the window (as FrameWorker's do: the shuffle then pings it);
 * `answering` false keeps the frames it gets without giving their credit back (a worker busy
 * with them).
 */
export class TestWorker {
  readonly frames: ReceivedFrame[] = [];
  acquire: AcquireMessage | null = null;
  answering = true;
  private readonly dealer: zmq.Dealer;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    endpoint: string,
    private readonly credits = 64,
    private readonly o: { sayWindow?: boolean } = {},
  ) {
    this.dealer = new zmq.Dealer({ routingId: `test-worker-${process.pid}`, linger: 0 });
    this.dealer.connect(endpoint);
    this.credit(credits);
    this.timer = setInterval(() => this.credit(0), 500);
    void this.loop();
  }

  private credit(n: number): void {
    const window = this.o.sayWindow ? { window: this.credits } : {};
    if (!this.closed) void this.dealer.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'credit', pid: process.pid, n, ...window })).catch(() => {});
  }

  private async loop(): Promise<void> {
    for (;;) {
      let m: Buffer[];
      try {
        m = await this.dealer.receive();
      } catch {
        return;
      }
      if (m.length === 2) {
        const data = new Uint16Array(FRAME_HEIGHT * FRAME_WIDTH);
        new Uint8Array(data.buffer).set(m[1]!);
        this.frames.push({ header: asFrameHeader(decodeShuffle(m[0]!)), data });
        if (this.answering) this.credit(1);
      } else {
        // the shuffle's ping (to workers that say their window): nothing to do
        if (this.o.sayWindow && isPing(m[0]!)) continue;
        const c = decodeMergerMessage(m[0]!);
        if (c.type === 'acquire') this.acquire = c;
      }
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.dealer.close();
  }
}

/**
 * Closers run in reverse order after each test of the calling file (even when it failed):
 * push a closer for everything a test opens.
 */
export function closeAfterEach(): Array<() => unknown> {
  const closers: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });
  return closers;
}

/** A ShuffleService on free loopback ports and the merger's ShuffleLink to it, both closed by `closers`. */
export async function startShuffleWithLink(closers: Array<() => unknown>, o: { keepEpochs: number; registry?: LiveStoreRegistry; workerHeartbeatTimeoutMs?: number }) {
  const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
  const frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
  const service = await ShuffleService.start({ slices, frames, fixedRate: true, workerHeartbeatTimeoutMs: o.workerHeartbeatTimeoutMs });
  closers.push(() => service.close());
  const registry = o.registry ?? new LiveStoreRegistry();
  const link = new ShuffleLink({ endpoint: slices, registry, keepEpochs: o.keepEpochs });
  closers.push(() => link.close());
  return { slices, frames, service, registry, link };
}

/** The pixel value of (camera run, frame index, sector): tells where a frame came from. */
export const valueOf = (run: number, index: number, sector: number) => (run * 211 + index * 13 + sector) & 0xfff;

/**
 * A continuous acquisition `acquisition` of `scan` with FEMUDF, started on the link, with a
 * TestWorker and eight real SliceSenders (the receivers' side) on a fresh shuffle (all closed by
 * `closers`), once every sender holds the book. `begin` starts a detector acquisition at every
 * receiver; `feed(run, acq, index)` gives every sender its tile of a frame whose pixels are
 * valueOf(run, index, sector); `feedSelected` waits for the worker to get it, `feedUnselected`
 * expects no slice sent for it.
 */
export async function sliceSenderRig(
  closers: Array<() => unknown>,
  o: {
    acquisition: string;
    scan: [number, number];
    start?: AcquireMessage['start'];
    worker?: { credits: number; sayWindow: boolean };
    /** the endpoint the worker connects to in place of the shuffle's frames endpoint (a relay to it) */
    workerVia?: (frames: string) => Promise<string>;
    workerHeartbeatTimeoutMs?: number;
  },
) {
  const { slices, frames, service, registry, link } = await startShuffleWithLink(closers, { keepEpochs: 8, workerHeartbeatTimeoutMs: o.workerHeartbeatTimeoutMs });
  const worker = new TestWorker(o.workerVia ? await o.workerVia(frames) : frames, o.worker?.credits, { sayWindow: o.worker?.sayWindow });
  closers.push(() => worker.close());
  const senders = Array.from({ length: 8 }, (_, sector) => new SliceSender({ sector, endpoint: slices }));
  closers.push(() => Promise.all(senders.map((x) => x.close())));
  await waitUntil(() => link.available(), 20_000, 'the link sees the shuffle with a worker');

  const P = o.scan[0] * o.scan[1];
  const ROWS = FRAME_HEIGHT;
  const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
  const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: o.acquisition, scanShape: o.scan, roi: null, udfs: [fem], chunkSize: 4, mode: 'continuous', start: o.start ?? null, resume: null };
  link.start(acquire, 'continuous');
  await waitUntil(() => senders.every((x) => x.book.list.some((r) => r.acquisition === o.acquisition)), 20_000, 'every sender holds the book');

  /** detector acquisition `acq` (ShutterSync number) of election round `round` begins at every receiver */
  const begin = (acq: number, round: number, joinedAt = 0) => {
    for (const x of senders) x.onAcquisitionStart({ acquisition: acq, sector: 0, firstActiveKey: 0, round, scanPositions: P, continuous: true, joinedAt, decidedBy: 'all', missingSectors: [] });
  };
  const pixels = new Uint16Array(ROWS * SECTOR_WIDTH);
  /** one frame of camera run `run` (detector acquisition `acq`) at every receiver */
  const feed = (run: number, acq: number, index: number) => {
    for (let sector = 0; sector < 8; sector++) {
      pixels.fill(valueOf(run, index, sector));
      const tile: SectorTile = { data: pixels, sector, acquisition: acq, epoch: 0, scanIndex: index % P, depth: 1, rows: ROWS, sigOrigin: [0, sector * SECTOR_WIDTH], sigShape: [ROWS, SECTOR_WIDTH], damage: Uint32Array.of(0), frames: [{ index, frameKey: index, frameId: index }] };
      senders[sector]!.onTile(tile);
    }
  };
  const sent = () => senders.reduce((n, x) => n + x.stats.slicesSent + x.stats.slicesDropped, 0);
  const feedSelected = async (run: number, acq: number, index: number) => {
    const before = worker.frames.length;
    feed(run, acq, index);
    await waitUntil(() => worker.frames.length === before + 1, 20_000, `frame ${index} of run ${run} at the worker`);
  };
  const feedUnselected = (run: number, acq: number, index: number) => {
    const before = sent();
    feed(run, acq, index);
    expect(sent(), `frame ${index} of run ${run}: no slice sent`).toBe(before);
  };
  return { service, registry, link, worker, senders, acquire, begin, feed, feedSelected, feedUnselected };
}
