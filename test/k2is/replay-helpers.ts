/**
 * Shared by the replay end-to-end tests (replay-e2e, replay-faults-e2e): a `tessera simulate
 * --write-bin` recording of a small scan with the camera's untidiness (leading garbage, an
 * incomplete last frame, a truncated block, a frame_id reset) and its `--truth` .npy, made in
 * beforeAll; `replayPipeline` runs `--replay-bin` of it over real UDP into eight `tessera
 * receiver` processes and an election coordinator; `checkDumps` compares every dumped sector
 * frame with the truth and the damage bitmaps with the replay's fault log.
 * Importing this module registers its hooks (the recording, the cleanup) in the test file.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { FRAME_PIXELS, SECTOR_PIXELS } from '../../src/k2is/constants.js';
import { NpyFile } from '../../src/k2is/npy.js';
import { ElectionCoordinator } from '../../src/protocol/election.js';
import { LOSS_KINDS, type FaultRecord } from '../../src/k2is/simulator/faults.js';
import { firstDiff, withDamage } from '../receivers/datagrams.js';
import { freeUdpPorts, readDumpIndex, sectorOf, spawnCli, writeConfig, type LogLine, type RoleProcess } from '../receivers/process-helpers.js';

const FULL = 0xffffffff;
export const SCAN: [number, number] = [4, 5];
export const POSITIONS = SCAN[0] * SCAN[1];
export const FRAMES_BEFORE = 3;
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
    'simulate', '--scan', `${SCAN[0]}x${SCAN[1]}`, '--seed', '17', '--frames-before', String(FRAMES_BEFORE), '--frames-after', '2',
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
});

export interface Run {
  finals: LogLine[];
  faults: FaultRecord[];
  dumps: string[];
  replay: RoleProcess;
}

export async function replayPipeline(name: string, replayArgs: string[], acquisitions: number): Promise<Run> {
  const base = await freeUdpPorts(8);
  const coord = await ElectionCoordinator.start({ endpoint: 'tcp://127.0.0.1:*', expectedSectors: SECTORS, timeoutMs: 10_000 });
  closers.push(() => coord.close());
  // a long frame timeout: on a loaded machine the sender may stall mid-frame, and a frame given up
  // early would look like loss
  const cfg = writeConfig(dir, `${name}.json`, {
    detector: { udp: { basePort: base } },
    receiver: { frameTimeoutMs: 3000 },
    election: { endpoint: coord.endpoint, timeoutMs: 10_000 },
  });
  const dumps = SECTORS.map((s) => join(dir, `${name}-s${s}.bin`));
  const rxs = SECTORS.map((s, k) =>
    spawnCli(`receiver-${s}`, ['receiver', '--sector', String(s), '--config', cfg, '--scan', `${SCAN[0]}x${SCAN[1]}`, '--dump-frames', dumps[k]!]),
  );
  procs.push(...rxs);
  await Promise.all(rxs.map((r) => r.waitForMsg('receiver listening', 30_000)));
  const faultLog = join(dir, `${name}-faults.jsonl`);
  const replay = spawnCli('replay', ['simulate', '--replay-bin', recDir, '--udp', `127.0.0.1:${base}`, '--seed', '29', '--fault-log', faultLog, ...replayArgs]);
  procs.push(replay);
  expect(await replay.exited, replay.rawStderr.slice(-5).join('\n')).toEqual({ code: 0, signal: null });
  await Promise.all(
    rxs.map((r) => r.waitFor(() => r.lines.filter((l) => l.msg === 'acquisition ended').length >= acquisitions, 30_000, `${acquisitions} acquisition(s) ended`)),
  );
  for (const r of rxs) expect(await r.stop(), r.name).toEqual({ code: 0, signal: null });
  for (const r of rxs) expect(r.lines.filter((l) => (l.level ?? 0) >= 50), r.name).toEqual([]);
  const faults = readFileSync(faultLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as FaultRecord);
  return { finals: rxs.map((r) => r.lines.find((l) => l.msg === 'receiver stopped: final counters')!), faults, dumps, replay };
}

/**
 * Every dumped frame of every acquisition against the truth. A replay frame of pass p is the
 * recording's stream frame (replay frame - p x framesPerPass): the lead-in is stream frame 0.
 */
export function checkDumps(r: Run, acquisitions: number, framesPerPass: number): number {
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
    acqs.forEach((a, pass) => {
      const lines = index.filter((l) => l.acquisition === a);
      expect(lines.map((l) => l.index).sort((x, y) => x - y), `sector ${s} pass ${pass}`).toEqual(Array.from({ length: POSITIONS }, (_, i) => i));
      for (const line of lines) {
        const replayFrame = pass * framesPerPass + FRAMES_BEFORE - 1 + line.index;
        const damage = lost.get(`${s}/${replayFrame}`) ?? 0;
        if (damage !== 0) damaged++;
        expect(line.damage, `sector ${s} pass ${pass} frame ${line.index}: damage`).toBe(damage);
        if (damage !== FULL) expect(line.frameId).not.toBeNull();
        const off = (pass * POSITIONS + line.index) * SECTOR_PIXELS * 2;
        const got = new Uint16Array(SECTOR_PIXELS);
        Buffer.from(got.buffer).set(bytes.subarray(off, off + SECTOR_PIXELS * 2));
        expect(firstDiff(got, withDamage(sectorOf(truth[line.index]!, s), damage)), `sector ${s} pass ${pass} frame ${line.index}`).toBe(-1);
      }
    });
  });
  return damaged;
}

export { spawnCli };
