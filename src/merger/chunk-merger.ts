/**
 * `ChunkMerger`: the merger's core arithmetic for one acquisition. Per (epoch, chunk) it
 * combines the eight sector partials with a PartitionCombiner (the sector-split rule of the
 * UDF engine), then merges the whole-frame chunk into that epoch's DatasetResults, exactly as
 * the offline runner does, so the live result equals `runUdf` over the same frames.
 *
 * Every partial is checked against the acquisition first (id, sector, epoch, chunk and its
 * frame range, the sector's signal slice, UDF ids, buffer names, dtypes and sizes); a bad one
 * is counted by reason and dropped, never merged and never a crash.
 *
 * A sector that does not deliver (its receiver is missing, or its partial did not come within
 * `chunkTimeoutMs` of the chunk's first partial) does not stall the acquisition: its slice is
 * completed with the result of the same UDFs over zero frames (what the receiver's zero-fill
 * of lost blocks means) and the damage map says so (32 blocks missing per frame, the sector
 * not complete). A chunk that no sector delivered while later chunks arrived is completed the
 * same way after the timeout.
 *
 * Epochs far ahead: a partial more than two epochs beyond the newest epoch being merged is held,
 * not merged, so that one confused or hostile sender cannot open epochs (and finish the ones in
 * progress) at will. But receivers do run ahead when the merger falls behind and partials of
 * whole epochs are dropped under back-pressure; then no partial of the epochs in between ever
 * comes, and refusing the later ones would stall the acquisition for good. So once a second
 * sector (or the only one) claims the same far epoch, the merger jumps to it: the held partials
 * are merged, the epochs skipped are logged, the older ones finish with what they have.
 */
import { TesseraError } from '../errors.js';
import type { Logger } from '../log.js';
import { fromWire, type PartialMessage } from '../protocol/live.js';
import { PartitionCombiner } from '../udf/combine.js';
import { DatasetResults } from '../udf/dataset-results.js';
import { dtypeCtor, dtypeOf, itemSize, type TypedArray, type DType } from '../udf/dtype.js';
import type { RunContext } from '../udf/meta.js';
import type { SigSlice } from '../udf/partition.js';
import { PartitionTask, type PartitionResult } from '../udf/partition-task.js';
import { NavSelection } from '../udf/roi.js';
import type { UDFSpec } from '../udf/udf.js';

export const BLOCKS_PER_SECTOR_FRAME = 32;

export interface LiveUdfSpec {
  id: string;
  name: string;
  params: Record<string, unknown>;
}

export interface ChunkMergerOptions {
  acquisition: string;
  udfs: LiveUdfSpec[];
  context: RunContext;
  chunkSize: number;
  mode: 'single' | 'continuous';
  sectors: number;
  /** wait this long after a chunk's first partial before filling in the sectors still missing */
  chunkTimeoutMs: number;
  /** epochs merged at the same time (older ones are finished and dropped) */
  keepEpochs: number;
  /** sectors currently known to be missing: the merger does not wait for them */
  isMissing: (sector: number) => boolean;
  onEpoch?: (epoch: EpochResults) => void;
  onChunk: (chunk: MergedChunk) => void;
  log?: Logger;
}

export interface EpochResults {
  epoch: number;
  results: DatasetResults;
  /** frames (ROI-selected) merged so far in this epoch */
  framesMerged: number;
  chunksMerged: number;
  readonly chunks: number;
  readonly complete: boolean;
}

export interface MergedChunk {
  epoch: EpochResults;
  chunk: number;
  navStart: number;
  navEnd: number;
  frames: number;
  /** per scan position of [navStart, navEnd) */
  sectorsComplete: Uint8Array;
  blocksMissing: Uint16Array;
  /** per position and sector (position-major, `sectors` per position): the zero-filled blocks' bitmap (0xffffffff: filled in) */
  sectorBlocks: Uint32Array;
  /** sectors filled in with zero frames */
  filledSectors: number[];
  /** newest sentAt of the partials (receiver clock), for latency figures */
  sentAt: number;
}

export interface MergeCounters {
  partialsMerged: number;
  chunksMerged: number;
  framesMerged: number;
  /** sector slices completed with zero frames */
  sectorsFilled: number;
  /** partials dropped, by reason */
  dropped: Record<string, number>;
  /** partials computed with another parameter version than the merger expected for their frames */
  paramsMismatch: number;
}

interface PendingChunk {
  epoch: number;
  chunk: number;
  navStart: number;
  navEnd: number;
  frames: number;
  combiner: PartitionCombiner;
  damage: Map<number, Uint32Array>;
  first: number;
  sentAt: number;
  timer: NodeJS.Timeout;
  /** aligned copies of unaligned sig buffers, back to the spare pool once merged */
  loans: TypedArray[];
}

interface EpochState extends EpochResults {
  merged: Uint8Array;
  complete: boolean;
}

interface ParamsEpoch {
  /** frame (relative to the acquisition start) from which these params apply */
  fromFrame: number;
  version: number;
  params: Record<string, unknown>;
}

export class ChunkMerger {
  readonly counters: MergeCounters = { partialsMerged: 0, chunksMerged: 0, framesMerged: 0, sectorsFilled: 0, dropped: {}, paramsMismatch: 0 };
  readonly positions: number;
  readonly chunksPerEpoch: number;
  private readonly selection: NavSelection;
  private readonly epochs = new Map<number, EpochState>();
  private readonly pending = new Map<string, PendingChunk>();
  /** newest epoch opened so far (-1: none) */
  private newestEpoch = -1;
  /** partials of one far-ahead epoch held until another sector claims it (one per sector) */
  private ahead: { epoch: number; partials: Map<number, PartialMessage> } | null = null;
  /** held partials released by the partial being added: merged right after it */
  private replay: PartialMessage[] = [];
  private readonly params: ParamsEpoch[][];
  private readonly sectorWidth: number;
  private zeroTile: Uint16Array | null = null;
  private closed = false;
  private droppedTotal = 0;
  /** frame-slice-sized arrays for unaligned sig buffers, by dtype and length (bounded) */
  private readonly spareSig = new Map<string, TypedArray[]>();
  /** the copies made while validating the current partial */
  private loaned: TypedArray[] = [];
  private readonly decls: DatasetResults['declarations'];

  constructor(private readonly o: ChunkMergerOptions) {
    const ctx = o.context;
    this.positions = ctx.navShape.reduce((a, b) => a * b, 1);
    this.chunksPerEpoch = Math.ceil(this.positions / o.chunkSize);
    this.selection = new NavSelection(ctx.roi, this.positions);
    this.sectorWidth = ctx.sigShape[1] / o.sectors;
    this.params = o.udfs.map((u) => [{ fromFrame: 0, version: 0, params: u.params }]);
    // epoch 0 exists from the start: its declarations are the acquisition's (parameter
    // changes that would change them are refused by the acquisition manager)
    this.decls = this.epochState(0)!.results.declarations;
  }

  /** Frames [navStart, navEnd) of chunk `chunk` within an epoch. */
  chunkRange(chunk: number): [number, number] {
    return [chunk * this.o.chunkSize, Math.min((chunk + 1) * this.o.chunkSize, this.positions)];
  }

  sectorSlice(sector: number): SigSlice {
    return { origin: [0, sector * this.sectorWidth], shape: [this.o.context.sigShape[0], this.sectorWidth] };
  }

  /** New parameters for UDF `index`, for frames from `fromFrame` (relative to the acquisition start) on. */
  setParams(index: number, params: Record<string, unknown>, version: number, fromFrame: number): void {
    const list = this.params[index]!;
    list.push({ fromFrame, version, params });
    list.sort((a, b) => a.fromFrame - b.fromFrame || a.version - b.version);
  }

  private paramsAt(index: number, frame: number): ParamsEpoch {
    const list = this.params[index]!;
    let p = list[0]!;
    for (const q of list) if (q.fromFrame <= frame) p = q;
    return p;
  }

  private specsAt(frame: number): UDFSpec[] {
    return this.o.udfs.map((u, i) => ({ name: u.name, params: this.paramsAt(i, frame).params }));
  }

  get epochList(): EpochResults[] {
    return [...this.epochs.values()];
  }

  /** Chunks that have partials but still wait for other sectors (/metrics). */
  get pendingChunks(): number {
    return this.pending.size;
  }

  /** Frames merged in total (all epochs). */
  get framesMerged(): number {
    return this.counters.framesMerged;
  }

  private drop(reason: string, why: string, p?: PartialMessage): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    this.droppedTotal++;
    if (this.droppedTotal <= 20 || this.droppedTotal % 1000 === 0) {
      this.o.log?.warn({ reason, why, sector: p?.sector, epoch: p?.epoch, chunk: p?.chunk, dropped: this.droppedTotal }, 'partial result dropped');
    }
  }

  /**
   * A partial of an epoch far ahead of `newest`: true when it may be merged (a second sector
   * claims that epoch, or there is one sector); else it is held (or dropped, counted) and false.
   */
  private claimAhead(p: PartialMessage, newest: number): boolean {
    const need = Math.min(2, this.o.sectors);
    if (!this.ahead || this.ahead.epoch !== p.epoch) {
      // a claim on another far epoch replaces the one held (the newest agreement wins)
      if (this.ahead) for (const held of this.ahead.partials.values()) this.drop('epoch', `epoch ${held.epoch} far ahead of epoch ${newest}: no other sector claimed it`, held);
      this.ahead = { epoch: p.epoch, partials: new Map() };
    }
    const claim = this.ahead;
    if (claim.partials.has(p.sector)) {
      this.drop('epoch', `epoch ${p.epoch} is far ahead of epoch ${newest}`, p);
      return false;
    }
    if (claim.partials.size + 1 < need) {
      claim.partials.set(p.sector, p);
      return false;
    }
    this.ahead = null;
    this.o.log?.warn({ from: newest, to: p.epoch, skipped: p.epoch - newest - 1, sectors: [...claim.partials.keys(), p.sector] }, 'receivers are epochs ahead (partials of the epochs in between were lost under back-pressure): merging jumps ahead');
    // merged right after this one (add() takes them once it is done with this partial)
    this.replay.push(...claim.partials.values());
    return true;
  }

  private epochState(epoch: number): EpochState | null {
    let e = this.epochs.get(epoch);
    if (e) return e;
    const newest = this.epochs.size ? Math.max(...this.epochs.keys()) : -1;
    if (epoch < newest - this.o.keepEpochs + 1) return null;
    const results = new DatasetResults(this.specsAt(epoch * this.positions), this.o.context);
    const chunks = this.chunksPerEpoch;
    e = { epoch, results, framesMerged: 0, chunksMerged: 0, chunks, complete: false, merged: new Uint8Array(chunks) };
    this.epochs.set(epoch, e);
    if (epoch > this.newestEpoch) this.newestEpoch = epoch;
    if (this.ahead && this.ahead.epoch <= epoch + 2) {
      // the epochs caught up with the held claim: it is merged in turn
      this.replay.push(...this.ahead.partials.values());
      this.ahead = null;
    }
    this.o.onEpoch?.(e);
    // epochs that fall out of the window are finished with what they have
    for (const old of [...this.epochs.keys()]) {
      if (old <= epoch - this.o.keepEpochs) this.finishEpoch(old);
    }
    return e;
  }

  private finishEpoch(epoch: number): void {
    for (const p of [...this.pending.values()]) if (p.epoch === epoch) this.complete(p);
    this.epochs.delete(epoch);
  }

  /** Check a partial against the acquisition; returns its arrays, or null (dropped). */
  private validate(p: PartialMessage): Array<Record<string, TypedArray>> | null {
    const o = this.o;
    if (p.acquisition !== o.acquisition) return this.drop('acquisition', `for acquisition ${p.acquisition}`, p), null;
    if (p.sector >= o.sectors) return this.drop('sector', `sector ${p.sector}`, p), null;
    if (o.mode === 'single' && p.epoch !== 0) return this.drop('epoch', `epoch ${p.epoch} of a single scan`, p), null;
    if (p.chunk >= this.chunksPerEpoch) return this.drop('chunk', `chunk ${p.chunk} of ${this.chunksPerEpoch}`, p), null;
    const [navStart, navEnd] = this.chunkRange(p.chunk);
    if (p.navStart !== navStart || p.navEnd !== navEnd) return this.drop('range', `chunk ${p.chunk} is [${navStart}, ${navEnd}), not [${p.navStart}, ${p.navEnd})`, p), null;
    const frames = this.selection.count(navStart, navEnd);
    if (p.frames !== frames) return this.drop('range', `${p.frames} frames, the ROI selects ${frames}`, p), null;
    const slice = this.sectorSlice(p.sector);
    if (p.sig.origin[0] !== slice.origin[0] || p.sig.origin[1] !== slice.origin[1] || p.sig.shape[0] !== slice.shape[0] || p.sig.shape[1] !== slice.shape[1]) {
      return this.drop('slice', `slice ${JSON.stringify(p.sig)} is not sector ${p.sector}'s`, p), null;
    }
    if (p.udfs.length !== o.udfs.length) return this.drop('udfs', `${p.udfs.length} UDF results for ${o.udfs.length} UDFs`, p), null;
    const newest = Math.max(this.newestEpoch, ...this.epochs.keys());
    if (p.epoch > newest + 2 && !this.claimAhead(p, newest)) return null;
    const decls = this.decls;
    const arrays: Array<Record<string, TypedArray>> = [];
    for (let i = 0; i < o.udfs.length; i++) {
      const u = p.udfs[i]!;
      if (u.id !== o.udfs[i]!.id) return this.drop('udfs', `UDF ${i} is ${u.id}, expected ${o.udfs[i]!.id}`, p), null;
      const expected = this.paramsAt(i, p.epoch * this.positions + navStart).version;
      if (u.paramsVersion !== expected) this.counters.paramsMismatch++;
      const out: Record<string, TypedArray> = {};
      for (const [name, w] of Object.entries(u.buffers)) {
        const d = decls[i]![name];
        if (!d) return this.drop('buffers', `${u.id} has no buffer ${name}`, p), null;
        if (d.dtype !== w.dtype) return this.drop('buffers', `${u.id}.${name} is ${w.dtype}, expected ${d.dtype}`, p), null;
        try {
          // sig buffers are only read (placed or added into the epoch's result): a view of the
          // message's bytes when aligned; nav and single ones are accumulated into, so copied
          out[name] = d.kind === 'sig' ? this.sigArray(w.dtype, w.data, `${u.id}.${name}`) : fromWire(w, `${u.id}.${name}`);
        } catch (err) {
          return this.drop('buffers', (err as Error).message, p), null;
        }
      }
      arrays.push(out);
    }
    return arrays;
  }

  /**
   * A sig buffer's bytes as a typed array: a view when aligned, else a copy into an array from
   * the spare pool (no allocation and garbage per partial for the frame-slice-sized buffers).
   */
  private sigArray(dtype: DType, data: Uint8Array, what: string): TypedArray {
    const size = itemSize(dtype);
    if (data.byteLength % size !== 0) return fromWire({ dtype, data }, what);
    if (data.byteOffset % size === 0) return new (dtypeCtor(dtype))(data.buffer, data.byteOffset, data.byteLength / size) as TypedArray;
    const out = this.spareSig.get(`${dtype}:${data.byteLength}`)?.pop() ?? (new (dtypeCtor(dtype))(data.byteLength / size) as TypedArray);
    new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(data);
    this.loaned.push(out);
    return out;
  }

  private giveBack(loans: TypedArray[]): void {
    for (const a of loans) {
      const key = `${dtypeOf(a)}:${a.byteLength}`;
      let list = this.spareSig.get(key);
      if (!list) this.spareSig.set(key, (list = []));
      // one chunk's worth is enough when chunks complete in turn
      if (list.length < this.o.sectors) list.push(a);
    }
  }

  /** Take one sector's partial result. */
  add(p: PartialMessage): void {
    this.addOne(p);
    while (this.replay.length > 0) this.addOne(this.replay.shift()!);
  }

  private addOne(p: PartialMessage): void {
    if (this.closed) return;
    this.loaned = [];
    const arrays = this.validate(p);
    if (!arrays) return;
    const key = `${p.epoch}:${p.chunk}`;
    const epoch = this.epochs.get(p.epoch);
    if (epoch?.merged[p.chunk]) return this.drop('late', `chunk ${p.chunk} of epoch ${p.epoch} is already merged`, p);
    let e: EpochState | null = epoch ?? null;
    if (!e) {
      e = this.epochState(p.epoch);
      if (!e) return this.drop('late', `epoch ${p.epoch} is no longer merged`, p);
    }
    let pending = this.pending.get(key);
    if (pending?.damage.has(p.sector)) return this.drop('duplicate', `sector ${p.sector} already delivered chunk ${p.chunk} of epoch ${p.epoch}`, p);
    if (!pending) pending = this.open(e, p.chunk);
    try {
      pending.combiner.add({ navStart: p.navStart, navEnd: p.navEnd, sig: p.sig, frames: p.frames, udfs: arrays });
    } catch (err) {
      if (pending.damage.size === 0) {
        clearTimeout(pending.timer);
        this.pending.delete(key);
      }
      return this.drop((err as TesseraError).code ?? 'combine', (err as Error).message, p);
    }
    this.counters.partialsMerged++;
    for (const a of this.loaned) pending.loans.push(a);
    pending.damage.set(p.sector, p.damage);
    pending.sentAt = Math.max(pending.sentAt, p.sentAt);
    this.maybeComplete(pending);
    // chunks before this one that nobody delivered get a timer of their own
    for (let c = 0; c < p.chunk; c++) if (!e.merged[c] && !this.pending.has(`${p.epoch}:${c}`)) this.open(e, c);
  }

  private open(e: EpochState, chunk: number): PendingChunk {
    const [navStart, navEnd] = this.chunkRange(chunk);
    const p: PendingChunk = {
      epoch: e.epoch,
      chunk,
      navStart,
      navEnd,
      frames: this.selection.count(navStart, navEnd),
      combiner: new PartitionCombiner(e.results.declarations, this.o.context.sigShape, e.results.sumMergedSig),
      damage: new Map(),
      first: Date.now(),
      sentAt: 0,
      timer: setTimeout(() => this.complete(p), this.o.chunkTimeoutMs),
      loans: [],
    };
    this.pending.set(`${e.epoch}:${chunk}`, p);
    return p;
  }

  private maybeComplete(p: PendingChunk): void {
    for (let s = 0; s < this.o.sectors; s++) if (!p.damage.has(s) && !this.o.isMissing(s)) return;
    this.complete(p);
  }

  /** Complete pending chunks that wait only for sectors now known to be missing. */
  recheck(): void {
    for (const p of [...this.pending.values()]) if (p.damage.size > 0) this.maybeComplete(p);
  }

  /** Complete every pending chunk now (stop): missing sectors are zero-filled. */
  flush(): void {
    for (const p of [...this.pending.values()]) this.complete(p);
  }

  /**
   * Complete every chunk of `epoch` not merged yet, from `fromChunk` on, with what came (nothing:
   * all sectors zero-filled and marked missing): the detector stream ended and they never will.
   */
  completeMissing(epoch: number, fromChunk = 0): void {
    if (this.closed) return;
    const e = this.epochState(epoch);
    if (!e) return;
    for (let c = fromChunk; c < e.chunks && !this.closed; c++) {
      if (e.merged[c]) continue;
      this.complete(this.pending.get(`${epoch}:${c}`) ?? this.open(e, c));
    }
  }

  /**
   * Complete every epoch before `epoch` (the detector acquisition ended and a continuous scan
   * resumes at `epoch`): what is pending now, and every chunk never merged as missing, so each
   * of them is finished like any epoch with damage. Epoch `epoch - 1` is opened if no partial
   * of it came.
   */
  completeBefore(epoch: number): void {
    this.flush();
    const open = [...this.epochs.keys()].filter((e) => e < epoch);
    if (epoch > 0 && !open.includes(epoch - 1)) open.push(epoch - 1);
    for (const e of open.sort((x, y) => x - y)) this.completeMissing(e);
  }

  /** The result of the UDFs over zero frames of one sector's slice. */
  private zeroPartial(p: PendingChunk, sector: number): PartitionResult {
    const slice = this.sectorSlice(sector);
    const task = new PartitionTask({
      udfs: this.specsAt(p.epoch * this.positions + p.navStart),
      context: this.o.context,
      partition: { navStart: p.navStart, navEnd: p.navEnd, sig: slice },
      tiling: { depth: 1, rows: slice.shape[0] },
    });
    const n = slice.shape[0] * slice.shape[1];
    if (this.zeroTile === null || this.zeroTile.length !== n) this.zeroTile = new Uint16Array(n);
    for (const [a, b] of this.selection.runs(p.navStart, p.navEnd)) {
      for (let f = a; f < b; f++) task.processTile({ data: this.zeroTile, navStart: f, depth: 1, sigOrigin: slice.origin, sigShape: slice.shape });
    }
    return task.finish();
  }

  private complete(p: PendingChunk): void {
    const key = `${p.epoch}:${p.chunk}`;
    if (this.pending.get(key) !== p) return;
    clearTimeout(p.timer);
    this.pending.delete(key);
    const e = this.epochs.get(p.epoch);
    if (!e || e.merged[p.chunk]) return;
    const filled: number[] = [];
    for (let s = 0; s < this.o.sectors; s++) {
      if (p.damage.has(s)) continue;
      filled.push(s);
      try {
        p.combiner.add(this.zeroPartial(p, s));
      } catch (err) {
        this.o.log?.error({ err, sector: s, chunk: p.chunk, epoch: p.epoch }, 'cannot fill a missing sector');
        return;
      }
    }
    if (filled.length) {
      this.counters.sectorsFilled += filled.length;
      this.o.log?.info({ epoch: p.epoch, chunk: p.chunk, sectors: filled, waitedMs: Date.now() - p.first }, 'chunk completed with missing sectors zero-filled');
    }
    const n = p.navEnd - p.navStart;
    const sectorsComplete = new Uint8Array(n);
    const blocksMissing = new Uint16Array(n);
    const sectorBlocks = new Uint32Array(n * this.o.sectors);
    for (let s = 0; s < this.o.sectors; s++) {
      const d = p.damage.get(s);
      for (let i = 0; i < n; i++) {
        const bits = d === undefined ? 0xffffffff : d[i]!;
        sectorBlocks[i * this.o.sectors + s] = bits;
        if (bits === 0) sectorsComplete[i]!++;
        else blocksMissing[i]! += popcount(bits);
      }
    }
    if (p.frames > 0) e.results.merge(p.combiner.result());
    // merged: nothing holds the slices any more
    this.giveBack(p.loans);
    p.loans = [];
    e.merged[p.chunk] = 1;
    e.chunksMerged++;
    e.framesMerged += p.frames;
    e.complete = e.chunksMerged === e.chunks;
    this.counters.chunksMerged++;
    this.counters.framesMerged += p.frames;
    this.o.onChunk({ epoch: e, chunk: p.chunk, navStart: p.navStart, navEnd: p.navEnd, frames: p.frames, sectorsComplete, blocksMissing, sectorBlocks, filledSectors: filled, sentAt: p.sentAt });
  }

  close(): void {
    this.closed = true;
    this.ahead = null;
    this.replay = [];
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
