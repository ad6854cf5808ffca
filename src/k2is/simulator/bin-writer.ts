/**
 * Writes a simulated acquisition as the camera software records it (spec A.1): eight sector
 * files `<NAME>_1.bin` .. `<NAME>_8.bin` (sector 0 = `_1`), each a plain concatenation of
 * 22 360-byte blocks with no file header, plus the `<NAME>_.gtg` DM4 metadata file with the scan
 * shape (`SI Dimensions` / `Size Y`, `Size X`) and a `<NAME>.json` sidecar with the simulator
 * settings.
 *
 * The .gtg is named like the camera's (`Capture52_.gtg` beside `Capture52_1.bin`): that is the
 * name LiberTEM and Tessera's reader derive from a sector file (trailing digits off the stem).
 *
 * Realistic untidiness (spec convention 5), seeded per sector:
 *  - leading garbage: sector s's file starts with only the last g_s (1..31) blocks of stream
 *    frame 0, an incomplete earlier frame, before the first whole frame (needs stream frame 0
 *    to be a parked-beam frame, i.e. framesBeforeScan >= 2);
 *  - incomplete end: after the last stream frame, the first k_s (1..31) blocks of one more
 *    (parked-beam, flag-on) frame and then the first t_s bytes of the next block (a truncated
 *    block), as when the recording stops mid-frame.
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writevSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BLOCK_SIZE, BLOCKS_PER_SECTOR_FRAME, NUM_SECTORS, SECTOR_FRAME_BYTES } from '../constants.js';
import { TesseraError } from '../../errors.js';
import { k2isGtgTags, writeDm4, dm } from '../dm4-writer.js';
import { hash32 } from './random.js';
import type { Datagram, K2ISStream } from './stream.js';

export interface BinWriterOptions {
  dir: string;
  name: string;
  /** sectors to write (normally all eight) */
  sectors: readonly number[];
  leadingGarbage?: boolean;
  incompleteEnd?: boolean;
  /** seeds the untidiness */
  seed: number;
}

export interface BinLayout {
  files: string[];
  gtg: string;
  sidecar: string;
  /** per sector: blocks of stream frame 0 at the start of the file (32 = a whole frame) */
  leadingBlocks: number[];
  /** per sector: whole blocks of the extra frame at the end (0 = none) */
  trailingBlocks: number[];
  /** per sector: bytes of the truncated block at the very end (0 = none) */
  truncatedBytes: number[];
}

export function sectorFileName(name: string, sector: number): string {
  return `${name}_${sector + 1}.bin`;
}

export function gtgFileName(name: string): string {
  return `${name}_.gtg`;
}

/** The untidiness a writer with these options produces, per sector (also useful to tests). */
export function binLayout(o: BinWriterOptions): BinLayout {
  const pick = (s: number, salt: number, n: number) => 1 + (hash32(o.seed, s, salt) % n);
  const all = Array.from({ length: NUM_SECTORS }, (_, s) => s);
  return {
    files: all.map((s) => join(o.dir, sectorFileName(o.name, s))),
    gtg: join(o.dir, gtgFileName(o.name)),
    sidecar: join(o.dir, `${o.name}.json`),
    leadingBlocks: all.map((s) => (o.leadingGarbage ? pick(s, 0x6a7b, BLOCKS_PER_SECTOR_FRAME - 1) : BLOCKS_PER_SECTOR_FRAME)),
    trailingBlocks: all.map((s) => (o.incompleteEnd ? pick(s, 0x7e4d, BLOCKS_PER_SECTOR_FRAME - 1) : 0)),
    truncatedBytes: all.map((s) => (o.incompleteEnd ? pick(s, 0x7b7c, BLOCK_SIZE - 1) : 0)),
  };
}

export class BinRecordingWriter {
  readonly layout: BinLayout;
  private readonly fds = new Map<number, number>();
  private readonly pending = new Map<number, Uint8Array[]>();
  readonly bytesWritten: number[] = new Array<number>(NUM_SECTORS).fill(0);

  private readonly seed: number;

  private constructor(layout: BinLayout, seed: number) {
    this.layout = layout;
    this.seed = seed | 0;
  }

  static open(o: BinWriterOptions): BinRecordingWriter {
    if (!/^[A-Za-z0-9._-]+$/.test(o.name)) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--name', `"${o.name}": use letters, digits, '.', '_' and '-' only`);
    }
    const w = new BinRecordingWriter(binLayout(o), o.seed);
    try {
      mkdirSync(o.dir, { recursive: true });
      for (const s of o.sectors) {
        w.fds.set(s, openSync(w.layout.files[s]!, 'w'));
        w.pending.set(s, []);
      }
    } catch (err) {
      w.abort();
      throw new TesseraError('TESSERA_ERR_OUTPUT', o.dir, (err as Error).message);
    }
    return w;
  }

  /** Queue one datagram of the stream for its sector file (leading garbage is applied here). */
  write(d: Datagram): void {
    const list = this.pending.get(d.sector);
    if (!list) return;
    if (d.streamFrame === 0 && d.blockIndex < BLOCKS_PER_SECTOR_FRAME - this.layout.leadingBlocks[d.sector]!) return;
    list.push(d.data);
  }

  /** Write what has been queued (call once per frame: one writev per sector file). */
  flush(): void {
    for (const [s, list] of this.pending) {
      if (list.length === 0) continue;
      const fd = this.fds.get(s)!;
      let total = 0;
      for (const b of list) total += b.length;
      let done = 0;
      let parts = list;
      while (done < total) {
        const n = writevSync(fd, parts);
        done += n;
        if (done < total) parts = remaining(list, done);
      }
      this.bytesWritten[s] = this.bytesWritten[s]! + total;
      list.length = 0;
    }
  }

  /** The incomplete frame at the end: stream frame `f`'s first blocks, then a truncated block. */
  writeIncompleteEnd(stream: K2ISStream, f: number): void {
    const buf = new Uint8Array(SECTOR_FRAME_BYTES);
    for (const s of this.fds.keys()) {
      const k = this.layout.trailingBlocks[s]!;
      const t = this.layout.truncatedBytes[s]!;
      if (k === 0 && t === 0) continue;
      stream.writeSectorFrame(f, s, buf, 0);
      this.pending.get(s)!.push(buf.slice(0, k * BLOCK_SIZE + t));
    }
    this.flush();
  }

  /** Close the sector files and write the .gtg and the JSON sidecar. */
  async finish(scanShape: [number, number], sidecar: Record<string, unknown>): Promise<BinLayout> {
    this.flush();
    this.closeFiles();
    await writeDm4(
      this.layout.gtg,
      k2isGtgTags(scanShape, { 'Tessera Simulator': { Seed: dm.int32(this.seed), Sidecar: basename(this.layout.sidecar) } }),
    );
    try {
      writeFileSync(this.layout.sidecar, JSON.stringify({ ...sidecar, layout: this.layout }, null, 2) + '\n');
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_OUTPUT', this.layout.sidecar, (err as Error).message);
    }
    return this.layout;
  }

  private closeFiles(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }

  abort(): void {
    try {
      this.closeFiles();
    } catch {
      // already closed
    }
  }
}

/** The parts of `list` after the first `skip` bytes (after a short writev). */
function remaining(list: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = skip;
  for (const b of list) {
    if (s >= b.length) {
      s -= b.length;
      continue;
    }
    out.push(s > 0 ? b.subarray(s) : b);
    s = 0;
  }
  return out;
}
