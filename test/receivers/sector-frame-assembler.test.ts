/**
 * SectorFrameAssembler on datagrams built from known pixels (datagrams.ts): placement by header
 * coordinates under any arrival order, exact damage, every counter, frame_id and block_count
 * wrap, whole frames missing, give-up by window and by timeout, resynchronisation.
 * Emitted frames are decoded with the wasm decoder and compared with the pixels they were built from.
 */
import { describe, expect, it } from 'vitest';
import { BLOCK_SIZE, SECTOR_FRAME_PAYLOAD_BYTES, SECTOR_HEIGHT, SECTOR_PIXELS } from '../../src/k2is/constants.js';
import { Uint12Decoder } from '../../src/k2is/decode12.js';
import { FrameSlotPool } from '../../receivers/frame-slots.js';
import { SectorFrameAssembler, type AssembledFrame, type ResyncEvent } from '../../receivers/sector-frame-assembler.js';
import { REJECTION_REASONS } from '../../receivers/stats.js';
import { firstDiff, frameDatagrams, makeDatagram, sectorPixels, shuffled, withDamage } from './datagrams.js';

const FULL = 0xffffffff;

interface Emitted extends Omit<AssembledFrame, 'slot'> {
  pixels: Uint16Array | null;
}

function harness(opts: { maxFramesInFlight?: number; frameTimeoutMs?: number; jumpConfirmBlocks?: number; maxGapFillFrames?: number; restartSilenceMs?: number } = {}) {
  const W = opts.maxFramesInFlight ?? 4;
  const slots = SectorFrameAssembler.slotsNeeded(W);
  const dec = Uint12Decoder.create({ initialBytes: (slots + 2) * SECTOR_FRAME_PAYLOAD_BYTES + SECTOR_PIXELS * 2 + (1 << 20) });
  const pool = new FrameSlotPool(dec, slots);
  const tile = dec.alloc(SECTOR_PIXELS * 2);
  const frames: Emitted[] = [];
  const resyncs: ResyncEvent[] = [];
  const asm = new SectorFrameAssembler(pool, {
    maxFramesInFlight: W,
    frameTimeoutMs: opts.frameTimeoutMs ?? 1000,
    jumpConfirmBlocks: opts.jumpConfirmBlocks,
    maxGapFillFrames: opts.maxGapFillFrames,
    restartSilenceMs: opts.restartSilenceMs,
    onFrame: (f) => {
      let pixels: Uint16Array | null = null;
      if (f.slot >= 0) {
        dec.decodeSectorRows(pool.ptrs[f.slot]!, tile, 0, SECTOR_HEIGHT);
        pixels = Uint16Array.from(dec.u16(tile, SECTOR_PIXELS));
      }
      pool.release(f.slot);
      const { slot: _slot, ...rest } = f;
      frames.push({ ...rest, pixels });
    },
    onResync: (e) => resyncs.push(e),
  });
  const push = (d: Uint8Array, now = 0) => asm.push(d, d.length, now);
  return { asm, pool, frames, resyncs, push, c: asm.counters };
}

function expectBalanced(c: SectorFrameAssembler['counters']) {
  expect(c.accounted()).toBe(c.received);
}

function expectPixels(got: Uint16Array | null, want: Uint16Array) {
  expect(got).not.toBeNull();
  expect(firstDiff(got!, want)).toBe(-1);
}

// a handful of distinct frames reused across tests (building datagrams is the slow part)
const PIX = Array.from({ length: 6 }, (_, f) => sectorPixels(1, 3, f));

describe('SectorFrameAssembler', () => {
  it('places blocks by their coordinates under any arrival order and emits frames in sequence', () => {
    const h = harness({ maxFramesInFlight: 8 });
    const K = 32 * 1000 + 5; // any block_count base, not a multiple of 32
    const specs = PIX.slice(0, 4).map((pixels, f) => ({ key: K + 32 * f, frameId: 77 + f, shutter: f >= 2, pixels }));
    // all blocks of four frames, interleaved and shuffled
    const all = shuffled(specs.flatMap(frameDatagrams), 12345);
    for (const d of all) expect(h.push(d)).toBe('ok');
    expect(h.frames.map((f) => f.key)).toEqual(specs.map((s) => s.key));
    expect(h.frames.map((f) => f.seq)).toEqual([0, 1, 2, 3]);
    expect(h.frames.map((f) => f.frameId)).toEqual([77, 78, 79, 80]);
    expect(h.frames.map((f) => f.shutter)).toEqual([false, false, true, true]);
    for (let f = 0; f < 4; f++) {
      expect(h.frames[f]!.damage).toBe(0);
      expectPixels(h.frames[f]!.pixels, specs[f]!.pixels);
    }
    expect(h.c.framesComplete).toBe(4);
    expect(h.c.ok).toBe(128);
    expect(h.pool.available).toBe(h.pool.size);
    expectBalanced(h.c);
  });

  it('keeps frames in order when a later frame completes first', () => {
    const h = harness({ maxFramesInFlight: 4 });
    const a = frameDatagrams({ key: 0, frameId: 1, shutter: false, pixels: PIX[0]! });
    const b = frameDatagrams({ key: 32, frameId: 2, shutter: false, pixels: PIX[1]! });
    for (const d of a.slice(0, 31)) h.push(d);
    for (const d of b) h.push(d);
    expect(h.frames).toHaveLength(0); // frame 1 complete but waits for frame 0
    h.push(a[31]!);
    expect(h.frames.map((f) => f.key)).toEqual([0, 32]);
    expect(h.frames.every((f) => f.damage === 0)).toBe(true);
  });

  it('gives up an incomplete frame by window: exact damage bitmap, missing blocks zero-filled', () => {
    const W = 3;
    const h = harness({ maxFramesInFlight: W });
    const dropped = [0, 5, 16, 31];
    const damage = dropped.reduce((m, i) => (m | (1 << i)) >>> 0, 0);
    const f0 = frameDatagrams({ key: 64, frameId: 10, shutter: false, pixels: PIX[0]! });
    f0.forEach((d, i) => {
      if (!dropped.includes(i)) h.push(d);
    });
    // frames 1..W complete: frame 0 still waits (the newest is only W frames ahead)
    for (let f = 1; f <= W; f++) for (const d of frameDatagrams({ key: 64 + 32 * f, frameId: 10 + f, shutter: false, pixels: PIX[f]! })) h.push(d);
    expect(h.frames).toHaveLength(0);
    // one block of frame W + 1: more than W newer -> frame 0 given up, then 1..W follow
    h.push(makeDatagram({ blockCount: 64 + 32 * (W + 1) + 7, frameId: 10 + W + 1, flags: 0, index: 7 }, PIX[4]!));
    expect(h.frames.map((f) => f.seq)).toEqual([0, 1, 2, 3]);
    expect(h.frames[0]!.damage).toBe(damage);
    expect(h.frames[0]!.blocks).toBe(28);
    expectPixels(h.frames[0]!.pixels, withDamage(PIX[0]!, damage));
    for (let f = 1; f <= W; f++) expectPixels(h.frames[f]!.pixels, PIX[f]!);
    expect(h.c.framesDamaged).toBe(1);
    expect(h.c.blocksZeroFilled).toBe(4);
    expect(h.c.pendingFrames).toBe(1);
    expectBalanced(h.c);
  });

  it('gives up by timeout measured from the first block of a frame', () => {
    const h = harness({ maxFramesInFlight: 16, frameTimeoutMs: 100 });
    const f0 = frameDatagrams({ key: 0, frameId: 1, shutter: false, pixels: PIX[0]! });
    const f1 = frameDatagrams({ key: 32, frameId: 2, shutter: false, pixels: PIX[1]! });
    for (const d of f0.slice(0, 20)) h.push(d, 1000);
    for (const d of f1.slice(0, 10)) h.push(d, 1050);
    h.asm.tick(1099);
    expect(h.frames).toHaveLength(0);
    h.asm.tick(1100); // frame 0 is 100 ms old; frame 1 only 50
    expect(h.frames.map((f) => [f.seq, f.damage])).toEqual([[0, (~((1 << 20) - 1)) >>> 0]]);
    h.asm.tick(1149);
    expect(h.frames).toHaveLength(1);
    h.asm.tick(1150);
    expect(h.frames.map((f) => f.seq)).toEqual([0, 1]);
    expect(h.frames[1]!.damage).toBe((~((1 << 10) - 1)) >>> 0);
    expectPixels(h.frames[1]!.pixels, withDamage(PIX[1]!, h.frames[1]!.damage));
    // blocks of given-up frames are stragglers now
    expect(h.push(f0[25]!, 1200)).toBe('straggler');
    expect(h.push(f1[31]!, 1200)).toBe('straggler');
    expect(h.c.stragglers).toBe(2);
    expectBalanced(h.c);
  });

  it('a timed-out newer frame takes older ones with it, and frames never seen are emitted as missing', () => {
    const h = harness({ maxFramesInFlight: 16, frameTimeoutMs: 100 });
    for (const d of frameDatagrams({ key: 0, frameId: 1, shutter: false, pixels: PIX[0]! }).slice(0, 31)) h.push(d, 0);
    for (const d of frameDatagrams({ key: 96, frameId: 4, shutter: false, pixels: PIX[3]! })) h.push(d, 50);
    h.asm.tick(149); // frame 0 is 149 ms old: it goes, and so does everything up to it
    expect(h.frames.map((f) => f.seq)).toEqual([0]);
    h.asm.tick(150);
    expect(h.frames.map((f) => [f.seq, f.key, f.damage, f.frameId])).toEqual([
      [0, 0, (1 << 31) >>> 0, 1],
      [1, 32, FULL, null],
      [2, 64, FULL, null],
      [3, 96, 0, 4],
    ]);
    expect(h.frames[1]!.pixels).toBeNull();
    expect(h.c.framesMissing).toBe(2);
    expect(h.c.blocksZeroFilled).toBe(1 + 64);
  });

  it('emits whole frames lost in a burst as missing, keeping sequence numbers aligned', () => {
    const h = harness({ maxFramesInFlight: 8 });
    const keyOf = (f: number) => 1000 + 32 * f;
    for (const f of [0, 1, 5, 6]) for (const d of frameDatagrams({ key: keyOf(f), frameId: f, shutter: false, pixels: PIX[f % 6]! })) h.push(d);
    // frames 2..4 never arrived: they wait until the window or a timeout forces them out
    expect(h.frames.map((f) => f.seq)).toEqual([0, 1]);
    h.asm.flush();
    expect(h.frames.map((f) => [f.seq, f.key, f.damage === FULL])).toEqual([
      [0, keyOf(0), false],
      [1, keyOf(1), false],
      [2, keyOf(2), true],
      [3, keyOf(3), true],
      [4, keyOf(4), true],
      [5, keyOf(5), false],
      [6, keyOf(6), false],
    ]);
    expectPixels(h.frames[6]!.pixels, PIX[0]!);
    expect(h.c.framesMissing).toBe(3);
  });

  it('ignores and counts duplicates; counts stragglers of emitted frames', () => {
    const h = harness();
    const f0 = frameDatagrams({ key: 0, frameId: 1, shutter: false, pixels: PIX[0]! });
    h.push(f0[3]!);
    // a duplicate with different payload must not overwrite the first copy
    const dup = Uint8Array.from(f0[3]!);
    dup.fill(0xff, 40);
    expect(h.push(dup)).toBe('duplicate');
    expect(h.push(f0[3]!)).toBe('duplicate');
    for (const d of f0) if (d !== f0[3]) h.push(d);
    expect(h.frames).toHaveLength(1);
    expectPixels(h.frames[0]!.pixels, PIX[0]!);
    expect(h.push(f0[3]!)).toBe('straggler');
    expect(h.push(f0[0]!)).toBe('straggler');
    expect(h.c.duplicates).toBe(2);
    expect(h.c.stragglers).toBe(2);
    expect(h.c.ok).toBe(32);
    expectBalanced(h.c);
  });

  it('counts each rejection reason by its own counter', () => {
    const h = harness();
    const good = frameDatagrams({ key: 0, frameId: 9, shutter: false, pixels: PIX[0]! });
    const mutate = (i: number, f: (v: DataView, b: Uint8Array) => void) => {
      const b = Uint8Array.from(good[i]!);
      f(new DataView(b.buffer), b);
      return b;
    };
    const cases: Array<[string, Uint8Array]> = [
      ['too_short', good[0]!.subarray(0, BLOCK_SIZE - 1)],
      ['too_short', new Uint8Array(0)],
      ['too_long', Uint8Array.from([...good[0]!, 0])],
      ['bad_sync', mutate(0, (v) => v.setUint32(0, 0xffff0056))],
      ['bad_geometry', mutate(0, (v) => v.setUint16(20, 255))],
      ['bad_geometry', mutate(0, (v) => v.setUint16(22, 1859))],
      ['bad_coordinates', mutate(0, (v) => v.setUint16(28, 241))],
      ['bad_coordinates', mutate(0, (v) => v.setUint16(30, 931))],
      ['bad_coordinates', mutate(0, (v) => v.setUint16(32, 0))],
      ['bad_coordinates', mutate(0, (v) => v.setUint16(34, 928))],
      ['bad_coordinates', mutate(0, (v) => (v.setUint16(28, 256), v.setUint16(32, 271)))],
      ['bad_block_size', mutate(0, (v) => v.setUint32(36, 22359))],
    ];
    for (const [want, d] of cases) expect(h.push(d)).toBe(want);
    h.push(good[0]!);
    expect(h.push(mutate(1, (v) => v.setUint32(24, 10)))).toBe('inconsistent_frame_id');
    const expected: Record<string, number> = Object.fromEntries(REJECTION_REASONS.map((r) => [r, 0]));
    for (const [r] of cases) expected[r]!++;
    expected.inconsistent_frame_id = 1;
    expect(h.c.rejected).toEqual(expected);
    expect(h.c.ok).toBe(1);
    expectBalanced(h.c);
  });

  it('frame_id wrap at 2^32 and reset (284990 -> 2) are no events', () => {
    const h = harness();
    const ids = [0xfffffffe, 0xffffffff, 0, 1, 284990, 2, 3];
    ids.forEach((id, f) => {
      for (const d of frameDatagrams({ key: 320 + 32 * f, frameId: id, shutter: f >= 5, pixels: PIX[f % 6]! })) h.push(d);
    });
    expect(h.frames.map((f) => f.frameId)).toEqual(ids);
    expect(h.frames.map((f) => f.seq)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(h.frames.every((f) => f.damage === 0)).toBe(true);
    expect(h.c.outOfWindow + h.c.resyncs).toBe(0);
  });

  it('block_count wrap at 2^32: frames straddling the wrap assemble, keys continue modulo 2^32', () => {
    const h = harness();
    const base = 2 ** 32 - 32 * 2 - 10; // frame 2 has blocks on both sides of the wrap
    const specs = [0, 1, 2, 3, 4].map((f) => ({ key: (base + 32 * f) >>> 0, frameId: 5 + f, shutter: true, pixels: PIX[f]! }));
    for (const d of shuffled(specs.flatMap(frameDatagrams), 99)) h.push(d);
    expect(h.frames.map((f) => f.key)).toEqual(specs.map((s) => s.key));
    expect(h.frames.map((f) => f.seq)).toEqual([0, 1, 2, 3, 4]);
    for (let f = 0; f < 5; f++) expectPixels(h.frames[f]!.pixels, PIX[f]!);
    expect(h.c.outOfWindow).toBe(0);
  });

  it('a stream that begins mid-frame and out of order starts at its earliest frame', () => {
    const h = harness({ maxFramesInFlight: 4 });
    const f0 = frameDatagrams({ key: 640, frameId: 1, shutter: false, pixels: PIX[0]! });
    const f1 = frameDatagrams({ key: 672, frameId: 2, shutter: false, pixels: PIX[1]! });
    h.push(f1[0]!); // the first datagram seen belongs to the second frame
    for (const d of f0.slice(10)) h.push(d); // and the first frame's start was never seen
    for (const d of f1.slice(1)) h.push(d);
    h.asm.flush();
    expect(h.frames.map((f) => [f.key, f.damage])).toEqual([
      [640, (1 << 10) - 1],
      [672, 0],
    ]);
    expect(h.c.stragglers).toBe(0);
  });

  it('out-of-window blocks are counted and dropped unless a run confirms a jump', () => {
    const h = harness({ maxFramesInFlight: 4, jumpConfirmBlocks: 32 });
    for (const d of frameDatagrams({ key: 0, frameId: 1, shutter: false, pixels: PIX[0]! })) h.push(d);
    const far = frameDatagrams({ key: 32 * 1000, frameId: 1000, shutter: false, pixels: PIX[1]! });
    const f1 = frameDatagrams({ key: 32, frameId: 2, shutter: false, pixels: PIX[2]! });
    // isolated far blocks between in-window ones: never confirmed
    for (let i = 0; i < 32; i++) {
      expect(h.push(far[i]!)).toBe('out_of_window');
      h.push(f1[i]!);
    }
    expect(h.push(makeDatagram({ blockCount: 32 * 2 + 3 + 1, frameId: 3, flags: 0, index: 3 }, PIX[0]!))).toBe('out_of_window'); // off the grid
    expect(h.c.outOfWindow).toBe(33);
    expect(h.c.resyncs).toBe(0);
    expect(h.frames.map((f) => f.key)).toEqual([0, 32]);
    expectBalanced(h.c);
  });

  it('resynchronises on a confirmed jump (a restarted stream) and places the confirming run', () => {
    const h = harness({ maxFramesInFlight: 4, jumpConfirmBlocks: 32 });
    for (const d of frameDatagrams({ key: 5000, frameId: 1, shutter: false, pixels: PIX[0]! })) h.push(d);
    const a = frameDatagrams({ key: 5032, frameId: 2, shutter: false, pixels: PIX[1]! });
    for (const d of a.slice(0, 20)) h.push(d); // then the stream restarts from block_count 7
    const restart = [0, 1, 2].map((f) => ({ key: 7 + 32 * f, frameId: 100 + f, shutter: true, pixels: PIX[2 + f]! }));
    const rs = restart.flatMap(frameDatagrams);
    for (let i = 0; i < 31; i++) expect(h.push(rs[i]!)).toBe('out_of_window');
    expect(h.c.resyncs).toBe(0);
    expect(h.push(rs[31]!)).toBe('out_of_window'); // the 32nd confirms
    expect(h.c.resyncs).toBe(1);
    expect(h.resyncs).toEqual([{ fromKey: 5032, toKey: 7, frames: (7 - 5064) / 32, kind: 'restart' }]);
    for (const d of rs.slice(32)) expect(h.push(d)).toBe('ok');
    expect(h.frames.map((f) => [f.stream, f.seq, f.key, f.damage])).toEqual([
      [0, 0, 5000, 0],
      [0, 1, 5032, (~((1 << 20) - 1)) >>> 0],
      [1, 0, 7, 0],
      [1, 1, 39, 0],
      [1, 2, 71, 0],
    ]);
    for (let f = 0; f < 3; f++) expectPixels(h.frames[2 + f]!.pixels, restart[f]!.pixels);
    expect(h.c.outOfWindow).toBe(0); // the run was placed: counted as ok now
    expect(h.c.ok).toBe(32 + 20 + 96);
    expectBalanced(h.c);
  });

  it('a camera restarted after a silence at the same block_count values is a new stream, not stragglers and a continuation', () => {
    const mk = (restartSilenceMs?: number) => {
      const h = harness({ maxFramesInFlight: 4, jumpConfirmBlocks: 32, restartSilenceMs });
      // the first camera run: frames at keys 0, 32, 64 (frame_id 1..3), then it stops
      for (let f = 0; f < 3; f++) for (const d of frameDatagrams({ key: 32 * f, frameId: 1 + f, shutter: f > 0, pixels: PIX[f]! })) h.push(d, 10 * f);
      // 1.5 s later it restarts from block_count 0 with the same frame_ids, another scene
      const again = [0, 1, 2, 3, 4].map((f) => ({ key: 32 * f, frameId: 1 + f, shutter: f > 0, pixels: PIX[(f + 3) % 6]! }));
      const outcomes = again.flatMap(frameDatagrams).map((d) => h.push(d, 1500));
      return { h, again, outcomes };
    };
    // without the rule: the first three frames pass for stragglers and the rest continue the old stream
    const old = mk(undefined);
    expect(old.h.c.stragglers).toBe(96);
    expect(old.h.frames.map((f) => [f.stream, f.key])).toEqual([
      [0, 0],
      [0, 32],
      [0, 64],
      [0, 96],
      [0, 128],
    ]);
    // with it: a run of blocks behind after the silence confirms a restart
    const { h, again, outcomes } = mk(1000);
    expect(outcomes.slice(0, 32).every((o) => o === 'out_of_window')).toBe(true);
    expect(outcomes.slice(32).every((o) => o === 'ok')).toBe(true);
    expect(h.c.resyncs).toBe(1);
    expect(h.resyncs).toEqual([{ fromKey: 96, toKey: 0, frames: -3, kind: 'restart' }]);
    expect(h.frames.map((f) => [f.stream, f.seq, f.key, f.frameId, f.damage])).toEqual([
      [0, 0, 0, 1, 0],
      [0, 1, 32, 2, 0],
      [0, 2, 64, 3, 0],
      [1, 0, 0, 1, 0],
      [1, 1, 32, 2, 0],
      [1, 2, 64, 3, 0],
      [1, 3, 96, 4, 0],
      [1, 4, 128, 5, 0],
    ]);
    for (let f = 0; f < 5; f++) expectPixels(h.frames[3 + f]!.pixels, again[f]!.pixels);
    expect(h.c.stragglers).toBe(0);
    expect(h.c.outOfWindow).toBe(0);
    expectBalanced(h.c);
  });

  it('after a silence the stream going on (keys ahead) is placed as usual; stragglers without a silence stay stragglers', () => {
    const h = harness({ maxFramesInFlight: 4, frameTimeoutMs: 200, jumpConfirmBlocks: 8, restartSilenceMs: 1000 });
    const f0 = frameDatagrams({ key: 0, frameId: 1, shutter: true, pixels: PIX[0]! });
    for (const d of f0.slice(0, 31)) h.push(d, 0);
    h.asm.tick(300); // given up with block 31 missing
    expect(h.push(f0[31]!, 350)).toBe('straggler');
    // a 2 s pause of a slow sender, then the next frame: a continuation
    for (const d of frameDatagrams({ key: 32, frameId: 2, shutter: true, pixels: PIX[1]! })) expect(h.push(d, 2600)).toBe('ok');
    // a late duplicate after another pause, alone, is dropped and the suspicion ends with the next frame
    expect(h.push(f0[3]!, 4000)).toBe('out_of_window');
    for (const d of frameDatagrams({ key: 64, frameId: 3, shutter: true, pixels: PIX[2]! })) expect(h.push(d, 4001)).toBe('ok');
    expect(h.push(f0[4]!, 4002)).toBe('straggler');
    expect(h.c.resyncs).toBe(0);
    expect(h.frames.map((f) => [f.stream, f.key])).toEqual([
      [0, 0],
      [0, 32],
      [0, 64],
    ]);
    expectBalanced(h.c);
  });

  it('a confirmed forward jump within maxGapFillFrames is a long loss: missing frames fill the gap', () => {
    const h = harness({ maxFramesInFlight: 2, jumpConfirmBlocks: 8, maxGapFillFrames: 20 });
    for (const d of frameDatagrams({ key: 0, frameId: 1, shutter: true, pixels: PIX[0]! })) h.push(d);
    const later = frameDatagrams({ key: 32 * 10, frameId: 11, shutter: true, pixels: PIX[1]! });
    for (const d of later) h.push(d);
    expect(h.c.resyncs).toBe(1);
    expect(h.resyncs).toHaveLength(0); // the sequence continues: no restart event
    expect(h.frames.map((f) => [f.seq, f.stream, f.damage === FULL])).toEqual([
      [0, 0, false],
      ...Array.from({ length: 9 }, (_, i) => [i + 1, 0, true]),
      [10, 0, false],
    ]);
    expectPixels(h.frames[10]!.pixels, PIX[1]!);
    expectBalanced(h.c);
  });

  it('a block exactly 2^31 keys away at the start is out of window, not a new start', () => {
    const h = harness({ maxFramesInFlight: 4 });
    const f0 = frameDatagrams({ key: 0, frameId: 1, shutter: false, pixels: PIX[0]! });
    h.push(f0[0]!);
    const far = Uint8Array.from(f0[1]!);
    new DataView(far.buffer).setUint32(16, 2 ** 31 + 1);
    expect(h.push(far)).toBe('out_of_window');
    for (const d of f0.slice(1)) h.push(d);
    expect(h.frames.map((f) => [f.key, f.damage])).toEqual([[0, 0]]);
    h.asm.flush();
    expect(h.frames).toHaveLength(1);
  });

  it('survives a consumer that throws, reclaiming the slot', () => {
    const W = 2;
    const dec = Uint12Decoder.create({ initialBytes: 8 * SECTOR_FRAME_PAYLOAD_BYTES });
    const pool = new FrameSlotPool(dec, SectorFrameAssembler.slotsNeeded(W));
    const asm = new SectorFrameAssembler(pool, {
      maxFramesInFlight: W,
      frameTimeoutMs: 10,
      onFrame: () => {
        throw new Error('consumer bug');
      },
    });
    for (let f = 0; f < 5; f++) for (const d of frameDatagrams({ key: 32 * f, frameId: f, shutter: false, pixels: PIX[0]! })) asm.push(d);
    expect(asm.counters.framesComplete).toBe(5);
    expect(pool.available).toBe(pool.size);
  });
});
