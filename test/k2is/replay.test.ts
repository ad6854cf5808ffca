/**
 * `runReplay` / `RecordedStreamPlan` (tessera simulate --replay-bin) in-process, over real UDP
 * sockets on 127.0.0.1: every sector socket receives exactly its file's whole blocks, in file
 * order, byte for byte (the reference is the file itself, read independently); frames group the
 * same block_counts in every sector; a loop continues the counters; --frames selects complete
 * frames; files that do not synchronise still replay; bad directories give clear errors.
 */
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { resolveReplayOptions, resolveSimulateOptions } from '../../src/commands/simulate.js';
import { runSimulation } from '../../src/k2is/simulator/simulation.js';
import { runReplay, type ReplayOptions } from '../../src/k2is/simulator/replay.js';
import { RecordedStreamPlan } from '../../src/k2is/simulator/replay-plan.js';
import type { BinLayout } from '../../src/k2is/simulator/bin-writer.js';

const BLOCK = 22360;
const U32 = 2 ** 32;
const dir = mkdtempSync(join(tmpdir(), 'tessera-replay-'));
const sockets: dgram.Socket[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const be32 = (b: Uint8Array, o: number) => new DataView(b.buffer, b.byteOffset + o, 4).getUint32(0);

/** A simulator recording: 3 flag-off frames, a 2x3 scan, 2 parked frames, untidy ends. */
async function record(name: string, extra: Partial<Parameters<typeof runSimulation>[0]> = {}): Promise<{ dir: string; layout: BinLayout }> {
  const d = join(dir, name);
  const s = await runSimulation({
    scene: { scanShape: [2, 3], seed: 5 },
    stream: { framesBeforeScan: 3, framesAfterScan: 2, blockCountStart: 1000 },
    sectors: [0, 1, 2, 3, 4, 5, 6, 7],
    fps: 0,
    udp: null,
    bin: { dir: d, name: 'rec', leadingGarbage: true, incompleteEnd: true },
    ...extra,
  });
  return { dir: d, layout: s.bin! };
}

let rec: { dir: string; layout: BinLayout };
let files: Buffer[];
beforeAll(async () => {
  rec = await record('untidy');
  files = rec.layout.files.map((f) => readFileSync(f));
});

/** Eight sockets on consecutive free ports; what each receives, in order. */
async function sectorSockets(): Promise<{ base: number; got: Buffer[][] }> {
  const bind = (port: number) =>
    new Promise<dgram.Socket>((resolve, reject) => {
      const s = dgram.createSocket('udp4');
      s.once('error', (e) => {
        s.close();
        reject(e);
      });
      s.bind(port, '127.0.0.1', () => resolve(s));
    });
  for (let attempt = 0; attempt < 40; attempt++) {
    const first = await bind(0);
    const base = first.address().port;
    const socks = [first];
    try {
      for (let k = 1; k < 8; k++) socks.push(await bind(base + k));
    } catch {
      for (const s of socks) s.close();
      continue;
    }
    const got: Buffer[][] = socks.map(() => []);
    socks.forEach((s, k) => {
      s.setRecvBufferSize(32 << 20);
      s.on('message', (m) => got[k]!.push(m));
    });
    sockets.push(...socks);
    return { base, got };
  }
  throw new Error('no 8 consecutive free UDP ports');
}

async function replayInto(o: Partial<ReplayOptions> & { path: string }, expectedPerSector: number[]) {
  const { base, got } = await sectorSockets();
  const summary = await runReplay({ sectors: [0, 1, 2, 3, 4, 5, 6, 7], fps: 150, udp: { host: '127.0.0.1', basePort: base, multicast: false }, ...o });
  const deadline = Date.now() + 10_000;
  while (got.some((g, s) => g.length < expectedPerSector[s]!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100)); // nothing more may come
  return { summary, got };
}

const wholeBlocks = (file: Buffer) => Math.floor(file.length / BLOCK);
const blockOf = (file: Buffer, i: number) => file.subarray(i * BLOCK, (i + 1) * BLOCK);

describe('RecordedStreamPlan', () => {
  it('groups the same block_counts in every sector, covers every whole block once, and skips truncated tails', () => {
    const plan = RecordedStreamPlan.open(rec.dir);
    try {
      expect(plan.syncProblem).toBeNull();
      expect(plan.scanShape).toEqual([2, 3]);
      // stream frames 0..9 (3 + 6 - 1 + 2), frame 0 a partial lead-in, plus the partial extra frame
      expect(plan.frameStart).toBe(-1);
      expect(plan.frameStop).toBe(10);
      expect(plan.completeFrames).toBe(9);
      expect(plan.truncatedBytes).toEqual(rec.layout.truncatedBytes);
      for (let s = 0; s < 8; s++) {
        const seen: number[] = [];
        for (let v = plan.frameStart; v < plan.frameStop; v++) {
          const r = plan.blocksOf(v, s);
          // replay frame v = stream frame v + 1: block_counts 1000 + 32 (v + 1) + position
          for (let j = 0; j < r.count; j++) {
            const bc = be32(blockOf(files[s]!, r.firstBlock + j), 16);
            expect(bc, `sector ${s} frame ${v} block ${j}`).toBe(1000 + 32 * (v + 1) + r.firstPosition + j);
            seen.push(r.firstBlock + j);
          }
        }
        expect(seen).toEqual(Array.from({ length: wholeBlocks(files[s]!) }, (_, i) => i));
        expect(plan.blocksPerPass(s)).toBe(wholeBlocks(files[s]!));
      }
    } finally {
      plan.close();
    }
  });
});

describe('runReplay over UDP', () => {
  it('sends every whole block of every file exactly as recorded, sector i to BASEPORT + i', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) });
    const expected = files.map(wholeBlocks);
    const { summary, got } = await replayInto({ path: rec.dir }, expected);
    expect(summary.frames).toBe(11);
    expect(summary.datagrams).toBe(expected.reduce((a, b) => a + b, 0));
    for (let s = 0; s < 8; s++) {
      expect(got[s]!.length, `sector ${s}`).toBe(expected[s]);
      expect(Buffer.compare(Buffer.concat(got[s]!), files[s]!.subarray(0, expected[s]! * BLOCK)), `sector ${s} bytes`).toBe(0);
    }
    // and the warnings: one per truncated tail
    await runReplay({ path: rec.dir, sectors: [0, 1, 2, 3, 4, 5, 6, 7], fps: 0, udp: { host: '127.0.0.1', basePort: 9, multicast: false }, maxFrames: 1 }, log);
    const tails = lines.filter((l) => l.msg === 'truncated block at the end of the file: skipped (not a whole datagram)');
    expect(tails.map((l) => [l.sector, l.bytes])).toEqual(rec.layout.truncatedBytes.map((b, s) => [s, b]));
    expect(lines.find((l) => l.msg === 'replay done')).toMatchObject({ truncatedBlocksSkipped: 8, frames: 1 });
    // the shutter edge is complete frames 1 -> 2 (stream frames 2 -> 3): a range without it is worth a warning
    const edgeWarnings = async (start: number, stop: number) => {
      lines.length = 0;
      await runReplay({ path: rec.dir, sectors: [0], fps: 0, udp: { host: '127.0.0.1', basePort: 9, multicast: false }, frames: { start, stop }, maxFrames: 1 }, log);
      return lines.filter((l) => l.firstFlaggedFrame === 2 && l.level === 40).length;
    };
    expect(await edgeWarnings(2, 5)).toBe(1);
    expect(await edgeWarnings(0, 2)).toBe(1);
    expect(await edgeWarnings(1, 3)).toBe(0);
  });

  it('--loop: the second pass is the recording again with block_count and frame_id continuing', async () => {
    const plan = RecordedStreamPlan.open(rec.dir);
    const fpp = plan.framesPerPass;
    plan.close();
    const expected = files.map((f) => 2 * wholeBlocks(f));
    const { summary, got } = await replayInto({ path: rec.dir, loop: true, maxFrames: 2 * fpp, fps: 0 }, expected);
    expect(summary.passes).toBe(2);
    for (let s = 0; s < 8; s++) {
      const n = wholeBlocks(files[s]!);
      expect(got[s]!.length).toBe(2 * n);
      let prevCount = -1;
      for (let i = 0; i < 2 * n; i++) {
        const want = Buffer.from(blockOf(files[s]!, i % n));
        if (i >= n) {
          want.writeUInt32BE((want.readUInt32BE(16) + 32 * fpp) % U32, 16);
          want.writeUInt32BE((want.readUInt32BE(24) + fpp) % U32, 24);
        }
        expect(Buffer.compare(got[s]![i]!, want), `sector ${s} datagram ${i}`).toBe(0);
        const bc = got[s]![i]!.readUInt32BE(16);
        expect(bc).toBeGreaterThan(prevCount); // never runs backwards
        prevCount = bc;
      }
    }
  });

  it('--frames A:B sends complete frames A..B-1 only, and a burst drop per pass is logged with block positions', async () => {
    const plan = RecordedStreamPlan.open(rec.dir, { start: 2, stop: 5 });
    const first = [...plan.first];
    plan.close();
    const log = join(dir, 'frames-faults.jsonl');
    const { got } = await replayInto({ path: rec.dir, frames: { start: 2, stop: 5 }, faults: { burstDrop: 5, seed: 3 }, faultLogPath: log }, files.map(() => 96 - 5));
    const faults = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { sector: number; blockCount: number; streamFrame: number; blockIndex: number; kind: string });
    for (let s = 0; s < 8; s++) {
      const lost = new Set(faults.filter((f) => f.sector === s).map((f) => f.blockCount));
      expect(lost.size).toBe(5);
      const want: Buffer[] = [];
      for (let i = 0; i < 96; i++) {
        const b = blockOf(files[s]!, first[s]! + 64 + i);
        if (!lost.has(b.readUInt32BE(16))) want.push(b);
      }
      expect(got[s]!.length).toBe(91);
      expect(Buffer.compare(Buffer.concat(got[s]!), Buffer.concat(want)), `sector ${s}`).toBe(0);
      for (const f of faults.filter((x) => x.sector === s)) {
        expect(f.kind).toBe('burst_drop');
        // complete frame 2 is stream frame 3 (block_count 1000 + 32 x 3 + position)
        expect(f.blockCount).toBe(1000 + 32 * (3 + f.streamFrame) + f.blockIndex);
      }
    }
  });

  it('files that do not synchronise (no shutter flag) are replayed from their first block, with the reason kept', async () => {
    const noFlag = await record('noflag', { stream: { framesBeforeScan: 10, framesAfterScan: 0 }, maxFrames: 4, bin: { dir: join(dir, 'noflag'), name: 'x' } });
    const f = noFlag.layout.files.map((p) => readFileSync(p));
    const { summary, got } = await replayInto({ path: noFlag.dir }, f.map(wholeBlocks));
    expect(summary.syncProblem).toMatch(/shutter/);
    expect(summary.framesPerPass).toBe(4);
    for (let s = 0; s < 8; s++) expect(Buffer.compare(Buffer.concat(got[s]!), f[s]!)).toBe(0);
  });
});

describe('errors', () => {
  const udp = { host: '127.0.0.1', basePort: 9, multicast: false };
  const replay = (path: string, extra: Partial<ReplayOptions> = {}) => runReplay({ path, sectors: [0], fps: 0, udp, ...extra });

  it('a missing directory, an empty one, a missing sector file, a file without a whole block', async () => {
    await expect(replay(join(dir, 'nope'))).rejects.toMatchObject({ code: 'TESSERA_ERR_SECTOR_FILES', message: expect.stringContaining('does not exist') });
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    await expect(replay(empty)).rejects.toMatchObject({ code: 'TESSERA_ERR_SECTOR_FILES' });
    const seven = join(dir, 'seven');
    mkdirSync(seven);
    for (let s = 0; s < 8; s++) writeFileSync(join(seven, `rec_${s + 1}.bin`), files[s]!);
    unlinkSync(join(seven, 'rec_4.bin'));
    await expect(replay(seven)).rejects.toMatchObject({ code: 'TESSERA_ERR_SECTOR_FILES', message: expect.stringContaining('rec_4.bin') });
    writeFileSync(join(seven, 'rec_4.bin'), files[3]!.subarray(0, BLOCK - 1));
    await expect(replay(seven)).rejects.toMatchObject({ code: 'TESSERA_ERR_SECTOR_FILES' });
    await expect(replay(join(seven, 'rec_1.bin'))).rejects.toMatchObject({ code: 'TESSERA_ERR_SECTOR_FILES' });
  });

  it('bad --frames ranges and options that do not apply to a replay', async () => {
    await expect(replay(rec.dir, { frames: { start: 5, stop: 10 } })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    await expect(replay(rec.dir, { frames: { start: 9, stop: null } })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    await expect(replay(rec.dir, { faults: { burstDrop: 10_000 } })).rejects.toMatchObject({ code: 'TESSERA_ERR_BAD_ARGUMENT' });
    const config = loadConfig();
    expect(() => resolveReplayOptions({ replayBin: rec.dir, scan: '4x4' }, config)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => resolveReplayOptions({ replayBin: rec.dir, frames: '3' }, config)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => resolveReplayOptions({ replayBin: rec.dir, frames: '4:2' }, config)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(() => resolveSimulateOptions({ loop: true }, config)).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_ARGUMENT' }));
    expect(resolveReplayOptions({ replayBin: rec.dir, frames: ':4', fps: '0', udp: '127.0.0.1:4000', drop: '0.1', seed: '7', loop: true }, config)).toMatchObject({
      path: rec.dir,
      frames: { start: 0, stop: 4 },
      fps: 0,
      loop: true,
      udp: { host: '127.0.0.1', basePort: 4000 },
      faults: { drop: 0.1, seed: 7 },
    });
  });
});
