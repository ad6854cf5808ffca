/**
 * `FrameWorker`: the `tessera worker` process. It asks the shuffle for frames by credit, runs
 * the acquisition's whole-frame UDFs on them, and pushes their results to the merger's results
 * socket, where they are merged beside the receivers' partial results.
 *
 * One PartitionTask per (epoch, chunk) of the acquisition, fed the frames this worker gets of
 * that chunk (other frames go to other workers, or are not selected), so task data (templates,
 * their FFTs, masks) is computed once per task, not per frame. A task is finished after
 * `flushMs` (latency) and its results sent as one `frames` message: the nav rows of the frames
 * it processed, in position order, and its sig and single buffers.
 */
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../k2is/constants.js';
import type { Logger } from '../log.js';
import { decodeMergerMessage, MAX_LIVE_MESSAGE_BYTES, toWire, type AcquireMessage, type WireArray } from '../protocol/live.js';
import type { BufferDeclaration } from '../udf/buffers.js';
import { DatasetResults } from '../udf/dataset-results.js';
import type { RunContext } from '../udf/meta.js';
import { wholeFrame } from '../udf/partition.js';
import { PartitionTask } from '../udf/partition-task.js';
import { createUdf } from '../udf/registry.js';
import { NavSelection } from '../udf/roi.js';
import { makeRunContext } from '../udf/runner.js';
import type { UDFSpec } from '../udf/udf.js';
import { asFrameHeader, decodeShuffle, encodeShuffle, FRAMES_TAG, SHUFFLE_PROTOCOL_VERSION, type FrameHeader, type FrameResultsMessage } from './protocol.js';
import { SerialSender } from './serial-sender.js';

export interface FrameWorkerOptions {
  /** the shuffle's frames endpoint (config shuffle.frames) */
  frames: string;
  /** the merger's results endpoint (config merger.results) */
  results: string;
  /** frames asked for ahead (default 2: one in work, one on the way) */
  credits?: number;
  flushMs?: number;
  /** slow every frame down by this many ms (tests of back-pressure) */
  delayMs?: number;
  log?: Logger;
}

interface ParamsFrom {
  /** acquisition-relative frame from which these params apply (chunks starting there or later) */
  fromFrame: number;
  version: number;
  params: Record<string, unknown>;
}

interface WorkerAcquisition {
  message: AcquireMessage;
  /** per UDF: its parameters over the acquisition, ordered by fromFrame */
  params: ParamsFrom[][];
  context: RunContext;
  selection: NavSelection;
  decls: Array<Record<string, BufferDeclaration>>;
  positions: number;
}

interface OpenTask {
  key: string;
  epoch: number;
  navStart: number;
  task: PartitionTask;
  versions: number[];
  positions: number[];
  sectors: number[];
  opened: number;
}

export interface WorkerCounters {
  frames: number;
  framesDropped: number;
  messagesSent: number;
  failures: number;
  /** CPU ms spent in processFrame (UDF work) */
  busyMs: number;
}

/** Each UDF's parameters in force for a chunk whose first frame (acquisition-relative) is `frame`. */
function paramsAt(a: WorkerAcquisition, frame: number): ParamsFrom[] {
  return a.params.map((list) => {
    let p = list[0]!;
    for (const q of list) if (q.fromFrame <= frame) p = q;
    return p;
  });
}

export class FrameWorker {
  readonly id: string;
  readonly counters: WorkerCounters = { frames: 0, framesDropped: 0, messagesSent: 0, failures: 0, busyMs: 0 };
  private readonly dealer: zmq.Dealer;
  private readonly push: zmq.Push;
  private readonly out: SerialSender;
  private acq: WorkerAcquisition | null = null;
  private readonly tasks = new Map<string, OpenTask>();
  private readonly timers: NodeJS.Timeout[] = [];
  private loop: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly o: FrameWorkerOptions) {
    this.id = `worker-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    this.dealer = new zmq.Dealer({ routingId: this.id, linger: 0, maxMessageSize: MAX_LIVE_MESSAGE_BYTES, reconnectInterval: 100, reconnectMaxInterval: 1000, receiveHighWaterMark: 16 });
    this.push = new zmq.Push({ linger: 2000, sendHighWaterMark: 64, reconnectInterval: 100 });
    this.out = new SerialSender(this.push, 256);
  }

  static start(o: FrameWorkerOptions): FrameWorker {
    const w = new FrameWorker(o);
    w.dealer.connect(o.frames);
    w.push.connect(o.results);
    w.loop = w.receiveLoop();
    w.credit(o.credits ?? 2);
    w.timers.push(setInterval(() => w.credit(0), 1000));
    w.timers.push(setInterval(() => w.flushDue(), 50));
    return w;
  }

  private credit(n: number): void {
    if (this.closed) return;
    // the window lets a shuffle that does not know this worker (restarted) open it again: the credit given to the old one died with it
    void this.dealer.send(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'credit', pid: process.pid, n, window: this.o.credits ?? 2 })).catch(() => {});
  }

  private async receiveLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.dealer.receive();
      } catch {
        return;
      }
      try {
        if (frames.length === 2) this.onFrame(asFrameHeader(decodeShuffle(frames[0]!)), frames[1]!);
        else this.onControl(frames[0]!);
      } catch (err) {
        this.counters.failures++;
        this.o.log?.warn({ err: (err as Error).message, code: (err as { code?: string }).code }, 'worker: message dropped');
        if (frames.length === 2) this.credit(1);
      }
      if (this.o.delayMs) await new Promise((r) => setTimeout(r, this.o.delayMs));
    }
  }

  private onControl(raw: Buffer): void {
    // the shuffle's ping (a send to a gone worker fails there): nothing to do
    if (decodeShuffle(raw).type === 'ping') return;
    const m = decodeMergerMessage(raw);
    switch (m.type) {
      case 'acquire': {
        if (this.acq?.message.acquisition === m.acquisition) return;
        this.tasks.clear();
        const specs: UDFSpec[] = m.udfs.map((u) => ({ name: u.name, params: u.params }));
        const udfs = specs.map((s) => createUdf(s));
        const context = makeRunContext({ navShape: m.scanShape, sigShape: [FRAME_HEIGHT, FRAME_WIDTH], datasetDtype: 'uint16', sectors: 8, udfs, roi: m.roi });
        const positions = m.scanShape[0] * m.scanShape[1];
        this.acq = { message: m, params: specs.map((s) => [{ fromFrame: 0, version: 0, params: s.params }]), context, selection: new NavSelection(context.roi, positions), decls: new DatasetResults(specs, context).declarations, positions };
        this.o.log?.info({ acquisition: m.acquisition, udfs: specs.map((s) => s.name) }, 'worker: acquisition');
        return;
      }
      case 'params': {
        const a = this.acq;
        if (!a || a.message.acquisition !== m.acquisition) return;
        const i = a.message.udfs.findIndex((u) => u.id === m.udfId);
        if (i < 0) return;
        // as in the receivers: from the first chunk that starts at or after fromFrame
        const list = a.params[i]!;
        // a restarted shuffle forwards the changes again: once is enough
        if (list.some((q) => q.version > 0 && q.fromFrame === m.fromFrame && JSON.stringify(q.params) === JSON.stringify(m.params))) return;
        list.push({ fromFrame: m.fromFrame, version: list.length, params: m.params });
        list.sort((x, y) => x.fromFrame - y.fromFrame || x.version - y.version);
        return;
      }
      case 'stop':
        // frames before the stop may still be on the way: the flush timer sends them
        return;
      case 'abort':
        if (this.acq?.message.acquisition === m.acquisition) {
          this.tasks.clear();
          this.acq = null;
        }
    }
  }

  private onFrame(h: FrameHeader, pixels: Buffer): void {
    const a = this.acq;
    try {
      if (!a || a.message.acquisition !== h.acquisition || h.position >= a.positions || !a.selection.isSelected(h.position)) {
        this.counters.framesDropped++;
        return;
      }
      const n = FRAME_HEIGHT * FRAME_WIDTH;
      if (pixels.byteLength !== n * 2) throw new Error(`frame of ${pixels.byteLength} bytes`);
      const data = pixels.byteOffset % 2 === 0 ? new Uint16Array(pixels.buffer, pixels.byteOffset, n) : new Uint16Array(Uint8Array.from(pixels).buffer);
      const chunkSize = a.message.chunkSize;
      const chunk = Math.floor(h.position / chunkSize);
      const key = `${h.epoch}:${chunk}`;
      let t = this.tasks.get(key);
      if (!t) {
        while (this.tasks.size >= 4) this.flush(this.tasks.values().next().value as OpenTask);
        const navStart = chunk * chunkSize;
        const navEnd = Math.min(navStart + chunkSize, a.positions);
        const at = paramsAt(a, h.epoch * a.positions + navStart);
        const specs = a.message.udfs.map((u, i) => ({ name: u.name, params: at[i]!.params }));
        t = { key, epoch: h.epoch, navStart, task: new PartitionTask({ udfs: specs, context: a.context, partition: { navStart, navEnd, sig: wholeFrame(a.context.sigShape) } }), versions: at.map((p) => p.version), positions: [], sectors: [], opened: Date.now() };
        this.tasks.set(key, t);
      }
      if (t.positions.includes(h.position)) throw new Error(`position ${h.position} of epoch ${h.epoch} twice`);
      const t0 = performance.now();
      t.task.processTile({ data, navStart: h.position, depth: 1, sigOrigin: [0, 0], sigShape: [FRAME_HEIGHT, FRAME_WIDTH] });
      this.counters.busyMs += performance.now() - t0;
      t.positions.push(h.position);
      t.sectors.push(h.damage.filter((d) => d === 0).length);
      this.counters.frames++;
    } finally {
      this.credit(1);
    }
  }

  private flushDue(): void {
    const t = Date.now();
    for (const task of [...this.tasks.values()]) if (t - task.opened >= (this.o.flushMs ?? 250)) this.flush(task);
  }

  private flushAll(): void {
    for (const task of [...this.tasks.values()]) this.flush(task);
  }

  private flush(t: OpenTask): void {
    this.tasks.delete(t.key);
    const a = this.acq;
    if (!a || t.positions.length === 0) return;
    let result;
    try {
      result = t.task.finish();
    } catch (err) {
      this.counters.failures++;
      this.o.log?.error({ err }, 'worker: finishing a task failed');
      return;
    }
    const order = t.positions.map((p, i) => i).sort((x, y) => t.positions[x]! - t.positions[y]!);
    const positions = Int32Array.from(order.map((i) => t.positions[i]!));
    const sectors = Uint8Array.from(order.map((i) => t.sectors[i]!));
    const base = a.selection.countBefore(t.navStart);
    const rows = Array.from(positions, (p) => a.selection.countBefore(p) - base);
    const udfs = result.udfs.map((buffers, i) => {
      const out: Record<string, WireArray> = {};
      for (const [name, arr] of Object.entries(buffers)) {
        const d = a.decls[i]![name];
        if (d?.kind === 'nav' && result.frames > 0) {
          const e = arr.length / result.frames;
          const compact = new (arr.constructor as new (n: number) => typeof arr)(rows.length * e);
          rows.forEach((r, k) => compact.set(arr.subarray(r * e, (r + 1) * e) as never, k * e));
          out[name] = toWire(compact);
        } else out[name] = toWire(arr);
      }
      return { id: a.message.udfs[i]!.id, paramsVersion: t.versions[i]!, buffers: out };
    });
    const m: FrameResultsMessage = { version: SHUFFLE_PROTOCOL_VERSION, type: 'frames', acquisition: a.message.acquisition, worker: this.id, epoch: t.epoch, positions, sectors, udfs, sentAt: Date.now() };
    this.out.send([FRAMES_TAG, encodeShuffle(m)], (ok) => (ok ? this.counters.messagesSent++ : this.counters.failures++));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flushAll();
    await this.out.drain(2000);
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.out.close();
    this.dealer.close();
    this.push.close();
    await this.loop.catch(() => {});
  }
}
