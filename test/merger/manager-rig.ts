/**
 * For the AcquisitionManager tests driven without sockets (start race, resume after the detector
 * acquisition ended, resume after a link outage): a manager whose messages to the receivers are
 * recorded, the receivers' heartbeats and partials (PartitionTask over the sector slices of
 * simulator frames, as receivers compute them) fed in by hand, and the offline reference (runUdf
 * over the same frames) the merged epochs are compared with, bit-exact.
 */
import { expect } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { AcquisitionManager } from '../../src/merger/acquisition-manager.js';
import type { AcquisitionDefinition } from '../../src/merger/acquisition-schema.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage, type DetectorEnded, type HeartbeatMessage, type MergerToReceiver } from '../../src/protocol/live.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { computePartial, contextOf, SIG } from './live-helpers.js';

/** Scan 2 x 4: N = 8 positions, chunks of 4 (two per epoch). */
export const SCAN: [number, number] = [2, 4];
export const N = 8;
export const CHUNK = 4;
/** Damage word of a position that never came (every block missing). */
export const FULL = 0xffffffff;
export const UDFS = [
  { id: 'sum', name: 'SumUDF', params: {} },
  { id: 'sumsig', name: 'SumSigUDF', params: {} },
  { id: 'masks', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 200 }] } },
];
/** A whole frame of zeros: what a position that never came counts as. */
export const ZERO = new Uint16Array(FRAME_HEIGHT * FRAME_WIDTH);

/** The continuous acquisition of SCAN with UDFS in chunks of CHUNK, not recorded. */
export const continuousDefinition: AcquisitionDefinition = { scanShape: SCAN, udfs: UDFS, roi: null, mode: 'continuous', record: { enabled: false, path: null }, chunkSize: CHUNK };

const open = new Set<AcquisitionManager>();

/** Close every manager made by managerWithOutbox (call from afterEach). */
export function closeManagers(): void {
  for (const m of open) m.close();
  open.clear();
}

/** A manager over `registry` whose messages to the receivers land in `sent`; `acquires()`: the acquires among them. */
export function managerWithOutbox(registry = new LiveStoreRegistry()) {
  const sent: Array<{ sector: number; m: MergerToReceiver }> = [];
  const m = new AcquisitionManager({ registry, send: (sector, message) => (sent.push({ sector, m: message }), Promise.resolve(true)), chunkTimeoutMs: 300, livenessMs: 60_000 });
  open.add(m);
  const acquires = () => sent.filter((x) => x.m.type === 'acquire').map((x) => x.m as AcquireMessage);
  return { m, registry, sent, acquires };
}

/** A receiver's heartbeat: phase acquiring, nothing decided, nothing ended, unless `fields` say otherwise. */
export function receiverHeartbeat(sector: number, fields: Partial<HeartbeatMessage>): HeartbeatMessage {
  return {
    version: LIVE_PROTOCOL_VERSION,
    type: 'heartbeat',
    role: 'receiver',
    sector,
    pid: 1000 + sector,
    phase: 'acquiring',
    acquisition: null,
    lastIndex: null,
    shutterRound: null,
    positions: null,
    detectorEnded: null,
    counters: {},
    sentAt: Date.now(),
    ...fields,
  };
}

/** What the eight receivers' heartbeats say in the resume tests (each positions N). */
export type Beat = { acquisition: string | null; shutterRound?: number | null; lastIndex?: number | null; detectorEnded?: DetectorEnded | null };

/**
 * A manager with eight live sectors (pids pidBase + sector) that started the continuous
 * acquisition; `before`: what their heartbeats say when it starts. `deliver(epoch, chunk, frameAt)`
 * sends every sector's partial, a null frame being a position that never came (zeros, damage
 * FULL); `damage(epoch)`: the epoch store's damage map, per position the 8 sectors' block bitmaps.
 */
export function eightSectorRig(o: { pidBase: number; registry?: LiveStoreRegistry; before?: Beat }) {
  const { m, registry, sent, acquires } = managerWithOutbox(o.registry);
  const pids = Array.from({ length: 8 }, (_, s) => o.pidBase + s);
  const heartbeat = (sector: number, b: Beat) =>
    m.onControl(receiverHeartbeat(sector, { pid: pids[sector]!, acquisition: b.acquisition, lastIndex: b.lastIndex ?? null, shutterRound: b.shutterRound ?? null, positions: N, detectorEnded: b.detectorEnded ?? null }));
  const all = (b: Beat) => {
    for (let s = 0; s < 8; s++) heartbeat(s, b);
  };
  all(o.before ?? { acquisition: null });
  const id = m.define(continuousDefinition).id;
  m.start(id);
  const acquire = acquires()[0]!;
  const context = contextOf(acquire);
  const deliver = (epoch: number, chunk: number, frameAt: (pos: number) => Uint16Array | null) => {
    for (let s = 0; s < 8; s++) {
      const damage = new Uint32Array(CHUNK).map((_, k) => (frameAt(chunk * CHUNK + k) === null ? FULL : 0));
      m.onPartial(computePartial(acquire, s, epoch, chunk, (pos) => frameAt(pos) ?? ZERO, { context, damage }));
    }
  };
  const damage = (epoch: number) => Array.from({ length: N }, (_, p) => Array.from((registry.get(id, epoch)!.getBuffer('_damage', 'sectorBlocks').data as Uint32Array).subarray(p * 8, p * 8 + 8)));
  return { m, id, sent, heartbeat, all, deliver, acquires, pids, damage, acquire, registry };
}

/** The reference: runUdf offline over one epoch's N frames of SCAN. */
export function offline(frames: Uint16Array[]): Promise<UDFResults[]> {
  const data = new Uint16Array(N * ZERO.length);
  frames.forEach((f, i) => data.set(f, i * ZERO.length));
  return runUdf(new MemoryDataSet({ data, navShape: SCAN, sigShape: SIG }), UDFS.map((u) => createUdf({ name: u.name, params: u.params })));
}

/** Every buffer of UDFS in `got` equals `want` bit for bit (Object.is). */
export function expectEqual(got: UDFResults[], want: UDFResults[], what: string): void {
  UDFS.forEach((u, i) => {
    for (const [name, r] of Object.entries(want[i]!)) {
      const g = got[i]![name]!.data as ArrayLike<number>;
      expect(g.length, `${what} ${u.id}/${name}`).toBe(r.data.length);
      for (let k = 0; k < r.data.length; k++) if (!Object.is(g[k], r.data[k])) throw new Error(`${what} ${u.id}/${name}[${k}] = ${g[k]}, expected ${r.data[k]}`);
    }
  });
}
