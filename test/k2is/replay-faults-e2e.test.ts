/**
 * The recording of replay-helpers.ts replayed with faults (drops, a burst, duplicates,
 * reordering, corruption) into eight receiver processes: the damage bitmaps are exactly the
 * blocks the replay's --fault-log says were lost, every other pixel is the truth, the counters
 * match the log kind by kind. A bad directory is a one-line error and exit code 2.
 * Build first: the processes run the compiled CLI.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDumps, dir, procs, replayPipeline, SECTORS, spawnCli } from './replay-helpers.js';

describe('--write-bin recording -> --replay-bin with faults -> 8 receivers (processes, real UDP and ZeroMQ)', () => {
  it('with drops, a burst, duplicates, reordering and corruption: damage exactly as the replay fault log', async () => {
    const r = await replayPipeline('faults', ['--fps', '80', '--drop', '0.02', '--burst-drop', '40', '--duplicate', '0.02', '--reorder', '6', '--corrupt', '0.02'], 1);
    const damaged = checkDumps(r, 1, 25);
    expect(damaged).toBeGreaterThan(15); // the faults really hit the scan
    SECTORS.forEach((s, k) => {
      const n = (kind: string) => r.faults.filter((f) => f.sector === s && f.kind === kind).length;
      const rejected = r.finals[k]!.rejected as Record<string, number>;
      expect(rejected.bad_sync ?? 0, `sector ${s} bad_sync`).toBe(n('corrupt_sync'));
      expect(rejected.too_short ?? 0, `sector ${s} too_short`).toBe(n('corrupt_truncated'));
      expect(rejected.too_long ?? 0, `sector ${s} too_long`).toBe(n('corrupt_oversized'));
      expect(rejected.bad_coordinates ?? 0, `sector ${s} bad_coordinates`).toBe(n('corrupt_coordinates'));
      expect((r.finals[k]!.duplicates as number) + (r.finals[k]!.stragglers as number), `sector ${s} duplicates`).toBe(n('duplicate'));
    });
  });

  it('a bad directory: one line on stderr with the error code, exit code 2', async () => {
    for (const path of [join(dir, 'missing'), join(dir, 'truth.npy')]) {
      const p = spawnCli('bad', ['simulate', '--replay-bin', path, '--udp', '127.0.0.1:9']);
      procs.push(p);
      expect(await p.exited).toEqual({ code: 2, signal: null });
      expect(p.rawStderr).toHaveLength(1);
      expect(p.rawStderr[0]).toMatch(/^tessera: error TESSERA_ERR_SECTOR_FILES: /);
    }
  });
});
