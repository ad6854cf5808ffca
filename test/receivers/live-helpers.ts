/**
 * For the live receiver tests: a stand-in merger on real ZeroMQ sockets (ROUTER for control,
 * PULL for partial results) that records what receivers send, and the reference results of
 * the live UDFs computed with plain loops over a sector's frames.
 */
import * as zmq from 'zeromq';
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import {
  decodePartialMessage,
  decodeReceiverMessage,
  encodeLive,
  LIVE_PROTOCOL_VERSION,
  partialArrays,
  type AcquireMessage,
  type FailureMessage,
  type HeartbeatMessage,
  type LiveUdf,
  type MergerToReceiver,
  type PartialMessage,
  type ReadyMessage,
} from '../../src/protocol/live.js';

export class TestMerger {
  readonly heartbeats: HeartbeatMessage[] = [];
  readonly ready: ReadyMessage[] = [];
  readonly failures: FailureMessage[] = [];
  readonly partials: PartialMessage[] = [];
  /** routing ids seen on the control socket */
  readonly peers = new Set<string>();
  malformed = 0;
  private closed = false;
  private readonly loops: Promise<void>[];

  private constructor(
    private readonly router: zmq.Router,
    private readonly pull: zmq.Pull,
    readonly control: string,
    readonly results: string,
  ) {
    this.loops = [this.controlLoop(), this.resultsLoop()];
  }

  /** Bind on the given endpoints, or on free ports of 127.0.0.1. */
  static async start(control = 'tcp://127.0.0.1:*', results = 'tcp://127.0.0.1:*'): Promise<TestMerger> {
    const router = new zmq.Router({ linger: 0, handover: true });
    const pull = new zmq.Pull({ linger: 0 });
    await router.bind(control);
    await pull.bind(results);
    return new TestMerger(router, pull, router.lastEndpoint!, pull.lastEndpoint!);
  }

  async send(sector: number, m: MergerToReceiver | Buffer | Buffer[]): Promise<void> {
    const body = Buffer.isBuffer(m) ? [m] : Array.isArray(m) ? m : [encodeLive(m)];
    await this.router.send([`receiver-${sector}`, ...body]);
  }

  async until<T>(get: () => T | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = get();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`test merger: timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  lastHeartbeat(sector: number): HeartbeatMessage | undefined {
    for (let i = this.heartbeats.length - 1; i >= 0; i--) if (this.heartbeats[i]!.sector === sector) return this.heartbeats[i];
    return undefined;
  }

  /** Send acquire to each sector and wait for every `ready`. */
  async acquire(sectors: number[], m: AcquireMessage): Promise<void> {
    for (const s of sectors) await this.send(s, m);
    await this.until(() => sectors.every((s) => this.ready.some((r) => r.sector === s && r.acquisition === m.acquisition)), `ready from ${sectors.join(',')}`);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.router.close();
    this.pull.close();
    await Promise.all(this.loops.map((l) => l.catch(() => {})));
  }

  private async controlLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.router.receive();
      } catch {
        return;
      }
      this.peers.add(frames[0]!.toString());
      try {
        const m = decodeReceiverMessage(frames[1]!);
        if (m.type === 'heartbeat') this.heartbeats.push(m);
        else if (m.type === 'ready') this.ready.push(m);
        else this.failures.push(m);
      } catch {
        this.malformed++;
      }
    }
  }

  private async resultsLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.pull.receive();
      } catch {
        return;
      }
      try {
        this.partials.push(decodePartialMessage(frames[0]!));
      } catch {
        this.malformed++;
      }
    }
  }
}

export function acquireMessage(o: Partial<AcquireMessage> & Pick<AcquireMessage, 'acquisition' | 'scanShape' | 'udfs'>): AcquireMessage {
  return { version: LIVE_PROTOCOL_VERSION, type: 'acquire', roi: null, chunkSize: o.scanShape[1], mode: 'single', start: null, ...o };
}

/** The four UDF kinds the live path is tested with (disk and ring cover the middle sectors). */
export function standardLiveUdfs(disk = { cy: 930, cx: 1024, r: 300 }): LiveUdf[] {
  return [
    { id: 'sum', name: 'SumUDF', params: {} },
    { id: 'sumsig', name: 'SumSigUDF', params: {} },
    { id: 'vd', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', ...disk }, { type: 'ring', cy: 930, cx: 1024, ri: 200, ro: 700 }] } },
    { id: 'com', name: 'CoMUDF', params: {} },
  ];
}

type MaskParam = { type: 'disk'; cy: number; cx: number; r: number } | { type: 'ring'; cy: number; cx: number; ri: number; ro: number };

/**
 * Reference results of one chunk on sector `sector`, with plain loops: `frames` are that
 * sector's 1860 x 256 slices of the chunk's frames (missing blocks already zero-filled).
 */
export function referenceChunk(udfs: LiveUdf[], sector: number, frames: Uint16Array[]): Array<Record<string, Float64Array>> {
  const x0 = sector * SECTOR_WIDTH;
  const n = frames.length;
  return udfs.map((u) => {
    switch (u.name) {
      case 'SumUDF': {
        const out = new Float64Array(SECTOR_HEIGHT * SECTOR_WIDTH);
        for (const f of frames) for (let i = 0; i < out.length; i++) out[i] += f[i]!;
        return { intensity: out };
      }
      case 'SumSigUDF': {
        const out = new Float64Array(n);
        frames.forEach((f, k) => {
          let s = 0;
          for (let i = 0; i < f.length; i++) s += f[i]!;
          out[k] = s;
        });
        return { intensity: out };
      }
      case 'ApplyMasksUDF': {
        const masks = (u.params as { masks: MaskParam[] }).masks;
        const out = new Float64Array(n * masks.length);
        masks.forEach((m, j) => {
          const ro = m.type === 'disk' ? m.r : m.ro;
          const ri = m.type === 'ring' ? m.ri : -1;
          for (let y = 0; y < SECTOR_HEIGHT; y++) {
            for (let x = 0; x < SECTOR_WIDTH; x++) {
              const d2 = (y - m.cy) ** 2 + (x0 + x - m.cx) ** 2;
              if (!(d2 <= ro * ro && (ri < 0 || d2 > ri * ri))) continue;
              frames.forEach((f, k) => (out[k * masks.length + j] += f[y * SECTOR_WIDTH + x]!));
            }
          }
        });
        return { intensity: out };
      }
      case 'CoMUDF': {
        // whole-frame CoM: per frame sum I, sum y I, sum x I in frame coordinates
        const out = new Float64Array(n * 3);
        frames.forEach((f, k) => {
          for (let y = 0; y < SECTOR_HEIGHT; y++) {
            for (let x = 0; x < SECTOR_WIDTH; x++) {
              const v = f[y * SECTOR_WIDTH + x]!;
              out[k * 3] += v;
              out[k * 3 + 1] += y * v;
              out[k * 3 + 2] += (x0 + x) * v;
            }
          }
        });
        return { raw_mask_result: out };
      }
      default:
        throw new Error(`no reference for ${u.name}`);
    }
  });
}

/** Index of the first differing element, or -1; also when lengths or keys differ. */
export function compareChunk(p: PartialMessage, want: Array<Record<string, Float64Array>>): string | null {
  const got = partialArrays(p);
  if (got.length !== want.length) return `${got.length} UDFs, expected ${want.length}`;
  for (let u = 0; u < want.length; u++) {
    const g = got[u]!;
    const w = want[u]!;
    const gk = Object.keys(g).sort().join(',');
    const wk = Object.keys(w).sort().join(',');
    if (gk !== wk) return `UDF ${p.udfs[u]!.id}: buffers ${gk}, expected ${wk}`;
    for (const name of Object.keys(w)) {
      const a = g[name]!;
      const b = w[name]!;
      if (!(a instanceof Float64Array)) return `UDF ${p.udfs[u]!.id}.${name}: ${a.constructor.name}`;
      if (a.length !== b.length) return `UDF ${p.udfs[u]!.id}.${name}: length ${a.length}, expected ${b.length}`;
      for (let i = 0; i < a.length; i++) {
        if (a[i] !== b[i]) return `UDF ${p.udfs[u]!.id}.${name}[${i}] = ${a[i]}, expected ${b[i]}`;
      }
    }
  }
  return null;
}
