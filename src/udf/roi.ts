/**
 * The navigation region of interest: a bool per scan position. Nav result buffers hold only the
 * selected positions, in C order ("ROI-compressed", LiberTEM's raw_data); NavSelection maps
 * between raw flat frame indices and compressed ones.
 */
import { TesseraError } from '../errors.js';
import { shapeSize } from './ndarray.js';

export type RoiInput = Uint8Array | ArrayLike<boolean | number> | null | undefined;

/** Validate a ROI against the nav shape; returns a flat Uint8Array of 0/1, or null for "everything". */
export function normaliseRoi(roi: RoiInput, navShape: readonly number[]): Uint8Array | null {
  if (roi === null || roi === undefined) return null;
  const n = shapeSize(navShape);
  if (typeof roi !== 'object' || typeof (roi as ArrayLike<unknown>).length !== 'number') {
    throw new TesseraError('TESSERA_ERR_ROI', 'expected a bool array with one entry per scan position');
  }
  if (roi.length !== n) {
    throw new TesseraError('TESSERA_ERR_ROI', `has ${roi.length} entries, the scan has ${n} positions`);
  }
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = roi[i] ? 1 : 0;
  return out;
}

export class NavSelection {
  readonly size: number;
  readonly selected: number;
  /** prefix[i] = number of selected positions before raw index i (null: identity) */
  private readonly prefix: Int32Array | null;

  constructor(
    readonly roi: Uint8Array | null,
    size: number,
  ) {
    this.size = size;
    if (roi === null) {
      this.prefix = null;
      this.selected = size;
      return;
    }
    const prefix = new Int32Array(size + 1);
    for (let i = 0; i < size; i++) prefix[i + 1] = prefix[i]! + (roi[i] ? 1 : 0);
    this.prefix = prefix;
    this.selected = prefix[size]!;
  }

  /** Compressed index of the first selected position at or after raw index i. */
  countBefore(i: number): number {
    return this.prefix === null ? i : this.prefix[i]!;
  }

  /** Selected positions in raw range [start, end). */
  count(start: number, end: number): number {
    return this.countBefore(end) - this.countBefore(start);
  }

  isSelected(i: number): boolean {
    return this.roi === null || this.roi[i] === 1;
  }

  /** Maximal runs [start, end) of consecutive selected raw indices within [start, end). */
  runs(start: number, end: number): Array<[number, number]> {
    if (this.roi === null) return end > start ? [[start, end]] : [];
    const out: Array<[number, number]> = [];
    let i = start;
    while (i < end) {
      while (i < end && this.roi[i] !== 1) i++;
      const s = i;
      while (i < end && this.roi[i] === 1) i++;
      if (i > s) out.push([s, i]);
    }
    return out;
  }

  /** Raw indices of the selected positions in [start, end). */
  indices(start: number, end: number): Int32Array {
    const out = new Int32Array(this.count(start, end));
    let k = 0;
    for (let i = start; i < end; i++) if (this.isSelected(i)) out[k++] = i;
    return out;
  }

  /** Expand a compressed mask (one entry per selected position) to the full nav size. */
  expandMask(compressed: Uint8Array): Uint8Array {
    if (this.roi === null) return compressed.slice();
    const out = new Uint8Array(this.size);
    let k = 0;
    for (let i = 0; i < this.size; i++) if (this.roi[i] === 1) out[i] = compressed[k++]!;
    return out;
  }
}
