/**
 * The shuffle and its frame workers killed (SIGKILL) and restarted mid-acquisition, end to end
 * with real processes: `tessera simulate --continuous` -> 8 receivers -> merger, with
 * `tessera shuffle` and `tessera worker` beside them. A continuous scan runs a tile UDF in the
 * receivers (SumSigUDF) and a whole-frame UDF behind the shuffle (FEMUDF).
 *
 * Reference: the simulator's ground truth (every epoch of a continuous scan shows the same
 * frames), run offline with runUdf in one process. Asserted per epoch, over every epoch of the
 * acquisition (the merger keeps them all here): the tile UDF is bit-exact at every position
 * (blocks the damage map says were lost zeroed in the truth); the whole-frame UDF equals
 * runUdf per frame at every position `_shuffle/valid` marks and that arrived whole; results
 * merged before a kill are unchanged afterwards; the gap is visible (`_shuffle/valid` = 0 in
 * the epochs that ran while no worker or no shuffle was there, and `/api/status` says
 * `shuffle.state` / `shuffle.workers`); the restarted process rejoins by itself.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { BLOCK_COLS, BLOCK_ROWS, FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { blockOrigin } from '../../src/k2is/geometry.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest, MergerStatus } from '../../src/merger/acquisition-schema.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { freeTcpPort, liveConfig, SIG } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';
import { stopLeftover } from './shared-pipeline.js';

const FRAME = FRAME_HEIGHT * FRAME_WIDTH;
const SCAN: [number, number] = [4, 4];
const N = SCAN[0] * SCAN[1];
const SEED = 17;
/**
 * 8 frames/s: at 12 (tried for speed) three pipelines on this 2-core machine starved the
 * restarted worker, the shuffle skipped frames, and no epoch came wholly through it in 30 s
 */
const FPS = '8';
/** frames the shuffle holds for a worker at most (its default): the rest of a gap is skipped and counted */
const MAX_QUEUED = 4;
const FEM = { center: [930, 1024], radIn: 100, radOut: 400 };
const UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sumsig', name: 'SumSigUDF' },
  { id: 'fem', name: 'FEMUDF', params: FEM },
];

type ShuffleState = NonNullable<MergerStatus['shuffle']>;

/** One epoch's buffers, copied out of the client's mirror. */
interface EpochCopy {
  epoch: number;
  framesMerged: number;
  buffers: Map<string, ArrayLike<number>>;
}

class Rig {
  roles: RoleProcess[] = [];
  clients: TesseraClient[] = [];
  config = '';
  merger!: RoleProcess;
  shuffle!: RoleProcess;
  workers: RoleProcess[] = [];
  receivers: RoleProcess[] = [];
  client!: TesseraClient;
  /** a second client for fetching whole epochs */
  reader!: TesseraClient;
  private shuffles = 0;
  private workerCount = 0;

  spawn(name: string, args: string[]): RoleProcess {
    const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
    this.roles.push(r);
    return r;
  }

  spawnShuffle(): RoleProcess {
    this.shuffle = this.spawn(`shuffle-${this.shuffles++}`, ['shuffle', '-c', this.config, '--fixed-rate', '--max-queued', String(MAX_QUEUED)]);
    return this.shuffle;
  }

  spawnWorker(): RoleProcess {
    const w = this.spawn(`worker-${this.workerCount++}`, ['worker', '-c', this.config]);
    this.workers.push(w);
    return w;
  }

  async launch(workers: number): Promise<void> {
    const base = await freeUdpPorts(8);
    const { path, dir } = await liveConfig({
      detector: { udp: { host: '127.0.0.1', basePort: base } },
      receiver: { statsIntervalMs: 1000 },
      // every epoch stays in the registry: the test reads them all at the end
      merger: { chunkTimeoutMs: 5000, keepEpochs: 200 },
      shuffle: { slices: `tcp://127.0.0.1:${await freeTcpPort()}`, frames: `tcp://127.0.0.1:${await freeTcpPort()}` },
    });
    this.config = path;
    onTestFailed(() => {
      for (const r of this.roles) writeFileSync(join(dir, `${r.name}-${r.child.pid}.log`), r.rawStderr.join('\n'));
      console.error(`logs of the failed test: ${dir}`);
    });
    this.merger = this.spawn('merger', ['merger', '-c', path]);
    const url = String((await this.merger.waitForMsg('merger listening', 30_000)).url);
    this.spawnShuffle();
    await this.shuffle.waitForMsg('shuffle listening', 30_000);
    for (let w = 0; w < workers; w++) this.spawnWorker();
    this.receivers = Array.from({ length: 8 }, (_, s) => this.spawn(`receiver-${s}`, ['receiver', '--sector', String(s), '-c', path]));
    this.client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    this.reader = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    this.clients.push(this.client, this.reader);
    await poll(async () => (await this.status()).sectors.every((s) => s.state === 'alive'), 60_000, 'eight receivers alive');
    await poll(async () => (await this.shuffleState())?.workers === workers, 30_000, `the shuffle with ${workers} workers in /api/status`);
  }

  status(): Promise<MergerStatus> {
    return this.client.api.status();
  }

  async shuffleState(): Promise<ShuffleState | null> {
    return (await this.status()).shuffle ?? null;
  }

  private camera: RoleProcess | null = null;

  /** Start the camera (continuous) unless it already runs, and a continuous acquisition joining it. */
  async start(): Promise<string> {
    this.camera ??= this.spawn('simulator', ['simulate', '-c', this.config, '--scan', `${SCAN[0]}x${SCAN[1]}`, '--frames-before', '8', '--fps', FPS, '--seed', String(SEED), '--continuous']);
    // the receivers follow the detector's continuous scan; the acquisition joins it at the next
    // repetition (defined within a fraction of a second of the detector acquisition's start, the
    // receivers were seen to wait for another one: as in live-receiver-kill, define well after)
    await poll(() => this.receivers.every((r) => r.lines.some((l) => l.msg === 'acquisition started')), 30_000, 'the detector acquisition at every receiver');
    await new Promise((r) => setTimeout(r, 1500));
    const { id } = await this.client.api.define({ scanShape: SCAN, udfs: UDFS, mode: 'continuous', chunkSize: 4 });
    expect((await this.client.api.start(id)).state).toBe('running');
    await this.reader.connect();
    return id;
  }

  async newestEpoch(id: string): Promise<number> {
    const a = (await this.status()).acquisition;
    expect(a?.id).toBe(id);
    return a!.epoch;
  }

  /** A copy of epoch `epoch` of the acquisition, from a fresh snapshot. */
  async epoch(id: string, epoch: number): Promise<EpochCopy> {
    const r = this.reader;
    const got = new Promise<EpochCopy>((resolve, reject) => {
      const timer = setTimeout(() => (off(), reject(new Error(`no snapshot of epoch ${epoch}`))), 15_000);
      const off = r.on('update', (u) => {
        if (!u.snapshot || u.acquisition !== id || u.epoch !== epoch) return;
        clearTimeout(timer);
        off();
        const buffers = new Map<string, ArrayLike<number>>();
        for (const [k, b] of r.mirror.buffers) buffers.set(k, (b.data as unknown as { slice(): ArrayLike<number> }).slice());
        resolve({ epoch, framesMerged: r.mirror.progress?.framesMerged ?? 0, buffers });
      });
    });
    r.subscribe({ acquisition: id, epoch });
    return got;
  }

  /** The first epoch >= `from` with at least `min` positions through a worker (polls). */
  async epochWithWholeFrames(id: string, from: number, min: number, timeoutMs: number, what: string): Promise<EpochCopy> {
    let found: EpochCopy | null = null;
    await poll(async () => {
      const newest = await this.newestEpoch(id);
      for (let e = from; e <= newest; e++) {
        const c = await this.epoch(id, e);
        if (validCount(c) >= min) return (found = c), true;
      }
      return false;
    }, timeoutMs, what, 1000);
    return found!;
  }

  async stopAll(): Promise<void> {
    for (const c of this.clients) await c.close().catch(() => {});
    await Promise.all(this.roles.map((r) => r.stop(5000).catch(() => r.kill())));
  }
}

async function poll(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function validCount(c: EpochCopy): number {
  const v = c.buffers.get('_shuffle/valid');
  let n = 0;
  if (v) for (let i = 0; i < v.length; i++) n += v[i]!;
  return n;
}

/** The offline reference: runUdf over the simulator's truth (no loss), and the truth frames. */
async function reference(): Promise<{ data: Uint16Array; sumsig: ArrayLike<number>; fem: ArrayLike<number> }> {
  const sim = new SimulatedScan({ scanShape: SCAN, seed: SEED });
  const data = new Uint16Array(N * FRAME);
  for (let i = 0; i < N; i++) sim.frame(i, data.subarray(i * FRAME, (i + 1) * FRAME));
  const [s, f] = await runUdf(new MemoryDataSet({ data, navShape: SCAN, sigShape: SIG }), UDFS.map((u) => createUdf({ name: u.name, params: u.params ?? {} })));
  return { data, sumsig: s!.intensity!.data as unknown as ArrayLike<number>, fem: f!.intensity!.data as unknown as ArrayLike<number> };
}

/** reference() is the same for both cases: computed once */
let referenceOnce: ReturnType<typeof reference> | null = null;

/** SumSigUDF offline over the truth with the blocks the merger's damage map says were lost zeroed. */
async function sumsigWithLosses(truth: Uint16Array, c: EpochCopy): Promise<ArrayLike<number>> {
  const bits = c.buffers.get('_damage/sectorBlocks')!;
  const data = truth.slice();
  for (let i = 0; i < N; i++) {
    for (let s = 0; s < 8; s++) {
      const lost = bits[i * 8 + s]! >>> 0;
      for (let b = 0; b < 32; b++) {
        if (!(lost & (1 << b))) continue;
        const o = blockOrigin(b);
        for (let y = o.y; y < o.y + BLOCK_ROWS; y++) data.fill(0, i * FRAME + y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x, i * FRAME + y * FRAME_WIDTH + s * SECTOR_WIDTH + o.x + BLOCK_COLS);
      }
    }
  }
  const [s] = await runUdf(new MemoryDataSet({ data, navShape: SCAN, sigShape: SIG }), [createUdf({ name: 'SumSigUDF', params: {} })]);
  return s!.intensity!.data as unknown as ArrayLike<number>;
}

/**
 * Every epoch of the stopped acquisition against the reference. Returns per epoch the number
 * of positions through a worker.
 */
async function checkAllEpochs(rig: Rig, id: string): Promise<Map<number, EpochCopy>> {
  const ref = await (referenceOnce ??= reference());
  const summary = await rig.client.api.get(id);
  const epochs = new Map<number, EpochCopy>();
  for (const e of summary.epochs) epochs.set(e, await rig.epoch(id, e));
  let exact = 0;
  let whole = 0;
  for (const c of epochs.values()) {
    // only epochs the receivers finished: the last one may stop part-way
    if (c.framesMerged === N) {
      const lost = [...(c.buffers.get('_damage/sectorBlocks') as Uint32Array)].some((b) => b !== 0);
      const want = lost ? await sumsigWithLosses(ref.data, c) : ref.sumsig;
      const got = c.buffers.get('sumsig/intensity')!;
      for (let i = 0; i < N; i++) if (!Object.is(got[i], want[i])) throw new Error(`epoch ${c.epoch}: sumsig/intensity[${i}] = ${got[i]}, expected ${want[i]}`);
      exact++;
    }
    const valid = c.buffers.get('_shuffle/valid')!;
    const sectors = c.buffers.get('_shuffle/sectors')!;
    const fem = c.buffers.get('fem/intensity')!;
    for (let i = 0; i < N; i++) {
      if (!valid[i]) {
        // never merged: the live store holds nothing there
        expect(sectors[i], `epoch ${c.epoch} position ${i}: sectors of an unprocessed frame`).toBe(0);
        continue;
      }
      if (sectors[i] !== 8) continue;
      const a = fem[i]!;
      const b = ref.fem[i]!;
      if (!(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)))) throw new Error(`epoch ${c.epoch}: fem/intensity[${i}] = ${a}, expected ${b}`);
      whole++;
    }
  }
  expect(exact).toBeGreaterThanOrEqual(epochs.size - 1);
  expect(whole).toBeGreaterThan(2 * N);
  return epochs;
}

/** Results merged at `before` are still there, unchanged, at `after` (nothing merged is lost). */
function expectKept(before: EpochCopy, after: EpochCopy, min = 1): void {
  const v0 = before.buffers.get('_shuffle/valid');
  // a store a few ms old may not have the whole-frame buffers yet (the merger publishes them every 100 ms): nothing merged there
  if (!v0) return expect(min).toBe(0);
  const v1 = after.buffers.get('_shuffle/valid')!;
  const f0 = before.buffers.get('fem/intensity')!;
  const f1 = after.buffers.get('fem/intensity')!;
  let kept = 0;
  for (let i = 0; i < N; i++) {
    if (!v0[i]) continue;
    expect(v1[i], `epoch ${before.epoch} position ${i} still valid`).toBe(1);
    expect(Object.is(f1[i], f0[i]), `epoch ${before.epoch} fem/intensity[${i}] unchanged: ${f0[i]} -> ${f1[i]}`).toBe(true);
    kept++;
  }
  expect(kept).toBeGreaterThanOrEqual(min);
}

/**
 * One rig for both cases (launching its eleven processes took 5-8 s a case): the worker case
 * first, on two workers; it leaves the shuffle up with one worker (the restarted one) and the
 * camera running, which is where the shuffle case starts: a new acquisition joining the
 * continuous scan. Launched by the first case that runs (launch() ties the failure logs to a test).
 */
let rig: Rig | null = null;
let launched: Promise<Rig> | null = null;
function sharedRig(): Promise<Rig> {
  return (launched ??= (async () => {
    rig = new Rig();
    await rig.launch(2);
    return rig;
  })());
}

afterAll(async () => {
  await rig?.stopAll();
  rig = null;
}, 30_000);

describe('shuffle and frame workers killed and restarted mid-acquisition', () => {
  it('a killed worker: the other keeps getting frames; the only worker killed and restarted: the new one gets the acquisition and results flow again', async () => {
    const rig = await sharedRig();
    expect((await rig.shuffleState())?.workers).toBe(2);
    const id = await rig.start();
    const first = await rig.epochWithWholeFrames(id, 0, N, 40_000, 'an epoch wholly through the two workers');

    // worker 0 killed: worker 1 takes every frame
    const killed = rig.workers[0]!;
    killed.kill();
    await killed.exited;
    let epochAtKill = await rig.newestEpoch(id);
    const beforeKill = await rig.epoch(id, epochAtKill);
    // the shuffle notices the closed connection at its next ping, not after 10 s of silence
    await poll(async () => (await rig.shuffleState())?.workers === 1, 8000, 'one worker in /api/status');
    const alone = await rig.epochWithWholeFrames(id, epochAtKill + 1, N, 30_000, 'an epoch wholly through the remaining worker');
    const survivor = rig.workers[1]!;
    expect((survivor.lines.filter((l) => l.msg === 'worker stats').pop()?.frames as number) ?? 0).toBeGreaterThan(0);

    // the only worker killed: the receivers' results go on, whole-frame results stop (the gap)
    survivor.kill();
    await survivor.exited;
    epochAtKill = await rig.newestEpoch(id);
    await poll(async () => {
      const s = await rig.shuffleState();
      return s?.state === 'up' && s.workers === 0;
    }, 8000, 'shuffle up with no worker in /api/status');
    // an epoch wholly while no worker was there (the shuffle's queue of MAX_QUEUED frames, which the
    // next worker gets, lies in the epoch of the kill or the next; the receivers' view may trail the shuffle's by a chunk)
    const gapEpoch = epochAtKill + 2;
    await poll(async () => (await rig.newestEpoch(id)) >= gapEpoch + 1, 30_000, 'an epoch without workers');
    // restarted: it joins the shuffle, gets the acquisition without any step, results flow again
    const restarted = rig.spawnWorker();
    await restarted.waitFor((l) => l.msg === 'worker: acquisition' && l.acquisition === id, 20_000, 'the acquisition at the new worker');
    await poll(async () => (await rig.shuffleState())?.workers === 1, 15_000, 'the new worker in /api/status');
    const restartEpoch = await rig.newestEpoch(id);
    const after = await rig.epochWithWholeFrames(id, restartEpoch + 1, N, 30_000, 'an epoch wholly through the restarted worker');

    await rig.client.api.stop(id);
    await poll(async () => (await rig.client.api.get(id)).state !== 'running' && (await rig.client.api.get(id)).state !== 'stopping', 30_000, 'the acquisition stopped');
    const epochs = await checkAllEpochs(rig, id);
    expectKept(first, epochs.get(first.epoch)!);
    expectKept(beforeKill, epochs.get(beforeKill.epoch)!, 0);
    expectKept(alone, epochs.get(alone.epoch)!);
    expectKept(after, epochs.get(after.epoch)!);
    // the gap: the receivers merged every frame of the epoch, no worker processed one
    const gap = epochs.get(gapEpoch)!;
    expect(gap.framesMerged).toBe(N);
    expect(validCount(gap)).toBe(0);
    // counted: the frames the shuffle skipped for want of a worker (in the newest store's counters, and in /api/status)
    const newest = epochs.get(Math.max(...epochs.keys()))!;
    const skipped = newest.buffers.get('_shuffle/counters')![1]!;
    expect(skipped).toBeGreaterThanOrEqual(N);
    expect((await rig.shuffleState())!.framesSkipped).toBe(skipped);
    const missed = [...epochs.values()].reduce((n, c) => n + (c.framesMerged === N ? N - validCount(c) : 0), 0);
    expect(missed).toBeGreaterThanOrEqual(skipped);
    expect(rig.merger.running && rig.shuffle.running && rig.receivers.every((r) => r.running)).toBe(true);
  }, 150_000);

  it('the shuffle killed: receivers and merger go on exactly; restarted, it gets the acquisition and rule book again and whole-frame results flow again', async () => {
    const rig = await sharedRig();
    // the worker case, had it failed part-way, may have left its acquisition running
    await stopLeftover(rig.client);
    // one worker: the restarted one of the worker case, or a fresh one when this case runs alone
    const live = rig.workers.filter((w) => w.running);
    for (const w of live.slice(1)) {
      w.kill();
      await w.exited;
    }
    if (live.length === 0) rig.spawnWorker();
    await poll(async () => (await rig.shuffleState())?.workers === 1, 30_000, 'the shuffle with 1 worker in /api/status');
    const worker = rig.workers.find((w) => w.running)!;
    const id = await rig.start();
    const first = await rig.epochWithWholeFrames(id, 0, N, 40_000, 'an epoch wholly through the worker');

    const old = rig.shuffle;
    old.kill();
    await old.exited;
    const epochAtKill = await rig.newestEpoch(id);
    const beforeKill = await rig.epoch(id, epochAtKill);
    await poll(async () => (await rig.shuffleState())?.state === 'missing', 10_000, 'shuffle missing in /api/status');
    expect((await rig.shuffleState())!.workers).toBe(0);
    // the receivers and the merger go on: whole epochs merged while the shuffle is away
    const gapEpoch = epochAtKill + 2;
    await poll(async () => (await rig.newestEpoch(id)) >= gapEpoch + 1, 30_000, 'an epoch without the shuffle');
    const status = await rig.status();
    expect(status.sectors.every((s) => s.state === 'alive')).toBe(true);
    expect(status.acquisition?.state).toBe('running');

    // restarted on the same endpoints: the merger sends it the acquisition, the receivers get its rule book, the worker its frames
    const restarted = rig.spawnShuffle();
    await restarted.waitFor((l) => l.msg === 'shuffle: acquisition' && l.acquisition === id, 20_000, 'the acquisition at the new shuffle');
    await poll(async () => {
      const s = await rig.shuffleState();
      return s?.state === 'up' && s.workers === 1;
    }, 20_000, 'shuffle up with its worker in /api/status');
    expect((await rig.shuffleState())!.restarts).toBeGreaterThanOrEqual(1);
    const restartEpoch = await rig.newestEpoch(id);
    const after = await rig.epochWithWholeFrames(id, restartEpoch + 1, N, 40_000, 'an epoch wholly through the restarted shuffle');

    await rig.client.api.stop(id);
    await poll(async () => !['running', 'stopping'].includes((await rig.client.api.get(id)).state), 30_000, 'the acquisition stopped');
    const epochs = await checkAllEpochs(rig, id);
    expectKept(first, epochs.get(first.epoch)!);
    expectKept(beforeKill, epochs.get(beforeKill.epoch)!, 0);
    expectKept(after, epochs.get(after.epoch)!);
    const gap = epochs.get(gapEpoch)!;
    expect(gap.framesMerged).toBe(N);
    expect(validCount(gap)).toBe(0);
    expect(rig.merger.running && rig.receivers.every((r) => r.running) && worker.running).toBe(true);
  }, 150_000);
});
