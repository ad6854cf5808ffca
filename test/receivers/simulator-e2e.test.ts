/**
 * `tessera simulate` over real UDP into eight `tessera receiver` processes and an election
 * coordinator: every sector's dumped frames equal the simulator's ground truth
 * (SimulatedScan.frame(i), columns of the sector) bit for bit. With faults (drops, a burst,
 * duplicates, reordering, corrupt datagrams) and frame_id / block_count wraps: no process
 * crashes, the damage bitmaps are exactly the blocks the simulator's --fault-log says were lost,
 * every other pixel is the truth, and the counters match the fault log kind by kind.
 * Modest frame rates, so that a loaded 2-core machine loses nothing by itself.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SECTOR_PIXELS } from '../../src/k2is/constants.js';
import { ElectionCoordinator } from '../../src/protocol/election.js';
import { LOSS_KINDS, type FaultRecord } from '../../src/k2is/simulator/faults.js';
import { SimulatedScan } from '../../src/k2is/simulator/scene.js';
import { firstDiff, withDamage } from './datagrams.js';
import { freeUdpPorts, readDumpIndex, sectorOf, spawnCli, writeConfig, type LogLine, type RoleProcess } from './process-helpers.js';

const FULL = 0xffffffff;
const dir = mkdtempSync(join(tmpdir(), 'tessera-e2e-'));
const procs: RoleProcess[] = [];
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const p of procs.splice(0)) p.kill();
  for (const c of closers.splice(0)) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface RunOptions {
  name: string;
  scan: [number, number];
  seed: number;
  sectors: number[];
  framesBefore: number;
  simArgs: string[];
  continuous?: boolean;
}

interface RunResult {
  finals: LogLine[];
  faults: FaultRecord[];
  dumps: string[];
  decision: ElectionCoordinator['latest'];
}

async function runPipeline(o: RunOptions): Promise<RunResult> {
  const base = await freeUdpPorts(8);
  const coord = await ElectionCoordinator.start({ endpoint: 'tcp://127.0.0.1:*', expectedSectors: o.sectors, timeoutMs: 10_000 });
  closers.push(() => coord.close());
  const cfg = writeConfig(dir, `${o.name}.json`, { detector: { udp: { basePort: base } }, election: { endpoint: coord.endpoint, timeoutMs: 10_000 } });
  const scanArg = `${o.scan[0]}x${o.scan[1]}`;
  const dumps = o.sectors.map((s) => join(dir, `${o.name}-s${s}.bin`));
  const rxs = o.sectors.map((s, k) =>
    spawnCli(`receiver-${s}`, ['receiver', '--sector', String(s), '--config', cfg, '--scan', scanArg, '--dump-frames', dumps[k]!, ...(o.continuous ? ['--continuous'] : [])]),
  );
  procs.push(...rxs);
  await Promise.all(rxs.map((r) => r.waitForMsg('receiver listening', 30_000)));
  const faultLog = join(dir, `${o.name}-faults.jsonl`);
  const sim = spawnCli('simulate', [
    'simulate',
    '--scan',
    scanArg,
    '--seed',
    String(o.seed),
    '--udp',
    `127.0.0.1:${base}`,
    '--sectors',
    o.sectors.join(','),
    '--frames-before',
    String(o.framesBefore),
    '--fault-log',
    faultLog,
    ...o.simArgs,
  ]);
  procs.push(sim);
  const simExit = await sim.exited;
  expect(simExit, sim.rawStderr.slice(-5).join('\n')).toEqual({ code: 0, signal: null });
  const ended = o.continuous ? 'stats' : 'acquisition ended';
  await Promise.all(rxs.map((r) => r.waitFor((l) => l.msg === ended && (!o.continuous || (l.framesInScan as number) > 0), 30_000, ended)));
  if (o.continuous) await new Promise((r) => setTimeout(r, 1000)); // the last frames time out and are tiled
  for (const r of rxs) expect(await r.stop(), r.name).toEqual({ code: 0, signal: null });
  for (const r of rxs) expect(r.lines.filter((l) => (l.level ?? 0) >= 50), r.name).toEqual([]); // no error or fatal logs
  const faults = readFileSync(faultLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FaultRecord);
  return { finals: rxs.map((r) => r.lines.find((l) => l.msg === 'receiver stopped: final counters')!), faults, dumps, decision: coord.latest };
}

/** Lost blocks per sector and stream frame, from the fault log. */
function lossMap(faults: FaultRecord[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of faults) {
    if (!LOSS_KINDS.has(r.kind)) continue;
    const k = `${r.sector}/${r.streamFrame}`;
    m.set(k, ((m.get(k) ?? 0) | (1 << r.blockIndex)) >>> 0);
  }
  return m;
}

/** Every dumped frame against the truth: damage exactly as the fault log says, pixels exact elsewhere. */
function checkDumps(o: RunOptions, r: RunResult, expectedFrames: number) {
  const scan = new SimulatedScan({ scanShape: o.scan, seed: o.seed });
  const positions = scan.positions;
  const losses = lossMap(r.faults);
  const truth = Array.from({ length: positions }, (_, i) => scan.frame(i));
  let damagedFrames = 0;
  o.sectors.forEach((s, k) => {
    const index = readDumpIndex(r.dumps[k]!);
    expect(index.map((l) => l.index), `sector ${s}`).toEqual(Array.from({ length: expectedFrames }, (_, i) => i));
    const bytes = readFileSync(r.dumps[k]!);
    for (const line of index) {
      const streamFrame = o.framesBefore - 1 + line.index;
      const damage = losses.get(`${s}/${streamFrame}`) ?? 0;
      if (damage !== 0) damagedFrames++;
      expect(line.damage, `sector ${s} frame ${line.index}: damage`).toBe(damage);
      expect(line.scanIndex).toBe(line.index % positions);
      expect(line.epoch).toBe(Math.floor(line.index / positions));
      if (damage !== FULL) expect(line.frameId).not.toBeNull();
      const got = new Uint16Array(SECTOR_PIXELS);
      Buffer.from(got.buffer).set(bytes.subarray(line.index * SECTOR_PIXELS * 2, (line.index + 1) * SECTOR_PIXELS * 2));
      const want = withDamage(sectorOf(truth[line.scanIndex]!, s), damage);
      expect(firstDiff(got, want), `sector ${s} frame ${line.index}: first differing pixel`).toBe(-1);
    }
  });
  return damagedFrames;
}

describe('simulator -> 8 receivers -> dumped frames (processes, real UDP and ZeroMQ)', () => {
  it('clean stream across frame_id and block_count wraps: every sector equals the truth bit for bit', async () => {
    const o: RunOptions = {
      name: 'clean',
      scan: [4, 5],
      seed: 11,
      sectors: [0, 1, 2, 3, 4, 5, 6, 7],
      framesBefore: 3,
      simArgs: ['--fps', '100', '--frames-after', '2', '--frame-id-start', String(2 ** 32 - 6), '--block-count-start', String(2 ** 32 - 32 * 8 - 5)],
    };
    const r = await runPipeline(o);
    expect(r.decision).toMatchObject({ voters: [0, 1, 2, 3, 4, 5, 6, 7], missing: [], decidedBy: 'all' });
    expect(r.faults).toEqual([]);
    for (const f of r.finals) {
      expect(f).toMatchObject({ framesInScan: 20, framesDamaged: 0, framesMissing: 0, duplicates: 0, stragglers: 0, outOfWindow: 0, rejected: {} });
      expect(f.ok).toBe(f.received);
    }
    expect(checkDumps(o, r, 20)).toBe(0);
  });

  it('with drops, a burst, duplicates, reordering, corruption and a frame_id reset: damage exactly as the fault log', async () => {
    const o: RunOptions = {
      name: 'faults',
      scan: [6, 6],
      seed: 23,
      sectors: [0, 1, 2, 3, 4, 5, 6, 7],
      framesBefore: 4,
      simArgs: ['--fps', '80', '--frames-after', '3', '--frame-id-start', '284980', '--frame-id-reset', '2', '--drop', '0.02', '--burst-drop', '45', '--duplicate', '0.02', '--reorder', '6', '--corrupt', '0.02'],
    };
    const r = await runPipeline(o);
    expect(r.decision).toMatchObject({ missing: [] });
    const damaged = checkDumps(o, r, 36);
    expect(damaged).toBeGreaterThan(20); // the faults really hit the scan
    // counters against the fault log, sector by sector
    const kinds = ['corrupt_sync', 'corrupt_truncated', 'corrupt_oversized', 'corrupt_coordinates', 'duplicate'] as const;
    o.sectors.forEach((s, k) => {
      const n = Object.fromEntries(kinds.map((kind) => [kind, r.faults.filter((f) => f.sector === s && f.kind === kind).length]));
      const f = r.finals[k]!;
      const rejected = f.rejected as Record<string, number>;
      expect(rejected.bad_sync ?? 0, `sector ${s} bad_sync`).toBe(n.corrupt_sync);
      expect(rejected.too_short ?? 0, `sector ${s} too_short`).toBe(n.corrupt_truncated);
      expect(rejected.too_long ?? 0, `sector ${s} too_long`).toBe(n.corrupt_oversized);
      expect(rejected.bad_coordinates ?? 0, `sector ${s} bad_coordinates`).toBe(n.corrupt_coordinates);
      // a duplicate that arrives after its frame went out is a straggler
      expect((f.duplicates as number) + (f.stragglers as number), `sector ${s} duplicates`).toBe(n.duplicate);
      expect(f.outOfWindow).toBe(0);
      expect(f.received).toBe((f.ok as number) + (f.duplicates as number) + (f.stragglers as number) + Object.values(rejected).reduce((a, b) => a + b, 0));
    });
  });

  it('continuous acquisition: the scan repeats in epochs, every epoch equals the truth', async () => {
    const o: RunOptions = {
      name: 'continuous',
      scan: [3, 4],
      seed: 31,
      sectors: [1, 6],
      framesBefore: 2,
      continuous: true,
      simArgs: ['--fps', '100', '--continuous', '--max-frames', String(2 - 1 + 12 * 3)],
    };
    const r = await runPipeline(o);
    expect(r.decision).toMatchObject({ voters: [1, 6], missing: [] });
    checkDumps(o, r, 36);
  });
});
