/**
 * ChunkMerger with receivers epochs ahead of it. Under back-pressure the receivers drop whole
 * epochs of partials and run on; the merger must then jump to the epoch they are at (once two
 * sectors agree on it), not refuse every later partial as "far ahead" and stall the
 * acquisition for good (found by the compressed soak: a continuous acquisition stopped merging
 * at epoch 39). One sender alone claiming a far epoch must not move it.
 */
import { describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import { ChunkMerger } from '../../src/merger/chunk-merger.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { computePartial, contextOf, SIG } from './live-helpers.js';
import { firstDifference } from './recorder.helpers.js';

const SCAN: [number, number] = [2, 4];
const N = 8;
const UDFS = [
  { id: 'sum', name: 'SumUDF', params: {} },
  { id: 'sumsig', name: 'SumSigUDF', params: {} },
];
const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'acq-ahead-1', scanShape: SCAN, roi: null, udfs: UDFS, chunkSize: 4, mode: 'continuous', start: null };
const context = contextOf(acquire);
const FRAME = FRAME_HEIGHT * FRAME_WIDTH;

/** Frames of epoch e: another scene per epoch, so that a mix-up shows. */
function epochFrames(e: number): Uint16Array {
  const sim = new SimulatedScan({ scanShape: SCAN, seed: 100 + e });
  const data = new Uint16Array(N * FRAME);
  for (let i = 0; i < N; i++) sim.frame(i, data.subarray(i * FRAME, (i + 1) * FRAME));
  return data;
}

function rig() {
  const merger = new ChunkMerger({ acquisition: acquire.acquisition, udfs: UDFS, context, chunkSize: 4, mode: 'continuous', sectors: 8, chunkTimeoutMs: 60_000, keepEpochs: 2, isMissing: () => false, onChunk: () => {} });
  const frames = new Map<number, Uint16Array>();
  const partial = (sector: number, epoch: number, chunk: number) => {
    if (!frames.has(epoch)) frames.set(epoch, epochFrames(epoch));
    const f = frames.get(epoch)!;
    return computePartial(acquire, sector, epoch, chunk, (i) => f.subarray(i * FRAME, (i + 1) * FRAME), { context });
  };
  const epoch = (e: number) => merger.epochList.find((x) => x.epoch === e);
  return { merger, frames, partial, epoch };
}

async function offline(frames: Uint16Array) {
  return runUdf(new MemoryDataSet({ data: frames, navShape: SCAN, sigShape: SIG }), UDFS.map((u) => createUdf({ name: u.name, params: u.params })));
}

describe('ChunkMerger: receivers epochs ahead', () => {
  it('jumps to the epoch two sectors agree on, merges the held partial too; the jumped-to epoch equals offline over its frames', async () => {
    const t = rig();
    try {
      for (const e of [0, 1]) for (let c = 0; c < 2; c++) for (let s = 0; s < 8; s++) t.merger.add(t.partial(s, e, c));
      expect(t.epoch(1)!.complete).toBe(true);
      // epochs 2..4 lost on the way; the receivers are at epoch 5
      t.merger.add(t.partial(3, 5, 0));
      expect(t.epoch(5)).toBeUndefined(); // held: one sender alone does not move the merger
      t.merger.add(t.partial(6, 5, 0));
      expect(t.epoch(5)).toBeDefined();
      for (let s = 0; s < 8; s++) if (s !== 3 && s !== 6) t.merger.add(t.partial(s, 5, 0));
      for (let s = 0; s < 8; s++) t.merger.add(t.partial(s, 5, 1));
      const e5 = t.epoch(5)!;
      expect(e5.complete).toBe(true);
      expect(e5.framesMerged).toBe(N);
      const ref = await offline(t.frames.get(5)!);
      const got = e5.results.results();
      expect(firstDifference(got[0]!.intensity!.data, ref[0]!.intensity!.data)).toBe(-1);
      expect(firstDifference(got[1]!.intensity!.data, ref[1]!.intensity!.data)).toBe(-1);
      expect([2, 3, 4].map((e) => t.epoch(e))).toEqual([undefined, undefined, undefined]);
      // and it goes on from there
      for (let c = 0; c < 2; c++) for (let s = 0; s < 8; s++) t.merger.add(t.partial(s, 6, c));
      expect(t.epoch(6)!.complete).toBe(true);
      expect(t.merger.counters.dropped).toEqual({});
    } finally {
      t.merger.close();
    }
  });

  it('one sender alone claiming far epochs moves nothing: its partials are dropped and counted', () => {
    const t = rig();
    try {
      for (let c = 0; c < 2; c++) for (let s = 0; s < 8; s++) t.merger.add(t.partial(s, 0, c));
      const bogus = t.partial(2, 0, 0);
      for (const e of [1000, 1000, 2000, 5]) t.merger.add({ ...bogus, epoch: e });
      // sector 2 again for the epoch it holds: counted; a claim on another far epoch replaces the held one
      expect(t.merger.epochList.map((e) => e.epoch)).toEqual([0]);
      expect(t.merger.counters.dropped.epoch).toBe(3);
      // epoch 1, within reach, merges as usual
      for (let c = 0; c < 2; c++) for (let s = 0; s < 8; s++) t.merger.add(t.partial(s, 1, c));
      expect(t.epoch(1)!.complete).toBe(true);
    } finally {
      t.merger.close();
    }
  });
});
