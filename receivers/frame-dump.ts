/**
 * `FrameDumpSink` (`tessera receiver --dump-frames FILE`): every decoded sector frame of each
 * acquisition, 1860 x 256 uint16 little-endian, at its place in scan order, appended to FILE,
 * and one JSON line per frame to FILE.jsonl:
 *   {sector, acquisition, index, scanIndex, epoch, frameKey, frameId, damage}
 * (damage: the 32-bit bitmap of missing blocks, tile.ts). Frame `index` of an acquisition sits
 * at byte offset base + index x 952 320, base being the end of the file when the acquisition
 * started, so that another process can compare the file with ground truth.
 *
 * For tests and diagnosis: writes are synchronous and the receive loop waits for them.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { SECTOR_HEIGHT, SECTOR_WIDTH } from '../src/k2is/constants.js';
import { TesseraError } from '../src/errors.js';
import type { AcquisitionInfo, SectorTile, TileSink } from './tile.js';

const FRAME_BYTES = SECTOR_HEIGHT * SECTOR_WIDTH * 2;
const ROW_BYTES = SECTOR_WIDTH * 2;

export class FrameDumpSink implements TileSink {
  private readonly fd: number;
  private readonly jsonFd: number;
  private end = 0;
  private base = 0;
  private closed = false;

  constructor(readonly path: string) {
    try {
      this.fd = openSync(path, 'w');
      this.jsonFd = openSync(`${path}.jsonl`, 'w');
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_OUTPUT', path, (err as Error).message);
    }
  }

  onAcquisitionStart(_a: AcquisitionInfo): void {
    this.base = this.end;
  }

  onTile(tile: SectorTile): void {
    if (this.closed) return;
    const bandBytes = tile.rows * ROW_BYTES;
    const bytes = Buffer.from(tile.data.buffer, tile.data.byteOffset, tile.data.byteLength);
    let lines = '';
    for (let j = 0; j < tile.depth; j++) {
      const info = tile.frames[j]!;
      const position = this.base + info.index * FRAME_BYTES + tile.sigOrigin[0] * ROW_BYTES;
      writeSync(this.fd, bytes, j * bandBytes, bandBytes, position);
      this.end = Math.max(this.end, this.base + (info.index + 1) * FRAME_BYTES);
      if (tile.sigOrigin[0] === 0) {
        lines +=
          JSON.stringify({
            sector: tile.sector,
            acquisition: tile.acquisition,
            index: info.index,
            scanIndex: tile.scanIndex + j,
            epoch: tile.epoch,
            frameKey: info.frameKey,
            frameId: info.frameId,
            damage: tile.damage[j]!,
          }) + '\n';
      }
    }
    if (lines) writeSync(this.jsonFd, lines);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    closeSync(this.jsonFd);
  }
}
