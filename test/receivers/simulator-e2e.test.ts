/**
 * `tessera simulate` over real UDP into eight `tessera receiver` processes and an election
 * coordinator: every sector's dumped frames equal the simulator's ground truth
 * (SimulatedScan.frame(i), columns of the sector) bit for bit. With faults (drops, a burst,
 * duplicates, reordering, corrupt datagrams) and frame_id / block_count wraps: no process
 * crashes, the damage bitmaps are exactly the blocks the simulator's --fault-log says were lost,
 * every other pixel is the truth, and the counters match the fault log kind by kind.
 *
 * A loaded machine may still lose datagrams for real (a receiver's socket buffer overflows
 * while it waits for the CPU): the kernel counts those per socket, and kernel-drops.ts accounts
 * for every datagram, so that the only damage beyond the fault log is that of blocks that never
 * reached the receiver, no more than the kernel dropped; with no kernel drops (the usual case)
 * everything is exact. A long frame timeout, so that a stalled sender is not mistaken for loss;
 * more frames after the scan than the assembler holds in flight, so that the scan's last frames
 * go out (and the acquisition ends) without waiting for that timeout.
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
import { accountDatagrams, allDatagramsAccounted, extraDamage, sentDatagrams } from './kernel-drops.js';
import { freeUdpPorts, readDumpIndex, sectorOf, spawnCli, writeConfig, type LogLine, type RoleProcess } from './process-helpers.js';

const FULL = 0xffffffff;
/** > receiver.maxFramesInFlight (16): the scan's last frames are emitted without a timeout */
const FRAMES_AFTER = 17;
/** room for slow process starts on a loaded machine (the waits inside are bounded too) */
const TEST_MS = 150_000;
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
  /** per sector: datagrams the kernel dropped at the receiver's socket */
  kernelDrops: number[];
  /** per sector: intact blocks sent but never placed (lost to the kernel) */
  lostToKernel: number[];
}

async function runPipeline(o: RunOptions): Promise<RunResult> {
  const base = await freeUdpPorts(8);
  const coord = await ElectionCoordinator.start({ endpoint: 'tcp://127.0.0.1:*', expectedSectors: o.sectors, timeoutMs: 10_000 });
  closers.push(() => coord.close());
  // stats often: the test follows `received` to know when every datagram is in
  const cfg = writeConfig(dir, `${o.name}.json`, {
    detector: { udp: { basePort: base } },
    receiver: { frameTimeoutMs: 10_000, statsIntervalMs: 200 },
    election: { endpoint: coord.endpoint, timeoutMs: 10_000 },
  });
  const scanArg = `${o.scan[0]}x${o.scan[1]}`;
  const dumps = o.sectors.map((s) => join(dir, `${o.name}-s${s}.bin`));
  const rxs = o.sectors.map((s, k) =>
    spawnCli(`receiver-${s}`, ['receiver', '--sector', String(s), '--config', cfg, '--scan', scanArg, '--dump-frames', dumps[k]!, ...(o.continuous ? ['--continuous'] : [])]),
  );
  procs.push(...rxs);
  // eight processes starting at once on a loaded 2-core machine: be patient
  await Promise.all(rxs.map((r) => r.waitForMsg('receiver listening', 60_000)));
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
  const done = sim.lines.find((l) => l.msg === 'simulation done')!;
  expect(done).toMatchObject({ stoppedEarly: false, udpErrors: 0, udpRefused: 0 });
  const faults = readFileSync(faultLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FaultRecord);
  const sent = o.sectors.map((s) => sentDatagrams((done.frames as number) * 32, s, faults));
  // every datagram in (or dropped by the kernel) before the receivers stop: stopping flushes
  const kernelDrops = await allDatagramsAccounted(rxs, o.sectors.map((s) => base + s), sent);
  if (!o.continuous) {
    await Promise.all(rxs.map((r) => r.waitForMsg('acquisition ended', 30_000))).catch((err: Error) => {
      throw new Error(`${err.message}\n(kernel drops per sector: ${kernelDrops.join(', ')})`);
    });
  }
  for (const r of rxs) expect(await r.stop(), r.name).toEqual({ code: 0, signal: null });
  for (const r of rxs) expect(r.lines.filter((l) => (l.level ?? 0) >= 50), r.name).toEqual([]); // no error or fatal logs
  const finals = rxs.map((r) => r.lines.find((l) => l.msg === 'receiver stopped: final counters')!);
  const lostToKernel = o.sectors.map((s, k) => accountDatagrams({ sector: s, sent: sent[k]!, kernelDrops: kernelDrops[k]!, final: finals[k]!, faults }));
  if (kernelDrops.some((d) => d > 0)) console.log(`${o.name}: kernel drops per sector ${kernelDrops.join(', ')}; intact blocks lost to them ${lostToKernel.join(', ')}`);
  return { finals, faults, dumps, decision: coord.latest, kernelDrops, lostToKernel };
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

/**
 * Every dumped frame against the truth: damage exactly as the fault log says (plus, per sector,
 * at most the blocks the kernel dropped), pixels exact elsewhere.
 */
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
    let extra = 0;
    for (const line of index) {
      const streamFrame = o.framesBefore - 1 + line.index;
      const injected = losses.get(`${s}/${streamFrame}`) ?? 0;
      if (injected !== 0) damagedFrames++;
      extra += extraDamage(line.damage, injected, `sector ${s} frame ${line.index}`);
      const damage = line.damage;
      expect(line.scanIndex).toBe(line.index % positions);
      expect(line.epoch).toBe(Math.floor(line.index / positions));
      if (damage !== FULL) expect(line.frameId).not.toBeNull();
      const got = new Uint16Array(SECTOR_PIXELS);
      Buffer.from(got.buffer).set(bytes.subarray(line.index * SECTOR_PIXELS * 2, (line.index + 1) * SECTOR_PIXELS * 2));
      const want = withDamage(sectorOf(truth[line.scanIndex]!, s), damage);
      expect(firstDiff(got, want), `sector ${s} frame ${line.index}: first differing pixel`).toBe(-1);
    }
    // damage the fault log does not explain: only blocks that never reached the receiver
    expect(extra, `sector ${s}: damaged blocks beyond the fault log (intact blocks lost to the kernel: ${r.lostToKernel[k]})`).toBeLessThanOrEqual(r.lostToKernel[k]!);
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
      simArgs: ['--fps', '100', '--frames-after', String(FRAMES_AFTER), '--frame-id-start', String(2 ** 32 - 6), '--block-count-start', String(2 ** 32 - 32 * 8 - 5)],
    };
    const r = await runPipeline(o);
    expect(r.decision).toMatchObject({ voters: [0, 1, 2, 3, 4, 5, 6, 7], missing: [], decidedBy: 'all' });
    expect(r.faults).toEqual([]);
    // no fault, so no duplicate, straggler or rejection, and every datagram that arrived placed
    // (runPipeline's accounting); a damaged frame only where the kernel dropped a block
    r.finals.forEach((f, k) => {
      expect(f).toMatchObject({ framesInScan: 20, duplicates: 0, stragglers: 0, outOfWindow: 0, rejected: {} });
      expect(f.ok).toBe(f.received);
      expect((f.framesDamaged as number) + (f.framesMissing as number)).toBeLessThanOrEqual(r.lostToKernel[k]!);
    });
    expect(checkDumps(o, r, 20)).toBe(0);
  }, TEST_MS);

  it('with drops, a burst, duplicates, reordering, corruption and a frame_id reset: damage exactly as the fault log', async () => {
    const o: RunOptions = {
      name: 'faults',
      scan: [6, 6],
      seed: 23,
      sectors: [0, 1, 2, 3, 4, 5, 6, 7],
      framesBefore: 4,
      simArgs: ['--fps', '80', '--frames-after', String(FRAMES_AFTER), '--frame-id-start', '284980', '--frame-id-reset', '2', '--drop', '0.02', '--burst-drop', '45', '--duplicate', '0.02', '--reorder', '6', '--corrupt', '0.02'],
    };
    const r = await runPipeline(o);
    expect(r.decision).toMatchObject({ missing: [] });
    const damaged = checkDumps(o, r, 36);
    expect(damaged).toBeGreaterThan(20); // the faults really hit the scan
    // every kind of fault really happened, in every sector; the counters match the fault log
    // kind by kind (runPipeline's accounting: exactly, unless the kernel dropped some datagrams)
    for (const s of o.sectors) {
      const kinds = new Set(r.faults.filter((f) => f.sector === s).map((f) => f.kind));
      expect([...kinds].sort(), `sector ${s} fault kinds`).toEqual(expect.arrayContaining(['burst_drop', 'drop', 'duplicate']));
    }
  }, TEST_MS);

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
  }, TEST_MS);
});
