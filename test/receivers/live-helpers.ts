/**
 * For the live receiver tests: a stand-in merger on real ZeroMQ sockets (ROUTER for control,
 * PULL for partial results) that records what receivers send, the reference results of
 * the live UDFs computed with plain loops over a sector's frames, and a harness that drives a
 * PartialRunner directly with synthetic tiles and detector acquisitions.
 */
import { expect } from 'vitest';
import * as zmq from 'zeromq';
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import {
  decodeMergerMessage,
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
import { PartialRunner } from '../../receivers/partial-runner.js';
import type { AcquisitionInfo, AcquisitionSummary, SectorTile } from '../../receivers/tile.js';

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

/** Damage word of a position that never came (every block missing). */
export const MISSING_DAMAGE = 0xffffffff;

/** Pixels of one sector slice of a frame. */
export const SECTOR_PIXELS = SECTOR_HEIGHT * SECTOR_WIDTH;

/**
 * Sector slice of frame `index` of a synthetic detector acquisition: pseudo-random 12-bit
 * values, distinct per index. Another `seed` (or `salt`) gives another detector acquisition other
 * data, so a chunk mixing frames of two of them cannot match its reference.
 */
export function syntheticSectorFrame(seed: number, index: number, salt = 7): Uint16Array {
  const out = new Uint16Array(SECTOR_PIXELS);
  let s = (index * 2246822519 + seed * 3266489917 + salt) >>> 0;
  for (let i = 0; i < SECTOR_PIXELS; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 20;
  }
  return out;
}

/** One-frame tile of sector `sector` at scan index `index` of ShutterSync acquisition `acquisition`. */
export function sectorTile(sector: number, acquisition: number, index: number, data: Uint16Array, damage = 0): SectorTile {
  return {
    data,
    sector,
    acquisition,
    epoch: 0,
    scanIndex: index,
    depth: 1,
    rows: SECTOR_HEIGHT,
    sigOrigin: [0, sector * SECTOR_WIDTH],
    sigShape: [SECTOR_HEIGHT, SECTOR_WIDTH],
    damage: Uint32Array.of(damage),
    frames: [{ index, frameKey: index * 32, frameId: index }],
  };
}

/** What ShutterSync announces for a detector acquisition; joinedAt > 0: joined under way (a query). */
export function detectorAcquisition(o: Pick<AcquisitionInfo, 'acquisition' | 'sector' | 'round'> & Partial<AcquisitionInfo>): AcquisitionInfo {
  return { firstActiveKey: 0, scanPositions: null, continuous: false, joinedAt: 0, decidedBy: 'all', missingSectors: [], ...o };
}

/** The end of detector acquisition `a` after `frames` frames. */
export function endedAcquisition(a: AcquisitionInfo, frames: number, reason: AcquisitionSummary['reason'] = 'stream_stopped'): AcquisitionSummary {
  return { ...a, frames, reason };
}

/** The acquire as a receiver gets it: through the encoder and the validating decoder. */
export function acquireThroughWire(m: AcquireMessage): AcquireMessage {
  const d = decodeMergerMessage(encodeLive(m));
  if (d.type !== 'acquire') throw new Error('not an acquire');
  return d;
}

/**
 * A PartialRunner for sector `sector` of 8 that records what it sends (`sent`, through the wire
 * encoder and decoder, as the merger reads it) and the scan configurations it asks for (`scans`).
 */
export function partialRunnerRig(sector: number) {
  const sent: PartialMessage[] = [];
  const scans: unknown[] = [];
  const runner = new PartialRunner({ sector, sectors: 8, send: (p) => sent.push(decodePartialMessage(encodeLive(p))), configureScan: (next, current) => scans.push({ next, current }) });
  return { sent, scans, runner };
}

/** Which frame a scan position holds: `index` of the detector acquisition with data `seed`, or null (missing). */
export type FrameSource = (position: number) => { seed: number; index: number } | null;

/**
 * Check partial `p`: chunk `chunk` of epoch `epoch` of a scan of `positions` in chunks of
 * `chunkSize`, each position holding the frame `source` says (`frame(seed, index)`), or missing
 * (null: zeros, damage MISSING_DAMAGE); its results equal referenceChunk over those frames.
 */
export function expectChunkOf(
  p: PartialMessage,
  o: { sector: number; udfs: LiveUdf[]; positions: number; chunkSize: number; frame: (seed: number, index: number) => Uint16Array },
  epoch: number,
  chunk: number,
  source: FrameSource,
): void {
  const navStart = chunk * o.chunkSize;
  const navEnd = Math.min(navStart + o.chunkSize, o.positions);
  expect([p.epoch, p.chunk, p.navStart, p.navEnd], 'epoch, chunk, range').toEqual([epoch, chunk, navStart, navEnd]);
  const src = Array.from({ length: navEnd - navStart }, (_, k) => source(navStart + k));
  expect(Array.from(p.damage), `damage of epoch ${epoch} chunk ${chunk}`).toEqual(src.map((s) => (s === null ? MISSING_DAMAGE : 0)));
  const want = referenceChunk(o.udfs, o.sector, src.map((s) => (s === null ? new Uint16Array(SECTOR_PIXELS) : o.frame(s.seed, s.index))));
  expect(compareChunk(p, want), `epoch ${epoch} chunk ${chunk}`).toBeNull();
}

/** The small scan the PartialRunner tests use: 2 x 5, N = 10 positions, chunks of 4: [0,4) [4,8) [8,10). */
export const SMALL_SCAN: { shape: [number, number]; positions: number; chunkSize: number } = { shape: [2, 5], positions: 10, chunkSize: 4 };

/**
 * The PartialRunner harness of the continuous-scan tests (resume after the detector acquisition
 * ended, or after a link outage), on SMALL_SCAN: `frameFor(seed, index)` (syntheticSectorFrame
 * with `salt`), one-frame tiles, continuous ShutterSync acquisitions of N positions, `setUp()` for
 * a fresh runner with the continuous acquire `base`, and `expectChunk` (expectChunkOf).
 */
export function continuousRunnerHarness(o: { sector: number; salt: number; acquisition: string; udfs: LiveUdf[] }) {
  const { shape, positions, chunkSize } = SMALL_SCAN;
  const frameFor = (seed: number, index: number) => syntheticSectorFrame(seed, index, o.salt);
  return {
    frameFor,
    tile: (acquisition: number, seed: number, index: number) => sectorTile(o.sector, acquisition, index, frameFor(seed, index)),
    detector: (acquisition: number, round: number | null, joinedAt = 0) =>
      detectorAcquisition({ acquisition, sector: o.sector, round, scanPositions: positions, continuous: true, joinedAt }),
    setUp: () => ({ ...partialRunnerRig(o.sector), base: acquireMessage({ acquisition: o.acquisition, scanShape: shape, udfs: o.udfs, chunkSize, mode: 'continuous' }) }),
    expectChunk: (p: PartialMessage, epoch: number, chunk: number, source: FrameSource) =>
      expectChunkOf(p, { sector: o.sector, udfs: o.udfs, positions, chunkSize, frame: frameFor }, epoch, chunk, source),
  };
}
