/**
 * ChunkMerger's decoding of sig partial buffers: aligned wire bytes are used as views, unaligned
 * ones are copied into arrays from a bounded spare pool that is reused chunk after chunk. The
 * merged sum image must equal a plain per-pixel sum of what was sent, chunk after chunk (a pool
 * array handed out again while still in use would show as wrong sums), and the wire bytes of
 * the partials must be left as they were.
 */
import { describe, expect, it } from 'vitest';
import { ChunkMerger, type MergedChunk } from '../../src/merger/chunk-merger.js';
import { decodePartialMessage, encodeLive, LIVE_PROTOCOL_VERSION, toWire, type PartialMessage } from '../../src/protocol/live.js';
import { PartitionTask } from '../../src/udf/partition-task.js';
import { createUdf } from '../../src/udf/registry.js';
import { makeRunContext } from '../../src/udf/runner.js';

const [H, W, SECTORS] = [4, 16, 4];
const SW = W / SECTORS;

/** The wire bytes again, starting `shift` bytes into a fresh buffer (unaligned for shift 1..7). */
function shifted(data: Uint8Array, shift: number): Uint8Array {
  const buf = new Uint8Array(data.byteLength + shift);
  buf.set(data, shift);
  return buf.subarray(shift);
}

describe('ChunkMerger sig partial buffers', () => {
  for (const dtype of ['float64', 'float32'] as const) {
    it(`merge ${dtype} sums exactly, aligned or not, with pooled copies reused across chunks`, () => {
      const scan: [number, number] = [6, 2];
      const udfs = [
        { id: 'sum', name: 'SumUDF', params: { dtype } },
        { id: 'sumsig', name: 'SumSigUDF', params: {} },
      ];
      const context = makeRunContext({ navShape: scan, sigShape: [H, W], datasetDtype: 'uint16', sectors: SECTORS, udfs: udfs.map((u) => createUdf(u)), roi: null });
      const chunks: MergedChunk[] = [];
      const merger = new ChunkMerger({ acquisition: 'a', udfs, context, chunkSize: 2, mode: 'single', sectors: SECTORS, chunkTimeoutMs: 60_000, keepEpochs: 1, isMissing: () => false, onChunk: (c) => chunks.push(c) });
      const ref = new Float64Array(H * W);
      const frameSums = new Float64Array(scan[0] * scan[1]);
      const sent: Array<[Uint8Array, Uint8Array]> = [];
      try {
        for (let c = 0; c < scan[0]; c++) {
          // sectors in a scrambled order, a different one unaligned each chunk
          for (const s of [2, 0, 3, 1]) {
            const sig = { origin: [0, s * SW] as [number, number], shape: [H, SW] as [number, number] };
            const task = new PartitionTask({ udfs, context, partition: { navStart: c * 2, navEnd: c * 2 + 2, sig } });
            for (let f = c * 2; f < c * 2 + 2; f++) {
              const tile = new Uint16Array(H * SW);
              for (let i = 0; i < tile.length; i++) {
                tile[i] = (f * 131 + s * 17 + i * 7) % 1021;
                const y = Math.floor(i / SW);
                ref[y * W + s * SW + (i % SW)] += tile[i]!;
                frameSums[f] += tile[i]!;
              }
              task.processTile({ data: tile, navStart: f, depth: 1, sigOrigin: sig.origin, sigShape: sig.shape });
            }
            const r = task.finish();
            const m: PartialMessage = {
              version: LIVE_PROTOCOL_VERSION, type: 'partial', acquisition: 'a', sector: s, epoch: 0, chunk: c, navStart: c * 2, navEnd: c * 2 + 2, frames: 2, sig,
              udfs: r.udfs.map((b, i) => ({ id: udfs[i]!.id, paramsVersion: 0, buffers: Object.fromEntries(Object.entries(b).map(([k, v]) => [k, toWire(v)])) })),
              damage: new Uint32Array(2), sentAt: 0,
            };
            const p = decodePartialMessage(encodeLive(m));
            const w = p.udfs[0]!.buffers.intensity!;
            const shift = (c + s) % 4 === 0 ? 0 : 1 + ((c + s) % 3);
            w.data = shift === 0 ? shifted(w.data, 0) : shifted(w.data, shift);
            sent.push([w.data, w.data.slice()]);
            merger.add(p);
          }
          expect(chunks).toHaveLength(c + 1);
        }
        const results = chunks[0]!.epoch.results.results();
        const sum = results[0]!.intensity!.data;
        expect(Array.from(sum)).toEqual(Array.from(ref));
        expect(Array.from(results[1]!.intensity!.data)).toEqual(Array.from(frameSums));
        for (const [live, copy] of sent) expect(live).toEqual(copy);
        expect(merger.counters.dropped).toEqual({});
      } finally {
        merger.close();
      }
    });
  }
});
