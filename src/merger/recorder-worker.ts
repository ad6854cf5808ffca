/**
 * The recorder's writer thread: every HDF5 write of a recording happens here, never on the
 * merger's event loop. The main thread (src/merger/recorder.ts) posts complete copies of what
 * changed (RecorderBatch); this thread writes them into a working file, flushes it and then
 * publishes a consistent copy at the recording's path (copy to `<path>.tmp`, rename): a
 * SIGKILL at any moment leaves the last published copy intact and readable, whatever state the
 * working file was in. close() renames the working file itself into place.
 *
 * Replies: 'opened', 'written' (per batch: write and publish times, file size), 'closed',
 * 'error' (code and message; the thread then refuses further batches).
 *
 * The path was checked to lie inside the data directory before the recording started
 * (record-path.ts). A link swapped in later (the directory replaced by a symbolic link, or a
 * link planted at `<path>.tmp`) would send the writes elsewhere, so before every create,
 * publish and rename the thread checks that the directory still resolves to where it did at
 * open and that none of its file names is a link; if not, the recording fails
 * (TESSERA_ERR_RECORD_PATH) and nothing more is written.
 */
import { copyFileSync, constants as fsConstants, lstatSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parentPort } from 'node:worker_threads';
import { TesseraError } from '../errors.js';
import { ReducedFileWriter, type AttrValue } from '../io/reduced-file.js';
import type { DType, TypedArray } from '../udf/dtype.js';

export interface RecordedBuffer {
  kind: 'nav' | 'sig' | 'single';
  dtype: DType;
  extraShape: number[];
  shape: number[];
  data: TypedArray;
  /** the valid mask and its shape, when not every position is valid */
  valid: { data: Uint8Array; shape: number[] } | null;
}

export interface RecordedUdf {
  id: string;
  name: string;
  params: string;
  buffers: Record<string, RecordedBuffer>;
}

export interface RecordedEpoch {
  /** '' (single scan: the file's root) or '/epochs/<k>' */
  prefix: string;
  attrs: Record<string, AttrValue>;
  udfs: RecordedUdf[];
  sectorsComplete: Uint8Array;
  blocksMissing: Uint16Array;
  mergedAt: Float64Array;
  navShape: number[];
  /** append the sig and single buffers (present in udfs) as a snapshot row taken at this time */
  snapshotAt: number | null;
  framesMerged: number;
}

export interface RecorderBatch {
  type: 'write';
  seq: number;
  epochs: RecordedEpoch[];
  /** per-sector counters, [sectors, columns] */
  stats: { data: Float64Array; shape: number[]; attrs: Record<string, AttrValue> };
  rootAttrs: Record<string, AttrValue>;
  /** publish a consistent copy after this batch whatever the pacing (an epoch completed) */
  publish: boolean;
}

export type RecorderCommand =
  | { type: 'open'; path: string; attrs: Record<string, AttrValue>; roi: Uint8Array | null; navShape: number[]; minPublishIntervalMs: number }
  | RecorderBatch
  | { type: 'close'; attrs: Record<string, AttrValue> }
  /** tests: sleep this long before each batch (a slow disk) */
  | { type: 'delay'; ms: number };

export type RecorderReply =
  | { type: 'opened'; path: string }
  /** published: the recording's path now holds everything up to this batch */
  | { type: 'written'; seq: number; writeMs: number; publishMs: number | null; published: boolean; bytes: number }
  | { type: 'closed'; path: string; bytes: number }
  | { type: 'error'; code: string; message: string };

let writer: ReducedFileWriter | null = null;
let target = '';
let working = '';
let failed = false;
let delayMs = 0;
let minPublishIntervalMs = 1000;
let lastPublish = { at: 0, ms: 0 };
/** the recording's directory, resolved through links at open */
let realDir = '';

/** Whether the recording's directory still resolves to realDir. */
function placeUnchanged(): boolean {
  try {
    return realpathSync(dirname(target)) === realDir;
  } catch {
    return false;
  }
}

/** Throw unless the recording's directory still resolves to realDir and none of `names` (in it) is a link. */
function checkPlace(...names: string[]): void {
  let now: string;
  try {
    now = realpathSync(dirname(target));
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_RECORD_PATH', target, `its directory is gone (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (now !== realDir) throw new TesseraError('TESSERA_ERR_RECORD_PATH', target, `its directory now leads to ${now} (a link replaced it): recording stopped`);
  for (const name of names) {
    let link = false;
    try {
      link = lstatSync(name).isSymbolicLink();
    } catch {
      // absent: fine
    }
    if (link) throw new TesseraError('TESSERA_ERR_RECORD_PATH', target, `${basename(name)} is a symbolic link: recording stopped`);
  }
}

function reply(m: RecorderReply): void {
  parentPort!.postMessage(m);
}

function errorOf(err: unknown): { code: string; message: string } {
  if (err instanceof TesseraError) return { code: err.code, message: err.message };
  const e = err as NodeJS.ErrnoException;
  const why = e?.code === 'ENOSPC' ? 'no space left on the device' : (e?.message ?? String(err));
  return { code: 'TESSERA_ERR_OUTPUT', message: new TesseraError('TESSERA_ERR_OUTPUT', target, why).message };
}

function writeEpoch(w: ReducedFileWriter, e: RecordedEpoch): void {
  const p = e.prefix;
  if (p !== '') w.group(p);
  for (const u of e.udfs) {
    const g = `${p}/udf/${u.id}`;
    w.group(g);
    w.setAttrs(g, { name: u.name, params: u.params });
    for (const [name, b] of Object.entries(u.buffers)) {
      w.writeArray(`${g}/${name}`, b.data, b.shape, { dtype: b.dtype, attrs: { kind: b.kind, dtype: b.dtype, extra_shape: b.extraShape } });
      if (b.valid) w.writeArray(`${g}/${name}.valid`, b.valid.data, b.valid.shape, { dtype: 'uint8' });
      if (e.snapshotAt !== null && b.kind !== 'nav') w.appendRows(`${p}/snapshots/${u.id}/${name}`, b.data, b.shape, { dtype: b.dtype, attrs: { kind: b.kind, dtype: b.dtype } });
    }
  }
  w.writeArray(`${p}/damage`, e.sectorsComplete, e.navShape, { dtype: 'uint8', attrs: { description: 'sectors complete per scan position (of 8)' } });
  w.writeArray(`${p}/blocks_missing`, e.blocksMissing, e.navShape, { dtype: 'uint16', attrs: { description: 'blocks missing per scan position, all sectors' } });
  w.writeArray(`${p}/merged_at`, e.mergedAt, e.navShape, { dtype: 'float64', attrs: { unit: 'ms since 1970-01-01 UTC', description: 'when each scan position was merged (NaN: never)' } });
  if (e.snapshotAt !== null) {
    w.appendRows(`${p}/snapshots/time`, Float64Array.of(e.snapshotAt), [], { dtype: 'float64', attrs: { unit: 'ms since 1970-01-01 UTC' } });
    w.appendRows(`${p}/snapshots/frames_merged`, Float64Array.of(e.framesMerged), [], { dtype: 'float64' });
  }
  w.setAttrs(p === '' ? '/' : p, e.attrs);
}

/** Publish a consistent copy of the flushed working file at the recording's path. */
function publish(): void {
  const t0 = performance.now();
  const tmp = `${target}.tmp`;
  checkPlace(working, tmp, target);
  try {
    copyFileSync(working, tmp, fsConstants.COPYFILE_FICLONE);
    renameSync(tmp, target);
  } finally {
    // a link swapped in between the check and the copy (a race of microseconds) would have
    // taken the copy elsewhere: take it back and stop
    if (!placeUnchanged()) {
      rmSync(tmp, { force: true });
      rmSync(target, { force: true });
      checkPlace();
    }
  }
  lastPublish = { at: performance.now(), ms: performance.now() - t0 };
}

/**
 * The copy costs the file's size: publish at most every minPublishIntervalMs, and at most a
 * fifth of the time (a big recording is published less often; its lag says so).
 */
function publishDue(): boolean {
  return performance.now() - lastPublish.at >= Math.max(minPublishIntervalMs, 4 * lastPublish.ms);
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

async function handle(m: RecorderCommand): Promise<void> {
  if (m.type === 'delay') {
    delayMs = m.ms;
    return;
  }
  if (failed) return;
  try {
    if (m.type === 'open') {
      target = m.path;
      working = `${m.path}.writing`;
      minPublishIntervalMs = m.minPublishIntervalMs;
      realDir = realpathSync(dirname(target));
      checkPlace(working, `${target}.tmp`, target);
      writer = await ReducedFileWriter.create(working, { attrs: m.attrs });
      if (m.roi) writer.writeArray('/roi', m.roi, m.navShape, { dtype: 'uint8' });
      writer.flush();
      publish();
      reply({ type: 'opened', path: target });
    } else if (m.type === 'write') {
      if (!writer) throw new TesseraError('TESSERA_ERR_OUTPUT', target, 'the recording is not open');
      checkPlace(working, `${target}.tmp`, target);
      if (delayMs > 0) sleep(delayMs);
      const t0 = performance.now();
      for (const e of m.epochs) writeEpoch(writer, e);
      writer.writeArray('/stats', m.stats.data, m.stats.shape, { dtype: 'float64', attrs: m.stats.attrs });
      writer.setAttrs('/', m.rootAttrs);
      writer.flush();
      const t1 = performance.now();
      const published = m.publish || publishDue();
      if (published) publish();
      reply({ type: 'written', seq: m.seq, writeMs: t1 - t0, publishMs: published ? lastPublish.ms : null, published, bytes: statSync(target).size });
    } else if (m.type === 'close') {
      if (!writer) return;
      writer.setAttrs('/', m.attrs);
      writer.close();
      writer = null;
      checkPlace(working, target);
      renameSync(working, target);
      rmSync(`${target}.tmp`, { force: true });
      reply({ type: 'closed', path: target, bytes: statSync(target).size });
    }
  } catch (err) {
    failed = true;
    try {
      writer?.abort();
    } catch {
      // already failing
    }
    writer = null;
    reply({ type: 'error', ...errorOf(err) });
  }
}

// one command at a time, in order
let chain: Promise<void> = Promise.resolve();
parentPort?.on('message', (m: RecorderCommand) => {
  chain = chain.then(() => handle(m));
});
