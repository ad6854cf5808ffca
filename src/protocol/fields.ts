/**
 * Validation of decoded msgpack messages, shared by every process protocol (live.ts, the
 * shuffle's): each helper reads one field and throws TESSERA_ERR_BAD_MESSAGE naming the message
 * type and the field, so a receiving loop can count and drop a bad message in one place.
 */
import type { Unpackr } from 'msgpackr';
import { TesseraError } from '../errors.js';

export type Obj = Record<string, unknown>;

/** A value for an error message. shown(v) itself throws for maps like {toString: 0} (found by fuzzing). */
export function shown(v: unknown): string {
  try {
    return String(v);
  } catch {
    return `(${typeof v})`;
  }
}

export function bad(what: string, why: string): never {
  throw new TesseraError('TESSERA_ERR_BAD_MESSAGE', what, why);
}

export function obj(v: unknown, what: string): Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || ArrayBuffer.isView(v)) bad(what, 'not a map');
  return v as Obj;
}

export function int(m: Obj, key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = m[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(shown(m.type), `${key} is not an integer in [${min}, ${max}]: ${shown(v)}`);
  return v;
}

export function str(m: Obj, key: string, max = 256): string {
  const v = m[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) bad(shown(m.type), `${key} is not a string`);
  return v;
}

export function bytes(m: Obj, key: string): Uint8Array {
  const v = m[key];
  if (!(v instanceof Uint8Array)) bad(shown(m.type), `${key} is not binary`);
  return v;
}

/** Unpack one message and check its envelope: a map with the expected `version` and a `type`. */
export function envelope(raw: Uint8Array, unpackr: Unpackr, protocol: string, version: number): Obj {
  let m: unknown;
  try {
    m = unpackr.unpack(raw);
  } catch (err) {
    bad(protocol, `not msgpack: ${(err as Error).message}`);
  }
  const r = obj(m, protocol);
  if (typeof r.version !== 'number') bad(protocol, 'no version field');
  if (r.version !== version) throw new TesseraError('TESSERA_ERR_PROTOCOL_VERSION', shown(r.version), version);
  if (typeof r.type !== 'string') bad(protocol, 'no type field');
  return r;
}
