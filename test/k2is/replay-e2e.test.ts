/**
 * A `tessera simulate --write-bin` recording (leading garbage, an incomplete last frame, a
 * truncated block, a frame_id reset; replay-helpers.ts) replayed twice with `--replay-bin
 * --loop` over real UDP into eight `tessera receiver` processes and an election coordinator:
 * two acquisitions, every dumped sector frame equal to the truth .npy bit for bit, and the
 * second pass continuing the first's counters (no resync, nothing missing).
 * Build first: the processes run the compiled CLI.
 */
import { describe, expect, it } from 'vitest';
import { checkDumps, FRAMES_PER_PASS, POSITIONS, replayPipeline } from './replay-helpers.js';

describe('--write-bin recording -> --replay-bin -> 8 receivers (processes, real UDP and ZeroMQ)', () => {
  it('--loop, two passes: two acquisitions, every sector frame equal to the truth bit for bit', async () => {
    // stream frames 0..38 (3 + 20 - 1 + 17) and the incomplete 39th: 40 replay frames per pass
    const r = await replayPipeline('loop', ['--fps', '60', '--loop', '--max-frames', String(2 * FRAMES_PER_PASS)], 2);
    const done = r.replay.lines.find((l) => l.msg === 'replay done')!;
    expect(done).toMatchObject({ frames: 2 * FRAMES_PER_PASS, passes: 2, truncatedBlocksSkipped: 8, stoppedEarly: false });
    expect(r.faults).toEqual([]);
    // no frame missing and no resync (unless the kernel dropped that much): the second pass's
    // block_counts continued the first's. Each pass has 20 frames outside the scan, 2 of them
    // incomplete as recorded (the lead-in and the last). Beyond those, a frame is damaged only by
    // blocks the kernel dropped (replayPipeline accounts for every datagram), and the scan frames
    // are checked block by block below.
    r.finals.forEach((f, k) => {
      expect(f).toMatchObject({ framesInScan: 2 * POSITIONS, duplicates: 0, stragglers: 0, rejected: {}, acquisitions: 2 });
      // a resync takes a loss longer than the frames a receiver holds in flight (16 x 32 blocks)
      if (r.lostToKernel[k]! < 16 * 32) expect(f.resyncs, `sector ${k} resyncs`).toBe(0);
      expect(f.framesDamaged).toBeGreaterThanOrEqual(4);
      expect((f.framesDamaged as number) + (f.framesMissing as number) - 4, `sector ${k}: frames damaged beyond the recording's`).toBeLessThanOrEqual(r.lostToKernel[k]!);
      // a frame at either end of the stream that the kernel took whole is never known to the receiver
      const unseen = 2 * (FRAMES_PER_PASS - POSITIONS) - (f.framesOutsideScan as number);
      expect(unseen, `sector ${k}: frames outside the scan never seen`).toBeGreaterThanOrEqual(0);
      expect(unseen, `sector ${k}: frames outside the scan never seen`).toBeLessThanOrEqual(r.lostToKernel[k]!);
    });
    expect(checkDumps(r, 2)).toBe(0);
  }, 180_000);
});
