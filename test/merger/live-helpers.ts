/**
 * Test side of the live protocol: fake receivers made of real ZeroMQ sockets (a DEALER with
 * routing id `receiver-<sector>` on the merger's control endpoint, a PUSH on its results
 * endpoint) that send heartbeats and partial results computed by the UDF engine's
 * PartitionTask over the sector slices of simulator frames: what a receiver computes.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import {
  decodeMergerMessage,
  encodeLive,
  LIVE_PROTOCOL_VERSION,
  toWire,
  type AcquireMessage,
  type HeartbeatMessage,
  type MergerToReceiver,
  type PartialMessage,
} from '../../src/protocol/live.js';
import { PartitionTask } from '../../src/udf/partition-task.js';
import { makeRunContext } from '../../src/udf/runner.js';
import { createUdf } from '../../src/udf/registry.js';
import type { RunContext } from '../../src/udf/meta.js';
import { freeTcpPort } from '../support/ports.js';

export { freeTcpPort } from '../support/ports.js';

/** A config overlay with free loopback ports for every merger endpoint; returns its path. */
export async function liveConfig(overlay: Record<string, unknown> = {}): Promise<{ path: string; dir: string; ports: Record<string, number> }> {
  const ports = { control: await freeTcpPort(), results: await freeTcpPort(), http: await freeTcpPort(), election: await freeTcpPort() };
  const dir = mkdtempSync(join(tmpdir(), 'tessera-live-'));
  const path = join(dir, 'config.json');
  const base = {
    merger: {
      control: `tcp://127.0.0.1:${ports.control}`,
      results: `tcp://127.0.0.1:${ports.results}`,
      http: { host: '127.0.0.1', port: ports.http },
      chunkTimeoutMs: 1000,
    },
    election: { endpoint: `tcp://127.0.0.1:${ports.election}` },
  };
  writeFileSync(path, JSON.stringify(deepMerge(base, overlay)));
  return { path, dir, ports };
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const x = out[k];
    out[k] = x && typeof x === 'object' && !Array.isArray(x) && v && typeof v === 'object' && !Array.isArray(v) ? deepMerge(x as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

export const SIG: [number, number] = [FRAME_HEIGHT, FRAME_WIDTH];

/** The sector's columns of a whole frame. */
export function sectorSlice(frame: Uint16Array, sector: number, out = new Uint16Array(FRAME_HEIGHT * SECTOR_WIDTH)): Uint16Array {
  for (let y = 0; y < FRAME_HEIGHT; y++) out.set(frame.subarray(y * FRAME_WIDTH + sector * SECTOR_WIDTH, y * FRAME_WIDTH + (sector + 1) * SECTOR_WIDTH), y * SECTOR_WIDTH);
  return out;
}

/** The context a receiver builds from an acquire message (as the merger does). */
export function contextOf(a: AcquireMessage): RunContext {
  const udfs = a.udfs.map((u) => createUdf({ name: u.name, params: u.params }));
  return makeRunContext({ navShape: a.scanShape, sigShape: SIG, datasetDtype: 'uint16', sectors: 8, udfs, roi: a.roi });
}

/**
 * One sector's partial for one chunk: PartitionTask over the sector slices of `frames(i)`
 * (whole frames by scan position) with the acquire's UDFs.
 */
export function computePartial(
  a: AcquireMessage,
  sector: number,
  epoch: number,
  chunk: number,
  frameAt: (position: number) => Uint16Array,
  opts: { params?: Array<Record<string, unknown>>; paramsVersions?: number[]; damage?: Uint32Array; context?: RunContext } = {},
): PartialMessage {
  const positions = a.scanShape[0] * a.scanShape[1];
  const navStart = chunk * a.chunkSize;
  const navEnd = Math.min(navStart + a.chunkSize, positions);
  const context = opts.context ?? contextOf(a);
  const sig = { origin: [0, sector * SECTOR_WIDTH] as [number, number], shape: [FRAME_HEIGHT, SECTOR_WIDTH] as [number, number] };
  const task = new PartitionTask({
    udfs: a.udfs.map((u, i) => ({ name: u.name, params: opts.params?.[i] ?? u.params })),
    context,
    partition: { navStart, navEnd, sig },
  });
  const tile = new Uint16Array(FRAME_HEIGHT * SECTOR_WIDTH);
  for (let i = navStart; i < navEnd; i++) {
    if (a.roi && !a.roi[i]) continue;
    task.processTile({ data: sectorSlice(frameAt(i), sector, tile), navStart: i, depth: 1, sigOrigin: sig.origin, sigShape: sig.shape });
  }
  const r = task.finish();
  return {
    version: LIVE_PROTOCOL_VERSION,
    type: 'partial',
    acquisition: a.acquisition,
    sector,
    epoch,
    chunk,
    navStart,
    navEnd,
    frames: r.frames,
    sig,
    udfs: r.udfs.map((buffers, i) => ({
      id: a.udfs[i]!.id,
      paramsVersion: opts.paramsVersions?.[i] ?? 0,
      buffers: Object.fromEntries(Object.entries(buffers).map(([k, v]) => [k, toWire(v)])),
    })),
    damage: opts.damage ?? new Uint32Array(navEnd - navStart),
    sentAt: Date.now(),
  };
}

export interface FakeReceiverState {
  phase: string;
  acquisition: string | null;
  lastIndex: number | null;
  shutterRound: number | null;
  positions: number | null;
  counters: Record<string, number>;
}

/** A receiver's sockets without a receiver: heartbeats, and whatever the test sends. */
export class FakeReceiver {
  readonly dealer: zmq.Dealer;
  readonly push: zmq.Push;
  readonly received: MergerToReceiver[] = [];
  readonly state: FakeReceiverState = { phase: 'armed', acquisition: null, lastIndex: null, shutterRound: null, positions: null, counters: {} };
  private timer: NodeJS.Timeout | null = null;
  private heartbeatMs = 250;
  private closed = false;
  private loop: Promise<void> | null = null;
  private chain: Promise<void> = Promise.resolve();
  /** reply to acquire with ready and take the acquisition (default true) */
  autoJoin = true;

  constructor(
    readonly sector: number,
    readonly control: string,
    readonly results: string,
  ) {
    this.dealer = new zmq.Dealer({ routingId: `receiver-${sector}`, linger: 0 });
    this.push = new zmq.Push({ linger: 0 });
  }

  async connect(heartbeatMs = 250): Promise<this> {
    this.dealer.connect(this.control);
    this.push.connect(this.results);
    this.loop = this.receiveLoop();
    await this.heartbeat();
    this.heartbeatMs = heartbeatMs;
    this.timer = setInterval(() => void this.heartbeat(), heartbeatMs);
    FakeReceiver.live.add(this);
    return this;
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.dealer.receive();
      } catch {
        return;
      }
      const m = decodeMergerMessage(frames[0]!);
      this.received.push(m);
      if (m.type === 'acquire' && this.autoJoin) {
        this.state.acquisition = m.acquisition;
        this.state.phase = 'running';
        void this.sendControl(encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'ready', acquisition: m.acquisition, sector: this.sector }));
      } else if ((m.type === 'stop' || m.type === 'abort') && this.state.acquisition === m.acquisition) {
        this.state.acquisition = null;
        this.state.phase = 'armed';
      }
    }
  }

  /** the last heartbeat sent */
  lastHeartbeat: HeartbeatMessage | null = null;

  heartbeatMessage(): HeartbeatMessage {
    return { version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: 'receiver', sector: this.sector, pid: process.pid, ...this.state, counters: { ...this.state.counters }, sentAt: Date.now() };
  }

  heartbeat(): Promise<void> {
    const m = this.heartbeatMessage();
    this.lastHeartbeat = m;
    return this.sendControl(encodeLive(m));
  }

  /** Raw frames on the control socket. */
  sendControl(...frames: Array<Buffer | Uint8Array | string>): Promise<void> {
    this.chain = this.chain.then(() => (this.closed ? undefined : this.dealer.send(frames as Buffer[]))).catch(() => {});
    return this.chain;
  }

  /** Raw frames on the results socket. */
  sendResults(...frames: Array<Buffer | Uint8Array | string>): Promise<void> {
    return this.push.send(frames as Buffer[]);
  }

  sendPartial(p: PartialMessage): Promise<void> {
    // the test process is busy while it sends (encoding megabytes): keep every fake receiver's
    // heartbeat going, as a real receiver's own process would
    FakeReceiver.pumpHeartbeats();
    return this.push.send(encodeLive(p));
  }

  private static readonly live = new Set<FakeReceiver>();

  /** Heartbeat every fake receiver whose timer is overdue. */
  static pumpHeartbeats(): void {
    const t = Date.now();
    for (const r of FakeReceiver.live) if (r.timer && (r.lastHeartbeat?.sentAt ?? 0) < t - r.heartbeatMs) void r.heartbeat();
  }

  lastAcquire(): AcquireMessage | undefined {
    return this.received.filter((m): m is AcquireMessage => m.type === 'acquire').at(-1);
  }

  /** Stop heartbeats (a receiver gone silent), sockets stay open. */
  silence(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.silence();
    FakeReceiver.live.delete(this);
    this.dealer.close();
    this.push.close();
  }
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
