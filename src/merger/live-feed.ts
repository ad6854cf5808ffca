/**
 * `LiveFeed`: merged results into the LiveStores the WebSocket stream serves. One store per
 * epoch (a continuous scan adds one per repetition; the registry keeps the newest few).
 *
 * After each merged chunk: the chunk's scan positions of every nav result (nav maps grow row
 * by row), its damage, and the epoch's progress. Nav results that a UDF derives from all
 * positions in getResults (CoM's field, divergence, curl) change beyond the chunk: the row
 * before the chunk is sent too (gradients), and the whole map at most every `derivedIntervalMs`
 * and when the epoch completes. Sig and single results (whole images) are copied at most every
 * `sigIntervalMs` and when the epoch completes, so that a fast small scan does not copy a
 * 30 MB sum image per chunk.
 */
import { createLogger, type Logger } from '../log.js';
import { DAMAGE_UDF, type DType as WsDType } from '../protocol/ws-messages.js';

/** `_damage/sectorBlocks`: nav x sectors, uint32 bitmap of the zero-filled blocks of each sector's frame (0xffffffff: the sector was filled in by the merger) */
export const DAMAGE_SECTOR_BLOCKS = 'sectorBlocks';
import { getUdfClass } from '../udf/registry.js';
import { UDF } from '../udf/udf.js';
import type { UDFResults } from '../udf/dataset-results.js';
import type { EpochResults, LiveUdfSpec, MergedChunk } from './chunk-merger.js';
import type { LiveStore, LiveStoreRegistry } from './live-store.js';
import type { AcquisitionState, SectorStatus } from '../protocol/ws-messages.js';

export interface LiveFeedOptions {
  registry: LiveStoreRegistry;
  acquisition: string;
  scanShape: [number, number];
  udfs: LiveUdfSpec[];
  /** descriptive info for the stream (mode, UDFs, chunk size, …) */
  info: Record<string, unknown>;
  /** ROI-selected positions per epoch */
  framesPerEpoch: number;
  sectors: number;
  sigIntervalMs?: number;
  derivedIntervalMs?: number;
  log?: Logger;
}

interface EpochFeed {
  epoch: EpochResults;
  store: LiveStore;
  lastSig: number;
  lastDerived: number;
}

export class LiveFeed {
  private readonly epochs = new Map<number, EpochFeed>();
  private readonly derived: boolean[];
  private state: { state: AcquisitionState; message: string | null } = { state: 'defined', message: null };
  private sectors: SectorStatus[] = [];
  private readonly log: Logger;
  /** merged-chunk latencies (ms, from the partial's sentAt) since the last read */
  latencies: number[] = [];
  /** the newest merged chunk's latency (ms) and when it was merged: how far the live view lags */
  lastLatency: { ms: number; at: number } | null = null;

  constructor(private readonly o: LiveFeedOptions & { info: Record<string, unknown> }) {
    this.log = o.log ?? createLogger('live-feed');
    this.derived = o.udfs.map((u) => getUdfClass(u.name).prototype.getResults !== UDF.prototype.getResults);
  }

  /** The store of the newest epoch, if any. */
  get latest(): LiveStore | null {
    const newest = Math.max(-1, ...this.epochs.keys());
    return this.epochs.get(newest)?.store ?? null;
  }

  addEpoch(epoch: EpochResults): void {
    const o = this.o;
    const store = o.registry.create({ acquisition: o.acquisition, epoch: epoch.epoch, scanShape: o.scanShape, sectors: o.sectors, info: o.info, state: this.state.state });
    if (this.state.message) store.setState(this.state.state, this.state.message);
    const all = epoch.results.results();
    all.forEach((results, i) => {
      for (const [name, r] of Object.entries(results)) {
        const shape = r.kind === 'nav' ? [...o.scanShape, ...r.extraShape] : [...r.data.shape];
        store.defineBuffer({ udfId: o.udfs[i]!.id, name, kind: r.kind, dtype: r.dtype as WsDType, shape });
      }
    });
    // the exact damage: which blocks of which sector were zero-filled, per position
    store.defineBuffer({ udfId: DAMAGE_UDF, name: DAMAGE_SECTOR_BLOCKS, kind: 'nav', dtype: 'uint32', shape: [...o.scanShape, o.sectors] });
    store.setProgress({ framesMerged: 0, framesTotal: o.framesPerEpoch });
    for (const s of this.sectors) store.setSectorStatus(s.sector, s);
    this.epochs.set(epoch.epoch, { epoch, store, lastSig: 0, lastDerived: 0 });
    for (const e of [...this.epochs.keys()]) if (!o.registry.get(o.acquisition, e) || o.registry.get(o.acquisition, e) !== this.epochs.get(e)!.store) this.epochs.delete(e);
  }

  chunk(c: MergedChunk): void {
    const f = this.epochs.get(c.epoch.epoch);
    if (!f) return;
    const t = Date.now();
    const store = f.store;
    const [, w] = this.o.scanShape;
    const all = c.epoch.results.results();
    const sigDue = c.epoch.complete || t - f.lastSig >= (this.o.sigIntervalMs ?? 100);
    const derivedDue = c.epoch.complete || t - f.lastDerived >= (this.o.derivedIntervalMs ?? 1000);
    all.forEach((results, i) => this.write(store, this.o.udfs[i]!.id, results, c, this.derived[i]!, sigDue, derivedDue, w));
    if (sigDue) f.lastSig = t;
    if (derivedDue) f.lastDerived = t;
    store.updateNavRange(DAMAGE_UDF, DAMAGE_SECTOR_BLOCKS, c.navStart, c.navEnd, c.sectorBlocks);
    store.setDamage(c.navStart, c.navEnd, c.sectorsComplete, c.blocksMissing);
    store.setProgress({ framesMerged: c.epoch.framesMerged });
    if (c.sentAt > 0) {
      this.lastLatency = { ms: t - c.sentAt, at: t };
      this.latencies.push(t - c.sentAt);
      if (this.latencies.length > 10_000) this.latencies.splice(0, 5000);
    }
  }

  private write(store: LiveStore, udfId: string, results: UDFResults, c: MergedChunk, derived: boolean, sigDue: boolean, derivedDue: boolean, w: number): void {
    for (const [name, r] of Object.entries(results)) {
      if (r.kind === 'nav') {
        const per = r.data.length / store.navSize;
        let [start, end] = [c.navStart, c.navEnd];
        if (derived) [start, end] = derivedDue ? [0, store.navSize] : [Math.max(0, start - w), end];
        store.updateNavRange(udfId, name, start, end, r.data.subarray(start * per, end * per));
      } else if (sigDue) {
        if (r.kind === 'sig') store.setSig(udfId, name, r.data);
        else store.setSingle(udfId, name, r.data);
      }
    }
  }

  setState(state: AcquisitionState, message: string | null = null): void {
    this.state = { state, message };
    for (const f of this.epochs.values()) f.store.setState(state, message);
  }

  /** Bring the newest epoch's sig images and derived maps up to date (stop, end of a scan). */
  flush(): void {
    const newest = Math.max(-1, ...this.epochs.keys());
    const f = this.epochs.get(newest);
    if (!f) return;
    const all = f.epoch.results.results();
    all.forEach((results, i) => {
      for (const [name, r] of Object.entries(results)) {
        if (r.kind === 'nav') {
          if (this.derived[i]) f.store.updateNavRange(this.o.udfs[i]!.id, name, 0, f.store.navSize, r.data);
        } else if (r.kind === 'sig') f.store.setSig(this.o.udfs[i]!.id, name, r.data);
        else f.store.setSingle(this.o.udfs[i]!.id, name, r.data);
      }
    });
    f.lastSig = f.lastDerived = Date.now();
  }

  /** Add or replace some info fields (e.g. the recording's status), keeping the others. */
  mergeInfo(extra: Record<string, unknown>): void {
    this.updateInfo({ ...this.o.info, ...extra });
  }

  updateInfo(info: Record<string, unknown>): void {
    this.o.info = info;
    for (const f of this.epochs.values()) f.store.setInfo(info);
  }

  setSectors(sectors: SectorStatus[]): void {
    this.sectors = sectors;
    const store = this.latest;
    if (!store) return;
    for (const s of sectors) store.setSectorStatus(s.sector, s);
  }
}
