/**
 * The reduced-data HDF5 file ("tessera-reduced/1"): UDF results written by ReducedFileWriter read
 * back by readReducedFile and by h5py equal the in-memory results; updates in place as results
 * grow, a group prefix, extra datasets and appended rows (the recorder's needs), and output errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryDataSet, runUdfIter, SumSigUDF, SumUDF, StdDevUDF, UDF, type NDArray, type UDFResults } from '../../src/udf/index.js';
import { readReducedFile, REDUCED_FORMAT, ReducedFileWriter } from '../../src/io/reduced-file.js';
import { isTesseraError } from '../../src/errors.js';

const PY = '/usr/bin/python3';
const hasH5py = existsSync(PY) && spawnSync(PY, ['-c', 'import h5py'], { stdio: 'ignore' }).status === 0;

/** A UDF with a bool nav buffer and an int single buffer, to cover dtypes and kinds. */
class BrightUDF extends UDF {
  static override udfName = 'BrightUDF';
  getResultBuffers() {
    return {
      bright: this.buffer({ kind: 'nav', dtype: 'bool' }),
      count: this.buffer({ kind: 'single', dtype: 'int32', extraShape: [2] }),
    };
  }
  override processFrame(frame: NDArray): void {
    let s = 0;
    for (let i = 0; i < frame.length; i++) s += frame[i]!;
    const b = s > 100 ? 1 : 0;
    this.results.bright![0] = b;
    this.results.count![b] += 1;
  }
  override merge(dest: Record<string, NDArray>, src: Record<string, NDArray>): void {
    dest.bright!.set(src.bright!);
    dest.count![0] += src.count![0]!;
    dest.count![1] += src.count![1]!;
  }
}

const navShape = [3, 4];
const sigShape: [number, number] = [6, 16];
const N = 12;
const P = sigShape[0] * sigShape[1];

function frames(): Uint16Array {
  const d = new Uint16Array(N * P);
  let x = 12345;
  for (let i = 0; i < d.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    d[i] = (x >>> 16) % 7;
  }
  return d;
}

describe('ReducedFileWriter / readReducedFile', () => {
  let dir: string;
  const data = frames();
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-reduced-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes results under /udf/<id>, overwrites them in place as they grow, and reads them back', async () => {
    const ds = new MemoryDataSet({ data, navShape, sigShape });
    const udfs = [new SumUDF(), new SumSigUDF(), new StdDevUDF(), new BrightUDF({})];
    const ids = ['sum', 'SumSigUDF', 'StdDevUDF', 'bright'];
    const path = join(dir, 'run.h5');
    const w = await ReducedFileWriter.create(path, { attrs: { nav_shape: navShape, sig_shape: sigShape, command: ['offline', '--x'], note: 'hi', ratio: 0.5 } });
    let steps = 0;
    let last: UDFResults[] = [];
    for await (const step of runUdfIter(ds, udfs, { partitionFrames: 4 })) {
      const named = step.buffers.map((results, i) => ({ id: ids[i]!, spec: udfs[i]!.toSpec(), results }));
      w.writeRun(named);
      w.writeArray('/damage', step.damage, step.damage.shape, { dtype: 'uint8' });
      w.flush();
      steps++;
      if (steps === 1) {
        // a reader sees the partial state: the first 4 frames valid, the rest not
        const mid = await readReducedFile(path);
        expect(Array.from(mid.udfs.SumSigUDF!.buffers.intensity!.valid!.data)).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        expect(Array.from(mid.datasets.damage!.data)).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
      }
      last = step.buffers;
    }
    w.close();
    expect(steps).toBe(3);

    const f = await readReducedFile(path);
    expect(f.format).toBe(REDUCED_FORMAT);
    expect(f.navShape).toEqual(navShape);
    expect(f.sigShape).toEqual(sigShape);
    expect(f.attrs.note).toBe('hi');
    expect(f.attrs.ratio).toBe(0.5);
    expect(JSON.parse(f.attrs.command as string)).toEqual(['offline', '--x']);
    expect(typeof f.attrs.tessera_version).toBe('string');
    expect(Number.isNaN(Date.parse(f.attrs.created as string))).toBe(false);
    expect(Object.keys(f.udfs).sort()).toEqual(['StdDevUDF', 'SumSigUDF', 'bright', 'sum']);

    // independent reference: plain loops
    const sum = new Float64Array(P);
    const perFrame = new Float64Array(N);
    for (let k = 0; k < N; k++) for (let i = 0; i < P; i++) {
      sum[i] += data[k * P + i]!;
      perFrame[k] += data[k * P + i]!;
    }
    const s = f.udfs.sum!;
    expect(s.name).toBe('SumUDF');
    expect(s.buffers.intensity!.shape).toEqual(sigShape);
    expect(s.buffers.intensity!.kind).toBe('sig');
    expect(s.buffers.intensity!.data).toEqual(sum);
    expect(s.buffers.intensity!.valid).toBeNull();
    const ss = f.udfs.SumSigUDF!.buffers.intensity!;
    expect(ss.shape).toEqual(navShape);
    expect(ss.data).toEqual(perFrame);
    // the mask written while partial is kept, now all valid
    expect(Array.from(ss.valid!.data)).toEqual(new Array(N).fill(1));
    const std = f.udfs.StdDevUDF!.buffers;
    expect(Object.keys(std).sort()).toEqual(['mean', 'num_frames', 'std', 'sum', 'var', 'varsum']);
    expect(std.num_frames!.shape).toEqual([1]);
    expect(std.num_frames!.data[0]).toBe(N);
    for (let i = 0; i < P; i++) {
      const mean = sum[i]! / N;
      let v = 0;
      for (let k = 0; k < N; k++) v += (data[k * P + i]! - mean) ** 2;
      expect(std.mean!.data[i]).toBeCloseTo(mean, 12);
      expect(std.var!.data[i]).toBeCloseTo(v / N, 10);
    }
    const b = f.udfs.bright!.buffers;
    expect(b.bright!.dtype).toBe('bool');
    expect(b.bright!.data).toBeInstanceOf(Uint8Array);
    expect(Array.from(b.bright!.data)).toEqual(Array.from(perFrame, (v) => (v > 100 ? 1 : 0)));
    expect(b.count!.data).toBeInstanceOf(Int32Array);
    expect(b.count!.kind).toBe('single');
    expect(b.count!.extraShape).toEqual([2]);
    const bright = Array.from(perFrame).filter((v) => v > 100).length;
    expect(Array.from(b.count!.data)).toEqual([N - bright, bright]);
    // the same buffers as in memory, bit for bit
    expect(f.udfs.StdDevUDF!.buffers.std!.data).toEqual(last[2]!.std!.data);
  });

  it('nav results of a ROI run carry a .valid mask and NaN outside it', async () => {
    const ds = new MemoryDataSet({ data, navShape, sigShape });
    const roi = new Uint8Array(N);
    roi[1] = roi[5] = roi[11] = 1;
    const udf = new SumSigUDF();
    let last: UDFResults[] = [];
    for await (const step of runUdfIter(ds, [udf], { roi })) last = step.buffers;
    const path = join(dir, 'roi.h5');
    const w = await ReducedFileWriter.create(path, { attrs: { nav_shape: navShape, sig_shape: sigShape } });
    w.writeRun([{ id: 'SumSigUDF', spec: udf.toSpec(), results: last[0]! }]);
    w.close();
    const f = await readReducedFile(path);
    const buf = f.udfs.SumSigUDF!.buffers.intensity!;
    expect(Array.from(buf.valid!.data)).toEqual(Array.from(roi));
    expect(buf.valid!.shape).toEqual(navShape);
    for (let k = 0; k < N; k++) {
      if (roi[k]) {
        let t = 0;
        for (let i = 0; i < P; i++) t += data[k * P + i]!;
        expect(buf.data[k]).toBe(t);
      } else expect(buf.data[k]).toBeNaN();
    }
  });

  it('a group prefix per epoch, appended /stats rows, gzip, and readers of each prefix', async () => {
    const path = join(dir, 'epochs.h5');
    const w = await ReducedFileWriter.create(path, { compression: 1, attrs: { nav_shape: navShape, sig_shape: sigShape } });
    const ds = new MemoryDataSet({ data, navShape, sigShape });
    for (let k = 0; k < 2; k++) {
      const udf = new SumUDF();
      let last: UDFResults[] = [];
      for await (const step of runUdfIter(ds, [udf])) last = step.buffers;
      // epoch 1 doubles the values, so the two prefixes differ
      if (k === 1) for (let i = 0; i < last[0]!.intensity!.data.length; i++) last[0]!.intensity!.data[i] *= 2;
      w.writeRun([{ id: 'SumUDF', spec: udf.toSpec(), results: last[0]! }], `/epochs/${k}`);
      w.appendRows('/stats', Float64Array.of(k, 100 + k, 200 + k), [3], { attrs: { columns: 'epoch,frames,bytes' } });
    }
    // a big dataset goes through the compressed, chunked path
    const big = new Float32Array(300 * 300).map((_, i) => i % 17);
    w.writeArray('/extra/big', big, [300, 300]);
    w.close();
    const e0 = await readReducedFile(path, { prefix: '/epochs/0' });
    const e1 = await readReducedFile(path, { prefix: 'epochs/1' });
    const root = await readReducedFile(path);
    const a = e0.udfs.SumUDF!.buffers.intensity!.data;
    const b = e1.udfs.SumUDF!.buffers.intensity!.data;
    for (let i = 0; i < P; i++) expect(b[i]).toBe(2 * a[i]!);
    expect(root.datasets.stats!.shape).toEqual([2, 3]);
    expect(Array.from(root.datasets.stats!.data)).toEqual([0, 100, 200, 1, 101, 201]);
    expect(root.datasets.stats!.attrs.columns).toBe('epoch,frames,bytes');
    const extra = await readReducedFile(path, { prefix: 'extra' });
    expect(extra.datasets.big!.data).toEqual(big);
    if (hasH5py) {
      const out = execFileSync(PY, ['-c', `import h5py; f = h5py.File(${JSON.stringify(path)}, 'r'); d = f['extra/big']; print(d.compression, d.chunks is not None, f['stats'].maxshape[0], f['epochs/1/udf/SumUDF/intensity'][0, 3])`], { encoding: 'utf8' });
      expect(out.trim()).toBe(`gzip True None ${(2 * a[3]!).toFixed(1)}`);
    }
  });

  it('refuses to overwrite a dataset with another shape', async () => {
    const w = await ReducedFileWriter.create(join(dir, 'shape.h5'));
    w.writeArray('x', new Float64Array(4), [2, 2]);
    w.writeArray('x', Float64Array.of(1, 2, 3, 4), [2, 2]);
    let err: unknown;
    try {
      w.writeArray('x', new Float64Array(4), [4]);
    } catch (e) {
      err = e;
    }
    expect(isTesseraError(err, 'TESSERA_ERR_OUTPUT')).toBe(true);
    w.close();
    expect(Array.from((await readReducedFile(join(dir, 'shape.h5'))).datasets.x!.data)).toEqual([1, 2, 3, 4]);
  });

  it('an unwritable path is TESSERA_ERR_OUTPUT naming the path; an aborted atomic write leaves nothing', async () => {
    const missing = join(dir, 'no-such-dir', 'x.h5');
    await expect(ReducedFileWriter.create(missing)).rejects.toMatchObject({ code: 'TESSERA_ERR_OUTPUT', message: expect.stringContaining(missing) });
    await expect(ReducedFileWriter.create(dir)).rejects.toMatchObject({ code: 'TESSERA_ERR_OUTPUT' });
    if (process.getuid?.() !== 0) {
      const ro = join(dir, 'ro');
      mkdirSync(ro);
      chmodSync(ro, 0o500);
      await expect(ReducedFileWriter.create(join(ro, 'x.h5'))).rejects.toMatchObject({ code: 'TESSERA_ERR_OUTPUT' });
    }
    const sub = join(dir, 'atomic');
    mkdirSync(sub);
    const w = await ReducedFileWriter.create(join(sub, 'a.h5'), { atomic: true });
    w.writeArray('x', new Float64Array(3), [3]);
    expect(existsSync(join(sub, 'a.h5'))).toBe(false);
    w.abort();
    expect(readdirSync(sub)).toEqual([]);
    const w2 = await ReducedFileWriter.create(join(sub, 'b.h5'), { atomic: true });
    w2.close();
    expect(readdirSync(sub)).toEqual(['b.h5']);
    writeFileSync(join(sub, 'not.h5'), 'hello');
    await expect(readReducedFile(join(sub, 'not.h5'))).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
  });

  it('openForUpdate adds to a closed file; a broken HDF5 file is a one-line error', async () => {
    const path = join(dir, 'update.h5');
    const w = await ReducedFileWriter.create(path, { attrs: { nav_shape: [2], sig_shape: [1, 1] } });
    w.writeArray('/damage', Uint8Array.of(1, 0), [2], { dtype: 'uint8' });
    w.close();
    const u = await ReducedFileWriter.openForUpdate(path);
    u.writeArray('/damage', Uint8Array.of(1, 1), [2]);
    u.appendRows('/stats', Float64Array.of(1, 2), [2]);
    u.setAttrs('/', { epochs: 1 });
    u.close();
    const f = await readReducedFile(path);
    expect(f.format).toBe(REDUCED_FORMAT);
    expect(f.attrs.epochs).toBe(1);
    expect(Array.from(f.datasets.damage!.data)).toEqual([1, 1]);
    expect(f.datasets.stats!.shape).toEqual([1, 2]);

    // the HDF5 signature followed by garbage
    const broken = join(dir, 'broken.h5');
    writeFileSync(broken, Buffer.concat([Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(4096, 7)]));
    const err = await readReducedFile(broken).catch((e: unknown) => e);
    expect(isTesseraError(err, 'TESSERA_ERR_BAD_ARGUMENT')).toBe(true);
    expect((err as Error).message).toContain(broken);
    expect((err as Error).message.split('\n')).toHaveLength(1);
    await expect(ReducedFileWriter.openForUpdate(join(dir, 'no-such.h5'))).rejects.toMatchObject({ code: 'TESSERA_ERR_OUTPUT' });
  });
});
