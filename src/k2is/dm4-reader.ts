/**
 * A small reader for Gatan DigitalMicrograph tag files, DM4 and DM3. The K2 IS `.gtg` file is
 * one (spec A.1): it carries the scan shape in `SI Dimensions.Size Y` / `Size X`.
 *
 * Layout (framing is big-endian; values are in the byte order the header names):
 *   header  DM4: version u32 (= 4), root length u64, byte order u32 (1 = little-endian values)
 *           DM3: version u32 (= 3), root length u32, byte order u32
 *   group   sorted u8, open u8, entry count (u64 in DM4, u32 in DM3), then the entries
 *   entry   kind u8 (20 group, 21 data, 0 end of file), label length u16, label bytes;
 *           DM4 only: u64 size of what follows (the group body, or the data tag from "%%%%" on)
 *   data    "%%%%", info count, info words (u64 each in DM4, u32 in DM3), then the value
 *   info    [simple] | [18, length] UTF-16 string | [15, nameLen, n, (nameLen, type) x n] struct
 *           | [20, element type..., count] array
 *
 * Bounded and defensive: every count and size is checked against the bytes that remain before
 * anything is allocated, large arrays are located but not read, and anything wrong becomes a
 * TESSERA_ERR_DM4 naming the offset. Tags are addressed by path like ncempy's `allTags`
 * ('SI Dimensions.Size Y'; an unlabelled entry is addressed by its 1-based position).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { TesseraError } from '../errors.js';

/** Simple value types (info word 0 of a simple tag). */
export const DM_TYPE = {
  INT16: 2,
  INT32: 3,
  UINT16: 4,
  UINT32: 5,
  FLOAT32: 6,
  FLOAT64: 7,
  BOOL: 8,
  INT8: 9, // "char"
  UINT8: 10, // "octet"
  INT64: 11,
  UINT64: 12,
  STRUCT: 15,
  STRING: 18,
  ARRAY: 20,
} as const;

const SIMPLE_SIZES: Readonly<Record<number, number>> = { 2: 2, 3: 4, 4: 2, 5: 4, 6: 4, 7: 8, 8: 1, 9: 1, 10: 1, 11: 8, 12: 8 };

export type DmType =
  | { kind: 'simple'; code: number }
  | { kind: 'string'; length: number }
  | { kind: 'struct'; fields: DmType[] }
  | { kind: 'array'; element: DmType; count: number }
  | { kind: 'unknown'; code: number };

export type DmTypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

/** An array too large to read inline: where it is, so a caller can read it if it wants. */
export interface DmUnreadArray {
  unread: true;
  element: DmType;
  count: number;
  offset: number;
  byteLength: number;
}

export type DmValue = number | bigint | boolean | string | DmTypedArray | DmUnreadArray | DmValue[];

export interface DmDataTag {
  kind: 'data';
  label: string;
  type: DmType;
  /** undefined when the type is not understood (the tag was skipped by its size) */
  value: DmValue | undefined;
  /** file offset and size of the value bytes */
  offset: number;
  byteLength: number;
}

export interface DmTagGroup {
  kind: 'group';
  label: string;
  sorted: boolean;
  open: boolean;
  entries: DmEntry[];
}

export type DmEntry = DmDataTag | DmTagGroup;

export interface DmFile {
  version: 3 | 4;
  rootLength: number;
  littleEndian: boolean;
  root: DmTagGroup;
}

export interface DmReadLimits {
  /** deepest group nesting accepted (ncempy's limit) */
  maxDepth?: number;
  /** most entries in the whole file */
  maxEntries?: number;
  /** arrays larger than this are located, not read */
  maxInlineBytes?: number;
  /** longest info array accepted */
  maxInfoWords?: number;
  /** DM files larger than this are refused by readDmFile (tags are read in windows anyway) */
  maxFileBytes?: number;
}

const DEFAULT_LIMITS: Required<DmReadLimits> = {
  maxDepth: 64,
  maxEntries: 1_000_000,
  maxInlineBytes: 1 << 20,
  maxInfoWords: 4096,
  maxFileBytes: Number.MAX_SAFE_INTEGER,
};

interface ByteSource {
  readonly size: number;
  /** `length` bytes at `offset`; the caller has checked the range. The view is valid until the next read. */
  read(offset: number, length: number): Uint8Array;
}

class MemorySource implements ByteSource {
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  read(offset: number, length: number): Uint8Array {
    return this.bytes.subarray(offset, offset + length);
  }
}

/** Positioned reads through a small window: tags are parsed front to back, mostly in small steps. */
class FileSource implements ByteSource {
  private readonly window = Buffer.allocUnsafe(64 * 1024);
  private windowStart = 0;
  private windowLength = 0;
  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}
  read(offset: number, length: number): Uint8Array {
    if (offset >= this.windowStart && offset + length <= this.windowStart + this.windowLength) {
      return this.window.subarray(offset - this.windowStart, offset - this.windowStart + length);
    }
    if (length > this.window.length) {
      const out = Buffer.allocUnsafe(length);
      readFully(this.fd, out, offset);
      return out;
    }
    this.windowStart = offset;
    this.windowLength = Math.min(this.window.length, this.size - offset);
    readFully(this.fd, this.window.subarray(0, this.windowLength), offset);
    return this.window.subarray(0, length);
  }
}

function readFully(fd: number, out: Uint8Array, position: number): void {
  let done = 0;
  while (done < out.length) {
    const n = readSync(fd, out, done, out.length - done, position + done);
    if (n === 0) throw new Error(`unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

class DmParser {
  private pos = 0;
  private entries = 0;
  private version: 3 | 4 = 4;
  private littleEndian = true;
  private readonly limits: Required<DmReadLimits>;

  constructor(
    private readonly src: ByteSource,
    private readonly name: string,
    limits: DmReadLimits,
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  fail(what: string, at = this.pos): never {
    throw new TesseraError('TESSERA_ERR_DM4', this.name, `${what} (at byte ${at} of ${this.src.size})`);
  }

  private take(n: number, what: string): Uint8Array {
    if (n < 0 || this.pos + n > this.src.size) this.fail(`truncated: ${what} needs ${n} bytes`);
    const b = this.src.read(this.pos, n);
    this.pos += n;
    return b;
  }

  private u8(what: string): number {
    return this.take(1, what)[0]!;
  }

  private u16be(what: string): number {
    const b = this.take(2, what);
    return (b[0]! << 8) | b[1]!;
  }

  private u32be(what: string): number {
    const b = this.take(4, what);
    return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  }

  /** u64 big-endian as a number; values beyond 2^53 come out inexact but are rejected by every range check. */
  private u64be(what: string): number {
    const hi = this.u32be(what);
    const lo = this.u32be(what);
    return hi * 0x1_0000_0000 + lo;
  }

  /** the format's "long" words: u64 in DM4, u32 in DM3 */
  private word(what: string): number {
    return this.version === 4 ? this.u64be(what) : this.u32be(what);
  }

  private get wordSize(): number {
    return this.version === 4 ? 8 : 4;
  }

  private remaining(): number {
    return this.src.size - this.pos;
  }

  parse(): DmFile {
    if (this.src.size < 12) this.fail('too short for a DM3/DM4 header', 0);
    const version = this.u32be('version');
    if (version !== 3 && version !== 4) {
      this.fail(`not a DM3/DM4 file: version word is ${version} (0x${version.toString(16)})`, 0);
    }
    this.version = version;
    const rootLength = this.word('root length');
    const byteOrder = this.u32be('byte order');
    if (byteOrder !== 0 && byteOrder !== 1) this.fail(`byte order flag is ${byteOrder}, expected 0 or 1`, this.pos - 4);
    this.littleEndian = byteOrder === 1;
    const root = this.group('', 0);
    return { version, rootLength, littleEndian: this.littleEndian, root };
  }

  /** A group body; `end` is where a DM4 group's declared size says it stops (undefined for DM3 and the root). */
  private group(label: string, depth: number, end?: number): DmTagGroup {
    if (depth > this.limits.maxDepth) this.fail(`groups nested deeper than ${this.limits.maxDepth}`);
    const sorted = this.u8('group sorted flag') !== 0;
    const open = this.u8('group open flag') !== 0;
    const count = this.word('group entry count');
    // every entry takes at least 3 bytes (kind + label length)
    if (count > this.remaining() / 3) this.fail(`group "${label}" claims ${count} entries, more than the file can hold`);
    const group: DmTagGroup = { kind: 'group', label, sorted, open, entries: [] };
    for (let i = 0; i < count; i++) {
      if (end !== undefined && this.pos >= end) this.fail(`group "${label}" ends after ${i} of ${count} entries`);
      const entry = this.entry(depth);
      if (entry === null) break; // end-of-file marker
      group.entries.push(entry);
    }
    if (end !== undefined && this.pos !== end) {
      // trust the declared size: it is what lets readers skip groups they do not parse
      if (this.pos > end) this.fail(`group "${label}" overruns its declared size by ${this.pos - end} bytes`);
      this.pos = end;
    }
    return group;
  }

  private entry(depth: number): DmEntry | null {
    const at = this.pos;
    if (++this.entries > this.limits.maxEntries) this.fail(`more than ${this.limits.maxEntries} tag entries`);
    const kind = this.u8('entry kind');
    if (kind === 0) return null;
    if (kind !== 20 && kind !== 21) this.fail(`unknown entry kind ${kind} (expected 20 group or 21 data)`, at);
    const labelLength = this.u16be('label length');
    const label = latin1(this.take(labelLength, 'label'));
    let end: number | undefined;
    if (this.version === 4) {
      const size = this.u64be(`size of "${label}"`);
      if (size > this.remaining()) this.fail(`"${label}" declares ${size} bytes, only ${this.remaining()} remain`);
      end = this.pos + size;
    }
    if (kind === 20) return this.group(label, depth + 1, end);
    return this.dataTag(label, end);
  }

  private dataTag(label: string, end: number | undefined): DmDataTag {
    const markAt = this.pos;
    const mark = this.take(4, `"%%%%" of "${label}"`);
    if (mark[0] !== 0x25 || mark[1] !== 0x25 || mark[2] !== 0x25 || mark[3] !== 0x25) {
      this.fail(`data tag "${label}" lacks its "%%%%" marker`, markAt);
    }
    const nInfo = this.word(`info count of "${label}"`);
    if (nInfo < 1 || nInfo > this.limits.maxInfoWords || nInfo * this.wordSize > this.remaining()) {
      this.fail(`data tag "${label}" has an implausible info count ${nInfo}`);
    }
    const info: number[] = [];
    for (let i = 0; i < nInfo; i++) info.push(this.word(`info of "${label}"`));
    const type = this.parseType(info, label);
    const offset = this.pos;
    const available = end !== undefined ? end - offset : this.remaining();
    if (available < 0) this.fail(`data tag "${label}" is smaller than its own type description`);
    const size = typeSize(type);
    if (end === undefined && size === undefined) {
      this.fail(`data tag "${label}" has type info [${info.join(', ')}] that DM3 cannot skip`);
    }
    if (size !== undefined && size > available) {
      this.fail(`data tag "${label}" needs ${size} bytes for its value, only ${available} available`);
    }
    const value = size === undefined ? undefined : this.value(type, offset, size);
    const byteLength = end !== undefined ? end - offset : size!;
    this.pos = offset + byteLength;
    return { kind: 'data', label, type, value, offset, byteLength };
  }

  private parseType(info: number[], label: string): DmType {
    let i = 0;
    const next = (): number => {
      if (i >= info.length) this.fail(`type info [${info.join(', ')}] of "${label}" is incomplete`);
      return info[i++]!;
    };
    const one = (depth: number): DmType => {
      if (depth > 8) this.fail(`type info of "${label}" nests too deeply`);
      const code = next();
      if (SIMPLE_SIZES[code] !== undefined) return { kind: 'simple', code };
      if (code === DM_TYPE.STRING) return { kind: 'string', length: next() };
      if (code === DM_TYPE.STRUCT) {
        next(); // struct name length: names are not stored
        const n = next();
        if (n > info.length) this.fail(`struct in "${label}" claims ${n} fields`);
        const fields: DmType[] = [];
        for (let f = 0; f < n; f++) {
          next(); // field name length
          fields.push(one(depth + 1));
        }
        return { kind: 'struct', fields };
      }
      if (code === DM_TYPE.ARRAY) {
        const element = one(depth + 1);
        return { kind: 'array', element, count: next() };
      }
      i = info.length; // the rest describes a type we do not know: skip the tag by its size
      return { kind: 'unknown', code };
    };
    return one(0);
  }

  private value(type: DmType, offset: number, size: number): DmValue | undefined {
    switch (type.kind) {
      case 'simple':
        return readSimple(this.view(offset, size), 0, type.code, this.littleEndian);
      case 'string':
        return utf16(this.src.read(offset, size), this.littleEndian);
      case 'struct':
        return this.structValue(type, this.view(offset, size), 0);
      case 'array': {
        if (size > this.limits.maxInlineBytes) {
          return { unread: true, element: type.element, count: type.count, offset, byteLength: size };
        }
        return this.arrayValue(type, offset, size);
      }
      case 'unknown':
        return undefined;
    }
  }

  private view(offset: number, size: number): DataView {
    const b = this.src.read(offset, size);
    return new DataView(b.buffer, b.byteOffset, size);
  }

  private structValue(type: { fields: DmType[] }, v: DataView, at: number): DmValue[] {
    const out: DmValue[] = [];
    let o = at;
    for (const f of type.fields) {
      if (f.kind !== 'simple') {
        out.push(this.nested(f, v, o));
      } else {
        out.push(readSimple(v, o, f.code, this.littleEndian));
      }
      o += typeSize(f)!;
    }
    return out;
  }

  private nested(t: DmType, v: DataView, at: number): DmValue {
    const size = typeSize(t)!;
    if (t.kind === 'simple') return readSimple(v, at, t.code, this.littleEndian);
    if (t.kind === 'struct') return this.structValue(t, v, at);
    if (t.kind === 'string') return utf16(new Uint8Array(v.buffer, v.byteOffset + at, size), this.littleEndian);
    if (t.kind === 'array') {
      const es = typeSize(t.element)!;
      const items: DmValue[] = [];
      for (let k = 0; k < t.count; k++) items.push(this.nested(t.element, v, at + k * es));
      return items;
    }
    return [];
  }

  private arrayValue(type: { element: DmType; count: number }, offset: number, size: number): DmValue {
    const el = type.element;
    if (el.kind === 'simple') {
      return typedArray(this.src.read(offset, size), el.code, type.count, this.littleEndian);
    }
    const v = this.view(offset, size);
    const es = typeSize(el)!;
    const items: DmValue[] = [];
    for (let k = 0; k < type.count; k++) items.push(this.nested(el, v, k * es));
    return items;
  }
}

/** Byte size of a value of this type, or undefined when unknown. */
function typeSize(t: DmType): number | undefined {
  switch (t.kind) {
    case 'simple':
      return SIMPLE_SIZES[t.code];
    case 'string':
      return t.length * 2;
    case 'struct': {
      let s = 0;
      for (const f of t.fields) {
        const fs = typeSize(f);
        if (fs === undefined) return undefined;
        s += fs;
      }
      return s;
    }
    case 'array': {
      const es = typeSize(t.element);
      if (es === undefined) return undefined;
      return es * t.count; // may exceed the file: the caller compares with what is available
    }
    case 'unknown':
      return undefined;
  }
}

function readSimple(v: DataView, o: number, code: number, le: boolean): number | bigint | boolean {
  switch (code) {
    case 2:
      return v.getInt16(o, le);
    case 3:
      return v.getInt32(o, le);
    case 4:
      return v.getUint16(o, le);
    case 5:
      return v.getUint32(o, le);
    case 6:
      return v.getFloat32(o, le);
    case 7:
      return v.getFloat64(o, le);
    case 8:
      return v.getUint8(o) !== 0;
    case 9:
      return v.getInt8(o);
    case 10:
      return v.getUint8(o);
    case 11: {
      const x = v.getBigInt64(o, le);
      return x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
    }
    default: {
      const x = v.getBigUint64(o, le);
      return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
    }
  }
}

function typedArray(bytes: Uint8Array, code: number, count: number, le: boolean): DmTypedArray {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const fill = <T extends { [i: number]: number | bigint }>(out: T, size: number, get: (o: number) => number | bigint): T => {
    for (let i = 0; i < count; i++) out[i] = get(i * size);
    return out;
  };
  switch (code) {
    case 2:
      return fill(new Int16Array(count), 2, (o) => v.getInt16(o, le));
    case 3:
      return fill(new Int32Array(count), 4, (o) => v.getInt32(o, le));
    case 4:
      return fill(new Uint16Array(count), 2, (o) => v.getUint16(o, le));
    case 5:
      return fill(new Uint32Array(count), 4, (o) => v.getUint32(o, le));
    case 6:
      return fill(new Float32Array(count), 4, (o) => v.getFloat32(o, le));
    case 7:
      return fill(new Float64Array(count), 8, (o) => v.getFloat64(o, le));
    case 9:
      return new Int8Array(bytes.slice(0, count).buffer);
    case 11:
      return fill(new BigInt64Array(count), 8, (o) => v.getBigInt64(o, le));
    case 12:
      return fill(new BigUint64Array(count), 8, (o) => v.getBigUint64(o, le));
    default: // 8 bool, 10 octet
      return bytes.slice(0, count);
  }
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function utf16(b: Uint8Array, le: boolean): string {
  let s = '';
  for (let i = 0; i + 1 < b.length; i += 2) s += String.fromCharCode(le ? b[i]! | (b[i + 1]! << 8) : (b[i]! << 8) | b[i + 1]!);
  return s;
}

/** Parse DM3/DM4 bytes held in memory. */
export function parseDm(bytes: Uint8Array, name = '<buffer>', limits: DmReadLimits = {}): DmFile {
  return new DmParser(new MemorySource(bytes), name, limits).parse();
}

/** Parse a DM3/DM4 file with positioned reads; large arrays are located, not read. */
export function readDmFile(path: string, limits: DmReadLimits = {}): DmFile {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_DM4', path, `cannot open: ${(err as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const max = limits.maxFileBytes ?? DEFAULT_LIMITS.maxFileBytes;
    if (size > max) throw new TesseraError('TESSERA_ERR_DM4', path, `file is ${size} bytes, more than the limit ${max}`);
    return new DmParser(new FileSource(fd, size), path, limits).parse();
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw new TesseraError('TESSERA_ERR_DM4', path, (err as Error).message);
  } finally {
    closeSync(fd);
  }
}

function labelOf(entry: DmEntry, index: number): string {
  return entry.label === '' ? String(index + 1) : entry.label;
}

/**
 * The entry at a dotted path ('SI Dimensions.Size Y', a leading '.' is optional). Labels may
 * themselves contain dots: every way of splitting the path is tried, first match wins.
 */
export function getEntry(from: DmFile | DmTagGroup, path: string): DmEntry | undefined {
  const group = 'root' in from ? from.root : from;
  const p = path.startsWith('.') ? path.slice(1) : path;
  return findIn(group, p);
}

function findIn(group: DmTagGroup, path: string): DmEntry | undefined {
  for (let i = 0; i < group.entries.length; i++) {
    const e = group.entries[i]!;
    const label = labelOf(e, i);
    if (path === label) return e;
    if (e.kind === 'group' && path.startsWith(label + '.')) {
      const found = findIn(e, path.slice(label.length + 1));
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** The value of the data tag at `path`, or undefined when there is none (or it is a group). */
export function getTag(from: DmFile | DmTagGroup, path: string): DmValue | undefined {
  const e = getEntry(from, path);
  return e?.kind === 'data' ? e.value : undefined;
}

/** A numeric tag value as a number (scalars, or one-element arrays), else undefined. */
export function getNumber(from: DmFile | DmTagGroup, path: string): number | undefined {
  const v = getTag(from, path);
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  return undefined;
}

/** DM stores most text as arrays of uint16 (UTF-16 code units): turn such a value into a string. */
export function dmText(v: DmValue | undefined): string | undefined {
  if (typeof v === 'string') return v;
  if (v instanceof Uint16Array || v instanceof Uint8Array || v instanceof Int8Array) {
    let s = '';
    for (let i = 0; i < v.length; i += 4096) s += String.fromCharCode(...v.subarray(i, i + 4096));
    return s;
  }
  return undefined;
}

/** Every data tag by its ncempy-style key ('.SI Dimensions.Size Y'), last one wins on duplicates. */
export function allTags(file: DmFile): Map<string, DmValue | undefined> {
  const out = new Map<string, DmValue | undefined>();
  const walk = (g: DmTagGroup, prefix: string): void => {
    g.entries.forEach((e, i) => {
      const key = `${prefix}.${labelOf(e, i)}`;
      if (e.kind === 'group') walk(e, key);
      else out.set(key, e.value);
    });
  };
  walk(file.root, '');
  return out;
}
