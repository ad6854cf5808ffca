/**
 * Shared by the recording tests: the real pipeline (`tessera merger`, eight `tessera receiver`
 * processes, `tessera simulate`) with a data directory of its own, the offline reference over
 * the simulator's ground truth, comparisons of recorded datasets, and h5py (when installed).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest, AcquisitionSummary } from '../../src/merger/acquisition-schema.js';
import type { UDFResults } from '../../src/udf/dataset-results.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { liveConfig, SIG, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

export const FRAME = FRAME_HEIGHT * FRAME_WIDTH;
export const FRAMES_BEFORE = 8;

export const UDFS: AcquisitionRequest['udfs'] = [
  { id: 'sum', name: 'SumUDF' },
  { id: 'sumsig', name: 'SumSigUDF' },
  { id: 'masks', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 60 }, { type: 'ring', cy: 930, cx: 1024, ri: 100, ro: 700 }] } },
  { id: 'com', name: 'CoMUDF', params: { cy: 930, cx: 1024, r: 80 } },
];

export interface Pipeline {
  config: string;
  dir: string;
  dataDir: string;
  merger: RoleProcess;
  client: TesseraClient;
  url: string;
}

/** Every process and client a test started; `cleanup()` in afterEach stops them all. */
export class Processes {
  roles: RoleProcess[] = [];
  clients: TesseraClient[] = [];

  spawn(name: string, args: string[]): RoleProcess {
    const r = spawnCli(name, args, { TESSERA_LOG_LEVEL: 'info' });
    this.roles.push(r);
    return r;
  }

  async cleanup(): Promise<void> {
    for (const c of this.clients.splice(0)) await c.close().catch(() => {});
    await Promise.all(this.roles.splice(0).map((r) => r.stop(5000).catch(() => r.kill())));
  }

  client(url: string): TesseraClient {
    const c = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    this.clients.push(c);
    return c;
  }
}

export async function launch(ps: Processes, overlay: Record<string, unknown> = {}): Promise<Pipeline> {
  const base = await freeUdpPorts(8);
  const dataDir = mkdtempSync(join(tmpdir(), 'tessera-rec-data-'));
  const { path, dir } = await liveConfig({
    detector: { udp: { host: '127.0.0.1', basePort: base } },
    receiver: { statsIntervalMs: 1000 },
    merger: { chunkTimeoutMs: 5000 },
    dataDir,
    recorder: { writeIntervalMs: 200, snapshotIntervalMs: 1000 },
    ...overlay,
  });
  const merger = ps.spawn('merger', ['merger', '-c', path]);
  onTestFailed(() => {
    writeFileSync(join(dir, `merger-${merger.child.pid}.log`), merger.rawStderr.join('\n'));
    console.error(`logs of the failed test: ${dir}`);
  });
  const listening = await merger.waitForMsg('merger listening', 30_000);
  const url = String(listening.url);
  for (let s = 0; s < 8; s++) ps.spawn(`receiver-${s}`, ['receiver', '--sector', String(s), '-c', path]);
  const client = ps.client(url);
  await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 30_000, 'eight receivers alive');
  return { config: path, dir, dataDir, merger, client, url };
}

export function simulate(ps: Processes, p: Pipeline, scan: [number, number], args: string[]): RoleProcess {
  return ps.spawn('simulator', ['simulate', '-c', p.config, '--scan', `${scan[0]}x${scan[1]}`, '--frames-before', String(FRAMES_BEFORE), ...args]);
}

export async function defineAndStart(p: Pipeline, request: AcquisitionRequest): Promise<string> {
  const { id } = await p.client.api.define(request);
  await p.client.api.start(id);
  await waitUntil(() => p.merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 15_000, 'eight receivers ready');
  return id;
}

/** POST /api/acquisitions/:id/record */
export async function setRecording(p: Pipeline, id: string, enabled: boolean): Promise<AcquisitionSummary> {
  const r = await fetch(`${p.url}/api/acquisitions/${id}/record`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ enabled }) });
  const body = (await r.json()) as AcquisitionSummary;
  if (!r.ok) throw new Error(`record ${enabled}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

/** The simulator's frames [from, from + n) of scan `scan`, seed `seed`, in one array. */
export function truthFrames(scan: [number, number], seed: number, from = 0, n = scan[0] * scan[1]): Uint16Array {
  const sim = new SimulatedScan({ scanShape: scan, seed });
  const data = new Uint16Array(n * FRAME);
  for (let i = 0; i < n; i++) sim.frame(from + i, data.subarray(i * FRAME, (i + 1) * FRAME));
  return data;
}

/** runUdf (the offline engine) over frames of one scan. */
export async function offline(scan: [number, number], frames: Uint16Array): Promise<UDFResults[]> {
  return runUdf(new MemoryDataSet({ data: frames, navShape: scan, sigShape: SIG }), UDFS.map((u) => createUdf({ name: u.name, params: u.params ?? {} })));
}

/** Exact for integer sums, float tolerance for CoM (its merge order differs). */
export function expectSame(what: string, udfId: string, got: ArrayLike<number>, expected: ArrayLike<number>): void {
  expect(got.length, `${what} length`).toBe(expected.length);
  for (let k = 0; k < expected.length; k++) {
    const a = got[k]!;
    const e = expected[k]!;
    const ok = udfId === 'com' ? (Number.isNaN(a) && Number.isNaN(e)) || Math.abs(a - e) <= 1e-9 * Math.max(1, Math.abs(e)) : Object.is(a, e);
    if (!ok) throw new Error(`${what}[${k}] = ${a}, expected ${e}`);
  }
}

/**
 * Compare results with offline over the ground truth. On this shared machine the kernel may
 * drop datagrams of a starved receiver (the damage map says where): then nav buffers are
 * compared at the undamaged positions only, whole-scan buffers (sig, single) not at all.
 */
export function expectOffline(
  what: string,
  get: (udfId: string, name: string) => ArrayLike<number>,
  reference: UDFResults[],
  sectorsComplete: ArrayLike<number>,
): void {
  const intact = Array.from(sectorsComplete, (v) => v === 8);
  const damaged = intact.filter((v) => !v).length;
  if (damaged > 0) console.warn(`${what}: ${damaged} positions lost datagrams (loaded machine): comparing nav results at intact positions only`);
  UDFS.forEach((u, i) => {
    for (const [name, r] of Object.entries(reference[i]!)) {
      const got = get(u.id!, name);
      if (damaged === 0) {
        expectSame(`${what} ${u.id}/${name}`, u.id!, got, r.data);
        continue;
      }
      // divergence and curl are gradients: a damaged neighbour changes them
      if (r.kind !== 'nav' || name === 'divergence' || name === 'curl') continue;
      const per = r.data.length / intact.length;
      const a: number[] = [];
      const e: number[] = [];
      intact.forEach((ok, k) => {
        if (!ok) return;
        for (let j = 0; j < per; j++) {
          a.push(got[k * per + j]!);
          e.push(r.data[k * per + j]!);
        }
      });
      expectSame(`${what} ${u.id}/${name} (intact positions)`, u.id!, a, e);
    }
  });
}

export const PYTHON = '/usr/bin/python3';

/** Whether h5py and numpy can be imported. */
export function hasH5py(): boolean {
  return spawnSync(PYTHON, ['-c', 'import h5py, numpy'], { encoding: 'utf8' }).status === 0;
}

/**
 * Every dataset of an HDF5 file as h5py reads it: shape, dtype and the sha256 of its
 * little-endian C-order bytes, plus the root attributes.
 */
export function h5pyDigest(path: string): { datasets: Record<string, { shape: number[]; dtype: string; sha256: string }>; attrs: Record<string, unknown> } {
  const script = `
import h5py, hashlib, json, sys, numpy as np
out = {"datasets": {}, "attrs": {}}
with h5py.File(sys.argv[1], "r") as f:
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            a = np.ascontiguousarray(obj[()])
            a = a.astype(a.dtype.newbyteorder("<"))
            out["datasets"]["/" + name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    f.visititems(visit)
    for k, v in f.attrs.items():
        out["attrs"][k] = v.tolist() if hasattr(v, "tolist") else (v.decode() if isinstance(v, bytes) else v)
print(json.dumps(out))
`;
  const r = spawnSync(PYTHON, ['-c', script, path], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`h5py failed on ${path}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ReturnType<typeof h5pyDigest>;
}

export async function sha256(data: ArrayBufferView): Promise<string> {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest('hex');
}
