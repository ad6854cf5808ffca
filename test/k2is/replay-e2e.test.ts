/**
 * A `tessera simulate --write-bin` recording (leading garbage, an incomplete last frame, a
 * truncated block, a frame_id reset; replay-helpers.ts) replayed twice with `--replay-bin
 * --loop` over real UDP into eight `tessera receiver` processes and an election coordinator:
 * two acquisitions, every dumped sector frame equal to the truth .npy bit for bit, and the
 * second pass continuing the first's counters (no resync, nothing missing).
 * Build first: the processes run the compiled CLI.
 */
import { describe, expect, it } from 'vitest';
import { checkDumps, replayPipeline } from './replay-helpers.js';

describe('--write-bin recording -> --replay-bin -> 8 receivers (processes, real UDP and ZeroMQ)', () => {
  it('--loop, two passes: two acquisitions, every sector frame equal to the truth bit for bit', async () => {
    // stream frames 0..23 (3 + 20 - 1 + 2) and the incomplete 24th: 25 replay frames per pass
    const r = await replayPipeline('loop', ['--fps', '60', '--loop', '--max-frames', '50'], 2);
    const done = r.replay.lines.find((l) => l.msg === 'replay done')!;
    expect(done).toMatchObject({ frames: 50, passes: 2, truncatedBlocksSkipped: 8, stoppedEarly: false });
    expect(r.faults).toEqual([]);
    // no frame missing and no resync: the second pass's block_counts continued the first's. Each
    // pass has 5 frames outside the scan, 2 of them incomplete as recorded (the lead-in and the
    // last); a loaded machine may lose a datagram of another one, so that count is a lower bound:
    // the scan frames themselves are checked exactly below.
    for (const f of r.finals) {
      expect(f).toMatchObject({ framesInScan: 40, framesOutsideScan: 10, framesMissing: 0, resyncs: 0, duplicates: 0, rejected: {}, acquisitions: 2 });
      expect(f.framesDamaged).toBeGreaterThanOrEqual(4);
    }
    expect(checkDumps(r, 2, 25)).toBe(0);
  });
});
