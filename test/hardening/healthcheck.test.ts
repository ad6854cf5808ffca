/**
 * deploy/healthcheck.mjs (the image's HEALTHCHECK) against real role processes: it reads the
 * role from the main process's command line (here /proc/<pid>/cmdline of a spawned role) and
 * checks that role: the merger's /api/status (with the configured token), a receiver's UDP
 * port. A dead merger, or a receiver whose port is not bound, is unhealthy (exit 1).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';
import { liveConfig } from '../merger/live-helpers.js';
import { freeUdpPorts, spawnCli, type RoleProcess } from '../receivers/process-helpers.js';

const SCRIPT = join(PROJECT_ROOT, 'deploy', 'healthcheck.mjs');
let procs: RoleProcess[] = [];
afterEach(async () => {
  await Promise.all(procs.map((p) => p.stop(5000)));
  procs = [];
});

function health(pid: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT], { env: { ...process.env, TESSERA_HEALTH_CMDLINE: `/proc/${pid}/cmdline` }, timeout: 20_000 }, (err, stdout) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout.trim() });
    });
  });
}

describe('deploy/healthcheck.mjs', () => {
  it('merger (with a token) and receiver healthy while they run; a dead merger is unhealthy', async () => {
    const token = 'health-control-token-0123456789';
    const base = await freeUdpPorts(8);
    const { path } = await liveConfig({ detector: { udp: { host: '127.0.0.1', basePort: base } }, merger: { http: { token } } });
    const merger = spawnCli('merger', ['merger', '-c', path]);
    procs.push(merger);
    await merger.waitForMsg('merger listening', 30_000);
    const receiver = spawnCli('receiver-2', ['receiver', '--sector', '2', '-c', path]);
    procs.push(receiver);
    await receiver.waitForMsg('receiver started', 30_000);

    const m = await health(merger.child.pid!);
    expect(m, m.out).toMatchObject({ code: 0 });
    expect(m.out).toMatch(/^healthy: merger answers/);
    const r = await health(receiver.child.pid!);
    expect(r, r.out).toMatchObject({ code: 0 });
    expect(r.out).toContain(`UDP port ${base + 2}`);

    merger.kill();
    await merger.exited;
    const dead = await new Promise<{ code: number; out: string }>((resolve) => {
      // a merger command line whose server is gone: the health check must say so
      execFile(process.execPath, [SCRIPT], { env: { ...process.env, TESSERA_HEALTH_CMDLINE: writeCmdline(['node', 'dist/src/cli.js', 'merger', '-c', path]) }, timeout: 20_000 }, (err, stdout) => resolve({ code: err ? 1 : 0, out: stdout.trim() }));
    });
    expect(dead.code).toBe(1);
    expect(dead.out).toMatch(/^unhealthy: merger HTTP/);
    const noPort = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(process.execPath, [SCRIPT], { env: { ...process.env, TESSERA_HEALTH_CMDLINE: writeCmdline(['node', 'dist/src/cli.js', 'receiver', '--sector', '5', '-c', path]) }, timeout: 20_000 }, (err, stdout) => resolve({ code: err ? 1 : 0, out: stdout.trim() }));
    });
    expect(noPort.code).toBe(1);
    expect(noPort.out).toContain(`UDP port ${base + 5} not bound`);
  }, 90_000);
});

function writeCmdline(args: string[]): string {
  const p = join(mkdtempSync(join(tmpdir(), 'tessera-health-')), 'cmdline');
  writeFileSync(p, args.join('\0') + '\0');
  return p;
}
