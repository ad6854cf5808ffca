/** Shared by the `tessera offline` process tests: make simulator recordings, run the CLI. */
import { spawn } from 'node:child_process';
import { CLI_PATH } from '../../src/paths.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ReturnType<typeof spawn>>();

export interface CliOptions {
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
  /** called with each chunk of stderr as it arrives */
  onStderr?: (chunk: string, child: ReturnType<typeof spawn>) => void;
}

/** Run the compiled CLI; the child is killed by killChildren() if a test fails before it ends. */
export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_PATH, ...args], {
      cwd: options.cwd,
      env: { ...process.env, TESSERA_LOG_JSON: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      options.onStderr?.(d.toString(), child);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

export function killChildren(): void {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
}

/** `tessera simulate --write-bin DIR --name NAME --truth DIR/NAME-truth.npy` with extra args. */
export async function simulateRecording(dir: string, name: string, args: string[]): Promise<void> {
  const r = await runCli(['simulate', '--write-bin', dir, '--name', name, '--truth', `${dir}/${name}-truth.npy`, ...args], { env: { TESSERA_LOG_LEVEL: 'warn' } });
  if (r.code !== 0) throw new Error(`simulate failed (${r.code}): ${r.stderr}`);
}

/** stderr lines that are not pino JSON log lines (what a person reads). */
export function plainLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{"level"'));
}
