/**
 * .npy writer and reader: the bytes follow the NumPy format spec (checked field by field here,
 * and by NumPy itself when python3 with numpy is installed), and what is written reads back.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NpyFile, NpyWriter, npyHeader, parseNpyHeader, readNpy } from '../../src/k2is/npy.js';

const dir = mkdtempSync(join(tmpdir(), 'tessera-npy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;

describe('npy format', () => {
  it('writes a v1.0 preamble padded to 64 bytes with the dict NumPy expects', () => {
    const h = npyHeader('<u2', [3, 1860, 2048]);
    expect(h.length % 64).toBe(0);
    expect([...h.subarray(0, 8)]).toEqual([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
    const len = h[8]! | (h[9]! << 8);
    expect(10 + len).toBe(h.length);
    const text = Buffer.from(h.subarray(10)).toString('latin1');
    expect(text.startsWith("{'descr': '<u2', 'fortran_order': False, 'shape': (3, 1860, 2048), }")).toBe(true);
    expect(text.endsWith('\n')).toBe(true);
    expect(Buffer.from(npyHeader('<f4', [5]).subarray(10)).toString('latin1')).toContain("'shape': (5,)");
  });

  it('streams slabs and reads them back, whole or by index', async () => {
    const path = join(dir, 'a.npy');
    const w = await NpyWriter.create(path, '<u2', [4, 3, 5]);
    const slabs = Array.from({ length: 4 }, (_, i) => Uint16Array.from({ length: 15 }, (_, j) => i * 1000 + j * 7));
    for (const s of slabs) await w.write(s);
    await w.close();
    const all = readNpy(path);
    expect(all.dtype).toBe('<u2');
    expect(all.shape).toEqual([4, 3, 5]);
    expect(all.fortranOrder).toBe(false);
    expect(Array.from(all.data)).toEqual(slabs.flatMap((s) => Array.from(s)));
    const f = NpyFile.open(path);
    expect(Array.from(f.read(2, 1))).toEqual(Array.from(slabs[2]!));
    expect(() => f.read(3, 2)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    f.close();
    // raw bytes: little-endian data right after the header
    const raw = readFileSync(path);
    const off = parseNpyHeader(raw).dataOffset;
    expect(raw.readUInt16LE(off + 2 * 16)).toBe(slabs[1]![1]!);
  });

  it('refuses to close an incomplete array and to overfill one', async () => {
    const w = await NpyWriter.create(join(dir, 'b.npy'), '<f4', [2, 2]);
    await w.write(new Float32Array([1, 2]));
    await expect(w.write(new Float32Array([1, 2, 3]))).rejects.toMatchObject({ code: 'TESSERA_ERR_OUTPUT' });
    await expect(w.close()).rejects.toMatchObject({ code: 'TESSERA_ERR_OUTPUT' });
    await expect(NpyWriter.create(join(dir, 'c.npy'), '<u2', [2])).resolves.toBeDefined();
    const w2 = await NpyWriter.create(join(dir, 'd.npy'), '<u2', [2]);
    await expect(w2.write(new Float32Array(2) as unknown as Uint16Array)).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    await w2.abort();
  });

  it('rejects files that are not .npy or are too short', () => {
    const bad = join(dir, 'bad.npy');
    writeFileSync(bad, 'not numpy at all');
    expect(() => NpyFile.open(bad)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_NPY' }));
    const short = join(dir, 'short.npy');
    writeFileSync(short, Buffer.concat([Buffer.from(npyHeader('<u2', [10])), Buffer.alloc(4)]));
    expect(() => NpyFile.open(short)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_NPY' }));
  });

  it.skipIf(!hasNumpy)('NumPy reads what we write, and we read what NumPy writes', async () => {
    const ours = join(dir, 'ours.npy');
    const w = await NpyWriter.create(ours, '<u2', [2, 3, 4]);
    await w.write(Uint16Array.from({ length: 24 }, (_, i) => i * 170));
    await w.close();
    const theirs = join(dir, 'theirs.npy');
    const py = spawnSync('python3', [
      '-c',
      `import numpy as np, sys
a = np.load(sys.argv[1])
assert a.dtype == np.dtype('<u2') and a.shape == (2, 3, 4), (a.dtype, a.shape)
assert (a.ravel() == np.arange(24) * 170).all()
np.save(sys.argv[2], (np.arange(30, dtype='<f8') / 8).reshape(5, 6))`,
      ours,
      theirs,
    ], { encoding: 'utf8' });
    expect(py.stderr).toBe('');
    expect(py.status).toBe(0);
    const back = readNpy(theirs);
    expect(back.dtype).toBe('<f8');
    expect(back.shape).toEqual([5, 6]);
    expect(Array.from(back.data)).toEqual(Array.from({ length: 30 }, (_, i) => i / 8));
  });
});
