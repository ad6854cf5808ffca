/**
 * Packed sector-frame slots in the decoder's WebAssembly memory.
 *
 * A slot holds the 32 block payloads of one sector frame in send order (block i at
 * i x 22 320 B), exactly the layout `Uint12Decoder.decodeSectorRows` reads: the copy of a
 * datagram's payload into its slot is the only copy before decoding. Slots are allocated
 * once, up front, so that the wasm memory never grows later (growing detaches every view).
 *
 * A slot is owned by one party at a time: the assembler while the frame fills, then whoever
 * the emitted frame is handed to, until it calls `release`.
 */
import { PAYLOAD_SIZE, SECTOR_FRAME_PAYLOAD_BYTES } from '../src/k2is/constants.js';
import type { Uint12Decoder } from '../src/k2is/decode12.js';
import { TesseraError } from '../src/errors.js';

export class FrameSlotPool {
  readonly size: number;
  readonly ptrs: readonly number[];
  private readonly free: number[] = [];
  private readonly inUse: Uint8Array;
  private views: Uint8Array[] = [];
  private viewBuffer: ArrayBuffer | null = null;

  constructor(
    readonly decoder: Uint12Decoder,
    size: number,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'slots', `${size}`);
    this.size = size;
    const ptrs: number[] = [];
    for (let i = 0; i < size; i++) ptrs.push(decoder.alloc(SECTOR_FRAME_PAYLOAD_BYTES));
    this.ptrs = ptrs;
    this.inUse = new Uint8Array(size);
    for (let i = size - 1; i >= 0; i--) this.free.push(i);
  }

  /** A free slot's index, or -1 when all are in use. Its bytes are stale: callers fill or zero them. */
  acquire(): number {
    const s = this.free.pop();
    if (s === undefined) return -1;
    this.inUse[s] = 1;
    return s;
  }

  /** Give a slot back; releasing a free slot (or -1, "no slot") does nothing. */
  release(slot: number): void {
    if (slot < 0 || slot >= this.size || this.inUse[slot] === 0) return;
    this.inUse[slot] = 0;
    this.free.push(slot);
  }

  get available(): number {
    return this.free.length;
  }

  /** The packed bytes of slot `s` (a view into wasm memory, rebuilt if the memory ever grew). */
  bytes(s: number): Uint8Array {
    const buf = this.decoder.memory.buffer;
    if (buf !== this.viewBuffer) {
      this.viewBuffer = buf;
      this.views = this.ptrs.map((p) => this.decoder.bytes(p, SECTOR_FRAME_PAYLOAD_BYTES));
    }
    return this.views[s]!;
  }

  /** Zero the payload of block `blockIndex` of slot `s` (a block that never arrived). */
  zeroBlock(s: number, blockIndex: number): void {
    const o = blockIndex * PAYLOAD_SIZE;
    this.bytes(s).fill(0, o, o + PAYLOAD_SIZE);
  }
}
