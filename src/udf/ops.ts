/** Small array helpers shared by the standard UDFs' merge functions. */
import type { TypedArray } from './dtype.js';

/** dest += src, element-wise */
export function addInto(dest: TypedArray, src: ArrayLike<number>): void {
  const n = dest.length;
  for (let i = 0; i < n; i++) dest[i] += src[i]!;
}
