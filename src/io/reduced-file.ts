/**
 * Tessera's reduced-data file, layout "tessera-reduced/1": UDF results in HDF5 (h5wasm), readable
 * by h5py. Written by `tessera offline`; built so that the merger's recorder can reuse it
 * (results under a group prefix such as /epochs/<k>, datasets overwritten in place as results
 * grow, extra datasets such as /damage, rows appended to /stats, flush()).
 *
 *   /                       attrs: format = "tessera-reduced/1", nav_shape, sig_shape,
 *                                  tessera_version, created, plus whatever the writer adds
 *                                  (offline: command, definition, input, sync_offset, ...)
 *   <prefix>/udf/<ID>       one group per UDF; attrs: name (registry name), params (JSON)
 *   <prefix>/udf/<ID>/<buf> one dataset per result buffer; attrs: kind (nav|sig|single),
 *                           dtype (Tessera's dtype name: "bool" is stored as uint8), extra_shape
 *                             nav:    [...nav_shape, ...extra]
 *                             sig:    [1860, 2048, ...extra]
 *                             single: extra (or [1])
 *   <prefix>/udf/<ID>/<buf>.valid
 *                           uint8 0/1, the buffer's valid mask (nav: nav_shape; sig: sig_shape),
 *                           present only when a write had positions that were not valid
 *                           (no such dataset: everything valid)
 *
 * ID is the UDF's id: its registry name unless the caller names it (two UDFs of one class need
 * two ids). Attribute values: strings, numbers, number arrays (int32 when all integers, else
 * float64); objects are stored as JSON strings.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type * as H5Types from 'h5wasm/node';
import { TesseraError } from '../errors.js';
import { PROJECT_ROOT } from '../paths.js';
import type { ResultBuffer, UDFResults } from '../udf/dataset-results.js';
import { type DType, type TypedArray, isDType } from '../udf/dtype.js';
import type { UDFSpec } from '../udf/udf.js';

export const REDUCED_FORMAT = 'tessera-reduced/1';

type H5Module = typeof H5Types.default;
type H5File = H5Types.File;
type H5Group = H5Types.Group;
type H5Dataset = H5Types.Dataset;

export type AttrValue = string | number | boolean | readonly number[] | TypedArray | Record<string, unknown> | unknown[];

export interface ReducedFileOptions {
  /** write to `<path>.partial-<pid>` and rename to `path` on close(); abort() leaves nothing (default false) */
  atomic?: boolean;
  /** gzip level 1..9 for new datasets larger than 64 KiB (chunked); 0 = none (default) */
  compression?: number;
  /** root attributes besides format, tessera_version and created */
  attrs?: Record<string, AttrValue>;
}

/** One UDF's results with the identity they are stored under. */
export interface NamedUdfResults {
  /** group name under udf/ */
  id: string;
  spec: UDFSpec;
  results: UDFResults;
}

// h5wasm reads dtype strings as struct codes ('f' float32, 'd' float64; digits after the code
// are ignored for numbers), not as numpy's '<f8'
const H5_DTYPE: Record<DType, string> = {
  float32: '<f',
  float64: '<d',
  int8: '|b',
  int16: '<h',
  int32: '<i',
  uint8: '|B',
  uint16: '<H',
  uint32: '<I',
  bool: '|B',
};

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);
const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/;

let version: string | undefined;
/** Tessera's version, from package.json. */
export function tesseraVersion(): string {
  if (version === undefined) {
    try {
      version = String((JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown');
    } catch {
      version = 'unknown';
    }
  }
  return version;
}

/** JSON with typed arrays as plain arrays (UDF params may carry masks or aux data). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v as unknown as ArrayLike<number>) : v));
}

let h5wasm: H5Module;
let h5ready: Promise<void> | undefined;
/**
 * h5wasm, loaded on first use (importing it costs ~80 MB and most of a second, which the other
 * roles of the CLI must not pay), with HDF5 errors thrown instead of printed to stderr.
 */
function h5(): Promise<void> {
  h5ready ??= import('h5wasm/node').then(async (mod) => {
    const m = await mod.default.ready;
    (m as unknown as { activate_throwing_error_handler?: () => number }).activate_throwing_error_handler?.();
    h5wasm = mod.default;
  });
  return h5ready;
}

/** The most specific line of an HDF5 error stack ("... error message = 'No such file'", or the innermost "#00n: ... in f(): why"). */
function hdf5Reason(err: unknown): string {
  const text = String((err as Error)?.message ?? err);
  const os = /error message = '([^']*)'/.exec(text);
  if (os) return os[1]!;
  const frames = [...text.matchAll(/#\d+: .* in (\w+)\(\): (.*)/g)];
  if (frames.length > 0) return `${frames.at(-1)![2]!.trim()} (${frames.at(-1)![1]})`;
  return text.split('\n')[0]!;
}

function outputError(path: string, err: unknown): TesseraError {
  const e = err as NodeJS.ErrnoException;
  const why =
    e?.code === 'ENOENT'
      ? existsSync(dirname(path))
        ? 'cannot create a file there'
        : `directory ${dirname(path)} does not exist`
      : e?.code === 'EACCES' || e?.code === 'EPERM'
        ? 'permission denied'
        : e?.code === 'EISDIR'
          ? 'it is a directory'
          : e?.code === 'ENOTDIR'
            ? `${dirname(path)} is not a directory`
            : e?.code === 'ENOSPC'
              ? 'no space left on the device'
              : hdf5Reason(err);
  return new TesseraError('TESSERA_ERR_OUTPUT', path, why);
}

/** Fail early, with the reason, where HDF5 would only print its error stack. */
function checkWritable(path: string, truncate: boolean): void {
  try {
    if (existsSync(path) && statSync(path).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    closeSync(openSync(path, truncate ? 'w' : 'a'));
  } catch (err) {
    throw outputError(path, err);
  }
}

function isHdf5(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(8);
    return readSync(fd, head, 0, 8, 0) === 8 && head.equals(HDF5_SIGNATURE);
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function splitPath(path: string): string[] {
  return path.split('/').filter((p) => p !== '');
}

function checkName(part: string, what: string): void {
  if (!NAME_RE.test(part)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', what, `"${part}" is not a usable HDF5 name (letters, digits, _ . + -)`);
}

function numbersOf(v: readonly number[] | TypedArray): number[] {
  return Array.from(v as ArrayLike<number>);
}

function writeAttr(obj: H5Group | H5Dataset, name: string, value: AttrValue): void {
  if (Object.prototype.hasOwnProperty.call(obj.attrs, name)) obj.delete_attribute(name);
  if (typeof value === 'string') obj.create_attribute(name, value);
  else if (typeof value === 'boolean') obj.create_attribute(name, value ? 1 : 0, null, '|B');
  else if (typeof value === 'number') obj.create_attribute(name, value, null, Number.isInteger(value) && Math.abs(value) < 2 ** 31 ? '<i' : '<d');
  else if (ArrayBuffer.isView(value)) obj.create_attribute(name, value as TypedArray, [(value as TypedArray).length]);
  else if (Array.isArray(value) && value.every((x) => typeof x === 'number')) {
    const nums = value as number[];
    const ints = nums.every((x) => Number.isInteger(x) && Math.abs(x) < 2 ** 31);
    obj.create_attribute(name, ints ? Int32Array.from(nums) : Float64Array.from(nums), [nums.length]);
  } else obj.create_attribute(name, toJson(value));
}

function readAttrs(obj: H5Group | H5Dataset): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, attr] of Object.entries(obj.attrs)) {
    const v = attr.value;
    out[name] = ArrayBuffer.isView(v) ? (v instanceof BigInt64Array || v instanceof BigUint64Array ? Array.from(v, Number) : Array.from(v as ArrayLike<number>)) : typeof v === 'bigint' ? Number(v) : v;
  }
  return out;
}

/** Chunks of about 1 MiB, whole along the last axes, for compressed or growable datasets. */
function chunksFor(shape: readonly number[], itemSize: number): number[] {
  const chunks = shape.map((d) => Math.max(1, d));
  let bytes = chunks.reduce((a, b) => a * b, itemSize);
  for (let i = 0; i < chunks.length && bytes > 2 ** 20; i++) {
    const rest = bytes / chunks[i]!;
    chunks[i] = Math.max(1, Math.min(chunks[i]!, Math.floor(2 ** 20 / rest)));
    bytes = rest * chunks[i]!;
  }
  return chunks;
}

function sameShape(a: readonly number[] | null, b: readonly number[]): boolean {
  return a !== null && a.length === b.length && a.every((d, i) => d === b[i]);
}

export class ReducedFileWriter {
  private file: H5File | null;
  private readonly compression: number;

  private constructor(
    /** the path the file ends up at */
    readonly path: string,
    /** the path being written (differs from `path` when atomic) */
    readonly writingPath: string,
    private readonly atomic: boolean,
    file: H5File,
    compression: number,
  ) {
    this.file = file;
    this.compression = compression;
  }

  /** Create (truncate) a reduced file with the root attributes. */
  static async create(path: string, options: ReducedFileOptions = {}): Promise<ReducedFileWriter> {
    const target = resolve(path);
    const atomic = options.atomic ?? false;
    const writing = atomic ? `${target}.partial-${process.pid}` : target;
    if (atomic && existsSync(target) && statSync(target).isDirectory()) throw outputError(target, Object.assign(new Error(''), { code: 'EISDIR' }));
    checkWritable(writing, true);
    await h5();
    let file: H5File;
    try {
      file = new h5wasm.File(writing, 'w');
    } catch (err) {
      if (atomic) rmSync(writing, { force: true });
      throw outputError(target, err);
    }
    const w = new ReducedFileWriter(target, writing, atomic, file, options.compression ?? 0);
    try {
      w.setAttrs('/', { format: REDUCED_FORMAT, tessera_version: tesseraVersion(), created: new Date().toISOString(), ...options.attrs });
    } catch (err) {
      w.abort();
      throw err;
    }
    return w;
  }

  /** Open an existing reduced file to add to or update it (the recorder's case). */
  static async openForUpdate(path: string, options: Pick<ReducedFileOptions, 'compression'> = {}): Promise<ReducedFileWriter> {
    const target = resolve(path);
    if (!isHdf5(target)) throw new TesseraError('TESSERA_ERR_OUTPUT', target, 'not an HDF5 file');
    checkWritable(target, false);
    await h5();
    const file = new h5wasm.File(target, 'a');
    return new ReducedFileWriter(target, target, false, file, options.compression ?? 0);
  }

  private get h5(): H5File {
    if (!this.file) throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, 'the file is closed');
    return this.file;
  }

  /** The group at `path`, created with its parents if missing. */
  group(path: string): H5Group {
    let g: H5Group = this.h5;
    for (const part of splitPath(path)) {
      checkName(part, 'group');
      const existing = g.get(part);
      if (existing === null) g = g.create_group(part);
      else if (existing instanceof h5wasm.Group) g = existing;
      else throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `${g.path === '/' ? '' : g.path}/${part} exists and is not a group`);
    }
    return g;
  }

  /** Set (create or replace) attributes of a group or dataset. */
  setAttrs(path: string, attrs: Record<string, AttrValue>): void {
    const obj = splitPath(path).length === 0 ? this.h5 : this.h5.get(path);
    if (!(obj instanceof h5wasm.Group) && !(obj instanceof h5wasm.Dataset)) throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `${path} does not exist`);
    this.guard(() => {
      for (const [k, v] of Object.entries(attrs)) if (v !== undefined) writeAttr(obj, k, v);
    });
  }

  /**
   * Write an array to the dataset at `path` (groups created as needed): a new dataset, or the
   * existing one overwritten in place when its shape matches (results that grow during a run).
   */
  writeArray(path: string, data: TypedArray, shape: readonly number[], options: { dtype?: DType; attrs?: Record<string, AttrValue> } = {}): void {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'path', 'a dataset needs a name');
    checkName(name, 'dataset');
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'shape', `[${shape.join(', ')}] does not match ${data.length} elements of ${path}`);
    const g = this.group(parts.join('/'));
    this.guard(() => {
      const existing = g.get(name);
      let ds: H5Dataset;
      if (existing === null) {
        const dtype = options.dtype ? H5_DTYPE[options.dtype] : undefined;
        const big = data.byteLength > 64 * 1024;
        const compress = this.compression > 0 && big && shape.length > 0;
        ds = g.create_dataset({
          name,
          data,
          shape: [...shape],
          dtype: dtype ?? null,
          ...(compress ? { chunks: chunksFor(shape, data.BYTES_PER_ELEMENT), compression: this.compression } : {}),
        });
      } else if (existing instanceof h5wasm.Dataset) {
        if (!sameShape(existing.shape, shape)) {
          throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `${existing.path} has shape [${existing.shape?.join(', ')}], cannot overwrite it with [${shape.join(', ')}]`);
        }
        existing.write_slice(shape.map(() => [] as []), data);
        ds = existing;
      } else {
        throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `${path} exists and is not a dataset`);
      }
      if (options.attrs) for (const [k, v] of Object.entries(options.attrs)) writeAttr(ds, k, v);
    });
  }

  /**
   * Append rows along axis 0 of a growable dataset (created on first use with maxshape
   * [unlimited, ...rowShape]), e.g. one row of /stats per epoch. Returns the new row count.
   */
  appendRows(path: string, rows: TypedArray, rowShape: readonly number[], options: { dtype?: DType; attrs?: Record<string, AttrValue> } = {}): number {
    const rowSize = rowShape.reduce((a, b) => a * b, 1);
    if (rowSize === 0 || rows.length % rowSize !== 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'rows', `${rows.length} elements are not whole rows of [${rowShape.join(', ')}]`);
    const count = rows.length / rowSize;
    const parts = splitPath(path);
    const name = parts.pop()!;
    checkName(name, 'dataset');
    const g = this.group(parts.join('/'));
    return this.guard(() => {
      const existing = g.get(name);
      if (existing === null) {
        const rowBytes = rowSize * rows.BYTES_PER_ELEMENT;
        const ds = g.create_dataset({
          name,
          data: rows,
          shape: [count, ...rowShape],
          dtype: options.dtype ? H5_DTYPE[options.dtype] : null,
          maxshape: [null, ...rowShape],
          chunks: [Math.max(1, Math.min(1024, Math.floor(2 ** 20 / rowBytes))), ...rowShape.map((d) => Math.max(1, d))],
          ...(this.compression > 0 ? { compression: this.compression } : {}),
        });
        if (options.attrs) for (const [k, v] of Object.entries(options.attrs)) writeAttr(ds, k, v);
        return count;
      }
      if (!(existing instanceof h5wasm.Dataset) || !existing.shape || !sameShape(existing.shape.slice(1), rowShape)) {
        throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `${path} is not a dataset of rows [${rowShape.join(', ')}]`);
      }
      const old = existing.shape[0]!;
      existing.resize([old + count, ...rowShape]);
      existing.write_slice([[old, old + count], ...rowShape.map(() => [] as [])], rows);
      return old + count;
    });
  }

  /** Write (or overwrite) one UDF's results at `<prefix>/udf/<id>`. */
  writeUdfResults(udf: NamedUdfResults, prefix = ''): void {
    checkName(udf.id, 'UDF id');
    const groupPath = `${prefix}/udf/${udf.id}`;
    this.group(groupPath);
    this.setAttrs(groupPath, { name: udf.spec.name, params: toJson(udf.spec.params ?? {}) });
    for (const [buffer, rb] of Object.entries(udf.results)) this.writeBuffer(`${groupPath}/${buffer}`, rb);
  }

  /** Write every UDF's results of a run (see writeUdfResults). */
  writeRun(udfs: readonly NamedUdfResults[], prefix = ''): void {
    const ids = new Set<string>();
    for (const u of udfs) {
      if (ids.has(u.id)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'UDF id', `"${u.id}" is used twice`);
      ids.add(u.id);
    }
    for (const u of udfs) this.writeUdfResults(u, prefix);
  }

  private writeBuffer(path: string, rb: ResultBuffer): void {
    this.writeArray(path, rb.data, rb.data.shape, {
      dtype: rb.dtype,
      attrs: { kind: rb.kind, dtype: rb.dtype, extra_shape: [...rb.extraShape] },
    });
    const mask = rb.validMask;
    const validPath = `${path}.valid`;
    // once written, a mask is kept up to date (a dataset cannot be removed in place)
    if (mask !== null && (!mask.every((v) => v === 1) || this.h5.get(validPath) !== null)) {
      this.writeArray(validPath, mask, mask.shape, { dtype: 'uint8' });
    }
  }

  /** Push what is written so far to the file, so that readers see a consistent state. */
  flush(): void {
    this.guard(() => this.h5.flush());
  }

  /** Close the file; an atomic writer moves it into place now. */
  close(): void {
    const f = this.file;
    if (!f) return;
    this.file = null;
    try {
      f.close();
      if (this.atomic) renameSync(this.writingPath, this.path);
    } catch (err) {
      if (this.atomic) rmSync(this.writingPath, { force: true });
      throw outputError(this.path, err);
    }
  }

  /** Close without keeping anything of an atomic writer (a failed or interrupted run). */
  abort(): void {
    const f = this.file;
    this.file = null;
    try {
      f?.close();
    } catch {
      // the file is being given up anyway
    }
    if (this.atomic) rmSync(this.writingPath, { force: true });
  }

  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof TesseraError) throw err;
      throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, hdf5Reason(err));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// reading

export interface ReducedArray {
  shape: number[];
  data: TypedArray;
  attrs: Record<string, unknown>;
}

export interface ReducedBuffer extends ReducedArray {
  kind: 'nav' | 'sig' | 'single';
  dtype: DType;
  extraShape: number[];
  /** the valid mask, or null when every position is valid */
  valid: ReducedArray | null;
}

export interface ReducedUdf {
  id: string;
  /** registry name */
  name: string;
  params: Record<string, unknown>;
  attrs: Record<string, unknown>;
  buffers: Record<string, ReducedBuffer>;
}

export interface ReducedFile {
  path: string;
  /** root attributes (numeric arrays as number[]) */
  attrs: Record<string, unknown>;
  format: string;
  navShape: number[];
  sigShape: number[];
  /** the UDF groups under `<prefix>/udf` */
  udfs: Record<string, ReducedUdf>;
  /** other datasets directly in `<prefix>` (e.g. damage, stats) */
  datasets: Record<string, ReducedArray>;
}

function readArray(ds: H5Dataset): ReducedArray {
  const v = ds.value;
  const shape = ds.shape ?? [];
  let data: TypedArray;
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) data = Float64Array.from(v, Number);
  else if (ArrayBuffer.isView(v)) data = v as TypedArray;
  else if (typeof v === 'number') data = Float64Array.of(v);
  else throw new TesseraError('TESSERA_ERR_OUTPUT', ds.path, 'is not a numeric dataset');
  return { shape, data, attrs: readAttrs(ds) };
}

function parseJsonAttr(v: unknown): Record<string, unknown> {
  if (typeof v !== 'string') return {};
  try {
    return JSON.parse(v) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/**
 * Read a reduced file: root attributes, every UDF's buffers under `<prefix>/udf` as typed arrays
 * with shapes and valid masks, and the other datasets of `<prefix>`.
 */
export async function readReducedFile(path: string, options: { prefix?: string } = {}): Promise<ReducedFile> {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new TesseraError('TESSERA_ERR_NOT_FOUND', abs);
  if (!isHdf5(abs)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', abs, 'not an HDF5 file');
  await h5();
  let f: H5File;
  try {
    f = new h5wasm.File(abs, 'r');
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', abs, `cannot read it as HDF5: ${hdf5Reason(err)}`);
  }
  try {
    const attrs = readAttrs(f);
    const prefix = splitPath(options.prefix ?? '').join('/');
    const base = prefix === '' ? f : f.get(prefix);
    if (!(base instanceof h5wasm.Group)) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `group /${prefix} in ${abs}`);
    const udfs: Record<string, ReducedUdf> = {};
    const datasets: Record<string, ReducedArray> = {};
    for (const key of base.keys()) {
      const e = base.get(key);
      if (e instanceof h5wasm.Dataset) datasets[key] = readArray(e);
    }
    const udfGroup = base.get('udf');
    if (udfGroup instanceof h5wasm.Group) {
      for (const id of udfGroup.keys()) {
        const g = udfGroup.get(id);
        if (!(g instanceof h5wasm.Group)) continue;
        const gAttrs = readAttrs(g);
        const buffers: Record<string, ReducedBuffer> = {};
        const names = g.keys();
        for (const name of names) {
          if (name.endsWith('.valid')) continue;
          const ds = g.get(name);
          if (!(ds instanceof h5wasm.Dataset)) continue;
          const arr = readArray(ds);
          const validDs = names.includes(`${name}.valid`) ? g.get(`${name}.valid`) : null;
          const kind = arr.attrs.kind;
          const dt = arr.attrs.dtype;
          const extra = arr.attrs.extra_shape;
          buffers[name] = {
            ...arr,
            kind: kind === 'nav' || kind === 'sig' || kind === 'single' ? kind : 'single',
            dtype: isDType(dt) ? dt : 'float64',
            extraShape: Array.isArray(extra) ? (extra as number[]) : [],
            valid: validDs instanceof h5wasm.Dataset ? readArray(validDs) : null,
          };
        }
        udfs[id] = { id, name: typeof gAttrs.name === 'string' ? gAttrs.name : id, params: parseJsonAttr(gAttrs.params), attrs: gAttrs, buffers };
      }
    }
    return {
      path: abs,
      attrs,
      format: typeof attrs.format === 'string' ? attrs.format : '',
      navShape: Array.isArray(attrs.nav_shape) ? (attrs.nav_shape as number[]) : [],
      sigShape: Array.isArray(attrs.sig_shape) ? (attrs.sig_shape as number[]) : [],
      udfs,
      datasets,
    };
  } finally {
    f.close();
  }
}
