/**
 * A real AcquisitionController for developing and testing the browser UI before the live
 * pipeline exists: it offers the standard UDFs by their real names and parameter schemas
 * (SumUDF, SumSigUDF, ApplyMasksUDF, CoMUDF), and plays the merger core over synthetic
 * frames with known content (`frameAt`): each `advance(n)` merges whole chunks into the
 * acquisition's LiveStore with plain, obviously correct reductions. Parameter changes apply
 * from the next chunk, as the real merger's do; a change in the number of masks re-declares
 * the ApplyMasks buffer. Continuous acquisitions start a new epoch (a new store) per pass.
 */
import { TesseraError } from '../../src/errors.js';
import {
  roiSummary,
  type AcquisitionDefinition,
  type AcquisitionSummary,
  type MergerStatus,
  type ShuffleState,
  type UdfDescription,
  type UdfInstance,
  type UdfParamsChange,
} from '../../src/merger/acquisition-schema.js';
import type { AcquisitionController } from '../../src/merger/http-api.js';
import { LiveStoreRegistry, type LiveStore } from '../../src/merger/live-store.js';
import type { AcquisitionState } from '../../src/protocol/ws-messages.js';
import { ApplyMasksUDF, CoMUDF, SumSigUDF, SumUDF } from '../../src/udf/lib/index.js';
import { Ajv } from 'ajv';

export const SIG: [number, number] = [192, 256];
const [SH, SW] = SIG;
/** radius of the central (bright-field) disk */
export const DISK_R = Math.round(SH / 10);

/**
 * The frame at scan position (py, px) of an h x w scan: a central disk whose centre shifts
 * with the position (a smooth CoM field), diffraction spots on a lattice inside a round
 * crystal region, a weak deterministic background. Integer counts.
 */
export function frameAt(py: number, px: number, scan: readonly [number, number]): Uint16Array {
  const [h, w] = scan;
  const f = new Uint16Array(SH * SW);
  const crystal = (py - h / 2) ** 2 + (px - w / 2) ** 2 < (0.35 * Math.min(h, w)) ** 2;
  const cy = SH / 2 + 3 * Math.sin((2 * Math.PI * px) / w);
  const cx = SW / 2 + 3 * Math.sin((2 * Math.PI * py) / h);
  const spots: Array<[number, number]> = [];
  if (crystal) {
    for (let i = -2; i <= 2; i++) for (let j = -2; j <= 2; j++) if (i || j) spots.push([cy + i * (SH / 5), cx + j * (SW / 6) + i * (SW / 12)]);
  }
  for (let y = 0; y < SH; y++) for (let x = 0; x < SW; x++) f[y * SW + x] = 2 + ((px * 7 + py * 13 + y * 3 + x * 5) % 4);
  // add a disk of radius r around (cy, cx), visiting only its bounding box
  const disk = (cy: number, cx: number, r: number, value: number) => {
    for (let y = Math.max(0, Math.ceil(cy - r)); y <= Math.min(SH - 1, Math.floor(cy + r)); y++) {
      for (let x = Math.max(0, Math.ceil(cx - r)); x <= Math.min(SW - 1, Math.floor(cx + r)); x++) {
        if ((y - cy) ** 2 + (x - cx) ** 2 <= r * r) f[y * SW + x] += value;
      }
    }
  };
  disk(cy, cx, DISK_R, crystal ? 120 : 200);
  for (const [sy, sx] of spots) disk(sy, sx, DISK_R / 2, 60);
  return f;
}

/** A disk or ring mask as ApplyMasksUDF defines it: pixel (y, x) is in if its distance d to (cy, cx) has ri < d <= r. */
export type SimpleMask = { type: 'disk'; cy: number; cx: number; r: number } | { type: 'ring'; cy: number; cx: number; ri: number; ro: number };

function maskPixels(m: SimpleMask): Int32Array {
  const ro = m.type === 'disk' ? m.r : m.ro;
  const ri = m.type === 'ring' ? m.ri : -1;
  const idx: number[] = [];
  for (let y = 0; y < SH; y++) {
    for (let x = 0; x < SW; x++) {
      const d2 = (y - m.cy) ** 2 + (x - m.cx) ** 2;
      if (d2 <= ro * ro && (ri < 0 || d2 > ri * ri)) idx.push(y * SW + x);
    }
  }
  return Int32Array.from(idx);
}

const DESCRIPTIONS: Record<string, string> = {
  SumUDF: 'sum of frames (signal image)',
  SumSigUDF: 'sum of each frame (navigation map)',
  ApplyMasksUDF: 'virtual detectors (masks)',
  CoMUDF: 'centre of mass',
};
const CLASSES = [SumUDF, SumSigUDF, ApplyMasksUDF, CoMUDF];
const ajv = new Ajv({ allErrors: false, strict: false });
const validators = new Map(CLASSES.map((c) => [c.udfName, ajv.compile(c.paramsSchema as object)]));
/**
 * StrainMapUDF's maps, known by construction (the real one runs behind the shuffle): accepted
 * at define (any parameters; not offered in the form), merged from `strainAt`.
 */
export const STRAIN_UDF = 'StrainMapUDF';
validators.set(STRAIN_UDF, ajv.compile({ type: 'object' }));

/**
 * The strain at scan position (py, px): exx grows along x, eyy falls along y, exy and the
 * rotation are saddles, all centred on 0 and signed; null (NaN maps, as the real UDF gives)
 * in the vacuum outside a round crystal, as `frameAt` draws it.
 */
export function strainAt(py: number, px: number, scan: readonly [number, number]): { exx: number; eyy: number; exy: number; rotation: number } | null {
  const [h, w] = scan;
  if ((py - h / 2) ** 2 + (px - w / 2) ** 2 >= (0.45 * Math.min(h, w)) ** 2) return null;
  const u = (px - w / 2) / w;
  const v = (py - h / 2) / h;
  return { exx: 4e-3 * u, eyy: -6e-3 * v, exy: 2e-3 * u * v * 4, rotation: 1e-3 * (u * u - v * v) * 4 };
}

interface Acquisition {
  id: string;
  definition: AcquisitionDefinition;
  state: AcquisitionState;
  message: string | null;
  store: LiveStore;
  epoch: number;
  /** frames merged in this epoch */
  merged: number;
  recording?: 'recording' | 'closed';
  /** per UDF id: parameter versions with the frame they apply from */
  params: Map<string, Array<{ from: number; params: Record<string, unknown> }>>;
}

export interface PatchRecord {
  acquisition: string;
  udfId: string;
  params: Record<string, unknown>;
  appliesFromFrame: number;
}

export class SyntheticController implements AcquisitionController {
  readonly registry: LiveStoreRegistry;
  readonly patches: PatchRecord[] = [];
  /** refuse parameter changes that change a UDF's result shapes, as the live merger does */
  refuseShapeChange = false;
  /** what the running acquisition's summary says of the merge lag (ms) */
  mergeLagMs: number | null = null;
  /** what /api/status says of the shuffle (null: no shuffle link, as without whole-frame UDFs) */
  shuffle: ShuffleState | null = null;
  private readonly acquisitions = new Map<string, Acquisition>();
  private next = 1;
  private timer: NodeJS.Timeout | null = null;

  constructor(registry = new LiveStoreRegistry()) {
    this.registry = registry;
  }

  listUdfs(): UdfDescription[] {
    return CLASSES.map((c) => ({ name: c.udfName, description: DESCRIPTIONS[c.udfName]!, params: c.paramsSchema as Record<string, unknown> }));
  }

  private check(u: { name: string; params: Record<string, unknown> }): void {
    const validate = validators.get(u.name);
    if (!validate) throw new TesseraError('TESSERA_ERR_UNKNOWN_UDF', u.name, [...validators.keys()].join(', '));
    if (!validate(u.params)) {
      const e = validate.errors![0]!;
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', u.name, `${e.instancePath || '(params)'} ${e.message}`);
    }
    if (u.name === 'ApplyMasksUDF') {
      for (const m of u.params.masks as SimpleMask[]) {
        if (m.type !== 'disk' && m.type !== 'ring') throw new TesseraError('TESSERA_ERR_UDF_PARAMS', u.name, 'this test controller knows disk and ring masks');
      }
    }
  }

  define(definition: AcquisitionDefinition): AcquisitionSummary {
    for (const u of definition.udfs) this.check(u);
    const id = `acq-${this.next++}`;
    const a: Acquisition = {
      id,
      definition,
      state: 'defined',
      message: null,
      store: null as unknown as LiveStore,
      epoch: 0,
      merged: 0,
      params: new Map(definition.udfs.map((u) => [u.id, [{ from: 0, params: { ...u.params } }]])),
    };
    a.store = this.newStore(a);
    this.acquisitions.set(id, a);
    return this.summary(a);
  }

  private newStore(a: Acquisition): LiveStore {
    const d = a.definition;
    const store = this.registry.create({ acquisition: a.id, epoch: a.epoch, scanShape: d.scanShape, info: { mode: d.mode, udfs: d.udfs } });
    for (const u of d.udfs) this.declare(store, u.id, u.name, this.paramsAt(a, u.id, 0));
    store.setState(a.state);
    store.setProgress({ framesMerged: 0, framesTotal: d.scanShape[0] * d.scanShape[1] });
    for (let s = 0; s < 8; s++) store.setSectorStatus(s, { state: 'alive' });
    return store;
  }

  private declare(store: LiveStore, udfId: string, name: string, params: Record<string, unknown>): void {
    const nav = [...store.scanShape];
    switch (name) {
      case 'SumUDF':
        store.defineBuffer({ udfId, name: 'intensity', kind: 'sig', dtype: 'float64', shape: SIG });
        break;
      case 'SumSigUDF':
        store.defineBuffer({ udfId, name: 'intensity', kind: 'nav', dtype: 'float64', shape: nav });
        break;
      case 'ApplyMasksUDF':
        store.defineBuffer({ udfId, name: 'intensity', kind: 'nav', dtype: 'float64', shape: [...nav, (params.masks as unknown[]).length] });
        break;
      case 'CoMUDF':
        store.defineBuffer({ udfId, name: 'field', kind: 'nav', dtype: 'float64', shape: [...nav, 2] });
        store.defineBuffer({ udfId, name: 'magnitude', kind: 'nav', dtype: 'float64', shape: nav });
        break;
      case STRAIN_UDF:
        for (const n of ['exx', 'eyy', 'exy', 'rotation', 'fitError']) store.defineBuffer({ udfId, name: n, kind: 'nav', dtype: 'float64', shape: nav });
        store.defineBuffer({ udfId, name: 'a', kind: 'nav', dtype: 'float64', shape: [...nav, 2] });
        break;
    }
  }

  /** The parameters UDF `udfId` runs with at frame `frame` of the current epoch. */
  paramsAt(a: Acquisition, udfId: string, frame: number): Record<string, unknown> {
    const versions = a.params.get(udfId)!;
    let p = versions[0]!.params;
    for (const v of versions) if (v.from <= frame) p = v.params;
    return p;
  }

  private need(id: string): Acquisition {
    const a = this.acquisitions.get(id);
    if (!a) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${id}`);
    return a;
  }

  private transition(id: string, action: string, from: AcquisitionState[], to: AcquisitionState): AcquisitionSummary {
    const a = this.need(id);
    if (!from.includes(a.state)) throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', action, a.state);
    a.state = to;
    a.store.setState(to, to === 'aborted' ? 'aborted by request' : null);
    return this.summary(a);
  }

  get(id: string): AcquisitionSummary {
    return this.summary(this.need(id));
  }

  start(id: string): AcquisitionSummary {
    return this.transition(id, 'start', ['defined'], 'running');
  }

  stop(id: string): AcquisitionSummary {
    return this.transition(id, 'stop', ['running'], 'done');
  }

  abort(id: string): AcquisitionSummary {
    return this.transition(id, 'abort', ['defined', 'running', 'stopping'], 'aborted');
  }

  /** Recording without a file: the state the real recorder reports, for the UI. */
  setRecording(id: string, enabled: boolean): AcquisitionSummary {
    const a = this.need(id);
    if (a.state !== 'defined' && a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'record', a.state);
    a.definition.record = { enabled, path: a.definition.record.path ?? `/data/${id}.h5` };
    a.recording = enabled ? 'recording' : 'closed';
    return this.summary(a);
  }

  updateUdfParams(id: string, udfId: string, params: Record<string, unknown>): UdfParamsChange {
    const a = this.need(id);
    const udf = a.definition.udfs.find((u) => u.id === udfId);
    if (!udf) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `UDF ${udfId} in acquisition ${id}`);
    if (a.state !== 'defined' && a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'change parameters', a.state);
    this.check({ name: udf.name, params });
    if (this.refuseShapeChange && udf.name === 'ApplyMasksUDF' && (udf.params.masks as unknown[]).length !== (params.masks as unknown[]).length) {
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', udf.name, 'these parameters change the shape of its results: define a new acquisition instead');
    }
    const chunk = a.definition.chunkSize;
    const from = Math.ceil(a.merged / chunk) * chunk;
    a.params.get(udfId)!.push({ from, params: { ...params } });
    const before = this.paramsAt(a, udfId, from - 1);
    udf.params = { ...params };
    if (udf.name === 'ApplyMasksUDF' && (before.masks as unknown[]).length !== (params.masks as unknown[]).length) {
      // another number of masks: a new buffer shape, filled from the next chunk on
      this.declare(a.store, udf.id, udf.name, params);
    }
    const change: UdfParamsChange = { acquisition: id, udf: { ...udf }, appliesFromFrame: from };
    this.patches.push({ acquisition: id, udfId, params: { ...params }, appliesFromFrame: from });
    return change;
  }

  status(): MergerStatus {
    const current = this.registry.current;
    const a = current ? this.acquisitions.get(current) : undefined;
    return { acquisition: a ? this.summary(a) : null, sectors: a ? a.store.getSectors() : [], shuffle: this.shuffle };
  }

  current(): Acquisition | undefined {
    const id = this.registry.current;
    return id ? this.acquisitions.get(id) : undefined;
  }

  /**
   * Merge the next `frames` frames (whole chunks; at most to the end of the pass) of the
   * current running acquisition. Returns the frames merged.
   */
  advance(frames: number): number {
    const a = this.current();
    if (!a || a.state !== 'running') return 0;
    const d = a.definition;
    const total = d.scanShape[0] * d.scanShape[1];
    let done = 0;
    while (done < frames) {
      if (a.merged >= total) {
        if (d.mode !== 'continuous') {
          a.state = 'done';
          a.store.setState('done');
          break;
        }
        a.epoch++;
        a.merged = 0;
        // parameters in force at the end of the pass carry over
        for (const [udfId, versions] of a.params) versions.splice(0, versions.length, { from: 0, params: versions[versions.length - 1]!.params });
        a.store = this.newStore(a);
        a.store.setState('running');
      }
      const n = Math.min(d.chunkSize, total - a.merged);
      this.mergeChunk(a, a.merged, n);
      a.merged += n;
      done += n;
    }
    if (a.merged >= total && d.mode === 'single' && a.state === 'running') {
      a.state = 'done';
      a.store.setState('done');
    }
    return done;
  }

  private mergeChunk(a: Acquisition, start: number, n: number): void {
    const d = a.definition;
    const [, w] = d.scanShape;
    const store = a.store;
    const frames = Array.from({ length: n }, (_, i) => frameAt(Math.floor((start + i) / w), (start + i) % w, d.scanShape));
    for (const u of d.udfs) {
      const p = this.paramsAt(a, u.id, start);
      if (u.name === 'SumUDF') {
        const buf = store.getBuffer(u.id, 'intensity').data as Float64Array;
        for (const f of frames) for (let i = 0; i < f.length; i++) buf[i] += f[i]!;
        store.touch(u.id, 'intensity');
      } else if (u.name === 'SumSigUDF') {
        store.updateNavRange(u.id, 'intensity', start, start + n, Float64Array.from(frames, (f) => f.reduce((s, v) => s + v, 0)));
      } else if (u.name === 'ApplyMasksUDF') {
        const masks = (p.masks as SimpleMask[]).map(maskPixels);
        const out = new Float64Array(n * masks.length);
        frames.forEach((f, i) => masks.forEach((idx, k) => {
          let s = 0;
          for (const j of idx) s += f[j]!;
          out[i * masks.length + k] = s;
        }));
        const buffer = store.getBuffer(u.id, 'intensity');
        // the buffer may still have the shape of the previous masks until the next pass
        if (buffer.perPosition === masks.length) store.updateNavRange(u.id, 'intensity', start, start + n, out);
      } else if (u.name === 'CoMUDF') {
        const field = new Float64Array(n * 2);
        const mag = new Float64Array(n);
        const cy0 = (p.cy as number | undefined) ?? Math.floor(SH / 2);
        const cx0 = (p.cx as number | undefined) ?? Math.floor(SW / 2);
        frames.forEach((f, i) => {
          let s = 0;
          let sy = 0;
          let sx = 0;
          for (let y = 0; y < SH; y++) for (let x = 0; x < SW; x++) {
            const v = f[y * SW + x]!;
            s += v;
            sy += v * y;
            sx += v * x;
          }
          field[i * 2] = sy / s - cy0;
          field[i * 2 + 1] = sx / s - cx0;
          mag[i] = Math.hypot(field[i * 2]!, field[i * 2 + 1]!);
        });
        store.updateNavRange(u.id, 'field', start, start + n, field);
        store.updateNavRange(u.id, 'magnitude', start, start + n, mag);
      } else if (u.name === STRAIN_UDF) {
        const maps = { exx: new Float64Array(n), eyy: new Float64Array(n), exy: new Float64Array(n), rotation: new Float64Array(n), fitError: new Float64Array(n) };
        const a = new Float64Array(n * 2);
        for (let i = 0; i < n; i++) {
          const s = strainAt(Math.floor((start + i) / w), (start + i) % w, d.scanShape);
          for (const k of ['exx', 'eyy', 'exy', 'rotation'] as const) maps[k][i] = s ? s[k] : NaN;
          maps.fitError[i] = s ? 0.05 : NaN;
          a[i * 2] = s ? 20 * (1 + s.eyy) : NaN;
          a[i * 2 + 1] = s ? 20 * s.exy : NaN;
        }
        for (const [k, data] of Object.entries(maps)) store.updateNavRange(u.id, k, start, start + n, data);
        store.updateNavRange(u.id, 'a', start, start + n, a);
      }
    }
    store.setDamage(start, start + n, 8, 0);
    store.setProgress({ framesMerged: start + n });
    const sectors = store.getSectors();
    sectors.forEach((s) => store.setSectorStatus(s.sector, { state: 'alive', datagrams: s.datagrams + n * 32, datagramsPerSecond: 400 * 32 * (0.97 + 0.06 * Math.random()), lost: s.lost + (Math.random() < 0.05 ? 1 : 0) }));
  }

  /** Merge `framesPerTick` frames every `ms` until stopped (for demos and screenshots). */
  play(framesPerTick: number, ms = 50): void {
    this.pause();
    this.timer = setInterval(() => this.advance(framesPerTick), ms);
  }

  pause(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private summary(a: Acquisition): AcquisitionSummary {
    const d = a.definition;
    return {
      id: a.id,
      state: a.state,
      message: a.message,
      epoch: a.epoch,
      scanShape: d.scanShape,
      mode: d.mode,
      chunkSize: d.chunkSize,
      record: a.recording ? { ...d.record, state: a.recording, bytes: a.merged * 1000, lagMs: 0, error: null } : d.record,
      udfs: d.udfs.map((u): UdfInstance => ({ ...u, params: { ...u.params } })),
      roi: roiSummary(d.roi),
      progress: a.store.getProgress(),
      mergeLagMs: a.state === 'running' ? this.mergeLagMs : null,
    };
  }
}
