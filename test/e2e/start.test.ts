/**
 * `tessera start` as a real process: merger, eight receivers and the continuous simulator, each
 * a child process; it prints the merger's URL, and the default acquisition runs so that a
 * client sees live maps without any call of its own. SIGINT stops every role; a child that dies
 * is reported and the pipeline stopped.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { liveConfig, waitUntil } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

let procs: RoleProcess[] = [];
let pids: number[] = [];
let clients: TesseraClient[] = [];

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // an orphan that exited stays a zombie until whoever adopted it reaps it (a container's init may not)
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

afterEach(async () => {
  for (const c of clients) await c.close().catch(() => {});
  clients = [];
  await Promise.all(procs.map((p) => p.stop(15_000)));
  procs = [];
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  pids = [];
}, 40_000);

async function start(): Promise<{ start: RoleProcess; url: string; roles: Map<string, number> }> {
  const base = await freeUdpPorts(8);
  const { path } = await liveConfig({ detector: { udp: { host: '127.0.0.1', basePort: base } }, receiver: { statsIntervalMs: 500 }, merger: { chunkTimeoutMs: 5000 } });
  const p = spawnCli('start', ['start', '--config', path, '--scan', '4x8', '--fps', '30']);
  procs.push(p);
  await waitUntil(() => /tessera: (http:\/\/\S+)/.test(p.stdout) || !p.running, 60_000, 'the URL on stdout');
  const url = /tessera: (http:\/\/\S+)/.exec(p.stdout)![1]!;
  await p.waitForMsg('pipeline running (Ctrl-C stops)', 60_000);
  const roles = new Map<string, number>();
  for (const l of p.lines) if (l.msg === 'started' && typeof l.pid === 'number') roles.set(String(l.role), l.pid);
  pids = [...roles.values()];
  return { start: p, url, roles };
}

describe('tessera start', () => {
  it('prints the URL, runs merger, 8 receivers and the simulator, starts the default acquisition; SIGINT stops every role', async () => {
    const { start: p, url, roles } = await start();
    expect([...roles.keys()].sort()).toEqual(['merger', 'receiver-0', 'receiver-1', 'receiver-2', 'receiver-3', 'receiver-4', 'receiver-5', 'receiver-6', 'receiver-7', 'simulator']);
    const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    clients.push(client);
    await p.waitForMsg('default acquisition started: open the URL in a browser', 60_000);
    const status = await client.api.status();
    expect(status.acquisition).toMatchObject({ state: 'running', mode: 'continuous', scanShape: [4, 8] });
    expect(status.acquisition!.udfs.map((u) => u.id)).toEqual(['sum', 'sumsig', 'detectors', 'com']);
    // live pictures without any call of the client's own: a nav map fills and the sum image is not empty
    await client.connect();
    client.subscribe({ acquisition: 'current' });
    const mirror = await client.waitFor((m) => {
      const merged = m.get('_damage', 'sectorsComplete')?.data as Uint8Array | undefined;
      const sum = m.get('sum', 'intensity')?.data as Float32Array | undefined;
      return !!merged && merged.filter((v) => v > 0).length >= 8 && !!sum && sum.some((v) => v > 0);
    }, 60_000);
    const bf = mirror.get('detectors', 'intensity')!.data as Float64Array;
    expect(bf.some((v) => v > 0)).toBe(true);

    p.child.kill('SIGINT');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    for (const pid of roles.values()) expect(alive(pid)).toBe(false);
    expect(p.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
  }, 150_000);

  it('reports the merger dying and stops the whole pipeline', async () => {
    const { start: p, roles } = await start();
    process.kill(roles.get('merger')!, 'SIGKILL');
    const exit = await p.exited;
    expect(exit.code).not.toBe(0);
    expect(p.lines.find((l) => l.role === 'merger' && l.level === 50)).toMatchObject({ signal: 'SIGKILL' });
    expect(p.rawStderr.join('\n')).toContain('TESSERA_ERR_ROLE_FAILED');
    await waitUntil(() => [...roles.values()].every((pid) => !alive(pid)), 20_000, 'every role gone');
  }, 150_000);

  it('killed itself (SIGKILL, no chance to stop its roles): no role outlives it, the camera simulator included', async () => {
    const { start: p, roles } = await start();
    expect(alive(roles.get('simulator')!)).toBe(true);
    p.child.kill('SIGKILL');
    await p.exited;
    // each role notices its parent is gone within a second or two and stops (the simulator may
    // still be starting up when its parent dies: it compares with the pid start gave it)
    await waitUntil(() => [...roles.values()].every((pid) => !alive(pid)), 20_000, 'every role gone');
  }, 150_000);
});
