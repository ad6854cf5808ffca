/**
 * An n-dimensional array is a typed array in C order with its shape attached. Views are
 * subarrays (same memory, no copy) with their own shape: that is how result buffers are handed to
 * process methods per tile, frame or partition.
 */
import type { TypedArray } from './dtype.js';
import { TesseraError } from '../errors.js';

export type NDArray<T extends TypedArray = TypedArray> = T & { readonly shape: readonly number[] };

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Attach `shape` to `data` (no copy). The shape must account for every element. */
export function ndarray<T extends TypedArray>(data: T, shape: readonly number[]): NDArray<T> {
  if (shapeSize(shape) !== data.length) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'shape', `[${shape.join(', ')}] does not match ${data.length} elements`);
  }
  Object.defineProperty(data, 'shape', { value: Object.freeze([...shape]), enumerable: false, configurable: true, writable: false });
  return data as NDArray<T>;
}

/** A view on elements [start, end) of `data` with `shape`. */
export function view<T extends TypedArray>(data: T, start: number, end: number, shape: readonly number[]): NDArray<T> {
  return ndarray(data.subarray(start, end) as T, shape);
}

/** C-order nav coordinates of flat index `i` in `shape`. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return out;
}
