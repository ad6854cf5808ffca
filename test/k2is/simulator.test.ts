/**
 * The simulator's stream and scene against independent references: header fields computed
 * from the spec's formulas, payloads decoded with the plain 12-bit decoder and placed by their
 * header coordinates, disk positions measured in the truth frames.
 */
import { describe, expect, it } from 'vitest';
import { decodeUint12 } from '../../src/k2is/uint12.js';
import { checkBlock, parseHeader } from '../../src/k2is/header.js';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { K2ISStream, type Datagram } from '../../src/k2is/simulator/stream.js';

const H = 1860;
const W = 2048;
const U32 = 2 ** 32;

/** Assemble a sector's datagrams into its 1860 x 256 slice, placing blocks by header coordinates. */
function sectorSlice(blocks: Datagram[]): Uint16Array {
  const out = new Uint16Array(H * 256);
  for (const d of blocks) {
    const h = parseHeader(d.data);
    const px = decodeUint12(d.data.subarray(40));
    for (let r = 0; r < 930; r++) {
      for (let c = 0; c < 16; c++) out[(h.pixelYStart + r) * 256 + h.pixelXStart + c] = px[r * 16 + c]!;
    }
  }
  return out;
}

function sliceOfFrame(frame: Uint16Array, sector: number): Uint16Array {
  const out = new Uint16Array(H * 256);
  for (let r = 0; r < H; r++) out.set(frame.subarray(r * W + sector * 256, r * W + sector * 256 + 256), r * 256);
  return out;
}

function equalArrays(a: Uint16Array, b: Uint16Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

describe('stream headers', () => {
  const scan = new SimulatedScan({ scanShape: [3, 4], seed: 7 });
  const before = 3;
  const after = 2;
  const frameIdStart = U32 - 5; // wraps mid-stream
  const blockCountStart = U32 - 100; // wraps in frame 3
  const stream = new K2ISStream(scan, { framesBeforeScan: before, framesAfterScan: after, frameIdStart, blockCountStart });

  it('has the expected number of frames and the convention-1 layout', () => {
    expect(stream.totalFrames).toBe(before - 1 + 12 + after);
    expect(stream.firstScanFrame).toBe(2);
    expect(stream.firstShutterFrame).toBe(3);
    expect(stream.frameInfo(2).content).toEqual({ kind: 'scan', scanIndex: 0, epoch: 0 });
    expect(stream.frameInfo(2).shutter).toBe(false);
    expect(stream.frameInfo(3).content).toEqual({ kind: 'scan', scanIndex: 1, epoch: 0 });
    expect(stream.frameInfo(13).content).toEqual({ kind: 'scan', scanIndex: 11, epoch: 0 });
    expect(stream.frameInfo(14).content).toEqual({ kind: 'parked', phase: 'after' });
    expect(stream.frameInfo(1).content).toEqual({ kind: 'parked', phase: 'before' });
  });

  it.each([0, 5])('every datagram of sector %i carries the spec fields', (sector) => {
    const all = [...stream.datagrams(sector)];
    expect(all.length).toBe(stream.totalFrames * 32);
    all.forEach((d, n) => {
      const f = Math.floor(n / 32);
      const i = n % 32;
      expect(d.data.length).toBe(22360);
      expect(checkBlock(d.data, 0, d.data.length)).toBeNull();
      const h = parseHeader(d.data);
      expect(h.sync).toBe(0xffff0055);
      expect(h.width).toBe(256);
      expect(h.height).toBe(1860);
      expect(h.blockSize).toBe(0x5758);
      expect(h.version).toBe(1);
      // spec A.5: right to left, top half then bottom half
      expect(h.pixelXStart).toBe(240 - 16 * (i % 16));
      expect(h.pixelYStart).toBe(i < 16 ? 0 : 930);
      expect(h.pixelXEnd).toBe(h.pixelXStart + 15);
      expect(h.pixelYEnd).toBe(h.pixelYStart + 929);
      expect(h.frameId).toBe((frameIdStart + f) % U32);
      expect(h.blockCount).toBe((blockCountStart + 32 * f + i) % U32);
      expect(h.flags & 1).toBe(f >= before ? 1 : 0);
      expect([d.streamFrame, d.blockIndex, d.frameId, d.blockCount, d.sector]).toEqual([f, i, h.frameId, h.blockCount, sector]);
    });
    const ids = all.filter((_, n) => n % 32 === 0).map((d) => parseHeader(d.data).frameId);
    expect(ids.slice(3, 7)).toEqual([U32 - 2, U32 - 1, 0, 1]); // the wrap, mid-stream
  });

  it('resets frame_id at the first flagged frame when asked, and flags whole frames', () => {
    const s = new K2ISStream(scan, { framesBeforeScan: 4, framesAfterScan: 1, frameIdStart: 284987, frameIdReset: 2 });
    const all = [...s.datagrams(3)];
    const byFrame = (f: number) => all.slice(32 * f, 32 * f + 32).map((d) => parseHeader(d.data));
    expect(byFrame(3).every((h) => h.frameId === 284990 && h.flags === 0)).toBe(true);
    expect(byFrame(4).every((h) => h.frameId === 2 && h.flags === 1)).toBe(true);
    expect(byFrame(5).every((h) => h.frameId === 3 && h.flags === 1)).toBe(true);
  });

  it('continuous mode repeats the scan with the flag on', () => {
    const s = new K2ISStream(scan, { framesBeforeScan: 2, framesAfterScan: 0, continuous: true });
    expect(s.totalFrames).toBe(Infinity);
    expect(s.frameInfo(1 + 12 + 5)).toMatchObject({ content: { kind: 'scan', scanIndex: 5, epoch: 1 }, shutter: true });
    expect(s.streamFrameOfScan(5, 1)).toBe(18);
  });

  it('rejects bad options with TESSERA_ERR_BAD_ARGUMENT', () => {
    expect(() => new K2ISStream(scan, { framesBeforeScan: 0, framesAfterScan: 0 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => new K2ISStream(scan, { framesBeforeScan: 1, framesAfterScan: 0, frameIdStart: U32 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => new SimulatedScan({ scanShape: [0, 3], seed: 1 })).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });
});

describe('stream payloads equal the ground truth', () => {
  const scan = new SimulatedScan({ scanShape: [2, 3], seed: 11 });
  const stream = new K2ISStream(scan, { framesBeforeScan: 3, framesAfterScan: 1 });

  it('every sector of every frame decodes to the truth frame of its content', () => {
    const truth = Array.from({ length: stream.totalFrames }, (_, f) => stream.truthFrame(f));
    for (let s = 0; s < 8; s++) {
      const all = [...stream.datagrams(s)];
      for (let f = 0; f < stream.totalFrames; f++) {
        const got = sectorSlice(all.slice(32 * f, 32 * f + 32));
        expect(equalArrays(got, sliceOfFrame(truth[f]!, s)), `sector ${s} frame ${f}`).toBe(true);
      }
    }
    // convention 1: the last flag-off frame is scan position 0, then 1..N-1 follow
    for (let i = 0; i < scan.positions; i++) expect(equalArrays(truth[2 + i]!, scan.frame(i))).toBe(true);
    // the earlier pre-scan frames show the parked beam, not scan position 0
    expect(equalArrays(truth[0]!, scan.parkedFrame(0))).toBe(true);
    expect(equalArrays(truth[1]!, scan.frame(0))).toBe(false);
  });

  it('the parked beam and the scan patterns are told apart by their bright pixels', () => {
    const parked = scan.parkedFrame(1);
    const scanFrame = scan.frame(0);
    const at = (fr: Uint16Array, y: number, x: number) => fr[Math.round(y) * W + Math.round(x)]!;
    const lat = scan.latticeAt(0, 0);
    expect(at(scanFrame, lat.zero[0], lat.zero[1])).toBeGreaterThan(1000);
    expect(at(parked, lat.zero[0], lat.zero[1])).toBeLessThan(50);
    expect(at(parked, 929.5 - 210, 1023.5 + 330)).toBeGreaterThan(1000);
  });

  it('is deterministic for a seed; other seeds differ', () => {
    const again = new SimulatedScan({ scanShape: [2, 3], seed: 11 });
    const other = new SimulatedScan({ scanShape: [2, 3], seed: 12 });
    expect(equalArrays(again.frame(4), scan.frame(4))).toBe(true);
    expect(equalArrays(other.frame(4), scan.frame(4))).toBe(false);
    const a = [...new K2ISStream(again, { framesBeforeScan: 3, framesAfterScan: 1 }).datagrams(2, 3, 5)];
    const b = [...stream.datagrams(2, 3, 5)];
    expect(a.every((d, n) => Buffer.compare(d.data, b[n]!.data) === 0)).toBe(true);
    // different scan positions of one seed differ too (noise and pattern)
    expect(equalArrays(scan.frame(3), scan.frame(4))).toBe(false);
  });
});

describe('scene ground truth', () => {
  const scan = new SimulatedScan({ scanShape: [8, 10], seed: 3 });

  it('strainAt and latticeAt agree: polar decomposition of F = [a b][a0 b0]^-1 gives back the strain', () => {
    for (const [iy, ix] of [[0, 0], [3, 7], [7, 9], [5, 2]] as const) {
      const { a, b } = scan.latticeAt(iy, ix);
      const [a0, b0] = [scan.a0, scan.b0];
      // columns in the (x, y) basis
      const A = [[a[1], b[1]], [a[0], b[0]]];
      const det0 = a0[1] * b0[0] - b0[1] * a0[0];
      const inv0 = [[b0[0] / det0, -b0[1] / det0], [-a0[0] / det0, a0[1] / det0]];
      const F = [0, 1].map((r) => [0, 1].map((c) => A[r]![0]! * inv0[0]![c]! + A[r]![1]! * inv0[1]![c]!));
      // F = R U with R a rotation by theta and U symmetric: theta = atan2(F10 - F01, F00 + F11)
      const theta = Math.atan2(F[1]![0]! - F[0]![1]!, F[0]![0]! + F[1]![1]!);
      const c = Math.cos(theta);
      const s = Math.sin(theta);
      const U = [0, 1].map((r) => [0, 1].map((k) => (r === 0 ? c * F[0]![k]! + s * F[1]![k]! : -s * F[0]![k]! + c * F[1]![k]!)));
      const e = scan.strainAt(iy, ix);
      expect(theta).toBeCloseTo(e.rotation, 12);
      expect(U[0]![0]! - 1).toBeCloseTo(e.exx, 12);
      expect(U[1]![1]! - 1).toBeCloseTo(e.eyy, 12);
      expect(U[0]![1]!).toBeCloseTo(e.exy, 12);
      expect(U[1]![0]!).toBeCloseTo(e.exy, 12);
    }
  });

  it('the strain field is of order 1e-2, smooth, and varies across the scan', () => {
    const big = new SimulatedScan({ scanShape: [32, 32], seed: 3 });
    let max = 0;
    let maxStep = 0;
    for (let iy = 0; iy < 32; iy++) {
      for (let ix = 0; ix < 32; ix++) {
        const e = big.strainAt(iy, ix);
        max = Math.max(max, Math.abs(e.exx), Math.abs(e.eyy), Math.abs(e.exy), Math.abs(e.rotation));
        if (ix > 0) maxStep = Math.max(maxStep, Math.abs(e.exx - big.strainAt(iy, ix - 1).exx));
      }
    }
    expect(max).toBeGreaterThan(5e-3);
    expect(max).toBeLessThan(1.5e-2);
    expect(maxStep).toBeLessThan(1e-3);
  });

  it('disk centres measured in the truth frame follow latticeAt', () => {
    const iy = 4;
    const ix = 8;
    expect(scan.isVacuum(iy, ix)).toBe(false);
    const frame = scan.frame(iy * 10 + ix);
    const lat = scan.latticeAt(iy, ix);
    const disks = scan.diskCentres(iy, ix);
    expect(disks.length).toBeGreaterThan(24);
    expect(disks.length).toBeLessThan(80);
    let checked = 0;
    for (const d of disks) {
      expect(d.y).toBeCloseTo(lat.zero[0] + d.n * lat.a[0] + d.m * lat.b[0], 9);
      expect(d.x).toBeCloseTo(lat.zero[1] + d.n * lat.a[1] + d.m * lat.b[1], 9);
      if (d.intensity < 300) continue;
      // centroid of background-subtracted counts in a window around the disk
      let sw = 0;
      let sy = 0;
      let sx = 0;
      const r = d.radius + 4;
      for (let y = Math.floor(d.y - r); y <= Math.ceil(d.y + r); y++) {
        for (let x = Math.floor(d.x - r); x <= Math.ceil(d.x + r); x++) {
          const w = Math.max(0, frame[y * W + x]! - 3);
          sw += w;
          sy += w * y;
          sx += w * x;
        }
      }
      expect(Math.abs(sy / sw - d.y)).toBeLessThan(0.15);
      expect(Math.abs(sx / sw - d.x)).toBeLessThan(0.15);
      checked++;
    }
    expect(checked).toBeGreaterThan(5);
  });

  it('vacuum shows only the central beam; disk intensities follow the thickness', () => {
    const crystal = scan.diskCentres(2, 8).filter((d) => d.n !== 0 || d.m !== 0);
    const diskSum = (frame: Uint16Array, y: number, x: number, radius: number) => {
      let s = 0;
      for (let yy = Math.floor(y - radius); yy <= Math.ceil(y + radius); yy++) {
        for (let xx = Math.floor(x - radius); xx <= Math.ceil(x + radius); xx++) {
          if ((yy - y) ** 2 + (xx - x) ** 2 <= radius * radius) s += frame[yy * W + xx]!;
        }
      }
      return s;
    };
    const vacuumIndex = 2 * 10 + 0;
    expect(scan.isVacuum(2, 0)).toBe(true);
    expect(scan.thicknessAt(2, 0)).toBe(0);
    expect(scan.diskCentres(2, 0).length).toBe(1);
    const vac = scan.frame(vacuumIndex);
    const thin = scan.frame(2 * 10 + 2);
    const thick = scan.frame(2 * 10 + 9);
    expect(scan.thicknessAt(2, 9)).toBeGreaterThan(scan.thicknessAt(2, 2));
    let vacTotal = 0;
    let thinTotal = 0;
    let thickTotal = 0;
    let area = 0;
    for (const d of crystal) {
      vacTotal += diskSum(vac, d.y, d.x, d.radius - 2);
      thinTotal += diskSum(thin, d.y, d.x, d.radius - 2);
      thickTotal += diskSum(thick, d.y, d.x, d.radius - 2);
      area += Math.PI * (d.radius - 2) ** 2;
    }
    expect(vacTotal / area).toBeLessThan(4); // background only (mean 3)
    expect(thinTotal / area).toBeGreaterThan(100);
    expect(thickTotal).toBeGreaterThan(thinTotal);
    // the central beam fades as the crystal gets thicker
    const z = scan.latticeAt(2, 0).zero;
    expect(diskSum(vac, z[0], z[1], 18)).toBeGreaterThan(diskSum(thick, z[0], z[1], 18));
  });

  it('pixels stay 12-bit', () => {
    const f = scan.frame(0);
    let max = 0;
    for (let i = 0; i < f.length; i++) if (f[i]! > max) max = f[i]!;
    expect(max).toBeLessThanOrEqual(4095);
    expect(max).toBeGreaterThan(2000);
  });
});
