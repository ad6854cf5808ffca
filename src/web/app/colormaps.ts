/**
 * Colour maps as 256-entry RGB lookup tables, and the colour wheel for vector fields.
 * Viridis is the polynomial fit of matplotlib's table by Matt Zucker (CC0), within one
 * 8-bit step of the original.
 */
export type ColormapName = 'viridis' | 'greys' | 'greys_r' | 'rdbu_r';
export const COLORMAPS: ColormapName[] = ['viridis', 'greys', 'greys_r', 'rdbu_r'];
/** Colour maps for signed data centred at 0 (their automatic range is symmetric). */
export const DIVERGING: ReadonlySet<ColormapName> = new Set(['rdbu_r']);

/** ColorBrewer's 11-class RdBu, reversed: blue for negative, white at 0, red for positive. */
const RDBU_R = [
  [0x05, 0x30, 0x61], [0x21, 0x66, 0xac], [0x43, 0x93, 0xc3], [0x92, 0xc5, 0xde], [0xd1, 0xe5, 0xf0], [0xf7, 0xf7, 0xf7],
  [0xfd, 0xdb, 0xc7], [0xf4, 0xa5, 0x82], [0xd6, 0x60, 0x4d], [0xb2, 0x18, 0x2b], [0x67, 0x00, 0x1f],
];

const VIRIDIS_COEFFS = [
  [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
  [0.1050930431085774, 1.404613529898575, 1.384590162594685],
  [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
  [-4.634230498983486, -5.799100973351585, -19.33244095627987],
  [6.228269936347081, 14.17993336680509, 56.69055260068105],
  [4.776384997670288, -13.74514537774601, -65.35303263337234],
  [-5.435455855934631, 4.645852612178535, 26.3124352495832],
];

function clamp8(v: number): number {
  return Math.max(0, Math.min(255, Math.round(v * 255)));
}

function buildLut(colour: (t: number) => [number, number, number]): Uint8Array {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const [r, g, b] = colour(i / 255);
    lut[i * 3] = clamp8(r);
    lut[i * 3 + 1] = clamp8(g);
    lut[i * 3 + 2] = clamp8(b);
  }
  return lut;
}

const LUTS: Record<ColormapName, Uint8Array> = {
  viridis: buildLut((t) => {
    const c = [0, 1, 2].map((ch) => VIRIDIS_COEFFS.reduceRight((acc, row) => acc * t + row[ch]!, 0));
    return [c[0]!, c[1]!, c[2]!];
  }),
  greys: buildLut((t) => [t, t, t]),
  greys_r: buildLut((t) => [1 - t, 1 - t, 1 - t]),
  rdbu_r: buildLut((t) => {
    // piecewise linear between the 11 stops; t = 0.5 is exactly the white stop
    const x = t * (RDBU_R.length - 1);
    const i = Math.min(RDBU_R.length - 2, Math.floor(x));
    const f = x - i;
    const [a, b] = [RDBU_R[i]!, RDBU_R[i + 1]!];
    return [0, 1, 2].map((c) => (a[c]! + (b[c]! - a[c]!) * f) / 255) as [number, number, number];
  }),
};

/** RGB triplets of 256 colours, index 0 for the low end of the display range. */
export function lutOf(name: ColormapName): Uint8Array {
  return LUTS[name];
}

/**
 * The LUT index of value `t` on the display range [lo, hi] (already transformed, e.g. log):
 * linear, clamped, 0 for a degenerate range.
 */
export function lutIndex(t: number, lo: number, hi: number): number {
  if (!(hi > lo)) return 0;
  const i = Math.floor(((t - lo) / (hi - lo)) * 256);
  return i < 0 ? 0 : i > 255 ? 255 : i;
}

/**
 * Colour-wheel RGB for a 2-D vector (y down, x right): the hue is the direction, the
 * brightness the length relative to `scale` (clamped at 1).
 */
export function wheelColour(vy: number, vx: number, scale: number): [number, number, number] {
  const len = Math.hypot(vy, vx);
  const v = scale > 0 ? Math.min(1, len / scale) : 0;
  // hue in [0, 6): 0 = pointing right (+x), increasing counter-clockwise on screen (-y)
  const hue = ((Math.atan2(-vy, vx) / (2 * Math.PI) + 1) % 1) * 6;
  const f = hue - Math.floor(hue);
  const rgb: [number, number, number][] = [
    [1, f, 0],
    [1 - f, 1, 0],
    [0, 1, f],
    [0, 1 - f, 1],
    [f, 0, 1],
    [1, 0, 1 - f],
  ];
  const [r, g, b] = rgb[Math.floor(hue) % 6]!;
  return [Math.round(r * v * 255), Math.round(g * v * 255), Math.round(b * v * 255)];
}
