/**
 * Element types of result buffers, tiles and aux data, named as numpy names them. Booleans are
 * stored one byte per element (Uint8Array), as numpy does. 64-bit integers are left out on
 * purpose: their typed arrays hold bigints, which every arithmetic loop would have to special-case;
 * float64 holds integers exactly up to 2^53, which is what integer sums need.
 */
import { TesseraError } from '../errors.js';

export type DType = 'float32' | 'float64' | 'int8' | 'int16' | 'int32' | 'uint8' | 'uint16' | 'uint32' | 'bool';

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array;

export interface TypedArrayConstructor<T extends TypedArray = TypedArray> {
  new (length: number): T;
  new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): T;
  readonly BYTES_PER_ELEMENT: number;
}

/** numpy's dtype kinds: float, signed int, unsigned int, bool */
export type DTypeKind = 'f' | 'i' | 'u' | 'b';

const CTORS: Record<DType, TypedArrayConstructor> = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  bool: Uint8Array,
};

const KINDS: Record<DType, DTypeKind> = {
  float32: 'f',
  float64: 'f',
  int8: 'i',
  int16: 'i',
  int32: 'i',
  uint8: 'u',
  uint16: 'u',
  uint32: 'u',
  bool: 'b',
};

export const DTYPES = Object.keys(CTORS) as DType[];

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(CTORS, value);
}

export function dtypeCtor(dtype: DType): TypedArrayConstructor {
  return CTORS[dtype];
}

export function dtypeKind(dtype: DType): DTypeKind {
  return KINDS[dtype];
}

export function itemSize(dtype: DType): number {
  return CTORS[dtype].BYTES_PER_ELEMENT;
}

export function allocate(dtype: DType, length: number): TypedArray {
  return new CTORS[dtype](length);
}

/** The dtype of a typed array (a Uint8Array is 'uint8'; 'bool' is a declaration, not a storage type). */
export function dtypeOf(arr: ArrayBufferView): DType {
  if (arr instanceof Float32Array) return 'float32';
  if (arr instanceof Float64Array) return 'float64';
  if (arr instanceof Int8Array) return 'int8';
  if (arr instanceof Int16Array) return 'int16';
  if (arr instanceof Int32Array) return 'int32';
  if (arr instanceof Uint8Array) return 'uint8';
  if (arr instanceof Uint16Array) return 'uint16';
  if (arr instanceof Uint32Array) return 'uint32';
  throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'array', `unsupported element type ${arr.constructor.name}`);
}

export function isTypedArray(value: unknown): value is TypedArray {
  return ArrayBuffer.isView(value) && !(value instanceof DataView) && !(value instanceof BigInt64Array) && !(value instanceof BigUint64Array);
}

/** Would storing `from` in `to` keep its dtype kind (for getResults' kind check, B.7 rule 7)? */
export function sameKind(declared: DType, actual: DType): boolean {
  const a = KINDS[declared];
  const b = KINDS[actual];
  if (a === b) return true;
  // booleans live in Uint8Arrays
  return a === 'b' && actual === 'uint8';
}

/**
 * The dtype every UDF of a run sees (LiberTEM's result_type of the dataset dtype and each UDF's
 * preference): the native dtype unless someone asks for floats; the widest float asked for wins.
 */
export function inputDtypeFor(datasetDtype: DType, preferences: Array<DType | 'native'>, corrected: boolean): DType {
  let want: DType = datasetDtype;
  const promote = (d: DType) => {
    if (KINDS[d] !== 'f') return;
    if (KINDS[want] !== 'f' || itemSize(d) > itemSize(want)) want = d;
  };
  for (const p of preferences) if (p !== 'native') promote(p);
  if (corrected) promote('float32');
  return want;
}
