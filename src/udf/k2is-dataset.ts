/**
 * A recorded K2 IS dataset (8 sector files + .gtg) as a DataSet for the UDF engine. Sector
 * slices come straight from the recording's sector tile iterator (the receiver's layout: one
 * sector's 256 columns, decoded by the fast decoder); whole frames, for UDFs that need them, are
 * read frame by frame. The default tile shape is one whole sector frame (1860 x 256 uint16,
 * 952 KB: about LiberTEM's 1 MB), the decoder's natural unit. Workers re-open the recording
 * from its descriptor.
 */
import { TesseraError } from '../errors.js';
import { NUM_SECTORS, SECTOR_HEIGHT, SECTOR_WIDTH } from '../k2is/constants.js';
import { K2ISRecording, type RecordingOptions } from '../k2is/recording.js';
import { type DataSet, type DataSetDescriptor, registerDataSetType, type TileRequest } from './dataset.js';
import { shapeSize } from './ndarray.js';
import type { SigSlice, Tile } from './partition.js';
import { NavSelection } from './roi.js';

export interface K2ISDataSetOptions {
  scanShape?: readonly number[];
  syncOffset?: number;
  onBadBlock?: 'error' | 'zero';
}

export class K2ISDataSet implements DataSet {
  readonly dtype = 'uint16' as const;
  readonly sectors = NUM_SECTORS;
  readonly navShape: readonly number[];
  readonly sigShape: readonly [number, number];

  private constructor(
    readonly recording: K2ISRecording,
    private readonly path: string,
    private readonly options: K2ISDataSetOptions,
  ) {
    this.navShape = recording.navShape;
    this.sigShape = recording.sigShape;
  }

  static open(path: string, options: K2ISDataSetOptions = {}): K2ISDataSet {
    const opts: RecordingOptions = {};
    if (options.scanShape) opts.scanShape = options.scanShape;
    if (options.syncOffset !== undefined) opts.syncOffset = options.syncOffset;
    if (options.onBadBlock) opts.onBadBlock = options.onBadBlock;
    return new K2ISDataSet(K2ISRecording.open(path, opts), path, options);
  }

  *tiles(req: TileRequest): Iterable<Tile> {
    const selection = new NavSelection(req.roi ?? null, shapeSize(this.navShape));
    const runs = selection.runs(req.navStart, req.navEnd);
    const { sig, tileShape } = req;
    if (isSector(sig)) {
      const sector = sig.origin[1] / SECTOR_WIDTH;
      for (const [start, stop] of runs) {
        yield* this.recording.tiles({ start, stop, depth: tileShape.depth, rows: tileShape.rows, sectors: [sector] });
      }
      return;
    }
    // any other rectangle: cut it from whole frames
    const [h, w] = this.sigShape;
    const [y0, x0] = sig.origin;
    const [sh, sw] = sig.shape;
    const frame = new Uint16Array(h * w);
    for (const [start, stop] of runs) {
      for (let f0 = start; f0 < stop; f0 += tileShape.depth) {
        const depth = Math.min(tileShape.depth, stop - f0);
        const whole = sw === w && sh === h && tileShape.rows >= h;
        const buf = new Uint16Array(depth * sh * sw);
        for (let k = 0; k < depth; k++) {
          this.recording.readFrame(f0 + k, whole ? buf.subarray(k * h * w, (k + 1) * h * w) : frame);
          if (whole) continue;
          for (let r = 0; r < sh; r++) buf.set(frame.subarray((y0 + r) * w + x0, (y0 + r) * w + x0 + sw), (k * sh + r) * sw);
        }
        for (let r0 = 0; r0 < sh; r0 += tileShape.rows) {
          const rows = Math.min(tileShape.rows, sh - r0);
          const data = rows === sh ? buf : new Uint16Array(depth * rows * sw);
          if (rows !== sh) for (let k = 0; k < depth; k++) data.set(buf.subarray((k * sh + r0) * sw, (k * sh + r0 + rows) * sw), k * rows * sw);
          yield { data, navStart: f0, depth, sigOrigin: [y0 + r0, x0], sigShape: [rows, sw] };
        }
      }
    }
  }

  descriptor(): DataSetDescriptor {
    return { type: 'k2is', path: this.path, scanShape: this.options.scanShape ? [...this.options.scanShape] : null, syncOffset: this.options.syncOffset ?? null, onBadBlock: this.options.onBadBlock ?? null };
  }

  close(): void {
    this.recording.close();
  }
}

function isSector(sig: SigSlice): boolean {
  return sig.shape[0] === SECTOR_HEIGHT && sig.shape[1] === SECTOR_WIDTH && sig.origin[0] === 0 && sig.origin[1] % SECTOR_WIDTH === 0;
}

registerDataSetType('k2is', (d) => {
  if (typeof d.path !== 'string') throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dataset', 'a k2is descriptor needs a path');
  return K2ISDataSet.open(d.path, {
    scanShape: (d.scanShape as number[] | null) ?? undefined,
    syncOffset: (d.syncOffset as number | null) ?? undefined,
    onBadBlock: (d.onBadBlock as 'error' | 'zero' | null) ?? undefined,
  });
});
