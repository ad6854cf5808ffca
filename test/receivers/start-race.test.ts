/**
 * A merger acquisition started just after the shutter edge (the start race): the PartialRunner
 * got `acquire` with start null while its detector acquisition was already under way from its
 * edge (joinedAt 0), so it stays armed for a next detector acquisition that a continuous scan
 * never brings, and its heartbeats say so (runState 'armed'). The merger then re-sends acquire
 * with a concrete start (through the wire encoder and validating decoder here): the armed run
 * binds at once, and its chunks are those of the detector frames the mapping names. References:
 * plain loops over those frames (referenceChunk), and the epochs / chunks each partial must name.
 */
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../../src/errors.js';
import { decodeReceiverMessage, encodeLive, LIVE_PROTOCOL_VERSION, type PartialMessage } from '../../src/protocol/live.js';
import {
  acquireMessage,
  acquireThroughWire as wire,
  compareChunk,
  detectorAcquisition,
  endedAcquisition,
  partialRunnerRig,
  referenceChunk,
  sectorTile,
  SMALL_SCAN,
  standardLiveUdfs,
  syntheticSectorFrame,
} from './live-helpers.js';

const SECTOR = 5;
const { shape: SCAN, positions: N, chunkSize: CHUNK } = SMALL_SCAN;
const udfs = standardLiveUdfs();

/** Frame `index` of the detector acquisition: distinct pseudo-random content per index. */
const frameAt = (index: number) => syntheticSectorFrame(0, index, 12345);
const tile = (acquisition: number, index: number) => sectorTile(SECTOR, acquisition, index, frameAt(index));
const detector = (acquisition: number, round: number | null, joinedAt = 0) => detectorAcquisition({ acquisition, sector: SECTOR, round, joinedAt });

function setUp() {
  const base = acquireMessage({ acquisition: 'race-1', scanShape: SCAN, udfs, chunkSize: CHUNK, mode: 'continuous' });
  return { ...partialRunnerRig(SECTOR), base };
}

/** Partial `p` is chunk (epoch, chunk) over detector frames startIndex + epoch x N + position, none missing. */
function expectMapped(p: PartialMessage, startIndex: number): void {
  const navStart = p.chunk * CHUNK;
  const navEnd = Math.min(navStart + CHUNK, N);
  expect([p.navStart, p.navEnd], `range of epoch ${p.epoch} chunk ${p.chunk}`).toEqual([navStart, navEnd]);
  expect(Array.from(p.damage)).toEqual(new Array(navEnd - navStart).fill(0));
  const frames = Array.from({ length: navEnd - navStart }, (_, k) => frameAt(startIndex + p.epoch * N + navStart + k));
  expect(compareChunk(p, referenceChunk(udfs, SECTOR, frames)), `epoch ${p.epoch} chunk ${p.chunk}`).toBeNull();
}

describe('PartialRunner: acquire with start null just after the edge, then the start the merger names', () => {
  it('stays armed (runState armed) on the detector acquisition under way, binds when the start is named, and its chunks are the named frames', () => {
    const { sent, scans, runner, base } = setUp();
    const d = detector(1, 7);
    runner.onAcquisitionStart(d);
    for (let i = 0; i < 6; i++) runner.onTile(tile(1, i));
    // the acquire came after the edge: start null = the next detector acquisition, which never comes
    runner.arm(wire(base));
    expect(runner.state).toBe('armed');
    expect(runner.acquisition).toBe('race-1');
    for (let i = 6; i < 9; i++) runner.onTile(tile(1, i));
    expect(sent.length).toBe(0);
    expect(runner.lastIndex).toBe(8);

    // the same acquire again: still a no-op
    runner.arm(wire(base));
    expect(runner.state).toBe('armed');

    // the merger names {round 7, index 10}: bound at once, the detector acquisition reconfigured as a continuous scan of N
    runner.arm(wire({ ...base, start: { shutterRound: 7, startIndex: 10 } }));
    expect(runner.state).toBe('running');
    expect(scans.at(-1)).toEqual({ next: { scanPositions: N, continuous: true }, current: { scanPositions: N, continuous: true } });
    for (let i = 9; i < 10 + 2 * N + CHUNK; i++) runner.onTile(tile(1, i));
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2], [2, 0]]);
    for (const p of sent) expectMapped(p, 10);
    // said again (the merger repeats acquire): no-op, nothing re-sent
    runner.arm(wire({ ...base, start: { shutterRound: 7, startIndex: 10 } }));
    expect(runner.state).toBe('running');
    expect(sent.length).toBe(7);
  });

  it('a start named past the frames seen joins at the next chunk boundary; a named start while the vote is open binds at the decision', () => {
    // frames beyond the named start already seen: the run joins at the next chunk boundary of the mapping
    {
      const { sent, runner, base } = setUp();
      runner.onAcquisitionStart(detector(1, 3));
      for (let i = 0; i < 13; i++) runner.onTile(tile(1, i));
      runner.arm(wire(base));
      runner.arm(wire({ ...base, start: { shutterRound: 3, startIndex: 10 } }));
      expect(runner.state).toBe('running');
      for (let i = 13; i < 30; i++) runner.onTile(tile(1, i));
      // rel 3 was the next frame: chunk 0 of epoch 0 is not this receiver's; from rel 4 on
      expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
      for (const p of sent) expectMapped(p, 10);
    }
    // armed before any detector acquisition (the vote still open): the named start binds at the decision of that round
    {
      const { sent, runner, base } = setUp();
      runner.arm(wire(base));
      runner.arm(wire({ ...base, start: { shutterRound: 4, startIndex: 20 } }));
      expect(runner.state).toBe('armed');
      runner.onAcquisitionStart(detector(1, 4));
      expect(runner.state).toBe('running');
      for (let i = 0; i < 20 + N; i++) runner.onTile(tile(1, i));
      expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2]]);
      for (const p of sent) expectMapped(p, 20);
    }
  });

  it('a run already bound at index 0 keeps its mapping; a named round that is over is refused', () => {
    const { sent, runner, base } = setUp();
    runner.arm(wire(base));
    runner.onAcquisitionStart(detector(1, 2));
    expect(runner.state).toBe('running');
    runner.arm(wire({ ...base, start: { shutterRound: 2, startIndex: 0 } }));
    runner.arm(wire({ ...base, start: { shutterRound: 2, startIndex: 30 } }));
    expect(runner.state).toBe('running');
    for (let i = 0; i < N; i++) runner.onTile(tile(1, i));
    expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2]]);
    for (const p of sent) expectMapped(p, 0);

    const late = setUp();
    late.runner.onAcquisitionStart(detector(1, 9));
    late.runner.arm(wire(late.base));
    let err: unknown = null;
    try {
      late.runner.arm(wire({ ...late.base, start: { shutterRound: 8, startIndex: 10 } }));
    } catch (e) {
      err = e;
    }
    expect((err as TesseraError | null)?.code).toBe('TESSERA_ERR_LIVE_START');
  });

  it('a named start withdrawn (its detector acquisition ended first): binds at index 0 of the next one; one under way waits for the next named start', () => {
    // named {round 1, index 16} from heartbeats that still showed round 1, which ended here before the acquire came
    {
      const { sent, scans, runner, base } = setUp();
      runner.onAcquisitionStart(detector(1, 1));
      for (let i = 0; i < 10; i++) runner.onTile(tile(1, i));
      runner.onAcquisitionEnd(endedAcquisition(detector(1, 1), 10));
      runner.arm(wire({ ...base, start: { shutterRound: 1, startIndex: 16 } }));
      expect(runner.state).toBe('armed');
      // a new camera run: round 2, which the named start does not bind
      runner.onAcquisitionStart(detector(2, 2));
      expect(runner.state).toBe('armed');
      runner.onAcquisitionEnd(endedAcquisition(detector(2, 2), 0));
      // the merger withdraws the start: start null, armed for the next detector acquisition
      runner.arm(wire(base));
      expect(runner.state).toBe('armed');
      expect(scans.at(-1)).toEqual({ next: { scanPositions: N, continuous: true }, current: undefined });
      runner.onAcquisitionStart(detector(3, 3));
      expect(runner.state).toBe('running');
      for (let i = 0; i < N + CHUNK; i++) runner.onTile(tile(3, i));
      expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2], [1, 0]]);
      for (const p of sent) expectMapped(p, 0);
    }
    // the next camera run is under way when the withdrawal comes: armed until the merger names a start in it
    {
      const { sent, runner, base } = setUp();
      runner.arm(wire({ ...base, start: { shutterRound: 1, startIndex: 16 } }));
      runner.onAcquisitionStart(detector(2, 2));
      for (let i = 0; i < 4; i++) runner.onTile(tile(2, i));
      runner.arm(wire(base));
      expect(runner.state).toBe('armed');
      runner.arm(wire({ ...base, start: { shutterRound: 2, startIndex: 8 } }));
      expect(runner.state).toBe('running');
      for (let i = 4; i < 8 + N; i++) runner.onTile(tile(2, i));
      expect(sent.map((p) => [p.epoch, p.chunk])).toEqual([[0, 0], [0, 1], [0, 2]]);
      for (const p of sent) expectMapped(p, 8);
    }
    // a run already bound keeps its mapping when a withdrawal comes late
    {
      const { sent, runner, base } = setUp();
      runner.arm(wire({ ...base, start: { shutterRound: 4, startIndex: 0 } }));
      runner.onAcquisitionStart(detector(1, 4));
      runner.arm(wire(base));
      expect(runner.state).toBe('running');
      for (let i = 0; i < N; i++) runner.onTile(tile(1, i));
      expect(sent.length).toBe(3);
      for (const p of sent) expectMapped(p, 0);
    }
  });

  it('heartbeats carry runState; the decoder refuses an unknown one', () => {
    const hb = { version: LIVE_PROTOCOL_VERSION, type: 'heartbeat', role: 'receiver', sector: 1, pid: 9, phase: 'acquiring', acquisition: 'race-1', lastIndex: null, shutterRound: 3, positions: null, counters: {}, sentAt: 1 };
    const d = decodeReceiverMessage(encodeLive({ ...hb, runState: 'armed' } as never));
    expect(d.type === 'heartbeat' && d.runState).toBe('armed');
    const old = decodeReceiverMessage(encodeLive(hb as never));
    expect(old.type === 'heartbeat' && old.runState).toBeNull();
    let err: unknown = null;
    try {
      decodeReceiverMessage(encodeLive({ ...hb, runState: 'bogus' } as never));
    } catch (e) {
      err = e;
    }
    expect((err as TesseraError | null)?.code).toBe('TESSERA_ERR_BAD_MESSAGE');
  });
});
