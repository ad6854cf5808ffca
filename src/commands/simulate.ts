/**
 * `tessera simulate`: the K2 IS camera stand-in. Streams a synthetic 4D-STEM scan with known
 * ground truth as the camera's UDP datagrams (8 sectors, BASEPORT + sector), and/or writes it as
 * the camera software's recording (8 .bin files + .gtg), and/or writes the truth as .npy; or, with
 * --replay-bin, streams a recording (the camera's or its own) as the camera's datagrams again.
 */
import type { Command } from 'commander';
import { loadConfig, type TesseraConfig } from '../config.js';
import { TesseraError } from '../errors.js';
import { createLogger } from '../log.js';
import { runSimulation, type SimulationOptions } from '../k2is/simulator/simulation.js';
import { runReplay, type ReplayOptions } from '../k2is/simulator/replay.js';
import { onParentExit } from '../parent-watch.js';

export interface RawSimulateOptions {
  config?: string;
  scan?: string;
  seed?: string;
  fps?: string;
  udp?: string;
  multicast?: string;
  multicastInterface?: string;
  sectors?: string;
  continuous?: boolean;
  maxFrames?: string;
  framesBefore?: string;
  framesAfter?: string;
  padAfter?: string;
  frameIdStart?: string;
  frameIdReset?: string;
  blockCountStart?: string;
  drop?: string;
  duplicate?: string;
  reorder?: string;
  burstDrop?: string;
  corrupt?: string;
  outage?: string;
  faultLog?: string;
  writeBin?: string;
  name?: string;
  leadingGarbage?: boolean;
  incompleteEnd?: boolean;
  truth?: string;
  renderWorker?: boolean;
  replayBin?: string;
  loop?: boolean;
  frames?: string;
}

const U32_MAX = 0xffffffff;

function badArg(option: string, why: string): never {
  throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', option, why);
}

function parseInteger(option: string, text: string, min: number, max: number): number {
  if (!/^\s*[+-]?\d+\s*$/.test(text)) badArg(option, `"${text}" is not an integer`);
  const v = Number(text);
  if (v < min || v > max) badArg(option, `${v} is outside [${min}, ${max}]`);
  return v;
}

function parseNumber(option: string, text: string, min: number, max: number): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v)) badArg(option, `"${text}" is not a number`);
  if (v < min || v > max) badArg(option, `${v} is outside [${min}, ${max}]`);
  return v;
}

function parseScan(text: string): [number, number] {
  const m = /^\s*(\d+)\s*[xX]\s*(\d+)\s*$/.exec(text);
  if (!m) badArg('--scan', `"${text}" is not HxW (e.g. 32x32)`);
  const h = Number(m[1]);
  const w = Number(m[2]);
  if (h < 1 || w < 1 || h * w > 0x3fffffff) badArg('--scan', `${h}x${w} is not a usable scan shape`);
  return [h, w];
}

function parseHostPort(option: string, text: string): { host: string; port: number } {
  const i = text.lastIndexOf(':');
  if (i <= 0 || i === text.length - 1) badArg(option, `"${text}" is not HOST:PORT`);
  return { host: text.slice(0, i), port: parseInteger(option, text.slice(i + 1), 1, 65535) };
}

function parseSectors(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const sectors = parts.map((p) => parseInteger('--sectors', p, 0, 7));
  if (new Set(sectors).size !== sectors.length) badArg('--sectors', `"${text}" names a sector twice`);
  return sectors.sort((a, b) => a - b);
}

/** `--outage A:B`: stream frames A .. B-1 not sent (0 <= A < B). */
function parseOutage(text: string): [number, number] {
  const m = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(text);
  if (!m) badArg('--outage', `"${text}" is not A:B (stream frames A .. B-1 not sent)`);
  const [a, b] = [Number(m[1]), Number(m[2])];
  if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || b <= a) badArg('--outage', `${a}:${b}: B must be larger than A`);
  return [a, b];
}

function isMulticastAddress(host: string): boolean {
  const m = /^(\d+)\.\d+\.\d+\.\d+$/.exec(host);
  return m !== null && Number(m[1]) >= 224 && Number(m[1]) <= 239;
}

/** `--frames A:B` (either end may be left out): complete frames A .. B-1 of a recording. */
function parseFrameRange(text: string): { start: number; stop: number | null } {
  const m = /^\s*(\d*)\s*:\s*(\d*)\s*$/.exec(text);
  if (!m) badArg('--frames', `"${text}" is not A:B (complete frames A .. B-1; either may be left out)`);
  const start = m[1] ? parseInteger('--frames', m[1], 0, Number.MAX_SAFE_INTEGER) : 0;
  const stop = m[2] ? parseInteger('--frames', m[2], 1, Number.MAX_SAFE_INTEGER) : null;
  if (stop !== null && stop <= start) badArg('--frames', `"${text}" is empty`);
  return { start, stop };
}

/** Options that make a synthetic scan, meaningless when a recording is replayed. */
const NOT_WITH_REPLAY: Array<[keyof RawSimulateOptions, string]> = [
  ['scan', '--scan'],
  ['continuous', '--continuous'],
  ['framesBefore', '--frames-before'],
  ['framesAfter', '--frames-after'],
  ['padAfter', '--pad-after'],
  ['frameIdStart', '--frame-id-start'],
  ['frameIdReset', '--frame-id-reset'],
  ['blockCountStart', '--block-count-start'],
  ['writeBin', '--write-bin'],
  ['name', '--name'],
  ['leadingGarbage', '--leading-garbage'],
  ['incompleteEnd', '--incomplete-end'],
  ['truth', '--truth'],
  ['renderWorker', '--render-worker'],
];

/** `--replay-bin DIR`: command-line strings and the config into validated replay options. */
export function resolveReplayOptions(raw: RawSimulateOptions, config: TesseraConfig): ReplayOptions {
  if (raw.replayBin === undefined) badArg('--replay-bin', 'missing');
  for (const [key, flag] of NOT_WITH_REPLAY) if (raw[key] !== undefined) badArg(flag, 'does not apply with --replay-bin (the recording is the stream)');
  // the UDP, pacing, sector and fault options are the simulation's
  const sim = resolveSimulateOptions({ ...raw, replayBin: undefined, loop: undefined, frames: undefined }, config);
  if (!sim.udp) throw new TesseraError('TESSERA_ERR_INTERNAL', 'replay without a UDP destination');
  return {
    path: raw.replayBin,
    sectors: sim.sectors,
    fps: sim.fps,
    loop: raw.loop ?? false,
    frames: raw.frames !== undefined ? parseFrameRange(raw.frames) : null,
    maxFrames: sim.maxFrames ?? null,
    faults: { ...sim.faults, seed: sim.scene.seed },
    faultLogPath: sim.faultLogPath ?? null,
    udp: sim.udp,
  };
}

/** Turn command-line strings and the config into validated simulation options. */
export function resolveSimulateOptions(raw: RawSimulateOptions, config: TesseraConfig): SimulationOptions {
  const sim = config.simulator;
  if (raw.loop || raw.frames !== undefined) badArg(raw.loop ? '--loop' : '--frames', 'only applies with --replay-bin');
  const scanShape = raw.scan !== undefined ? parseScan(raw.scan) : (sim.scan as [number, number]);
  const seed = raw.seed !== undefined ? parseInteger('--seed', raw.seed, -0x80000000, U32_MAX) : sim.seed;
  const fps = raw.fps !== undefined ? parseNumber('--fps', raw.fps, 0, 1e6) : sim.fps;
  const framesBefore = raw.framesBefore !== undefined ? parseInteger('--frames-before', raw.framesBefore, 1, 1e9) : sim.framesBeforeScan;
  const framesAfter = raw.framesAfter !== undefined ? parseInteger('--frames-after', raw.framesAfter, 0, 1e9) : sim.framesAfterScan;
  const padAfter = raw.padAfter !== undefined ? parseInteger('--pad-after', raw.padAfter, 0, 1e9) : 0;
  const frameIdStart = raw.frameIdStart !== undefined ? parseInteger('--frame-id-start', raw.frameIdStart, 0, U32_MAX) : sim.frameIdStart;
  const frameIdReset = raw.frameIdReset !== undefined ? parseInteger('--frame-id-reset', raw.frameIdReset, 0, U32_MAX) : null;
  const blockCountStart = raw.blockCountStart !== undefined ? parseInteger('--block-count-start', raw.blockCountStart, 0, U32_MAX) : 0;
  const maxFrames = raw.maxFrames !== undefined ? parseInteger('--max-frames', raw.maxFrames, 1, Number.MAX_SAFE_INTEGER) : null;
  const sectors = raw.sectors !== undefined ? parseSectors(raw.sectors) : [0, 1, 2, 3, 4, 5, 6, 7];

  const faults = {
    drop: raw.drop !== undefined ? parseNumber('--drop', raw.drop, 0, 1) : 0,
    duplicate: raw.duplicate !== undefined ? parseNumber('--duplicate', raw.duplicate, 0, 1) : 0,
    corrupt: raw.corrupt !== undefined ? parseNumber('--corrupt', raw.corrupt, 0, 1) : 0,
    reorder: raw.reorder !== undefined ? parseInteger('--reorder', raw.reorder, 0, 1 << 20) : 0,
    burstDrop: raw.burstDrop !== undefined ? parseInteger('--burst-drop', raw.burstDrop, 0, Number.MAX_SAFE_INTEGER) : 0,
    outage: raw.outage !== undefined ? parseOutage(raw.outage) : null,
  };
  if (faults.drop + faults.corrupt > 1) badArg('--drop', '--drop plus --corrupt must not exceed 1');

  if (raw.udp !== undefined && raw.multicast !== undefined && isMulticastAddress(parseHostPort('--udp', raw.udp).host)) {
    badArg('--udp', 'give the group with --multicast and only the port with --udp');
  }
  // Multicast leaves through loopback unless an interface is named: a simulator must never
  // spray the site network by accident.
  const multicastInterface = raw.multicastInterface ?? config.detector.udp.interface ?? '127.0.0.1';
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(multicastInterface)) badArg('--multicast-interface', `"${multicastInterface}" is not an IPv4 address`);
  let udp: SimulationOptions['udp'] = null;
  const wantsFiles = raw.writeBin !== undefined || raw.truth !== undefined;
  if (raw.multicast !== undefined) {
    const group = raw.multicast.trim();
    if (!isMulticastAddress(group)) badArg('--multicast', `"${group}" is not an IPv4 multicast group (224.0.0.0 - 239.255.255.255)`);
    const basePort = raw.udp !== undefined ? parseHostPort('--udp', raw.udp).port : config.detector.udp.basePort;
    udp = { host: group, basePort, multicast: true, multicastInterface };
  } else if (raw.udp !== undefined || !wantsFiles) {
    const { host, port } =
      raw.udp !== undefined ? parseHostPort('--udp', raw.udp) : { host: config.detector.udp.host, port: config.detector.udp.basePort };
    udp = { host, basePort: port, multicast: isMulticastAddress(host), multicastInterface };
  }
  if (udp && udp.basePort + sectors[sectors.length - 1]! > 65535) badArg('--udp', `base port ${udp.basePort} + sector exceeds 65535`);

  if (raw.name !== undefined && raw.writeBin === undefined) badArg('--name', 'only applies with --write-bin');
  if ((raw.leadingGarbage || raw.incompleteEnd) && raw.writeBin === undefined) {
    badArg(raw.leadingGarbage ? '--leading-garbage' : '--incomplete-end', 'only applies with --write-bin');
  }
  const bin = raw.writeBin !== undefined
    ? { dir: raw.writeBin, name: raw.name ?? 'sim', leadingGarbage: raw.leadingGarbage ?? false, incompleteEnd: raw.incompleteEnd ?? false }
    : null;
  if (bin && !/^[A-Za-z0-9._-]+$/.test(bin.name)) badArg('--name', `"${bin.name}": use letters, digits, '.', '_' and '-' only`);
  if (bin && raw.continuous && maxFrames === null) badArg('--continuous', 'with --write-bin needs --max-frames');
  if (bin?.leadingGarbage && framesBefore < 2) badArg('--leading-garbage', 'needs --frames-before >= 2');

  return {
    scene: { scanShape, seed },
    stream: {
      framesBeforeScan: framesBefore,
      framesAfterScan: framesAfter + padAfter,
      continuous: raw.continuous ?? false,
      frameIdStart,
      frameIdReset,
      blockCountStart,
    },
    sectors,
    fps,
    maxFrames,
    faults,
    faultLogPath: raw.faultLog ?? null,
    udp,
    bin,
    truthPath: raw.truth ?? null,
    renderWorker: raw.renderWorker ?? false,
    settings: {
      options: { ...raw },
      framesAfter,
      padAfter,
    },
  };
}

export function registerSimulateCommand(program: Command): void {
  program
    .command('simulate')
    .description(
      'stand-in for the K2 IS camera: stream a synthetic 4D-STEM scan with known ground truth as UDP datagrams ' +
        '(sector i to BASEPORT+i), and/or write it as a camera recording (8 .bin + .gtg) and the truth as .npy; ' +
        'or stream a recording over UDP again (--replay-bin)',
    )
    .option('-c, --config <file>', 'config file overlaid on config/default.json')
    .option('--scan <HxW>', 'scan shape, e.g. 32x32 (default: config simulator.scan)')
    .option('--seed <n>', 'seed of the scene, the noise and the faults (default: config simulator.seed)')
    .option('--fps <n>', 'frames per second on UDP, all sectors of frame f before f+1; 0 = as fast as possible (default: config simulator.fps)')
    .option('--udp <host:port>', 'send sector i to HOST:PORT+i (default: config detector.udp, 127.0.0.1:2001)')
    .option('--multicast <group>', 'send to this multicast group (e.g. 225.1.1.1), port BASEPORT+i (BASEPORT from --udp or config); loopback on, TTL 1')
    .option('--multicast-interface <addr>', 'local interface address multicast leaves through (default: config detector.udp.interface, else 127.0.0.1: loopback only)')
    .option('--sectors <list>', 'emit only these sectors, e.g. 0,3 (default: all 8)')
    .option('--continuous', 'repeat the scan forever (epochs), shutter flag staying on; Ctrl-C stops')
    .option('--max-frames <n>', 'stop after this many stream frames')
    .option('--frames-before <n>', 'frames with the shutter flag off; the last one carries scan position 0 (convention 1) (default: config simulator.framesBeforeScan)')
    .option('--frames-after <n>', 'parked-beam frames after the scan, flag still on (default: config simulator.framesAfterScan)')
    .option('--pad-after <n>', 'more flag-on frames after those; LiberTEM probes for the flag 400 frames in, so --pad-after 400 makes --write-bin recordings readable by LiberTEM (default 0)')
    .option('--frame-id-start <n>', 'frame_id of the first stream frame; counts up by one and wraps at 2^32 (default: config simulator.frameIdStart)')
    .option('--frame-id-reset <n>', 'restart frame_id at this value on the first flagged frame, as real cameras do (e.g. 284990 -> 2)')
    .option('--block-count-start <n>', 'block_count of the first block; one counter shared by all sectors, wraps at 2^32 (default 0)')
    .option('--drop <p>', 'drop each datagram with probability p')
    .option('--duplicate <p>', 'send each datagram twice with probability p')
    .option('--reorder <w>', 'reorder within a sliding window of w datagrams (none late by more than 2w)')
    .option('--burst-drop <n>', 'drop one burst of n consecutive datagrams per sector at a seeded place (one per epoch when --continuous)')
    .option('--corrupt <p>', 'replace a datagram with a broken one with probability p: bad sync word, truncated, oversized, or wrong coordinates')
    .option('--outage <A:B>', 'link outage: stream frames A .. B-1 are not sent at all, in every sector (block_count and frame_id count on as if they were: the camera kept streaming); at --fps that lasts (B - A) / fps seconds')
    .option('--fault-log <file>', 'write every fault as a JSON line: sector, streamFrame, frameId, blockCount, blockIndex, kind')
    .option('--write-bin <dir>', 'write the camera recording: <NAME>_1.bin .. <NAME>_8.bin, <NAME>_.gtg (DM4, scan shape) and <NAME>.json (settings)')
    .option('--name <name>', 'recording name for --write-bin (default "sim")')
    .option('--leading-garbage', 'with --write-bin: each sector file starts with a different number of blocks of an earlier, incomplete frame')
    .option('--incomplete-end', 'with --write-bin: each sector file ends with an incomplete frame and a truncated block')
    .option('--render-worker', 'render in a worker thread, overlapping with sending: up to about 115 000 instead of 75 000 datagrams/s with --fps 0 when a core is free, but slower when receivers share the cores (default: render in the sending thread)')
    .option('--replay-bin <dir>', 'stream a recording (a camera\'s 8 sector .bin files, or --write-bin output; DIR, its .gtg or one .bin) instead of a synthetic scan: every whole block one datagram, exactly as recorded, frame k of all sectors together at --fps (0 = as fast as possible); faults, --udp, --multicast, --sectors and --max-frames apply')
    .option('--loop', 'with --replay-bin: repeat the recording until stopped (or --max-frames), block_count and frame_id continuing across passes as a real camera\'s do, so receivers see a new acquisition each pass')
    .option('--frames <A:B>', 'with --replay-bin: only complete frames A .. B-1 (numbered from the first frame complete in all sectors; the lead-in and tail blocks are then left out)')
    .option('--truth <file.npy>', 'write the ground-truth frames of the scan positions, uint16 (N, 1860, 2048), NumPy .npy')
    .addHelpText(
      'after',
      `
Outputs: UDP is used when --udp or --multicast is given, or when no file output is asked for.
Faults apply to everything emitted (UDP and --write-bin). Stream layout: --frames-before frames
with the flag off (the last is scan position 0), then scan positions 1..N-1 with the flag on,
then --frames-after + --pad-after parked-beam frames, flag on.

Examples:
  tessera simulate --scan 16x16 --fps 400
  tessera simulate --udp 127.0.0.1:3001 --fps 0 --drop 0.1 --reorder 16 --fault-log faults.jsonl
  tessera simulate --scan 8x8 --write-bin ./rec --name Capture1 --pad-after 400 --truth ./rec/truth.npy
  tessera simulate --replay-bin ./rec --fps 400 --loop

Replay (--replay-bin): files are read as recorded: blocks of earlier, incomplete frames at the
start and an incomplete frame at the end are sent too (frames are grouped from the first frame
complete in all sectors); a truncated block at the end of a file is counted and skipped.`,
    )
    .action(async (raw: RawSimulateOptions) => {
      const config = loadConfig(raw.config);
      const replay = raw.replayBin !== undefined ? resolveReplayOptions(raw, config) : null;
      const options = replay ? null : resolveSimulateOptions(raw, config);
      const log = createLogger('simulate');
      const ac = new AbortController();
      const stop = (why?: unknown) => {
        log.info({ why: typeof why === 'string' ? why : 'signal' }, 'stopping');
        ac.abort();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      onParentExit(stop);
      try {
        if (replay) await runReplay({ ...replay, signal: ac.signal }, log);
        else await runSimulation({ ...options!, signal: ac.signal }, log);
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        await new Promise<void>((resolve) => log.flush(() => resolve()));
      }
    });
}
