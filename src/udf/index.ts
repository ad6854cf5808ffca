/**
 * Tessera's UDF engine: the public API. Plugins import from here as 'tessera/udf'
 * (see docs/udf.md, "Plugins").
 */
export { UDF, isUdfClass, type AuxData, type MaskedResult, type ParamsView, type ResultValue, type UDFClass, type UDFMeta, type UDFMethod, type UDFSpec, type UnitSlice } from './udf.js';
export type { BufferDeclaration, BufferKind, BufferOptions, BufferUse, CombineFn, CombineRule } from './buffers.js';
export { type DType, type TypedArray, DTYPES } from './dtype.js';
export { type NDArray, ndarray, shapeSize, unravel } from './ndarray.js';
export { type PartitionSlice, type SigSlice, type Tile, type TileShape, columnSlices, wholeFrame } from './partition.js';
export { PartitionTask, type PartitionResult, type PartitionTaskOptions } from './partition-task.js';
export { PartitionCombiner } from './combine.js';
export { DatasetResults, type ResultBuffer, type UDFResults } from './dataset-results.js';
export type { RunContext } from './meta.js';
export { type DataSet, type DataSetDescriptor, MemoryDataSet, type TileRequest, openDataSet, registerDataSetType } from './dataset.js';
export { K2ISDataSet, type K2ISDataSetOptions } from './k2is-dataset.js';
export { type CorrectionSet, type CorrectionsInput, normaliseCorrections } from './corrections.js';
export { type MaskSpec } from './masks.js';
export { runUdf, runUdfIter, planRun, makeRunContext, type RunOptions, type RunPlan, type RunProgress, type RunStep } from './runner.js';
export { WorkerPool, type WorkerPoolOptions } from './worker-pool.js';
export { createUdf, getUdfClass, registerUdf, registeredUdfNames } from './registry.js';
export { loadConfiguredPlugins, loadUdfPlugins, loadedPluginSources } from './plugins.js';
export * from './lib/index.js';
export { AutoUDF, type AutoParams, type FrameFunction } from './auto.js';
export { map } from './map.js';
export { fft, ifft, rfft2, irfft2, FFTPlan } from './fft.js';
export { TileKernels, tileKernelsAvailable, type KernelAccumulator } from './kernels.js';
