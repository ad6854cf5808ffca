/**
 * Loss the kernel saw, for end-to-end tests that compare damage with a fault log exactly.
 *
 * On a loaded machine a receiver's UDP socket buffer can overflow: the kernel drops the datagram
 * before the process sees it and counts it per socket (the `drops` column of /proc/net/udp).
 * That loss is real, not injected, so it is not in the simulator's fault log. The tests account
 * for it exactly instead of tolerating it: per sector, every datagram sent either reached the
 * receiver (its `received` counter) or is one of the socket's kernel drops, and the damage the
 * fault log does not explain may be no more than the intact blocks those drops took.
 */
import { existsSync, readFileSync } from 'node:fs';
import { expect } from 'vitest';
import type { FaultRecord } from '../../src/k2is/simulator/faults.js';
import type { LogLine, RoleProcess } from './process-helpers.js';

const PROC_NET_UDP = '/proc/net/udp';
/** 127.0.0.1 as /proc/net/udp prints it (the address in host byte order), either endianness */
const LOOPBACK = new Set(['0100007F', '7F000001']);

export interface UdpSocketState {
  /** bytes waiting in the receive buffer */
  rxQueue: number;
  /** datagrams the kernel dropped for this socket since it was opened */
  drops: number;
}

/** Whether per-socket kernel drops can be read here (Linux). */
export function kernelDropsVisible(): boolean {
  return existsSync(PROC_NET_UDP);
}

/** The UDP sockets bound to 127.0.0.1, by port. */
export function loopbackUdpSockets(): Map<number, UdpSocketState> {
  const out = new Map<number, UdpSocketState>();
  const lines = readFileSync(PROC_NET_UDP, 'utf8').split('\n');
  const head = lines[0]!.trim().split(/\s+/);
  // the header names "tx_queue rx_queue" as two words for one field "tx:rx"; drops is the last
  if (head.at(-1) !== 'drops') throw new Error(`${PROC_NET_UDP}: no drops column in "${lines[0]}"`);
  for (const line of lines.slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13) continue;
    const [addr, port] = f[1]!.split(':');
    if (!LOOPBACK.has(addr!)) continue;
    const rx = f[4]!.split(':')[1]!;
    out.set(parseInt(port!, 16), { rxQueue: parseInt(rx, 16), drops: Number(f.at(-1)) });
  }
  return out;
}

/**
 * Wait until each receiver has either taken in or lost to the kernel every datagram sent to it
 * (`received` of its latest `stats` line + its socket's kernel drops = `sent[k]`), and return
 * the drops. The receivers must log `stats` often (receiver.statsIntervalMs) and still be
 * running: the drop counts go with their sockets. Without /proc/net/udp the drops count as 0.
 */
export async function allDatagramsAccounted(rxs: RoleProcess[], ports: number[], sent: number[], timeoutMs = 30_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const socks = kernelDropsVisible() ? loopbackUdpSockets() : null;
    const missing = ports.filter((p) => socks && !socks.has(p));
    if (missing.length > 0) throw new Error(`no UDP socket on 127.0.0.1 port(s) ${missing.join(', ')} (a receiver closed it too early?)`);
    const drops = ports.map((p) => socks?.get(p)!.drops ?? 0);
    const received = rxs.map(latestReceived);
    const state = rxs.map((r, k) => `${r.name}: received ${received[k]} + kernel drops ${drops[k]} of ${sent[k]} sent`);
    if (received.some((n, k) => n + drops[k]! > sent[k]!)) throw new Error(`more datagrams than were sent:\n${state.join('\n')}`);
    if (received.every((n, k) => n + drops[k]! === sent[k]!)) return drops;
    for (const r of rxs) if (!r.running) throw new Error(`${r.name} exited:\n${r.rawStderr.slice(-20).join('\n')}`);
    if (Date.now() > deadline) throw new Error(`datagrams neither received nor dropped at the socket after ${timeoutMs} ms:\n${state.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function latestReceived(r: RoleProcess): number {
  for (let i = r.lines.length - 1; i >= 0; i--) if (r.lines[i]!.msg === 'stats') return r.lines[i]!.received as number;
  return 0;
}

export interface SectorAccount {
  sector: number;
  /** datagrams the sender put on the wire for this sector (after injected drops and duplicates) */
  sent: number;
  /** the kernel's drops on this sector's socket */
  kernelDrops: number;
  /** the receiver's final counters */
  final: LogLine;
  /** the whole fault log (all sectors) */
  faults: FaultRecord[];
}

/** Datagrams the sender puts on the wire for `blocks` blocks of a sector, after the faults. */
export function sentDatagrams(blocks: number, sector: number, faults: FaultRecord[]): number {
  let n = blocks;
  for (const f of faults) {
    if (f.sector !== sector) continue;
    if (f.kind === 'drop' || f.kind === 'burst_drop') n--;
    else if (f.kind === 'duplicate') n++;
  }
  return n;
}

const REJECTION_OF = {
  corrupt_sync: 'bad_sync',
  corrupt_truncated: 'too_short',
  corrupt_oversized: 'too_long',
  corrupt_coordinates: 'bad_coordinates',
} as const;

/**
 * Every datagram of a sector accounted for, against the fault log and the kernel's drops; the
 * number of intact blocks lost to the kernel (never placed although sent) is returned.
 *
 * With no kernel drops every counter must equal what the fault log says: each corrupt kind
 * rejected for its reason, each duplicate a duplicate or a straggler, every other datagram
 * placed. Each kernel drop takes one datagram away from exactly one of those counts, so with
 * drops each count may only fall short of the log, and the shortfalls add up to the drops.
 */
export function accountDatagrams(a: SectorAccount): number {
  const { sector: s, final: f } = a;
  const what = (x: string) => `sector ${s} ${x} (kernel drops ${a.kernelDrops})`;
  const rejected = f.rejected as Record<string, number>;
  const mine = a.faults.filter((r) => r.sector === s);
  const received = f.received as number;
  expect(received + a.kernelDrops, what('datagrams received + dropped by the kernel = sent')).toBe(a.sent);
  // each datagram counted once, by its fate
  const fates = (f.ok as number) + (f.duplicates as number) + (f.stragglers as number) + (f.outOfWindow as number) + Object.values(rejected).reduce((x, y) => x + y, 0);
  expect(fates, what('datagrams by fate')).toBe(received);
  expect(f.outOfWindow, what('out of window')).toBe(0);
  const expectedRejections: Record<string, number> = {};
  for (const [kind, reason] of Object.entries(REJECTION_OF)) {
    const logged = mine.filter((r) => r.kind === kind).length;
    expectedRejections[reason] = logged;
    const got = rejected[reason] ?? 0;
    expect(got, what(`${reason} (log: ${logged})`)).toBeLessThanOrEqual(logged);
    expect(got, what(`${reason} (log: ${logged})`)).toBeGreaterThanOrEqual(logged - a.kernelDrops);
  }
  // nothing rejected for a reason the faults do not produce
  expect(Object.keys(rejected).filter((r) => !(r in expectedRejections)), what('other rejections')).toEqual([]);
  // a duplicate that arrives after its frame went out is a straggler; a kernel drop of the first
  // copy makes the second one the block itself
  const duplicates = mine.filter((r) => r.kind === 'duplicate').length;
  const twice = (f.duplicates as number) + (f.stragglers as number);
  expect(twice, what(`duplicates + stragglers (log: ${duplicates} duplicates)`)).toBeLessThanOrEqual(duplicates);
  const corrupt = Object.values(expectedRejections).reduce((x, y) => x + y, 0);
  const intact = a.sent - corrupt - duplicates;
  const lostToKernel = intact - (f.ok as number);
  expect(lostToKernel, what('intact blocks never placed')).toBeGreaterThanOrEqual(0);
  expect(lostToKernel, what('intact blocks never placed')).toBeLessThanOrEqual(a.kernelDrops);
  return lostToKernel;
}

/**
 * Damage bits of a dumped frame beyond the injected loss `injected`: the injected blocks must be
 * among them (a lost block is never shown as data); the extra ones are returned, to be held to
 * the blocks lost to the kernel.
 */
export function extraDamage(damage: number, injected: number, what: string): number {
  expect((damage & injected) >>> 0, `${what}: every block the fault log lost is damaged`).toBe(injected >>> 0);
  let extra = (damage & ~injected) >>> 0;
  let n = 0;
  for (; extra; extra >>>= 1) n += extra & 1;
  return n;
}
