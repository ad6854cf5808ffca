/**
 * Reading a recording (written by src/merger/recorder.ts) for replay: its epochs with their
 * final results, damage and merge times (through readReducedFile), and the sig/single
 * snapshot series, read one row at a time on demand from a handle kept open (a snapshot of a
 * 1860x2048 float64 image is 30 MB; a recording may hold hundreds).
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type * as H5Types from 'h5wasm/node';
import { TesseraError } from '../errors.js';
import { readReducedFile, REDUCED_FORMAT, type ReducedFile } from '../io/reduced-file.js';
import type { TypedArray } from '../udf/dtype.js';

type H5Module = typeof H5Types.default;

let h5wasm: H5Module | undefined;
async function h5(): Promise<H5Module> {
  if (!h5wasm) {
    const mod = await import('h5wasm/node');
    await mod.default.ready;
    h5wasm = mod.default;
  }
  return h5wasm;
}

export interface SnapshotSeries {
  /** ms since 1970, ascending */
  times: number[];
  /** snapshot i of the buffer */
  at(i: number): TypedArray;
  /** index of the last snapshot taken at or before t, or -1 */
  indexAt(t: number): number;
}

export interface RecordedEpochView {
  epoch: number;
  /** '' (single scan at the root) or 'epochs/<k>' */
  prefix: string;
  results: ReducedFile;
  mergedAt: Float64Array;
  sectorsComplete: Uint8Array;
  blocksMissing: Uint16Array;
  /** first and last merge time (ms since 1970), NaN when nothing was merged */
  firstMerged: number;
  lastMerged: number;
  complete: boolean;
  snapshotTimes: number[];
}

function toNumbers(v: unknown): number[] {
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number | bigint>, Number);
  if (typeof v === 'number') return [v];
  return [];
}

/** A recording opened for replay; close() it when done. */
export class RecordingFile {
  private constructor(
    readonly path: string,
    readonly attrs: Record<string, unknown>,
    readonly navShape: [number, number],
    readonly sigShape: [number, number],
    readonly epochs: RecordedEpochView[],
    /** datasets at the root (stats, roi, and a single scan's damage and merged_at) */
    readonly rootDatasets: ReducedFile['datasets'],
    private file: H5Types.File | null,
  ) {}

  static async open(path: string): Promise<RecordingFile> {
    const abs = resolve(path);
    if (!existsSync(abs)) throw new TesseraError('TESSERA_ERR_NOT_FOUND', abs);
    const root = await readReducedFile(abs);
    if (root.format !== REDUCED_FORMAT) throw new TesseraError('TESSERA_ERR_NOT_A_RECORDING', abs, `format "${root.format}"`);
    if (root.navShape.length !== 2) throw new TesseraError('TESSERA_ERR_NOT_A_RECORDING', abs, 'no 2-D nav_shape');
    const m = await h5();
    const file = new m.File(abs, 'r');
    try {
      const prefixes: Array<{ epoch: number; prefix: string }> = [];
      const epochsGroup = file.get('epochs');
      if (epochsGroup instanceof m.Group) {
        for (const k of epochsGroup.keys()) if (/^\d+$/.test(k)) prefixes.push({ epoch: Number(k), prefix: `epochs/${k}` });
        prefixes.sort((a, b) => a.epoch - b.epoch);
      } else if (Object.keys(root.udfs).length > 0) {
        prefixes.push({ epoch: 0, prefix: '' });
      }
      if (prefixes.length === 0) throw new TesseraError('TESSERA_ERR_NOT_A_RECORDING', abs, 'no UDF results (is it a `tessera offline` file? replay needs a recording)');
      const epochs: RecordedEpochView[] = [];
      for (const { epoch, prefix } of prefixes) {
        const results = prefix === '' ? root : await readReducedFile(abs, { prefix });
        const d = results.datasets;
        if (!d.merged_at || !d.damage) throw new TesseraError('TESSERA_ERR_NOT_A_RECORDING', abs, `/${prefix} has no merged_at or damage`);
        const mergedAt = Float64Array.from(d.merged_at.data as ArrayLike<number>);
        let first = Infinity;
        let last = -Infinity;
        for (const t of mergedAt) {
          if (Number.isNaN(t)) continue;
          if (t < first) first = t;
          if (t > last) last = t;
        }
        const attrs = prefix === '' ? root.attrs : readGroupAttrs(file, prefix);
        const times = file.get(`${prefix}/snapshots/time`.replace(/^\//, ''));
        epochs.push({
          epoch,
          prefix,
          results,
          mergedAt,
          sectorsComplete: Uint8Array.from(d.damage.data as ArrayLike<number>),
          blocksMissing: d.blocks_missing ? Uint16Array.from(d.blocks_missing.data as ArrayLike<number>) : new Uint16Array(mergedAt.length),
          firstMerged: Number.isFinite(first) ? first : NaN,
          lastMerged: Number.isFinite(last) ? last : NaN,
          complete: attrs.complete === 1 || attrs.complete === true,
          snapshotTimes: times instanceof m.Dataset ? toNumbers(times.value) : [],
        });
      }
      const nav = root.navShape as [number, number];
      const sig = (root.sigShape.length === 2 ? root.sigShape : [1860, 2048]) as [number, number];
      return new RecordingFile(abs, root.attrs, nav, sig, epochs, root.datasets, file);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /** Recording start and end (ms since 1970): the root attributes, else the merge times. */
  get timeRange(): { start: number; end: number } {
    const merged = this.epochs.flatMap((e) => [e.firstMerged, e.lastMerged]).filter((t) => !Number.isNaN(t));
    const start = Date.parse(String(this.attrs.started_at ?? ''));
    const end = Date.parse(String(this.attrs.ended_at ?? this.attrs.updated_at ?? ''));
    return {
      start: Number.isFinite(start) ? start : Math.min(...merged),
      end: Number.isFinite(end) ? end : Math.max(...merged),
    };
  }

  /** The snapshot series of one sig/single buffer of an epoch. */
  snapshots(epoch: RecordedEpochView, udfId: string, name: string): SnapshotSeries {
    const file = this.file;
    if (!file) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', this.path, 'the recording is closed');
    const path = `${epoch.prefix}/snapshots/${udfId}/${name}`.replace(/^\//, '');
    const ds = file.get(path) as H5Types.Dataset | null;
    const times = epoch.snapshotTimes;
    const rows = ds && 'shape' in ds && ds.shape ? ds.shape[0]! : 0;
    const n = Math.min(rows, times.length);
    return {
      times: times.slice(0, n),
      at: (i: number) => {
        if (!ds || i < 0 || i >= n) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `snapshot ${i} of ${path}`);
        return ds.slice([[i, i + 1]]) as unknown as TypedArray;
      },
      indexAt: (t: number) => {
        let k = -1;
        for (let i = 0; i < n; i++) if (times[i]! <= t) k = i;
        return k;
      },
    };
  }

  close(): void {
    this.file?.close();
    this.file = null;
  }
}

function readGroupAttrs(file: H5Types.File, path: string): Record<string, unknown> {
  const g = file.get(path) as H5Types.Group | null;
  const out: Record<string, unknown> = {};
  if (!g) return out;
  for (const [k, a] of Object.entries(g.attrs)) {
    const v = a.value;
    out[k] = typeof v === 'bigint' ? Number(v) : v;
  }
  return out;
}

/** The snapshot series of one buffer (tests, tools): opens and reads the whole series. */
export async function readSnapshots(path: string, prefix: string, udfId: string, name: string): Promise<{ times: number[]; at(i: number): TypedArray }> {
  const rec = await RecordingFile.open(path);
  try {
    const epoch = rec.epochs.find((e) => e.prefix === prefix.replace(/^\//, ''));
    if (!epoch) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `epoch /${prefix} in ${path}`);
    const s = rec.snapshots(epoch, udfId, name);
    const rows = s.times.map((_, i) => s.at(i));
    return { times: s.times, at: (i) => rows[i]! };
  } finally {
    rec.close();
  }
}
