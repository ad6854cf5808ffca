import { describe, expect, it } from 'vitest';
import { runUdf } from '../../src/udf/runner.js';
import { SumUDF, SumSigUDF, ApplyMasksUDF, CoMUDF } from '../../src/udf/lib/index.js';
import { dataset, diskMask, refCoM, refMasks, refSum, refSumSig } from './helpers.js';

describe('core standard UDFs against plain references', () => {
  const navShape = [3, 5];
  const [h, w] = [6, 16];
  const ds = dataset(navShape, [h, w], 7);
  const n = 15;

  it('Sum, SumSig, ApplyMasks and CoM in one pass (8 sector slices, one scan row per partition)', async () => {
    const masks = [
      { type: 'disk' as const, cy: 3, cx: 8, r: 2.5 },
      { type: 'ring' as const, cy: 2, cx: 5, ri: 1, ro: 3 },
    ];
    const [sum, sumsig, am, com] = await runUdf(ds, [new SumUDF(), new SumSigUDF(), new ApplyMasksUDF({ masks }), new CoMUDF()]);
    expect(Array.from(sum!.intensity!.data)).toEqual(Array.from(refSum(ds.data, n, h, w)));
    expect(sum!.intensity!.data.shape).toEqual([h, w]);
    expect(Array.from(sumsig!.intensity!.data)).toEqual(Array.from(refSumSig(ds.data, n, h, w)));
    expect(sumsig!.intensity!.data.shape).toEqual(navShape);
    const ref = refMasks(ds.data, n, h, w, [diskMask(h, w, 3, 8, 2.5), diskMask(h, w, 2, 5, 3, 1)]);
    expect(Array.from(am!.intensity!.data)).toEqual(Array.from(ref));
    const c = refCoM(ds.data, n, h, w, 3, 8);
    const got = com!.raw_shifts!.data;
    for (let i = 0; i < c.length; i++) expect(got[i]).toBeCloseTo(c[i]!, 10);
  });
});
