#!/usr/bin/env node
/**
 * The container's HEALTHCHECK: checks the role this container really runs, read from the
 * command line of its main process (PID 1: `node dist/src/cli.js <role> … -c <config>`).
 *
 *   merger    GET /api/status answers 200 with the sectors (with the configured token)
 *   receiver  its sector's UDP port is bound (/proc/net/udp, udp6)
 *   shuffle   its ZeroMQ endpoints (config shuffle.slices, shuffle.frames) are listening
 *   others    the config loads (worker, simulate: no socket of their own to look at)
 *
 * Exit 0 healthy, 1 not (one line on stdout says why: `docker inspect` shows it).
 */
import { readFileSync } from 'node:fs';

function fail(why) {
  console.log(`unhealthy: ${why}`);
  process.exit(1);
}

let argv;
try {
  argv = readFileSync(process.env.TESSERA_HEALTH_CMDLINE ?? '/proc/1/cmdline', 'utf8').split('\0').filter(Boolean);
} catch (err) {
  fail(`cannot read the main process's command line: ${err.message}`);
}
const at = argv.findIndex((a) => a.endsWith('cli.js'));
if (at < 0) fail(`not a tessera process: ${argv.join(' ')}`);
const [role, ...rest] = argv.slice(at + 1);

function option(...names) {
  for (let k = 0; k < rest.length; k++) {
    if (names.includes(rest[k])) return rest[k + 1];
    for (const n of names) if (rest[k].startsWith(`${n}=`)) return rest[k].slice(n.length + 1);
  }
  return undefined;
}

const { loadConfig } = await import(new URL('../dist/src/config.js', import.meta.url));
let config;
try {
  config = loadConfig(option('-c', '--config'));
} catch (err) {
  fail(`config: ${err.message}`);
}

/** Local ports in a /proc/net table with the given socket state (hex, e.g. '0A' = LISTEN, '07' = UDP bound). */
function ports(table, state) {
  const out = new Set();
  for (const file of [`/proc/net/${table}`, `/proc/net/${table}6`]) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || (state && f[3] !== state)) continue;
      out.add(parseInt(f[1].split(':')[1], 16));
    }
  }
  return out;
}

const tcpPort = (endpoint) => {
  const m = /^tcp:\/\/.*:(\d+)$/.exec(endpoint);
  return m ? Number(m[1]) : null;
};

switch (role) {
  case 'merger': {
    const { host, port } = config.merger.http;
    const local = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host;
    const token = config.merger.http.token ?? process.env.TESSERA_CONTROL_TOKEN ?? config.merger.http.viewerToken ?? process.env.TESSERA_VIEWER_TOKEN;
    let response;
    try {
      response = await fetch(`http://${local}:${port}/api/status`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(2500) });
    } catch (err) {
      fail(`merger HTTP ${local}:${port}: ${err.cause?.code ?? err.message}`);
    }
    if (!response.ok) fail(`merger /api/status: HTTP ${response.status}`);
    const status = await response.json();
    if (!Array.isArray(status.sectors)) fail('merger /api/status without sectors');
    const alive = status.sectors.filter((s) => s.state === 'alive').length;
    console.log(`healthy: merger answers; ${alive}/${status.sectors.length} sectors alive; acquisition ${status.acquisition?.state ?? 'none'}`);
    break;
  }
  case 'receiver': {
    const sector = Number(option('--sector', '-s'));
    const udp = option('--udp');
    const base = udp ? Number(udp.slice(udp.lastIndexOf(':') + 1)) : config.detector.udp.basePort;
    if (!Number.isInteger(sector)) fail('receiver without --sector');
    const port = udp ? base : base + sector;
    if (!ports('udp').has(port)) fail(`receiver of sector ${sector}: UDP port ${port} not bound`);
    console.log(`healthy: receiver of sector ${sector} on UDP port ${port}`);
    break;
  }
  case 'shuffle': {
    const listening = ports('tcp', '0A');
    for (const e of [config.shuffle.slices, config.shuffle.frames]) {
      const port = tcpPort(e);
      if (port !== null && !listening.has(port)) fail(`shuffle: ${e} not listening`);
    }
    console.log('healthy: shuffle endpoints listening');
    break;
  }
  default:
    console.log(`healthy: ${role} (config loads; no socket of its own to check)`);
}
