/** The shuffle line under the sector table: what it says for the states /api/status gives, frames lost with a worker included. */
import { describe, expect, it } from 'vitest';
import { describeShuffle } from '../../src/web/app/status-panel.js';

describe('the shuffle line', () => {
  it('says the workers, skipped frames, frames lost with a worker and restarts; bad when no worker or missing', () => {
    const base = { state: 'up' as const, workers: 2, pid: 7, restarts: 0, silentMs: 100, framesSkipped: 0, framesLostInWorkers: 0 };
    expect(describeShuffle(base)).toMatchObject({ text: 'shuffle: up, 2 workers', bad: false });
    expect(describeShuffle({ ...base, workers: 1, framesLostInWorkers: 3, restarts: 1 })).toMatchObject({ text: 'shuffle: up, 1 worker, 3 lost with a worker, restarted 1×', bad: false });
    expect(describeShuffle({ ...base, workers: 0, framesSkipped: 1536, framesLostInWorkers: 4 })).toMatchObject({ text: 'shuffle: up, no worker, 1,536 frames skipped, 4 lost with a worker', bad: true });
    expect(describeShuffle({ ...base, state: 'missing', workers: 0, silentMs: 12_400 }).bad).toBe(true);
    // an older shuffle does not say: nothing about it
    const { framesLostInWorkers: _, ...older } = base;
    expect(describeShuffle(older).text).toBe('shuffle: up, 2 workers');
    expect(describeShuffle({ ...base, framesLostInWorkers: 5 }).title).toContain('5 frames lost with a worker');
  });
});
