/**
 * One partition, read from a dataset: the same PartitionTask a receiver feeds with its own
 * tiles, fed here from DataSet.tiles(). Used in-process and on worker threads.
 */
import type { DataSet } from './dataset.js';
import type { RunContext } from './meta.js';
import type { PartitionSlice, TileShape } from './partition.js';
import { PartitionTask, type PartitionResult } from './partition-task.js';
import type { UDF, UDFSpec } from './udf.js';

export async function runPartition(
  dataset: DataSet,
  udfs: ReadonlyArray<UDF | UDFSpec>,
  context: RunContext,
  partition: PartitionSlice,
  tileShape: TileShape,
  signal?: AbortSignal,
): Promise<PartitionResult> {
  const task = new PartitionTask({ udfs, context, partition, tiling: tileShape });
  const tiles = dataset.tiles({ navStart: partition.navStart, navEnd: partition.navEnd, sig: partition.sig, tileShape, roi: context.roi });
  if (Symbol.asyncIterator in tiles) {
    for await (const tile of tiles) {
      signal?.throwIfAborted();
      task.processTile(tile);
    }
  } else {
    for (const tile of tiles) {
      signal?.throwIfAborted();
      task.processTile(tile);
    }
  }
  return task.finish();
}
