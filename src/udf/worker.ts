/**
 * Worker-thread entry for WorkerPool: runs one partition task per call. Datasets stay open
 * between tasks (keyed by descriptor), plugins are loaded once at start-up.
 */
import { Piscina, workerData } from 'piscina';
import { isTesseraError } from '../errors.js';
import { openDataSet, type DataSet, type DataSetDescriptor } from './dataset.js';
import { runPartition } from './run-partition.js';
import { loadUdfPlugins } from './plugins.js';
import type { PartitionTaskInput, TaskFailure } from './worker-pool.js';
import './k2is-dataset.js';

const plugins = ((workerData as { plugins?: string[] } | undefined)?.plugins ?? []);
const ready = (async () => {
  for (const p of plugins) await loadUdfPlugins(p);
})();

const open = new Map<unknown, Promise<DataSet>>();

function datasetKey(d: DataSetDescriptor): unknown {
  // in-memory data: the shared buffer is the identity; files: their description
  return d.type === 'memory' ? (d.data as ArrayBufferView).buffer : JSON.stringify(d);
}

export default async function runTask(input: PartitionTaskInput): Promise<unknown> {
  try {
    await ready;
    const key = datasetKey(input.dataset);
    let ds = open.get(key);
    if (!ds) {
      ds = openDataSet(input.dataset);
      open.set(key, ds);
    }
    const result = await runPartition(await ds, input.udfs, input.context, input.partition, input.tileShape);
    const transfer = new Set<ArrayBuffer>();
    for (const arrays of result.udfs) for (const a of Object.values(arrays)) if (a.buffer instanceof ArrayBuffer) transfer.add(a.buffer);
    return Piscina.move({ [Piscina.transferableSymbol]: [...transfer], [Piscina.valueSymbol]: result } as never);
  } catch (err) {
    const e = err as Error & { code?: string };
    const failure: TaskFailure = { $error: true, name: e?.name ?? 'Error', message: e?.message ?? String(err), stack: e?.stack };
    if (isTesseraError(err) || typeof e?.code === 'string') failure.code = e.code;
    return failure;
  }
}
