/**
 * Fuzzing the decoders of every ZeroMQ message a process receives (src/protocol/live.ts,
 * src/protocol/election.ts): random bytes, random msgpack values, valid messages with a
 * field replaced or removed, and valid messages with bytes flipped, cut or appended. A decoder
 * either returns a message that keeps its own invariants or throws a TesseraError with code
 * TESSERA_ERR_BAD_MESSAGE / TESSERA_ERR_PROTOCOL_VERSION: never anything else, never a hang.
 * Then real sockets: a message over the ZeroMQ size limit is dropped and the socket keeps
 * serving (election coordinator, merger's receiver link).
 */
import fc from 'fast-check';
import { pack } from 'msgpackr';
import * as zmq from 'zeromq';
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../../src/errors.js';
import { ReceiverLink } from '../../src/merger/receiver-link.js';
import {
  decodeElectionMessage,
  ElectionClient,
  ElectionCoordinator,
  encodeElectionMessage,
  MAX_ELECTION_MESSAGE_BYTES,
  type ElectionMessage,
} from '../../src/protocol/election.js';
import {
  decodeMergerMessage,
  decodePartialMessage,
  decodeReceiverMessage,
  encodeLive,
  LIVE_PROTOCOL_VERSION,
  type PartialMessage,
} from '../../src/protocol/live.js';
import { freeTcpPort } from '../merger/live-helpers.js';

const RUNS = 1500;
const ALLOWED = new Set(['TESSERA_ERR_BAD_MESSAGE', 'TESSERA_ERR_PROTOCOL_VERSION']);

/** Decode; a returned message is checked by `check`, a thrown error must be one of ours. */
function tryDecode<T>(decode: (b: Uint8Array) => T, bytes: Uint8Array, check: (m: T) => void): 'ok' | 'refused' {
  let m: T;
  try {
    m = decode(bytes);
  } catch (err) {
    if (!(err instanceof TesseraError) || !ALLOWED.has(err.code)) throw new Error(`decoder threw ${(err as Error)?.constructor?.name}: ${String((err as Error)?.message ?? err)}`);
    return 'refused';
  }
  check(m);
  return 'ok';
}

// ---------------------------------------------------------------------------------------------
// valid messages

const id = fc.string({ minLength: 1, maxLength: 24 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const v = LIVE_PROTOCOL_VERSION;

const heartbeat = fc.record({
  version: fc.constant(v),
  type: fc.constant('heartbeat'),
  role: fc.constant('receiver'),
  sector: fc.integer({ min: 0, max: 7 }),
  pid: fc.integer({ min: 1, max: 1 << 22 }),
  phase: fc.constantFrom('armed', 'voting', 'running', 'idle'),
  acquisition: fc.option(id, { nil: null }),
  lastIndex: fc.option(u32, { nil: null }),
  shutterRound: fc.option(fc.integer({ min: 0, max: 1000 }), { nil: null }),
  positions: fc.option(fc.integer({ min: 1, max: 1 << 16 }), { nil: null }),
  counters: fc.dictionary(fc.string({ maxLength: 12 }), fc.integer({ min: 0, max: 1e9 }), { maxKeys: 12 }),
  sentAt: fc.integer({ min: 0, max: 2 ** 45 }),
});
const ready = fc.record({ version: fc.constant(v), type: fc.constant('ready'), acquisition: id, sector: fc.integer({ min: 0, max: 7 }) });
const failure = fc.record({ version: fc.constant(v), type: fc.constant('failure'), acquisition: id, sector: fc.integer({ min: 0, max: 7 }), code: id, message: fc.string({ minLength: 1, maxLength: 64 }) });
const receiverMessage = fc.oneof(heartbeat, ready, failure) as fc.Arbitrary<Record<string, unknown>>;

const acquire = fc
  .record({ h: fc.integer({ min: 1, max: 16 }), w: fc.integer({ min: 1, max: 16 }), withRoi: fc.boolean() })
  .chain(({ h, w, withRoi }) =>
    fc.record({
      version: fc.constant(v),
      type: fc.constant('acquire'),
      acquisition: id,
      scanShape: fc.constant([h, w]),
      roi: withRoi ? fc.uint8Array({ minLength: h * w, maxLength: h * w, max: 1 }) : fc.constant(null),
      udfs: fc.array(fc.record({ id, name: id, params: fc.dictionary(fc.string({ maxLength: 8 }), fc.integer()) }), { maxLength: 4 }),
      chunkSize: fc.integer({ min: 1, max: 64 }),
      mode: fc.constantFrom('single', 'continuous'),
      start: fc.option(fc.record({ shutterRound: fc.nat(100), startIndex: fc.nat(1 << 20) }), { nil: null }),
    }),
  );
const params = fc.record({ version: fc.constant(v), type: fc.constant('params'), acquisition: id, udfId: id, params: fc.dictionary(fc.string({ maxLength: 8 }), fc.double()), fromFrame: fc.nat() });
const stop = fc.record({ version: fc.constant(v), type: fc.constant('stop'), acquisition: id, atFrame: fc.option(fc.nat(), { nil: null }) });
const abort = fc.record({ version: fc.constant(v), type: fc.constant('abort'), acquisition: id });
const mergerMessage = fc.oneof(acquire, params, stop, abort) as fc.Arbitrary<Record<string, unknown>>;

const partial = fc
  .record({ navStart: fc.nat(64), n: fc.integer({ min: 1, max: 8 }), sector: fc.integer({ min: 0, max: 7 }) })
  .chain(({ navStart, n, sector }) =>
    fc.record({
      version: fc.constant(v),
      type: fc.constant('partial'),
      acquisition: id,
      sector: fc.constant(sector),
      epoch: fc.nat(10),
      chunk: fc.nat(10),
      navStart: fc.constant(navStart),
      navEnd: fc.constant(navStart + n),
      frames: fc.nat(n),
      sig: fc.constant({ origin: [0, 256 * sector], shape: [1860, 256] }),
      udfs: fc.array(
        fc.record({
          id,
          paramsVersion: fc.nat(5),
          buffers: fc.dictionary(
            fc.string({ minLength: 1, maxLength: 8 }),
            fc.constantFrom('float32', 'float64', 'uint32', 'uint8').chain((dtype) => fc.record({ dtype: fc.constant(dtype), data: fc.uint8Array({ maxLength: 8 * 8 }).map((b) => b.subarray(0, b.length - (b.length % 8))) })),
            { maxKeys: 3 },
          ),
        }),
        { maxLength: 3 },
      ),
      damage: fc.uint8Array({ minLength: 4 * n, maxLength: 4 * n }),
      sentAt: fc.nat(),
    }),
  ) as fc.Arbitrary<Record<string, unknown>>;

const proposeMsg = fc.record({ version: fc.constant(1), type: fc.constant('propose'), requestId: fc.nat(), sector: fc.integer({ min: 0, max: 7 }), frameKey: u32, frameId: u32, sawEdge: fc.boolean() });
const decisionMsg = fc.record({
  version: fc.constant(1),
  type: fc.constant('decision'),
  requestId: fc.nat(),
  round: fc.integer({ min: 1, max: 1000 }),
  firstActiveKey: u32,
  voters: fc.uniqueArray(fc.integer({ min: 0, max: 7 })),
  missing: fc.uniqueArray(fc.integer({ min: 0, max: 7 })),
  decidedBy: fc.constantFrom('all', 'timeout'),
  late: fc.boolean(),
});
const electionMsg = fc.oneof(proposeMsg, decisionMsg, fc.record({ version: fc.constant(1), type: fc.constant('no_decision'), requestId: fc.nat() })) as fc.Arbitrary<Record<string, unknown>>;

// ---------------------------------------------------------------------------------------------
// mutations

/** A valid message with one field replaced by anything, or removed. */
function fieldMutated(valid: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<Uint8Array> {
  return fc.tuple(valid, fc.nat(), fc.option(fc.anything({ withTypedArray: true, withBigInt: false, maxDepth: 3 }), { nil: undefined })).map(([m, k, value]) => {
    const keys = Object.keys(m);
    const key = keys[k % keys.length]!;
    const out = { ...m };
    if (value === undefined) delete out[key];
    else out[key] = value;
    return pack(out);
  });
}

/** A valid message's bytes flipped, cut, spliced or extended. */
function byteMutated(valid: fc.Arbitrary<Record<string, unknown>>, encode: (m: Record<string, unknown>) => Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(valid, fc.array(fc.tuple(fc.constantFrom('flip', 'cut', 'insert', 'set'), fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }))
    .map(([m, edits]) => {
      let b = Uint8Array.from(encode(m));
      for (const [op, at, value] of edits) {
        const i = b.length ? at % b.length : 0;
        if (op === 'flip' && b.length) b[i]! ^= 1 << (value % 8);
        else if (op === 'set' && b.length) b[i] = value;
        else if (op === 'cut') b = b.subarray(0, i);
        else b = Uint8Array.from([...b.subarray(0, i), value, ...b.subarray(i)]);
      }
      return b;
    });
}

function inputs(valid: fc.Arbitrary<Record<string, unknown>>, encode: (m: Record<string, unknown>) => Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    valid.map(encode),
    fc.uint8Array({ maxLength: 256 }),
    fc.anything({ withTypedArray: true, withBigInt: false, maxDepth: 3 }).map((x) => pack(x) as Uint8Array),
    fieldMutated(valid),
    byteMutated(valid, encode),
  );
}

const encodeAny = (m: Record<string, unknown>) => encodeLive(m as never);

// ---------------------------------------------------------------------------------------------

describe('field values that cannot be printed', () => {
  // found by the fuzzer: String({toString: 0}) throws a TypeError while the error message is built
  it('a map where a number, string or enum belongs is refused with our code in every decoder', () => {
    const odd = { toString: 0 };
    const cases: Array<[string, (b: Uint8Array) => unknown, Record<string, unknown>]> = [
      ['partial', decodePartialMessage, { version: LIVE_PROTOCOL_VERSION, type: 'partial', acquisition: 'a', sector: odd }],
      ['heartbeat', decodeReceiverMessage, { version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: odd }],
      ['acquire', decodeMergerMessage, { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition: 'a', scanShape: [1, 1], udfs: [], chunkSize: 1, mode: odd }],
      ['election', decodeElectionMessage, { version: 1, type: 'propose', requestId: 1, sector: odd }],
    ];
    for (const [what, decode, message] of cases) {
      expect(() => decode(pack(message)), what).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
    }
  });
});

describe('live protocol decoders under fuzzing', () => {
  it('valid messages decode to themselves', () => {
    fc.assert(
      fc.property(receiverMessage, (m) => {
        const d = decodeReceiverMessage(encodeAny(m)) as unknown as Record<string, unknown>;
        expect(d.type).toBe(m.type);
        expect(d.sector).toBe(m.sector);
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(mergerMessage, (m) => {
        const d = decodeMergerMessage(encodeAny(m)) as unknown as Record<string, unknown>;
        expect(d.type).toBe(m.type);
        expect(d.acquisition).toBe(m.acquisition);
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(partial, (m) => {
        const d = decodePartialMessage(encodeAny(m));
        expect([d.navStart, d.navEnd, d.frames, d.epoch, d.chunk]).toEqual([m.navStart, m.navEnd, m.frames, m.epoch, m.chunk]);
        expect(Buffer.from(d.damage.buffer, d.damage.byteOffset, d.damage.byteLength).equals(Buffer.from(m.damage as Uint8Array))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('decodeReceiverMessage: anything else is refused with our code, what passes is well-formed', () => {
    let ok = 0;
    fc.assert(
      fc.property(inputs(receiverMessage, encodeAny), (bytes) => {
        const r = tryDecode(decodeReceiverMessage, bytes, (m) => {
          expect(['heartbeat', 'ready', 'failure']).toContain(m.type);
          expect(Number.isInteger(m.sector) && m.sector >= 0 && m.sector <= 63).toBe(true);
          if (m.type === 'heartbeat') {
            expect(Object.keys(m.counters).length).toBeLessThanOrEqual(256);
            for (const c of Object.values(m.counters)) expect(Number.isFinite(c)).toBe(true);
          }
        });
        if (r === 'ok') ok++;
      }),
      { numRuns: RUNS },
    );
    // the generator really reaches the accepting path too (a test that only sees refusals proves little)
    expect(ok).toBeGreaterThan(RUNS / 20);
  });

  it('decodeMergerMessage: anything else is refused with our code, what passes is well-formed', () => {
    let ok = 0;
    fc.assert(
      fc.property(inputs(mergerMessage, encodeAny), (bytes) => {
        if (
          tryDecode(decodeMergerMessage, bytes, (m) => {
            expect(['acquire', 'params', 'stop', 'abort']).toContain(m.type);
            if (m.type === 'acquire') {
              expect(m.scanShape.every((x) => Number.isInteger(x) && x >= 1 && x <= 1 << 20)).toBe(true);
              if (m.roi) expect(m.roi.length).toBe(m.scanShape[0] * m.scanShape[1]);
              expect(m.udfs.length).toBeLessThanOrEqual(64);
              expect(m.chunkSize).toBeGreaterThanOrEqual(1);
            }
          }) === 'ok'
        )
          ok++;
      }),
      { numRuns: RUNS },
    );
    expect(ok).toBeGreaterThan(RUNS / 20);
  });

  it('decodePartialMessage: anything else is refused with our code, what passes is well-formed', () => {
    let ok = 0;
    fc.assert(
      fc.property(inputs(partial, encodeAny), (bytes) => {
        if (
          tryDecode(decodePartialMessage, bytes, (m: PartialMessage) => {
            expect(m.navEnd).toBeGreaterThan(m.navStart);
            expect(m.damage.length).toBe(m.navEnd - m.navStart);
            expect(m.frames).toBeLessThanOrEqual(m.navEnd - m.navStart);
            expect(m.udfs.length).toBeLessThanOrEqual(64);
            for (const u of m.udfs) for (const w of Object.values(u.buffers)) expect(w.data).toBeInstanceOf(Uint8Array);
          }) === 'ok'
        )
          ok++;
      }),
      { numRuns: RUNS },
    );
    expect(ok).toBeGreaterThan(RUNS / 20);
  });

  it('decodeElectionMessage: anything else is refused with our code, what passes is well-formed', () => {
    let ok = 0;
    fc.assert(
      fc.property(inputs(electionMsg, (m) => encodeElectionMessage(m as unknown as ElectionMessage)), (bytes) => {
        if (
          tryDecode(decodeElectionMessage, bytes, (m) => {
            expect(['propose', 'decision', 'no_decision']).toContain(m.type);
            expect(Number.isSafeInteger(m.requestId)).toBe(true);
            if (m.type === 'propose') expect(m.sector >= 0 && m.sector <= 7 && m.frameKey >= 0 && m.frameKey <= 0xffffffff).toBe(true);
            if (m.type === 'decision') expect([...m.voters, ...m.missing].every((s) => s >= 0 && s <= 7)).toBe(true);
          }) === 'ok'
        )
          ok++;
      }),
      { numRuns: RUNS },
    );
    expect(ok).toBeGreaterThan(RUNS / 20);
  });

  it('a wrong version is TESSERA_ERR_PROTOCOL_VERSION for every decoder', () => {
    const wrong = (m: Record<string, unknown>) => pack({ ...m, version: 99 });
    expect(() => decodeReceiverMessage(wrong({ type: 'ready', acquisition: 'a', sector: 0 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_PROTOCOL_VERSION' }));
    expect(() => decodeMergerMessage(wrong({ type: 'abort', acquisition: 'a' }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_PROTOCOL_VERSION' }));
    expect(() => decodePartialMessage(wrong({ type: 'partial' }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_PROTOCOL_VERSION' }));
    expect(() => decodeElectionMessage(wrong({ type: 'no_decision', requestId: 1 }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_PROTOCOL_VERSION' }));
  });
});

describe('ZeroMQ size limits on receiving sockets', () => {
  it('the election coordinator drops a message over MAX_ELECTION_MESSAGE_BYTES and goes on answering', async () => {
    const port = await freeTcpPort();
    const coord = await ElectionCoordinator.start({ endpoint: `tcp://127.0.0.1:${port}`, expectedSectors: [0], timeoutMs: 2000 });
    const raw = new zmq.Dealer({ linger: 0 });
    const garbage = new zmq.Dealer({ linger: 0 });
    garbage.connect(coord.endpoint);
    const client = new ElectionClient({ endpoint: coord.endpoint, sector: 0, resendMs: 200, answerTimeoutMs: 10_000 });
    try {
      raw.connect(coord.endpoint);
      await raw.send(Buffer.alloc(MAX_ELECTION_MESSAGE_BYTES + 1024, 0xa5));
      // zmq cuts the offending peer off: what it sends next never arrives either
      await raw.send(Buffer.from([0xc1]));
      await garbage.send(Buffer.from([0xc1]));
      const answer = await client.propose({ frameKey: 3200, frameId: 7, sawEdge: true });
      expect(answer).toMatchObject({ kind: 'decision' });
      // only the small garbage of the other peer reached the decoder
      expect(coord.stats.malformed).toBe(1);
    } finally {
      raw.close();
      garbage.close();
      await client.close();
      await coord.close();
    }
  });

  it("the merger's receiver link drops an oversize partial and still takes the next valid one", async () => {
    const [control, results] = [await freeTcpPort(), await freeTcpPort()];
    const partials: PartialMessage[] = [];
    const link = await ReceiverLink.open({ control: `tcp://127.0.0.1:${control}`, results: `tcp://127.0.0.1:${results}`, maxMessageBytes: 4096, onControl: () => {}, onPartial: (m) => partials.push(m) });
    const big = new zmq.Push({ linger: 0 });
    const good = new zmq.Push({ linger: 0 });
    const message = (n: number) =>
      encodeLive({ version: LIVE_PROTOCOL_VERSION, type: 'partial', acquisition: 'a', sector: 0, epoch: 0, chunk: 0, navStart: 0, navEnd: n, frames: n, sig: { origin: [0, 0], shape: [1860, 256] }, udfs: [], damage: new Uint32Array(n), sentAt: 1 } as PartialMessage);
    try {
      big.connect(link.resultsEndpoint);
      good.connect(link.resultsEndpoint);
      await big.send(message(4096));
      await good.send(message(4));
      const deadline = Date.now() + 5000;
      while (partials.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      expect(partials.map((p) => p.navEnd)).toEqual([4]);
    } finally {
      big.close();
      good.close();
      await link.close();
    }
  });
});
