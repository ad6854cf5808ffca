/**
 * For the tests that run `tessera simulate` as a real process (the compiled CLI: build first)
 * against real UDP sockets on loopback. Calling simulateProcessHarness registers the hooks in
 * the test file: the CLI must exist, every child still running is killed and every socket closed
 * after each test, and the scratch directory is removed at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { CLI_PATH } from '../../src/paths.js';

/** `prefix`: name of the scratch directory made under the OS temp dir. */
export function simulateProcessHarness(prefix: string) {
  const children: ChildProcess[] = [];
  const sockets: dgram.Socket[] = [];
  const dir = mkdtempSync(join(tmpdir(), prefix));

  beforeAll(() => {
    if (!existsSync(CLI_PATH)) throw new Error(`${CLI_PATH} missing: build first (npx tsc -p tsconfig.json)`);
  });
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const s of sockets.splice(0)) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function bindSocket(port: number, address = '127.0.0.1', reuse = false): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type: 'udp4', reuseAddr: reuse });
      s.once('error', reject);
      s.bind(port, address, () => {
        s.off('error', reject);
        resolve(s);
      });
    });
  }

  /** Eight sockets on consecutive free ports BASE..BASE+7, with large receive buffers; `got[s]`: what sector s received. */
  async function sectorSockets(address = '127.0.0.1', reuse = false): Promise<{ base: number; socks: dgram.Socket[]; got: Buffer[][] }> {
    for (let attempt = 0; attempt < 40; attempt++) {
      const first = await bindSocket(0, address, reuse);
      const base = first.address().port;
      const socks = [first];
      try {
        if (base + 7 > 65535) throw new Error('no room');
        for (let s = 1; s < 8; s++) socks.push(await bindSocket(base + s, address, reuse));
      } catch {
        for (const s of socks) s.close();
        continue;
      }
      const got: Buffer[][] = socks.map(() => []);
      socks.forEach((s, i) => {
        s.setRecvBufferSize(4 << 20);
        s.on('message', (m) => got[i]!.push(m));
        sockets.push(s);
      });
      return { base, socks, got };
    }
    throw new Error('no 8 consecutive free UDP ports');
  }

  /** `tessera simulate <args>` with JSON logs, to its exit. */
  function runCli(args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI_PATH, 'simulate', ...args], {
        env: { ...process.env, TESSERA_LOG_JSON: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let stderr = '';
      let stdout = '';
      child.stderr!.on('data', (d) => (stderr += d));
      child.stdout!.on('data', (d) => (stdout += d));
      child.on('exit', (code) => resolve({ code, stderr, stdout }));
    });
  }

  return { children, dir, bindSocket, sectorSockets, runCli };
}
