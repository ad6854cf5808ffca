/**
 * Free loopback ports for the processes a benchmark (or a test) starts. Candidates come from
 * below the kernel's ephemeral range (32768-60999 on Linux): a port found by binding port 0 comes
 * from that range, which every outgoing connection (ZeroMQ, HTTP, UDP senders) also draws its
 * local port from, so between "found free" and "bound" something else could take it. Each
 * candidate is still checked by binding it.
 */
import { createSocket, type Socket } from 'node:dgram';
import { createServer } from 'node:net';

/** A random port below the ephemeral range, room for `span` consecutive ones. */
export function candidatePort(span = 1): number {
  const low = 10_000;
  const high = 32_000 - span;
  return low + Math.floor(Math.random() * (high - low));
}

/** A free TCP port on 127.0.0.1. */
export async function freeTcpPort(): Promise<number> {
  const tryPort = (port: number) =>
    new Promise<number | null>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(null));
      s.listen(port, '127.0.0.1', () => {
        const bound = (s.address() as { port: number }).port;
        s.close(() => resolve(bound));
      });
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await tryPort(candidatePort());
    if (port !== null) return port;
  }
  const port = await tryPort(0);
  if (port === null) throw new Error('no free TCP port');
  return port;
}

/** `n` consecutive free UDP ports on 127.0.0.1 (the detector's sectors): the first of them. */
export async function freeUdpBase(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
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
