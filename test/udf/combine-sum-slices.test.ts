/**
 * Sig buffers whose merge is element-wise addition (SumUDF, LogsumUDF) are merged slice by
 * slice (PartitionCombiner keeps the slices, DatasetResults.merge adds each into its rectangle)
 * instead of through a frame-sized intermediate. The result must be bit for bit what the
 * frame-sized path gives (it is what offline runUdf does), floats with non-integer values
 * included, and equal to a plain per-pixel reference that adds chunk after chunk.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PartitionCombiner } from '../../src/udf/combine.js';
import { DatasetResults } from '../../src/udf/dataset-results.js';
import { allocate, type TypedArray } from '../../src/udf/dtype.js';
import { LogsumUDF, StdDevUDF, SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import type { NDArray } from '../../src/udf/ndarray.js';
import { columnSlices, type SigSlice } from '../../src/udf/partition.js';
import { PartitionTask, type PartitionResult } from '../../src/udf/partition-task.js';
import { makeRunContext } from '../../src/udf/runner.js';

/** A SumUDF whose merge is its own (same arithmetic): must take the frame-sized path. */
class OwnMergeSumUDF extends SumUDF {
  static override udfName = 'OwnMergeSumUDF';
  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    const d = dest.intensity!;
    const s = src.intensity!;
    for (let i = 0; i < d.length; i++) d[i] += s[i]!;
  }
}

function bytesOf(a: TypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Deterministic pseudo-random floats with fractional parts (so the order of additions shows). */
function noise(seed: number, n: number, dtype: 'float32' | 'float64'): TypedArray {
  const out = allocate(dtype, n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) / 2 ** 32) * 1000 - 3.3;
  }
  return out;
}

describe('sum-merged sig buffers, slice by slice', () => {
  it('are detected by the merge implementation, not by name', () => {
    const context = makeRunContext({ navShape: [2, 2], sigShape: [4, 8], datasetDtype: 'uint16', sectors: 2, udfs: [new SumUDF()] });
    const r = new DatasetResults([new SumUDF(), new SumSigUDF(), new StdDevUDF(), new LogsumUDF(), new OwnMergeSumUDF()], context);
    expect(r.sumMergedSig.map((s) => (s ? [...s] : null))).toEqual([['intensity'], null, null, ['logsum'], null]);
  });

  it('give bit for bit the frame-sized result and a per-pixel reference (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<'float32' | 'float64'>('float32', 'float64'),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 2 ** 31 }),
        fc.boolean(),
        (dtype, sectors, chunks, seed, reverse) => {
          const [h, w] = [3, 4 * sectors];
          const navShape = [chunks, 2];
          const udfs = () => [new SumUDF({ dtype }), new SumSigUDF(), new OwnMergeSumUDF({ dtype })];
          const context = makeRunContext({ navShape, sigShape: [h, w], datasetDtype: 'uint16', sectors, udfs: udfs() });
          const sliced = new DatasetResults(udfs(), context);
          const framed = new DatasetResults(udfs(), context);
          const ref = new Float64Array(h * w);
          const slices = columnSlices([h, w], sectors);
          const order = [...Array(chunks).keys()];
          if (reverse) order.reverse();
          for (const c of order) {
            const a = new PartitionCombiner(sliced.declarations, [h, w], sliced.sumMergedSig);
            const b = new PartitionCombiner(framed.declarations, [h, w]);
            slices.forEach((sig, s) => {
              const n = sig.shape[0] * sig.shape[1];
              const part = (): PartitionResult => ({
                navStart: c * 2,
                navEnd: c * 2 + 2,
                sig,
                frames: 2,
                udfs: [{ intensity: noise(seed + c * 31 + s, n, dtype) }, { intensity: noise(seed + 7 * c + s + 1, 2, 'float32') }, { intensity: noise(seed + c * 31 + s, n, dtype) }],
              });
              a.add(part());
              b.add(part());
              const src = noise(seed + c * 31 + s, n, dtype);
              for (let y = 0; y < sig.shape[0]; y++) {
                for (let x = 0; x < sig.shape[1]; x++) {
                  const i = (sig.origin[0] + y) * w + sig.origin[1] + x;
                  ref[i] = dtype === 'float32' ? Math.fround(ref[i]! + src[y * sig.shape[1] + x]!) : ref[i]! + src[y * sig.shape[1] + x]!;
                }
              }
            });
            const ra = a.result();
            if (sectors > 1) {
              expect(ra.sigParts?.[0]).toHaveLength(sectors);
              expect(ra.udfs[0]!.intensity).toBeUndefined();
              expect(ra.sigParts?.[2]).toBeNull();
            }
            sliced.merge(ra);
            framed.merge(b.result());
          }
          const [sa, fa] = [sliced.results(), framed.results()];
          for (let u = 0; u < 3; u++) {
            expect(bytesOf(sa[u]!.intensity!.data as TypedArray)).toEqual(bytesOf(fa[u]!.intensity!.data as TypedArray));
          }
          expect(Array.from(sa[0]!.intensity!.data as TypedArray)).toEqual(Array.from(ref));
          expect(Array.from(sliced.damage)).toEqual(Array.from(framed.damage));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('equal the frame-sized path for tasks over real tiles, including a zero-filled slice', () => {
    const [h, w] = [6, 16];
    const specs = [{ name: 'SumUDF', params: { dtype: 'float32' } }, { name: 'SumUDF' }, { name: 'SumSigUDF' }];
    const context = makeRunContext({ navShape: [2, 3], sigShape: [h, w], datasetDtype: 'uint16', sectors: 4, udfs: [new SumUDF({ dtype: 'float32' })] });
    const run = (withSlices: boolean) => {
      const results = new DatasetResults(specs, context);
      for (let row = 0; row < 2; row++) {
        const combiner = new PartitionCombiner(results.declarations, [h, w], withSlices ? results.sumMergedSig : undefined);
        columnSlices([h, w], 4).forEach((sig: SigSlice, s) => {
          const task = new PartitionTask({ udfs: specs, context, partition: { navStart: row * 3, navEnd: row * 3 + 3, sig } });
          for (let f = row * 3; f < row * 3 + 3; f++) {
            const tile = new Uint16Array(sig.shape[0] * sig.shape[1]);
            // sector 2 of row 1 is a lost sector: all zeros
            if (!(row === 1 && s === 2)) for (let i = 0; i < tile.length; i++) tile[i] = (f * 977 + s * 131 + i * 7) % 4093;
            task.processTile({ data: tile, navStart: f, depth: 1, sigOrigin: sig.origin, sigShape: sig.shape });
          }
          combiner.add(task.finish());
        });
        results.merge(combiner.result());
      }
      return results.results();
    };
    const [a, b] = [run(true), run(false)];
    expect(bytesOf(a[0]!.intensity!.data as TypedArray)).toEqual(bytesOf(b[0]!.intensity!.data as TypedArray));
    expect(bytesOf(a[1]!.intensity!.data as TypedArray)).toEqual(bytesOf(b[1]!.intensity!.data as TypedArray));
    expect(Array.from(a[2]!.intensity!.data as TypedArray)).toEqual(Array.from(b[2]!.intensity!.data as TypedArray));
    expect((a[0]!.intensity!.data as TypedArray).some((v) => v !== 0)).toBe(true);
  });

  it('refuse slices that do not tile the frame or have the wrong size', () => {
    const [h, w] = [2, 4];
    const context = makeRunContext({ navShape: [1, 1], sigShape: [h, w], datasetDtype: 'uint16', sectors: 2, udfs: [new SumUDF()] });
    const results = new DatasetResults([new SumUDF()], context);
    const base = { navStart: 0, navEnd: 1, frames: 1, sig: { origin: [0, 0] as [number, number], shape: [h, w] as [number, number] }, udfs: [{}] };
    const left = { sig: { origin: [0, 0] as [number, number], shape: [h, 2] as [number, number] }, arrays: { intensity: new Float64Array(4) } };
    expect(() => results.merge({ ...base, sigParts: [[left]] })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_RESULTS' }));
    const short = { sig: { origin: [0, 2] as [number, number], shape: [h, 2] as [number, number] }, arrays: { intensity: new Float64Array(3) } };
    expect(() => results.merge({ ...base, sigParts: [[left, short]] })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_RESULTS' }));
    const outside = { sig: { origin: [0, 3] as [number, number], shape: [h, 2] as [number, number] }, arrays: { intensity: new Float64Array(4) } };
    expect(() => results.merge({ ...base, sigParts: [[left, outside]] })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_RESULTS' }));
    // nothing was merged by the refused results
    expect(Array.from(results.damage)).toEqual([0]);
    expect(Array.from(results.results()[0]!.intensity!.data as TypedArray)).toEqual(new Array(h * w).fill(0));
  });
});
