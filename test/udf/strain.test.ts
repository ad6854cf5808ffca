/**
 * StrainMapUDF end to end on simulator frames with a known strain field (SimulatedScan.strainAt):
 * with the reference given, with the reference found automatically from the sum frame of a
 * reference region, over a MemoryDataSet and over a `tessera simulate --write-bin` recording
 * (K2ISDataSet); vacuum positions give NaN; the UDF runs on whole frames, never sector slices.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { CLI_PATH } from '../../src/paths.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { K2ISDataSet } from '../../src/udf/k2is-dataset.js';
import { strainFromLattice, type StrainComponents, type Vec2 } from '../../src/udf/lib/blobfinder/lattice.js';
import { referenceFromFrame } from '../../src/udf/lib/blobfinder/peaks.js';
import type { TemplateSpec } from '../../src/udf/lib/blobfinder/templates.js';
import { FastCorrelationUDF, SumUDF } from '../../src/udf/lib/index.js';
import { UDF } from '../../src/udf/udf.js';
import { StrainMapUDF, type StrainMapParams } from '../../src/udf/lib/strain.js';
import { PartitionTask } from '../../src/udf/partition-task.js';
import { columnSlices } from '../../src/udf/partition.js';
import { createUdf } from '../../src/udf/registry.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { makeRunContext, planRun, runUdf, runUdfIter } from '../../src/udf/runner.js';

const FRAME = FRAME_HEIGHT * FRAME_WIDTH;
const SCAN: [number, number] = [3, 8];
const SEED = 5;
const TEMPLATE: TemplateSpec = { type: 'disk', radius: 22 };
const KEYS = ['exx', 'eyy', 'exy', 'rotation'] as const;

/** Max and RMS error of the four maps against `expected` outside the vacuum; vacuum must be NaN. */
function compare(scan: SimulatedScan, r: UDFResults, expected: (iy: number, ix: number) => StrainComponents, positions?: number[]): { max: number; rms: number } {
  let max = 0;
  let ss = 0;
  let n = 0;
  const [h, w] = scan.scanShape;
  for (let i = 0; i < h * w; i++) {
    if (positions && !positions.includes(i)) continue;
    const iy = Math.floor(i / w);
    const ix = i % w;
    if (scan.isVacuum(iy, ix)) {
      for (const k of KEYS) expect(r[k]!.data[i], `${k} at vacuum position ${i}`).toBeNaN();
      expect(r.peaks!.data[i]).toBe(0);
      continue;
    }
    const e = expected(iy, ix);
    for (const k of KEYS) {
      const d = Math.abs(r[k]!.data[i]! - e[k]);
      expect(Number.isFinite(d), `${k} at ${i}`).toBe(true);
      max = Math.max(max, d);
      ss += d * d;
      n++;
    }
  }
  expect(n).toBeGreaterThan(0);
  return { max, rms: Math.sqrt(ss / n) };
}

describe('StrainMapUDF on simulator frames', () => {
  let scan: SimulatedScan;
  let ds: MemoryDataSet;
  let params: StrainMapParams;

  beforeAll(() => {
    scan = new SimulatedScan({ scanShape: SCAN, seed: SEED });
    const n = SCAN[0] * SCAN[1];
    const data = new Uint16Array(n * FRAME);
    for (let i = 0; i < n; i++) scan.frame(i, data.subarray(i * FRAME, (i + 1) * FRAME));
    ds = new MemoryDataSet({ data, navShape: SCAN, sigShape: [FRAME_HEIGHT, FRAME_WIDTH] });
    // the simulator draws disks up to 620 px from the centre
    params = { lattice: { zero: [(FRAME_HEIGHT - 1) / 2, (FRAME_WIDTH - 1) / 2], a: scan.a0, b: scan.b0 }, template: TEMPLATE, maxRadius: 640 };
  });

  it('recovers exx, eyy, exy, rotation within 1e-3 of the truth (given reference; upsampled DFT and centre of mass)', async () => {
    const figures: Record<string, { max: number; rms: number }> = {};
    for (const refine of ['upsample', 'com'] as const) {
      const r = await runUdf(ds, new StrainMapUDF({ ...params, refine }));
      figures[refine] = compare(scan, r, (iy, ix) => scan.strainAt(iy, ix));
      for (let i = 0; i < SCAN[0] * SCAN[1]; i++) {
        if (scan.isVacuum(Math.floor(i / SCAN[1]), i % SCAN[1])) continue;
        expect(r.peaks!.data[i]).toBeGreaterThanOrEqual(30);
        expect(r.fitError!.data[i]).toBeLessThan(0.3);
      }
    }
    console.log(`strain error vs SimulatedScan.strainAt, ${SCAN.join('x')} scan: ${Object.entries(figures).map(([k, f]) => `${k} max ${f.max.toExponential(2)} RMS ${f.rms.toExponential(2)}`).join('; ')}`);
    // measured: upsample max 2.1e-5, RMS 7e-6; centre of mass max 1.2e-4, RMS 3.3e-5
    expect(figures.upsample!.max).toBeLessThan(2e-4);
    expect(figures.com!.max).toBeLessThan(1e-3);
  });

  it('reference found automatically from the sum frame of a reference region', async () => {
    const positions = [12, 13, 14, 15]; // scan row 1, columns 4..7
    const roi = new Uint8Array(SCAN[0] * SCAN[1]);
    for (const p of positions) roi[p] = 1;
    const sum = await runUdf(ds, new SumUDF(), { roi });
    const ref = referenceFromFrame(sum.intensity!.data, FRAME_HEIGHT, FRAME_WIDTH, { template: TEMPLATE });
    expect(ref.indices.length).toBeGreaterThanOrEqual(30);
    const udf = new StrainMapUDF({ lattice: ref.lattice, indices: ref.indices, template: TEMPLATE, reference: { positions } });
    // live: one step per merged scan row; until the reference row is in, there is no strain yet
    let r: UDFResults | null = null;
    let steps = 0;
    for await (const step of runUdfIter(ds, udf)) {
      r = step.buffers[0]!;
      const refMerged = positions.every((p) => step.damage[p] === 1);
      const merged = Array.from(step.damage).filter((d) => d === 1).length;
      expect(merged).toBe(8 * ++steps);
      for (let i = 0; i < SCAN[0] * SCAN[1]; i++) {
        const isVacuum = scan.isVacuum(Math.floor(i / SCAN[1]), i % SCAN[1]);
        expect(Number.isFinite(r.exx!.data[i]!), `position ${i} after ${steps} rows`).toBe(refMerged && step.damage[i] === 1 && !isVacuum);
      }
    }
    r = r!;
    // the truth relative to the region: the mean true lattice vectors over the reference positions
    const mean = (key: 'a' | 'b'): Vec2 => {
      const vs = positions.map((p) => scan.latticeAt(Math.floor(p / SCAN[1]), p % SCAN[1])[key]);
      return [vs.reduce((s, v) => s + v[0], 0) / vs.length, vs.reduce((s, v) => s + v[1], 0) / vs.length];
    };
    const [a0, b0] = [mean('a'), mean('b')];
    const f = compare(scan, r, (iy, ix) => {
      const l = scan.latticeAt(iy, ix);
      return strainFromLattice(l.a, l.b, a0, b0);
    });
    console.log(`strain error relative to an automatic reference region: max ${f.max.toExponential(2)} RMS ${f.rms.toExponential(2)}`);
    expect(f.max).toBeLessThan(1e-3);
    // the mean strain over the reference region itself is zero by construction
    for (const k of KEYS) expect(Math.abs(positions.reduce((s, p) => s + r[k]!.data[p]!, 0) / positions.length)).toBeLessThan(1e-4);
  });

  it('runs on whole frames only: planRun never splits it into sectors, a sector partition is refused', () => {
    const udf = new StrainMapUDF(params);
    expect(udf.needsWholeFrames).toBe(true);
    expect(udf.getMethod()).toBe('frame');
    const plan = planRun(ds, [udf, new SumUDF()], { sigSplit: 'sectors' });
    expect(plan.method).toBe('frame');
    expect(plan.slices).toEqual([{ origin: [0, 0], shape: [FRAME_HEIGHT, FRAME_WIDTH] }]);
    expect(plan.tileShapes.every((t) => t.rows === FRAME_HEIGHT)).toBe(true);
    const context = makeRunContext({ navShape: SCAN, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: 8, udfs: [udf] });
    const sector = columnSlices([FRAME_HEIGHT, FRAME_WIDTH], 8)[3]!;
    expect(() => new PartitionTask({ udfs: [udf.toSpec()], context, partition: { navStart: 0, navEnd: 8, sig: sector } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });

  it('is registered: re-created by name in a worker thread, same results as in this thread', async () => {
    const roi = new Uint8Array(SCAN[0] * SCAN[1]);
    for (const p of [0, 5, 9, 22]) roi[p] = 1;
    const spec = new StrainMapUDF({ ...params, refine: 'com' }).toSpec();
    expect(createUdf(spec)).toBeInstanceOf(StrainMapUDF);
    const local = await runUdf(ds, createUdf(spec), { roi });
    const threaded = await runUdf(ds, createUdf(spec), { roi, workers: 1 });
    for (const k of [...KEYS, 'a', 'b', 'zero', 'peaks', 'fitError']) expect(Array.from(threaded[k]!.raw), k).toEqual(Array.from(local[k]!.raw));
    expect(Number.isNaN(local.exx!.data[1])).toBe(true); // outside the ROI
    expect(Number.isNaN(local.exx!.data[0])).toBe(true); // vacuum
    expect(Number.isFinite(local.exx!.data[5])).toBe(true);
  });

  it('rejects bad params', () => {
    expect(() => new StrainMapUDF({ ...params, template: { type: 'ring', radius: 3 } as unknown as TemplateSpec })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(() => new StrainMapUDF({ ...params, reference: { positions: [] } })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(() => new StrainMapUDF({ lattice: params.lattice } as StrainMapParams)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    // a window too small for the template and search, found before any work starts
    expect(() => new StrainMapUDF({ ...params, windowSize: 32 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(() => new StrainMapUDF({ ...params, windowSize: 48 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
    expect(() => new FastCorrelationUDF({ peaks: [[10, 10]], template: TEMPLATE, search: 20, windowSize: 64 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_UDF_PARAMS' }));
  });

  it('frames of NaN, infinities or zeros give NaN, not an exception', async () => {
    const bad = new Float32Array(3 * FRAME);
    bad.subarray(0, FRAME).fill(NaN);
    bad.subarray(FRAME, 2 * FRAME).set(ds.data.subarray(5 * FRAME, 6 * FRAME));
    for (let i = FRAME; i < 2 * FRAME; i += 997) bad[i] = Infinity;
    const r = await runUdf(new MemoryDataSet({ data: bad, navShape: [3], sigShape: [FRAME_HEIGHT, FRAME_WIDTH] }), new StrainMapUDF(params));
    for (let i = 0; i < 3; i++) {
      expect(r.exx!.data[i], `frame ${i}`).toBeNaN();
      expect(r.peaks!.data[i]).toBe(0);
    }
  });

  it('a lattice with parallel vectors is refused when the run starts', async () => {
    const flat = new StrainMapUDF({ ...params, lattice: { zero: params.lattice.zero, a: [0, 100], b: [0, 200] } });
    await expect(runUdf(ds, flat, { roi: Uint8Array.from({ length: 24 }, (_, i) => (i === 5 ? 1 : 0)) })).rejects.toMatchObject({ code: 'TESSERA_ERR_UDF_PARAMS' });
  });
});

describe('StrainMapUDF with descan larger than the search radius', () => {
  it('zeroShift as per-frame aux data moves the windows with the central beam', async () => {
    const shape: [number, number] = [2, 4];
    // the pattern drifts by up to 30 px across the scan: far beyond the 8 px search
    const scan = new SimulatedScan({ scanShape: shape, seed: 2, descan: 30, vacuumFraction: 0 });
    const n = shape[0] * shape[1];
    const data = new Uint16Array(n * FRAME);
    for (let i = 0; i < n; i++) scan.frame(i, data.subarray(i * FRAME, (i + 1) * FRAME));
    const ds = new MemoryDataSet({ data, navShape: shape, sigShape: [FRAME_HEIGHT, FRAME_WIDTH] });
    const centre: Vec2 = [(FRAME_HEIGHT - 1) / 2, (FRAME_WIDTH - 1) / 2];
    const shifts = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      const z = scan.latticeAt(Math.floor(i / shape[1]), i % shape[1]).zero;
      shifts[2 * i] = z[0] - centre[0];
      shifts[2 * i + 1] = z[1] - centre[1];
    }
    expect(Math.max(...Array.from(shifts, Math.abs))).toBeGreaterThan(15);
    const params: StrainMapParams = { lattice: { zero: centre, a: scan.a0, b: scan.b0 }, template: TEMPLATE, maxRadius: 450 };
    const without = await runUdf(ds, new StrainMapUDF(params));
    const zeroShift = UDF.auxData(shifts, { kind: 'nav', dtype: 'float64', extraShape: [2] });
    const r = await runUdf(ds, new StrainMapUDF({ ...params, zeroShift }));
    const f = compare(scan, r, (iy, ix) => scan.strainAt(iy, ix));
    expect(f.max).toBeLessThan(2e-4);
    for (let i = 0; i < n; i++) expect(Math.abs(r.zero!.data[2 * i]! - centre[0] - shifts[2 * i]!)).toBeLessThan(0.05);
    // without the shift the far corners of the scan lose their disks
    expect(Array.from(without.peaks!.raw).some((p, i) => p === 0 || Math.abs(without.exx!.raw[i]! - scan.strainAt(Math.floor(i / shape[1]), i % shape[1]).exx) > 1e-3)).toBe(true);
  });
});

describe.skipIf(!existsSync(CLI_PATH))('StrainMapUDF over a --write-bin recording (K2ISDataSet)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-strain-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('recovers the simulator strain from the decoded recording', async () => {
    const shape: [number, number] = [2, 7];
    await promisify(execFile)(process.execPath, [CLI_PATH, 'simulate', '--write-bin', dir, '--name', 'S', '--scan', `${shape[0]}x${shape[1]}`, '--seed', '9'], {
      timeout: 120_000,
      env: { ...process.env, TESSERA_LOG_LEVEL: 'warn' },
    });
    const scan = new SimulatedScan({ scanShape: shape, seed: 9 });
    const ds = K2ISDataSet.open(join(dir, 'S_1.bin'));
    try {
      expect(ds.navShape).toEqual(shape);
      const r = await runUdf(ds, new StrainMapUDF({ lattice: { zero: [(FRAME_HEIGHT - 1) / 2, (FRAME_WIDTH - 1) / 2], a: scan.a0, b: scan.b0 }, template: TEMPLATE, maxRadius: 640 }));
      const f = compare(scan, r, (iy, ix) => scan.strainAt(iy, ix));
      console.log(`strain error over a K2 IS recording (${shape.join('x')}): max ${f.max.toExponential(2)} RMS ${f.rms.toExponential(2)}`);
      expect(f.max).toBeLessThan(2e-4);
    } finally {
      ds.close?.();
    }
  });
});
