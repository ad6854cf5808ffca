/**
 * Shared by the replay end-to-end tests (replay-e2e, replay-faults-e2e): a `tessera simulate
 * --write-bin` recording of a small scan with the camera's untidiness (leading garbage, an
 * incomplete last frame, a truncated block, a frame_id reset) and its `--truth` .npy, made in
 * beforeAll; `replayPipeline` runs `--replay-bin` of it over real UDP into eight `tessera
 * receiver` processes and an election coordinator; `checkDumps` compares every dumped sector
 * frame with the truth and the damage bitmaps with the replay's fault log.
 * Importing this module registers its hooks (the recording, the cleanup) in the test file.
 *
 * Loss a loaded machine adds by itself (a receiver's socket buffer overflowing) is accounted
 * for as in test/receivers/simulator-e2e.test.ts (kernel-drops.ts): every datagram is received
 * or a kernel drop at its socket, and damage beyond the fault log is at most the intact blocks
 * lost to the kernel; with no kernel drops everything is exact. The receivers' frame timeout is
 * long (a stalled sender is not loss), and the recording has more frames after the scan than a
 * receiver holds in flight, so that the scan's last frames go out without that timeout.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { BLOCK_SIZE, FRAME_PIXELS, SECTOR_PIXELS } from '../../src/k2is/constants.js';
import { NpyFile } from '../../src/k2is/npy.js';
import { ElectionCoordinator } from '../../src/protocol/election.js';
import { LOSS_KINDS, type FaultRecord } from '../../src/k2is/simulator/faults.js';
import { firstDiff, withDamage } from '../receivers/datagrams.js';
import { accountDatagrams, allDatagramsAccounted, extraDamage, sentDatagrams } from '../receivers/kernel-drops.js';
import { freeUdpPorts, readDumpIndex, sectorOf, spawnCli, writeConfig, type LogLine, type RoleProcess } from '../receivers/process-helpers.js';

const FULL = 0xffffffff;
export const SCAN: [number, number] = [4, 5];
export const POSITIONS = SCAN[0] * SCAN[1];
export const FRAMES_BEFORE = 3;
/** > receiver.maxFramesInFlight (16): the scan's last frames go out without a frame timeout */
export const FRAMES_AFTER = 17;
/**
 * Replay frames per pass: the stream frames (lead-in, scan, frames after; the last lead-in frame
 * is scan position 0) and the incomplete one recorded at the end.
 */
export const FRAMES_PER_PASS = FRAMES_BEFORE - 1 + POSITIONS + FRAMES_AFTER + 1;
export const SECTORS = [0, 1, 2, 3, 4, 5, 6, 7];
export const dir = mkdtempSync(join(tmpdir(), 'tessera-replay-e2e-'));
const recDir = join(dir, 'rec');
export const procs: RoleProcess[] = [];
const closers: Array<() => Promise<void>> = [];
let truth: Uint16Array[] = [];

afterEach(async () => {
  for (const p of procs.splice(0)) p.kill();
  for (const c of closers.splice(0)) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(async () => {
  const sim = spawnCli('write-bin', [
    'simulate', '--scan', `${SCAN[0]}x${SCAN[1]}`, '--seed', '17', '--frames-before', String(FRAMES_BEFORE), '--frames-after', String(FRAMES_AFTER),
    '--frame-id-start', '284980', '--frame-id-reset', '2', '--block-count-start', '4000',
    '--write-bin', recDir, '--name', 'Capture9', '--leading-garbage', '--incomplete-end', '--truth', join(dir, 'truth.npy'),
  ]);
  procs.push(sim);
  expect(await sim.exited, sim.rawStderr.join('\n')).toEqual({ code: 0, signal: null });
  const npy = NpyFile.open(join(dir, 'truth.npy'));
  expect(npy.shape).toEqual([POSITIONS, 1860, 2048]);
  truth = Array.from({ length: POSITIONS }, (_, i) => npy.read(i, 1) as Uint16Array);
  npy.close();
  expect(truth[0]!.length).toBe(FRAME_PIXELS);
}, 120_000);

export interface Run {
  finals: LogLine[];
  faults: FaultRecord[];
  dumps: string[];
  replay: RoleProcess;
  /** per sector: datagrams the kernel dropped at the receiver's socket */
  kernelDrops: number[];
  /** per sector: intact blocks sent but never placed (lost to the kernel) */
  lostToKernel: number[];
}

/** Whole blocks in sector `s`'s recorded file (the leading garbage is whole blocks; a truncated last block is not sent). */
function recordedBlocks(s: number): number {
  return Math.floor(statSync(join(recDir, `Capture9_${s + 1}.bin`)).size / BLOCK_SIZE);
}

export async function replayPipeline(name: string, replayArgs: string[], acquisitions: number): Promise<Run> {
  const base = await freeUdpPorts(8);
  const coord = await ElectionCoordinator.start({ endpoint: 'tcp://127.0.0.1:*', expectedSectors: SECTORS, timeoutMs: 10_000 });
  closers.push(() => coord.close());
  // a long frame timeout: on a loaded machine the sender may stall mid-frame, and a frame given up
  // early would look like loss; stats often: the test follows `received` to know when all is in
  const cfg = writeConfig(dir, `${name}.json`, {
    detector: { udp: { basePort: base } },
    receiver: { frameTimeoutMs: 10_000, statsIntervalMs: 200 },
    election: { endpoint: coord.endpoint, timeoutMs: 10_000 },
  });
  const dumps = SECTORS.map((s) => join(dir, `${name}-s${s}.bin`));
  const rxs = SECTORS.map((s, k) =>
    spawnCli(`receiver-${s}`, ['receiver', '--sector', String(s), '--config', cfg, '--scan', `${SCAN[0]}x${SCAN[1]}`, '--dump-frames', dumps[k]!]),
  );
  procs.push(...rxs);
  // eight processes starting at once on a loaded 2-core machine: be patient
  await Promise.all(rxs.map((r) => r.waitForMsg('receiver listening', 60_000)));
  const faultLog = join(dir, `${name}-faults.jsonl`);
  const replay = spawnCli('replay', ['simulate', '--replay-bin', recDir, '--udp', `127.0.0.1:${base}`, '--seed', '29', '--fault-log', faultLog, ...replayArgs]);
  procs.push(replay);
  expect(await replay.exited, replay.rawStderr.slice(-5).join('\n')).toEqual({ code: 0, signal: null });
  const done = replay.lines.find((l) => l.msg === 'replay done')!;
  expect(done).toMatchObject({ stoppedEarly: false, udpErrors: 0, udpRefused: 0 });
  const faults = readFileSync(faultLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FaultRecord);
  const sent = SECTORS.map((s) => sentDatagrams((done.passes as number) * recordedBlocks(s), s, faults));
  expect(sent.reduce((a, b) => a + b, 0), 'datagrams sent: the recorded blocks of every pass, after the faults').toBe(done.datagrams);
  // every datagram in (or dropped by the kernel) before the receivers stop: stopping flushes
  const kernelDrops = await allDatagramsAccounted(rxs, SECTORS.map((s) => base + s), sent);
  await Promise.all(
    rxs.map((r) => r.waitFor(() => r.lines.filter((l) => l.msg === 'acquisition ended').length >= acquisitions, 30_000, `${acquisitions} acquisition(s) ended`)),
  ).catch((err: Error) => {
    // a receiver that lost a whole shutter edge to the kernel never starts that acquisition
    throw new Error(`${err.message}\n(kernel drops per sector: ${kernelDrops.join(', ')})`);
  });
  for (const r of rxs) expect(await r.stop(), r.name).toEqual({ code: 0, signal: null });
  for (const r of rxs) expect(r.lines.filter((l) => (l.level ?? 0) >= 50), r.name).toEqual([]);
  const finals = rxs.map((r) => r.lines.find((l) => l.msg === 'receiver stopped: final counters')!);
  const lostToKernel = SECTORS.map((s, k) => accountDatagrams({ sector: s, sent: sent[k]!, kernelDrops: kernelDrops[k]!, final: finals[k]!, faults }));
  if (kernelDrops.some((d) => d > 0)) console.log(`${name}: kernel drops per sector ${kernelDrops.join(', ')}; intact blocks lost to them ${lostToKernel.join(', ')}`);
  return { finals, faults, dumps, replay, kernelDrops, lostToKernel };
}

/**
 * Every dumped frame of every acquisition against the truth: damage exactly as the fault log
 * says (plus, per sector, at most the blocks lost to the kernel). A replay frame of pass p is the
 * recording's stream frame (replay frame - p x FRAMES_PER_PASS): the lead-in is stream frame 0.
 */
export function checkDumps(r: Run, acquisitions: number): number {
  const lost = new Map<string, number>();
  for (const f of r.faults) {
    if (!LOSS_KINDS.has(f.kind)) continue;
    const k = `${f.sector}/${f.streamFrame}`;
    lost.set(k, ((lost.get(k) ?? 0) | (1 << f.blockIndex)) >>> 0);
  }
  let damaged = 0;
  SECTORS.forEach((s, k) => {
    const index = readDumpIndex(r.dumps[k]!);
    const bytes = readFileSync(r.dumps[k]!);
    const acqs = [...new Set(index.map((l) => l.acquisition))];
    expect(acqs.length, `sector ${s}: acquisitions`).toBe(acquisitions);
    let extra = 0;
    acqs.forEach((a, pass) => {
      const lines = index.filter((l) => l.acquisition === a);
      expect(lines.map((l) => l.index).sort((x, y) => x - y), `sector ${s} pass ${pass}`).toEqual(Array.from({ length: POSITIONS }, (_, i) => i));
      for (const line of lines) {
        const replayFrame = pass * FRAMES_PER_PASS + FRAMES_BEFORE - 1 + line.index;
        const injected = lost.get(`${s}/${replayFrame}`) ?? 0;
        if (injected !== 0) damaged++;
        extra += extraDamage(line.damage, injected, `sector ${s} pass ${pass} frame ${line.index}`);
        const damage = line.damage;
        if (damage !== FULL) expect(line.frameId).not.toBeNull();
        const off = (pass * POSITIONS + line.index) * SECTOR_PIXELS * 2;
        const got = new Uint16Array(SECTOR_PIXELS);
        Buffer.from(got.buffer).set(bytes.subarray(off, off + SECTOR_PIXELS * 2));
        expect(firstDiff(got, withDamage(sectorOf(truth[line.index]!, s), damage)), `sector ${s} pass ${pass} frame ${line.index}`).toBe(-1);
      }
    });
    // damage the fault log does not explain: only blocks that never reached the receiver
    expect(extra, `sector ${s}: damaged blocks beyond the fault log (intact blocks lost to the kernel: ${r.lostToKernel[k]})`).toBeLessThanOrEqual(r.lostToKernel[k]!);
  });
  return damaged;
}

export { spawnCli };
