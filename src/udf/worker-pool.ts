/**
 * Partition tasks on worker threads (piscina). A task is plain data: the dataset's descriptor
 * (the worker opens the dataset itself; in-memory data is a SharedArrayBuffer, so no tile
 * crosses threads), UDF specs (found by name in the worker's registry: the standard library and
 * the plugins the pool was given), the run context and the partition. The partition result comes
 * back with its ArrayBuffers transferred, not copied.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Piscina } from 'piscina';
import { TesseraError, type ErrorCode } from '../errors.js';
import type { DataSetDescriptor } from './dataset.js';
import type { RunContext } from './meta.js';
import type { PartitionSlice, TileShape } from './partition.js';
import type { PartitionResult } from './partition-task.js';
import type { UDFSpec } from './udf.js';

export interface PartitionTaskInput {
  dataset: DataSetDescriptor;
  udfs: UDFSpec[];
  context: RunContext;
  partition: PartitionSlice;
  tileShape: TileShape;
}

/** How a failed task reports back: TesseraErrors keep their code across the thread boundary. */
export interface TaskFailure {
  $error: true;
  code?: string;
  name: string;
  message: string;
  stack?: string;
}

export function isTaskFailure(v: unknown): v is TaskFailure {
  return v !== null && typeof v === 'object' && (v as TaskFailure).$error === true;
}

export function reviveError(f: TaskFailure): Error {
  if (f.code && f.code.startsWith('TESSERA_ERR_')) {
    const err = new TesseraError(f.code as ErrorCode);
    err.message = f.message;
    if (f.stack) err.stack = f.stack;
    return err;
  }
  const err = new Error(f.message);
  err.name = f.name;
  if (f.stack) err.stack = f.stack;
  return err;
}

export interface WorkerPoolOptions {
  /** worker threads (default: all cores) */
  threads?: number;
  /** plugin files or directories each worker loads before its first task */
  plugins?: string[];
}

function workerEntry(): { filename: string; execArgv: string[] } {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    // running from sources (tests): the worker needs tsx to load TypeScript
    const tsx = pathToFileURL(createRequire(here).resolve('tsx')).href;
    return { filename: new URL('./worker.ts', here).href, execArgv: ['--import', tsx] };
  }
  return { filename: new URL('./worker.js', here).href, execArgv: [] };
}

export class WorkerPool {
  readonly threads: number;
  private readonly pool: Piscina;

  constructor(opts: WorkerPoolOptions = {}) {
    this.threads = Math.max(1, opts.threads ?? availableParallelism());
    const { filename, execArgv } = workerEntry();
    this.pool = new Piscina({
      filename,
      execArgv,
      minThreads: this.threads,
      maxThreads: this.threads,
      // no idle timeout: the pool lives as long as its owner
      idleTimeout: Infinity,
      workerData: { plugins: opts.plugins ?? [] },
    });
  }

  async run(input: PartitionTaskInput, signal?: AbortSignal): Promise<PartitionResult> {
    const out = (await this.pool.run(input, signal ? { signal } : {})) as PartitionResult | TaskFailure;
    if (isTaskFailure(out)) throw reviveError(out);
    return out;
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
