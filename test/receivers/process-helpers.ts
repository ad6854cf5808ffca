/**
 * Spawning receiver (and other role) processes from the compiled CLI for tests: JSON logs
 * collected line by line, waits on log messages, reading --dump-frames output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SECTOR_HEIGHT, SECTOR_PIXELS, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { CLI_PATH } from '../../src/paths.js';

export interface LogLine {
  msg?: string;
  level?: number;
  [k: string]: unknown;
}

export class RoleProcess {
  readonly lines: LogLine[] = [];
  readonly rawStderr: string[] = [];
  stdout = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<() => void> = [];

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let buf = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.rawStderr.push(line);
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.lines.push({ msg: line });
        }
        for (const w of this.waiters.splice(0)) w();
      }
    });
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (c: string) => (this.stdout += c));
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    void this.exited.then(() => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolve with the first log line matching `pred` (already seen or to come). */
  async waitFor(pred: (l: LogLine) => boolean, timeoutMs = 20_000, what = 'log line'): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (!this.running) throw new Error(`${this.name} exited before ${what}:\n${this.rawStderr.slice(-20).join('\n')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms:\n${this.rawStderr.slice(-20).join('\n')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, timeoutMs, `"${msg}"`);
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. */
  async stop(timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill('SIGTERM');
    const t = setTimeout(() => this.running && this.child.kill('SIGKILL'), timeoutMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

export function spawnCli(name: string, args: string[], env: Record<string, string> = {}): RoleProcess {
  if (!existsSync(CLI_PATH)) throw new Error(`${CLI_PATH} missing: build first (npx tsc -p tsconfig.json)`);
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    env: { ...process.env, TESSERA_LOG_JSON: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new RoleProcess(name, child);
}

/** A partial config overlay file in `dir`. */
export function writeConfig(dir: string, name: string, overlay: Record<string, unknown>): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(overlay));
  return p;
}

export interface DumpedFrame {
  sector: number;
  acquisition: number;
  index: number;
  scanIndex: number;
  epoch: number;
  frameKey: number;
  frameId: number | null;
  damage: number;
}

export function readDumpIndex(path: string): DumpedFrame[] {
  if (!existsSync(`${path}.jsonl`)) return [];
  return readFileSync(`${path}.jsonl`, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as DumpedFrame);
}

/** Frame `index` (frames since scan position 0) of the first acquisition in a dump file. */
export function readDumpFrame(path: string, index: number): Uint16Array {
  const bytes = readFileSync(path);
  const off = index * SECTOR_PIXELS * 2;
  const out = new Uint16Array(SECTOR_PIXELS);
  Buffer.from(out.buffer).set(bytes.subarray(off, off + SECTOR_PIXELS * 2));
  return out;
}

/** Columns [256 s, 256 s + 256) of a full 1860 x 2048 frame. */
export function sectorOf(full: Uint16Array, sector: number): Uint16Array {
  const out = new Uint16Array(SECTOR_PIXELS);
  for (let r = 0; r < SECTOR_HEIGHT; r++) {
    out.set(full.subarray(r * 2048 + sector * SECTOR_WIDTH, r * 2048 + sector * SECTOR_WIDTH + SECTOR_WIDTH), r * SECTOR_WIDTH);
  }
  return out;
}

export async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `n` consecutive free UDP ports on 127.0.0.1: the first of them. */
export { freeUdpBase as freeUdpPorts } from '../support/ports.js';
