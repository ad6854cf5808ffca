/**
 * Network faults, injected per sector into the datagram sequence, seeded and logged, so that a
 * test knows exactly which blocks never arrived intact.
 *
 * For each datagram, in this order:
 *  0. link outage: every datagram of stream frames [A, B) is dropped (`outage`), all sectors
 *     alike: the camera kept streaming (block_count and frame_id count on as if they were sent),
 *     the link did not carry them;
 *  1. burst drop: in every period of `burstPeriod` datagrams (default: one period = the whole
 *     stream, i.e. one burst per sector) the `burstDrop` consecutive datagrams starting at a
 *     seeded offset are dropped;
 *  2. drop with probability `drop`;
 *  3. corrupt with probability `corrupt`: the datagram is replaced by a broken one (bad sync word,
 *     truncated, oversized, or wrong coordinates: off-grid x/y start or end != start + size - 1),
 *     so the block is lost to a receiver that validates;
 *  4. duplicate with probability `duplicate` (intact datagrams only): sent twice;
 * then every emitted datagram goes through a reordering window of `reorder` datagrams: once the
 * window is full, a random one leaves; one that has waited 2 x `reorder` arrivals leaves first,
 * so no datagram is ever more than 2 x `reorder` places late.
 *
 * Each fault is one FaultRecord (reordering is not a fault: nothing is lost or added).
 */
import { BLOCK_SIZE } from '../constants.js';
import { TesseraError } from '../../errors.js';
import { hash32, Xoshiro128 } from './random.js';
import type { Datagram } from './stream.js';

export type FaultKind =
  | 'drop'
  | 'burst_drop'
  | 'duplicate'
  | 'corrupt_sync'
  | 'corrupt_truncated'
  | 'corrupt_oversized'
  | 'corrupt_coordinates'
  | 'outage';

/** A count of zero for every fault kind: the start of every summary. */
export function noFaults(): Record<FaultKind, number> {
  return { drop: 0, burst_drop: 0, duplicate: 0, corrupt_sync: 0, corrupt_truncated: 0, corrupt_oversized: 0, corrupt_coordinates: 0, outage: 0 };
}

/** Kinds after which the original block never arrives intact. */
export const LOSS_KINDS: ReadonlySet<FaultKind> = new Set([
  'drop',
  'burst_drop',
  'corrupt_sync',
  'corrupt_truncated',
  'corrupt_oversized',
  'corrupt_coordinates',
  'outage',
]);

export interface FaultRecord {
  sector: number;
  streamFrame: number;
  frameId: number;
  blockCount: number;
  blockIndex: number;
  kind: FaultKind;
}

export interface FaultOptions {
  seed: number;
  drop?: number;
  duplicate?: number;
  /** reordering window in datagrams (0 or 1 = no reordering) */
  reorder?: number;
  /** length of each burst of consecutive drops (0 = none) */
  burstDrop?: number;
  /** one burst per this many datagrams of a sector (default: a single burst) */
  burstPeriod?: number;
  corrupt?: number;
  /** link outage: stream frames [A, B) are not sent at all (every sector) */
  outage?: readonly [number, number] | null;
}

export function hasFaults(o: FaultOptions): boolean {
  return (o.drop ?? 0) > 0 || (o.duplicate ?? 0) > 0 || (o.reorder ?? 0) > 1 || (o.burstDrop ?? 0) > 0 || (o.corrupt ?? 0) > 0 || (o.outage != null && o.outage[1] > o.outage[0]);
}

function checkProbability(name: string, p: number | undefined): number {
  const v = p ?? 0;
  if (!(v >= 0 && v <= 1)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', name, `must be a probability in [0, 1], got ${p}`);
  return v;
}

function checkCount(name: string, n: number | undefined, min = 0): number {
  const v = n ?? min;
  if (!Number.isInteger(v) || v < min) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', name, `must be an integer >= ${min}, got ${n}`);
  return v;
}

interface Held {
  d: Datagram;
  arrival: number;
}

export class SectorFaultInjector {
  readonly sector: number;
  private readonly rng: Xoshiro128;
  private readonly seed: number;
  private readonly drop: number;
  private readonly duplicate: number;
  private readonly corrupt: number;
  private readonly reorder: number;
  private readonly burst: number;
  private readonly burstPeriod: number;
  private readonly outage: readonly [number, number] | null;
  private readonly onFault: (r: FaultRecord) => void;
  private seq = 0;
  private arrivals = 0;
  private readonly window: Held[] = [];
  /** counts per kind, for summaries */
  readonly counts: Record<FaultKind, number> = noFaults();

  constructor(sector: number, options: FaultOptions, onFault: (r: FaultRecord) => void = () => {}) {
    this.sector = sector;
    this.seed = options.seed | 0;
    this.rng = new Xoshiro128(this.seed, 0xfa17 + sector);
    this.drop = checkProbability('drop', options.drop);
    this.duplicate = checkProbability('duplicate', options.duplicate);
    this.corrupt = checkProbability('corrupt', options.corrupt);
    this.reorder = checkCount('reorder', options.reorder);
    this.burst = checkCount('burstDrop', options.burstDrop);
    this.burstPeriod = checkCount('burstPeriod', options.burstPeriod ?? Number.MAX_SAFE_INTEGER, 1);
    if (this.burst > 0 && this.burstPeriod <= this.burst) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'burstPeriod', 'must be longer than the burst');
    }
    const out = options.outage ?? null;
    if (out && !(Number.isInteger(out[0]) && Number.isInteger(out[1]) && out[0] >= 0 && out[1] > out[0])) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'outage', `must be stream frames A:B with 0 <= A < B, got ${out[0]}:${out[1]}`);
    }
    this.outage = out;
    this.onFault = onFault;
  }

  /** Offset of the burst within burst period `p` (seeded, so bursts sit at the same place every run). */
  burstStart(p: number): number {
    const room = Math.min(this.burstPeriod - this.burst, 0x7fffffff);
    return p * this.burstPeriod + (hash32(this.seed, this.sector, p, 0xb0057) % (room + 1));
  }

  private inBurst(seq: number): boolean {
    if (this.burst === 0) return false;
    const p = Math.floor(seq / this.burstPeriod);
    const start = this.burstStart(p);
    return seq >= start && seq < start + this.burst;
  }

  private record(d: Datagram, kind: FaultKind): void {
    this.counts[kind]++;
    this.onFault({
      sector: this.sector,
      streamFrame: d.streamFrame,
      frameId: d.frameId,
      blockCount: d.blockCount,
      blockIndex: d.blockIndex,
      kind,
    });
  }

  /**
   * Feed one datagram; whatever leaves the injector now is appended to `out`. Datagrams that
   * stay in the reordering window are copied, so the caller may reuse its buffers after
   * `out` has been consumed.
   */
  push(d: Datagram, out: Datagram[]): void {
    const seq = this.seq++;
    if (this.outage && d.streamFrame >= this.outage[0] && d.streamFrame < this.outage[1]) {
      // the other faults' patterns go on as if the datagram had been sent (the camera did send it)
      this.rng.next();
      this.rng.next();
      this.rng.next();
      this.record(d, 'outage');
      return;
    }
    if (this.inBurst(seq)) {
      this.record(d, 'burst_drop');
      return;
    }
    // One draw per decision, always made, so the fault pattern of one kind does not shift when
    // another kind's probability changes.
    const uDrop = this.rng.next();
    const uCorrupt = this.rng.next();
    const uDup = this.rng.next();
    if (uDrop < this.drop) {
      this.record(d, 'drop');
      return;
    }
    if (uCorrupt < this.corrupt) {
      const bad = this.corruptCopy(d);
      this.emit(bad, out);
      return;
    }
    this.emit(d, out);
    if (uDup < this.duplicate) {
      this.record(d, 'duplicate');
      this.emit(d, out);
    }
  }

  /** Empty the reordering window (at the end of the stream). */
  flush(out: Datagram[]): void {
    while (this.window.length > 0) {
      const j = this.rng.int(this.window.length);
      out.push(this.window.splice(j, 1)[0]!.d);
    }
  }

  private emit(d: Datagram, out: Datagram[]): void {
    if (this.reorder <= 1) {
      out.push(d);
      return;
    }
    const arrival = this.arrivals++;
    this.window.push({ d: { ...d, data: Uint8Array.from(d.data) }, arrival });
    if (this.window.length < this.reorder) return;
    const oldest = this.window[0]!;
    const j = arrival - oldest.arrival >= 2 * this.reorder ? 0 : this.rng.int(this.window.length);
    out.push(this.window.splice(j, 1)[0]!.d);
  }

  private corruptCopy(d: Datagram): Datagram {
    const which = this.rng.int(4);
    let data: Uint8Array;
    if (which === 0) {
      data = Uint8Array.from(d.data);
      data[3] = data[3]! ^ (1 + this.rng.int(255)); // FF FF 00 55 -> FF FF 00 xx
      this.record(d, 'corrupt_sync');
    } else if (which === 1) {
      data = d.data.slice(0, 1 + this.rng.int(BLOCK_SIZE - 1));
      this.record(d, 'corrupt_truncated');
    } else if (which === 2) {
      data = new Uint8Array(BLOCK_SIZE + 1 + this.rng.int(1024));
      data.set(d.data);
      this.record(d, 'corrupt_oversized');
    } else {
      data = Uint8Array.from(d.data);
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const x = v.getUint16(28);
      const y = v.getUint16(30);
      const how = this.rng.int(3);
      if (how === 0) {
        const nx = x + 1 + this.rng.int(15); // off the 16-column grid
        v.setUint16(28, nx);
        v.setUint16(32, nx + 15);
      } else if (how === 1) {
        const ny = y + 1 + this.rng.int(929); // off the 930-row grid
        v.setUint16(30, ny);
        v.setUint16(34, ny + 929);
      } else {
        v.setUint16(32, x + 16 + this.rng.int(8)); // end != start + 15
      }
      this.record(d, 'corrupt_coordinates');
    }
    return { ...d, data };
  }
}
