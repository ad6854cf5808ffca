/**
 * `WholeFrameMerger`: the merger's side of the whole-frame UDFs of one acquisition. Workers
 * send the results of the frames they processed (`frames` messages, protocol.ts); each frame
 * is merged as a one-frame whole-frame partition into the epoch's DatasetResults with each
 * UDF's merge(dest, src), exactly as `runUdf` merges partitions, so the live result over the
 * processed frames equals the offline result over the same frames. Frames the shuffle did not
 * select (or skipped) are never merged: they stay invalid in the valid mask (NaN in derived
 * maps such as strain).
 *
 * Results go into the same LiveStore as the receivers' UDFs (one store per epoch, made by
 * LiveFeed), throttled to one publish per `publishMs`, with two nav buffers of UDF `_shuffle`:
 * `valid` (1 = processed) and `sectors` (sectors that arrived complete: 8, or fewer when the
 * frame was completed with zeros), and a single `counters` [merged, skipped, incomplete,
 * decimate] from the shuffle's status.
 */
import type { Logger } from '../log.js';
import type { LiveUdfSpec } from '../merger/chunk-merger.js';
import type { LiveStore, LiveStoreRegistry } from '../merger/live-store.js';
import { fromWire } from '../protocol/live.js';
import type { DType as WsDType } from '../protocol/ws-messages.js';
import { type BufferDeclaration, extraSize } from '../udf/buffers.js';
import { DatasetResults, type UDFResults } from '../udf/dataset-results.js';
import type { TypedArray } from '../udf/dtype.js';
import type { RunContext } from '../udf/meta.js';
import { wholeFrame } from '../udf/partition.js';
import { PartitionTask, type PartitionResult } from '../udf/partition-task.js';
import { NavSelection } from '../udf/roi.js';
import type { FrameResultsMessage, ShuffleStatus } from './protocol.js';

export const SHUFFLE_UDF_ID = '_shuffle';

export interface WholeFrameMergerOptions {
  acquisition: string;
  udfs: LiveUdfSpec[];
  context: RunContext;
  registry: LiveStoreRegistry;
  scanShape: [number, number];
  keepEpochs: number;
  publishMs?: number;
  log?: Logger;
}

interface EpochState {
  epoch: number;
  results: DatasetResults;
  valid: Uint8Array;
  sectors: Uint8Array;
  dirty: boolean;
  store: LiveStore | null;
}

export interface WholeFrameCounters {
  messages: number;
  framesMerged: number;
  dropped: Record<string, number>;
}

export class WholeFrameMerger {
  readonly counters: WholeFrameCounters = { messages: 0, framesMerged: 0, dropped: {} };
  readonly positions: number;
  private readonly selection: NavSelection;
  private readonly epochs = new Map<number, EpochState>();
  private readonly decls: Array<Record<string, BufferDeclaration>>;
  private empty: Array<Record<string, TypedArray>> | null = null;
  private status: ShuffleStatus | null = null;
  /** every buffer this merger publishes, declared once (the stores of all epochs get them) */
  private readonly layout: Array<{ udfId: string; name: string; kind: 'nav' | 'sig' | 'single'; dtype: WsDType; shape: number[] }>;
  private readonly defined = new WeakSet<LiveStore>();
  /** per UDF: parameters by the acquisition-relative frame they apply from (an epoch's results use those of its first frame) */
  private readonly params: Array<Array<{ fromFrame: number; params: Record<string, unknown> }>>;
  private readonly timer: NodeJS.Timeout;
  private readonly offAdd: () => void;
  private closed = false;

  constructor(private readonly o: WholeFrameMergerOptions) {
    this.positions = o.scanShape[0] * o.scanShape[1];
    this.selection = new NavSelection(o.context.roi, this.positions);
    this.params = o.udfs.map((u) => [{ fromFrame: 0, params: u.params }]);
    const first = this.epoch(0)!;
    this.decls = first.results.declarations;
    this.layout = [];
    first.results.results().forEach((results, i) => {
      for (const [name, r] of Object.entries(results)) {
        const shape = r.kind === 'nav' ? [...o.scanShape, ...r.extraShape] : [...r.data.shape];
        this.layout.push({ udfId: o.udfs[i]!.id, name, kind: r.kind, dtype: r.dtype as WsDType, shape });
      }
    });
    this.layout.push({ udfId: SHUFFLE_UDF_ID, name: 'valid', kind: 'nav', dtype: 'uint8', shape: [...o.scanShape] });
    this.layout.push({ udfId: SHUFFLE_UDF_ID, name: 'sectors', kind: 'nav', dtype: 'uint8', shape: [...o.scanShape] });
    this.layout.push({ udfId: SHUFFLE_UDF_ID, name: 'counters', kind: 'single', dtype: 'float64', shape: [4] });
    this.timer = setInterval(() => this.publish(), o.publishMs ?? 100);
    this.timer.unref();
    // every epoch's store (the tile merger makes them) has these buffers from its first
    // snapshot: a page that learns an acquisition's buffers from it would otherwise miss them
    this.offAdd = o.registry.onAdd((store) => {
      if (store.acquisition === o.acquisition) this.define(store);
    });
    const latest = o.registry.get(o.acquisition, 'latest');
    if (latest) this.define(latest);
  }

  private drop(reason: string, why: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    const n = Object.values(this.counters.dropped).reduce((a, b) => a + b, 0);
    if (n <= 20 || n % 1000 === 0) this.o.log?.warn({ reason, why, acquisition: this.o.acquisition }, 'whole-frame results dropped');
  }

  private epoch(epoch: number): EpochState | null {
    let e = this.epochs.get(epoch);
    if (e) return e;
    const newest = Math.max(-1, ...this.epochs.keys());
    if (epoch < newest - this.o.keepEpochs + 1) return null;
    e = {
      epoch,
      results: new DatasetResults(this.specsAt(epoch * this.positions), this.o.context),
      valid: new Uint8Array(this.positions),
      sectors: new Uint8Array(this.positions),
      dirty: true,
      store: null,
    };
    this.epochs.set(epoch, e);
    for (const old of [...this.epochs.keys()]) if (old <= epoch - this.o.keepEpochs) this.epochs.delete(old);
    return e;
  }

  /** Sig and single buffers of the UDFs over no frame: what frames after the first of a message merge. */
  private emptyBuffers(): Array<Record<string, TypedArray>> {
    if (this.empty) return this.empty;
    const first = this.o.context.roi ? this.o.context.roi.indexOf(1) : 0;
    const r = new PartitionTask({ udfs: this.o.udfs.map((u) => ({ name: u.name, params: u.params })), context: this.o.context, partition: { navStart: first, navEnd: first + 1, sig: wholeFrame(this.o.context.sigShape) } }).finish();
    this.empty = r.udfs;
    return this.empty;
  }

  private specsAt(frame: number): Array<{ name: string; params: Record<string, unknown> }> {
    return this.o.udfs.map((u, i) => {
      let p = this.params[i]![0]!.params;
      for (const q of this.params[i]!) if (q.fromFrame <= frame) p = q.params;
      return { name: u.name, params: p };
    });
  }

  /** New parameters of UDF `index` from acquisition-relative frame `fromFrame` (epochs that start there or later use them for their derived results). */
  setParams(index: number, params: Record<string, unknown>, fromFrame: number): void {
    this.params[index]!.push({ fromFrame, params });
    this.params[index]!.sort((a, b) => a.fromFrame - b.fromFrame);
  }

  setStatus(s: ShuffleStatus): void {
    this.status = s;
  }

  add(m: FrameResultsMessage): void {
    if (this.closed) return;
    this.counters.messages++;
    if (m.acquisition !== this.o.acquisition) return this.drop('acquisition', m.acquisition);
    if (m.udfs.length !== this.o.udfs.length) return this.drop('udfs', `${m.udfs.length} UDF results for ${this.o.udfs.length}`);
    const n = m.positions.length;
    if (n === 0) return;
    if (m.positions[n - 1]! >= this.positions) return this.drop('range', `position ${m.positions[n - 1]}`);
    for (const p of m.positions) if (!this.selection.isSelected(p)) return this.drop('range', `position ${p} is outside the ROI`);
    const [h, w] = this.o.context.sigShape;
    const arrays: Array<Record<string, TypedArray>> = [];
    for (let i = 0; i < this.o.udfs.length; i++) {
      const u = m.udfs[i]!;
      if (u.id !== this.o.udfs[i]!.id) return this.drop('udfs', `UDF ${i} is ${u.id}`);
      const out: Record<string, TypedArray> = {};
      for (const [name, d] of Object.entries(this.decls[i]!)) {
        if (d.use === 'resultOnly') continue;
        const wire = u.buffers[name];
        if (!wire || wire.dtype !== d.dtype) return this.drop('buffers', `${u.id}.${name} missing or not ${d.dtype}`);
        let arr: TypedArray;
        try {
          arr = fromWire(wire, `${u.id}.${name}`);
        } catch (err) {
          return this.drop('buffers', (err as Error).message);
        }
        const e = extraSize(d) * (d.dtype.startsWith('complex') ? 2 : 1);
        const expected = d.kind === 'nav' ? n * e : d.kind === 'sig' ? h * w * e : e;
        if (arr.length !== expected) return this.drop('buffers', `${u.id}.${name} has ${arr.length} elements, expected ${expected}`);
        out[name] = arr;
      }
      arrays.push(out);
    }
    const e = this.epoch(m.epoch);
    if (!e) return this.drop('late', `epoch ${m.epoch}`);
    const empty = this.decls.some((d) => Object.values(d).some((x) => x.kind !== 'nav' && x.use !== 'resultOnly')) ? this.emptyBuffers() : null;
    for (let k = 0; k < n; k++) {
      const p = m.positions[k]!;
      if (e.valid[p]) {
        this.drop('duplicate', `position ${p} of epoch ${m.epoch}`);
        continue;
      }
      const udfs = arrays.map((bufs, i) => {
        const one: Record<string, TypedArray> = {};
        for (const [name, arr] of Object.entries(bufs)) {
          const d = this.decls[i]![name]!;
          if (d.kind === 'nav') {
            const per = arr.length / n;
            one[name] = arr.subarray(k * per, (k + 1) * per);
          } else one[name] = k === 0 ? arr : empty![i]![name]!;
        }
        return one;
      });
      const r: PartitionResult = { navStart: p, navEnd: p + 1, sig: { origin: [0, 0], shape: [h, w] }, frames: 1, udfs };
      try {
        e.results.merge(r);
      } catch (err) {
        this.drop('merge', (err as Error).message);
        continue;
      }
      e.valid[p] = 1;
      e.sectors[p] = m.sectors[k]!;
      this.counters.framesMerged++;
    }
    e.dirty = true;
  }

  /** The merged results of an epoch (tests, recording). */
  results(epoch: number): { results: UDFResults[]; valid: Uint8Array; sectors: Uint8Array } | null {
    const e = this.epochs.get(epoch);
    return e ? { results: e.results.results(), valid: e.valid, sectors: e.sectors } : null;
  }

  get epochList(): number[] {
    return [...this.epochs.keys()];
  }

  /**
   * Write what changed into the epochs' live stores; the newest store gets the buffers and the
   * counters even before any of its frames is merged (workers trail a fast continuous scan).
   */
  publish(): void {
    const latest = this.o.registry.get(this.o.acquisition, 'latest');
    if (latest) {
      this.define(latest);
      const s = this.status;
      latest.setSingle(SHUFFLE_UDF_ID, 'counters', Float64Array.of(this.counters.framesMerged, s?.framesSkipped ?? 0, s?.framesIncomplete ?? 0, s?.decimate ?? 1));
    }
    for (const e of this.epochs.values()) {
      const store = this.o.registry.get(this.o.acquisition, e.epoch);
      if (!store || store.epoch !== e.epoch) continue;
      if (store !== e.store) {
        this.define(store);
        e.store = store;
        e.dirty = true;
      }
      if (!e.dirty) continue;
      e.dirty = false;
      const all = e.results.results();
      all.forEach((results, i) => {
        const id = this.o.udfs[i]!.id;
        for (const [name, r] of Object.entries(results)) {
          if (r.kind === 'nav') store.updateNavRange(id, name, 0, store.navSize, r.data as unknown as TypedArray);
          else if (r.kind === 'sig') store.setSig(id, name, r.data as unknown as TypedArray);
          else store.setSingle(id, name, r.data as unknown as TypedArray);
        }
      });
      store.updateNavRange(SHUFFLE_UDF_ID, 'valid', 0, store.navSize, e.valid);
      store.updateNavRange(SHUFFLE_UDF_ID, 'sectors', 0, store.navSize, e.sectors);
      const s = this.status;
      store.setSingle(SHUFFLE_UDF_ID, 'counters', Float64Array.of(this.counters.framesMerged, s?.framesSkipped ?? 0, s?.framesIncomplete ?? 0, s?.decimate ?? 1));
    }
  }

  private define(store: LiveStore): void {
    if (this.defined.has(store)) return;
    this.defined.add(store);
    for (const b of this.layout) store.defineBuffer(b);
  }

  close(): void {
    this.publish();
    this.closed = true;
    clearInterval(this.timer);
    this.offAdd();
  }
}
