/**
 * A receiver whose event loop is held up (a long UDF pass, a loaded host) must not take the
 * blocks waiting in its socket for lost: after the hold-up timers run before the socket is
 * read, so a frame-timeout tick then would give up frames whose blocks did arrive. Real UDP
 * from a separate sender process while this process is busy; the frame must come out whole.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, mergeConfig } from '../../src/config.js';
import { SectorReceiver } from '../../receivers/receiver.js';
import { BLOCK_SIZE } from '../../src/k2is/constants.js';
import { frameDatagrams, freeUdpPort, sectorPixels } from './datagrams.js';

let rx: SectorReceiver | null = null;
const closers: Array<() => void> = [];
let dir: string | null = null;
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await rx?.stop();
  rx = null;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

const SENDER = `
const dgram = require('node:dgram');
const fs = require('node:fs');
const [file, port, delayMs, blockSize, pokePort] = process.argv.slice(1);
const bytes = fs.readFileSync(file);
const s = dgram.createSocket('udp4');
const blocks = [];
for (let o = 0; o < bytes.length; o += Number(blockSize)) blocks.push(bytes.subarray(o, o + Number(blockSize)));
let i = 0;
function send(n, then) {
  if (n === 0) return then();
  s.send(blocks[i++], Number(port), '127.0.0.1', () => send(n - 1, then));
}
// half of frame 0, a poke that makes the receiving process busy, the other half and frame 1
// while it is
send(16, () => setTimeout(() => s.send('busy', Number(pokePort), '127.0.0.1', () => setTimeout(() => send(blocks.length - 16, () => { s.close(); process.stdout.write('sent\\n'); }), Number(delayMs))), 100));
`;

describe('SectorReceiver: an event loop held up longer than frameTimeoutMs', () => {
  it('gives up no frame whose blocks are waiting in the socket: the frame comes out whole, no stragglers', async () => {
    const port = await freeUdpPort();
    const config = mergeConfig(loadConfig(), { detector: { udp: { host: '127.0.0.1', basePort: port } }, receiver: { frameTimeoutMs: 200, statsIntervalMs: 60_000 } });
    rx = await SectorReceiver.start({ sector: 0, config, election: false, scan: null });
    dir = mkdtempSync(join(tmpdir(), 'tessera-lag-'));
    const pixels = [sectorPixels(3, 0, 0), sectorPixels(3, 0, 1)];
    const datagrams = pixels.flatMap((p, f) => frameDatagrams({ key: 32 * f, frameId: 10 + f, shutter: false, pixels: p }));
    writeFileSync(join(dir, 'blocks'), Buffer.concat(datagrams));
    // the busy spell runs in a socket callback (the poll phase), as a long UDF pass does
    const poke = dgram.createSocket('udp4');
    let busy = 0;
    poke.on('message', () => {
      const until = performance.now() + 800;
      while (performance.now() < until) busy++;
    });
    await new Promise<void>((resolve) => poke.bind(0, '127.0.0.1', resolve));
    closers.push(() => poke.close());
    const child = spawn(process.execPath, ['-e', SENDER, join(dir, 'blocks'), String(port), '150', String(BLOCK_SIZE), String(poke.address().port)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const sent = new Promise<void>((resolve) => child.stdout!.on('data', () => resolve()));
    const deadline = Date.now() + 10_000;
    await sent;
    while (rx.counters.ok < 64 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 100));
    const c = rx.counters.snapshot();
    expect(c).toMatchObject({ received: 64, ok: 64, stragglers: 0, framesDamaged: 0, blocksZeroFilled: 0 });
    expect(c.framesComplete).toBe(2);
    expect(busy).toBeGreaterThan(0);
  }, 30_000);
});
