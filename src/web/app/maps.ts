/**
 * Which images the mirror's buffers make: navigation maps (one per scalar nav buffer, one per
 * component of a small extra shape, a colour wheel for 2-vector fields), signal images (2-D
 * sig buffers) and picked frames (nav buffers with a 2-D extra shape, as PickUDF's).
 */
import type { LiveMirror, MirrorBuffer } from '../../client/tessera-client.js';
import { DAMAGE_BLOCKS, DAMAGE_SECTORS, DAMAGE_UDF, type TypedArray } from '../../protocol/ws-messages.js';
import type { ImageSource } from './image-view.js';

export interface MapSpec {
  /** unique: the buffer key, with `#k` for component k */
  id: string;
  key: string;
  udf: string;
  name: string;
  component: number | null;
  vector: boolean;
  /** shown only with "all maps" */
  secondary: boolean;
  /** signed, centred at 0 (strain, rotation): a diverging colour map with a symmetric range */
  diverging: boolean;
  /** a whole-frame UDF's result (behind the shuffle): valid where `_shuffle/valid` says so */
  wholeFrame: boolean;
}

/** StrainMapUDF's four maps (docs/udf.md, docs/shuffle.md): a UDF with all of them is a strain map. */
export const STRAIN_MAPS = ['exx', 'eyy', 'exy', 'rotation'] as const;
/** The shuffle's own buffers (docs/shuffle.md, "What the browser gets"). */
export const SHUFFLE_UDF = '_shuffle';

/** UDF ids whose nav buffers include all four strain maps. */
export function strainUdfs(mirror: LiveMirror): Set<string> {
  const names = new Map<string, Set<string>>();
  for (const b of mirror.buffers.values()) {
    if (b.kind !== 'nav') continue;
    let set = names.get(b.udf);
    if (!set) names.set(b.udf, (set = new Set()));
    set.add(b.name);
  }
  return new Set([...names].filter(([, set]) => STRAIN_MAPS.every((n) => set.has(n))).map(([udf]) => udf));
}

/** Frames the shuffle's workers processed (1), or null without a shuffle. */
export function shuffleValid(mirror: LiveMirror): Uint8Array | null {
  const b = mirror.get(SHUFFLE_UDF, 'valid');
  return b && b.data instanceof Uint8Array ? b.data : null;
}

/** Buffers that are intermediate or redundant views of another map. */
const SECONDARY = new Set(['raw_com', 'raw_shifts', 'field_y', 'field_x', 'raw_mask_result', 'divergence', 'curl']);
const MAX_COMPONENTS = 16;

export function extraShapeOf(b: MirrorBuffer, scanDims: number): number[] {
  return b.kind === 'nav' ? b.shape.slice(scanDims) : b.shape;
}

export function listNavMaps(mirror: LiveMirror): MapSpec[] {
  const scan = (mirror.info?.scanShape ?? []) as number[];
  if (scan.length !== 2) return [];
  const maps: MapSpec[] = [];
  const strain = strainUdfs(mirror);
  for (const b of mirror.buffers.values()) {
    if (b.kind !== 'nav' || b.dtype.startsWith('complex')) continue;
    const extra = extraShapeOf(b, 2);
    const isStrain = strain.has(b.udf);
    const strainMap = isStrain && (STRAIN_MAPS as readonly string[]).includes(b.name);
    const base = {
      key: b.key,
      udf: b.udf,
      name: b.name,
      // a strain UDF's lattice vectors, peaks and fit error are its intermediates
      secondary: SECONDARY.has(b.name) || b.udf === DAMAGE_UDF || b.udf === SHUFFLE_UDF || (isStrain && !strainMap),
      diverging: strainMap,
      wholeFrame: isStrain,
    };
    if (b.udf === DAMAGE_UDF && b.name !== DAMAGE_SECTORS) continue;
    if (extra.length === 0) maps.push({ ...base, id: b.key, component: null, vector: false });
    else if (extra.length === 1 && extra[0] === 2 && (b.name === 'field' || b.name === 'raw_shifts')) {
      maps.push({ ...base, id: b.key, component: null, vector: true });
    } else if (extra.length === 1 && extra[0]! <= MAX_COMPONENTS) {
      for (let k = 0; k < extra[0]!; k++) maps.push({ ...base, id: `${b.key}#${k}`, component: k, vector: false });
    }
  }
  // the user's results first, then the shuffle's, the damage map last
  const rank = (m: MapSpec) => (m.udf === DAMAGE_UDF ? 2 : m.udf === SHUFFLE_UDF ? 1 : 0);
  return maps.sort((a, b) => rank(a) - rank(b));
}

/** 2-D signal-space images. */
export function listSigImages(mirror: LiveMirror): MirrorBuffer[] {
  return [...mirror.buffers.values()].filter((b) => b.kind === 'sig' && b.shape.length === 2 && !b.dtype.startsWith('complex'));
}

/** Nav buffers holding one whole frame per scan position (PickUDF). */
export function listPickBuffers(mirror: LiveMirror): MirrorBuffer[] {
  return [...mirror.buffers.values()].filter((b) => b.kind === 'nav' && extraShapeOf(b, 2).length === 2);
}

const numberCache = new WeakMap<TypedArray, { version: number; values: Float64Array }>();

/** The buffer's values as numbers (64-bit integer buffers are converted, once per version). */
export function numbersOf(b: MirrorBuffer): ArrayLike<number> {
  if (!(b.data instanceof BigInt64Array || b.data instanceof BigUint64Array)) return b.data as ArrayLike<number>;
  const cached = numberCache.get(b.data);
  if (cached && cached.version === b.version) return cached.values;
  const values = Float64Array.from(b.data as BigInt64Array, (v) => Number(v));
  numberCache.set(b.data, { version: b.version, values });
  return values;
}

/** Scan positions that have been merged (some sector or block arrived), or null if the damage map is not in use. */
export function mergedPositions(mirror: LiveMirror): Uint8Array | null {
  const sectors = mirror.get(DAMAGE_UDF, DAMAGE_SECTORS);
  const blocks = mirror.get(DAMAGE_UDF, DAMAGE_BLOCKS);
  if (!sectors || (sectors.version === 0 && (!blocks || blocks.version === 0))) return null;
  const out = new Uint8Array(sectors.data.length);
  for (let i = 0; i < out.length; i++) out[i] = sectors.data[i]! > 0 || (blocks && blocks.data[i]! > 0) ? 1 : 0;
  return out;
}

export function navMapSource(mirror: LiveMirror, spec: MapSpec, valid: Uint8Array | null): ImageSource | null {
  const b = mirror.buffers.get(spec.key);
  const scan = mirror.info?.scanShape as number[] | undefined;
  if (!b || !scan) return null;
  const extra = extraShapeOf(b, 2);
  const per = extra.reduce((a, d) => a * d, 1);
  // the damage map is its own validity
  return {
    width: scan[1]!,
    height: scan[0]!,
    values: numbersOf(b),
    stride: per,
    offset: spec.component ?? 0,
    vector: spec.vector,
    valid: spec.udf === DAMAGE_UDF ? null : spec.wholeFrame ? shuffleValid(mirror) : valid,
  };
}

export function sigSource(b: MirrorBuffer): ImageSource {
  return { width: b.shape[1]!, height: b.shape[0]!, values: numbersOf(b) };
}

/** The frame at scan position `index` of a pick buffer (a view, no copy). */
export function pickedFrameSource(b: MirrorBuffer, index: number): ImageSource {
  const extra = extraShapeOf(b, 2);
  const [fh, fw] = [extra[0]!, extra[1]!];
  const values = numbersOf(b) as ArrayLike<number> & { subarray?: (a: number, b: number) => ArrayLike<number> };
  const start = index * fh * fw;
  return { width: fw, height: fh, values: values.subarray ? values.subarray(start, start + fh * fw) : Array.from({ length: fh * fw }, (_, i) => values[start + i]!) };
}
