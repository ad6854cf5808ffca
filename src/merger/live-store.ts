/**
 * The merged live state of one acquisition epoch, versioned so that any client's update is
 * "what changed since the version it last saw", computed on demand.
 *
 * Every change bumps one counter, `version`, and stamps what it touched with it: a nav
 * buffer stamps each scan position it wrote (Uint32Array, plus a per-block maximum so that a
 * diff skips untouched blocks without reading them), a sig/single buffer and each status item
 * stamp themselves. A client's diff is then read off the stamps and sliced out of the live
 * buffers: nothing is queued per update or per client, and memory is O(size of the results)
 * whatever the update rate (see docs/protocol.md, "Latest wins").
 *
 * The merger core feeds a store (defineBuffer, updateNavRange, setSig, setDamage, …);
 * src/merger/ws-stream.ts reads it (diffSince). `LiveStoreRegistry` holds the stores of the
 * acquisitions and epochs still on offer and says which acquisition is current.
 */
import { TesseraError } from '../errors.js';
import {
  allocateTyped,
  DAMAGE_BLOCKS,
  DAMAGE_SECTORS,
  DAMAGE_UDF,
  dtypeScalars,
  elementsOf,
  isDType,
  productOf,
  bytesOf,
  type AcquisitionInfo,
  type AcquisitionState,
  type BufferDeclaration,
  type BufferKind,
  type BufferRange,
  type BufferUpdate,
  type DType,
  type Progress,
  type SectorStatus,
  type StateInfo,
  type TypedArray,
  type UpdateBody,
} from '../protocol/ws-messages.js';

/** Scan positions per block of the per-block version maximum. */
const NAV_BLOCK = 256;
/** At most this many ranges per nav buffer and update; more are merged across the smallest gaps. */
const MAX_RANGES = 16;
/** Versions are stamped into Uint32Arrays. */
const MAX_VERSION = 0xffff_fffe;

export interface BufferSpec {
  udfId: string;
  name: string;
  kind: BufferKind;
  dtype: DType;
  /** full shape; for nav buffers [...scanShape, ...extraShape] */
  shape: readonly number[];
}

/** One result buffer, live: `data` is the merged result, read it, don't write it directly. */
export interface LiveBuffer extends BufferSpec {
  readonly key: string;
  readonly data: TypedArray;
  /** version of the buffer's declaration */
  readonly definedAt: number;
  /** version of its last change (0: never written, all zeros) */
  readonly version: number;
  /** nav only: elements per scan position (product of the extra shape) */
  readonly perPosition: number;
  /** nav only: per scan position, the version at which it last changed */
  readonly positionVersion: Uint32Array | null;
}

interface MutableBuffer extends LiveBuffer {
  version: number;
  blockVersion: Uint32Array | null;
}

/** Which buffers a client wants: keys (`udf/name`) or UDF ids; null for all. */
export type BufferFilter = ReadonlySet<string> | null;

export interface ClientView {
  filter?: BufferFilter;
}

export interface LiveStoreOptions {
  acquisition: string;
  epoch?: number;
  scanShape: readonly number[];
  sectors?: number;
  info?: Record<string, unknown>;
  state?: AcquisitionState;
  /** clock for rates and state timestamps (ms); injectable for tests */
  now?: () => number;
}

export interface ProgressUpdate {
  framesMerged: number;
  framesTotal?: number | null;
  /** computed from the framesMerged series when not given */
  framesPerSecond?: number;
  /** computed from the rate and framesTotal when not given */
  etaSeconds?: number | null;
}

export const bufferKey = (udfId: string, name: string): string => `${udfId}/${name}`;

/** Frames/s estimate: the rate over the last completed window of at least this long. */
const RATE_WINDOW_MS = 1000;

function emptySector(sector: number): SectorStatus {
  return {
    sector,
    state: 'unknown',
    datagrams: 0,
    datagramsPerSecond: 0,
    lost: 0,
    duplicates: 0,
    late: 0,
    corrupt: 0,
    damagedFrames: 0,
  };
}

export class LiveStore {
  readonly acquisition: string;
  readonly epoch: number;
  readonly scanShape: readonly number[];
  readonly navSize: number;
  private _version = 0;
  private layoutVersion = 0;
  private readonly buffers = new Map<string, MutableBuffer>();
  private info: AcquisitionInfo;
  private infoVersion = 0;
  private state: StateInfo;
  private stateVersion = 0;
  private progress: Progress = { framesMerged: 0, framesTotal: null, framesPerSecond: 0, etaSeconds: null };
  private progressVersion = 0;
  private rateAnchor: { t: number; frames: number } | null = null;
  private readonly sectors: SectorStatus[];
  private sectorsVersion = 0;
  private readonly listeners = new Set<() => void>();
  private readonly now: () => number;

  constructor(options: LiveStoreOptions) {
    const { acquisition, epoch = 0, scanShape, sectors = 8 } = options;
    if (scanShape.length < 1 || !scanShape.every((d) => Number.isInteger(d) && d > 0)) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'scanShape', `expected positive integers, got ${JSON.stringify(scanShape)}`);
    }
    this.acquisition = acquisition;
    this.epoch = epoch;
    this.scanShape = [...scanShape];
    this.navSize = productOf(scanShape);
    this.now = options.now ?? Date.now;
    this.info = { ...options.info, scanShape: [...scanShape] };
    this.infoVersion = this.bump();
    this.state = { state: options.state ?? 'defined', message: null, since: this.now() };
    this.stateVersion = this.bump();
    this.sectors = Array.from({ length: sectors }, (_, i) => emptySector(i));
    this.defineBuffer({ udfId: DAMAGE_UDF, name: DAMAGE_SECTORS, kind: 'nav', dtype: 'uint8', shape: scanShape });
    this.defineBuffer({ udfId: DAMAGE_UDF, name: DAMAGE_BLOCKS, kind: 'nav', dtype: 'uint16', shape: scanShape });
  }

  get version(): number {
    return this._version;
  }

  /** Called after every change (synchronously; keep it cheap). Returns an unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private bump(): number {
    if (this._version >= MAX_VERSION) {
      throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'update the live store', `out of versions after ${MAX_VERSION} changes`);
    }
    return ++this._version;
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }

  // -------------------------------------------------------------------------------------------
  // buffers

  /** Declare (or re-declare, e.g. after a parameter change alters its shape) a buffer: zeroed. */
  defineBuffer(spec: BufferSpec): LiveBuffer {
    const { udfId, name, kind, dtype, shape } = spec;
    if (!isDType(dtype)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dtype', JSON.stringify(dtype));
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'shape', JSON.stringify(shape));
    }
    let perPosition = 0;
    if (kind === 'nav') {
      const prefix = shape.slice(0, this.scanShape.length);
      if (prefix.length !== this.scanShape.length || prefix.some((d, i) => d !== this.scanShape[i])) {
        throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', `shape of nav buffer ${bufferKey(udfId, name)}`,
          `${JSON.stringify(shape)} does not start with the scan shape ${JSON.stringify(this.scanShape)}`);
      }
      perPosition = productOf(shape.slice(this.scanShape.length));
    }
    const version = this.bump();
    const buffer: MutableBuffer = {
      udfId,
      name,
      kind,
      dtype,
      shape: [...shape],
      key: bufferKey(udfId, name),
      data: allocateTyped(dtype, productOf(shape)),
      definedAt: version,
      version: 0,
      perPosition,
      positionVersion: kind === 'nav' ? new Uint32Array(this.navSize) : null,
      blockVersion: kind === 'nav' ? new Uint32Array(Math.ceil(this.navSize / NAV_BLOCK)) : null,
    };
    this.buffers.set(buffer.key, buffer);
    this.layoutVersion = version;
    this.changed();
    return buffer;
  }

  removeBuffer(udfId: string, name: string): void {
    if (!this.buffers.delete(bufferKey(udfId, name))) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `buffer ${bufferKey(udfId, name)}`);
    this.layoutVersion = this.bump();
    this.changed();
  }

  getBuffer(udfId: string, name: string): LiveBuffer {
    return this.need(udfId, name);
  }

  listBuffers(): LiveBuffer[] {
    return [...this.buffers.values()];
  }

  private need(udfId: string, name: string, kind?: BufferKind): MutableBuffer {
    const buffer = this.buffers.get(bufferKey(udfId, name));
    if (!buffer) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `buffer ${bufferKey(udfId, name)}`);
    if (kind && buffer.kind !== kind) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', bufferKey(udfId, name), `is a ${buffer.kind} buffer, not ${kind}`);
    }
    return buffer;
  }

  private checkNavRange(buffer: MutableBuffer, start: number, end: number): void {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > this.navSize || start > end) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', `nav range of ${buffer.key}`, `[${start}, ${end}) outside [0, ${this.navSize})`);
    }
  }

  private stampNav(buffer: MutableBuffer, start: number, end: number, version: number): void {
    if (start === end) return;
    buffer.positionVersion!.fill(version, start, end);
    buffer.blockVersion!.fill(version, Math.floor(start / NAV_BLOCK), Math.floor((end - 1) / NAV_BLOCK) + 1);
    buffer.version = version;
  }

  /**
   * Write scan positions [start, end) (flat nav indices) of a nav buffer: `values` holds
   * (end - start) * perPosition elements (any numeric typed array; converted like TypedArray#set).
   */
  updateNavRange(udfId: string, name: string, start: number, end: number, values: TypedArray | ArrayLike<number>): void {
    const buffer = this.need(udfId, name, 'nav');
    this.checkNavRange(buffer, start, end);
    const scalars = dtypeScalars(buffer.dtype) * buffer.perPosition;
    if (values.length !== (end - start) * scalars) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', `values for ${buffer.key}[${start}, ${end})`,
        `expected ${(end - start) * scalars} scalars, got ${values.length}`);
    }
    (buffer.data as Float64Array).set(values as ArrayLike<number>, start * scalars);
    this.stampNav(buffer, start, end, this.bump());
    this.changed();
  }

  /**
   * Mark nav positions [start, end) changed after writing into `getBuffer(...).data` in place
   * (merging a partial result without an extra copy).
   */
  touchNavRange(udfId: string, name: string, start: number, end: number): void {
    const buffer = this.need(udfId, name, 'nav');
    this.checkNavRange(buffer, start, end);
    this.stampNav(buffer, start, end, this.bump());
    this.changed();
  }

  private setWhole(kind: BufferKind, udfId: string, name: string, data: TypedArray | ArrayLike<number>): void {
    const buffer = this.need(udfId, name, kind);
    if (data.length !== buffer.data.length) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', `data for ${buffer.key}`, `expected ${buffer.data.length} scalars, got ${data.length}`);
    }
    (buffer.data as Float64Array).set(data as ArrayLike<number>);
    buffer.version = this.bump();
    this.changed();
  }

  /** Replace a sig buffer's contents. */
  setSig(udfId: string, name: string, data: TypedArray | ArrayLike<number>): void {
    this.setWhole('sig', udfId, name, data);
  }

  /** Replace a single buffer's contents. */
  setSingle(udfId: string, name: string, data: TypedArray | ArrayLike<number>): void {
    this.setWhole('single', udfId, name, data);
  }

  /** Mark a sig/single buffer changed after writing into `getBuffer(...).data` in place. */
  touch(udfId: string, name: string): void {
    const buffer = this.need(udfId, name);
    if (buffer.kind === 'nav') {
      this.touchNavRange(udfId, name, 0, this.navSize);
      return;
    }
    buffer.version = this.bump();
    this.changed();
  }

  // -------------------------------------------------------------------------------------------
  // damage, progress, sectors, state

  /**
   * Damage of scan positions [start, end): sectors that arrived complete and blocks missing,
   * per position (arrays of end - start) or one value for all.
   */
  setDamage(
    start: number,
    end: number,
    sectorsComplete: ArrayLike<number> | number,
    blocksMissing: ArrayLike<number> | number,
  ): void {
    const sectors = this.need(DAMAGE_UDF, DAMAGE_SECTORS);
    const blocks = this.need(DAMAGE_UDF, DAMAGE_BLOCKS);
    this.checkNavRange(sectors, start, end);
    for (const [buffer, values] of [[sectors, sectorsComplete], [blocks, blocksMissing]] as const) {
      if (typeof values === 'number') (buffer.data as Uint8Array).fill(values, start, end);
      else if (values.length !== end - start) {
        throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', `damage values for [${start}, ${end})`, `got ${values.length}`);
      } else (buffer.data as Uint8Array).set(values, start);
    }
    const version = this.bump();
    this.stampNav(sectors, start, end, version);
    this.stampNav(blocks, start, end, version);
    this.changed();
  }

  setProgress(update: ProgressUpdate): void {
    const t = this.now();
    const framesTotal = update.framesTotal === undefined ? this.progress.framesTotal : update.framesTotal;
    let fps = update.framesPerSecond;
    if (fps === undefined) {
      fps = this.progress.framesPerSecond;
      if (!this.rateAnchor || update.framesMerged < this.rateAnchor.frames) this.rateAnchor = { t, frames: update.framesMerged };
      else if (t - this.rateAnchor.t >= RATE_WINDOW_MS) {
        fps = ((update.framesMerged - this.rateAnchor.frames) * 1000) / (t - this.rateAnchor.t);
        this.rateAnchor = { t, frames: update.framesMerged };
      }
    }
    let eta = update.etaSeconds;
    if (eta === undefined) {
      eta = framesTotal !== null && fps > 0 ? Math.max(0, framesTotal - update.framesMerged) / fps : null;
    }
    this.progress = { framesMerged: update.framesMerged, framesTotal, framesPerSecond: fps, etaSeconds: eta };
    this.progressVersion = this.bump();
    this.changed();
  }

  getProgress(): Progress {
    return { ...this.progress };
  }

  setSectorStatus(sector: number, status: Partial<Omit<SectorStatus, 'sector'>>): void {
    const current = this.sectors[sector];
    if (!current) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'sector', `${sector} outside [0, ${this.sectors.length})`);
    Object.assign(current, status, { sector });
    this.sectorsVersion = this.bump();
    this.changed();
  }

  getSectors(): SectorStatus[] {
    return this.sectors.map((s) => ({ ...s }));
  }

  setState(state: AcquisitionState, message: string | null = null): void {
    this.state = { state, message, since: this.now() };
    this.stateVersion = this.bump();
    this.changed();
  }

  getState(): StateInfo {
    return { ...this.state };
  }

  /** Replace the descriptive info (scanShape is always kept). */
  setInfo(info: Record<string, unknown>): void {
    this.info = { ...info, scanShape: [...this.scanShape] };
    this.infoVersion = this.bump();
    this.changed();
  }

  getInfo(): AcquisitionInfo {
    return this.info;
  }

  // -------------------------------------------------------------------------------------------
  // diffs

  /**
   * What a client that has seen everything up to `from` needs to be up to date (from = 0: a
   * full snapshot). The ranges' `data` are views into the live buffers: encode the result
   * before the store changes again.
   */
  diffSince(from: number, client: ClientView = {}): UpdateBody {
    const filter = client.filter ?? null;
    const body: UpdateBody = { acquisition: this.acquisition, epoch: this.epoch, from, version: this._version, buffers: [] };
    const wanted = [...this.buffers.values()].filter((b) => !filter || filter.has(b.key) || filter.has(b.udfId));
    if (this.layoutVersion > from) body.layout = wanted.map(declarationOf);
    for (const buffer of wanted) {
      // a buffer declared after `from` is new to the client: everything written since counts
      const since = buffer.definedAt > from ? 0 : from;
      if (buffer.version <= since) continue;
      const update: BufferUpdate = { key: buffer.key, ranges: [] };
      if (buffer.kind === 'nav') {
        const scalarsPer = buffer.perPosition * dtypeScalars(buffer.dtype);
        for (const [start, end] of changedNavRanges(buffer.positionVersion!, buffer.blockVersion!, since)) {
          const values = buffer.data.subarray(start * scalarsPer, end * scalarsPer);
          update.ranges.push(rangeOf(start * buffer.perPosition, end * buffer.perPosition, values));
        }
      } else {
        update.ranges.push(rangeOf(0, elementsOf(buffer.data, buffer.dtype), buffer.data));
      }
      if (update.ranges.length > 0) body.buffers.push(update);
    }
    if (this.infoVersion > from) body.info = this.info;
    if (this.stateVersion > from) body.state = { ...this.state };
    if (this.progressVersion > from) body.progress = { ...this.progress };
    if (this.sectorsVersion > from) body.sectors = this.getSectors();
    return body;
  }
}

function declarationOf(b: MutableBuffer): BufferDeclaration {
  return { key: b.key, udf: b.udfId, name: b.name, kind: b.kind, dtype: b.dtype, shape: [...b.shape], definedAt: b.definedAt };
}

function rangeOf(start: number, end: number, values: TypedArray): BufferRange {
  return { start, end, data: bytesOf(values) };
}

/**
 * Ranges [start, end) of scan positions covering every position stamped after `since`:
 * changed blocks found from the block maxima, their ends trimmed to the first and last changed
 * position, runs closer than the smallest gaps merged until at most MAX_RANGES remain.
 * Unchanged positions inside a range are sent too; they hold what the client already has.
 */
function changedNavRanges(positions: Uint32Array, blocks: Uint32Array, since: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let b = 0; b < blocks.length; b++) {
    if (blocks[b]! <= since) continue;
    let e = b + 1;
    while (e < blocks.length && blocks[e]! > since) e++;
    let start = b * NAV_BLOCK;
    let end = Math.min(e * NAV_BLOCK, positions.length);
    while (positions[start]! <= since) start++;
    while (positions[end - 1]! <= since) end--;
    runs.push([start, end]);
    b = e;
  }
  while (runs.length > MAX_RANGES) {
    let best = 1;
    for (let i = 2; i < runs.length; i++) {
      if (runs[i]![0] - runs[i - 1]![1] < runs[best]![0] - runs[best - 1]![1]) best = i;
    }
    runs[best - 1]![1] = runs[best]![1];
    runs.splice(best, 1);
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------

export interface LiveStoreRegistryOptions {
  /** epochs kept per acquisition (older ones are dropped when a new one is created) */
  keepEpochs?: number;
  /** acquisitions kept (the oldest non-current one is dropped when a new one is created) */
  keepAcquisitions?: number;
}

/**
 * The stores on offer: per acquisition, its most recent epochs; and which acquisition is
 * current (what subscribers to 'current' see). Memory is bounded by the two `keep` options.
 */
export class LiveStoreRegistry {
  private readonly acquisitions = new Map<string, Map<number, LiveStore>>();
  private readonly unsubscribe = new Map<LiveStore, () => void>();
  private currentId: string | null = null;
  private readonly listeners = new Set<() => void>();
  private readonly addListeners = new Set<(store: LiveStore) => void>();
  private readonly keepEpochs: number;
  private readonly keepAcquisitions: number;

  constructor(options: LiveStoreRegistryOptions = {}) {
    this.keepEpochs = Math.max(1, options.keepEpochs ?? 2);
    this.keepAcquisitions = Math.max(1, options.keepAcquisitions ?? 4);
  }

  /** Called after any change of any store, or of the registry itself. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Called with every store added, before anyone is told of it: a second producer of results
   * for the acquisition (the whole-frame merger) declares its buffers there, so that the first
   * snapshot of each epoch already has them.
   */
  onAdd(listener: (store: LiveStore) => void): () => void {
    this.addListeners.add(listener);
    return () => this.addListeners.delete(listener);
  }

  private readonly notify = (): void => {
    for (const l of this.listeners) l();
  };

  /**
   * Add a store (a new acquisition, or the next epoch of one); makes its acquisition current
   * unless `makeCurrent` is false.
   */
  add(store: LiveStore, makeCurrent = true): LiveStore {
    for (const l of this.addListeners) l(store);
    let epochs = this.acquisitions.get(store.acquisition);
    if (!epochs) {
      epochs = new Map();
      this.acquisitions.set(store.acquisition, epochs);
    }
    const previous = epochs.get(store.epoch);
    if (previous) this.detach(previous);
    epochs.set(store.epoch, store);
    this.unsubscribe.set(store, store.onChange(this.notify));
    while (epochs.size > this.keepEpochs) this.detach(epochs.get(Math.min(...epochs.keys()))!);
    if (makeCurrent) this.currentId = store.acquisition;
    for (const id of this.acquisitions.keys()) {
      if (this.acquisitions.size <= this.keepAcquisitions) break;
      if (id !== this.currentId && id !== store.acquisition) this.remove(id, false);
    }
    this.notify();
    return store;
  }

  /** Create and add a store; see `add`. */
  create(options: LiveStoreOptions, makeCurrent = true): LiveStore {
    return this.add(new LiveStore(options), makeCurrent);
  }

  private detach(store: LiveStore): void {
    this.unsubscribe.get(store)?.();
    this.unsubscribe.delete(store);
    this.acquisitions.get(store.acquisition)?.delete(store.epoch);
  }

  remove(acquisition: string, notify = true): void {
    const epochs = this.acquisitions.get(acquisition);
    if (!epochs) return;
    for (const store of [...epochs.values()]) this.detach(store);
    this.acquisitions.delete(acquisition);
    if (this.currentId === acquisition) this.currentId = null;
    if (notify) this.notify();
  }

  get current(): string | null {
    return this.currentId;
  }

  setCurrent(acquisition: string | null): void {
    if (acquisition !== null && !this.acquisitions.has(acquisition)) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${acquisition}`);
    this.currentId = acquisition;
    this.notify();
  }

  has(acquisition: string): boolean {
    return this.acquisitions.has(acquisition);
  }

  /** The store for (acquisition | 'current', epoch | 'latest'), if it is on offer. */
  get(acquisition: string, epoch: number | 'latest' = 'latest'): LiveStore | undefined {
    const id = acquisition === 'current' ? this.currentId : acquisition;
    const epochs = id === null ? undefined : this.acquisitions.get(id);
    if (!epochs || epochs.size === 0) return undefined;
    return epochs.get(epoch === 'latest' ? Math.max(...epochs.keys()) : epoch);
  }

  epochs(acquisition: string): number[] {
    return [...(this.acquisitions.get(acquisition)?.keys() ?? [])].sort((a, b) => a - b);
  }
}
