/**
 * Free loopback ports for the processes a benchmark (or a test) starts.
 *
 * Candidates come from below the kernel's ephemeral range (32768-60999 on Linux): a port found
 * by binding port 0 comes from that range, which every outgoing connection (ZeroMQ, HTTP, UDP
 * senders) also draws its local port from, so between "found free" and "bound" something else
 * could take it.
 *
 * A port is only checked (bound and closed again), not held, so two calls must never pick the
 * same candidate: a test that asks for two ports before binding either would get one port twice
 * (CI saw `tcp://…:24954 / tcp://…:24954: Address already in use`). Each process therefore walks
 * its own slice of the range in order; vitest's parallel workers (VITEST_POOL_ID) get disjoint
 * slices, so two test files running side by side cannot pick each other's ports either.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer } from 'node:net';

const LOW = 10_000;
const HIGH = 32_000;
const SLICES = 4;
const SLICE = Math.floor((HIGH - LOW) / SLICES);

function sliceIndex(): number {
  const pool = Number(process.env['VITEST_POOL_ID']);
  return (Number.isInteger(pool) && pool > 0 ? pool - 1 : process.pid) % SLICES;
}

const sliceStart = LOW + sliceIndex() * SLICE;
// a random start within the slice: a process that follows one still running in the same slot
// (a lingering child of the previous test file) starts elsewhere
let cursor = Math.floor(Math.random() * SLICE);

/** The next candidate port of this process's slice, room for `span` consecutive ones. */
export function candidatePort(span = 1): number {
  if (span > SLICE) throw new Error(`cannot reserve ${span} consecutive ports`);
  if (cursor + span > SLICE) cursor = 0;
  const port = sliceStart + cursor;
  cursor += span;
  return port;
}

function listenable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A free TCP port on 127.0.0.1, never one this process handed out before. */
export async function freeTcpPort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = candidatePort();
    if (await listenable(port)) return port;
  }
  throw new Error('no free TCP port');
}

/** `n` consecutive free UDP ports on 127.0.0.1 (the detector's sectors): the first of them. */
export async function freeUdpBase(n: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = candidatePort(n);
    const socks: Socket[] = [];
    let ok = true;
    for (let k = 0; k < n && ok; k++) {
      const s = createSocket('udp4');
      ok = await new Promise<boolean>((r) => {
        s.once('error', () => r(false));
        s.bind(base + k, '127.0.0.1', () => r(true));
      });
      socks.push(s);
    }
    await Promise.all(socks.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free UDP ports`);
}

/** A free UDP port on 127.0.0.1. */
export function freeUdpPort(): Promise<number> {
  return freeUdpBase(1);
}
