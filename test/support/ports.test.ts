/**
 * The test port allocator: ports are checked, not held, so two requests must never get the same
 * one (CI once bound a shuffle's two endpoints to one port), and vitest's parallel workers must
 * draw from disjoint ranges.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { candidatePort, freeTcpPort, freeUdpBase } from './ports.js';

describe('test ports', () => {
  it('never hands out a port twice in one process, below the ephemeral range', async () => {
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const p = await freeTcpPort();
      expect(seen.has(p)).toBe(false);
      seen.add(p);
      expect(p).toBeGreaterThanOrEqual(10_000);
      expect(p).toBeLessThan(32_768);
    }
    const base = await freeUdpBase(8);
    for (let k = 0; k < 8; k++) expect(seen.has(base + k)).toBe(false);
    // a whole slice's worth of candidates before the first repeats
    const first = candidatePort();
    let n = 1;
    while (candidatePort() !== first) n++;
    expect(n).toBeGreaterThan(5000);
  });

  it('two vitest workers draw from disjoint ranges', () => {
    const script = `import('./bench/free-ports.ts').then((m) => { const a = []; for (let i = 0; i < 6000; i++) a.push(m.candidatePort()); console.log(JSON.stringify([Math.min(...a), Math.max(...a)])); })`;
    const range = (pool: string) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { env: { ...process.env, VITEST_POOL_ID: pool }, encoding: 'utf8' });
      return JSON.parse(r.stdout) as [number, number];
    };
    const [a, b] = [range('1'), range('2')];
    expect(a[1] < b[0] || b[1] < a[0]).toBe(true);
  });
});
