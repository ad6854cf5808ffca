/**
 * The engine's rules: ROI, aux data, private and resultOnly buffers, invalid declarations,
 * params, combine rules, meta, runUdfIter, corrections, and the receiver-style flow
 * (PartitionTask per sector -> PartitionCombiner -> DatasetResults).
 */
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { PartitionCombiner } from '../../src/udf/combine.js';
import { DatasetResults } from '../../src/udf/dataset-results.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { ApplyMasksUDF, CoMUDF, StdDevUDF, SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import type { NDArray } from '../../src/udf/ndarray.js';
import { columnSlices } from '../../src/udf/partition.js';
import { PartitionTask, type PartitionResult } from '../../src/udf/partition-task.js';
import { createUdf } from '../../src/udf/registry.js';
import { makeRunContext, runUdf, runUdfIter } from '../../src/udf/runner.js';
import { UDF, type ResultValue, type UDFMeta } from '../../src/udf/udf.js';
import { dataset, refSum, refSumSig } from './helpers.js';

const [h, w] = [4, 16];
const navShape = [3, 5];
const n = 15;
const ds = dataset(navShape, [h, w], 21);

describe('ROI', () => {
  const roi = Uint8Array.from({ length: n }, (_, i) => (i % 4 === 1 || i === 14 ? 1 : 0));

  it('processes only selected frames; nav results expand with NaN, raw stays compressed', async () => {
    const [sum, sumsig] = await runUdf(ds, [new SumUDF(), new SumSigUDF()], { roi });
    expect(Array.from(sum!.intensity!.data)).toEqual(Array.from(refSum(ds.data, n, h, w, roi)));
    const ref = refSumSig(ds.data, n, h, w);
    const sel = [1, 5, 9, 13, 14];
    expect(Array.from(sumsig!.intensity!.raw)).toEqual(sel.map((i) => ref[i]));
    for (let i = 0; i < n; i++) {
      if (roi[i]) expect(sumsig!.intensity!.data[i]).toBe(ref[i]);
      else expect(sumsig!.intensity!.data[i]).toBeNaN();
    }
    expect(Array.from(sumsig!.intensity!.validMask!)).toEqual(Array.from(roi));
  });

  it('skips partitions without a selected frame and accepts boolean arrays', async () => {
    const only = Array.from({ length: n }, (_, i) => i === 7);
    const steps = [];
    for await (const s of runUdfIter(ds, new SumSigUDF(), { roi: only })) steps.push(s);
    expect(steps).toHaveLength(1);
    expect(steps[0]!.progress).toMatchObject({ partitionsTotal: 1, framesTotal: 1, tasksTotal: 8 });
  });

  it('an empty ROI yields exactly one step with nothing merged', async () => {
    const steps = [];
    for await (const s of runUdfIter(ds, [new SumUDF(), new SumSigUDF()], { roi: new Uint8Array(n) })) steps.push(s);
    expect(steps).toHaveLength(1);
    expect(steps[0]!.progress.framesDone).toBe(0);
    expect(Array.from(steps[0]!.buffers[0]!.intensity!.data).every((v) => v === 0)).toBe(true);
    expect(steps[0]!.buffers[1]!.intensity!.raw.length).toBe(0);
  });

  it('rejects a ROI of the wrong size', async () => {
    await expect(runUdf(ds, new SumUDF(), { roi: new Uint8Array(3) })).rejects.toMatchObject({ code: 'TESSERA_ERR_ROI' });
  });
});

/** sum over pixels of frameWeight * pixel * pixelWeight, per frame; uses nav and sig aux data */
class WeightedSumUDF extends UDF<{ frameWeight: ReturnType<typeof UDF.auxData>; pixelWeight: ReturnType<typeof UDF.auxData> }> {
  getResultBuffers() {
    return { weighted: this.buffer({ kind: 'nav', dtype: 'float64' }) };
  }

  override processTile(tile: NDArray): void {
    const fw = this.params.frameWeight;
    const pw = this.params.pixelWeight;
    const depth = tile.shape[0]!;
    const px = tile.length / depth;
    expect(fw.shape).toEqual([depth]);
    expect(pw.shape).toEqual([tile.shape[1], tile.shape[2]]);
    for (let f = 0; f < depth; f++) {
      let s = 0;
      for (let i = 0; i < px; i++) s += tile[f * px + i]! * pw[i]!;
      this.results.weighted![f] += s * fw[f]!;
    }
  }
}

describe('aux data', () => {
  it('per-frame and per-pixel aux data arrive as views for the current tile (with ROI and sector split)', async () => {
    const frameWeight = Float64Array.from({ length: n }, (_, i) => i + 1);
    const pixelWeight = Float32Array.from({ length: h * w }, (_, i) => (i % 7) - 3);
    const roi = Uint8Array.from({ length: n }, (_, i) => (i % 3 ? 1 : 0));
    const udf = new WeightedSumUDF({
      frameWeight: UDF.auxData(frameWeight, { kind: 'nav', dtype: 'float64' }),
      pixelWeight: UDF.auxData(pixelWeight, { kind: 'sig', dtype: 'float32' }),
    });
    const r = await runUdf(ds, udf, { roi, tileShape: { depth: 2, rows: 3 } });
    for (let k = 0; k < n; k++) {
      if (!roi[k]) continue;
      let s = 0;
      for (let i = 0; i < h * w; i++) s += ds.data[k * h * w + i]! * pixelWeight[i]!;
      expect(r.weighted!.data[k]).toBe(s * frameWeight[k]!);
    }
  });

  it('rejects aux data of the wrong size or dtype', async () => {
    const bad = new WeightedSumUDF({
      frameWeight: UDF.auxData(new Float64Array(3), { kind: 'nav', dtype: 'float64' }),
      pixelWeight: UDF.auxData(new Float32Array(h * w), { kind: 'sig', dtype: 'float32' }),
    });
    await expect(runUdf(ds, bad)).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
    const wrongType = new WeightedSumUDF({
      frameWeight: UDF.auxData(new Float32Array(n), { kind: 'nav', dtype: 'float64' }),
      pixelWeight: UDF.auxData(new Float32Array(h * w), { kind: 'sig', dtype: 'float32' }),
    });
    await expect(runUdf(ds, wrongType)).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
  });
});

/** mean frame intensity: private sums, a resultOnly result */
class MeanIntensityUDF extends UDF<{ mode?: 'ok' | 'returnPrivate' | 'skipResultOnly' | 'wrongKind' | 'wrongLength' | 'unknown' }> {
  getResultBuffers() {
    return {
      total: this.buffer({ kind: 'single', dtype: 'float64', use: 'private' }),
      frames: this.buffer({ kind: 'single', dtype: 'float64', use: 'private' }),
      mean: this.buffer({ kind: 'single', dtype: 'float64', use: 'resultOnly' }),
    };
  }

  override processFrame(frame: NDArray): void {
    let s = 0;
    for (let i = 0; i < frame.length; i++) s += frame[i]!;
    this.results.total![0] += s / frame.length;
    this.results.frames![0] += 1;
  }

  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    dest.total![0] += src.total![0]!;
    dest.frames![0] += src.frames![0]!;
  }

  override getResults(): Record<string, ResultValue> {
    const mean = Float64Array.of(this.results.total![0]! / this.results.frames![0]!);
    switch (this.rawParams.mode ?? 'ok') {
      case 'returnPrivate':
        return { mean, total: this.results.total! };
      case 'skipResultOnly':
        return {};
      case 'wrongKind':
        return { mean: Int32Array.of(1) };
      case 'wrongLength':
        return { mean: new Float64Array(2) };
      case 'unknown':
        return { mean, nope: mean };
      default:
        return { mean };
    }
  }
}

describe('private and resultOnly buffers (B.5, B.7)', () => {
  it('private buffers feed getResults and are not returned; resultOnly results are', async () => {
    const r = await runUdf(ds, new MeanIntensityUDF());
    expect(Object.keys(r)).toEqual(['mean']);
    const ref = refSumSig(ds.data, n, h, w).reduce((a, b) => a + b, 0) / (n * h * w);
    expect(r.mean!.data[0]).toBeCloseTo(ref, 9);
  });

  it.each([
    ['returnPrivate'],
    ['skipResultOnly'],
    ['wrongKind'],
    ['wrongLength'],
    ['unknown'],
  ] as const)('getResults mistake %s is TESSERA_ERR_UDF_RESULTS', async (mode) => {
    await expect(runUdf(ds, new MeanIntensityUDF({ mode }))).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_RESULTS' });
  });
});

function declaring(buffers: (u: UDF) => Record<string, unknown>, opts: { merge?: boolean; process?: boolean; getResults?: boolean } = {}) {
  class Declares extends UDF {
    getResultBuffers() {
      return buffers(this) as never;
    }
  }
  const proto = Declares.prototype as unknown as Record<string, unknown>;
  if (opts.process !== false) proto.processTile = () => {};
  if (opts.merge) proto.merge = () => {};
  if (opts.getResults) proto.getResults = () => ({});
  return new Declares();
}

describe('invalid declarations are TESSERA_ERR_UDF_DECLARATION', () => {
  it.each([
    ['unknown kind', declaring((u) => ({ x: u.buffer({ kind: 'frame' as never }) }))],
    ['unknown dtype', declaring((u) => ({ x: u.buffer({ kind: 'nav', dtype: 'int64' as never }) }))],
    ['bad extraShape', declaring((u) => ({ x: u.buffer({ kind: 'nav', extraShape: [0] }) }))],
    ['bad use', declaring((u) => ({ x: u.buffer({ kind: 'nav', use: 'secret' as never }) }))],
    ['bad name', declaring((u) => ({ 'not a name': u.buffer({ kind: 'nav' }) }))],
    ['not from buffer()', declaring(() => ({ x: { kind: 'nav' } }))],
    ['sig buffer with a sum rule', declaring((u) => ({ x: u.buffer({ kind: 'sig', combine: 'sum' }) }), { merge: true })],
    ['nav buffer placed', declaring((u) => ({ x: u.buffer({ kind: 'nav', combine: 'place' }) }))],
    ['unknown combine rule', declaring((u) => ({ x: u.buffer({ kind: 'nav', combine: 'avg' as never }) }))],
    ['sig buffer with the default merge', declaring((u) => ({ x: u.buffer({ kind: 'sig' }) }))],
    ['single buffer with the default merge', declaring((u) => ({ x: u.buffer({ kind: 'single' }) }))],
    ['resultOnly without getResults', declaring((u) => ({ x: u.buffer({ kind: 'nav', use: 'resultOnly' }) }))],
    ['no process method', declaring((u) => ({ x: u.buffer({ kind: 'nav' }) }), { process: false })],
  ])('%s', async (_, udf) => {
    await expect(runUdf(ds, udf)).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_DECLARATION' });
  });
});

describe('params and names', () => {
  it('validates params against the UDF JSON schema', () => {
    expect(() => new SumUDF({ dtype: 'int8' as never })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(() => createUdf({ name: 'SumUDF', params: { bogus: 1 } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(() => new CoMUDF({ r: -1 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
  });

  it('unknown UDF names are TESSERA_ERR_UNKNOWN_UDF', () => {
    expect(() => createUdf({ name: 'NoSuchUDF', params: {} })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UNKNOWN_UDF' }));
  });

  it('specs round-trip: a UDF made from another one\'s spec computes the same', async () => {
    const a = new ApplyMasksUDF({ masks: [{ type: 'disk', cy: 2, cx: 5, r: 2 }] });
    const b = createUdf(JSON.parse(JSON.stringify(a.toSpec())));
    const [ra, rb] = await runUdf(ds, [a, b]);
    expect(Array.from(rb!.intensity!.data)).toEqual(Array.from(ra!.intensity!.data));
  });
});

/** a frame count every slice sees ('same'), the per-frame maximum ('max'), and a custom combine */
class CombineRulesUDF extends UDF<{ lie?: boolean }> {
  getResultBuffers() {
    return {
      frames: this.buffer({ kind: 'single', dtype: 'float64', combine: 'same' }),
      maximum: this.buffer({ kind: 'nav', dtype: 'float64', combine: 'max' }),
      product: this.buffer({ kind: 'nav', dtype: 'float64', combine: (d, s) => d.forEach((v, i) => (d[i] = v * s[i]!)) }),
    };
  }

  override preprocess(): void {
    this.results.product!.fill(1);
    this.results.maximum!.fill(-Infinity);
  }

  override processTile(tile: NDArray): void {
    const depth = tile.shape[0]!;
    const px = tile.length / depth;
    // a slice that lies about the frame count breaks 'same'
    this.results.frames![0] += this.rawParams.lie && this.meta.partition!.sig.origin[1] > 0 ? 2 * depth : depth;
    for (let f = 0; f < depth; f++) {
      for (let i = 0; i < px; i++) {
        const v = tile[f * px + i]!;
        if (v > this.results.maximum![f]!) this.results.maximum![f] = v;
      }
      this.results.product![f] *= 2;
    }
  }

  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    dest.frames![0] += src.frames![0]!;
    dest.maximum!.set(src.maximum!);
    dest.product!.set(src.product!);
  }
}

describe('combine rules across signal slices', () => {
  it("'same', 'max' and a custom function", async () => {
    const r = await runUdf(ds, new CombineRulesUDF(), { sigSplit: 4, tileShape: { depth: 5, rows: h } });
    expect(r.frames!.data[0]).toBe(n);
    for (let k = 0; k < n; k++) {
      expect(r.maximum!.data[k]).toBe(Math.max(...ds.data.subarray(k * h * w, (k + 1) * h * w)));
      expect(r.product!.data[k]).toBe(16); // 2 per slice, 4 slices multiplied
    }
  });

  it("a 'same' buffer that differs between slices is TESSERA_ERR_UDF_RESULTS", async () => {
    await expect(runUdf(ds, new CombineRulesUDF({ lie: true }), { sigSplit: 2 })).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_RESULTS' });
  });
});

describe('meta', () => {
  it('slice, coordinates, partition shape, tiling index and valid nav mask', async () => {
    const seen: Array<Record<string, unknown>> = [];
    class Probe extends UDF {
      getResultBuffers() {
        return { x: this.buffer({ kind: 'nav' }) };
      }
      override processTile(): void {
        const m: UDFMeta = this.meta;
        seen.push({ slice: m.slice, coords: m.coordinates, part: m.partitionShape, idx: m.tilingSchemeIdx, dtype: m.inputDtype });
      }
      override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
        seen.push({ valid: Array.from(this.meta.validNavMask!) });
        super.merge(dest, src);
      }
    }
    const roi = Uint8Array.from({ length: n }, (_, i) => (i === 3 || i >= 6 ? 1 : 0));
    await runUdf(ds, new Probe(), { roi, sigSplit: 2, tileShape: { depth: 2, rows: 2 } });
    // first partition (scan row 0): only frame 3 selected; first slice, first row band
    expect(seen[0]).toEqual({ slice: { navStart: 0, depth: 1, sigOrigin: [0, 0], sigShape: [2, 8] }, coords: [[0, 3]], part: [1, 4, 8], idx: 0, dtype: 'uint16' });
    expect(seen[1]).toMatchObject({ slice: { sigOrigin: [2, 0] }, idx: 1 });
    const merges = seen.filter((s) => 'valid' in s);
    expect(merges).toHaveLength(3);
    // the mask excludes the partition being merged
    expect(merges[0]!.valid).toEqual(Array(10).fill(0));
    expect(merges[1]!.valid).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(merges[2]!.valid).toEqual([1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    const tiles = seen.filter((s) => 'coords' in s && (s.slice as { sigOrigin: number[] }).sigOrigin.join() === '0,8');
    expect(tiles.map((t) => t.coords)).toContainEqual([[1, 2], [1, 3]]);
  });
});

describe('runUdfIter', () => {
  it('yields after every merge with a growing damage mask and progress; the last step equals runUdf', async () => {
    const steps: Array<{ damage: number[]; done: number; parts: number; sum: number[] }> = [];
    for await (const s of runUdfIter(ds, [new SumUDF(), new StdDevUDF()], { partitionFrames: 4 })) {
      steps.push({ damage: Array.from(s.damage), done: s.progress.framesDone, parts: s.progress.partitionsDone, sum: Array.from(s.buffers[0]!.intensity!.data) });
      expect(s.damage.shape).toEqual(navShape);
      expect(s.progress).toMatchObject({ framesTotal: n, partitionsTotal: 4, tasksTotal: 32 });
    }
    expect(steps.map((s) => s.parts)).toEqual([1, 2, 3, 4]);
    expect(steps.map((s) => s.done)).toEqual([4, 8, 12, 15]);
    for (let i = 1; i < steps.length; i++) {
      const prev = steps[i - 1]!.damage;
      const cur = steps[i]!.damage;
      expect(cur.filter((v) => v).length).toBeGreaterThan(prev.filter((v) => v).length);
      prev.forEach((v, k) => v && expect(cur[k]).toBe(1));
    }
    expect(steps.at(-1)!.damage.every((v) => v === 1)).toBe(true);
    const final = await runUdf(ds, [new SumUDF(), new StdDevUDF()], { partitionFrames: 4 });
    expect(steps.at(-1)!.sum).toEqual(Array.from(final[0]!.intensity!.data));
    // partial sums grow to the final one
    const partial = refSum(ds.data, 4, h, w);
    expect(steps[0]!.sum).toEqual(Array.from(partial));
  });

  it('stops cleanly when the consumer breaks out, and on an abort signal', async () => {
    let count = 0;
    for await (const _ of runUdfIter(ds, new SumUDF(), { partitionFrames: 1 })) if (++count === 2) break;
    expect(count).toBe(2);
    const ac = new AbortController();
    const run = (async () => {
      for await (const _ of runUdfIter(ds, new SumUDF(), { partitionFrames: 1, signal: ac.signal })) ac.abort(new Error('stop'));
    })();
    await expect(run).rejects.toThrow('stop');
  });
});

describe('corrections', () => {
  /** the documented rule, applied to the whole dataset first: (raw - dark) * gain as float32; excluded pixels
   *  = mean of the valid left/right neighbours in the same row and sector */
  function correctFirst(data: Uint16Array, dark: Float32Array, gain: Float32Array, excluded: Array<[number, number]>, sectorWidth: number): Float32Array {
    const out = new Float32Array(data.length);
    const bad = new Set(excluded.map(([y, x]) => y * w + x));
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < h * w; i++) out[k * h * w + i] = (data[k * h * w + i]! - dark[i]!) * gain[i]!;
      for (const [y, x] of excluded) {
        const ok = (xx: number) => xx >= 0 && xx < w && Math.floor(xx / sectorWidth) === Math.floor(x / sectorWidth) && !bad.has(y * w + xx);
        const vals = [x - 1, x + 1].filter(ok).map((xx) => out[k * h * w + y * w + xx]!);
        out[k * h * w + y * w + x] = vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : 0;
      }
    }
    return out;
  }

  it('dark, gain and excluded pixels on the fly equal correcting the data first (sector split, row tiles)', async () => {
    const dark = Float32Array.from({ length: h * w }, (_, i) => (i * 37) % 50);
    const gain = Float32Array.from({ length: h * w }, (_, i) => 0.5 + ((i * 13) % 10) / 10);
    // includes a pixel at a sector edge (x = 2, 3 with 2-wide sectors), neighbours excluded, an isolated pixel
    const excluded: Array<[number, number]> = [[0, 2], [0, 3], [1, 5], [1, 6], [1, 7], [3, 15], [2, 0]];
    const udfs = () => [new SumUDF(), new SumSigUDF(), new StdDevUDF(), new ApplyMasksUDF({ masks: [{ type: 'disk', cy: 2, cx: 8, r: 3 }] })];
    const onTheFly = await runUdf(ds, udfs(), { corrections: { dark, gain, excludedPixels: excluded }, tileShape: { depth: 3, rows: 1 } });
    const pre = new MemoryDataSet({ data: correctFirst(ds.data as Uint16Array, dark, gain, excluded, 2), navShape, sigShape: [h, w] });
    const reference = await runUdf(pre, udfs(), { tileShape: { depth: 3, rows: 1 } });
    onTheFly.forEach((res, i) => {
      for (const key of Object.keys(res)) expect(Array.from(res[key]!.data), key).toEqual(Array.from(reference[i]![key]!.data));
    });
    expect(onTheFly[0]!.intensity!.data.some((v) => !Number.isInteger(v))).toBe(true);
  });

  it('corrections make the input float32; repairs refuse a split that cuts a sector', async () => {
    let dtype = '';
    class SeeDtype extends UDF {
      getResultBuffers() {
        return { x: this.buffer({ kind: 'nav' }) };
      }
      override processTile(tile: NDArray): void {
        dtype = `${this.meta.inputDtype}/${tile.constructor.name}`;
      }
    }
    await runUdf(ds, new SeeDtype(), { corrections: { dark: new Float32Array(h * w) } });
    expect(dtype).toBe('float32/Float32Array');
    await expect(runUdf(ds, new SumUDF(), { corrections: { excludedPixels: [[0, 0]] }, sigSplit: 16 })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    await expect(runUdf(ds, new SumUDF(), { corrections: { dark: new Float32Array(3) } })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
  });
});

describe('the receiver-style flow', () => {
  it('a PartitionTask per sector fed with its own tiles, combined and merged, equals runUdf', async () => {
    const specs = [new SumUDF().toSpec(), new SumSigUDF().toSpec(), new CoMUDF({ r: 3 }).toSpec(), new StdDevUDF().toSpec()];
    const context = makeRunContext({ navShape, sigShape: [h, w], datasetDtype: 'uint16', sectors: 8, udfs: specs.map(createUdf) });
    expect(context).toMatchObject({ inputDtype: 'uint16', roi: null, corrections: null });
    const merger = new DatasetResults(specs.map(createUdf), context);
    const packr = new Packr({ structuredClone: true });
    const sectors = columnSlices([h, w], 8);
    // one scan row per chunk, sectors finishing in a scrambled order, results sent as msgpack
    for (let row = navShape[0]! - 1; row >= 0; row--) {
      const combiner = new PartitionCombiner(merger.declarations, [h, w]);
      for (const s of [3, 0, 7, 1, 6, 2, 5, 4]) {
        const sig = sectors[s]!;
        const task = new PartitionTask({ udfs: specs, context, partition: { navStart: row * 5, navEnd: row * 5 + 5, sig } });
        for (let f = row * 5; f < row * 5 + 5; f++) {
          const tile = new Uint16Array(h * 2);
          for (let y = 0; y < h; y++) tile.set(ds.data.subarray(f * h * w + y * w + sig.origin[1], f * h * w + y * w + sig.origin[1] + 2), y * 2);
          task.processTile({ data: tile, navStart: f, depth: 1, sigOrigin: [0, sig.origin[1]], sigShape: [h, 2] });
        }
        const wire = packr.pack(task.finish());
        combiner.add(packr.unpack(wire) as PartitionResult);
        expect(combiner.complete).toBe(s === 4);
      }
      merger.merge(combiner.result());
    }
    const live = merger.results();
    const offline = await runUdf(ds, specs.map(createUdf));
    offline.forEach((res, i) => {
      for (const key of Object.keys(res)) {
        // StdDev's varsum depends on the order of pairwise merges: float tolerance; all else is exact
        if (specs[i]!.name === 'StdDevUDF' && key !== 'sum' && key !== 'num_frames') {
          res[key]!.data.forEach((v, k) => expect(Math.abs(live[i]![key]!.data[k]! - v)).toBeLessThanOrEqual(1e-9 * Math.abs(v)));
        } else expect(Array.from(live[i]![key]!.data), key).toEqual(Array.from(res[key]!.data));
      }
    });
  });

  it('refuses tiles outside the partition, overlapping slices and double merges', () => {
    const context = { navShape, sigShape: [h, w] as [number, number], datasetDtype: 'uint16' as const, inputDtype: 'uint16' as const, roi: null, corrections: null };
    const sig = columnSlices([h, w], 8)[1]!;
    const task = new PartitionTask({ udfs: [new SumUDF()], context, partition: { navStart: 0, navEnd: 5, sig } });
    const tile = (over: Partial<{ navStart: number; sigOrigin: [number, number]; sigShape: [number, number]; len: number }>) => ({
      data: new Uint16Array(over.len ?? h * 2),
      navStart: over.navStart ?? 0,
      depth: 1,
      sigOrigin: over.sigOrigin ?? ([0, 2] as [number, number]),
      sigShape: over.sigShape ?? ([h, 2] as [number, number]),
    });
    expect(() => task.processTile(tile({ navStart: 5 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => task.processTile(tile({ sigOrigin: [0, 4] }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => task.processTile(tile({ len: 3 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    task.processTile(tile({}));
    const result = task.finish();
    const merger = new DatasetResults([new SumUDF()], context);
    const combiner = new PartitionCombiner(merger.declarations, [h, w]);
    combiner.add(result);
    expect(() => combiner.add(result)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_RESULTS' }));
    expect(() => combiner.result()).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_RESULTS' }));
    expect(() => merger.merge(result)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_RESULTS' }));
  });
});
