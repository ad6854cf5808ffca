/**
 * The invariant: the sector-split, partition-merged result equals the single-pass result.
 * Random small datasets, random nav partitionings, random signal splits (column slices, the
 * 8-sector split, rectangles) and random tile shapes; bit-exact for integer sums, a tight
 * tolerance for floating-point statistics and float input.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { ApplyMasksUDF, CoMUDF, StdDevUDF, SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import type { SigSlice } from '../../src/udf/partition.js';
import { runUdf } from '../../src/udf/runner.js';
import { tileKernelsAvailable } from '../../src/udf/kernels.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';

interface Case {
  navShape: number[];
  h: number;
  w: number;
  seed: number;
  partitionFrames: number;
  split: 'sectors' | 'whole' | number[] | { rows: number[]; cols: number[] };
  depth: number;
  rows: number;
  roi: boolean[] | null;
  float: boolean;
  /** SIMD kernels or JavaScript loops for the split run (the single pass uses kernels) */
  kernels: boolean;
}

function cuts(max: number): fc.Arbitrary<number[]> {
  if (max < 2) return fc.constant([]);
  return fc.uniqueArray(fc.integer({ min: 1, max: max - 1 }), { maxLength: Math.min(4, max - 1) }).map((a) => a.sort((x, y) => x - y));
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    navShape: fc.oneof(fc.tuple(fc.integer({ min: 1, max: 9 })), fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 5 })), fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }))).map((t) => [...t]),
    h: fc.integer({ min: 1, max: 7 }),
    sectorWidth: fc.integer({ min: 1, max: 3 }),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
    float: fc.boolean(),
  })
  .chain((base) => {
    const w = base.sectorWidth * 8;
    const nFrames = base.navShape.reduce((a, b) => a * b, 1);
    return fc.record({
      navShape: fc.constant(base.navShape),
      h: fc.constant(base.h),
      w: fc.constant(w),
      seed: fc.constant(base.seed),
      float: fc.constant(base.float),
      partitionFrames: fc.integer({ min: 1, max: nFrames }),
      split: fc.oneof(fc.constant('sectors' as const), fc.constant('whole' as const), cuts(w), fc.record({ rows: cuts(base.h), cols: cuts(w) })),
      depth: fc.integer({ min: 1, max: 4 }),
      rows: fc.integer({ min: 1, max: base.h }),
      roi: fc.option(fc.array(fc.boolean(), { minLength: nFrames, maxLength: nFrames }), { nil: null }),
      kernels: fc.boolean(),
    });
  });

function slicesFor(c: Case): 'sectors' | 'whole' | SigSlice[] {
  if (c.split === 'sectors' || c.split === 'whole') return c.split;
  const { rows, cols } = Array.isArray(c.split) ? { rows: [], cols: c.split } : c.split;
  const ys = [0, ...rows, c.h];
  const xs = [0, ...cols, c.w];
  const out: SigSlice[] = [];
  for (let i = 0; i + 1 < ys.length; i++) {
    for (let j = 0; j + 1 < xs.length; j++) out.push({ origin: [ys[i]!, xs[j]!], shape: [ys[i + 1]! - ys[i]!, xs[j + 1]! - xs[j]!] });
  }
  return out;
}

function makeDataset(c: Case): MemoryDataSet {
  const n = c.navShape.reduce((a, b) => a * b, 1) * c.h * c.w;
  let s = c.seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s >>> 20; // 12 bits
  };
  const data = c.float ? Float32Array.from({ length: n }, () => next() / 7) : Uint16Array.from({ length: n }, next);
  return new MemoryDataSet({ data, navShape: c.navShape, sigShape: [c.h, c.w] });
}

const udfs = (c: Case) => {
  const list = [
    new SumUDF(),
    new SumSigUDF(),
    new StdDevUDF(),
    new ApplyMasksUDF({ masks: [{ type: 'disk', cy: c.h / 2, cx: c.w / 3, r: 2.5 }, { type: 'point', y: c.h - 1, x: c.w - 1 }, { type: 'rectangle', y: 0, x: 1, h: 2, w: c.w - 2 }] }),
  ];
  return c.navShape.length === 2 ? [...list, new CoMUDF({ r: 3 }), new CoMUDF()] : list;
};

/** Buffers whose values are integer sums for integer input: must match bit for bit. */
const EXACT = new Set(['SumUDF.intensity', 'SumSigUDF.intensity', 'ApplyMasksUDF.intensity', 'StdDevUDF.sum', 'StdDevUDF.num_frames', 'CoMUDF.raw_com', 'CoMUDF.raw_shifts', 'CoMUDF.field']);

function compare(c: Case, names: string[], split: UDFResults[], single: UDFResults[]): void {
  split.forEach((res, i) => {
    for (const [key, buf] of Object.entries(res)) {
      const ref = single[i]![key]!.data;
      const got = buf.data;
      expect(got.length).toBe(ref.length);
      const exact = !c.float && EXACT.has(`${names[i]}.${key}`);
      for (let k = 0; k < ref.length; k++) {
        const a = got[k]!;
        const b = ref[k]!;
        if (exact || Number.isNaN(b)) expect(Object.is(a, b) || a === b, `${names[i]}.${key}[${k}]: ${a} vs ${b}`).toBe(true);
        else expect(Math.abs(a - b), `${names[i]}.${key}[${k}]: ${a} vs ${b}`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(b)) + (key === 'divergence' || key === 'curl' ? 1e-9 : 0));
      }
    }
  });
}

describe('sector-split, partition-merged result == single-pass result', () => {
  it('runs with the SIMD kernels built (npm run build assembles src/udf/kernels.wat)', () => {
    expect(tileKernelsAvailable()).toBe(true);
  });

  it('holds for random datasets, partitionings, signal splits, tile shapes and ROIs', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const ds = makeDataset(c);
        const nFrames = c.navShape.reduce((a, b) => a * b, 1);
        const roi = c.roi;
        const list = udfs(c);
        const names = list.map((u) => u.constructor.name);
        const single = await runUdf(ds, udfs(c), { roi, partitionFrames: nFrames, sigSplit: 'whole', tileShape: { depth: nFrames, rows: c.h } });
        const split = await runUdf(ds, list, { roi, partitionFrames: c.partitionFrames, sigSplit: slicesFor(c), tileShape: { depth: c.depth, rows: c.rows }, kernels: c.kernels });
        compare(c, names, split, single);
      }),
      { numRuns: 150, seed: 20240601 },
    );
  });

  it('holds for the 8-sector split of a small frame with 8 column slices, one scan row per partition', async () => {
    const c: Case = { navShape: [3, 4], h: 5, w: 16, seed: 99, partitionFrames: 4, split: 'sectors', depth: 2, rows: 2, roi: null, float: false, kernels: true };
    const ds = makeDataset(c);
    const list = udfs(c);
    const single = await runUdf(ds, udfs(c), { partitionFrames: 12, sigSplit: 'whole', tileShape: { depth: 12, rows: 5 } });
    const split = await runUdf(ds, list);
    compare(c, list.map((u) => u.constructor.name), split, single);
  });
});
