/**
 * Multi-host: the roles on separate "hosts", Linux network namespaces joined by a bridge
 * (veth pairs, addresses 10.x.y.0/24), each role configured only by endpoints in its own
 * config file:
 *   camera host    tessera simulate          -> UDP to the receiver host
 *   receiver host  8 x tessera receiver      -> ZeroMQ to the merger host
 *   merger host    tessera merger            HTTP/WS on its network address, so with a control token
 *   this process   the client, from the root namespace through its own veth
 * The final results equal the offline engine over the simulator's ground truth (what the
 * single-host pipeline equals, test/e2e/live-pipeline.test.ts), with the blocks the damage map
 * reports lost zeroed. Needs root (`ip netns`); skipped with a message when that is not allowed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { CLI_PATH } from '../../src/paths.js';
import { waitUntil } from '../merger/live-helpers.js';
import { RoleProcess } from '../receivers/process-helpers.js';
import { completeEpoch } from './faults-helpers.js';
import { expectResults, FRAMES_BEFORE, lossesFromMirror, offline, UDFS } from './pipeline-helpers.js';

const tag = Math.random().toString(36).slice(2, 7);
const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
const HOSTS = { merger: `${subnet}.1`, receivers: `${subnet}.2`, camera: `${subnet}.3`, client: `${subnet}.254` } as const;
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
    return `ip netns not permitted here (${(err as Error).message.split('\n')[0]}): multi-host test skipped`;
  }
}

const skipReason = netnsAllowed();
if (skipReason) console.warn(skipReason);

const created: string[] = [];
let rootVeth: string | null = null;
const roles: RoleProcess[] = [];

function setUpNetwork(): void {
  const sw = ns('switch');
  ip('netns', 'add', sw);
  created.push(sw);
  ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', sw, 'link', 'set', 'br0', 'up');
  for (const h of Object.keys(HOSTS) as Host[]) {
    const inner = `th${h.slice(0, 3)}${tag}`; // <= 15 chars
    const outer = `ts${h.slice(0, 3)}${tag}`;
    ip('link', 'add', inner, 'type', 'veth', 'peer', 'name', outer);
    ip('link', 'set', outer, 'netns', sw);
    ip('-n', sw, 'link', 'set', outer, 'master', 'br0');
    ip('-n', sw, 'link', 'set', outer, 'up');
    if (h === 'client') {
      rootVeth = inner; // the test process stays in the root namespace
      ip('addr', 'add', `${HOSTS[h]}/24`, 'dev', inner);
      ip('link', 'set', inner, 'up');
      continue;
    }
    const n = ns(h);
    ip('netns', 'add', n);
    created.push(n);
    ip('link', 'set', inner, 'netns', n);
    ip('-n', n, 'addr', 'add', `${HOSTS[h]}/24`, 'dev', inner);
    ip('-n', n, 'link', 'set', inner, 'up');
    ip('-n', n, 'link', 'set', 'lo', 'up');
  }
}

function tearDownNetwork(): void {
  if (rootVeth) {
    try {
      ip('link', 'del', rootVeth);
    } catch {
      // gone with its peer's namespace
    }
  }
  for (const n of created.splice(0).reverse()) {
    try {
      ip('netns', 'del', n);
    } catch {
      // already gone
    }
  }
}

/** A tessera role inside a host's namespace (`ip netns exec` execs node: the pid is the role's). */
function spawnOn(host: Host, name: string, args: string[]): RoleProcess {
  const child = spawn('ip', ['netns', 'exec', ns(host), process.execPath, CLI_PATH, ...args], {
    env: { ...process.env, TESSERA_LOG_JSON: '1', TESSERA_LOG_LEVEL: 'info' },
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

describe.skipIf(skipReason !== null)('roles on separate hosts (network namespaces)', () => {
  beforeAll(() => {
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
  }, 60_000);

  it('camera, receivers and merger on three hosts, configured by endpoints only: results equal offline over the truth', async () => {
    const scan: [number, number] = [4, 8];
    const n = scan[0] * scan[1];
    const seed = 61;
    const dir = mkdtempSync(join(tmpdir(), 'tessera-multihost-'));
    // one config per host, as an operator would write them (see deploy/)
    const endpoints = {
      merger: { control: `tcp://${HOSTS.merger}:7204`, results: `tcp://${HOSTS.merger}:7205`, chunkTimeoutMs: 20_000 },
      election: { endpoint: `tcp://${HOSTS.merger}:7210` },
    };
    const mergerConfig = configFor(dir, 'merger', { ...endpoints, merger: { ...endpoints.merger, http: { host: HOSTS.merger, port: 8080, token: TOKEN } }, dataDir: join(dir, 'data') });
    const receiverConfig = configFor(dir, 'receivers', { ...endpoints, detector: { udp: { host: HOSTS.receivers, basePort: 2001 } }, receiver: { recvBufferBytes: 8 * 1024 * 1024 } });
    const cameraConfig = configFor(dir, 'camera', { detector: { udp: { host: HOSTS.receivers, basePort: 2001 } } });

    const merger = spawnOn('merger', 'merger', ['merger', '-c', mergerConfig]);
    await merger.waitForMsg('merger listening', 60_000);
    const receivers = Array.from({ length: 8 }, (_, s) => spawnOn('receivers', `receiver-${s}`, ['receiver', '--sector', String(s), '-c', receiverConfig]));
    const url = `http://${HOSTS.merger}:8080`;

    // the merger on a network address: no control without the token
    const refused = await fetch(`${url}/api/acquisitions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scanShape: scan, udfs: UDFS }) });
    expect(refused.status).toBe(401);

    const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor, token: TOKEN });
    try {
      await waitUntil(async () => (await client.api.status()).sectors.every((s) => s.state === 'alive'), 60_000, 'eight receivers alive across hosts');
      const { id } = await client.api.define({ scanShape: scan, udfs: UDFS, mode: 'single' });
      await client.api.start(id);
      await waitUntil(() => merger.lines.filter((l) => l.msg === 'receiver ready' && l.acquisition === id).length >= 8, 30_000, 'eight receivers ready');
      const camera = spawnOn('camera', 'simulator', ['simulate', '-c', cameraConfig, '--scan', `${scan[0]}x${scan[1]}`, '--frames-before', String(FRAMES_BEFORE), '--fps', '50', '--seed', String(seed)]);
      await client.connect();
      client.subscribe({ acquisition: id });
      const mirror = await client.waitFor((m) => m.acquisition === id && m.state?.state === 'done' && completeEpoch(m, n), 120_000);
      expect((await camera.exited).code).toBe(0);
      const losses = lossesFromMirror(mirror, n);
      expect(losses.size, 'sector frames with lost blocks').toBeLessThan((n * 8) / 4);
      expectResults(mirror, await offline(scan, seed, losses));
      // the roles really were apart: each one saw the others only by their network addresses
      expect(receivers.every((r) => r.running)).toBe(true);
      expect(merger.lines.filter((l) => (l.level ?? 0) >= 50)).toEqual([]);
      console.log(`multihost: ${losses.size} sector frames with lost blocks; merger at ${url}, receivers at ${HOSTS.receivers}, camera at ${HOSTS.camera}`);
    } finally {
      await client.close().catch(() => {});
    }
  }, 240_000);
});
