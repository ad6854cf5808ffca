/**
 * The recording of replay-helpers.ts replayed with faults (drops, a burst, duplicates,
 * reordering, corruption) into eight receiver processes: the damage bitmaps are exactly the
 * blocks the replay's --fault-log says were lost, every other pixel is the truth, the counters
 * match the log kind by kind (loss the kernel adds on a loaded machine is accounted for: see
 * replay-helpers.ts). A bad directory is a one-line error and exit code 2.
 * Build first: the processes run the compiled CLI.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDumps, dir, procs, replayPipeline, SECTORS, spawnCli } from './replay-helpers.js';

describe('--write-bin recording -> --replay-bin with faults -> 8 receivers (processes, real UDP and ZeroMQ)', () => {
  it('with drops, a burst, duplicates, reordering and corruption: damage exactly as the replay fault log', async () => {
    const r = await replayPipeline('faults', ['--fps', '80', '--drop', '0.02', '--burst-drop', '40', '--duplicate', '0.02', '--reorder', '6', '--corrupt', '0.02'], 1);
    const damaged = checkDumps(r, 1);
    expect(damaged).toBeGreaterThan(15); // the faults really hit the scan
    // every kind of fault really happened, in every sector; the counters match the fault log
    // kind by kind (replayPipeline's accounting: exactly, unless the kernel dropped some datagrams)
    for (const s of SECTORS) {
      const kinds = new Set(r.faults.filter((f) => f.sector === s).map((f) => f.kind));
      expect([...kinds], `sector ${s} fault kinds`).toEqual(expect.arrayContaining(['burst_drop', 'drop', 'duplicate']));
    }
  }, 180_000);

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
