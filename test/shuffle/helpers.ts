/**
 * The whole live pipeline with the shuffle, every role a real process on loopback:
 * `tessera merger`, eight `tessera receiver`, `tessera shuffle`, `tessera worker` x N (or a
 * test worker: a real DEALER on the shuffle's frames socket that keeps the frames it gets),
 * and `tessera simulate`. Everything spawned is killed in `stopAll` (call it in afterEach).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import * as zmq from 'zeromq';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { decodeMergerMessage, type AcquireMessage } from '../../src/protocol/live.js';
import { asFrameHeader, decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION, type FrameHeader } from '../../src/shuffle/protocol.js';
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

/** A worker made of a real DEALER: asks for frames by credit and keeps what it gets. */
export class TestWorker {
  readonly frames: ReceivedFrame[] = [];
  acquire: AcquireMessage | null = null;
  private readonly dealer: zmq.Dealer;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(endpoint: string, credits = 64) {
    this.dealer = new zmq.Dealer({ routingId: `test-worker-${process.pid}`, linger: 0 });
    this.dealer.connect(endpoint);
    this.credit(credits);
    this.timer = setInterval(() => this.credit(0), 500);
    void this.loop();
  }

  private credit(n: number): void {
    if (!this.closed) void this.dealer.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'credit', pid: process.pid, n })).catch(() => {});
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
        this.credit(1);
      } else {
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
