/**
 * The first-frame election on real ZeroMQ sockets (ROUTER coordinator, DEALER clients on
 * 127.0.0.1): unanimous and partial votes, the earliest key winning across the 2^32 wrap,
 * the timeout, late joiners and queries, new rounds, and malformed traffic in both directions.
 */
import { pack } from 'msgpackr';
import * as zmq from 'zeromq';
import { afterEach, describe, expect, it } from 'vitest';
import {
  decodeElectionMessage,
  ElectionClient,
  ElectionCoordinator,
  encodeElectionMessage,
  framesSinceScanStart,
  scanPositionKey,
  type ElectionAnswer,
} from '../../src/protocol/election.js';

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

async function coordinator(expectedSectors: number[], timeoutMs = 5000) {
  const c = await ElectionCoordinator.start({ endpoint: 'tcp://127.0.0.1:*', expectedSectors, timeoutMs });
  open.push(c);
  return c;
}

function client(endpoint: string, sector: number, answerTimeoutMs = 10_000) {
  const c = new ElectionClient({ endpoint, sector, resendMs: 200, answerTimeoutMs });
  open.push(c);
  return c;
}

function decisionOf(a: ElectionAnswer) {
  expect(a.kind).toBe('decision');
  return a as Extract<ElectionAnswer, { kind: 'decision' }>;
}

const K = 32 * 12345 + 7;

describe('election coordinator and clients', () => {
  it('decides when all expected sectors voted; the earliest key wins', async () => {
    const coord = await coordinator([0, 1, 2, 3, 4, 5, 6, 7]);
    const clients = [0, 1, 2, 3, 4, 5, 6, 7].map((s) => client(coord.endpoint, s));
    // sector 3 lost the first flagged frame entirely: it saw the next one first
    const keys = clients.map((_, s) => (s === 3 ? K + 32 : K));
    const answers = await Promise.all(clients.map((c, s) => c.propose({ frameKey: keys[s]!, frameId: 500 + (s === 3 ? 1 : 0), sawEdge: true })));
    for (const a of answers) {
      const d = decisionOf(a);
      expect(d.firstActiveKey).toBe(K);
      expect(d.decidedBy).toBe('all');
      expect(d.missing).toEqual([]);
      expect(d.round).toBe(1);
    }
    expect(coord.latest!.voters).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(coord.latest!.proposals[3]).toEqual({ frameKey: K + 32, frameId: 501 });
    // every sector maps alike: scan position 0 is the frame before the first flagged one
    expect(framesSinceScanStart(K - 32, K)).toBe(0);
    expect(framesSinceScanStart(K, K)).toBe(1);
    expect(framesSinceScanStart(keys[3]!, K)).toBe(2); // sector 3's first flagged frame is position 2
    expect(framesSinceScanStart(K - 64, K)).toBe(-1);
    expect(scanPositionKey(K, 2)).toBe(K + 32);
    expect(coord.stats.malformed).toBe(0);
  });

  it('the earliest key wins across the block_count wrap at 2^32', async () => {
    const coord = await coordinator([0, 1, 2]);
    const keys = [0x10, (0x10 - 32) >>> 0, 0x30];
    const answers = await Promise.all(keys.map((k, s) => client(coord.endpoint, s).propose({ frameKey: k, frameId: 1, sawEdge: true })));
    for (const a of answers) expect(decisionOf(a).firstActiveKey).toBe(0xfffffff0);
    expect(framesSinceScanStart(0x30, 0xfffffff0)).toBe(3);
  });

  it('decides at the timeout with the votes it has, naming the missing sector', async () => {
    const coord = await coordinator([0, 1, 2, 3], 300);
    const t0 = performance.now();
    const answers = await Promise.all([0, 1, 2].map((s) => client(coord.endpoint, s).propose({ frameKey: K, frameId: 9, sawEdge: true })));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    for (const a of answers) {
      const d = decisionOf(a);
      expect(d.decidedBy).toBe('timeout');
      expect(d.missing).toEqual([3]);
      expect(d.firstActiveKey).toBe(K);
    }
    // the missing sector arrives late, for the same edge: it gets the decision made
    const late = decisionOf(await client(coord.endpoint, 3).propose({ frameKey: K + 64, frameId: 11, sawEdge: true }));
    expect(late).toMatchObject({ firstActiveKey: K, late: true, round: 1 });
    expect(coord.stats.decisions).toBe(1);
  });

  it('answers queries of receivers that started mid-acquisition, and opens a new round for a new edge', async () => {
    const coord = await coordinator([0, 1]);
    const c0 = client(coord.endpoint, 0);
    const c1 = client(coord.endpoint, 1);
    // nothing decided yet: a query gets no_decision
    expect(await c1.propose({ frameKey: K, frameId: 1, sawEdge: false })).toEqual({ kind: 'none' });
    await Promise.all([c0.propose({ frameKey: K, frameId: 1, sawEdge: true }), c1.propose({ frameKey: K, frameId: 1, sawEdge: true })]);
    // a restarted receiver, flag already on, frames well into the scan
    const restarted = client(coord.endpoint, 1);
    expect(decisionOf(await restarted.propose({ frameKey: K + 32 * 500, frameId: 1, sawEdge: false }))).toMatchObject({ firstActiveKey: K, late: true });
    // a query from before the acquisition cannot join it
    expect(await restarted.propose({ frameKey: K - 32 * 5, frameId: 1, sawEdge: false })).toEqual({ kind: 'none' });
    // the next acquisition's edge, far later: round 2
    const K2 = K + 32 * 1000;
    const [a, b] = await Promise.all([c0.propose({ frameKey: K2 + 32, frameId: 3, sawEdge: true }), c1.propose({ frameKey: K2, frameId: 2, sawEdge: true })]);
    expect(decisionOf(a)).toMatchObject({ round: 2, firstActiveKey: K2, late: false });
    expect(decisionOf(b)).toMatchObject({ round: 2, firstActiveKey: K2 });
  });

  it('a query during an open round is answered when the round is decided', async () => {
    const coord = await coordinator([0, 1]);
    const v0 = client(coord.endpoint, 0).propose({ frameKey: K, frameId: 1, sawEdge: true });
    await new Promise((r) => setTimeout(r, 100));
    const q = client(coord.endpoint, 5).propose({ frameKey: K + 320, frameId: 1, sawEdge: false });
    await new Promise((r) => setTimeout(r, 100));
    const v1 = client(coord.endpoint, 1).propose({ frameKey: K, frameId: 1, sawEdge: true });
    const [a0, aq, a1] = await Promise.all([v0, q, v1]);
    expect(decisionOf(a0).firstActiveKey).toBe(K);
    expect(decisionOf(a1).firstActiveKey).toBe(K);
    expect(decisionOf(aq)).toMatchObject({ firstActiveKey: K, late: true });
  });

  it('counts and ignores malformed messages, and keeps working', async () => {
    const coord = await coordinator([0]);
    const raw = new zmq.Dealer({ linger: 0 });
    open.push(raw);
    raw.connect(coord.endpoint);
    const good = { version: 1, type: 'propose', requestId: 1, sector: 0, frameKey: K, frameId: 1, sawEdge: true };
    const bad: Array<Buffer | Buffer[]> = [
      Buffer.from([0xc1]), // never valid msgpack
      Buffer.from('hello'),
      pack([1, 2, 3]),
      pack({ ...good, version: 2 }),
      pack({ ...good, version: undefined }),
      pack({ ...good, type: 'elect' }),
      pack({ ...good, sector: 8 }),
      pack({ ...good, sector: -1 }),
      pack({ ...good, frameKey: 2 ** 32 }),
      pack({ ...good, frameKey: 1.5 }),
      pack({ ...good, sawEdge: 'yes' }),
      pack({ ...good, requestId: undefined }),
      pack({ version: 1, type: 'decision', requestId: 1, round: 1, firstActiveKey: 0, voters: [], missing: [], decidedBy: 'all', late: false }),
      [pack(good), pack(good)], // two frames
    ];
    for (const m of bad) await raw.send(m);
    // then a good proposal from a real client still gets its decision
    const a = await client(coord.endpoint, 0).propose({ frameKey: K, frameId: 1, sawEdge: true });
    expect(decisionOf(a).firstActiveKey).toBe(K);
    expect(coord.stats.malformed).toBe(bad.length);
  });

  it('the client counts malformed answers and still takes the right one', async () => {
    const router = new zmq.Router({ linger: 0 });
    open.push(router);
    await router.bind('tcp://127.0.0.1:*');
    const c = client(router.lastEndpoint!, 2);
    const answer = c.propose({ frameKey: K, frameId: 1, sawEdge: true });
    const [id, msg] = await router.receive();
    const req = decodeElectionMessage(msg!);
    expect(req).toMatchObject({ type: 'propose', sector: 2, frameKey: K, sawEdge: true });
    await router.send([id!, Buffer.from('garbage')]);
    await router.send([id!, pack({ version: 7, type: 'decision' })]);
    await router.send([id!, encodeElectionMessage({ version: 1, type: 'no_decision', requestId: 9999 })]); // not ours
    await router.send([
      id!,
      encodeElectionMessage({ version: 1, type: 'decision', requestId: req.requestId, round: 4, firstActiveKey: K - 32, voters: [2], missing: [], decidedBy: 'all', late: false }),
    ]);
    expect(decisionOf(await answer)).toMatchObject({ firstActiveKey: K - 32, round: 4 });
    expect(c.stats.malformed).toBe(2);
    expect(c.stats.unmatched).toBe(1);
  });

  it('a client with no coordinator gives up with no_answer', async () => {
    const c = client('tcp://127.0.0.1:1', 0, 400);
    expect(await c.propose({ frameKey: K, frameId: 1, sawEdge: true })).toEqual({ kind: 'no_answer' });
  });

  it('rejects messages of another protocol version with its own code', () => {
    expect(() => decodeElectionMessage(pack({ version: 2, type: 'propose' }))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_PROTOCOL_VERSION' }));
    expect(() => decodeElectionMessage(Buffer.from([0xc1]))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_MESSAGE' }));
  });
});
