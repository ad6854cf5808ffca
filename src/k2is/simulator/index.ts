/**
 * The K2 IS simulator: a synthetic 4D-STEM scan with known ground truth (scene.ts), the exact
 * camera stream of it per sector (stream.ts), seeded network faults with a log of every lost
 * or duplicated block (faults.ts), and the outputs `tessera simulate` drives (simulation.ts:
 * UDP, camera recording files, ground-truth .npy), and the replay of a recording as the camera's
 * stream (replay.ts, replay-plan.ts).
 *
 *   const scan = new SimulatedScan({ scanShape: [16, 16], seed: 1 });
 *   const stream = new K2ISStream(scan, { framesBeforeScan: 3, framesAfterScan: 2 });
 *   for (const d of stream.datagrams(0)) ...        // sector 0, every datagram, with its truth
 *   stream.frameInfo(f)                              // stream frame -> scan position / parked beam
 *   scan.frame(i), scan.latticeAt(iy, ix), scan.strainAt(iy, ix), scan.diskCentres(iy, ix)
 */
export * from './scene.js';
export * from './stream.js';
export * from './faults.js';
export { BlockRenderer, type Disk, type FramePlan } from './render.js';
export { runSimulation, writeTruth, type SimulationOptions, type SimulationSummary } from './simulation.js';
export { BinRecordingWriter, binLayout, gtgFileName, sectorFileName, type BinLayout } from './bin-writer.js';
export { UdpSectorSender } from './udp-sender.js';
export { runReplay, type ReplayOptions, type ReplaySummary } from './replay.js';
export { RecordedStreamPlan, shiftBlockCounters, type ReplayRange, type SectorBlockRange } from './replay-plan.js';
