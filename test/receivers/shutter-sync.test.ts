/**
 * ShutterSync: scan position 0 is the frame before the first flagged one; the elected key
 * decides the mapping even when it is earlier than this sector's own; frames held during the
 * vote are bounded; single scans end after N positions and re-arm on the next edge; continuous
 * scans repeat; time series end when the flag goes off; a receiver that starts with the flag on
 * asks instead of voting. Frames here carry real slots, so slot accounting is checked too.
 */
import { describe, expect, it } from 'vitest';
import { SECTOR_FRAME_PAYLOAD_BYTES } from '../../src/k2is/constants.js';
import { Uint12Decoder } from '../../src/k2is/decode12.js';
import type { ElectionAnswer } from '../../src/protocol/election.js';
import { FrameSlotPool } from '../../receivers/frame-slots.js';
import type { AssembledFrame } from '../../receivers/sector-frame-assembler.js';
import { LocalElector, ShutterSync, type FirstFrameElector, type ScanFrame } from '../../receivers/shutter-sync.js';
import { ReceiverCounters } from '../../receivers/stats.js';
import type { AcquisitionInfo, AcquisitionSummary } from '../../receivers/tile.js';

const FULL = 0xffffffff;
const dec = Uint12Decoder.create({ initialBytes: 40 * SECTOR_FRAME_PAYLOAD_BYTES });

/** An elector whose answers the test gives, recording the proposals. */
class ScriptedElector implements FirstFrameElector {
  readonly proposals: Array<{ frameKey: number; frameId: number; sawEdge: boolean }> = [];
  private resolvers: Array<(a: ElectionAnswer) => void> = [];
  propose(p: { frameKey: number; frameId: number; sawEdge: boolean }): Promise<ElectionAnswer> {
    this.proposals.push(p);
    return new Promise((r) => this.resolvers.push(r));
  }
  answer(a: ElectionAnswer): void {
    this.resolvers.shift()!(a);
  }
}

function setup(o: { elector?: FirstFrameElector; positions: number | null; continuous?: boolean; bufferFrames?: number; slots?: number; streamIdleMs?: number }) {
  const mark = dec.mark();
  const pool = new FrameSlotPool(dec, o.slots ?? 30);
  const frames: ScanFrame[] = [];
  const starts: AcquisitionInfo[] = [];
  const ends: AcquisitionSummary[] = [];
  const counters = new ReceiverCounters();
  const sync = new ShutterSync({
    sector: 2,
    elector: o.elector ?? new LocalElector(),
    local: !o.elector,
    pool,
    scanPositions: o.positions,
    continuous: o.continuous ?? false,
    bufferFrames: o.bufferFrames ?? 16,
    streamIdleMs: o.streamIdleMs,
    counters,
    onFrame: (sf) => {
      frames.push(sf);
      pool.release(sf.frame.slot);
    },
    onAcquisitionStart: (a) => starts.push(a),
    onAcquisitionEnd: (a) => ends.push(a),
  });
  let seq = 0;
  /** Push stream frame f (key 32 f + 3, frame_id 1000 + f unless given): shutter given, or missing entirely. */
  const push = (f: number, what: 'off' | 'on' | 'missing', frameId = 1000 + f) => {
    const slot = what === 'missing' ? -1 : pool.acquire();
    const fr: AssembledFrame = {
      key: (32 * f + 3) >>> 0,
      seq: seq++,
      stream: 0,
      frameId: what === 'missing' ? null : frameId >>> 0,
      shutter: what === 'on',
      damage: what === 'missing' ? FULL : 0,
      blocks: what === 'missing' ? 0 : 32,
      slot,
    };
    sync.push(fr);
  };
  const release = () => dec.release(mark);
  return { sync, pool, frames, starts, ends, counters, push, release, key: (f: number) => (32 * f + 3) >>> 0 };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

/** Frames 0 (flag off) and 1 (on), the election deciding on frame 1 in `round`: acquiring from position 0. */
async function edgeDecided(t: ReturnType<typeof setup>, el: ScriptedElector, round: number): Promise<void> {
  t.push(0, 'off');
  t.push(1, 'on');
  el.answer({ kind: 'decision', firstActiveKey: t.key(1), round, decidedBy: 'all', missing: [], late: false });
  await tick();
}

describe('ShutterSync', () => {
  it('scan position 0 is the frame before the first flagged one; a single scan ends after N positions', async () => {
    const t = setup({ positions: 4 });
    for (let f = 0; f < 5; f++) t.push(f, 'off');
    t.push(5, 'on'); // first flagged: position 1; frame 4 is position 0
    await tick();
    for (let f = 6; f < 12; f++) t.push(f, 'on');
    expect(t.frames.map((s) => [s.index, s.scanIndex, s.frame.key])).toEqual([
      [0, 0, t.key(4)],
      [1, 1, t.key(5)],
      [2, 2, t.key(6)],
      [3, 3, t.key(7)],
    ]);
    expect(t.starts).toEqual([expect.objectContaining({ acquisition: 1, firstActiveKey: t.key(5), decidedBy: 'local', joinedAt: 0 })]);
    expect(t.ends).toEqual([expect.objectContaining({ frames: 4, reason: 'complete' })]);
    expect(t.sync.phase).toBe('armed');
    expect(t.pool.available).toBe(t.pool.size); // every frame outside the scan was released
    expect(t.counters.framesInScan).toBe(4);
    expect(t.counters.framesOutsideScan).toBe(12 - 4);
    // the flag stays on after the scan: nothing starts until it goes off and on again
    t.push(12, 'off');
    t.push(13, 'on');
    await tick();
    t.push(14, 'on');
    expect(t.starts).toHaveLength(2);
    expect(t.frames.slice(4).map((s) => [s.acquisition, s.index, s.frame.key])).toEqual([
      [2, 0, t.key(12)],
      [2, 1, t.key(13)],
      [2, 2, t.key(14)],
    ]);
    t.release();
  });

  it('maps by the elected key when it is earlier than this sector\'s own (first flagged frame lost here)', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 6 });
    t.push(0, 'off');
    t.push(1, 'off'); // position 0
    t.push(2, 'missing'); // the first flagged frame, lost entirely in this sector
    t.push(3, 'on');
    expect(el.proposals).toEqual([{ frameKey: t.key(3), frameId: 1003, sawEdge: true }]);
    t.push(4, 'on'); // held while the vote is open
    expect(t.frames).toHaveLength(0);
    el.answer({ kind: 'decision', firstActiveKey: t.key(2), round: 1, decidedBy: 'all', missing: [], late: false });
    await tick();
    t.push(5, 'on');
    expect(t.frames.map((s) => [s.index, s.frame.key, s.frame.damage === FULL])).toEqual([
      [0, t.key(1), false],
      [1, t.key(2), true],
      [2, t.key(3), false],
      [3, t.key(4), false],
      [4, t.key(5), false],
    ]);
    expect(t.starts[0]).toMatchObject({ decidedBy: 'all', firstActiveKey: t.key(2) });
    t.release();
  });

  it('a position 0 frame no longer in the history is handed on as missing', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 20 });
    for (let f = 0; f < 4; f++) t.push(f, 'off');
    for (let f = 4; f < 8; f++) t.push(f, 'missing'); // a long loss right at the edge, here only
    t.push(8, 'on');
    // the others saw the first flag at frame 4: position 0 is frame 3, pushed out of the
    // 4-frame history by the missing ones
    el.answer({ kind: 'decision', firstActiveKey: t.key(4), round: 1, decidedBy: 'timeout', missing: [5], late: false });
    await tick();
    expect(t.frames.map((s) => [s.index, s.frame.key, s.frame.damage === FULL, s.frame.slot >= 0])).toEqual([
      [0, t.key(3), true, false],
      [1, t.key(4), true, false],
      [2, t.key(5), true, false],
      [3, t.key(6), true, false],
      [4, t.key(7), true, false],
      [5, t.key(8), false, true],
    ]);
    expect(t.starts[0]!.missingSectors).toEqual([5]);
    expect(t.pool.available).toBe(t.pool.size);
    t.release();
  });

  it('the election wins over this sector\'s flag: flag-off frames after the elected start are in the scan', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 8 });
    for (let f = 0; f < 3; f++) t.push(f, 'off');
    t.push(3, 'on');
    t.push(4, 'on');
    el.answer({ kind: 'decision', firstActiveKey: t.key(2), round: 1, decidedBy: 'all', missing: [], late: false });
    await tick();
    expect(t.frames.map((s) => [s.index, s.frame.key])).toEqual([
      [0, t.key(1)],
      [1, t.key(2)],
      [2, t.key(3)],
      [3, t.key(4)],
    ]);
    t.push(5, 'off'); // after a flagged frame of the acquisition: the end
    expect(t.ends[0]).toMatchObject({ reason: 'shutter_off', frames: 4 });
    t.release();
  });

  it('frames beyond the vote buffer keep their positions but lose their data (counted)', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 20, bufferFrames: 3 });
    t.push(0, 'off');
    t.push(1, 'on');
    for (let f = 2; f < 6; f++) t.push(f, 'on');
    // held: frame 0 (history) + 1, 2 with data; 3, 4, 5 without
    expect(t.counters.framesDroppedWhileVoting).toBe(3);
    expect(t.pool.available).toBe(t.pool.size - 3);
    el.answer({ kind: 'decision', firstActiveKey: t.key(1), round: 1, decidedBy: 'all', missing: [], late: false });
    await tick();
    expect(t.frames.map((s) => [s.index, s.frame.slot >= 0, s.frame.damage === FULL])).toEqual([
      [0, true, false],
      [1, true, false],
      [2, true, false],
      [3, false, true],
      [4, false, true],
      [5, false, true],
    ]);
    t.release();
  });

  it('continuous acquisitions repeat the scan in epochs while the flag stays on, and end when it goes off', async () => {
    const t = setup({ positions: 3, continuous: true });
    t.push(0, 'off');
    t.push(1, 'on');
    await tick();
    for (let f = 2; f < 8; f++) t.push(f, 'on');
    t.push(8, 'off');
    expect(t.frames.map((s) => [s.epoch, s.scanIndex])).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [1, 0],
      [1, 1],
      [1, 2],
      [2, 0],
      [2, 1],
    ]);
    expect(t.ends).toEqual([expect.objectContaining({ reason: 'shutter_off', frames: 8 })]);
    t.release();
  });

  it('a time series runs until the flag goes off', async () => {
    const t = setup({ positions: null });
    t.push(0, 'off');
    t.push(1, 'on');
    await tick();
    t.push(2, 'on');
    t.push(3, 'missing'); // a lost frame says nothing about the flag
    t.push(4, 'on');
    t.push(5, 'off');
    expect(t.frames.map((s) => s.scanIndex)).toEqual([0, 1, 2, 3, 4]);
    expect(t.ends[0]).toMatchObject({ reason: 'shutter_off', frames: 5 });
    t.release();
  });

  it('a receiver that starts with the flag already on asks, and joins the acquisition under way', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 100 });
    t.push(50, 'on');
    t.push(51, 'on');
    expect(el.proposals).toEqual([{ frameKey: t.key(50), frameId: 1050, sawEdge: false }]);
    el.answer({ kind: 'decision', firstActiveKey: t.key(41), round: 1, decidedBy: 'all', missing: [], late: true });
    await tick();
    t.push(52, 'on');
    expect(t.starts[0]).toMatchObject({ joinedAt: 10 });
    expect(t.frames.map((s) => s.scanIndex)).toEqual([10, 11, 12]);
    t.release();
  });

  it('without an acquisition to join it waits for the edge, asking only once', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 4 });
    t.push(0, 'on');
    el.answer({ kind: 'none' });
    await tick();
    t.push(1, 'on');
    t.push(2, 'on');
    expect(el.proposals).toHaveLength(1);
    t.push(3, 'off');
    t.push(4, 'on');
    expect(el.proposals[1]).toEqual({ frameKey: t.key(4), frameId: 1004, sawEdge: true });
    expect(t.pool.available).toBe(t.pool.size - 2); // frames 3, 4 held for the vote
    t.release();
  });

  it('with no answer at all a sector that saw the edge starts on its own flag', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 4 });
    t.push(0, 'off');
    t.push(1, 'on');
    el.answer({ kind: 'no_answer' });
    await tick();
    expect(t.starts[0]).toMatchObject({ decidedBy: 'local', firstActiveKey: t.key(1) });
    expect(t.frames.map((s) => s.scanIndex)).toEqual([0, 1]);
    t.release();
  });

  it('a stream restart ends the acquisition; re-armed, it asks and rejoins at the right position', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 100, continuous: true });
    await edgeDecided(t, el, 1);
    t.push(2, 'on');
    t.sync.onResync({ fromKey: t.key(3), toKey: t.key(500), frames: 497, kind: 'restart' });
    expect(t.ends).toEqual([expect.objectContaining({ reason: 'jump', frames: 3 })]);
    t.push(500, 'on'); // flag on, no edge seen since the restart: a query
    expect(el.proposals[1]).toEqual({ frameKey: t.key(500), frameId: 1500, sawEdge: false });
    el.answer({ kind: 'decision', firstActiveKey: t.key(1), round: 1, decidedBy: 'all', missing: [], late: true });
    await tick();
    t.push(501, 'on');
    expect(t.frames.slice(3).map((s) => [s.acquisition, s.index, s.epoch, s.scanIndex])).toEqual([
      [2, 500, 5, 0],
      [2, 501, 5, 1],
    ]);
    expect(t.pool.available).toBe(t.pool.size);
    t.release();
  });

  it('frame_id breaking off under a flagged acquisition is a new detector acquisition: ended there, the new one starts on that frame', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 100, continuous: true });
    await edgeDecided(t, el, 1);
    t.push(2, 'on');
    t.push(3, 'missing'); // no frame_id to check
    t.push(4, 'on'); // follows on across the missing frame: 1004
    t.push(5, 'on', 2 ** 32 - 1 + 0); // wraps later: 1005 expected, this is a break
    expect(t.ends).toEqual([expect.objectContaining({ acquisition: 1, reason: 'jump', frames: 5 })]);
    expect(el.proposals[1]).toEqual({ frameKey: t.key(5), frameId: 2 ** 32 - 1, sawEdge: true });
    el.answer({ kind: 'decision', firstActiveKey: t.key(5), round: 2, decidedBy: 'all', missing: [], late: false });
    await tick();
    t.push(6, 'on', 0); // the new acquisition's frame_id wraps at 2^32: no break
    t.push(7, 'on', 1);
    expect(t.ends).toHaveLength(1);
    // the first acquisition has frames 0..4 only; the new one starts with position 0 (the frame
    // before its first flagged one, which belonged to the old acquisition) missing
    expect(t.frames.map((s) => [s.acquisition, s.index, s.frame.frameId])).toEqual([
      [1, 0, 1000],
      [1, 1, 1001],
      [1, 2, 1002],
      [1, 3, null],
      [1, 4, 1004],
      [2, 0, null],
      [2, 1, 2 ** 32 - 1],
      [2, 2, 0],
      [2, 3, 1],
    ]);
    expect(t.frames[5]!.frame.damage).toBe(FULL);
    expect(t.pool.available).toBe(t.pool.size);
    t.release();
  });

  it('the frame_id reset where the flag appears (284990 -> 2) is no break', async () => {
    const t = setup({ positions: 4 });
    t.push(0, 'off', 284990);
    t.push(1, 'on', 2);
    await tick();
    t.push(2, 'on', 3);
    t.push(3, 'on', 4);
    expect(t.ends).toEqual([expect.objectContaining({ reason: 'complete', frames: 4 })]);
    expect(t.frames.map((s) => s.frame.frameId)).toEqual([284990, 2, 3, 4]);
    t.release();
  });

  it('after the stream went silent (stream_stopped), flagged frames coming back ask for the acquisition under way and rejoin it at its position', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 100, continuous: true, streamIdleMs: 1000 });
    await edgeDecided(t, el, 7);
    t.push(2, 'on');
    expect(t.sync.tick(performance.now() + 1500)).toBe(true);
    expect(t.ends).toEqual([expect.objectContaining({ reason: 'stream_stopped', frames: 3 })]);
    // the link comes back (the assembler bridged the gap: the same sequence, frames 3..39 missing)
    t.push(40, 'on');
    expect(el.proposals[1]).toEqual({ frameKey: t.key(40), frameId: 1040, sawEdge: false });
    el.answer({ kind: 'decision', firstActiveKey: t.key(1), round: 7, decidedBy: 'all', missing: [], late: true });
    await tick();
    t.push(41, 'on');
    expect(t.starts[1]).toMatchObject({ round: 7, joinedAt: 40 });
    expect(t.frames.slice(3).map((s) => [s.acquisition, s.index])).toEqual([
      [2, 40],
      [2, 41],
    ]);
    t.release();
  });

  it('after a single scan completes, the flagged frames that follow are not asked about (that would only rejoin the scan that ended)', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 3 });
    await edgeDecided(t, el, 1);
    t.push(2, 'on');
    expect(t.ends).toEqual([expect.objectContaining({ reason: 'complete' })]);
    t.push(3, 'on'); // parked beam, flag still on
    t.push(4, 'on');
    expect(el.proposals).toHaveLength(1);
    t.release();
  });

  it('a stream restart during the vote abandons it', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 10 });
    t.push(0, 'off');
    t.push(1, 'on');
    t.sync.onResync({ fromKey: t.key(2), toKey: 7, frames: -1, kind: 'restart' });
    expect(t.pool.available).toBe(t.pool.size);
    el.answer({ kind: 'decision', firstActiveKey: t.key(1), round: 1, decidedBy: 'all', missing: [], late: false });
    await tick();
    expect(t.starts).toHaveLength(0);
    expect(t.sync.phase).toBe('armed');
    t.release();
  });

  it('stop ends the acquisition and returns every slot', async () => {
    const el = new ScriptedElector();
    const t = setup({ elector: el, positions: 10 });
    t.push(0, 'off');
    t.push(1, 'on');
    t.push(2, 'on');
    t.sync.stop();
    expect(t.pool.available).toBe(t.pool.size);
    el.answer({ kind: 'decision', firstActiveKey: t.key(1), round: 1, decidedBy: 'all', missing: [], late: false });
    await tick(); // a stale answer changes nothing
    expect(t.frames).toHaveLength(0);
    expect(t.sync.phase).toBe('armed');
    t.release();
  });
});
