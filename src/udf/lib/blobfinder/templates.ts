/**
 * Correlation templates for diffraction disks (LiberTEM-blobfinder's match patterns, spec D.1),
 * as a radial profile t(d) of the distance d from the disk centre:
 *
 * - disk: an antialiased disk, clamp(r + 1/2 - d, 0, 1) (the simulator draws disks this way).
 * - radialGradient: d / r inside d < r - 1/2, a linear fall from +1 to -1 across the edge
 *   (r - 1/2 <= d < r + 1/2), 0 outside. It weights the disk's edge, not its inside, so
 *   intensity variations inside a disk (CBED) move the peak less.
 * - backgroundSubtraction: the disk minus a ring r < d <= radiusOuter (default 1.5 r) scaled so
 *   the template sums to zero: a constant background does not move or raise the peak.
 * - radialGradientBackgroundSubtraction: the radial gradient inside, -1 from the edge out to
 *   radiusOuter, the negative part scaled so the template sums to zero.
 *
 * Templates are scaled so that their positive part sums to 1: a correlation value is then a
 * weighted mean intensity over the disk, and quality thresholds do not depend on the radius.
 */
import { TesseraError } from '../../../errors.js';

export type TemplateType = 'disk' | 'radialGradient' | 'backgroundSubtraction' | 'radialGradientBackgroundSubtraction';

export interface TemplateSpec {
  type: TemplateType;
  /** disk radius in pixels */
  radius: number;
  /** outer radius of the background ring (background-subtracting types; default 1.5 radius) */
  radiusOuter?: number;
}

export const TEMPLATE_TYPES: readonly TemplateType[] = ['disk', 'radialGradient', 'backgroundSubtraction', 'radialGradientBackgroundSubtraction'];

/** JSON schema of a TemplateSpec, for UDF params. */
export const templateSchema = {
  type: 'object',
  required: ['type', 'radius'],
  properties: {
    type: { enum: TEMPLATE_TYPES },
    radius: { type: 'number', exclusiveMinimum: 0 },
    radiusOuter: { type: 'number', exclusiveMinimum: 0 },
  },
  additionalProperties: false,
} as const;

export function checkTemplate(spec: TemplateSpec): void {
  if (spec === null || typeof spec !== 'object' || !TEMPLATE_TYPES.includes(spec.type)) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'template', `type must be one of ${TEMPLATE_TYPES.join(', ')}`);
  }
  if (!(spec.radius > 0)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'template', `radius must be > 0, got ${spec.radius}`);
  if (spec.radiusOuter !== undefined && !(spec.radiusOuter > spec.radius + 0.5)) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'template', `radiusOuter must exceed radius + 0.5, got ${spec.radiusOuter}`);
  }
}

function hasBackground(spec: TemplateSpec): boolean {
  return spec.type === 'backgroundSubtraction' || spec.type === 'radialGradientBackgroundSubtraction';
}

/** The distance beyond which the template is 0. */
export function templateReach(spec: TemplateSpec): number {
  return hasBackground(spec) ? (spec.radiusOuter ?? 1.5 * spec.radius) : spec.radius + 0.5;
}

/** The unscaled radial profile: [positive part, negative part] at distance d. */
function profile(spec: TemplateSpec, d: number): [number, number] {
  const r = spec.radius;
  const outer = spec.radiusOuter ?? 1.5 * r;
  switch (spec.type) {
    case 'disk':
      return [Math.min(1, Math.max(0, r + 0.5 - d)), 0];
    case 'backgroundSubtraction': {
      const inside = Math.min(1, Math.max(0, r + 0.5 - d));
      // the ring takes the antialiased complement of the disk's edge, out to the outer radius
      const ring = d <= outer ? 1 - inside : 0;
      return [inside, -ring];
    }
    case 'radialGradient':
    case 'radialGradientBackgroundSubtraction': {
      let v: number;
      if (d < r - 0.5) v = d / r;
      else if (d < r + 0.5) v = (r - d) / 0.5;
      else v = hasBackground(spec) && d <= outer ? -1 : 0;
      return v >= 0 ? [v, 0] : [0, v];
    }
  }
}

/**
 * The template on an n x n grid, centred on pixel (0, 0) with periodic wrap-around (the layout
 * an FFT correlation wants: the correlation at index s is the match with the disk centred at s).
 * Pixel centres are at integer positions. Scaled to a positive sum of 1; background-subtracting
 * types sum to 0.
 */
export function wrappedTemplate(spec: TemplateSpec, n: number): Float64Array {
  checkTemplate(spec);
  const reach = templateReach(spec);
  if (2 * Math.ceil(reach) + 1 > n) {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'template', `reach ${reach} px does not fit a ${n} x ${n} window`);
  }
  const pos = new Float64Array(n * n);
  const neg = new Float64Array(n * n);
  let sp = 0;
  let sn = 0;
  for (let y = 0; y < n; y++) {
    const dy = y < n / 2 ? y : y - n;
    for (let x = 0; x < n; x++) {
      const dx = x < n / 2 ? x : x - n;
      const [p, q] = profile(spec, Math.hypot(dy, dx));
      pos[y * n + x] = p;
      neg[y * n + x] = q;
      sp += p;
      sn += q;
    }
  }
  const out = new Float64Array(n * n);
  const negScale = hasBackground(spec) && sn !== 0 ? sp / -sn : 1;
  for (let i = 0; i < out.length; i++) out[i] = (pos[i]! + neg[i]! * negScale) / sp;
  return out;
}

/** The template on an h x w grid centred at (cy, cx) (for display and tests); same scaling. */
export function centredTemplate(spec: TemplateSpec, h: number, w: number, cy: number, cx: number): Float64Array {
  checkTemplate(spec);
  const pos = new Float64Array(h * w);
  const neg = new Float64Array(h * w);
  let sp = 0;
  let sn = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [p, q] = profile(spec, Math.hypot(y - cy, x - cx));
      pos[y * w + x] = p;
      neg[y * w + x] = q;
      sp += p;
      sn += q;
    }
  }
  const negScale = hasBackground(spec) && sn !== 0 ? sp / -sn : 1;
  const out = new Float64Array(h * w);
  for (let i = 0; i < out.length; i++) out[i] = (pos[i]! + neg[i]! * negScale) / sp;
  return out;
}
