/**
 * A synthetic 4D-STEM scan with known ground truth: a crystal whose diffraction pattern (a
 * central beam plus a lattice of diffraction disks) follows a smooth strain field across the
 * scan, with a thickness wedge and a band of vacuum columns that show only the central beam.
 *
 * Conventions (all positions in detector pixels, vectors as (y, x) = (row, column)):
 * - Scan position (iy, ix) has flat index iy * W + ix (C order over scanShape [H, W]).
 * - Lattice: the disk of order (n, m) sits at zero + n a + m b. The reference lattice is a0, b0.
 * - Strain: the local lattice is a = F a0, b = F b0 with F = R(rotation) (I + E), computed in
 *   the (x, y) basis. E = [[exx, exy], [exy, eyy]] is symmetric (the strain) and R(theta) =
 *   [[cos, -sin], [sin, cos]] turns +x towards +y (clockwise on screen, rows grow downwards) by
 *   `rotation` radians. F is exactly this product (a polar decomposition), so E and rotation are
 *   recovered exactly from a measured F = [a b] [a0 b0]^-1 by F = R U, E = U - I; to first order
 *   F - I = E + [[0, -rotation], [rotation, 0]] is the displacement gradient of the diffraction
 *   lattice relative to the reference. It is the distortion seen on the detector; a real-space
 *   strain would be its inverse transpose, which the simulator does not model.
 * - Strain field: a linear gradient plus a Gaussian bump, |components| up to about 1e-2.
 * - Vacuum: scan columns ix < vacuumColumns; thickness 0 there, only the central beam shows.
 */
import { FRAME_HEIGHT, FRAME_WIDTH } from '../constants.js';
import { TesseraError } from '../../errors.js';
import { hash32 } from './random.js';
import { BlockRenderer, type Disk, type FramePlan } from './render.js';

export type Vec2 = [number, number];

export interface SimulatedScanOptions {
  /** [height, width] of the scan */
  scanShape: [number, number];
  seed: number;
  /** reference lattice vectors (y, x) in pixels; default about 160 and 145 px, 95 degrees apart */
  a0?: Vec2;
  b0?: Vec2;
  /** disk radius in pixels (default 22) */
  diskRadius?: number;
  /** only reference orders with |n a0 + m b0| <= this many pixels are drawn (default 620) */
  maxScatteringRadius?: number;
  /** fraction of scan columns (from the left) that are vacuum (default 0.15; at least 1 column when W >= 2) */
  vacuumFraction?: number;
  /** multiplies the whole strain field (default 1; 0 gives an unstrained crystal) */
  strainScale?: number;
  /** amplitude in pixels of the linear drift of the central beam across the scan (default 1.5) */
  descan?: number;
  /** mean background counts per pixel (default 3) */
  background?: number;
  /** number of pre-drawn background noise blocks (default 192) */
  noisePoolSize?: number;
}

export interface Strain {
  exx: number;
  eyy: number;
  exy: number;
  /** radians, +x towards +y */
  rotation: number;
}

export interface Lattice {
  zero: Vec2;
  a: Vec2;
  b: Vec2;
}

export interface DiskTruth {
  /** lattice order: centre = zero + n a + m b */
  n: number;
  m: number;
  y: number;
  x: number;
  radius: number;
  /** expected counts per fully covered pixel, above the background */
  intensity: number;
}

interface ReferenceOrder {
  n: number;
  m: number;
  /** |n a0 + m b0| in pixels */
  g: number;
  /** structure-factor-like weight in [0.4, 1], fixed per order */
  weight: number;
}

/** Frame centre: the central beam sits here, give or take the descan drift. */
export const PATTERN_CENTRE: Vec2 = [(FRAME_HEIGHT - 1) / 2, (FRAME_WIDTH - 1) / 2];
/** Keys >= this are parked-beam frames (pre-scan and after-scan); below it, scan positions. */
export const PARKED_KEY_BASE = 0x40000000;
/** The parked beam: one bright disk well away from the scan's central beam. */
export const PARKED_BEAM: Readonly<Disk> = {
  y: PATTERN_CENTRE[0] - 210,
  x: PATTERN_CENTRE[1] + 330,
  radius: 34,
  intensity: 1800,
};

const CENTRAL_INTENSITY = 3000;
const DIFFRACTED_INTENSITY = 2600;

export class SimulatedScan {
  readonly scanShape: [number, number];
  readonly seed: number;
  readonly positions: number;
  readonly a0: Vec2;
  readonly b0: Vec2;
  readonly diskRadius: number;
  readonly vacuumColumns: number;
  readonly strainScale: number;
  readonly descan: number;
  readonly background: number;
  readonly renderer: BlockRenderer;
  private readonly orders: ReferenceOrder[];
  private readonly planCache = new Map<number, FramePlan>();

  constructor(options: SimulatedScanOptions) {
    const [h, w] = options.scanShape;
    if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1 || h * w >= PARKED_KEY_BASE) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'scanShape', `must be two positive integers, got ${h}x${w}`);
    }
    this.scanShape = [h, w];
    this.seed = options.seed | 0;
    this.positions = h * w;
    this.a0 = options.a0 ?? [33.0, 156.5];
    this.b0 = options.b0 ?? [138.5, -42.5];
    this.diskRadius = options.diskRadius ?? 22;
    const frac = options.vacuumFraction ?? 0.15;
    this.vacuumColumns = frac <= 0 || w < 2 ? 0 : Math.min(w - 1, Math.max(1, Math.floor(w * frac)));
    this.strainScale = options.strainScale ?? 1;
    this.descan = options.descan ?? 1.5;
    this.background = options.background ?? 3;
    this.renderer = new BlockRenderer({
      seed: this.seed,
      poolSize: options.noisePoolSize ?? 192,
      background: this.background,
    });
    this.orders = this.referenceOrders(options.maxScatteringRadius ?? 620);
  }

  private referenceOrders(gMax: number): ReferenceOrder[] {
    const orders: ReferenceOrder[] = [];
    const [a0, b0] = [this.a0, this.b0];
    const minLen = Math.min(Math.hypot(...a0), Math.hypot(...b0));
    const reach = Math.ceil((2 * gMax) / Math.max(1, minLen)) + 1;
    for (let n = -reach; n <= reach; n++) {
      for (let m = -reach; m <= reach; m++) {
        const g = Math.hypot(n * a0[0] + m * b0[0], n * a0[1] + m * b0[1]);
        if (g > gMax) continue;
        const weight = n === 0 && m === 0 ? 1 : 0.4 + 0.6 * (hash32(this.seed, n, m, 0xf00d) / 4294967296);
        orders.push({ n, m, g, weight });
      }
    }
    return orders;
  }

  private checkPosition(iy: number, ix: number): void {
    const [h, w] = this.scanShape;
    if (!Number.isInteger(iy) || !Number.isInteger(ix) || iy < 0 || ix < 0 || iy >= h || ix >= w) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'scan position', `(${iy}, ${ix}) outside ${h}x${w}`);
    }
  }

  /** (iy, ix) of a flat scan index. */
  position(scanIndex: number): [number, number] {
    if (!Number.isInteger(scanIndex) || scanIndex < 0 || scanIndex >= this.positions) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'scanIndex', `${scanIndex} outside 0..${this.positions - 1}`);
    }
    return [Math.floor(scanIndex / this.scanShape[1]), scanIndex % this.scanShape[1]];
  }

  /** Normalised scan coordinates in (-1, 1): (gy, gx). */
  private unit(iy: number, ix: number): [number, number, number, number] {
    const u = (ix + 0.5) / this.scanShape[1];
    const v = (iy + 0.5) / this.scanShape[0];
    return [u, v, 2 * u - 1, 2 * v - 1];
  }

  strainAt(iy: number, ix: number): Strain {
    this.checkPosition(iy, ix);
    const [u, v, gx, gy] = this.unit(iy, ix);
    const bump = Math.exp(-((u - 0.62) ** 2 + (v - 0.38) ** 2) / (2 * 0.18 ** 2));
    const s = this.strainScale;
    return {
      exx: s * (4e-3 * gx + 6e-3 * bump),
      eyy: s * (-3e-3 * gy + 5e-3 * bump),
      exy: s * (1.5e-3 * gx * gy + 2.5e-3 * bump),
      rotation: s * (2.5e-3 * gy - 2e-3 * bump),
    };
  }

  /** F = R(rotation) (I + E) applied to a (y, x) vector. */
  private deform(vec: Vec2, e: Strain): Vec2 {
    const [vy, vx] = vec;
    const ux = (1 + e.exx) * vx + e.exy * vy;
    const uy = e.exy * vx + (1 + e.eyy) * vy;
    const c = Math.cos(e.rotation);
    const s = Math.sin(e.rotation);
    return [s * ux + c * uy, c * ux - s * uy];
  }

  latticeAt(iy: number, ix: number): Lattice {
    const e = this.strainAt(iy, ix);
    const [, , gx, gy] = this.unit(iy, ix);
    return {
      zero: [PATTERN_CENTRE[0] + this.descan * gy, PATTERN_CENTRE[1] + this.descan * gx],
      a: this.deform(this.a0, e),
      b: this.deform(this.b0, e),
    };
  }

  isVacuum(iy: number, ix: number): boolean {
    this.checkPosition(iy, ix);
    return ix < this.vacuumColumns;
  }

  /** Specimen thickness (arbitrary units, about 45..215; 0 in vacuum). */
  thicknessAt(iy: number, ix: number): number {
    if (this.isVacuum(iy, ix)) return 0;
    const [h, w] = this.scanShape;
    const vc = this.vacuumColumns;
    const ramp = (ix - vc + 0.5) / (w - vc);
    return 60 + 140 * ramp + 15 * Math.sin((2 * Math.PI * (iy + 0.5)) / h);
  }

  /**
   * Every disk drawn at a scan position: the central beam (order 0, 0) first. In vacuum that is
   * the only one. Intensities: the central beam fades with thickness, diffracted disks grow with
   * it and fall off with scattering angle.
   */
  diskCentres(iy: number, ix: number): DiskTruth[] {
    const t = this.thicknessAt(iy, ix);
    const lat = this.latticeAt(iy, ix);
    const out: DiskTruth[] = [];
    for (const o of this.orders) {
      let intensity: number;
      if (o.n === 0 && o.m === 0) intensity = CENTRAL_INTENSITY * Math.exp(-t / 400);
      else if (t === 0) continue;
      else intensity = DIFFRACTED_INTENSITY * o.weight * (1 - Math.exp(-t / 120)) * Math.exp(-((o.g / 450) ** 2));
      const y = lat.zero[0] + o.n * lat.a[0] + o.m * lat.b[0];
      const x = lat.zero[1] + o.n * lat.a[1] + o.m * lat.b[1];
      const disk = { n: o.n, m: o.m, y, x, radius: this.diskRadius, intensity };
      if (o.n === 0 && o.m === 0) out.unshift(disk);
      else out.push(disk);
    }
    return out;
  }

  /** What the frame of scan position `scanIndex` shows (cached: the stream asks often). */
  planForScan(scanIndex: number): FramePlan {
    let plan = this.planCache.get(scanIndex);
    if (!plan) {
      const [iy, ix] = this.position(scanIndex);
      plan = { key: scanIndex, disks: this.diskCentres(iy, ix) };
      if (this.planCache.size >= 4096) this.planCache.clear();
      this.planCache.set(scanIndex, plan);
    }
    return plan;
  }

  /** A parked-beam frame (before or after the scan); `k` makes its noise distinct (e.g. the stream frame index). */
  planForParked(k: number): FramePlan {
    return { key: PARKED_KEY_BASE + (k % PARKED_KEY_BASE), disks: [PARKED_BEAM] };
  }

  /** The ground-truth frame at flat scan index `scanIndex`: 1860 x 2048, row-major, 12-bit values. */
  frame(scanIndex: number, out?: Uint16Array): Uint16Array {
    return this.renderer.renderFrame(this.planForScan(scanIndex), out);
  }

  /** The ground truth of a parked-beam frame. */
  parkedFrame(k: number, out?: Uint16Array): Uint16Array {
    return this.renderer.renderFrame(this.planForParked(k), out);
  }

  /** Settings that reproduce this scene, for sidecar files. */
  describe(): Record<string, unknown> {
    return {
      scanShape: this.scanShape,
      seed: this.seed,
      a0: this.a0,
      b0: this.b0,
      diskRadius: this.diskRadius,
      disksPerPattern: this.orders.length,
      vacuumColumns: this.vacuumColumns,
      strainScale: this.strainScale,
      descan: this.descan,
      background: this.background,
      patternCentre: PATTERN_CENTRE,
      parkedBeam: PARKED_BEAM,
    };
  }
}
