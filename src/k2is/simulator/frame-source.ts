/**
 * Where the simulation loop gets the bytes of each stream frame (all selected sectors, one
 * after the other): rendered in this thread, or by a worker thread a few frames ahead into
 * shared memory, so that rendering and sending overlap on two cores.
 *
 * Frames are asked for in order. `get(f)` returns frame f's bytes, valid until `release(f)`.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { SECTOR_FRAME_BYTES } from '../constants.js';
import { TesseraError } from '../../errors.js';
import type { RenderWorkerInit, RenderWorkerReply } from './render-worker.js';
import type { SimulatedScanOptions } from './scene.js';
import type { K2ISStream, StreamOptions } from './stream.js';

export interface FrameSource {
  readonly kind: 'inline' | 'worker';
  get(f: number): Promise<Uint8Array>;
  release(f: number): void;
  close(): Promise<void>;
}

export class InlineFrameSource implements FrameSource {
  readonly kind = 'inline';
  private readonly buf: Uint8Array;

  constructor(
    private readonly stream: K2ISStream,
    private readonly sectors: readonly number[],
  ) {
    this.buf = new Uint8Array(sectors.length * SECTOR_FRAME_BYTES);
  }

  get(f: number): Promise<Uint8Array> {
    this.stream.writeFrame(f, this.buf, this.sectors);
    return Promise.resolve(this.buf);
  }

  release(): void {}

  async close(): Promise<void> {}
}

interface Pending {
  slot: number;
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class WorkerFrameSource implements FrameSource {
  readonly kind = 'worker';
  private readonly views: Uint8Array[];
  private readonly free: number[];
  private readonly pending = new Map<number, Pending>();
  private next = 0;
  private failure: Error | null = null;

  private constructor(
    private readonly worker: Worker,
    slots: SharedArrayBuffer[],
    private readonly limit: number,
  ) {
    this.views = slots.map((s) => new Uint8Array(s));
    this.free = slots.map((_, i) => i);
    worker.on('message', (m: RenderWorkerReply) => {
      if (m.type === 'done') this.pending.get(m.frame)?.resolve();
      else if (m.type === 'error') this.fail(new TesseraError('TESSERA_ERR_OUTPUT', 'render worker', m.message));
    });
    worker.on('error', (err) => this.fail(err));
  }

  /**
   * A worker rendering frames [0, limit) `depth` frames ahead, or null when the compiled
   * worker script is not there (running from TypeScript sources).
   */
  static async start(
    scene: SimulatedScanOptions,
    stream: StreamOptions,
    sectors: readonly number[],
    limit: number,
    depth = 3,
  ): Promise<WorkerFrameSource | null> {
    const url = new URL('./render-worker.js', import.meta.url);
    if (!existsSync(fileURLToPath(url))) return null;
    const slots = Array.from({ length: depth }, () => new SharedArrayBuffer(sectors.length * SECTOR_FRAME_BYTES));
    const worker = new Worker(url);
    const init: RenderWorkerInit = { scene, stream, sectors: [...sectors], slots };
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: RenderWorkerReply) => {
        worker.off('error', reject);
        if (m.type === 'ready') resolve();
        else reject(new TesseraError('TESSERA_ERR_OUTPUT', 'render worker', m.type === 'error' ? m.message : 'unexpected reply'));
      };
      worker.once('message', onMessage);
      worker.once('error', reject);
      worker.postMessage(init);
    }).catch(async (err) => {
      await worker.terminate();
      throw err;
    });
    return new WorkerFrameSource(worker, slots, limit);
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const p of this.pending.values()) p.reject(err);
  }

  private pump(): void {
    while (this.free.length > 0 && this.next < this.limit && !this.failure) {
      const slot = this.free.shift()!;
      const frame = this.next++;
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // observed by get(); avoid unhandled rejections for frames never asked for
      this.pending.set(frame, { slot, promise, resolve, reject });
      this.worker.postMessage({ type: 'render', frame, slot });
    }
  }

  async get(f: number): Promise<Uint8Array> {
    this.pump();
    if (this.failure) throw this.failure;
    const p = this.pending.get(f);
    if (!p) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'frame', `${f} was not requested in order`);
    await p.promise;
    return this.views[p.slot]!;
  }

  release(f: number): void {
    const p = this.pending.get(f);
    if (!p) return;
    this.pending.delete(f);
    this.free.push(p.slot);
    this.pump();
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
