/**
 * Writes Gatan DigitalMicrograph 4 tag files, the format of the K2 IS `.gtg` metadata file
 * (LiberTEM reads its scan shape with ncempy as `.SI Dimensions.Size Y` / `Size X`).
 *
 * DM4 layout (framing big-endian, values little-endian as the header's byte-order word says):
 *   header   version u32 = 4 | root length u64 = file length - 24 | byte order u32 = 1 (little)
 *   group    sorted u8 | open u8 | number of entries u64 | entries
 *   entry    kind u8 (20 = group, 21 = data) | label length u16 | label (latin-1)
 *            | size u64 = bytes that follow in this entry (the group body, or the data tag
 *              from "%%%%" to the end of its value)
 *   data     "%%%%" | info length n u64 | n info words u64 | value
 *   info     simple value: [type]; array: [20, element type, count] (strings are arrays of
 *            UTF-16 code units, type 4); simple types 2 int16, 3 int32, 4 uint16, 5 uint32,
 *            6 float32, 7 float64, 8 bool, 9 int8, 10 uint8, 11 int64, 12 uint64
 *   end      8 zero bytes
 * Named groups are written sorted by label with the sorted flag set; unnamed lists keep their
 * order. Groups are written closed (open = 0), as DigitalMicrograph writes them.
 */
import { writeFile } from 'node:fs/promises';
import { TesseraError } from '../errors.js';

export type DmScalarType =
  | 'int16'
  | 'int32'
  | 'uint16'
  | 'uint32'
  | 'float32'
  | 'float64'
  | 'bool'
  | 'int8'
  | 'uint8'
  | 'int64'
  | 'uint64';

const SCALAR: Record<DmScalarType, { code: number; size: number }> = {
  int16: { code: 2, size: 2 },
  int32: { code: 3, size: 4 },
  uint16: { code: 4, size: 2 },
  uint32: { code: 5, size: 4 },
  float32: { code: 6, size: 4 },
  float64: { code: 7, size: 8 },
  bool: { code: 8, size: 1 },
  int8: { code: 9, size: 1 },
  uint8: { code: 10, size: 1 },
  int64: { code: 11, size: 8 },
  uint64: { code: 12, size: 8 },
};

const KIND_GROUP = 20;
const KIND_DATA = 21;
const TYPE_ARRAY = 20;

/** A scalar with an explicit DM type. */
export interface DmScalar {
  dmType: DmScalarType;
  value: number | bigint | boolean;
}

type DmArrayValue = Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array | Float32Array | Float64Array;

/**
 * A tag tree: a plain object is a named group (labels are its keys), a JS array an unnamed
 * list, a string a UTF-16 string, a number int32 when it is an integer in range and float64
 * otherwise, a boolean a bool, a typed array a DM array of its element type.
 */
export type DmNode = DmScalar | string | number | boolean | DmArrayValue | DmNode[] | { [label: string]: DmNode };

export const dm = {
  int16: (value: number): DmScalar => ({ dmType: 'int16', value }),
  int32: (value: number): DmScalar => ({ dmType: 'int32', value }),
  uint16: (value: number): DmScalar => ({ dmType: 'uint16', value }),
  uint32: (value: number): DmScalar => ({ dmType: 'uint32', value }),
  float32: (value: number): DmScalar => ({ dmType: 'float32', value }),
  float64: (value: number): DmScalar => ({ dmType: 'float64', value }),
  bool: (value: boolean): DmScalar => ({ dmType: 'bool', value }),
  int8: (value: number): DmScalar => ({ dmType: 'int8', value }),
  uint8: (value: number): DmScalar => ({ dmType: 'uint8', value }),
  int64: (value: bigint | number): DmScalar => ({ dmType: 'int64', value }),
  uint64: (value: bigint | number): DmScalar => ({ dmType: 'uint64', value }),
};

function isScalar(n: DmNode): n is DmScalar {
  return typeof n === 'object' && n !== null && !ArrayBuffer.isView(n) && !Array.isArray(n) && 'dmType' in n && 'value' in n;
}

function bad(path: string, why: string): never {
  throw new TesseraError('TESSERA_ERR_DM4', path, why);
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function encodeScalar(s: DmScalar, path: string): Uint8Array {
  const t = SCALAR[s.dmType];
  if (!t) bad(path, `unknown type ${String(s.dmType)}`);
  const b = new Uint8Array(t.size);
  const v = new DataView(b.buffer);
  const val = s.value;
  const num = typeof val === 'boolean' ? (val ? 1 : 0) : val;
  if (s.dmType === 'int64' || s.dmType === 'uint64') {
    const big = BigInt(num);
    if (s.dmType === 'int64') v.setBigInt64(0, big, true);
    else v.setBigUint64(0, big, true);
    return b;
  }
  const n = Number(num);
  if (!Number.isFinite(n) && s.dmType !== 'float32' && s.dmType !== 'float64') bad(path, `not a finite number: ${String(val)}`);
  switch (s.dmType) {
    case 'int16': v.setInt16(0, n, true); break;
    case 'int32': v.setInt32(0, n, true); break;
    case 'uint16': v.setUint16(0, n, true); break;
    case 'uint32': v.setUint32(0, n, true); break;
    case 'float32': v.setFloat32(0, n, true); break;
    case 'float64': v.setFloat64(0, n, true); break;
    case 'bool': v.setUint8(0, n ? 1 : 0); break;
    case 'int8': v.setInt8(0, n); break;
    case 'uint8': v.setUint8(0, n); break;
  }
  return b;
}

function arrayElementCode(a: DmArrayValue): number {
  if (a instanceof Int8Array) return 9;
  if (a instanceof Uint8Array) return 10;
  if (a instanceof Int16Array) return 2;
  if (a instanceof Uint16Array) return 4;
  if (a instanceof Int32Array) return 3;
  if (a instanceof Uint32Array) return 5;
  if (a instanceof Float32Array) return 6;
  return 7;
}

function littleEndianBytes(a: DmArrayValue): Uint8Array {
  const out = new Uint8Array(a.byteLength);
  const v = new DataView(out.buffer);
  const size = a.BYTES_PER_ELEMENT;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const o = i * size;
    if (a instanceof Int8Array) v.setInt8(o, x);
    else if (a instanceof Uint8Array) v.setUint8(o, x);
    else if (a instanceof Int16Array) v.setInt16(o, x, true);
    else if (a instanceof Uint16Array) v.setUint16(o, x, true);
    else if (a instanceof Int32Array) v.setInt32(o, x, true);
    else if (a instanceof Uint32Array) v.setUint32(o, x, true);
    else if (a instanceof Float32Array) v.setFloat32(o, x, true);
    else v.setFloat64(o, x, true);
  }
  return out;
}

/** "%%%%", info and value of a data tag. */
function encodeDataTag(node: Exclude<DmNode, DmNode[] | { [label: string]: DmNode }> | DmScalar, path: string): Uint8Array {
  let info: number[];
  let value: Uint8Array;
  if (typeof node === 'string') {
    const units = new Uint16Array(node.length);
    for (let i = 0; i < node.length; i++) units[i] = node.charCodeAt(i);
    info = [TYPE_ARRAY, 4, units.length];
    value = littleEndianBytes(units);
  } else if (ArrayBuffer.isView(node)) {
    info = [TYPE_ARRAY, arrayElementCode(node), node.length];
    value = littleEndianBytes(node);
  } else {
    let scalar: DmScalar;
    if (typeof node === 'number') {
      scalar = Number.isInteger(node) && node >= -0x80000000 && node <= 0x7fffffff ? dm.int32(node) : dm.float64(node);
    } else if (typeof node === 'boolean') {
      scalar = dm.bool(node);
    } else {
      scalar = node;
    }
    info = [SCALAR[scalar.dmType]?.code ?? bad(path, `unknown type ${String(scalar.dmType)}`)];
    value = encodeScalar(scalar, path);
  }
  return concat([new Uint8Array([0x25, 0x25, 0x25, 0x25]), u64(info.length), ...info.map(u64), value]);
}

function encodeLabel(label: string | null, path: string): Uint8Array {
  if (label === null) return new Uint8Array(2);
  if (label.length > 0xffff) bad(path, 'label longer than 65535 characters');
  const out = new Uint8Array(2 + label.length);
  out[0] = label.length >> 8;
  out[1] = label.length & 0xff;
  for (let i = 0; i < label.length; i++) {
    const c = label.charCodeAt(i);
    if (c > 0xff) bad(path, `label ${JSON.stringify(label)} is not latin-1`);
    out[2 + i] = c;
  }
  return out;
}

function isGroup(node: DmNode): node is DmNode[] | { [label: string]: DmNode } {
  return Array.isArray(node) || (typeof node === 'object' && node !== null && !ArrayBuffer.isView(node) && !isScalar(node));
}

function encodeEntry(label: string | null, node: DmNode, path: string): Uint8Array {
  const group = isGroup(node);
  const body = group ? encodeGroupBody(node, path) : encodeDataTag(node as DmScalar, path);
  return concat([new Uint8Array([group ? KIND_GROUP : KIND_DATA]), encodeLabel(label, path), u64(body.length), body]);
}

function encodeGroupBody(node: DmNode[] | { [label: string]: DmNode }, path: string): Uint8Array {
  const entries: Uint8Array[] = [];
  let sorted = 0;
  if (Array.isArray(node)) {
    node.forEach((child, i) => entries.push(encodeEntry(null, child, `${path}.${i + 1}`)));
  } else {
    sorted = 1;
    const labels = Object.keys(node).sort((p, q) => (p < q ? -1 : p > q ? 1 : 0));
    for (const label of labels) {
      if (label.length === 0) bad(path, 'empty label in a named group');
      entries.push(encodeEntry(label, node[label]!, path ? `${path}.${label}` : label));
    }
  }
  return concat([new Uint8Array([sorted, 0]), u64(entries.length), ...entries]);
}

/** The bytes of a DM4 file whose root group is `root`. */
export function encodeDm4(root: { [label: string]: DmNode } | DmNode[]): Uint8Array {
  const body = encodeGroupBody(root, '');
  const header = new Uint8Array(16);
  const v = new DataView(header.buffer);
  v.setUint32(0, 4);
  v.setBigUint64(4, BigInt(body.length));
  v.setUint32(12, 1);
  return concat([header, body, new Uint8Array(8)]);
}

export async function writeDm4(path: string, root: { [label: string]: DmNode } | DmNode[]): Promise<void> {
  const bytes = encodeDm4(root);
  try {
    await writeFile(path, bytes);
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_OUTPUT', path, (err as Error).message);
  }
}

/** The tags of a K2 IS `.gtg` file for a STEM scan of `height` x `width` positions. */
export function k2isGtgTags(scanShape: [number, number], extra: { [label: string]: DmNode } = {}): { [label: string]: DmNode } {
  const [height, width] = scanShape;
  return {
    'SI Dimensions': { 'Size X': dm.int32(width), 'Size Y': dm.int32(height) },
    'SI Image Tags': {
      SI: { Acquisition: { 'Spatial Sampling': { 'Height (pixels)': dm.int32(height), 'Width (pixels)': dm.int32(width) } } },
      Acquisition: { Parameters: { Detector: { height: dm.int32(1860), width: dm.int32(2048) } } },
    },
    ...extra,
  };
}
