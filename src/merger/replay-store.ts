/**
 * `ReplayRegistry`: a recording (RecordingFile) served as LiveStores, so that the merger's
 * WebSocket stream and browser UI show it unchanged, at any time of the recorded stream.
 *
 * The state at time t of an epoch: the nav results at the scan positions merged by t (their
 * merged_at; NaN: never merged, as the recorder tracks merges from the acquisition's start),
 * the damage of those positions, and each sig/single result as its last snapshot taken at or
 * before t (the final result once the epoch's last position is merged).
 *
 * Which time a client sees (docs/protocol.md, "Replay"): a subscription to the recorded
 * acquisition id (or 'current') follows the registry's time (default: the end; setTime()
 * changes it for every such client); an id with a suffix `@t=<ms>` (ms since the recording
 * started; `@t=end` for the end) pins that client to one time. `epoch: 'latest'` is the newest
 * epoch begun by that time. The stores are built on demand and the last few are cached.
 */
import { TesseraError } from '../errors.js';
import type { AcquisitionState, DType as WsDType } from '../protocol/ws-messages.js';
import type { TypedArray } from '../udf/dtype.js';
import { LiveStore, LiveStoreRegistry } from './live-store.js';
import type { RecordedEpochView, RecordingFile } from './replay-file.js';

const CACHE = 8;
const TIME_SUFFIX = /^(.*)@t=(end|-?\d+(?:\.\d+)?)$/;

export interface ReplayTimeline {
  acquisition: string;
  path: string;
  /** ms since 1970 */
  start: number;
  end: number;
  /** the registry's time, ms since the recording's start */
  time: number;
  epochs: Array<{ epoch: number; firstMerged: number | null; lastMerged: number | null; complete: boolean; snapshots: number[] }>;
}

export class ReplayRegistry extends LiveStoreRegistry {
  readonly acquisition: string;
  private readonly start: number;
  private readonly end: number;
  /** ms since the recording's start */
  private time: number;
  private readonly cache = new Map<string, LiveStore>();
  private readonly finalState: { state: AcquisitionState; message: string | null };

  constructor(readonly recording: RecordingFile) {
    super({ keepEpochs: Math.max(1, recording.epochs.length), keepAcquisitions: 1 });
    this.acquisition = typeof recording.attrs.acquisition === 'string' ? recording.attrs.acquisition : 'recording';
    const { start, end } = recording.timeRange;
    this.start = start;
    this.end = end;
    this.time = end - start;
    this.finalState = recordedEndState(recording.attrs.final_state);
    // the stores at the end, so that 'current', has() and epochs() work as for a live merger
    for (const e of recording.epochs) this.add(this.storeAt(e, this.end), true);
  }

  /** Every client that follows the registry's time sees time `t` (ms since the start; null: the end). */
  setTime(t: number | null): number {
    const span = this.end - this.start;
    this.time = t === null ? span : Math.max(0, Math.min(span, t));
    this.setCurrent(this.acquisition); // tells the stream that the stores changed
    return this.time;
  }

  timeline(): ReplayTimeline {
    const opt = (v: number) => (Number.isNaN(v) ? null : v - this.start);
    return {
      acquisition: this.acquisition,
      path: this.recording.path,
      start: this.start,
      end: this.end,
      time: this.time,
      epochs: this.recording.epochs.map((e) => ({
        epoch: e.epoch,
        firstMerged: opt(e.firstMerged),
        lastMerged: opt(e.lastMerged),
        complete: e.complete,
        snapshots: e.snapshotTimes.map((t) => t - this.start),
      })),
    };
  }

  override get(acquisition: string, epoch: number | 'latest' = 'latest'): LiveStore | undefined {
    let id = acquisition;
    let rel = this.time;
    const m = TIME_SUFFIX.exec(acquisition);
    if (m) {
      id = m[1]!;
      rel = m[2] === 'end' ? this.end - this.start : Number(m[2]);
    }
    if (id !== 'current' && id !== this.acquisition) return undefined;
    const t = this.start + Math.max(0, rel);
    const epochs = this.recording.epochs;
    let view: RecordedEpochView | undefined;
    if (epoch === 'latest') {
      // the newest epoch begun by t (epoch 0 before anything was merged)
      view = epochs[0];
      for (const e of epochs) if (e.firstMerged <= t) view = e;
    } else view = epochs.find((e) => e.epoch === epoch);
    if (!view) return undefined;
    // a store per (epoch, what is visible): times between two merges share one
    const key = `${view.epoch}:${this.visibleKey(view, t)}`;
    let store = this.cache.get(key);
    if (!store) {
      store = this.storeAt(view, t);
      this.cache.set(key, store);
      if (this.cache.size > CACHE) this.cache.delete(this.cache.keys().next().value!);
    }
    return store;
  }

  private visibleKey(e: RecordedEpochView, t: number): string {
    let merged = 0;
    for (const m of e.mergedAt) if (m <= t) merged++;
    let snap = -1;
    e.snapshotTimes.forEach((s, i) => {
      if (s <= t) snap = i;
    });
    return `${merged}:${snap}:${t >= this.end ? 'end' : 'run'}`;
  }

  private storeAt(e: RecordedEpochView, t: number): LiveStore {
    const rec = this.recording;
    const nav = rec.navShape;
    const n = nav[0] * nav[1];
    const ended = t >= this.end;
    const store = new LiveStore({
      acquisition: this.acquisition,
      epoch: e.epoch,
      scanShape: nav,
      sectors: 8,
      info: this.info(t),
      state: ended ? this.finalState.state : 'running',
    });
    if (ended && this.finalState.message !== null) store.setState(this.finalState.state, this.finalState.message);
    const visible = new Uint8Array(n);
    let count = 0;
    for (let k = 0; k < n; k++) {
      // NaN (never merged) compares false
      if (e.mergedAt[k]! <= t) {
        visible[k] = 1;
        count++;
      }
    }
    const runs: Array<[number, number]> = [];
    for (let k = 0; k < n; ) {
      if (!visible[k]) {
        k++;
        continue;
      }
      let j = k;
      while (j < n && visible[j]) j++;
      runs.push([k, j]);
      k = j;
    }
    // the epoch's datasets are its end state: once everything is merged, or at the recording's end
    const final = ended || (count === n && !Number.isNaN(e.lastMerged) && t >= e.lastMerged);
    for (const [udfId, u] of Object.entries(e.results.udfs)) {
      for (const [name, b] of Object.entries(u.buffers)) {
        const dtype = (b.dtype === 'bool' ? 'uint8' : b.dtype) as WsDType;
        store.defineBuffer({ udfId, name, kind: b.kind, dtype, shape: b.shape });
        if (b.kind === 'nav') {
          const per = b.data.length / n;
          for (const [a, z] of runs) store.updateNavRange(udfId, name, a, z, (b.data as TypedArray).subarray(a * per, z * per));
          continue;
        }
        let data: TypedArray | null = null;
        if (final) data = b.data;
        else {
          const s = rec.snapshots(e, udfId, name);
          const i = s.indexAt(t);
          if (i >= 0) data = s.at(i);
        }
        if (data) b.kind === 'sig' ? store.setSig(udfId, name, data) : store.setSingle(udfId, name, data);
      }
    }
    for (const [a, z] of runs) store.setDamage(a, z, e.sectorsComplete.subarray(a, z), e.blocksMissing.subarray(a, z));
    store.setProgress({ framesMerged: count, framesTotal: n, framesPerSecond: 0, etaSeconds: null });
    return store;
  }

  private info(t: number): Record<string, unknown> {
    const a = this.recording.attrs;
    let udfs: unknown = [];
    try {
      udfs = JSON.parse(String(a.udfs ?? '[]'));
    } catch {
      udfs = [];
    }
    return {
      mode: a.mode,
      chunkSize: a.chunk_size,
      udfs,
      replay: { ...this.timeline(), t: t - this.start },
    };
  }
}

/**
 * The acquisition's state at the recording's end, from the file's `final_state`: done, aborted
 * or failed as recorded; a recording that ended before the acquisition ('recording stopped',
 * 'merger stopped') reports the acquisition still running, with that as the message.
 */
export function recordedEndState(finalState: unknown): { state: AcquisitionState; message: string | null } {
  if (finalState === 'done' || finalState === 'aborted' || finalState === 'failed') return { state: finalState, message: null };
  return { state: 'running', message: typeof finalState === 'string' && finalState !== '' ? finalState : 'recording ended early' };
}

/** Parse a replay time argument: ms since the start, or "end". */
export function parseReplayTime(text: string): number | null {
  if (text === 'end') return null;
  const v = Number(text);
  if (!Number.isFinite(v)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'time', `"${text}" is not a number of ms or "end"`);
  return v;
}
