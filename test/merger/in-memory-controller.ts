/**
 * A small, real AcquisitionController for testing the merger's web layer: acquisitions live
 * in memory, each with a LiveStore in a registry; a few UDFs with parameter schemas; state
 * transitions as the merger core will make them; `mergeChunk` plays the merger core feeding
 * a chunk of merged results into the store.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { TesseraError } from '../../src/errors.js';
import {
  roiSummary,
  type AcquisitionDefinition,
  type AcquisitionSummary,
  type MergerStatus,
  type UdfDescription,
  type UdfParamsChange,
} from '../../src/merger/acquisition-schema.js';
import type { AcquisitionController } from '../../src/merger/http-api.js';
import { LiveStoreRegistry, type LiveStore } from '../../src/merger/live-store.js';
import type { AcquisitionState } from '../../src/protocol/ws-messages.js';

export const SIG_SHAPE = [16, 24] as const;

interface UdfType extends UdfDescription {
  validate: ValidateFunction;
  /** buffers: [name, kind, dtype, extra shape (nav) or shape (sig/single)] */
  buffers: (params: Record<string, unknown>) => Array<[string, 'nav' | 'sig' | 'single', 'float32' | 'int64', number[]]>;
}

const ajv = new Ajv({ allErrors: false });

function udfType(
  name: string,
  description: string,
  params: Record<string, unknown>,
  buffers: UdfType['buffers'],
): UdfType {
  return { name, description, params, validate: ajv.compile(params), buffers };
}

export const UDF_TYPES: UdfType[] = [
  udfType('sum', 'sum of frames', { type: 'object', additionalProperties: false, properties: {} }, () => [
    ['intensity', 'sig', 'float32', [...SIG_SHAPE]],
  ]),
  udfType(
    'virtualDetector',
    'ring detector',
    {
      type: 'object',
      additionalProperties: false,
      required: ['cx', 'cy', 'ro'],
      properties: { cx: { type: 'number' }, cy: { type: 'number' }, ri: { type: 'number', minimum: 0 }, ro: { type: 'number', exclusiveMinimum: 0 } },
    },
    () => [['intensity', 'nav', 'float32', []]],
  ),
  udfType(
    'masks',
    'several masks',
    { type: 'object', additionalProperties: false, required: ['count'], properties: { count: { type: 'integer', minimum: 1, maximum: 8 } } },
    (p) => [
      ['intensity', 'nav', 'float32', [p.count as number]],
      ['frames', 'single', 'int64', [1]],
    ],
  ),
];

interface Acquisition {
  id: string;
  definition: AcquisitionDefinition;
  state: AcquisitionState;
  message: string | null;
  framesMerged: number;
  store: LiveStore;
}

export class InMemoryController implements AcquisitionController {
  readonly registry: LiveStoreRegistry;
  private readonly acquisitions = new Map<string, Acquisition>();
  private next = 1;

  constructor(registry = new LiveStoreRegistry()) {
    this.registry = registry;
  }

  listUdfs(): UdfDescription[] {
    return UDF_TYPES.map(({ name, description, params }) => ({ name, description, params }));
  }

  private udfType(name: string): UdfType {
    const type = UDF_TYPES.find((t) => t.name === name);
    if (!type) throw new TesseraError('TESSERA_ERR_UNKNOWN_UDF', name, UDF_TYPES.map((t) => t.name).join(', '));
    return type;
  }

  private checkParams(type: UdfType, params: Record<string, unknown>): void {
    if (!type.validate(params)) {
      const e = type.validate.errors![0]!;
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', type.name, `${e.instancePath || '(params)'} ${e.message}`);
    }
  }

  define(definition: AcquisitionDefinition): AcquisitionSummary {
    for (const u of definition.udfs) this.checkParams(this.udfType(u.name), u.params);
    const id = `acq-${this.next++}`;
    const store = this.registry.create({
      acquisition: id,
      scanShape: definition.scanShape,
      info: { mode: definition.mode, udfs: definition.udfs },
    });
    for (const u of definition.udfs) this.defineBuffers(store, u.id, u.name, u.params);
    const acquisition: Acquisition = { id, definition, state: 'defined', message: null, framesMerged: 0, store };
    this.acquisitions.set(id, acquisition);
    store.setProgress({ framesMerged: 0, framesTotal: definition.scanShape[0] * definition.scanShape[1] });
    return this.summary(acquisition);
  }

  private defineBuffers(store: LiveStore, udfId: string, name: string, params: Record<string, unknown>): void {
    for (const [bufferName, kind, dtype, shape] of this.udfType(name).buffers(params)) {
      store.defineBuffer({ udfId, name: bufferName, kind, dtype, shape: kind === 'nav' ? [...store.scanShape, ...shape] : shape });
    }
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

  updateUdfParams(id: string, udfId: string, params: Record<string, unknown>): UdfParamsChange {
    const a = this.need(id);
    const udf = a.definition.udfs.find((u) => u.id === udfId);
    if (!udf) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `UDF ${udfId} in acquisition ${id}`);
    if (a.state !== 'defined' && a.state !== 'running') throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', 'change parameters', a.state);
    this.checkParams(this.udfType(udf.name), params);
    udf.params = { ...params };
    const chunk = a.definition.chunkSize;
    return { acquisition: id, udf: { ...udf }, appliesFromFrame: Math.ceil(a.framesMerged / chunk) * chunk };
  }

  status(): MergerStatus {
    const current = this.registry.current;
    const a = current ? this.acquisitions.get(current) : undefined;
    return { acquisition: a ? this.summary(a) : null, sectors: a ? a.store.getSectors() : [] };
  }

  /** Play the merger core: frames [start, start + n) merged; nav values are a known function. */
  mergeChunk(id: string, start: number, n: number): void {
    const a = this.need(id);
    const store = a.store;
    for (const u of a.definition.udfs) {
      if (u.name === 'virtualDetector') {
        store.updateNavRange(u.id, 'intensity', start, start + n, Float32Array.from({ length: n }, (_, i) => start + i + 0.5));
      }
    }
    store.setDamage(start, start + n, 8, 0);
    a.framesMerged = Math.max(a.framesMerged, start + n);
    store.setProgress({ framesMerged: a.framesMerged });
  }

  private summary(a: Acquisition): AcquisitionSummary {
    const d = a.definition;
    return {
      id: a.id,
      state: a.state,
      message: a.message,
      epoch: a.store.epoch,
      scanShape: d.scanShape,
      mode: d.mode,
      chunkSize: d.chunkSize,
      record: d.record,
      udfs: d.udfs,
      roi: roiSummary(d.roi),
      progress: a.store.getProgress(),
    };
  }
}
