/**
 * The shuffle's pure parts against plain references: selection rules (every receiver must
 * reach the same answer from the frame index alone), the whole-frame assembler (bands in any
 * order give the frame bit for bit; what never came is zero and marked), the credit
 * dispatcher (never more frames waiting than allowed, skips counted) and the rate controller.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameDispatcher, RateController } from '../../src/shuffle/dispatcher.js';
import { type AssembledFrame, WholeFrameAssembler } from '../../src/shuffle/frame-assembler.js';
import { asSelection, decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION } from '../../src/shuffle/protocol.js';
import { parseSelection, RuleBook, ruleAppliesTo, ruleSelects, type SelectionRule } from '../../src/shuffle/selection.js';
import { legOf } from '../../src/shuffle/shuffle-service.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';

const rule = (o: Partial<SelectionRule> = {}): SelectionRule => ({ acquisition: 'a', shutterRound: 3, startIndex: 100, positions: 12, fromIndex: 100, base: { kind: 'all' }, decimate: 1, ...o });

describe('selection rules', () => {
  it('select by base and position exactly as a plain loop over the scan does', () => {
    const mask = Uint8Array.from({ length: 12 }, (_, i) => (i % 5 === 1 ? 1 : 0));
    for (let i = 0; i < 400; i++) {
      const rel = i - 100;
      expect(ruleSelects(rule(), i)).toBe(i >= 100);
      expect(ruleSelects(rule({ base: { kind: 'every', n: 3 } }), i)).toBe(rel >= 0 && rel % 3 === 0);
      expect(ruleSelects(rule({ base: { kind: 'mask', mask } }), i)).toBe(rel >= 0 && mask[rel % 12] === 1);
      expect(ruleSelects(rule({ base: { kind: 'list', positions: [0, 7] } }), i)).toBe(rel >= 0 && [0, 7].includes(rel % 12));
      expect(ruleSelects(rule({ base: { kind: 'none' } }), i)).toBe(false);
    }
  });

  it('decimation keeps about 1 of k frames, a different subset of positions in each epoch', () => {
    for (const k of [2, 4, 16]) {
      let n = 0;
      for (let i = 100; i < 100 + 64_000; i++) if (ruleSelects(rule({ decimate: k }), i)) n++;
      expect(Math.abs(n / 64_000 - 1 / k)).toBeLessThan(0.15 / k);
    }
    const epoch = (e: number) => [...Array(12).keys()].filter((p) => ruleSelects(rule({ decimate: 4 }), 100 + e * 12 + p));
    expect(new Set([0, 1, 2, 3, 4, 5].flatMap(epoch)).size).toBeGreaterThan(6);
  });

  it('a RuleBook picks the rule in force at each index; receivers that get the book over the wire agree frame by frame', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ from: fc.integer({ min: 100, max: 1000 }), d: fc.integer({ min: 1, max: 8 }), every: fc.integer({ min: 1, max: 5 }) }), { minLength: 1, maxLength: 6 }), (changes) => {
        const book = new RuleBook();
        book.add(rule());
        const sorted = [...changes].sort((a, b) => a.from - b.from);
        for (const c of sorted) book.add(rule({ fromIndex: c.from, decimate: c.d, base: { kind: 'every', n: c.every } }));
        const wire = asSelection(decodeShuffle(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'selection', ruleVersion: book.version, rules: [...book.list] })));
        const copy = new RuleBook();
        copy.replace(wire.rules, wire.ruleVersion);
        for (let i = 0; i < 1200; i++) {
          // reference: the last change at or before i (ties: the later one)
          let ref: SelectionRule | null = i >= 100 ? rule() : null;
          for (const c of sorted) if (c.from <= i) ref = rule({ fromIndex: c.from, decimate: c.d, base: { kind: 'every', n: c.every } });
          const want = ref !== null && ruleSelects(ref, i);
          expect(book.selects(i, 3) !== null).toBe(want);
          expect(copy.selects(i, 3) !== null).toBe(want);
          expect(copy.selects(i, 4)).toBeNull(); // another detector acquisition
        }
      }),
      { numRuns: 30 },
    );
  });

  it('parses --select; a bad rule is TESSERA_ERR_BAD_ARGUMENT', () => {
    expect(parseSelection('every:4')).toEqual({ kind: 'every', n: 4 });
    expect(parseSelection('list:1,5')).toEqual({ kind: 'list', positions: [1, 5] });
    expect([...(parseSelection('rect:1,1,1,2', [2, 3]) as { mask: Uint8Array }).mask]).toEqual([0, 0, 0, 0, 1, 1]);
    expect(() => parseSelection('every:0')).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => new RuleBook().add(rule({ decimate: 0 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => decodeShuffle(Buffer.from([0xc1]))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
  });
});

describe('selection after a resume (negative startIndex, another detector acquisition)', () => {
  const P = 12;
  const acquire = (o: Partial<AcquireMessage> = {}): AcquireMessage => ({ version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'a', scanShape: [3, 4], roi: null, udfs: [], chunkSize: 4, mode: 'continuous', start: null, ...o });
  /** plain reference: acquisition-relative frame of detector frame `index` in the leg, or null when the leg does not use it */
  const relOf = (leg: { round: number | null; after: number | null; startIndex: number; first: number }, index: number, round: number): number | null => {
    const roundOk = leg.round !== null ? round === leg.round : leg.after === null || round > leg.after;
    return roundOk && index >= leg.first ? index - leg.startIndex : null;
  };

  it('legOf: index 0 of the next detector acquisition is frame R x P (start null), or the merger names round and start', () => {
    expect(legOf(acquire(), null)).toEqual({ n: 0, shutterRound: null, afterRound: null, startIndex: 0, firstIndex: 0 });
    expect(legOf(acquire({ start: { shutterRound: 4, startIndex: 36 } }), null)).toEqual({ n: 0, shutterRound: 4, afterRound: null, startIndex: 36, firstIndex: 36 });
    // resume n = 1 at epoch 3 after round 4: frames of round > 4 from index 0 = frame 36
    expect(legOf(acquire({ resume: { n: 1, epoch: 3, afterRound: 4 } }), 4)).toEqual({ n: 1, shutterRound: null, afterRound: 4, startIndex: -36, firstIndex: 0 });
    // the merger did not know the round that ended, the shuffle did (it pinned it)
    expect(legOf(acquire({ resume: { n: 1, epoch: 3, afterRound: null } }), 7).afterRound).toBe(7);
    expect(legOf(acquire({ resume: { n: 2, epoch: 3, afterRound: 9 } }), 7).afterRound).toBe(9);
    // a detector acquisition already under way: its scan repetition at index 48 is epoch 3
    expect(legOf(acquire({ start: { shutterRound: 6, startIndex: 48 - 36 }, resume: { n: 1, epoch: 3, afterRound: 4 } }), 4)).toEqual({ n: 1, shutterRound: 6, afterRound: null, startIndex: 12, firstIndex: 48 });
    expect(legOf(acquire({ start: { shutterRound: 6, startIndex: 24 - 36 }, resume: { n: 1, epoch: 3, afterRound: 4 } }), 4)).toMatchObject({ startIndex: -12, firstIndex: 24 });
  });

  it('a resumed rule maps frames of the next detector acquisition from R x P on, never the old one or a later one; pinned, only that one; the same over the wire', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 20 }), fc.constantFrom<SelectionRule['base']>({ kind: 'all' }, { kind: 'every', n: 5 }, { kind: 'list', positions: [0, 7, 11] }, { kind: 'mask', mask: Uint8Array.from({ length: P }, (_, i) => (i % 3 === 0 ? 1 : 0)) }), fc.integer({ min: 1, max: 4 }), (R, ended, base, decimate) => {
        const leg = legOf(acquire({ resume: { n: 1, epoch: R, afterRound: ended } }), null);
        const r: SelectionRule = { acquisition: 'a', shutterRound: leg.shutterRound, afterRound: leg.afterRound, startIndex: leg.startIndex, positions: P, fromIndex: leg.firstIndex, base, decimate };
        const book = new RuleBook();
        book.add(r);
        const wire = asSelection(decodeShuffle(encodeShuffle({ version: SHUFFLE_PROTOCOL_VERSION, type: 'selection', ruleVersion: book.version, rules: [...book.list] })));
        expect(wire.rules[0]).toMatchObject({ startIndex: -R * P, afterRound: ended, shutterRound: null });
        const copy = new RuleBook();
        copy.replace(wire.rules, wire.ruleVersion);
        // reference selection over acquisition-relative frames, as a plain loop over the scan
        const refSelects = (rel: number): boolean => {
          const p = rel % P;
          const take = base.kind === 'all' ? true : base.kind === 'every' ? rel % base.n === 0 : base.kind === 'list' ? base.positions.includes(p) : base.kind === 'mask' ? base.mask[p] === 1 : false;
          return take && (decimate === 1 || ((Math.imul(rel, 0x9e3779b1) >>> 0) >>> 8) % decimate === 0);
        };
        const newRound = ended + 1 + (R % 3);
        for (const b of [book, copy]) {
          for (let index = 0; index < 3 * P; index++) {
            for (const round of [ended - 1, ended, newRound, newRound + 1]) {
              const rel = relOf({ round: null, after: ended, startIndex: -R * P, first: 0 }, index, round);
              const got = b.selects(index, round);
              expect(got !== null, `index ${index} round ${round}`).toBe(rel !== null && refSelects(rel));
              if (got) expect(index - got.startIndex).toBe(index + R * P);
            }
          }
        }
        // the shuffle saw the first slice of round newRound: only that detector acquisition from now on
        const version = copy.version;
        expect(copy.pin(newRound)).toBe(true);
        expect(copy.version).toBe(version + 1);
        expect(copy.pin(newRound)).toBe(false);
        for (let index = 0; index < 3 * P; index++) {
          expect(copy.selects(index, newRound + 1)).toBeNull();
          expect(copy.selects(index, ended)).toBeNull();
          const want = refSelects(index + R * P);
          expect(copy.selects(index, newRound) !== null).toBe(want);
          expect(copy.at(index, newRound)!.startIndex).toBe(-R * P);
        }
      }),
      { numRuns: 40 },
    );
  });

  it('a book with the old detector acquisition\'s rules replaced at the resume: old-round frames after the end match nothing, new-round frames map from R x P', () => {
    // the acquisition ran on round 3 (startIndex 100), ended at frame 30 (R = ceil(30 / 12) = 3), resumes on the next detector acquisition
    const old = new RuleBook();
    old.add(rule({ shutterRound: 3, startIndex: 100, fromIndex: 100 }));
    const rel0 = (i: number) => i - old.at(i, 3)!.startIndex;
    expect(rel0(129)).toBe(29);
    const resumed = new RuleBook();
    const leg = legOf(acquire({ resume: { n: 1, epoch: 3, afterRound: 3 } }), 3);
    resumed.add(rule({ shutterRound: leg.shutterRound, afterRound: leg.afterRound, startIndex: leg.startIndex, fromIndex: leg.firstIndex }));
    for (let i = 0; i < 200; i++) expect(resumed.selects(i, 3)).toBeNull();
    for (let i = 0; i < 200; i++) {
      const r = resumed.selects(i, 4)!;
      const rel = i - r.startIndex;
      expect(Math.floor(rel / P)).toBe(3 + Math.floor(i / P));
      expect(rel % P).toBe(i % P);
    }
    expect(ruleAppliesTo(resumed.list[0]!, null)).toBe(true); // a receiver without an elected round: as before rounds
    // bad rules: afterRound beside a named round, a non-integer startIndex
    expect(() => resumed.add(rule({ shutterRound: 4, afterRound: 3 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => resumed.add(rule({ startIndex: -1.5 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
  });
});

describe('WholeFrameAssembler', () => {
  const H = 12;
  const SW = 4;
  const W = 8 * SW;
  const truth = (index: number) => Uint16Array.from({ length: H * W }, (_, k) => (index * 7919 + k * 31) & 0xffff);

  it('bands of rows in any order give the frame bit for bit; a sector that never came is zeros and marked', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: -1, max: 7 }), (bandRows, seed, missing) => {
        const out: AssembledFrame[] = [];
        let t = 0;
        const asm = new WholeFrameAssembler({ height: H, sectorWidth: SW, frameTimeoutMs: 100, maxFrames: 4, onFrame: (f) => out.push(f), now: () => t, allocate: () => new Uint16Array(H * W).fill(0xabcd) });
        const frame = truth(seed % 1000);
        const slices: Array<{ sector: number; row0: number; rows: number }> = [];
        for (let s = 0; s < 8; s++) for (let r = 0; r < H; r += bandRows) if (s !== missing) slices.push({ sector: s, row0: r, rows: Math.min(bandRows, H - r) });
        let x = seed;
        for (let i = slices.length - 1; i > 0; i--) {
          x = (x * 1103515245 + 12345) & 0x7fffffff;
          const j = x % (i + 1);
          [slices[i], slices[j]] = [slices[j]!, slices[i]!];
        }
        for (const sl of slices) {
          const px = new Uint16Array(sl.rows * SW);
          for (let r = 0; r < sl.rows; r++) px.set(frame.subarray((sl.row0 + r) * W + sl.sector * SW, (sl.row0 + r) * W + (sl.sector + 1) * SW), r * SW);
          asm.add({ acquisition: 'a', round: 1, index: 5, sector: sl.sector, row0: sl.row0, rows: sl.rows, damage: sl.sector === 2 ? 4 : 0, pixels: px });
        }
        if (missing >= 0) {
          expect(out).toHaveLength(0);
          t = 150;
          asm.tick();
        }
        expect(out).toHaveLength(1);
        const f = out[0]!;
        const want = frame.slice();
        if (missing >= 0) for (let r = 0; r < H; r++) want.fill(0, r * W + missing * SW, r * W + (missing + 1) * SW);
        expect(f.data).toEqual(want);
        expect(f.complete).toBe(missing < 0);
        expect(f.damage).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((s) => (s === missing ? 0xffffffff : s === 2 ? 4 : 0)));
        // a late slice of a handed-on frame is dropped, not a new frame
        asm.add({ acquisition: 'a', round: 1, index: 5, sector: 0, row0: 0, rows: 1, damage: 0, pixels: new Uint16Array(SW) });
        expect(out).toHaveLength(1);
        expect(asm.counters.dropped.late).toBe(1);
      }),
      { numRuns: 40 },
    );
  });

  it('never holds more than maxFrames: the oldest is completed (marked) to make room; bad slices are counted', () => {
    const out: AssembledFrame[] = [];
    const asm = new WholeFrameAssembler({ height: H, sectorWidth: SW, frameTimeoutMs: 1e9, maxFrames: 3, onFrame: (f) => out.push(f) });
    for (let i = 0; i < 10; i++) asm.add({ acquisition: 'a', round: 1, index: i, sector: 0, row0: 0, rows: H, damage: 0, pixels: new Uint16Array(H * SW) });
    expect(asm.openFrames).toBe(3);
    expect(out.map((f) => f.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(out.every((f) => !f.complete)).toBe(true);
    asm.add({ acquisition: 'a', round: 1, index: 20, sector: 9, row0: 0, rows: 1, damage: 0, pixels: new Uint16Array(SW) });
    asm.add({ acquisition: 'a', round: 1, index: 20, sector: 1, row0: H, rows: 1, damage: 0, pixels: new Uint16Array(SW) });
    asm.add({ acquisition: 'a', round: 1, index: 9, sector: 0, row0: 0, rows: 1, damage: 0, pixels: new Uint16Array(SW) });
    expect(asm.counters.dropped).toEqual({ sector: 1, shape: 1, duplicate: 1 });
  });
});

describe('FrameDispatcher and RateController', () => {
  it('hands frames out by credit, waits at most maxQueued, skips and counts the rest', () => {
    const sent: Array<[string, number]> = [];
    const skipped: number[] = [];
    const d = new FrameDispatcher<{ index: number }>({ maxQueued: 2, workerTimeoutMs: 1000, send: (w, f) => sent.push([w, f.index]), onSkip: (f) => skipped.push(f.index), now: () => 0 });
    d.credit('w1', 2);
    d.credit('w2', 1);
    for (let i = 0; i < 8; i++) d.offer({ index: i });
    expect(sent).toEqual([['w1', 0], ['w2', 1], ['w1', 2]]);
    expect(d.queued).toBe(2);
    expect(skipped).toEqual([5, 6, 7]);
    d.credit('w2', 3);
    expect(sent.slice(3)).toEqual([['w2', 3], ['w2', 4]]);
    expect(d.counters).toMatchObject({ offered: 8, dispatched: 5, skipped: 3, queuedMax: 2 });
  });

  it('a silent worker is not served, keeps its credit, and is served again when it speaks', () => {
    let t = 0;
    const sent: string[] = [];
    const d = new FrameDispatcher<{ index: number }>({ maxQueued: 0, workerTimeoutMs: 1000, send: (w) => sent.push(w), now: () => t });
    d.credit('w1', 2);
    t = 2000;
    expect(d.expire()).toEqual(['w1']);
    expect(d.offer({ index: 0 })).toBe('skipped');
    d.credit('w1', 0);
    expect(d.offer({ index: 1 })).toBe('sent');
    expect(sent).toEqual(['w1']);
  });

  it('the rate controller doubles the decimation after a window with skips, halves it after quiet seconds', () => {
    let t = 0;
    const r = new RateController({ windowMs: 1000, quietMs: 5000, maxDecimate: 8, now: () => t });
    const steps: Array<number | null> = [];
    let skipped = 0;
    for (let s = 1; s <= 5; s++) {
      skipped += 10;
      t = s * 1000;
      steps.push(r.update(skipped, false));
    }
    expect(steps).toEqual([2, 4, 8, null, null]);
    const quiet: Array<number | null> = [];
    for (let s = 6; s <= 20; s++) {
      t = s * 1000;
      quiet.push(r.update(skipped, true));
    }
    expect(quiet.filter((x) => x !== null)).toEqual([4, 2, 1]);
  });
});
