/**
 * Worker-thread entry for WorkerPool: runs one partition task per call. Recorded datasets stay
 * open between tasks (keyed by descriptor), plugins are loaded once at start-up.
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

/** Datasets opened from files stay open for the next tasks (a few, least recently used first out). */
const MAX_OPEN = 4;
const open = new Map<string, Promise<DataSet>>();

async function datasetFor(d: DataSetDescriptor): Promise<DataSet> {
  // in-memory data arrives as a SharedArrayBuffer: opening it again costs nothing
  if (d.type === 'memory') return openDataSet(d);
  const key = JSON.stringify(d);
  let ds = open.get(key);
  if (ds) open.delete(key);
  else ds = openDataSet(d);
  open.set(key, ds);
  if (open.size > MAX_OPEN) {
    const [oldest, evicted] = open.entries().next().value!;
    open.delete(oldest);
    void evicted.then((x) => x.close?.()).catch(() => {});
  }
  return ds;
}

export default async function runTask(input: PartitionTaskInput): Promise<unknown> {
  try {
    await ready;
    const ds = await datasetFor(input.dataset);
    const result = await runPartition(ds, input.udfs, input.context, input.partition, input.tileShape);
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
