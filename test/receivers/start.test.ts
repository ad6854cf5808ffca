/**
 * `tessera start` as a real process: election coordinator, eight receiver processes and the
 * simulator on loopback. The live table shows every sector acquiring; SIGINT stops every role
 * cleanly; a receiver that dies is reported by name and the whole pipeline is stopped, no
 * process left behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { freeUdpPorts, spawnCli, until, writeConfig, type RoleProcess } from './process-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tessera-start-'));
const procs: RoleProcess[] = [];
let childPids: number[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.kill();
  for (const pid of childPids.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function freeTcpPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** The latest table of the live output: sector -> [phase, in scan]. */
function lastTable(stdout: string): Map<number, { phase: string; inScan: number }> {
  const blocks = stdout.split(/^(?=tessera: |final:)/m);
  const rows = new Map<number, { phase: string; inScan: number }>();
  for (const line of (blocks[blocks.length - 1] ?? '').split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length === 12 && /^\d+$/.test(cols[0]!)) rows.set(Number(cols[0]), { phase: cols[1]!, inScan: Number(cols[5]) });
  }
  return rows;
}

async function startPipeline(name: string): Promise<{ start: RoleProcess; pids: Map<string, number> }> {
  const base = await freeUdpPorts(8);
  const cfg = writeConfig(dir, `${name}.json`, {
    detector: { udp: { basePort: base } },
    election: { endpoint: `tcp://127.0.0.1:${await freeTcpPort()}` },
    receiver: { statsIntervalMs: 300 },
  });
  const start = spawnCli('start', ['start', '--config', cfg, '--scan', '4x4', '--fps', '50']);
  procs.push(start);
  await until(() => {
    const t = lastTable(start.stdout);
    return t.size === 8 && [...t.values()].every((r) => r.phase === 'acquiring' && r.inScan > 0);
  }, 45_000, 'all eight sectors acquiring');
  const pids = new Map<string, number>();
  for (const l of start.lines) if (l.msg === 'started' && typeof l.pid === 'number') pids.set(String(l.role), l.pid);
  childPids = [...pids.values()];
  return { start, pids };
}

describe('tessera start', () => {
  it('runs coordinator, 8 receivers and the simulator; SIGINT stops every role cleanly', async () => {
    const { start, pids } = await startPipeline('clean');
    expect([...pids.keys()].sort()).toEqual(['receiver-0', 'receiver-1', 'receiver-2', 'receiver-3', 'receiver-4', 'receiver-5', 'receiver-6', 'receiver-7', 'simulator']);
    expect(start.lines.find((l) => l.msg === 'election decided')).toMatchObject({ voters: [0, 1, 2, 3, 4, 5, 6, 7] });
    start.child.kill('SIGINT');
    expect(await start.exited).toEqual({ code: 0, signal: null });
    expect(start.stdout).toContain('final:');
    const final = lastTable(start.stdout);
    expect(final.size).toBe(8);
    for (const pid of pids.values()) expect(alive(pid)).toBe(false);
    expect(start.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  });

  it('reports a receiver that dies and stops the whole pipeline', async () => {
    const { start, pids } = await startPipeline('dies');
    process.kill(pids.get('receiver-3')!, 'SIGKILL');
    const exit = await start.exited;
    expect(exit.code).toBe(2);
    expect(start.lines.find((l) => l.role === 'receiver-3' && l.level === 50)).toMatchObject({ signal: 'SIGKILL' });
    expect(start.rawStderr.join('\n')).toContain('TESSERA_ERR_ROLE_FAILED');
    for (const pid of pids.values()) expect(alive(pid)).toBe(false);
  });
});
