/** StreamPacer: backlog from update timestamps -> fewer updates while the page falls behind, more when quiet. */
import { describe, expect, it } from 'vitest';
import type { AppliedUpdate } from '../../src/client/tessera-client.js';
import { StreamPacer } from '../../src/web/app/stream-pacer.js';

function setup(maxRate = 60) {
  let listener: ((u: AppliedUpdate) => void) | null = null;
  const client = { on: (_e: 'update', l: (u: AppliedUpdate) => void) => ((listener = l), () => (listener = null)) };
  let local = 0;
  const rates: number[] = [];
  const pacer = new StreamPacer(client as never, maxRate, (r) => rates.push(r), undefined, () => local);
  /** an update sent at server time `sent`, seen at `seen` (the server clock runs 10 s ahead of ours) */
  const update = (sent: number, seen: number) => {
    local = seen;
    listener!({ t: sent + 10_000 } as AppliedUpdate);
  };
  return { pacer, rates, update, detached: () => listener === null };
}

describe('StreamPacer', () => {
  it('measures the backlog against the fastest delivery, whatever the clock offset', () => {
    const { pacer, update } = setup();
    update(0, 20); // 20 ms in transit: the baseline
    expect(pacer.lagMs).toBe(0);
    update(100, 150); // 50 ms: 30 ms of backlog
    expect(pacer.lagMs).toBe(30);
  });

  it('halves the rate while the page lags, at most once per 2 s, down to 1/s', () => {
    const { pacer, rates, update } = setup();
    update(0, 10);
    update(1000, 1700); // 690 ms behind
    expect(rates).toEqual([30]);
    update(1100, 1900); // still behind, but too soon for another change
    expect(rates).toEqual([30]);
    for (let k = 1; k <= 8; k++) update(1000 + k * 2100, 1700 + k * 2100);
    expect(rates).toEqual([30, 15, 7, 3, 1]);
    expect(pacer.rate).toBe(1);
  });

  it('asks for more again after 5 quiet seconds, up to the maximum', () => {
    const { pacer, rates, update } = setup(60);
    update(0, 10);
    update(1000, 2000); // behind: 30
    let t = 4000;
    // quiet (10 ms in transit) from now on
    for (; t < 30_000; t += 500) update(t, t + 10);
    expect(rates[0]).toBe(30);
    expect(rates.slice(1)).toEqual([60]);
    expect(pacer.rate).toBe(60);
    // nothing above the maximum
    for (; t < 60_000; t += 500) update(t, t + 10);
    expect(rates).toEqual([30, 60]);
  });

  it('stop() detaches it from the client', () => {
    const { pacer, detached } = setup();
    pacer.stop();
    expect(detached()).toBe(true);
  });
});
