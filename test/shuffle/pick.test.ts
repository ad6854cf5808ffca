/**
 * Picking a frame by scan position through the shuffle, on real ZeroMQ sockets in process:
 * ShuffleService + the merger's ShuffleLink + eight fake receivers (DEALERs that apply the
 * shuffle's rule book as the real ones do and send known slices) + a worker. The picked frame
 * equals, pixel for pixel, the frame the receivers sent for that position, with its damage; the
 * workers' own selection is not disturbed; a recent frame answers at once; a position that
 * never comes is a clear error within the bound; a single scan past it is refused. The same
 * through the HTTP route (GET /api/acquisitions/:id/frames/:position) on a real fastify server.
 */
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { FRAME_HEIGHT, FRAME_WIDTH, SECTOR_WIDTH } from '../../src/k2is/constants.js';
import { httpApiPlugin, type AcquisitionController } from '../../src/merger/http-api.js';
import { LiveStoreRegistry } from '../../src/merger/live-store.js';
import { LIVE_PROTOCOL_VERSION, type AcquireMessage } from '../../src/protocol/live.js';
import { asFrameHeader, asSelection, decodeShuffle, encodeShuffle, SHUFFLE_PROTOCOL_VERSION, type FrameHeader } from '../../src/shuffle/protocol.js';
import { RuleBook } from '../../src/shuffle/selection.js';
import { ShuffleLink } from '../../src/shuffle/shuffle-link.js';
import { ShuffleService } from '../../src/shuffle/shuffle-service.js';
import { freeTcpPort, waitUntil } from '../merger/live-helpers.js';

const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

const V = SHUFFLE_PROTOCOL_VERSION;
const N = FRAME_HEIGHT * FRAME_WIDTH;

/** the known frame of index `index`: a different pattern per frame */
function frameOf(index: number): Uint16Array {
  const f = new Uint16Array(N);
  for (let i = 0; i < N; i++) f[i] = (i * 13 + index * 977) & 0xfff;
  return f;
}

/** sector k's columns of a frame, as a SliceSender sends them (all rows in one slice) */
function sliceOf(frame: Uint16Array, k: number): Buffer {
  const out = new Uint16Array(FRAME_HEIGHT * SECTOR_WIDTH);
  for (let y = 0; y < FRAME_HEIGHT; y++) out.set(frame.subarray(y * FRAME_WIDTH + k * SECTOR_WIDTH, y * FRAME_WIDTH + (k + 1) * SECTOR_WIDTH), y * SECTOR_WIDTH);
  return Buffer.from(out.buffer);
}

/** per sector damage of frame `index`: sector 2 lost blocks 0 and 2 in every third frame */
const damageOf = (index: number, k: number) => (k === 2 && index % 3 === 0 ? 0b101 : 0);

/** Eight receivers that hold the shuffle's rule book (read from every selection message) and send only what it selects. */
class FakeReceivers {
  readonly dealers: zmq.Dealer[];
  readonly books = Array.from({ length: 8 }, () => new RuleBook());
  private readonly loops: Promise<void>[];

  constructor(endpoint: string) {
    this.dealers = Array.from({ length: 8 }, (_, k) => {
      const d = new zmq.Dealer({ routingId: `slices-${k}`, linger: 0 });
      d.connect(endpoint);
      return d;
    });
    this.loops = this.dealers.map(async (d, k) => {
      for (;;) {
        let raw: Buffer[];
        try {
          raw = await d.receive();
        } catch {
          return;
        }
        const b = asSelection(decodeShuffle(raw[0]!));
        this.books[k]!.replace(b.rules, b.ruleVersion);
      }
    });
  }

  async hello(): Promise<void> {
    for (let k = 0; k < 8; k++) await this.dealers[k]!.send(encodeShuffle({ version: V, type: 'hello', sector: k, pid: 1, ruleVersion: 0 }));
  }

  /** send frames [from, to) that the rule book selects (all 8 receivers agree: checked); returns the indices sent */
  async send(acquisition: string, from: number, to: number, missing?: { index: number; sector: number }): Promise<number[]> {
    const sent: number[] = [];
    for (let index = from; index < to; index++) {
      const picks = this.books.map((b) => b.selects(index, 1) !== null);
      expect(new Set(picks).size).toBe(1);
      if (!picks[0]) continue;
      const frame = frameOf(index);
      for (let k = 0; k < 8; k++) {
        if (missing && missing.index === index && missing.sector === k) continue;
        await this.dealers[k]!.send([encodeShuffle({ version: V, type: 'slice', sector: k, round: 1, index, acquisition, row0: 0, rows: FRAME_HEIGHT, damage: damageOf(index, k) }), sliceOf(frame, k)]);
      }
      sent.push(index);
    }
    return sent;
  }

  close(): void {
    for (const d of this.dealers) d.close();
  }
}

class Worker {
  readonly frames: FrameHeader[] = [];
  private readonly dealer = new zmq.Dealer({ routingId: 'w1', linger: 0 });
  constructor(endpoint: string) {
    this.dealer.connect(endpoint);
    void this.dealer.send(encodeShuffle({ version: V, type: 'credit', pid: 1, n: 64 }));
    void (async () => {
      for (;;) {
        try {
          const m = await this.dealer.receive();
          if (m.length === 2) this.frames.push(asFrameHeader(decodeShuffle(m[0]!)));
        } catch {
          return;
        }
      }
    })();
  }
  close(): void {
    this.dealer.close();
  }
}

async function setup(mode: 'single' | 'continuous', acquisition: string, startIndex: number, frameTimeoutMs?: number) {
  const slices = `tcp://127.0.0.1:${await freeTcpPort()}`;
  const frames = `tcp://127.0.0.1:${await freeTcpPort()}`;
  // the workers' selection: scan position 1 only
  const s = await ShuffleService.start({ slices, frames, fixedRate: true, select: { kind: 'list', positions: [1] }, frameTimeoutMs });
  closers.push(() => s.close());
  const registry = new LiveStoreRegistry();
  const link = new ShuffleLink({ endpoint: slices, registry, keepEpochs: 2 });
  closers.push(() => link.close());
  const receivers = new FakeReceivers(slices);
  closers.push(() => receivers.close());
  const worker = new Worker(frames);
  closers.push(() => worker.close());
  await waitUntil(() => link.available(), 20_000, 'the link sees a shuffle with a worker');
  await receivers.hello();
  const fem = { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 10, radOut: 400 } };
  const acquire: AcquireMessage = { version: LIVE_PROTOCOL_VERSION, type: 'acquire', acquisition, scanShape: [2, 4], roi: null, udfs: [fem], chunkSize: 4, mode, start: { shutterRound: 1, startIndex } };
  registry.create({ acquisition, epoch: 0, scanShape: [2, 4], sectors: 8, info: {} });
  link.start(acquire, mode);
  await waitUntil(() => receivers.books.every((b) => b.list.some((r) => r.acquisition === acquisition)), 20_000, 'receivers hold the acquisition');
  return { s, link, receivers, worker };
}

function expectFrame(got: { data: Uint16Array; index: number; damage: number[] }, index: number): void {
  expect(got.index).toBe(index);
  expect(got.damage).toEqual(Array.from({ length: 8 }, (_, k) => damageOf(index, k)));
  expect(Buffer.compare(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength), Buffer.from(frameOf(index).buffer))).toBe(0);
}

describe('picking a frame through the shuffle (real sockets)', () => {
  it('returns exactly the frame the receivers sent for the position, with damage; workers keep their selection; recent frames answer at once; the HTTP route serves it', async () => {
    const { s, link, receivers, worker } = await setup('continuous', 'acq-p', 10);
    // epoch 0: only position 1 is selected (index 11), it goes to the worker
    expect(await receivers.send('acq-p', 10, 18)).toEqual([11]);
    await waitUntil(() => worker.frames.length === 1, 20_000, 'the worker got position 1');

    // pick position 6: not assembled yet, so the shuffle selects it from a safe index on
    const picked = link.pick('acq-p', 6, 30_000);
    await waitUntil(() => receivers.books.every((b) => b.list.length >= 2), 20_000, 'the receivers get the widened rule');
    const from = receivers.books[0]!.list[1]!.fromIndex;
    expect(from).toBeGreaterThan(17);
    const firstSix = from + ((((6 - (from - 10)) % 8) + 8) % 8);
    const sent = await receivers.send('acq-p', 18, firstSix + 1);
    expect(sent).toContain(firstSix);
    expect(sent.filter((i) => (i - 10) % 8 === 6)).toEqual([firstSix]);
    const f = await picked;
    expect(f).toMatchObject({ acquisition: 'acq-p', position: 6, epoch: Math.floor((firstSix - 10) / 8) });
    expectFrame(f, firstSix);
    // the workers got position 1 only, never the picked frame
    await waitUntil(() => worker.frames.length === sent.filter((i) => (i - 10) % 8 === 1).length + 1, 20_000, 'the worker got every position-1 frame');
    expect(worker.frames.every((h) => h.position === 1)).toBe(true);
    expect(s.pickCounters.answered).toBe(1);

    // served: the receivers' rule goes back to the workers' own (positions 1 only)
    await waitUntil(() => receivers.books[0]!.list.at(-1)!.base.kind === 'list', 20_000, 'the rule is the workers\' again');
    expect(receivers.books[0]!.list.at(-1)!.base).toEqual({ kind: 'list', positions: [1] });

    // the same position again: the shuffle still holds it among its recent frames, answered at once
    const again = await link.pick('acq-p', 6, 5000);
    expectFrame(again, firstSix);
    expect(s.pickCounters.fromRecent).toBe(1);

    // a position that never comes (no frames sent): a clear error within the bound
    const t0 = Date.now();
    await expect(link.pick('acq-p', 3, 1500)).rejects.toMatchObject({ code: 'TESSERA_ERR_PICK_TIMEOUT', statusCode: 504 });
    expect(Date.now() - t0).toBeLessThan(10_000);
    await expect(link.pick('acq-other', 3, 1500)).rejects.toMatchObject({ code: 'TESSERA_ERR_NOT_FOUND' });

    // the HTTP route on a real server, with a controller that asks the link (as the merger's does)
    const controller = { pickFrame: (id: string, position: number, timeoutMs?: number) => link.pick(id, position, timeoutMs) } as unknown as AcquisitionController;
    const app = Fastify();
    await app.register(httpApiPlugin, { prefix: '/api', controller });
    await app.listen({ host: '127.0.0.1', port: 0 });
    closers.push(() => app.close());
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const r = await fetch(`${url}/api/acquisitions/acq-p/frames/6`);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-tessera-shape')).toBe('1860,2048');
    expect(r.headers.get('x-tessera-dtype')).toBe('uint16le');
    expect(Number(r.headers.get('x-tessera-index'))).toBe(firstSix);
    expect(r.headers.get('x-tessera-damage')).toBe(Array.from({ length: 8 }, (_, k) => damageOf(firstSix, k)).join(','));
    const bytes = Buffer.from(await r.arrayBuffer());
    expect(Buffer.compare(bytes, Buffer.from(frameOf(firstSix).buffer))).toBe(0);
    const late = await fetch(`${url}/api/acquisitions/acq-p/frames/2?timeoutMs=1000`);
    expect(late.status).toBe(504);
    expect(await late.json()).toMatchObject({ code: 'TESSERA_ERR_PICK_TIMEOUT' });
    expect((await fetch(`${url}/api/acquisitions/acq-p/frames/x1`)).status).toBe(400);

    // the default wait: a scan period at the frame rate the shuffle reports, plus 2 s, at least 10 s
    expect(link.status!.frameRate).toBeGreaterThanOrEqual(0);
    const scan = (h: number, w: number) => ({ scanShape: [h, w] }) as AcquireMessage;
    link.status = { ...link.status!, frameRate: 400 };
    expect(link.pickBound(scan(2, 4))).toBe(10_000);
    expect(link.pickBound(scan(100, 100))).toBe(27_000);
    link.status = { ...link.status!, frameRate: 0 };
    expect(link.pickBound(scan(100, 100))).toBe(10_000);
  }, 120_000);

  it('a continuous scan: a picked frame with a sector missing waits for the next pass, and is sent if no whole one comes', async () => {
    const { link, receivers } = await setup('continuous', 'acq-d', 10, 300);
    expect(await receivers.send('acq-d', 10, 18)).toEqual([11]);
    let done = false;
    const picked = link.pick('acq-d', 6, 30_000).finally(() => (done = true));
    await waitUntil(() => receivers.books.every((b) => b.list.length >= 2), 20_000, 'the widened rule');
    const from = receivers.books[0]!.list[1]!.fromIndex;
    const firstSix = from + ((((6 - (from - 10)) % 8) + 8) % 8);
    await receivers.send('acq-d', 18, firstSix + 1, { index: firstSix, sector: 4 });
    await new Promise((r) => setTimeout(r, 1500)); // the incomplete frame was completed with zeros by now
    expect(done).toBe(false);
    await receivers.send('acq-d', firstSix + 1, firstSix + 9);
    const f = await picked;
    expectFrame(f, firstSix + 8);

    // the recent frames hold it: it comes at once
    expectFrame(await link.pick('acq-d', 6, 4000), firstSix + 8);
    // no whole one comes before the deadline: the partial frame, marked, zeros where the sector is missing
    const p3 = link.pick('acq-d', 3, 4000);
    await waitUntil(() => receivers.books[0]!.list.at(-1)!.base.kind === 'mask' && (receivers.books[0]!.list.at(-1)!.base as { mask: Uint8Array }).mask[3] === 1, 20_000, 'the rule with position 3');
    const from3 = receivers.books[0]!.list.at(-1)!.fromIndex;
    const three = from3 + ((((3 - (from3 - 10)) % 8) + 8) % 8);
    await receivers.send('acq-d', firstSix + 9, three + 1, { index: three, sector: 4 });
    const g = await p3;
    expect(g.index).toBe(three);
    expect(g.damage[4]).toBe(0xffffffff);
    expect(g.damage.filter((_, k) => k !== 4)).toEqual(Array.from({ length: 8 }, (_, k) => damageOf(three, k)).filter((_, k) => k !== 4));
    const truth = frameOf(three);
    for (let y = 0; y < FRAME_HEIGHT; y += 97) {
      for (let x = 0; x < FRAME_WIDTH; x += 61) expect(g.data[y * FRAME_WIDTH + x]).toBe(Math.floor(x / SECTOR_WIDTH) === 4 ? 0 : truth[y * FRAME_WIDTH + x]);
    }
  }, 120_000);

  it('a single scan already past the position: refused at once (409)', async () => {
    const { s, link, receivers } = await setup('single', 'acq-s', 100);
    expect(await receivers.send('acq-s', 100, 104)).toEqual([101]);
    // position 2 came at index 102, before anything the shuffle can still select (it saw index 101)
    await waitUntil(() => s.assembler.counters.framesComplete >= 1, 20_000, 'the shuffle assembled index 101');
    await expect(link.pick('acq-s', 2, 20_000)).rejects.toMatchObject({ code: 'TESSERA_ERR_PICK_GONE', statusCode: 409 });
  }, 60_000);
});
