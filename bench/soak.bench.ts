/**
 * Soak: the whole pipeline (merger, eight receivers, continuous simulator, one WebSocket
 * client reading) runs a continuous acquisition for a long time while every process's
 * resident memory (/proc/<pid>/status VmRSS) and open file descriptors (/proc/<pid>/fd) are
 * sampled. A small scan at a high frame rate compresses time: what could leak per epoch (live
 * stores, results, timers, sockets) is exercised hundreds of times a minute.
 *
 * `npm run bench soak` runs it for TESSERA_SOAK_MINUTES (default 10) and prints per role the
 * RSS slope after warm-up (MB/h, ratio vs the role's RSS) and the open-files range;
 * test/e2e/faults-soak.test.ts runs `runSoak` for under a minute and asserts it is flat.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../src/client/tessera-client.js';
import { CLI_PATH } from '../src/paths.js';
import { report } from './lib.js';
import { freeTcpPort, freeUdpBase } from './free-ports.js';

export interface SoakOptions {
  durationMs: number;
  sampleMs?: number;
  /** samples before this are warm-up */
  warmupMs?: number;
  scan?: [number, number];
  fps?: number;
  /**
   * scan positions per partial result. Default: the whole scan, one chunk per epoch. The small
   * scan compresses epochs, not chunks: with the default of one scan row (4 frames of a 2x4 scan
   * at 25 fps) every sector sent 6 partials a second, each carrying a 30 MB sum image for the
   * merger to add, 4x the chunk rate of a 256-wide scan at the K2's 400 fps; the merger then ran
   * 3-7 s behind even alone (RSS 1.3-1.9 GB, the receivers' send queues full), and what the soak
   * measured was that backlog rather than the steady state.
   */
  chunkSize?: number;
  log?: (line: string) => void;
  /**
   * environment of the role processes. Default: glibc's mmap threshold fixed at 128 KiB, as in
   * the Dockerfile. Without it glibc raises the threshold after the first large frees, and the
   * merger's 15-30 MB result buffers then come from the heap, whose fragments it never returns:
   * RSS grew by 600-900 MB over 25-36 epochs here while V8's heap and external memory stayed flat.
   */
  env?: Record<string, string>;
}

export interface RoleFigures {
  role: string;
  pid: number;
  /** after warm-up */
  rssMB: number[];
  fds: number[];
  /** least-squares slope of RSS after warm-up, MB per hour */
  rssSlopeMBPerHour: number;
  /** median RSS of the last third minus that of the first third (after warm-up), MB */
  rssGrowthMB: number;
}

export interface SoakFigures {
  seconds: number;
  epochs: number;
  framesMerged: number;
  roles: RoleFigures[];
  /** the merger's own view (/metrics) after warm-up: V8 heap and buffers outside it, MB, with the epoch of each sample */
  merger: { epoch: number[]; heapMB: number[]; externalMB: number[]; mergeLatencyP90: number[] };
}

function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function slopePerHour(ts: number[], ys: number[]): number {
  const n = ts.length;
  if (n < 2) return 0;
  const mt = ts.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (ts[i]! - mt) * (ys[i]! - my);
    den += (ts[i]! - mt) ** 2;
  }
  return den ? (num / den) * 3600_000 : 0;
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

/** Run the pipeline for `durationMs` and sample every process. Kills everything it started. */
export async function runSoak(o: SoakOptions): Promise<SoakFigures> {
  const log = o.log ?? (() => {});
  const scan = o.scan ?? [4, 8];
  const sampleMs = o.sampleMs ?? 1000;
  const warmupMs = o.warmupMs ?? Math.min(20_000, o.durationMs / 3);
  const dir = mkdtempSync(join(tmpdir(), 'tessera-soak-'));
  const [control, results, http, election] = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      detector: { udp: { host: '127.0.0.1', basePort: await freeUdpBase(8) } },
      receiver: { statsIntervalMs: 5000 },
      merger: { control: `tcp://127.0.0.1:${control}`, results: `tcp://127.0.0.1:${results}`, http: { host: '127.0.0.1', port: http }, chunkTimeoutMs: 10_000, keepEpochs: 2 },
      election: { endpoint: `tcp://127.0.0.1:${election}` },
    }),
  );
  const children: Array<{ role: string; child: ChildProcess }> = [];
  const start = (role: string, args: string[]) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args, '-c', config], { stdio: ['ignore', 'ignore', 'ignore'], env: { ...process.env, TESSERA_LOG_LEVEL: 'warn', ...(o.env ?? { MALLOC_MMAP_THRESHOLD_: '131072' }) } });
    children.push({ role, child });
    return child;
  };
  const url = `http://127.0.0.1:${http}`;
  const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
  const until = async (what: string, cond: () => Promise<boolean>, ms: number) => {
    const deadline = Date.now() + ms;
    while (!(await cond().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`soak: no ${what} within ${ms} ms`);
      for (const c of children) if (c.child.exitCode !== null || c.child.signalCode !== null) throw new Error(`soak: ${c.role} exited`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  try {
    start('merger', ['merger']);
    await until('merger', async () => (await fetch(`${url}/api/status`)).ok, 30_000);
    for (let s = 0; s < 8; s++) start(`receiver-${s}`, ['receiver', '--sector', String(s)]);
    await until('eight receivers', async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 60_000);
    start('simulator', ['simulate', '--scan', `${scan[0]}x${scan[1]}`, '--fps', String(o.fps ?? 100), '--continuous', '--seed', '3']);
    await until('the receivers following the scan', async () => (await client.api.status()).sectors.every((s) => s.datagramsPerSecond > 0), 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    const { id } = await client.api.define({ scanShape: scan, udfs: [{ id: 'sum', name: 'SumUDF' }, { id: 'sumsig', name: 'SumSigUDF' }, { id: 'masks', name: 'ApplyMasksUDF', params: { masks: [{ type: 'disk', cy: 930, cx: 1024, r: 60 }] } }, { id: 'com', name: 'CoMUDF', params: { cy: 930, cx: 1024, r: 80 } }], mode: 'continuous', chunkSize: o.chunkSize ?? scan[0] * scan[1] });
    await client.api.start(id);
    await client.connect();
    client.subscribe({ acquisition: 'current', maxRate: 10 });
    log(`soak: acquisition ${id} running, sampling ${children.length} processes every ${sampleMs} ms for ${(o.durationMs / 1000).toFixed(0)} s`);

    const t0 = Date.now();
    const samples = children.map(() => ({ t: [] as number[], rss: [] as number[], fds: [] as number[] }));
    let nextLog = t0 + 60_000;
    const merger = { epoch: [] as number[], heapMB: [] as number[], externalMB: [] as number[], mergeLatencyP90: [] as number[] };
    const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    while (Date.now() - t0 < o.durationMs) {
      await new Promise((r) => setTimeout(r, sampleMs));
      const t = Date.now() - t0;
      children.forEach((c, k) => {
        if (c.child.exitCode !== null || c.child.signalCode !== null) throw new Error(`soak: ${c.role} exited (${c.child.exitCode ?? c.child.signalCode})`);
        if (t < warmupMs) return;
        samples[k]!.t.push(t);
        samples[k]!.rss.push(rssMB(c.child.pid!));
        samples[k]!.fds.push(openFds(c.child.pid!));
      });
      if (t >= warmupMs) {
        const text = await (await fetch(`${url}/metrics`)).text();
        merger.epoch.push(metric(text, 'tessera_acquisition_epoch'));
        merger.heapMB.push(metric(text, 'nodejs_heap_used_bytes') / 1e6);
        merger.externalMB.push(metric(text, 'nodejs_external_memory_bytes') / 1e6);
        merger.mergeLatencyP90.push(metric(text, 'tessera_merge_latency_seconds\\{quantile="0.9"\\}'));
      }
      if (Date.now() > nextLog) {
        nextLog += 60_000;
        const a = await client.api.get(id);
        log(`soak: ${Math.round(t / 1000)} s, epoch ${a.epoch}, merger RSS ${samples[0]!.rss.at(-1)?.toFixed(0)} MB, fds ${samples[0]!.fds.at(-1)}`);
      }
    }
    const a = await client.api.get(id);
    if (a.state !== 'running') throw new Error(`soak: acquisition ${a.state}: ${a.message}`);
    const roles = children.map((c, k) => {
      const s = samples[k]!;
      const third = Math.max(1, Math.floor(s.rss.length / 3));
      return {
        role: c.role,
        pid: c.child.pid!,
        rssMB: s.rss,
        fds: s.fds,
        rssSlopeMBPerHour: slopePerHour(s.t, s.rss),
        rssGrowthMB: median(s.rss.slice(-third)) - median(s.rss.slice(0, third)),
      };
    });
    return { seconds: (Date.now() - t0) / 1000, epochs: a.epoch, framesMerged: a.progress.framesMerged, roles, merger };
  } finally {
    await client.close().catch(() => {});
    // camera first, then receivers, then the merger
    for (const c of [...children].reverse()) c.child.kill('SIGTERM');
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((r) => {
            if (c.child.exitCode !== null || c.child.signalCode !== null) return r();
            const t = setTimeout(() => c.child.kill('SIGKILL'), 10_000);
            c.child.once('exit', () => {
              clearTimeout(t);
              r();
            });
          }),
      ),
    );
  }
}

export async function run(): Promise<void> {
  const minutes = Number(process.env.TESSERA_SOAK_MINUTES ?? 10);
  const f = await runSoak({ durationMs: minutes * 60_000, sampleMs: 2000, warmupMs: Math.min(120_000, (minutes * 60_000) / 4), log: (l) => console.log(l) });
  console.log(`soak: ${f.seconds.toFixed(0)} s, ${f.epochs} epochs, ${f.framesMerged} frames merged`);
  for (const r of f.roles) {
    const rss = median(r.rssMB);
    report(`soak ${r.role} RSS slope`, r.rssSlopeMBPerHour, 'MB/h', r.rssSlopeMBPerHour / rss, `its RSS of ${rss.toFixed(0)} MB per hour`);
    report(`soak ${r.role} open files`, Math.max(...r.fds) - Math.min(...r.fds), 'fds range', undefined);
  }
}
