/** The worked example of docs/udf.md, verbatim, against a plain count. */
import { describe, expect, it } from 'vitest';
import { MemoryDataSet, runUdf, UDF, type NDArray } from '../../src/udf/index.js';
import { randomFrames } from './helpers.js';

interface Params {
  threshold: number;
}

export class HotPixelsUDF extends UDF<Params> {
  // params are validated with ajv on construction (TESSERA_ERR_UDF_PARAMS)
  static override paramsSchema = {
    type: 'object',
    required: ['threshold'],
    properties: { threshold: { type: 'number' } },
    additionalProperties: false,
  };

  getResultBuffers() {
    return {
      perFrame: this.buffer({ kind: 'nav', dtype: 'float64' }), // one value per scan position
      perPixel: this.buffer({ kind: 'sig', dtype: 'float64' }), // one value per detector pixel
    };
  }

  // tile: depth x rows x width, a stack of partial frames (see "Partitions, tiles and the sector split")
  override processTile(tile: NDArray): void {
    const [depth, rows, w] = tile.shape as [number, number, number];
    const n = rows * w;
    const { perFrame, perPixel } = this.results; // views for this tile: [depth], [rows, w]
    for (let f = 0; f < depth; f++) {
      for (let i = 0; i < n; i++) {
        if (tile[f * n + i]! > this.params.threshold) {
          perFrame![f] += 1;
          perPixel![i] += 1;
        }
      }
    }
  }

  // nav buffers merge by assignment by default; sig and single buffers need a merge
  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    dest.perFrame!.set(src.perFrame!);
    const d = dest.perPixel!;
    const s = src.perPixel!;
    for (let i = 0; i < d.length; i++) d[i] += s[i]!;
  }
}

describe('docs/udf.md worked example', () => {
  it('counts pixels above the threshold per frame and per pixel, sector-split', async () => {
    const [ny, nx, h, w] = [4, 5, 6, 16];
    const frames = randomFrames(ny * nx, h, w, 4);
    const ds = new MemoryDataSet({ data: frames, navShape: [ny, nx], sigShape: [h, w] });
    const res = await runUdf(ds, new HotPixelsUDF({ threshold: 3000 }));
    expect(res.perFrame!.data.shape).toEqual([ny, nx]);
    expect(res.perPixel!.data.shape).toEqual([h, w]);
    for (let k = 0; k < ny * nx; k++) {
      expect(res.perFrame!.data[k]).toBe(frames.subarray(k * h * w, (k + 1) * h * w).filter((v) => v > 3000).length);
    }
    for (let i = 0; i < h * w; i++) {
      let c = 0;
      for (let k = 0; k < ny * nx; k++) if (frames[k * h * w + i]! > 3000) c++;
      expect(res.perPixel!.data[i]).toBe(c);
    }
    expect(() => new HotPixelsUDF({} as Params)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
  });
});
