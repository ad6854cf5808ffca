/** map(): apply a per-frame function to a dataset (LiberTEM's Context.map), through AutoUDF. */
import { AutoUDF, type FrameFunction } from './auto.js';
import type { DataSet } from './dataset.js';
import type { NDArray } from './ndarray.js';
import { runUdf, type RunOptions } from './runner.js';

/** Apply `fn` to every frame; returns the nav-shaped result (LiberTEM's ctx.map). */
export async function map(dataset: DataSet, fn: FrameFunction, opts: RunOptions = {}): Promise<NDArray> {
  const res = await runUdf(dataset, new AutoUDF({ fn }), opts);
  return res.result!.data;
}
