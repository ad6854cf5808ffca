/**
 * Composes K2 IS blocks from a frame plan (a list of flat disks) and a pool of pre-drawn
 * background-noise blocks, fast enough to stream 400 frames/s.
 *
 * Every block of every frame is: one noise block from the pool (chosen by a hash of the seed,
 * the frame's content key, the sector and the block), plus, on the rows that a disk touches,
 * the disk's counts with their own shot noise. Only those rows are re-encoded (a 16-pixel row is
 * 24 packed bytes, independent of its neighbours); all other bytes are a copy of the pool
 * block's packed form. The ground-truth pixels come from the same function, so the truth and
 * the stream agree bit for bit.
 *
 * Pixel (row, col) has its centre at (row, col). A disk of radius r covers a pixel by
 * clamp(r + 0.5 - distance, 0, 1) (a one-pixel antialiased edge); its expected counts there are
 * intensity x coverage, drawn with Gaussian shot noise of variance equal to the mean from a
 * seeded table indexed by the pixel's position, then added to the background and clipped to
 * 4095.
 */
import * as K from '../constants.js';
import { BLOCK_ORDER } from '../geometry.js';
import { encodeUint12 } from '../uint12.js';
import { hash32, Xoshiro128 } from './random.js';

export interface Disk {
  /** centre row in frame pixels */
  y: number;
  /** centre column in frame pixels */
  x: number;
  radius: number;
  /** expected counts per fully covered pixel, above the background */
  intensity: number;
}

/** What one frame shows: its disks, and the key that picks its noise. */
export interface FramePlan {
  /** distinct per frame content (scan position or parked-beam frame); picks the noise */
  key: number;
  disks: readonly Disk[];
}

export interface NoiseOptions {
  seed: number;
  /** number of pre-drawn noise blocks */
  poolSize: number;
  /** mean background counts per pixel */
  background: number;
}

// Local copies: imported bindings can compile to getters under some loaders (tsx, vitest),
// which costs more than the arithmetic in the per-pixel loops below.
const BLOCK_COLS = K.BLOCK_COLS;
const BLOCK_PIXELS = K.BLOCK_PIXELS;
const BLOCK_ROW_BYTES = K.BLOCK_ROW_BYTES;
const BLOCK_ROWS = K.BLOCK_ROWS;
const BLOCKS_PER_SECTOR_FRAME = K.BLOCKS_PER_SECTOR_FRAME;
const FRAME_HEIGHT = K.FRAME_HEIGHT;
const FRAME_WIDTH = K.FRAME_WIDTH;
const MAX_PIXEL_VALUE = K.MAX_PIXEL_VALUE;
const NUM_SECTORS = K.NUM_SECTORS;
const PAYLOAD_SIZE = K.PAYLOAD_SIZE;
const SECTOR_WIDTH = K.SECTOR_WIDTH;
// 2^16 normals (256 KB, stays in cache). A pixel's normal is entry (salt + row * 1237 + col)
// mod 2^16: within any 45 x 45 window (bigger than a disk) all entries differ, and each frame's
// salt shifts the whole pattern.
const GAUSS_BITS = 16;
const GAUSS_MASK = (1 << GAUSS_BITS) - 1;
const GAUSS_ROW_STRIDE = 1237;
const TOTAL_BLOCKS = NUM_SECTORS * BLOCKS_PER_SECTOR_FRAME;

/** The pre-drawn noise: both unpacked and packed, so untouched rows are a plain copy. */
interface NoisePool {
  pixels: Uint16Array; // poolSize x 14 880
  packed: Uint8Array; // poolSize x 22 320
  gauss: Float32Array; // 2^20 standard normals for the disks' shot noise
}

const poolCache = new Map<string, NoisePool>();

function buildPool(o: NoiseOptions): NoisePool {
  const key = `${o.seed}:${o.poolSize}:${o.background}`;
  const cached = poolCache.get(key);
  if (cached) return cached;
  const rng = new Xoshiro128(o.seed, 0x9001);
  // Poisson background by inverse CDF: cheap for a mean of a few counts.
  const cdf: number[] = [];
  let p = Math.exp(-o.background);
  let acc = p;
  for (let k = 0; acc < 1 - 1e-12 && k < 200; k++) {
    cdf.push(acc);
    p *= o.background / (k + 1);
    acc += p;
  }
  cdf.push(1);
  const pixels = new Uint16Array(o.poolSize * BLOCK_PIXELS);
  for (let i = 0; i < pixels.length; i++) {
    const u = rng.next();
    let k = 0;
    while (u >= cdf[k]!) k++;
    pixels[i] = Math.min(k, MAX_PIXEL_VALUE);
  }
  const packed = new Uint8Array(o.poolSize * PAYLOAD_SIZE);
  for (let b = 0; b < o.poolSize; b++) {
    encodeUint12(pixels.subarray(b * BLOCK_PIXELS, (b + 1) * BLOCK_PIXELS), packed, b * PAYLOAD_SIZE);
  }
  const gaussRng = new Xoshiro128(o.seed, 0x9002);
  const gauss = new Float32Array(1 << GAUSS_BITS);
  for (let i = 0; i < gauss.length; i++) gauss[i] = gaussRng.normal();
  const pool = { pixels, packed, gauss };
  if (poolCache.size >= 4) poolCache.delete(poolCache.keys().next().value!);
  poolCache.set(key, pool);
  return pool;
}

function diskTop(d: Disk): number {
  return Math.floor(d.y - d.radius - 1);
}
function diskBottom(d: Disk): number {
  return Math.ceil(d.y + d.radius + 1);
}

/** Disks overlapping each of the 256 blocks of a frame (index sector * 32 + send-order block), sorted by top row. */
function disksPerBlock(disks: readonly Disk[]): Disk[][] {
  const lists: Disk[][] = Array.from({ length: TOTAL_BLOCKS }, () => []);
  for (const d of disks) {
    const reach = d.radius + 1;
    const rowLo = Math.max(0, Math.floor(d.y - reach));
    const rowHi = Math.min(FRAME_HEIGHT - 1, Math.ceil(d.y + reach));
    const colLo = Math.max(0, Math.floor(d.x - reach));
    const colHi = Math.min(FRAME_WIDTH - 1, Math.ceil(d.x + reach));
    if (rowLo > rowHi || colLo > colHi || d.intensity <= 0) continue;
    for (let by = Math.floor(rowLo / BLOCK_ROWS); by <= Math.floor(rowHi / BLOCK_ROWS); by++) {
      for (let gbx = Math.floor(colLo / BLOCK_COLS); gbx <= Math.floor(colHi / BLOCK_COLS); gbx++) {
        const sector = Math.floor(gbx / 16);
        const bx = gbx % 16;
        const idx = 15 - bx + 16 * by; // send order, spec A.5
        lists[sector * BLOCKS_PER_SECTOR_FRAME + idx]!.push(d);
      }
    }
  }
  for (const l of lists) l.sort((p, q) => diskTop(p) - diskTop(q));
  return lists;
}

export class BlockRenderer {
  private readonly pool: NoisePool;
  private readonly seed: number;
  private readonly poolSize: number;
  private planCache: { plan: FramePlan; lists: Disk[][] } | null = null;
  private readonly lam = new Float64Array(BLOCK_COLS);
  private readonly row = new Uint16Array(BLOCK_COLS);

  constructor(options: NoiseOptions) {
    this.pool = buildPool(options);
    this.seed = options.seed | 0;
    this.poolSize = options.poolSize;
  }

  /** Which pool block serves block `block` (send order) of `sector` in frames with this key. */
  poolIndex(key: number, sector: number, block: number): number {
    return hash32(this.seed, key, sector * BLOCKS_PER_SECTOR_FRAME + block, 0x600d) % this.poolSize;
  }

  private listsFor(plan: FramePlan): Disk[][] {
    if (this.planCache?.plan !== plan) this.planCache = { plan, lists: disksPerBlock(plan.disks) };
    return this.planCache.lists;
  }

  /**
   * Render one block: its 22 320 packed payload bytes at `packed[packedOffset]` and, if
   * `pixels` is given, its 930 x 16 pixels at `pixels[pixelOffset]` with row stride
   * `pixelStride` (16 for a lone block, 2048 inside a full frame).
   */
  renderBlock(
    plan: FramePlan,
    sector: number,
    block: number,
    packed: Uint8Array,
    packedOffset: number,
    pixels?: Uint16Array,
    pixelOffset = 0,
    pixelStride = BLOCK_COLS,
  ): void {
    const p = this.poolIndex(plan.key, sector, block);
    const poolPixels = this.pool.pixels;
    const poolBase = p * BLOCK_PIXELS;
    packed.set(this.pool.packed.subarray(p * PAYLOAD_SIZE, (p + 1) * PAYLOAD_SIZE), packedOffset);
    if (pixels) {
      for (let r = 0; r < BLOCK_ROWS; r++) {
        const src = poolBase + r * BLOCK_COLS;
        const dst = pixelOffset + r * pixelStride;
        for (let c = 0; c < BLOCK_COLS; c++) pixels[dst + c] = poolPixels[src + c]!;
      }
    }
    const disks = this.listsFor(plan)[sector * BLOCKS_PER_SECTOR_FRAME + block]!;
    if (disks.length === 0) return;

    const origin = BLOCK_ORDER[block]!;
    const y0 = origin.y;
    const x0 = sector * SECTOR_WIDTH + origin.x;
    const gauss = this.pool.gauss;
    const salt = hash32(this.seed, plan.key, 0x5a17);
    const lam = this.lam;
    const row = this.row;
    // Disks are sorted by top row; rows are visited cluster by cluster (disks whose row ranges
    // overlap), so the empty rows between disks cost nothing.
    for (let i = 0; i < disks.length; ) {
      let lo = diskTop(disks[i]!);
      let hi = diskBottom(disks[i]!);
      let j = i + 1;
      while (j < disks.length && diskTop(disks[j]!) <= hi) hi = Math.max(hi, diskBottom(disks[j++]!));
      const rLo = Math.max(0, lo - y0);
      const rHi = Math.min(BLOCK_ROWS - 1, hi - y0);
      for (let r = rLo; r <= rHi; r++) {
        const gy = y0 + r;
        let cMin = BLOCK_COLS;
        let cMax = -1;
        for (let k = i; k < j; k++) {
          const d = disks[k]!;
          const dy = gy - d.y;
          const reach = d.radius + 0.5;
          const h2 = reach * reach - dy * dy;
          if (h2 <= 0) continue;
          const hw = Math.sqrt(h2);
          const cLo = Math.max(0, Math.ceil(d.x - hw) - x0);
          const cHi = Math.min(BLOCK_COLS - 1, Math.floor(d.x + hw) - x0);
          const inner2 = (reach - 1) * (reach - 1);
          const dy2 = dy * dy;
          for (let c = cLo; c <= cHi; c++) {
            const dx = x0 + c - d.x;
            const d2 = dx * dx + dy2;
            let cov = 1;
            if (d2 > inner2) {
              cov = reach - Math.sqrt(d2);
              if (cov <= 0) continue;
            }
            lam[c] = lam[c]! + d.intensity * cov;
            if (c < cMin) cMin = c;
            if (c > cMax) cMax = c;
          }
        }
        if (cMax < 0) continue;
        const src = poolBase + r * BLOCK_COLS;
        for (let c = 0; c < BLOCK_COLS; c++) row[c] = poolPixels[src + c]!;
        const noiseBase = salt + gy * GAUSS_ROW_STRIDE + x0;
        for (let c = cMin; c <= cMax; c++) {
          const l = lam[c]!;
          if (l <= 0) continue;
          lam[c] = 0;
          // round half up, then no negative counts: (x + 0.5) | 0 is that for every x > -2^31
          const counts = (l + Math.sqrt(l) * gauss[(noiseBase + c) & GAUSS_MASK]! + 0.5) | 0;
          let v = row[c]! + (counts > 0 ? counts : 0);
          if (v > MAX_PIXEL_VALUE) v = MAX_PIXEL_VALUE;
          row[c] = v;
        }
        encodeRow(row, packed, packedOffset + r * BLOCK_ROW_BYTES);
        if (pixels) pixels.set(row, pixelOffset + r * pixelStride);
      }
      i = j;
    }
  }

  /** The full 1860 x 2048 frame of a plan, composed block by block exactly as the stream is. */
  renderFrame(plan: FramePlan, out: Uint16Array = new Uint16Array(FRAME_WIDTH * FRAME_HEIGHT)): Uint16Array {
    const scratch = new Uint8Array(PAYLOAD_SIZE);
    for (let s = 0; s < NUM_SECTORS; s++) {
      for (let b = 0; b < BLOCKS_PER_SECTOR_FRAME; b++) {
        const o = BLOCK_ORDER[b]!;
        this.renderBlock(plan, s, b, scratch, 0, out, o.y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x, FRAME_WIDTH);
      }
    }
    return out;
  }
}

/** Pack one 16-pixel row (spec A.4), unrolled: this runs for every row a disk touches. */
function encodeRow(px: Uint16Array, out: Uint8Array, o: number): void {
  for (let i = 0; i < BLOCK_COLS; i += 2, o += 3) {
    const a = px[i]!;
    const b = px[i + 1]!;
    out[o] = a & 0xff;
    out[o + 1] = ((a >> 8) & 0x0f) | ((b & 0x0f) << 4);
    out[o + 2] = b >> 4;
  }
}
