/**
 * Fuzz: random bytes and mutated valid datagrams (bit flips, truncation, extension, header
 * field changes, replays) through the SectorFrameAssembler. It must never throw, account for
 * every datagram exactly once, emit frames in strict sequence, and give every slot back.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BLOCK_SIZE, SECTOR_FRAME_PAYLOAD_BYTES } from '../../src/k2is/constants.js';
import { Uint12Decoder } from '../../src/k2is/decode12.js';
import { FrameSlotPool } from '../../receivers/frame-slots.js';
import { SectorFrameAssembler, type AssembledFrame } from '../../receivers/sector-frame-assembler.js';
import { frameDatagrams, sectorPixels } from './datagrams.js';

const FRAMES = 6;
const BASE_KEY = 2 ** 32 - 32 * 3; // the valid stream crosses the block_count wrap
const VALID = Array.from({ length: FRAMES }, (_, f) =>
  frameDatagrams({ key: (BASE_KEY + 32 * f) >>> 0, frameId: 0xfffffffe + f, shutter: f > 2, pixels: sectorPixels(7, 1, f) }),
).flat();

type Op =
  | { kind: 'valid'; i: number }
  | { kind: 'random'; bytes: Uint8Array }
  | { kind: 'flip'; i: number; bits: number[] }
  | { kind: 'truncate'; i: number; len: number }
  | { kind: 'extend'; i: number; extra: number }
  | { kind: 'field'; i: number; offset: number; value: number; width: 1 | 2 | 4 }
  /** all 32 blocks of one valid frame, in send order */
  | { kind: 'frame'; f: number }
  /** a block of another stream position (block_count shifted): runs of these exercise the resync */
  | { kind: 'shifted'; i: number; shift: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('valid' as const), i: fc.nat(VALID.length - 1) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('random' as const),
      bytes: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ minLength: BLOCK_SIZE, maxLength: BLOCK_SIZE })),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('flip' as const),
      i: fc.nat(VALID.length - 1),
      // mostly header bits, where flips change the outcome
      bits: fc.array(fc.oneof(fc.nat(40 * 8 - 1), fc.nat(BLOCK_SIZE * 8 - 1)), { minLength: 1, maxLength: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), i: fc.nat(VALID.length - 1), len: fc.nat(BLOCK_SIZE - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), i: fc.nat(VALID.length - 1), extra: fc.integer({ min: 1, max: 2000 }) }) }
);

const fieldArb: fc.Arbitrary<Op> = fc
  .tuple(
    fc.nat(VALID.length - 1),
    fc.constantFrom<[number, 1 | 2 | 4]>([9, 1], [16, 4], [24, 4], [28, 2], [30, 2], [32, 2], [36, 4]),
    fc.nat(),
    fc.constantFrom(0, 16, 32, 240, 930, 2 ** 31, (BASE_KEY + 32 * 40) >>> 0, (BASE_KEY - 32 * 1000) >>> 0),
    fc.boolean(),
  )
  .map(([i, [offset, width], raw, special, useSpecial]) => ({
    kind: 'field' as const,
    i,
    offset,
    width,
    value: (useSpecial ? special : raw) % 2 ** (8 * width),
  }));

const shiftedArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constant('shifted' as const),
  i: fc.nat(VALID.length - 1),
  shift: fc.constantFrom(32 * 50, -32 * 50, 32 * 7, 2 ** 31, 5),
});

const anyOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: opArb },
  { weight: 3, arbitrary: fieldArb },
  { weight: 3, arbitrary: shiftedArb },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('frame' as const), f: fc.nat(FRAMES - 1) }) },
);

function materialise(op: Op): Uint8Array[] {
  if (op.kind === 'frame') return VALID.slice(32 * op.f, 32 * op.f + 32);
  return [one(op)];
}

function one(op: Exclude<Op, { kind: 'frame' }>): Uint8Array {
  switch (op.kind) {
    case 'valid':
      return VALID[op.i]!;
    case 'random':
      return op.bytes;
    case 'flip': {
      const b = Uint8Array.from(VALID[op.i]!);
      for (const bit of op.bits) b[bit >> 3] ^= 1 << (bit & 7);
      return b;
    }
    case 'truncate':
      return VALID[op.i]!.slice(0, op.len);
    case 'extend': {
      const b = new Uint8Array(BLOCK_SIZE + op.extra);
      b.set(VALID[op.i]!);
      return b;
    }
    case 'shifted': {
      const b = Uint8Array.from(VALID[op.i]!);
      const v = new DataView(b.buffer);
      v.setUint32(16, (v.getUint32(16) + op.shift) >>> 0);
      return b;
    }
    case 'field': {
      const b = Uint8Array.from(VALID[op.i]!);
      const v = new DataView(b.buffer);
      if (op.width === 1) v.setUint8(op.offset, op.value);
      else if (op.width === 2) v.setUint16(op.offset, op.value);
      else v.setUint32(op.offset, op.value);
      return b;
    }
  }
}

const dec = Uint12Decoder.create({ initialBytes: 16 * SECTOR_FRAME_PAYLOAD_BYTES });
const slotsMark = dec.mark();

describe('SectorFrameAssembler fuzz', () => {
  it('never throws; every datagram counted exactly once; frames in sequence; slots returned', () => {
    // what the runs reached, so that the property is not vacuously true
    const seen = { resyncs: 0, complete: 0, damaged: 0, duplicates: 0, stragglers: 0, outOfWindow: 0, rejected: 0, inconsistent: 0 };
    fc.assert(
      fc.property(
        fc.array(anyOp, { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 40 }),
        (ops, W, confirm) => {
          dec.release(slotsMark);
          const pool = new FrameSlotPool(dec, SectorFrameAssembler.slotsNeeded(W));
          const frames: AssembledFrame[] = [];
          const asm = new SectorFrameAssembler(pool, {
            maxFramesInFlight: W,
            frameTimeoutMs: 50,
            jumpConfirmBlocks: confirm,
            onFrame: (f) => {
              frames.push(f);
              pool.release(f.slot);
            },
          });
          let t = 0;
          let sent = 0;
          for (const op of ops) {
            for (const d of materialise(op)) {
              asm.push(d, d.length, t);
              sent++;
              t += 1;
              if ((t & 15) === 0) asm.tick(t);
              expect(asm.counters.accounted()).toBe(asm.counters.received);
            }
          }
          asm.flush();
          const c = asm.counters;
          expect(c.received).toBe(sent);
          expect(c.accounted()).toBe(sent);
          expect(c.pendingFrames).toBe(0);
          expect(pool.available).toBe(pool.size);
          // every emitted frame: damage and blocks agree; sequence strictly +1 within a stream
          let blocksPlaced = 0;
          for (let k = 0; k < frames.length; k++) {
            const f = frames[k]!;
            let missing = 0;
            for (let i = 0; i < 32; i++) missing += (f.damage >>> i) & 1;
            expect(missing + f.blocks).toBe(32);
            blocksPlaced += f.blocks;
            if (k > 0 && frames[k - 1]!.stream === f.stream) {
              expect(f.seq).toBe((frames[k - 1]!.seq + 1) >>> 0);
              expect(f.key).toBe((frames[k - 1]!.key + 32) >>> 0);
            }
          }
          expect(blocksPlaced).toBe(c.ok);
          expect(c.framesComplete + c.framesDamaged + c.framesMissing).toBe(frames.length);
          seen.resyncs += c.resyncs;
          seen.complete += c.framesComplete;
          seen.damaged += c.framesDamaged;
          seen.duplicates += c.duplicates;
          seen.stragglers += c.stragglers;
          seen.outOfWindow += c.outOfWindow;
          seen.rejected += c.totalRejected();
          seen.inconsistent += c.rejected.inconsistent_frame_id;
        },
      ),
      { numRuns: 300 },
    );
    for (const [k, v] of Object.entries(seen)) expect(v, k).toBeGreaterThan(0);
  });
});
