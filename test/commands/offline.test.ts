/**
 * `tessera offline` on a simulator recording: the HDF5 file's results (read with readReducedFile
 * and with h5py) equal values computed by plain loops over the simulator's ground-truth frames.
 * Runs the compiled CLI: build first (`npx tsc -p tsconfig.json; node scripts/build-wasm.mjs`).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_PATH } from '../../src/paths.js';
import { readNpy } from '../../src/k2is/npy.js';
import { readReducedFile, REDUCED_FORMAT, type ReducedFile } from '../../src/io/reduced-file.js';
import { killChildren, runCli, simulateRecording } from './offline.helpers.js';

const PY = '/usr/bin/python3';
const hasH5py = existsSync(PY) && spawnSync(PY, ['-c', 'import h5py'], { stdio: 'ignore' }).status === 0;

const H = 1860;
const W = 2048;
const P = H * W;
const DISK = { type: 'disk', cy: 930, cx: 1024, r: 120 } as const;
const RING = { type: 'ring', cy: 930, cx: 1024, ri: 200, ro: 500 } as const;
const COM = { cy: 930, cx: 1024, r: 300 };
// a non-square scan, so that a transposed nav shape would show
const NY = 4;
const NX = 6;
const N = NY * NX;

interface Reference {
  sum: Float64Array;
  perFrame: Float64Array;
  masks: Float64Array; // [frames, 2]
  com: Float64Array; // [frames, 2] centre of mass (y, x) inside the CoM disk
  mean: Float64Array;
  variance: Float64Array;
}

/** Plain loops over the ground-truth frames, one quantity at a time. */
function reference(truth: Uint16Array, frames: number): Reference {
  const sum = new Float64Array(P);
  const perFrame = new Float64Array(frames);
  const masks = new Float64Array(frames * 2);
  const com = new Float64Array(frames * 2);
  for (let k = 0; k < frames; k++) {
    const f = truth.subarray(k * P, (k + 1) * P);
    let t = 0;
    let m0 = 0;
    let m1 = 0;
    let s = 0;
    let sy = 0;
    let sx = 0;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = f[y * W + x]!;
        sum[y * W + x] += v;
        t += v;
        const d2 = (y - 930) ** 2 + (x - 1024) ** 2;
        if (d2 <= DISK.r ** 2) m0 += v;
        if (d2 > RING.ri ** 2 && d2 <= RING.ro ** 2) m1 += v;
        if (d2 <= COM.r ** 2) {
          s += v;
          sy += y * v;
          sx += x * v;
        }
      }
    }
    perFrame[k] = t;
    masks[k * 2] = m0;
    masks[k * 2 + 1] = m1;
    com[k * 2] = sy / s;
    com[k * 2 + 1] = sx / s;
  }
  const mean = new Float64Array(P);
  const variance = new Float64Array(P);
  for (let i = 0; i < P; i++) mean[i] = sum[i]! / frames;
  for (let k = 0; k < frames; k++) {
    const f = truth.subarray(k * P, (k + 1) * P);
    for (let i = 0; i < P; i++) variance[i] += (f[i]! - mean[i]!) ** 2;
  }
  for (let i = 0; i < P; i++) variance[i] /= frames;
  return { sum, perFrame, masks, com, mean, variance };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function countDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

describe.skipIf(!existsSync(CLI_PATH))('tessera offline on a simulator recording', () => {
  let dir: string;
  let out: string;
  let ref: Reference;
  let file: ReducedFile;
  let stdout: string;
  let stderr: string;
  const frames = N;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-offline-'));
    const rec = join(dir, 'rec');
    mkdirSync(rec);
    await simulateRecording(rec, 'Scan', ['--scan', `${NY}x${NX}`, '--seed', '11', '--frames-before', '3', '--frames-after', '2']);
    const truth = readNpy(join(rec, 'Scan-truth.npy'));
    expect(truth.shape).toEqual([frames, H, W]);
    ref = reference(truth.data as Uint16Array, frames);
    rmSync(join(rec, 'Scan-truth.npy'));
    out = join(dir, 'out.h5');
    const r = await runCli([
      'offline',
      '--input', join(rec, 'Scan_3.bin'), // any sector file names the recording; the scan shape comes from the .gtg
      '--udf', 'Sum',
      '--udf', 'SumSig',
      '--udf', `vd=ApplyMasks:${JSON.stringify({ masks: [DISK, RING] })}`,
      '--udf', `CoM:${JSON.stringify(COM)}`,
      '--udf', 'StdDevUDF',
      '--workers', '2',
      '--output', out,
    ]);
    expect(r.stderr.split('\n').filter((l) => l.includes('"level":50') || l.startsWith('tessera: error'))).toEqual([]);
    expect(r.code).toBe(0);
    stdout = r.stdout;
    stderr = r.stderr;
    file = await readReducedFile(out);
  }, 180_000);
  afterEach(killChildren);
  afterAll(() => {
    killChildren();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('prints a one-line summary and leaves only the output file', () => {
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/wrote .*out\.h5 .*24 frames, 0\.18 GB decoded in [\d.]+ s \([\d.]+ GB\/s\)/);
    expect(readdirSync(dir).sort()).toEqual(['out.h5', 'rec']);
  });

  it('logs progress (stderr is not a TTY): frames done / total, GB/s, ETA, ending at N / N', () => {
    const progress = stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(1);
    for (const p of progress) {
      expect(p.framesTotal).toBe(N);
      expect(typeof p.gbPerSecond).toBe('number');
      expect(p).toHaveProperty('etaSeconds');
    }
    expect(progress.at(-1)).toMatchObject({ framesDone: N, etaSeconds: 0 });
    const done = progress.map((p) => p.framesDone as number);
    expect([...done].sort((a, b) => a - b)).toEqual(done);
  });

  it('root attributes: format, shapes, version, time, command and definition', () => {
    expect(file.format).toBe(REDUCED_FORMAT);
    expect(file.navShape).toEqual([NY, NX]);
    expect(file.sigShape).toEqual([H, W]);
    expect(file.attrs.frames).toBe(N);
    expect(typeof file.attrs.tessera_version).toBe('string');
    expect(Date.now() - Date.parse(file.attrs.created as string)).toBeLessThan(600_000);
    expect(JSON.parse(file.attrs.command as string).slice(0, 2)).toEqual(['tessera', 'offline']);
    expect(JSON.parse(file.attrs.definition as string)).toEqual([
      { id: 'SumUDF', name: 'SumUDF', params: {} },
      { id: 'SumSigUDF', name: 'SumSigUDF', params: {} },
      { id: 'vd', name: 'ApplyMasksUDF', params: { masks: [DISK, RING] } },
      { id: 'CoMUDF', name: 'CoMUDF', params: COM },
      { id: 'StdDevUDF', name: 'StdDevUDF', params: {} },
    ]);
    expect(Object.keys(file.udfs).sort()).toEqual(['CoMUDF', 'StdDevUDF', 'SumSigUDF', 'SumUDF', 'vd']);
    expect(file.udfs.vd!.name).toBe('ApplyMasksUDF');
    expect(file.udfs.vd!.params).toEqual({ masks: [DISK, RING] });
    expect(Array.from(file.datasets.damage!.data)).toEqual(new Array(N).fill(1));
  });

  it('Sum, SumSig and ApplyMasks (disk, ring) equal the truth bit for bit', () => {
    const sum = file.udfs.SumUDF!.buffers.intensity!;
    expect(sum.shape).toEqual([H, W]);
    expect(sum.data).toBeInstanceOf(Float64Array);
    expect(countDiff(sum.data, ref.sum)).toBe(0);
    const ss = file.udfs.SumSigUDF!.buffers.intensity!;
    expect(ss.shape).toEqual([NY, NX]);
    expect(ss.valid).toBeNull(); // every position processed: no mask written
    expect(countDiff(ss.data, ref.perFrame)).toBe(0);
    const vd = file.udfs.vd!.buffers.intensity!;
    expect(vd.shape).toEqual([NY, NX, 2]);
    expect(countDiff(vd.data, ref.masks)).toBe(0);
    // the scene is not blank inside the masks (a test that compares zeros proves little)
    expect(Math.min(...Array.from(ref.masks))).toBeGreaterThan(0);
  });

  it('CoM: centre of mass and shifts within 1e-9 px of the truth', () => {
    const b = file.udfs.CoMUDF!.buffers;
    expect(Object.keys(b).sort()).toEqual(['curl', 'divergence', 'field', 'field_x', 'field_y', 'magnitude', 'raw_com', 'raw_shifts', 'regression']);
    expect(b.raw_com!.shape).toEqual([NY, NX, 2]);
    expect(maxAbsDiff(b.raw_com!.data, ref.com)).toBeLessThan(1e-9);
    const shifts = ref.com.map((v, i) => v - (i % 2 === 0 ? COM.cy : COM.cx));
    expect(maxAbsDiff(b.raw_shifts!.data, shifts)).toBeLessThan(1e-9);
    expect(maxAbsDiff(b.field!.data, shifts)).toBeLessThan(1e-9); // no rotation, no flip
    const mag = Array.from({ length: N }, (_, k) => Math.hypot(shifts[2 * k]!, shifts[2 * k + 1]!));
    expect(maxAbsDiff(b.magnitude!.data, mag)).toBeLessThan(1e-9);
    expect(b.regression!.shape).toEqual([3, 2]);
    // the simulated beam moves: shifts are not all the same
    expect(Math.max(...mag) - Math.min(...mag)).toBeGreaterThan(0.1);
  });

  it('StdDev: mean, var, std within 1e-9 (relative) of two-pass loops; sums exact', () => {
    const b = file.udfs.StdDevUDF!.buffers;
    expect(b.num_frames!.data[0]).toBe(N);
    expect(countDiff(b.sum!.data, ref.sum)).toBe(0);
    expect(maxAbsDiff(b.mean!.data, ref.mean)).toBeLessThan(1e-9);
    let worst = 0;
    for (let i = 0; i < P; i++) {
      const v = ref.variance[i]!;
      worst = Math.max(worst, Math.abs(b.var!.data[i]! - v) / Math.max(1, v), Math.abs(b.std!.data[i]! - Math.sqrt(v)) / Math.max(1, Math.sqrt(v)));
    }
    expect(worst).toBeLessThan(1e-9);
    expect(b.std!.shape).toEqual([H, W]);
  });

  it.skipIf(!hasH5py)('h5py reads the file: attributes, shapes and values', () => {
    const script = `
import h5py, json, sys
f = h5py.File(sys.argv[1], 'r')
out = {
  'format': f.attrs['format'] if isinstance(f.attrs['format'], str) else f.attrs['format'].decode(),
  'nav_shape': [int(v) for v in f.attrs['nav_shape']],
  'sig_shape': [int(v) for v in f.attrs['sig_shape']],
  'definition': json.loads(f.attrs['definition']),
  'udfs': sorted(f['udf'].keys()),
  'shapes': {k + '/' + b: list(f['udf'][k][b].shape) for k in f['udf'] for b in f['udf'][k]},
  'dtypes': {k + '/' + b: str(f['udf'][k][b].dtype) for k in f['udf'] for b in f['udf'][k]},
  'sum': float(f['udf/SumUDF/intensity'][930, 1024]),
  'sumsig': f['udf/SumSigUDF/intensity'][3, :].tolist(),
  'vd': f['udf/vd/intensity'][2, 5, :].tolist(),
  'com': f['udf/CoMUDF/raw_com'][3, 4, :].tolist(),
  'std': float(f['udf/StdDevUDF/std'][930, 1000]),
  'kind': f['udf/SumSigUDF/intensity'].attrs['kind'] if isinstance(f['udf/SumSigUDF/intensity'].attrs['kind'], str) else '?',
  'params': json.loads(f['udf/vd'].attrs['params']),
}
print(json.dumps(out))
`;
    const res = JSON.parse(execFileSync(PY, ['-c', script, out], { encoding: 'utf8' }));
    expect(res.format).toBe(REDUCED_FORMAT);
    expect(res.nav_shape).toEqual([NY, NX]);
    expect(res.sig_shape).toEqual([H, W]);
    expect(res.definition[2]).toEqual({ id: 'vd', name: 'ApplyMasksUDF', params: { masks: [DISK, RING] } });
    expect(res.udfs).toEqual(['CoMUDF', 'StdDevUDF', 'SumSigUDF', 'SumUDF', 'vd']);
    expect(res.shapes['SumUDF/intensity']).toEqual([H, W]);
    expect(res.shapes['SumSigUDF/intensity']).toEqual([NY, NX]);
    expect(res.shapes['vd/intensity']).toEqual([NY, NX, 2]);
    expect(res.shapes['CoMUDF/raw_com']).toEqual([NY, NX, 2]);
    expect(res.shapes['CoMUDF/regression']).toEqual([3, 2]);
    expect(res.shapes['StdDevUDF/num_frames']).toEqual([1]);
    expect(res.shapes['StdDevUDF/var']).toEqual([H, W]);
    expect(res.dtypes['SumUDF/intensity']).toBe('float64');
    expect(res.kind).toBe('nav');
    expect(res.params).toEqual({ masks: [DISK, RING] });
    expect(res.sum).toBe(ref.sum[930 * W + 1024]);
    expect(res.sumsig).toEqual(Array.from(ref.perFrame.subarray(3 * NX, 4 * NX)));
    expect(res.vd).toEqual([ref.masks[(2 * NX + 5) * 2], ref.masks[(2 * NX + 5) * 2 + 1]]);
    expect(Math.abs(res.com[0] - ref.com[(3 * NX + 4) * 2]!)).toBeLessThan(1e-9);
    expect(Math.abs(res.com[1] - ref.com[(3 * NX + 4) * 2 + 1]!)).toBeLessThan(1e-9);
    expect(Math.abs(res.std - Math.sqrt(ref.variance[930 * W + 1000]!))).toBeLessThan(1e-9);
  });

  it.runIf(!hasH5py)('h5py part skipped: /usr/bin/python3 cannot import h5py (CI installs python3-h5py)', () => {
    console.warn('skipping the h5py check: /usr/bin/python3 cannot import h5py');
  });
});
