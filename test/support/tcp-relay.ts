/**
 * A TCP relay on loopback between a client and a server, that can freeze: it then stops
 * reading and forwarding in both directions and keeps the connections open, as a host that
 * froze, lost power or dropped off the network does (no FIN, no reset), which closing a socket
 * or killing a process cannot show.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export class TcpRelay {
  private frozen = false;
  private readonly pairs: Array<[Socket, Socket]> = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listen on a free loopback port and relay every connection to 127.0.0.1:targetPort. */
  static async start(targetPort: number): Promise<TcpRelay> {
    let relay: TcpRelay | null = null;
    const server = createServer((client) => {
      const upstream = connect(targetPort, '127.0.0.1');
      relay!.pairs.push([client, upstream]);
      for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
        from.on('data', (chunk) => {
          if (!to.write(chunk)) from.pause();
        });
        to.on('drain', () => !relay!.frozen && from.resume());
        from.on('error', () => to.destroy());
        from.on('close', () => to.destroy());
      }
      if (relay!.frozen) for (const s of [client, upstream]) s.pause();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    relay = new TcpRelay(server, (server.address() as { port: number }).port);
    return relay;
  }

  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Stop moving bytes either way; the connections stay open. */
  freeze(): void {
    this.frozen = true;
    for (const pair of this.pairs) for (const s of pair) s.pause();
  }

  async close(): Promise<void> {
    for (const pair of this.pairs) for (const s of pair) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
