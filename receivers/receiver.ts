/**
 * `SectorReceiver`: one sector's ingest path, wired end to end:
 *
 *   UDP datagram ─▶ SectorFrameAssembler ─▶ ShutterSync ─▶ SectorTiler ─▶ sinks (SectorTile)
 *   (udp-source)    (validate, place,        (acquisition   (decode into    (frame dump;
 *                    damage, give up)         start/end,     ~1 MB tiles)    PartialRunner)
 *                                             election)
 *
 * With `merger: true` a MergerLink (merger-link.ts) connects to the merger's control and results
 * sockets: heartbeats, and the live acquisitions it arms run in a PartialRunner
 * (partial-runner.ts), one more tile sink, whose partial results go back over the link.
 *
 * Memory: one Uint12Decoder arena holds every packed frame slot and the tile buffers,
 * allocated up front; a datagram's payload is copied once, into its slot, and decoded from
 * there into a tile that sinks see as a zero-copy view.
 *
 * `runReceiverProcess` is the process main behind `tessera receiver --sector N`.
 */
import { SECTOR_FRAME_PAYLOAD_BYTES } from '../src/k2is/constants.js';
import { Uint12Decoder } from '../src/k2is/decode12.js';
import type { TesseraConfig } from '../src/config.js';
import { TesseraError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import type { MergerToReceiver } from '../src/protocol/live.js';
import { ElectionClient } from '../src/protocol/election.js';
import { FrameDumpSink } from './frame-dump.js';
import { FrameSlotPool } from './frame-slots.js';
import { SectorFrameAssembler } from './sector-frame-assembler.js';
import { MergerLink } from './merger-link.js';
import { PartialRunner } from './partial-runner.js';
import { SliceSender } from './slice-sender.js';
import { LocalElector, ShutterSync, type FirstFrameElector } from './shutter-sync.js';
import { ReceiverCounters, StatsReporter } from './stats.js';
import { SectorTiler } from './tiler.js';
import type { AcquisitionInfo, AcquisitionSummary, TileSink } from './tile.js';
import { SectorUdpSource } from './udp-source.js';
import { onParentExit } from '../src/parent-watch.js';

export interface SectorReceiverOptions {
  sector: number;
  config: TesseraConfig;
  /** take part in the first-frame election (false: decide on this sector's own first flag) */
  election: boolean;
  /** scan shape [H, W], or null for a time series */
  scan: [number, number] | null;
  /** repeat the scan while the shutter flag stays on */
  continuous?: boolean;
  dumpPath?: string | null;
  sinks?: TileSink[];
  /** frames held with data while the vote is open (default 64) */
  electionBufferFrames?: number;
  /** open the UDP socket (default true; false: feed datagrams with `push`, e.g. benchmarks) */
  udp?: boolean;
  /** connect to the merger (config merger.control / merger.results) and run its live acquisitions (default false) */
  merger?: boolean;
  /** PartialRunner: how long a stopped acquisition's chunk in flight may take (default 2000 ms) */
  stopGraceMs?: number;
  log?: Logger;
}

export class SectorReceiver {
  readonly counters = new ReceiverCounters();
  readonly sector: number;
  readonly decoder: Uint12Decoder;
  readonly pool: FrameSlotPool;
  readonly assembler: SectorFrameAssembler;
  readonly sync: ShutterSync;
  readonly tiler: SectorTiler;
  readonly sinks: TileSink[];
  readonly acquisitions: AcquisitionSummary[] = [];
  /** runs the merger's live acquisitions (with `merger: true`) */
  readonly runner: PartialRunner | null = null;
  /** sends the slices of the frames the shuffle selects (with `merger: true`) */
  readonly slices: SliceSender | null = null;
  private link: MergerLink | null = null;
  private source: SectorUdpSource | null = null;
  private election: ElectionClient | null = null;
  private reporter: StatsReporter | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly log: Logger | undefined;

  private constructor(private readonly o: SectorReceiverOptions) {
    const { config, sector } = o;
    const r = config.receiver;
    this.sector = sector;
    this.log = o.log;
    if (!Number.isInteger(sector) || sector < 0 || sector >= config.detector.sectors) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--sector', `${sector} is not in 0..${config.detector.sectors - 1}`);
    }
    const bufferFrames = o.electionBufferFrames ?? 64;
    const historyFrames = 4;
    const slots = SectorFrameAssembler.slotsNeeded(r.maxFramesInFlight) + historyFrames + bufferFrames + 2;
    this.decoder = Uint12Decoder.create({ initialBytes: slots * SECTOR_FRAME_PAYLOAD_BYTES + SectorTiler.bytesNeeded(r.tile) + (1 << 20) });
    this.pool = new FrameSlotPool(this.decoder, slots);
    this.sinks = [...(o.sinks ?? [])];
    if (o.dumpPath) this.sinks.unshift(new FrameDumpSink(o.dumpPath));
    if (o.merger) {
      this.runner = new PartialRunner({
        sector,
        sectors: config.detector.sectors,
        send: (p) => this.link?.sendPartial(p),
        configureScan: (next, current) => this.sync.configure(next, current),
        onFailure: (acquisition, err) => this.link?.failure(acquisition, err.code, err.message),
        stopGraceMs: o.stopGraceMs,
        log: o.log,
      });
      this.sinks.push(this.runner);
      this.slices = new SliceSender({ sector, endpoint: config.shuffle.slices, log: o.log });
      this.sinks.push(this.slices);
    }
    this.tiler = new SectorTiler({ sector, shape: r.tile, decoder: this.decoder, pool: this.pool, sinks: this.sinks, counters: this.counters, log: o.log });

    let elector: FirstFrameElector;
    if (o.election) {
      this.election = new ElectionClient({
        endpoint: config.election.endpoint,
        sector,
        answerTimeoutMs: 2 * config.election.timeoutMs + 2000,
        log: o.log,
      });
      elector = this.election;
    } else {
      elector = new LocalElector();
    }
    const positions = o.scan ? o.scan[0] * o.scan[1] : null;
    this.sync = new ShutterSync({
      sector,
      elector,
      local: !o.election,
      pool: this.pool,
      scanPositions: positions,
      continuous: o.continuous ?? false,
      bufferFrames,
      historyFrames,
      streamIdleMs: r.streamIdleMs,
      counters: this.counters,
      log: o.log,
      onFrame: (sf) => this.tiler.push(sf),
      onAcquisitionStart: (a) => this.eachSink('onAcquisitionStart', a),
      onAcquisitionEnd: (a) => {
        this.tiler.flush();
        this.acquisitions.push(a);
        this.eachSink('onAcquisitionEnd', a);
      },
    });
    this.assembler = new SectorFrameAssembler(this.pool, {
      maxFramesInFlight: r.maxFramesInFlight,
      frameTimeoutMs: r.frameTimeoutMs,
      restartSilenceMs: r.restartSilenceMs,
      counters: this.counters,
      log: o.log,
      onFrame: (f) => this.sync.push(f),
      onResync: (e) => this.sync.onResync(e),
    });
  }

  static async start(o: SectorReceiverOptions): Promise<SectorReceiver> {
    const rx = new SectorReceiver(o);
    const { config } = o;
    try {
      if (o.udp !== false) {
        const u = config.detector.udp;
        rx.source = await SectorUdpSource.open(
          { sector: o.sector, host: u.host, basePort: u.basePort, multicast: u.multicast, interface: u.interface, recvBufferBytes: config.receiver.recvBufferBytes, log: o.log },
          (msg) => rx.assembler.push(msg, msg.length, performance.now()),
        );
      }
    } catch (err) {
      await rx.election?.close();
      for (const s of rx.sinks) await s.close?.();
      throw err;
    }
    if (o.merger) {
      rx.link = new MergerLink({
        sector: o.sector,
        control: config.merger.control,
        results: config.merger.results,
        heartbeat: () => rx.heartbeatState(),
        onMessage: (m) => rx.onMergerMessage(m),
        log: o.log,
      });
    }
    const tickMs = Math.max(5, Math.min(50, config.receiver.frameTimeoutMs / 4));
    let lastTick = performance.now();
    let skipped = false;
    rx.ticker = setInterval(() => {
      const now = performance.now();
      // A tick this late means the event loop was held up (a long UDF pass, a loaded host).
      // Timers run before the socket is read, so the blocks of the frames in flight may be
      // waiting there: giving those frames up now would zero-fill blocks that did arrive. So a
      // late tick only lets the socket be read; the next one acts, late or not (a host starved
      // for CPU makes every tick late, and frames must still be given up and silence noticed).
      const late = now - lastTick > 2 * tickMs;
      lastTick = now;
      if (late && !skipped) {
        skipped = true;
        return;
      }
      skipped = false;
      rx.assembler.tick(now);
      rx.sync.tick(now);
    }, tickMs);
    if (o.log) {
      rx.reporter = new StatsReporter(rx.counters, o.log, config.receiver.statsIntervalMs, () => ({
        sector: o.sector,
        phase: rx.sync.phase,
        acquisition: rx.sync.acquisition?.acquisition ?? null,
        freeSlots: rx.pool.available,
        ...(rx.runner ? { live: rx.runner.acquisition, liveState: rx.runner.state, ...rx.runner.stats } : {}),
        ...(rx.link ? { merger: rx.link.counters() } : {}),
      }));
      rx.reporter.start();
    }
    return rx;
  }

  /** The UDP port actually bound (null without UDP). */
  get port(): number | null {
    return this.source?.port ?? null;
  }

  /** Feed one datagram directly (benchmarks, tests of the in-process path). */
  push(datagram: Uint8Array, now = performance.now()): void {
    this.assembler.push(datagram, datagram.length, now);
  }

  /** Stop: close the socket, emit what is pending, end the acquisition, close the sinks. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    await this.source?.close();
    this.assembler.flush();
    this.sync.stop();
    this.tiler.flush();
    for (const s of this.sinks) {
      try {
        await s.close?.();
      } catch (err) {
        this.log?.error({ err }, 'closing a tile sink failed');
      }
    }
    await this.election?.close();
    await this.link?.close();
    this.reporter?.stop();
    this.reporter?.logLine('receiver stopped: final counters');
  }

  /** Counters flat (number values only), as heartbeats carry them. */
  flatCounters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.counters.snapshot())) {
      if (typeof v === 'number') out[k] = v;
      else for (const [r, n] of Object.entries(v)) out[`rejected.${r}`] = n as number;
    }
    out.freeSlots = this.pool.available;
    if (this.runner) for (const [k, v] of Object.entries(this.runner.stats)) out[`live.${k}`] = Math.round(v);
    if (this.link) for (const [k, v] of Object.entries(this.link.counters())) out[`merger.${k}`] = v;
    return out;
  }

  private heartbeatState() {
    const a = this.sync.acquisition;
    return {
      phase: this.sync.phase,
      acquisition: this.runner?.acquisition ?? null,
      lastIndex: a ? (this.runner?.lastIndex ?? null) : null,
      shutterRound: a?.round ?? null,
      positions: a ? a.scanPositions : this.sync.scanConfig.scanPositions,
      detectorEnded: this.runner?.detectorEnded ?? null,
      runState: this.runner?.state ?? null,
      counters: this.flatCounters(),
    };
  }

  private onMergerMessage(m: MergerToReceiver): void {
    const runner = this.runner!;
    const link = this.link!;
    const reply = (acquisition: string, fn: () => void, ok?: () => void) => {
      try {
        fn();
        ok?.();
      } catch (err) {
        const e = err instanceof TesseraError ? err : new TesseraError('TESSERA_ERR_INTERNAL', (err as Error).message);
        this.log?.warn({ acquisition, type: m.type, code: e.code, err: e.message }, 'live acquisition refused');
        link.failure(acquisition, e.code, e.message);
      }
    };
    switch (m.type) {
      case 'acquire':
        return reply(m.acquisition, () => runner.arm(m), () => link.ready(m.acquisition));
      case 'params':
        return reply(m.acquisition, () => runner.params(m));
      case 'stop':
        return runner.stop(m.acquisition, m.atFrame ?? null);
      case 'abort':
        return runner.abort(m.acquisition);
    }
  }

  private eachSink<K extends 'onAcquisitionStart' | 'onAcquisitionEnd'>(method: K, a: K extends 'onAcquisitionStart' ? AcquisitionInfo : AcquisitionSummary): void {
    for (const s of this.sinks) {
      try {
        (s[method] as ((x: typeof a) => void) | undefined)?.call(s, a);
      } catch (err) {
        this.log?.error({ err, method }, 'tile sink failed');
      }
    }
  }
}

export interface ReceiverProcessOptions extends Omit<SectorReceiverOptions, 'log' | 'udp'> {
  log: Logger;
}

/**
 * Run a receiver until SIGTERM / SIGINT, then stop cleanly (flush, final counters). Fatal
 * errors are logged with their code and the process exits non-zero.
 */
export async function runReceiverProcess(o: ReceiverProcessOptions): Promise<void> {
  const log = o.log;
  const fatal = (err: unknown) => {
    log.fatal({ err, code: (err as TesseraError).code }, 'receiver failed');
    log.flush();
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100).unref();
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  const rx = await SectorReceiver.start(o);
  log.info(
    {
      sector: o.sector,
      election: o.election ? o.config.election.endpoint : 'off',
      merger: o.merger ? { control: o.config.merger.control, results: o.config.merger.results } : 'off',
      scan: o.scan,
      continuous: o.continuous ?? false,
      tile: o.config.receiver.tile,
      dump: o.dumpPath ?? undefined,
    },
    'receiver started',
  );
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    onParentExit(stop);
  });
  await rx.stop();
  await new Promise<void>((resolve) => log.flush(() => resolve()));
}
