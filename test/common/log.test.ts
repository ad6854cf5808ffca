/**
 * flushLog: a process that awaits its log's flush at its end finishes even when the flush
 * callback never comes (a pino transport on an idle event loop, pinojs/pino#2481; `tessera
 * offline` on a terminal once exited with code 13, "unsettled top-level await", in CI). Checked
 * in a child process whose event loop has nothing else to do, with a real pino logger, and with
 * one whose flush never calls back.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const run = (body: string) =>
  spawnSync(process.execPath, ['--input-type=module', '-e', `import { createLogger, flushLog } from '${new URL('../../dist/src/log.js', import.meta.url).href}';\n${body}`], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, TESSERA_LOG_LEVEL: 'info' },
  });

describe('flushLog', () => {
  it('settles when the flush never calls back: the process ends normally, after the timeout', () => {
    const r = run(`const t0 = Date.now(); await flushLog({ flush() {} }, 300); console.log('settled after', Date.now() - t0);`);
    expect(r.status, r.stderr).toBe(0);
    const ms = Number(/settled after (\d+)/.exec(r.stdout)?.[1]);
    expect(ms).toBeGreaterThanOrEqual(290);
    // the plain await of a callback that never comes is what exits with 13
    const bare = run(`await new Promise((r) => ({ flush() {} }).flush(() => r())); console.log('settled');`);
    expect(bare.status).toBe(13);
  });

  it('with a real pino logger: its lines are out when it settles, well before the timeout', () => {
    const r = run(`const log = createLogger('flush-test'); log.info({ n: 1 }, 'the line'); const t0 = Date.now(); await flushLog(log, 10_000); process.stdout.write('settled after ' + (Date.now() - t0) + '\\n');`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain('"msg":"the line"');
    expect(Number(/settled after (\d+)/.exec(r.stdout)?.[1])).toBeLessThan(5000);
  });
});
