/**
 * The whole-frame UDFs' buffers are in every epoch's live store from the moment the store is
 * added (the tile merger makes a store per epoch; the whole-frame merger publishes on a timer):
 * a page learns an acquisition's buffers from its first snapshot, so buffers declared only at
 * the next publish would be missing from its view for the whole acquisition. Checked with the
 * store's own diff (what a snapshot carries) against the buffers FEMUDF declares.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { SHUFFLE_UDF_ID, WholeFrameMerger } from '../../src/shuffle/whole-frame-merger.js';
import { createUdf } from '../../src/udf/registry.js';
import { makeRunContext } from '../../src/udf/runner.js';

const SCAN: [number, number] = [2, 4];
const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
const mergers: WholeFrameMerger[] = [];
afterEach(() => {
  for (const m of mergers.splice(0)) m.close();
});

function keysOf(registry: LiveStoreRegistry, epoch: number): string[] {
  const store = registry.get('acq-l', epoch)!;
  // the store's own buffers (_damage) are there anyway
  return (store.diffSince(0).layout ?? []).map((b) => b.key).filter((k) => !k.startsWith('_damage/')).sort();
}

describe('WholeFrameMerger buffers in every epoch store', () => {
  it('declared at once in the store of the current epoch and in every store added later, never after close', () => {
    const registry = new LiveStoreRegistry({ keepEpochs: 4 });
    registry.create({ acquisition: 'acq-l', scanShape: SCAN, epoch: 0 });
    const udf = createUdf({ name: fem.name, params: fem.params });
    const context = makeRunContext({ navShape: SCAN, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: 8, udfs: [udf], roi: null });
    // a long publish period: nothing here may depend on the timer
    const merger = new WholeFrameMerger({ acquisition: 'acq-l', udfs: [fem], context, registry, scanShape: SCAN, keepEpochs: 4, publishMs: 60_000 });
    mergers.push(merger);
    const femKeys = Object.keys(udf.getResultBuffers()).map((n) => `fem/${n}`);
    const want = [...femKeys, `${SHUFFLE_UDF_ID}/counters`, `${SHUFFLE_UDF_ID}/sectors`, `${SHUFFLE_UDF_ID}/valid`].sort();
    expect(femKeys.length).toBeGreaterThan(0);
    expect(keysOf(registry, 0)).toEqual(want);
    // the next epoch's store, as the tile merger adds it: there before anyone is told of the store
    let seenAtNotify: string[] = [];
    const off = registry.onChange(() => {
      if (registry.get('acq-l', 1) && seenAtNotify.length === 0) seenAtNotify = keysOf(registry, 1);
    });
    registry.create({ acquisition: 'acq-l', scanShape: SCAN, epoch: 1 });
    off();
    expect(seenAtNotify).toEqual(want);
    // another acquisition's stores are not this merger's
    registry.create({ acquisition: 'acq-other', scanShape: SCAN, epoch: 0 });
    expect((registry.get('acq-other', 0)!.diffSince(0).layout ?? []).filter((b) => !b.key.startsWith('_damage/'))).toEqual([]);
    merger.close();
    mergers.length = 0;
    registry.create({ acquisition: 'acq-l', scanShape: SCAN, epoch: 2 });
    expect(keysOf(registry, 2)).toEqual([]);
  });
});
