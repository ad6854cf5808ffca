/**
 * `tessera start` (`npm start`): the pipeline on one machine, each role its own child process:
 * `tessera merger` (HTTP API, WebSocket stream, browser UI, and the first-frame election
 * coordinator), one `tessera receiver` per sector, and `tessera simulate --continuous` as the
 * camera. Prints the merger's URL, then live per-sector figures from the receivers' stats
 * lines; unless --no-acquisition, defines and starts a default continuous acquisition (sum
 * image, frame sums, bright-field and annular dark-field virtual detectors, centre of mass)
 * so that a browser shows live pictures at once. A child that dies is reported and the
 * pipeline stopped; Ctrl-C stops everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Command } from 'commander';
import { TesseraClient } from '../client/tessera-client.js';
import { loadConfig, type TesseraConfig } from '../config.js';
import { TesseraError } from '../errors.js';
import { PATTERN_CENTRE } from '../k2is/simulator/scene.js';
import { createLogger, type Logger } from '../log.js';
import type { AcquisitionRequest } from '../merger/acquisition-schema.js';
import { CLI_PATH } from '../paths.js';
import { parseScanShape } from './receiver.js';

/** What `npm start` runs: the standard live picture of a 4D-STEM scan. */
export function defaultAcquisition(scan: [number, number]): AcquisitionRequest {
  const [cy, cx] = PATTERN_CENTRE;
  return {
    scanShape: scan,
    mode: 'continuous',
    udfs: [
      // float32 holds these integer sums exactly up to 2^24 counts per pixel and halves the traffic
      { id: 'sum', name: 'SumUDF', params: { dtype: 'float32' } },
      { id: 'sumsig', name: 'SumSigUDF' },
      {
        id: 'detectors',
        name: 'ApplyMasksUDF',
        params: { masks: [{ type: 'disk', cy, cx, r: 30 }, { type: 'ring', cy, cx, ri: 60, ro: 800 }] },
      },
      { id: 'com', name: 'CoMUDF', params: { cy, cx, r: 30 } },
    ],
  };
}

export interface StartOptions {
  config: TesseraConfig;
  configPath?: string;
  scan: [number, number];
  fps: number;
  simulator: boolean;
  /** define and start defaultAcquisition() once the receivers follow the camera */
  acquisition?: boolean;
  /** frame workers to start with a shuffle service for whole-frame UDFs (default 0: no shuffle) */
  workers?: number;
  log: Logger;
  /** where the live table goes (default process.stdout) */
  out?: NodeJS.WriteStream;
}

interface Role {
  name: string;
  child: ChildProcess;
  tail: string[];
  stopping: boolean;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

interface SectorFigures {
  phase: string;
  datagramsPerSecond: number;
  MBps: number;
  fps: number;
  framesInScan: number;
  framesDamaged: number;
  framesMissing: number;
  rejected: number;
  duplicates: number;
  stragglers: number;
  outOfWindow: number;
}

/** Receiver log messages worth showing besides warnings and errors. */
const NOTABLE = new Set(['acquisition started', 'acquisition ended', 'receiver listening', 'merger listening', 'election decided', 'acquisition state', 'sector missing: no heartbeat', 'receiver restarted']);

export class Pipeline {
  private readonly roles: Role[] = [];
  private readonly figures = new Map<number, SectorFigures>();
  /** the merger's URL, once it listens */
  url: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopping = false;
  private drawnLines = 0;
  private failure: TesseraError | null = null;
  private readonly done: Promise<void>;
  private finish!: () => void;

  constructor(private readonly o: StartOptions) {
    this.done = new Promise((resolve) => (this.finish = resolve));
  }

  async start(): Promise<void> {
    const { config, log } = this.o;
    const sectors = Array.from({ length: config.detector.sectors }, (_, s) => s);
    const cfg = this.o.configPath ? ['--config', this.o.configPath] : [];
    const scan = `${this.o.scan[0]}x${this.o.scan[1]}`;
    // the merger first: it hosts the election the receivers vote with
    const merger = this.spawnRole('merger', ['merger', ...cfg], { TESSERA_EXIT_WITH_PARENT: String(process.pid) });
    const listening = await Promise.race([
      new Promise<Record<string, unknown>>((resolve) => this.onLine(merger, (l) => l.msg === 'merger listening' && resolve(l))),
      this.done.then(() => null),
    ]);
    if (!listening || this.stopping) return;
    this.url = String(listening.url);
    const elected = new Promise<void>((resolve) => this.onLine(merger, (l) => l.msg === 'election decided' && resolve()));
    if ((this.o.workers ?? 0) > 0) {
      // whole-frame UDFs (strain maps, …): the shuffle and its frame workers (docs/shuffle.md)
      this.spawnRole('shuffle', ['shuffle', ...cfg], { TESSERA_EXIT_WITH_PARENT: String(process.pid) });
      for (let w = 0; w < this.o.workers!; w++) this.spawnRole(`worker-${w}`, ['worker', ...cfg], { TESSERA_EXIT_WITH_PARENT: String(process.pid) });
    }
    const out = this.o.out ?? process.stdout;
    out.write(`tessera: ${this.url}\n`);
    const ready = sectors.map((s) => {
      const role = this.spawnRole(`receiver-${s}`, ['receiver', '--sector', String(s), ...cfg, '--scan', scan, '--continuous'], { TESSERA_EXIT_WITH_PARENT: String(process.pid) });
      return new Promise<void>((resolve) => this.onLine(role, (l) => l.msg === 'receiver listening' && resolve()));
    });
    await Promise.race([Promise.all(ready), this.done]);
    if (this.stopping) return;
    if (this.o.simulator) {
      const u = config.detector.udp;
      const target = u.multicast ? ['--multicast', u.multicast, '--udp', `${u.host}:${u.basePort}`] : ['--udp', `${u.host}:${u.basePort}`];
      this.spawnRole('simulator', ['simulate', ...cfg, '--scan', scan, '--fps', String(this.o.fps), ...target, '--continuous'], { TESSERA_EXIT_WITH_PARENT: String(process.pid) });
    }
    log.info({ url: this.url, sectors: sectors.length, scan, fps: this.o.fps, simulator: this.o.simulator }, 'pipeline running (Ctrl-C stops)');
    this.timer = setInterval(() => this.draw(), config.receiver.statsIntervalMs);
    if (this.o.acquisition ?? true) void this.startDefaultAcquisition(elected);
  }

  /** Once the receivers follow the camera's scan, start the default acquisition at its next repetition. */
  private async startDefaultAcquisition(elected: Promise<void>): Promise<void> {
    const { log } = this.o;
    await Promise.race([elected, this.done]);
    if (this.stopping) return;
    // a few heartbeats, so that the merger knows where the running scan is
    await new Promise((r) => setTimeout(r, 1000));
    if (this.stopping) return;
    try {
      const client = new TesseraClient({ url: this.url!, WebSocket: class {} as never, token: this.o.config.merger.http.token ?? process.env.TESSERA_CONTROL_TOKEN ?? null });
      const { id } = await client.api.define(defaultAcquisition(this.o.scan));
      const started = await client.api.start(id);
      log.info({ acquisition: id, state: started.state, udfs: started.udfs.map((u) => u.id), url: this.url }, 'default acquisition started: open the URL in a browser');
    } catch (err) {
      log.error({ err: (err as Error).message, code: (err as { code?: string }).code }, 'cannot start the default acquisition');
    }
  }

  /** Resolves when the pipeline has stopped (Ctrl-C, or a child died). */
  async wait(): Promise<void> {
    await this.done;
    if (this.failure) throw this.failure;
  }

  async stop(reason: string): Promise<void> {
    if (this.stopping) return this.done;
    this.stopping = true;
    this.o.log.info({ reason }, 'stopping the pipeline');
    if (this.timer) clearInterval(this.timer);
    // the camera first, so that receivers see the end of the stream, then the receivers, the merger last
    const rank = (r: Role) => (r.name === 'simulator' ? 0 : r.name === 'merger' ? 2 : 1);
    const order = [...this.roles].sort((a, b) => rank(a) - rank(b));
    for (const r of order) {
      r.stopping = true;
      if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGTERM');
      if (r.name === 'simulator') await this.exitWithin(r, 5000);
      if (r.name === 'merger') await Promise.all(order.filter((x) => x.name.startsWith('receiver')).map((x) => this.exitWithin(x, 10_000)));
    }
    await Promise.all(order.map((r) => this.exitWithin(r, 10_000)));
    this.draw(true);
    this.finish();
  }

  private async exitWithin(r: Role, ms: number): Promise<void> {
    const t = setTimeout(() => {
      if (r.child.exitCode === null && r.child.signalCode === null) {
        this.o.log.warn({ role: r.name }, 'did not stop in time: killed');
        r.child.kill('SIGKILL');
      }
    }, ms);
    await r.exited;
    clearTimeout(t);
  }

  private spawnRole(name: string, args: string[], env: Record<string, string>): Role {
    // glibc keeps freed large buffers (partials, images) in its arenas and RSS grows epoch after
    // epoch; returning allocations above 128 KB straight to the OS keeps it flat (soak test)
    const malloc = { MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? '131072' };
    const child = spawn(process.execPath, [CLI_PATH, ...args], { env: { ...process.env, ...malloc, TESSERA_LOG_JSON: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const role: Role = {
      name,
      child,
      tail: [],
      stopping: false,
      exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
    };
    this.roles.push(role);
    this.o.log.info({ role: name, pid: child.pid }, 'started');
    child.stdout!.resume();
    this.onLine(role, (l) => this.onLog(role, l));
    child.once('error', (err) => this.o.log.error({ role: name, err: err.message }, 'cannot start'));
    void role.exited.then(({ code, signal }) => {
      if (role.stopping || this.stopping) return;
      if (name === 'simulator' && code === 0) {
        this.o.log.info('the simulator finished; receivers keep running');
        return;
      }
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      this.failure = new TesseraError('TESSERA_ERR_ROLE_FAILED', name, how);
      this.o.log.error({ role: name, pid: child.pid, code, signal, lastLines: role.tail.slice(-10) }, `${name} died (${how}): stopping the pipeline`);
      void this.stop(`${name} died`);
    });
    return role;
  }

  private onLine(role: Role, fn: (l: Record<string, unknown>) => void): void {
    let buf = '';
    role.child.stderr!.setEncoding('utf8');
    role.child.stderr!.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          parsed = { msg: line, level: 50 };
        }
        fn(parsed);
      }
    });
  }

  private onLog(role: Role, l: Record<string, unknown>): void {
    role.tail.push(typeof l.msg === 'string' ? l.msg : JSON.stringify(l));
    if (role.tail.length > 20) role.tail.shift();
    if ((l.msg === 'stats' || l.msg === 'receiver stopped: final counters') && typeof l.sector === 'number') {
      const rejected = l.rejected && typeof l.rejected === 'object' ? Object.values(l.rejected as Record<string, number>).reduce((a, b) => a + b, 0) : 0;
      const n = (k: string) => (typeof l[k] === 'number' ? (l[k] as number) : 0);
      this.figures.set(l.sector, {
        phase: String(l.phase ?? '?'),
        datagramsPerSecond: n('datagramsPerSecond'),
        MBps: n('MBps'),
        fps: n('fps'),
        framesInScan: n('framesInScan'),
        framesDamaged: n('framesDamaged'),
        framesMissing: n('framesMissing'),
        rejected,
        duplicates: n('duplicates'),
        stragglers: n('stragglers'),
        outOfWindow: n('outOfWindow'),
      });
      return;
    }
    const level = typeof l.level === 'number' ? l.level : 30;
    if (level >= 40 || (typeof l.msg === 'string' && NOTABLE.has(l.msg))) {
      const { msg, level: _l, time: _t, pid: _p, hostname: _h, name: _n, ...rest } = l;
      this.o.log[level >= 50 ? 'error' : level >= 40 ? 'warn' : 'info']({ role: role.name, ...rest }, String(msg));
    }
  }

  private draw(final = false): void {
    const out = this.o.out ?? process.stdout;
    const header = 'sector  phase        dgram/s     MB/s     fps   in scan  damaged  missing  rejected    dup   late   ooo';
    const rows = [...this.figures.entries()]
      .sort(([a], [b]) => a - b)
      .map(([s, f]) =>
        [
          String(s).padStart(6),
          f.phase.padEnd(10),
          String(f.datagramsPerSecond).padStart(9),
          f.MBps.toFixed(1).padStart(8),
          f.fps.toFixed(1).padStart(7),
          String(f.framesInScan).padStart(9),
          String(f.framesDamaged).padStart(8),
          String(f.framesMissing).padStart(8),
          String(f.rejected).padStart(9),
          String(f.duplicates).padStart(6),
          String(f.stragglers).padStart(6),
          String(f.outOfWindow).padStart(5),
        ].join('  '),
      );
    const lines = [final ? 'final:' : `tessera: ${new Date().toISOString().slice(11, 19)}`, header, ...rows];
    // on a terminal the table is redrawn in place; into a file or pipe it is appended
    if (out.isTTY && this.drawnLines > 0 && !final) out.write(`\x1b[${this.drawnLines}A\x1b[J`);
    out.write(lines.join('\n') + '\n');
    this.drawnLines = lines.length;
  }
}

export function registerStartCommand(program: Command): void {
  program
    .command('start')
    .description('run the pipeline on this machine: the merger (HTTP, WebSocket, UI, election), one receiver per sector and the simulator as the camera, with a default live acquisition; prints the URL and live per-sector figures (Ctrl-C stops)')
    .option('-c, --config <file>', 'config file overlaid on config/default.json (passed on to every role)')
    .option('--scan <HxW>', 'scan shape (default: config simulator.scan)')
    .option('--fps <n>', 'simulator frame rate (default: config simulator.fps)')
    .option('--no-simulator', 'do not start the simulator (a real camera sends)')
    .option('--no-acquisition', 'do not define and start the default live acquisition')
    .option('--workers <n>', 'also start the shuffle service and N frame workers, for whole-frame UDFs such as StrainMapUDF', '0')
    .action(async (raw: { config?: string; scan?: string; fps?: string; simulator: boolean; acquisition: boolean; workers?: string }) => {
      const config = loadConfig(raw.config);
      const scan = raw.scan !== undefined ? parseScanShape(raw.scan) : (config.simulator.scan as [number, number]);
      const fps = raw.fps !== undefined ? Number(raw.fps) : config.simulator.fps;
      if (!Number.isFinite(fps) || fps < 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--fps', `"${raw.fps}" is not a frame rate`);
      const log = createLogger('start');
      const pipeline = new Pipeline({ config, configPath: raw.config, scan, fps, simulator: raw.simulator, acquisition: raw.acquisition, workers: Math.max(0, Math.floor(Number(raw.workers ?? 0)) || 0), log });
      const onSignal = (sig: string) => void pipeline.stop(sig);
      process.once('SIGINT', () => onSignal('SIGINT'));
      process.once('SIGTERM', () => onSignal('SIGTERM'));
      try {
        await pipeline.start();
        await pipeline.wait();
      } finally {
        await new Promise<void>((resolve) => log.flush(() => resolve()));
      }
    });
}
