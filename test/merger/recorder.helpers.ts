/**
 * A recording made in-process: a real ChunkMerger fed with the partials eight receivers would
 * send (PartitionTask over the sector slices of simulator frames), and an AcquisitionRecorder
 * hooked to it as the acquisition manager hooks it. Chunks arrive in two bursts with a pause
 * between them, so the recording has merge times and snapshots of a half-merged scan.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquisitionDefinition } from '../../src/merger/acquisition-schema.js';
import { ChunkMerger, type EpochResults } from '../../src/merger/chunk-merger.js';
import { AcquisitionRecorder } from '../../src/merger/recorder.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { computePartial, contextOf, SIG } from './live-helpers.js';

export const SCAN: [number, number] = [4, 4];
export const CHUNK = 4;
export const REC_UDFS = [
  { id: 'sum', name: 'SumUDF', params: {} },
  { id: 'sumsig', name: 'SumSigUDF', params: {} },
];

export interface MadeRecording {
  path: string;
  dir: string;
  acquisition: string;
  recorder: AcquisitionRecorder;
  epoch: EpochResults;
  /** ms since 1970 between the two bursts of chunks */
  pauseAt: number;
  frames: Uint16Array;
}

export function framesOf(seed: number): Uint16Array {
  const n = SCAN[0] * SCAN[1];
  const sim = new SimulatedScan({ scanShape: SCAN, seed });
  const frame = FRAME_HEIGHT * FRAME_WIDTH;
  const data = new Uint16Array(n * frame);
  for (let i = 0; i < n; i++) sim.frame(i, data.subarray(i * frame, (i + 1) * frame));
  return data;
}

export async function offlineOf(frames: Uint16Array): Promise<UDFResults[]> {
  return runUdf(new MemoryDataSet({ data: frames, navShape: SCAN, sigShape: SIG }), REC_UDFS.map((u) => createUdf({ name: u.name, params: u.params })));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface RecorderRig {
  dir: string;
  acquisition: string;
  frames: Uint16Array;
  merger: ChunkMerger;
  recorder: AcquisitionRecorder;
  /** merge one chunk of the scan (all eight sectors) */
  feed(chunk: number): void;
}

/** A real ChunkMerger with an AcquisitionRecorder hooked to it as the acquisition manager hooks it; not recording yet. */
export function makeRig(o: { seed?: number } = {}): RecorderRig {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-recorder-'));
  const frames = framesOf(o.seed ?? 5);
  const frame = FRAME_HEIGHT * FRAME_WIDTH;
  const acquisition = 'acq-test-1';
  const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition, scanShape: SCAN, roi: null, udfs: REC_UDFS, chunkSize: CHUNK, mode: 'single', start: null };
  const context = contextOf(acquire);
  const definition: AcquisitionDefinition = { scanShape: SCAN, udfs: REC_UDFS, roi: null, mode: 'single', record: { enabled: true, path: null }, chunkSize: CHUNK };
  let merger: ChunkMerger | null = null;
  const recorder = new AcquisitionRecorder({
    acquisition,
    definition,
    navShape: SCAN,
    sigShape: SIG,
    udfs: REC_UDFS,
    writeIntervalMs: 50,
    snapshotIntervalMs: 100,
    epochs: () => merger?.epochList ?? [],
    stats: () => ({ sectors: [], merge: merger!.counters }),
  });
  merger = new ChunkMerger({
    acquisition,
    udfs: REC_UDFS,
    context,
    chunkSize: CHUNK,
    mode: 'single',
    sectors: 8,
    chunkTimeoutMs: 60_000,
    keepEpochs: 2,
    isMissing: () => false,
    onEpoch: (e) => recorder.addEpoch(e),
    onChunk: (c) => recorder.chunk(c),
  });
  const m = merger;
  const feed = (chunk: number) => {
    for (let s = 0; s < 8; s++) m.add(computePartial(acquire, s, 0, chunk, (i) => frames.subarray(i * frame, (i + 1) * frame), { context }));
  };
  return { dir, acquisition, frames, merger: m, recorder, feed };
}

export async function makeRecording(o: { seed?: number; pauseMs?: number; beforeSecondBurst?: (r: AcquisitionRecorder) => Promise<void>; afterSecondBurst?: (r: AcquisitionRecorder) => Promise<void> } = {}): Promise<MadeRecording> {
  const { dir, acquisition, frames, merger, recorder, feed } = makeRig({ seed: o.seed });
  const path = join(dir, 'rec.h5');
  await recorder.start(path);
  feed(0);
  feed(1);
  await sleep(o.pauseMs ?? 400);
  if (!o.beforeSecondBurst) {
    // a loaded machine may still be writing: wait until the images of the first burst are in the file
    const inner = recorder as unknown as { tracks: Map<number, { imagesDirty: boolean }>; inFlight: unknown };
    for (let i = 0; i < 600 && (inner.tracks.get(0)?.imagesDirty !== false || inner.inFlight !== null); i++) await sleep(50);
  }
  const pauseAt = Date.now();
  await o.beforeSecondBurst?.(recorder);
  await sleep(20);
  feed(2);
  feed(3);
  const epoch = merger.epochList[0]!;
  await o.afterSecondBurst?.(recorder);
  await recorder.close('done');
  merger.close();
  return { path, dir, acquisition, recorder, epoch, pauseAt, frames };
}

/** Index of the first element where a and b differ (Object.is; a length difference counts), -1 if none: fast on 4M-element images, where toEqual is not. */
export function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (!Object.is(a[i], b[i])) return i;
  return a.length === b.length ? -1 : n;
}
