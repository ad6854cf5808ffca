/**
 * `AcquisitionRecorder`: records one acquisition's reduced stream into an HDF5 file
 * (layout "tessera-reduced/1", see src/io/reduced-file.ts and docs/protocol.md, "Recordings").
 *
 * The live path only pays for bookkeeping: chunk() stamps the merge time and the damage of the
 * chunk's scan positions (a few typed-array writes). Everything else runs behind: a timer takes
 * copies of the epochs that changed (every `writeIntervalMs`, and only while the writer thread
 * is idle, so a slow disk makes the recorder skip ahead instead of queueing) and hands them to
 * the writer thread (src/merger/recorder-worker.ts), which writes, flushes and publishes a
 * consistent copy at the recording's path. How far behind the file is (`lagMs`: age of the
 * oldest merged chunk not yet in the published file) is in status() and in the logs.
 *
 * Tracking runs for every acquisition (so that recording can be switched on mid-run with the
 * damage and merge times known); the file exists only between start() and stop()/close().
 * A write error (disk full, unwritable path) ends the recording with the error in status();
 * the live acquisition is not affected.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { TesseraError } from '../errors.js';
import { toJson, type AttrValue } from '../io/reduced-file.js';
import type { Logger } from '../log.js';
import { PROJECT_ROOT } from '../paths.js';
import type { SectorStatus } from '../protocol/ws-messages.js';
import type { UDFResults } from '../udf/dataset-results.js';
import type { AcquisitionDefinition } from './acquisition-schema.js';
import type { EpochResults, LiveUdfSpec, MergeCounters, MergedChunk } from './chunk-merger.js';
import type { RecordedEpoch, RecordedUdf, RecorderBatch, RecorderCommand, RecorderReply } from './recorder-worker.js';

export type RecordingState = 'off' | 'recording' | 'closing' | 'closed' | 'failed';

export interface RecordingStatus {
  enabled: boolean;
  /** the file (absolute), once recording started */
  path: string | null;
  state: RecordingState;
  error: { code: string; message: string } | null;
  /** age of the oldest merged chunk not yet in the published file (0: up to date) */
  lagMs: number;
  /** batches written */
  batches: number;
  /** size of the published file */
  bytes: number;
  /** HDF5 write + flush time of the last batch */
  lastWriteMs: number | null;
  /** time to publish the last consistent copy */
  lastPublishMs: number | null;
  /** epochs not recorded because the writer fell too far behind (bounded memory) */
  skippedEpochs: number;
  startedAt: string | null;
  endedAt: string | null;
}

export interface RecorderSettings {
  /** recordings go into this directory, never outside it */
  dataDir: string;
  /** take and write what changed at most this often */
  writeIntervalMs: number;
  /** append a snapshot of the sig and single buffers this often (the end state is the epoch's final dataset) */
  snapshotIntervalMs: number;
}

export const DEFAULT_RECORDER_SETTINGS: RecorderSettings = { dataDir: './data', writeIntervalMs: 1000, snapshotIntervalMs: 10_000 };

export interface AcquisitionRecorderOptions extends Omit<RecorderSettings, 'dataDir'> {
  acquisition: string;
  definition: AcquisitionDefinition;
  navShape: [number, number];
  sigShape: [number, number];
  udfs: LiveUdfSpec[];
  /** the merger's epochs still in memory */
  epochs: () => EpochResults[];
  /** per-sector counters and merge counters for /stats */
  stats: () => { sectors: SectorStatus[]; merge: MergeCounters };
  onStatus?: (status: RecordingStatus) => void;
  log?: Logger;
}

interface EpochTrack {
  e: EpochResults;
  mergedAt: Float64Array;
  sectorsComplete: Uint8Array;
  blocksMissing: Uint16Array;
  /** changed since the last batch taken */
  dirty: boolean;
  /** changed since the whole images were last taken */
  imagesDirty: boolean;
  /** written complete, final snapshot included */
  final: boolean;
  startedAt: number;
  completedAt: number | null;
  lastSnapshot: number;
  /** buffers whose valid mask has been written once (kept up to date from then on) */
  validWritten: Set<string>;
}

/** epochs waiting for the writer at most; older ones are skipped (and counted) */
const MAX_PENDING_EPOCHS = 3;

const STATS_COLUMNS = ['datagrams', 'lost', 'duplicates', 'late', 'corrupt', 'damagedFrames', 'alive'] as const;

/** The compiled writer thread (tests run the TypeScript sources: use the build's). */
function workerUrl(): URL {
  const here = new URL('./recorder-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  return new URL(`file://${join(PROJECT_ROOT, 'dist', 'src', 'merger', 'recorder-worker.js')}`);
}

export class AcquisitionRecorder {
  private readonly tracks = new Map<number, EpochTrack>();
  private worker: Worker | null = null;
  private timer: NodeJS.Timeout | null = null;
  private logTimer: NodeJS.Timeout | null = null;
  private inFlight: { seq: number; oldest: number | null } | null = null;
  private oldestUnwritten: number | null = null;
  /** oldest chunk written to the working file but not yet published */
  private oldestUnpublished: number | null = null;
  private seq = 0;
  private status_: RecordingStatus = { enabled: false, path: null, state: 'off', error: null, lagMs: 0, batches: 0, bytes: 0, lastWriteMs: null, lastPublishMs: null, skippedEpochs: 0, startedAt: null, endedAt: null };
  private waiters: Array<(r: RecorderReply) => void> = [];
  private finalState: string | null = null;

  constructor(private readonly o: AcquisitionRecorderOptions) {}

  private get positions(): number {
    return this.o.navShape[0] * this.o.navShape[1];
  }

  private get continuous(): boolean {
    return this.o.definition.mode === 'continuous';
  }

  // -------------------------------------------------------------------------------------------
  // the live path: bookkeeping only

  addEpoch(e: EpochResults): void {
    if (this.tracks.has(e.epoch)) return;
    const n = this.positions;
    this.tracks.set(e.epoch, {
      e,
      mergedAt: new Float64Array(n).fill(NaN),
      sectorsComplete: new Uint8Array(n),
      blocksMissing: new Uint16Array(n),
      dirty: true,
      imagesDirty: true,
      final: false,
      startedAt: Date.now(),
      completedAt: null,
      lastSnapshot: 0,
      validWritten: new Set(),
    });
    this.forgetOld(e.epoch);
    // a writer far behind must not keep every epoch of a fast continuous scan alive
    if (this.status_.state !== 'recording') return;
    const waiting = [...this.tracks.values()].filter((t) => !t.final).sort((a, b) => a.e.epoch - b.e.epoch);
    for (const t of waiting.slice(0, Math.max(0, waiting.length - MAX_PENDING_EPOCHS))) {
      this.tracks.delete(t.e.epoch);
      this.status_.skippedEpochs++;
      this.o.log?.warn({ acquisition: this.o.acquisition, epoch: t.e.epoch, skipped: this.status_.skippedEpochs }, 'recorder too far behind: an epoch is not recorded');
    }
  }

  chunk(c: MergedChunk): void {
    const t = this.tracks.get(c.epoch.epoch);
    if (!t) return;
    const now = Date.now();
    t.mergedAt.fill(now, c.navStart, c.navEnd);
    t.sectorsComplete.set(c.sectorsComplete, c.navStart);
    t.blocksMissing.set(c.blocksMissing, c.navStart);
    t.dirty = true;
    t.imagesDirty = true;
    if (c.epoch.complete && t.completedAt === null) t.completedAt = now;
    if (this.status_.state === 'recording') this.oldestUnwritten ??= now;
  }

  /**
   * Drop epochs the merger no longer holds once they are written (or when not recording);
   * `keep`: one just added. An epoch the merger holds is kept even when written final (a
   * recording stopped forces that): switched on again, the new file needs its merge times.
   */
  private forgetOld(keep?: number): void {
    const live = new Set(this.o.epochs().map((e) => e.epoch));
    const recording = this.status_.state === 'recording';
    for (const [k, t] of this.tracks) {
      if (k === keep || live.has(k)) continue;
      if (!recording || t.final || !t.dirty) this.tracks.delete(k);
    }
  }

  // -------------------------------------------------------------------------------------------
  // control

  status(): RecordingStatus {
    const s = this.status_;
    if (s.state === 'recording' || s.state === 'closing') {
      const oldest = Math.min(this.inFlight?.oldest ?? Infinity, this.oldestUnwritten ?? Infinity, this.oldestUnpublished ?? Infinity);
      s.lagMs = Number.isFinite(oldest) ? Date.now() - oldest : 0;
    }
    return { ...s, error: s.error ? { ...s.error } : null };
  }

  private changed(): void {
    this.o.onStatus?.(this.status());
  }

  /** Start writing `path` (absolute, checked by the caller); resolves once the file exists. */
  async start(path: string): Promise<RecordingStatus> {
    if (this.status_.state === 'recording' || this.status_.state === 'closing') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'start recording', `recording ${this.status_.state}`);
    const o = this.o;
    this.status_ = { enabled: true, path, state: 'recording', error: null, lagMs: 0, batches: 0, bytes: 0, lastWriteMs: null, lastPublishMs: null, skippedEpochs: 0, startedAt: new Date().toISOString(), endedAt: null };
    this.finalState = null;
    for (const t of this.tracks.values()) {
      t.dirty = true;
      t.imagesDirty = true;
      t.final = false;
      t.validWritten.clear();
      t.lastSnapshot = 0;
    }
    this.oldestUnwritten = null;
    this.oldestUnpublished = null;
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch (err) {
      this.failWith(new TesseraError('TESSERA_ERR_OUTPUT', path, (err as NodeJS.ErrnoException).code === 'ENOTDIR' ? `${dirname(path)} is not a directory` : (err as Error).message));
      return this.status();
    }
    const worker = new Worker(workerUrl());
    this.worker = worker;
    worker.on('message', (r: RecorderReply) => this.onReply(r));
    worker.on('error', (err) => this.failWith(new TesseraError('TESSERA_ERR_OUTPUT', path, `recorder thread failed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (this.worker === worker && this.status_.state === 'recording') this.failWith(new TesseraError('TESSERA_ERR_OUTPUT', path, `recorder thread exited (${code})`));
    });
    const d = o.definition;
    const attrs: Record<string, AttrValue> = {
      nav_shape: o.navShape,
      sig_shape: o.sigShape,
      acquisition: o.acquisition,
      mode: d.mode,
      scan_shape: d.scanShape,
      chunk_size: d.chunkSize,
      definition: toJson({ scanShape: d.scanShape, mode: d.mode, chunkSize: d.chunkSize, udfs: d.udfs, roi: d.roi ? { selected: d.roi.reduce((a: number, b: unknown) => a + (b ? 1 : 0), 0), positions: d.roi.length } : null }),
      udfs: toJson(d.udfs),
      started_at: this.status_.startedAt!,
      command: 'merger',
      layout: this.continuous ? 'epochs' : 'single',
    };
    const roi = d.roi ? Uint8Array.from(d.roi as ArrayLike<number>, (v) => (v ? 1 : 0)) : null;
    const opened = this.request({ type: 'open', path, attrs, roi, navShape: [...o.navShape], minPublishIntervalMs: o.writeIntervalMs });
    const r = await opened;
    if (r.type === 'error') return this.status();
    o.log?.info({ acquisition: o.acquisition, path }, 'recording started');
    this.timer = setInterval(() => this.tick(), o.writeIntervalMs);
    this.timer.unref();
    this.logTimer = setInterval(() => {
      const s = this.status();
      const level = s.lagMs > 5000 ? 'warn' : 'info';
      o.log?.[level]({ acquisition: o.acquisition, lagMs: s.lagMs, bytes: s.bytes, batches: s.batches, writeMs: s.lastWriteMs, publishMs: s.lastPublishMs }, s.lagMs > 5000 ? 'recorder behind' : 'recorder');
      this.changed();
    }, 5000);
    this.logTimer.unref();
    this.changed();
    this.tick();
    return this.status();
  }

  /** Tests: make the writer thread sleep before each batch (a slow disk). */
  slowDown(ms: number): void {
    this.worker?.postMessage({ type: 'delay', ms } satisfies RecorderCommand);
  }

  private request(m: RecorderCommand): Promise<RecorderReply> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.worker!.postMessage(m);
    });
  }

  private onReply(r: RecorderReply): void {
    const s = this.status_;
    if (r.type === 'written') {
      s.batches++;
      s.bytes = r.bytes;
      s.lastWriteMs = r.writeMs;
      if (r.published) {
        s.lastPublishMs = r.publishMs;
        this.oldestUnpublished = null;
      } else if (this.inFlight?.seq === r.seq && this.inFlight.oldest !== null) {
        this.oldestUnpublished = Math.min(this.oldestUnpublished ?? Infinity, this.inFlight.oldest);
      }
      if (this.inFlight?.seq === r.seq) this.inFlight = null;
      // written final: forgetOld() lets go of it once the merger does (not before: a recording
      // switched on again must still have every epoch the merger holds)
      this.forgetOld();
    } else if (r.type === 'error') {
      this.failWith(new TesseraError(r.code as 'TESSERA_ERR_OUTPUT', '', ''), r.message);
    } else if (r.type === 'closed') {
      s.bytes = r.bytes;
    }
    const waiter = this.waiters.shift();
    if (r.type !== 'written') waiter?.(r);
    else if (waiter) this.waiters.unshift(waiter);
  }

  private failWith(err: TesseraError, message = err.message): void {
    if (this.status_.state === 'failed') return;
    this.status_.state = 'failed';
    this.status_.error = { code: err.code, message };
    this.status_.endedAt = new Date().toISOString();
    this.o.log?.error({ acquisition: this.o.acquisition, path: this.status_.path, code: err.code, err: message }, 'recording failed; the acquisition goes on without it');
    this.stopTimers();
    const w = this.worker;
    this.worker = null;
    this.inFlight = null;
    for (const waiter of this.waiters.splice(0)) waiter({ type: 'error', code: err.code, message });
    void w?.terminate();
    this.changed();
  }

  private stopTimers(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.logTimer) clearInterval(this.logTimer);
    this.timer = this.logTimer = null;
  }

  // -------------------------------------------------------------------------------------------
  // behind the live path

  private tick(force = false): boolean {
    if (this.status_.state !== 'recording' && !(force && this.status_.state === 'closing')) return false;
    if (this.inFlight || !this.worker) return false;
    const now = Date.now();
    const epochs: RecordedEpoch[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const t of [...this.tracks.values()].sort((a, b) => a.e.epoch - b.e.epoch)) {
      if (t.final) continue;
      const completeNow = t.e.complete || force;
      // a snapshot row is the state of a running epoch; the end state is the final dataset
      const snapshot = !completeNow && t.imagesDirty && now - t.lastSnapshot >= this.o.snapshotIntervalMs;
      if (!t.dirty && !snapshot && !completeNow) continue;
      epochs.push(this.take(t, snapshot ? now : null, snapshot || completeNow, transfer));
      t.dirty = false;
      if (snapshot || completeNow) t.imagesDirty = false;
      if (snapshot) t.lastSnapshot = now;
      if (completeNow) t.final = true;
    }
    if (epochs.length === 0) return false;
    const seq = ++this.seq;
    const batch: RecorderBatch = { type: 'write', seq, epochs, stats: this.stats(), rootAttrs: this.rootAttrs(), publish: false };
    this.inFlight = { seq, oldest: this.oldestUnwritten };
    this.oldestUnwritten = null;
    this.worker.postMessage(batch, transfer);
    return true;
  }

  private rootAttrs(): Record<string, AttrValue> {
    const epochs = [...this.tracks.values()].map((t) => t.e.epoch);
    return { updated_at: new Date().toISOString(), skipped_epochs: this.status_.skippedEpochs, ...(this.continuous && epochs.length ? { newest_epoch: Math.max(...epochs) } : {}) };
  }

  private stats(): RecorderBatch['stats'] {
    const { sectors, merge } = this.o.stats();
    const n = Math.max(1, sectors.length);
    const data = new Float64Array(n * STATS_COLUMNS.length);
    sectors.forEach((s, i) => {
      STATS_COLUMNS.forEach((c, j) => {
        data[i * STATS_COLUMNS.length + j] = c === 'alive' ? (s.state === 'alive' ? 1 : 0) : s[c];
      });
    });
    return {
      data,
      shape: [n, STATS_COLUMNS.length],
      attrs: {
        columns: toJson(STATS_COLUMNS),
        description: 'per sector (row): counters of its receiver',
        partials_merged: merge.partialsMerged,
        chunks_merged: merge.chunksMerged,
        frames_merged: merge.framesMerged,
        sectors_filled: merge.sectorsFilled,
        params_mismatch: merge.paramsMismatch,
        dropped: toJson(merge.dropped),
      },
    };
  }

  /** Copies of an epoch's current results and bookkeeping, their buffers added to `transfer`. */
  private take(t: EpochTrack, snapshotAt: number | null, images: boolean, transfer: ArrayBuffer[]): RecordedEpoch {
    const all: UDFResults[] = t.e.results.results();
    const udfs: RecordedUdf[] = all.map((results, i) => {
      const spec = this.o.udfs[i]!;
      const buffers: RecordedUdf['buffers'] = {};
      for (const [name, rb] of Object.entries(results)) {
        // whole images (30 MB for a sum) are written with the snapshots and at the end only; nav maps every batch
        if (rb.kind !== 'nav' && !images) continue;
        const data = rb.data.slice();
        transfer.push(data.buffer as ArrayBuffer);
        let valid: RecordedUdf['buffers'][string]['valid'] = null;
        const key = `${spec.id}/${name}`;
        const mask = rb.validMask;
        if (mask !== null && (t.validWritten.has(key) || !mask.every((v) => v === 1))) {
          t.validWritten.add(key);
          const copy = mask.slice();
          transfer.push(copy.buffer as ArrayBuffer);
          valid = { data: copy, shape: [...mask.shape] };
        }
        buffers[name] = { kind: rb.kind, dtype: rb.dtype, extraShape: [...rb.extraShape], shape: [...rb.data.shape], data, valid };
      }
      // the definition's parameters follow PATCH /udfs/:udfId: the file has the newest ones
      const params = this.o.definition.udfs.find((u) => u.id === spec.id)?.params ?? spec.params ?? {};
      return { id: spec.id, name: spec.name, params: toJson(params), buffers };
    });
    const sectorsComplete = t.sectorsComplete.slice();
    const blocksMissing = t.blocksMissing.slice();
    const mergedAt = t.mergedAt.slice();
    transfer.push(sectorsComplete.buffer, blocksMissing.buffer, mergedAt.buffer);
    return {
      prefix: this.continuous ? `/epochs/${t.e.epoch}` : '',
      attrs: {
        epoch: t.e.epoch,
        epoch_started_at: new Date(t.startedAt).toISOString(),
        ...(t.completedAt !== null ? { epoch_completed_at: new Date(t.completedAt).toISOString() } : {}),
        frames_merged: t.e.framesMerged,
        chunks_merged: t.e.chunksMerged,
        complete: t.e.complete,
      },
      udfs,
      sectorsComplete,
      blocksMissing,
      mergedAt,
      navShape: [...this.o.navShape],
      snapshotAt,
      framesMerged: t.e.framesMerged,
    };
  }

  private async drain(): Promise<void> {
    while (this.inFlight && this.status_.state !== 'failed') await new Promise((r) => setTimeout(r, 10));
  }

  /**
   * Switch the recording off: write everything still pending (the current state of every epoch
   * as its final datasets) and close the file, which is then complete at its path. `finalState`
   * goes into the root attributes. Tracking goes on, so a later start() records everything.
   */
  async stop(finalState = 'recording stopped'): Promise<RecordingStatus> {
    // switched off: the status says so whatever state the file is in (closed, failed, never started)
    this.status_.enabled = false;
    return this.finish(finalState);
  }

  private async finish(finalState: string): Promise<RecordingStatus> {
    if (this.status_.state !== 'recording') return this.status();
    this.stopTimers();
    this.status_.state = 'closing';
    this.finalState = finalState;
    await this.drain();
    if (this.tick(true)) await this.drain();
    if (this.worker && (this.status_.state as RecordingState) !== 'failed') {
      const r = await this.request({ type: 'close', attrs: { ended_at: new Date().toISOString(), final_state: finalState } });
      if (r.type === 'closed') {
        this.status_.state = 'closed';
        this.status_.endedAt = new Date().toISOString();
        this.status_.lagMs = 0;
        this.o.log?.info({ acquisition: this.o.acquisition, path: r.path, bytes: r.bytes, batches: this.status_.batches }, 'recording closed');
      }
      const w = this.worker;
      this.worker = null;
      await w?.terminate();
    }
    this.changed();
    return this.status();
  }

  /** The acquisition ended: close the recording if one runs, stop tracking. */
  async close(finalState: string): Promise<void> {
    // the recording (if on) ran to the acquisition's end: it stays enabled in the status
    await this.finish(finalState);
    this.tracks.clear();
  }
}
