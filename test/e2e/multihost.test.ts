/**
 * Multi-host: the roles on separate "hosts", Linux network namespaces joined by a bridge in a
 * namespace of its own (veth pairs, addresses 10.x.y.0/24), each role configured only by
 * endpoints in its own config file (nothing listens on any host's loopback, so a role that
 * reached for 127.0.0.1 instead of its config would fail here):
 *   camera host    tessera simulate          -> UDP to the receiver host
 *   receiver host  8 x tessera receiver      -> ZeroMQ to the merger host (control, results, election)
 *                                                and sector slices to the shuffle host
 *   shuffle host   tessera shuffle           binds slices and frames on its own address
 *   worker host    tessera worker            frames from the shuffle host, results to the merger host
 *   merger host    tessera merger            connects to the shuffle; HTTP/WS on its network
 *                                            address, so with a control token
 *   this process   the client, from the root namespace through its own veth
 * One acquisition runs tile UDFs in the receivers and whole-frame UDFs (StrainMapUDF, FEMUDF)
 * behind the shuffle. The final results equal the offline engine over the simulator's ground
 * truth, as on one host (test/e2e/live-pipeline.test.ts, shuffle-udfs.test.ts): the tile UDFs
 * with the blocks the damage map reports lost zeroed, the whole-frame UDFs at every frame that
 * reached the worker whole; a picked frame (GET …/frames/:position, shuffle host -> merger host ->
 * client) equals the truth pixel for pixel. Needs root (`ip netns`); skipped with a message when that is not allowed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraApiError, TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../../src/k2is/constants.js';
import { SimulatedScan } from '../../src/k2is/simulator/index.js';
import type { AcquisitionRequest } from '../../src/merger/acquisition-schema.js';
import { MemoryDataSet } from '../../src/udf/dataset.js';
import { createUdf } from '../../src/udf/registry.js';
import { runUdf } from '../../src/udf/runner.js';
import { CLI_PATH } from '../../src/paths.js';
import { SIG, waitUntil } from '../merger/live-helpers.js';
import { RoleProcess } from '../receivers/process-helpers.js';
import { completeEpoch } from './faults-helpers.js';
import { expectResults, expectWholeFrameResults, FRAME, FRAMES_BEFORE, lossesFromMirror, offline, truthFrames, UDFS } from './pipeline-helpers.js';

const tag = Math.random().toString(36).slice(2, 7);
const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
const HOSTS = {
  merger: `${subnet}.1`,
  receivers: `${subnet}.2`,
  camera: `${subnet}.3`,
  shuffle: `${subnet}.4`,
  worker: `${subnet}.5`,
  client: `${subnet}.254`,
} as const;
type Host = keyof typeof HOSTS;
const ns = (h: Host | 'switch') => `tsr-${h.slice(0, 4)}-${tag}`;
const TOKEN = `multihost-control-${tag}-0123456789`;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

function netnsAllowed(): string | null {
  try {
    ip('netns', 'add', `tsr-probe-${tag}`);
    ip('netns', 'del', `tsr-probe-${tag}`);
    return null;
  } catch (err) {
    const why = String((err as { stderr?: Buffer }).stderr ?? '').trim() || (err as Error).message;
    return `ip netns not permitted here (${why.split('\n')[0]}): multi-host test skipped`;
  }
}

const skipReason = netnsAllowed();
if (skipReason) console.warn(skipReason);

const createdNs: string[] = [];
/** veth ends created in the root namespace (deleting one end deletes its peer) */
const createdVeths: string[] = [];
const roles: RoleProcess[] = [];

function setUpNetwork(): void {
  const sw = ns('switch');
  ip('netns', 'add', sw);
  createdNs.push(sw);
  ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', sw, 'link', 'set', 'br0', 'up');
  for (const h of Object.keys(HOSTS) as Host[]) {
    const inner = `th${h.slice(0, 3)}${tag}`; // <= 15 chars
    const outer = `ts${h.slice(0, 3)}${tag}`;
    ip('link', 'add', inner, 'type', 'veth', 'peer', 'name', outer);
    createdVeths.push(inner);
    ip('link', 'set', outer, 'netns', sw);
    ip('-n', sw, 'link', 'set', outer, 'master', 'br0');
    ip('-n', sw, 'link', 'set', outer, 'up');
    if (h === 'client') {
      // the test process stays in the root namespace
      ip('addr', 'add', `${HOSTS[h]}/24`, 'dev', inner);
      ip('link', 'set', inner, 'up');
      continue;
    }
    const n = ns(h);
    ip('netns', 'add', n);
    createdNs.push(n);
    ip('link', 'set', inner, 'netns', n);
    ip('-n', n, 'addr', 'add', `${HOSTS[h]}/24`, 'dev', inner);
    ip('-n', n, 'link', 'set', inner, 'up');
    ip('-n', n, 'link', 'set', 'lo', 'up');
  }
}

/** Synchronous, idempotent: also runs from the exit handler when the test process is cut short. */
function tearDownNetwork(): void {
  for (const r of roles) r.kill();
  for (const v of createdVeths.splice(0)) {
    try {
      ip('link', 'del', v);
    } catch {
      // moved into a namespace, or gone with its peer
    }
  }
  for (const n of createdNs.splice(0).reverse()) {
    try {
      ip('netns', 'del', n);
    } catch {
      // already gone
    }
  }
}

/** A tessera role inside a host's namespace (`ip netns exec` execs node: the pid is the role's). */
function spawnOn(host: Exclude<Host, 'client'>, name: string, args: string[]): RoleProcess {
  const child = spawn('ip', ['netns', 'exec', ns(host), process.execPath, CLI_PATH, ...args], {
    // TESSERA_EXIT_WITH_PARENT: a role never outlives a test process that was killed outright
    env: { ...process.env, TESSERA_LOG_JSON: '1', TESSERA_LOG_LEVEL: 'info', TESSERA_EXIT_WITH_PARENT: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const r = new RoleProcess(name, child);
  roles.push(r);
  return r;
}

function configFor(dir: string, name: string, overlay: Record<string, unknown>): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(overlay, null, 2));
  return path;
}

/** UDP datagrams the kernel of a host dropped for a full receive buffer (/proc/net/snmp RcvbufErrors). */
function udpBufferDrops(host: Host): number {
  const lines = execFileSync('ip', ['netns', 'exec', ns(host), 'cat', '/proc/net/snmp']).toString().split('\n').filter((l) => l.startsWith('Udp:'));
  const [keys, values] = lines.map((l) => l.trim().split(/\s+/));
  return Number(values?.[keys?.indexOf('RcvbufErrors') ?? -1] ?? NaN);
}

/** The network namespace a process runs in, by name (`ip netns identify`). */
function namespaceOf(pid: number): string {
  return ip('netns', 'identify', String(pid)).trim();
}

describe.skipIf(skipReason !== null)('roles on separate hosts (network namespaces)', () => {
  let dir = '';
  let keepLogs = false;
  const onExit = () => tearDownNetwork();
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-multihost-'));
    process.once('exit', onExit);
    try {
      setUpNetwork();
    } catch (err) {
      tearDownNetwork();
      throw err;
    }
  });
  afterAll(async () => {
    await Promise.all(roles.map((r) => r.stop(5000).catch(() => r.kill())));
    tearDownNetwork();
    process.off('exit', onExit);
    if (!keepLogs) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('camera, receivers, shuffle, worker and merger on five hosts, configured by endpoints only: tile and whole-frame results equal offline over the truth', async () => {
    const t0 = Date.now();
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const seed = 61;
    const sim = new SimulatedScan({ scanShape: scan, seed });
    const whole: AcquisitionRequest['udfs'] = [
      { id: 'strain', name: 'StrainMapUDF', params: { lattice: { zero: [(FRAME_HEIGHT - 1) / 2, (FRAME_WIDTH - 1) / 2], a: [...sim.a0], b: [...sim.b0] }, template: { type: 'disk', radius: 22 }, maxRadius: 640 } },
      { id: 'fem', name: 'FEMUDF', params: { center: [930, 1024], radIn: 100, radOut: 400 } },
    ];
    // one config per host, as an operator would write them (see deploy/config): each names the
    // endpoints its role binds (its own address) or connects to; everything else stays loopback
    const merger = { control: `tcp://${HOSTS.merger}:7204`, results: `tcp://${HOSTS.merger}:7205` };
    const election = { endpoint: `tcp://${HOSTS.merger}:7210` };
    const shuffle = { slices: `tcp://${HOSTS.shuffle}:7206`, frames: `tcp://${HOSTS.shuffle}:7207` };
    const udp = { host: HOSTS.receivers, basePort: 2001 };
    const mergerConfig = configFor(dir, 'merger', { merger: { ...merger, chunkTimeoutMs: 20_000, http: { host: HOSTS.merger, port: 8080, token: TOKEN } }, election, shuffle: { slices: shuffle.slices }, dataDir: join(dir, 'data') });
    // a receiver starved of CPU on this loaded machine for a second must catch up rather than lose
    // blocks: 32 MB of UDP buffer, and a frame timeout longer than such a stall (its timer runs
    // before the datagrams that waited in the socket, which would come as stragglers after 200 ms)
    const receiverConfig = configFor(dir, 'receivers', { merger, election, shuffle: { slices: shuffle.slices }, detector: { udp }, receiver: { recvBufferBytes: 32 * 1024 * 1024, frameTimeoutMs: 1000 } });
    const shuffleConfig = configFor(dir, 'shuffle', { shuffle });
    const workerConfig = configFor(dir, 'worker', { merger: { results: merger.results }, shuffle: { frames: shuffle.frames } });
    const cameraConfig = configFor(dir, 'camera', { detector: { udp } });

    const mergerRole = spawnOn('merger', 'merger', ['merger', '-c', mergerConfig]);
    onTestFailed(() => {
      for (const r of roles) writeFileSync(join(dir, `${r.name}.log`), r.rawStderr.join('\n'));
      console.error(`multihost: logs of the failed test kept in ${dir}`);
      keepLogs = true;
    });
    // a deep queue, no decimation, a long frame timeout: every frame reaches the worker whole on a loaded machine
    const shuffleRole = spawnOn('shuffle', 'shuffle', ['shuffle', '-c', shuffleConfig, '--fixed-rate', '--max-queued', String(n), '--max-frames', '32', '--frame-timeout', '10000']);
    const worker = spawnOn('worker', 'worker', ['worker', '-c', workerConfig]);
    await mergerRole.waitForMsg('merger listening', 60_000);
    await shuffleRole.waitForMsg('shuffle listening', 60_000);
    const receivers = Array.from({ length: 8 }, (_, s) => spawnOn('receivers', `receiver-${s}`, ['receiver', '--sector', String(s), '-c', receiverConfig]));
    const url = `http://${HOSTS.merger}:8080`;
    const udfs = [...UDFS, ...whole];

    // the merger on a network address: no control without the token
    const refused = await fetch(`${url}/api/acquisitions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scanShape: scan, udfs }) });
    expect(refused.status).toBe(401);

    const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor, token: TOKEN });
    try {
      await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 60_000, 'eight receivers alive across hosts');
      await waitUntil(() => shuffleRole.lines.some((l) => l.msg === 'shuffle: worker joined'), 30_000, 'the worker joined the shuffle across hosts');
      // whole-frame UDFs are accepted once the merger has the shuffle's status with the worker in it
      let id = '';
      await waitUntil(
        async () => {
          try {
            id = (await client.api.define({ scanShape: scan, udfs, mode: 'single' })).id;
            return true;
          } catch (err) {
            if ((err as TesseraApiError).code !== 'TESSERA_ERR_NEEDS_WHOLE_FRAMES') throw err;
            await new Promise((r) => setTimeout(r, 200));
            return false;
          }
        },
        30_000,
        'the merger hears from the shuffle with its worker',
      );
      await client.api.start(id);
      await waitUntil(() => mergerRole.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 30_000, 'eight receivers ready');
      // every receiver holds the shuffle's selection for the acquisition before the camera starts
      await waitUntil(() => receivers.every((r) => r.lines.some((l) => l.msg === 'shuffle selection' && JSON.stringify(l.rules).includes(id))), 30_000, 'receivers hold the shuffle selection');
      const setUp = Date.now() - t0;
      const camera = spawnOn('camera', 'simulator', ['simulate', '-c', cameraConfig, '--scan', `${scan[0]}x${scan[1]}`, '--frames-before', String(FRAMES_BEFORE), '--fps', '25', '--seed', String(seed)]);
      await client.connect();
      client.subscribe({ acquisition: id });
      // done, every position merged from the receivers, and every frame accounted for by the shuffle (merged or skipped)
      const mirror = await client.waitFor((m) => {
        const c = m.get('_shuffle', 'counters')?.data as Float64Array | undefined;
        return m.acquisition === id && m.state?.state === 'done' && completeEpoch(m, n) && c !== undefined && c[0]! + c[1]! >= n;
      }, 120_000);
      const acquired = Date.now() - t0 - setUp;
      expect((await camera.exited).code).toBe(0);

      // the tile UDFs of the receivers: bit-exact (CoM within float tolerance) against offline over the truth with the lost blocks zeroed
      const losses = lossesFromMirror(mirror, n);
      expect(losses.size, 'sector frames with lost blocks').toBeLessThan((n * 8) / 4);
      expectResults(mirror, await offline(scan, seed, losses));

      // the whole-frame UDFs of the worker: every frame processed, none skipped
      const counters = mirror.get('_shuffle', 'counters')!.data as Float64Array;
      expect(counters[0], 'frames merged from the worker').toBe(n);
      expect(counters[1], 'frames skipped by the shuffle').toBe(0);
      expect([...(mirror.get('_shuffle', 'valid')!.data as Uint8Array)]).toEqual(new Array(n).fill(1));
      // frames that came whole to the worker equal the truth; frames with a lost block do not (the shuffle zero-filled it)
      const sectors = mirror.get('_shuffle', 'sectors')!.data as Uint8Array;
      const whole8 = [...sectors.keys()].filter((i) => sectors[i] === 8);
      expect(whole8.length, 'frames that reached the worker whole').toBeGreaterThanOrEqual((3 * n) / 4);
      // the two paths agree on damage: a frame the worker got whole lost no block at any receiver
      for (const i of whole8) for (let s = 0; s < 8; s++) expect(losses.get(`${s}/${i}`) ?? 0, `sector ${s} position ${i}`).toBe(0);
      const data = truthFrames(sim, n);
      const reference = await runUdf(new MemoryDataSet({ data, navShape: scan, sigShape: SIG }), whole.map((u) => createUdf({ name: u.name, params: u.params ?? {} })));
      const compared = expectWholeFrameResults(mirror, whole, reference, whole8, n);
      expect(compared).toBeGreaterThan(whole8.length * 10);
      // not vacuous: strain fitted outside the simulator's vacuum columns
      const exx = mirror.get('strain', 'exx')!.data as Float64Array;
      expect([...exx].filter(Number.isFinite).length).toBeGreaterThan(n / 2);

      // a picked frame crosses from the shuffle host to the merger host and out over HTTP: one of
      // the shuffle's last assembled frames, pixel for pixel the truth
      const picked = whole8.filter((i) => i >= n - 4).pop();
      if (picked !== undefined) {
        const res = await fetch(`${url}/api/acquisitions/${id}/frames/${picked}?timeoutMs=10000`, { headers: { authorization: `Bearer ${TOKEN}` } });
        expect(res.status, await res.clone().text().then((t) => t.slice(0, 200))).toBe(200);
        expect(res.headers.get('x-tessera-position')).toBe(String(picked));
        const frame = new Uint16Array(await res.arrayBuffer());
        const truth = data.subarray(picked * FRAME, (picked + 1) * FRAME);
        expect(frame.length).toBe(FRAME);
        const wrong = frame.findIndex((v, k) => v !== truth[k]);
        expect(wrong, `picked frame ${picked}: first differing pixel`).toBe(-1);
      }

      // the roles really were apart: each in its own host's namespace (the camera has exited), none failed
      for (const r of roles.filter((x) => x.running)) expect(namespaceOf(r.child.pid!), r.name).toBe(ns(r.name.startsWith('receiver-') ? 'receivers' : (r.name as Host)));
      expect(receivers.every((r) => r.running)).toBe(true);
      await worker.stop(5000);
      const final = worker.lines.find((l) => l.msg === 'worker stopped: final counters');
      expect(final, 'the worker\'s final counters').toBeDefined();
      expect({ frames: final!.frames, framesDropped: final!.framesDropped, failures: final!.failures }).toEqual({ frames: n, framesDropped: 0, failures: 0 });
      for (const r of [mergerRole, shuffleRole, worker]) expect(r.lines.filter((l) => (l.level ?? 0) >= 50), `${r.name} errors`).toEqual([]);
      const stats = receivers.map((r) => r.lines.filter((l) => l.msg === 'stats').pop() ?? {});
      const total = (k: string) => stats.reduce((a, l) => a + (Number(l[k]) || 0), 0);
      console.log(
        `multihost: ${losses.size} sector frames with lost blocks (UDP buffer drops ${udpBufferDrops('receivers')}, stragglers ${total('stragglers')}, out of window ${total('outOfWindow')}), ` +
          `${whole8.length}/${n} frames whole at the worker, frame ${picked ?? 'none'} picked; set-up ${setUp} ms, acquisition ${acquired} ms, total ${Date.now() - t0} ms; ` +
          `merger ${url}, receivers ${HOSTS.receivers}, shuffle ${HOSTS.shuffle}, worker ${HOSTS.worker}, camera ${HOSTS.camera}`,
      );
    } finally {
      await client.close().catch(() => {});
    }
  }, 240_000);
});
