/**
 * `ReplayController`: the HTTP API of `tessera replay`. The recorded acquisition is reported as
 * the merger reported it (GET /api/status, /api/acquisitions/:id), nothing can be started or
 * changed (409 TESSERA_ERR_ACQUISITION_STATE), and GET /api/replay, POST /api/replay/time
 * expose the time line (src/merger/replay-store.ts).
 */
import { TesseraError } from '../errors.js';
import type { SectorStatus } from '../protocol/ws-messages.js';
import type { AcquisitionDefinition, AcquisitionSummary, MergerStatus, UdfDescription, UdfInstance, UdfParamsChange } from './acquisition-schema.js';
import type { AcquisitionController } from './http-api.js';
import { recordedEndState, type ReplayRegistry } from './replay-store.js';

const STATS_COLUMNS = ['datagrams', 'lost', 'duplicates', 'late', 'corrupt', 'damagedFrames', 'alive'];

export class ReplayController implements AcquisitionController {
  constructor(private readonly registry: ReplayRegistry) {}

  private refuse(what: string): never {
    throw new TesseraError('TESSERA_ERR_ACQUISITION_STATE', what, 'a replayed recording');
  }

  listUdfs(): UdfDescription[] {
    return [];
  }

  define(_definition: AcquisitionDefinition): AcquisitionSummary {
    return this.refuse('define an acquisition');
  }

  private summary(): AcquisitionSummary {
    const rec = this.registry.recording;
    const a = rec.attrs;
    let udfs: UdfInstance[] = [];
    try {
      udfs = JSON.parse(String(a.udfs ?? '[]')) as UdfInstance[];
    } catch {
      udfs = [];
    }
    const newest = rec.epochs.at(-1)!;
    const positions = rec.navShape[0] * rec.navShape[1];
    const framesMerged = rec.epochs.reduce((s, e) => s + e.mergedAt.filter((t) => !Number.isNaN(t)).length, 0);
    const roi = rec.rootDatasets.roi;
    const end = recordedEndState(a.final_state);
    return {
      id: this.registry.acquisition,
      state: end.state,
      message: end.message,
      epoch: newest.epoch,
      scanShape: rec.navShape,
      mode: a.mode === 'continuous' ? 'continuous' : 'single',
      chunkSize: typeof a.chunk_size === 'number' ? a.chunk_size : 1,
      // as the merger reported it at the end: switched off mid-run, not enabled
      record: { enabled: a.final_state !== 'recording stopped', path: rec.path, state: 'closed', error: null, lagMs: 0, batches: 0, bytes: 0, lastWriteMs: null, lastPublishMs: null, skippedEpochs: Number(a.skipped_epochs ?? 0), startedAt: String(a.started_at ?? ''), endedAt: typeof a.ended_at === 'string' ? a.ended_at : null },
      epochs: rec.epochs.map((e) => e.epoch),
      udfs,
      roi: roi ? { selected: Array.from(roi.data as ArrayLike<number>).filter((v) => v).length } : null,
      progress: { framesMerged, framesTotal: a.mode === 'continuous' ? null : positions, framesPerSecond: 0, etaSeconds: null },
    };
  }

  get(id: string): AcquisitionSummary {
    if (id !== this.registry.acquisition) throw new TesseraError('TESSERA_ERR_NOT_FOUND', `acquisition ${id}`);
    return this.summary();
  }

  start(_id: string): AcquisitionSummary {
    return this.refuse('start');
  }

  stop(_id: string): AcquisitionSummary {
    return this.refuse('stop');
  }

  abort(_id: string): AcquisitionSummary {
    return this.refuse('abort');
  }

  updateUdfParams(_id: string, _udfId: string, _params: Record<string, unknown>): UdfParamsChange {
    return this.refuse('change parameters');
  }

  status(): MergerStatus {
    const stats = this.registry.recording.rootDatasets.stats;
    const sectors: SectorStatus[] = [];
    if (stats && stats.shape.length === 2 && stats.shape[1] === STATS_COLUMNS.length) {
      for (let s = 0; s < stats.shape[0]!; s++) {
        const v = (c: string) => Number(stats.data[s * STATS_COLUMNS.length + STATS_COLUMNS.indexOf(c)]);
        sectors.push({ sector: s, state: v('alive') ? 'alive' : 'missing', datagrams: v('datagrams'), datagramsPerSecond: 0, lost: v('lost'), duplicates: v('duplicates'), late: v('late'), corrupt: v('corrupt'), damagedFrames: v('damagedFrames') });
      }
    }
    return { acquisition: this.summary(), sectors };
  }

  replayTimeline(): Record<string, unknown> {
    return { ...this.registry.timeline() };
  }

  setReplayTime(t: number | null): Record<string, unknown> {
    this.registry.setTime(t);
    return { ...this.registry.timeline() };
  }
}
