/**
 * `SectorUdpSource`: the UDP socket of one sector (port = basePort + sector), unicast on
 * `host` or joined to a multicast group (optionally on a given interface, with SO_REUSEADDR),
 * and as large a receive buffer as the kernel grants.
 *
 * The receive buffer is what absorbs the moments the process is busy (a GC, a slow tile sink):
 * at 400 fps one sector brings 286 MB/s, so every millisecond of stall needs 286 KB of buffer.
 * Linux caps SO_RCVBUF at net.core.rmem_max (and reports double the value it set, for its own
 * bookkeeping); the log says what was asked, what was granted, and the limit.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { TesseraError } from '../src/errors.js';
import type { Logger } from '../src/log.js';

export interface SectorUdpSourceOptions {
  sector: number;
  host: string;
  basePort: number;
  /** multicast group to join, or null for unicast */
  multicast: string | null;
  /** local interface address for the multicast join, or null for the default */
  interface: string | null;
  recvBufferBytes: number;
  log?: Logger;
}

function rmemMax(): number | null {
  try {
    return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
  } catch {
    return null;
  }
}

export class SectorUdpSource {
  /** SO_RCVBUF as the kernel reports it after our request */
  grantedRecvBufferBytes = 0;
  socketErrors = 0;
  private closed = false;

  private constructor(
    private readonly socket: dgram.Socket,
    readonly port: number,
    readonly address: string,
  ) {}

  static async open(o: SectorUdpSourceOptions, onDatagram: (msg: Buffer) => void): Promise<SectorUdpSource> {
    const port = o.basePort + o.sector;
    const where = `${o.multicast ?? o.host}:${port}`;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TesseraError('TESSERA_ERR_UDP_BIND', where, 'port out of range');
    // SO_REUSEADDR lets several processes join the same multicast group and port. On a unicast
    // port it would let a second receiver of the same sector bind too and silently take part of
    // the stream: there, a second bind must fail.
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: o.multicast !== null });
    // bind to the group itself when multicast: the socket then sees only that group's traffic
    const bindAddress = o.multicast ?? o.host;
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(port, bindAddress, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      if (o.multicast) socket.addMembership(o.multicast, o.interface ?? undefined);
    } catch (err) {
      try {
        socket.close();
      } catch {
        // never bound
      }
      throw new TesseraError('TESSERA_ERR_UDP_BIND', where, (err as Error).message);
    }
    const src = new SectorUdpSource(socket, socket.address().port, bindAddress);
    try {
      socket.setRecvBufferSize(o.recvBufferBytes);
    } catch (err) {
      o.log?.warn({ err: (err as Error).message }, 'cannot set the UDP receive buffer size');
    }
    src.grantedRecvBufferBytes = socket.getRecvBufferSize();
    const limit = rmemMax();
    const info = { sector: o.sector, udp: where, multicastInterface: o.multicast ? (o.interface ?? 'default') : undefined, recvBufferRequested: o.recvBufferBytes, recvBufferGranted: src.grantedRecvBufferBytes, rmemMax: limit };
    if (src.grantedRecvBufferBytes < o.recvBufferBytes) {
      o.log?.warn(
        info,
        `UDP receive buffer smaller than asked: the kernel caps it at net.core.rmem_max${limit !== null ? ` (${limit} B)` : ''}; raise it (sysctl -w net.core.rmem_max=${o.recvBufferBytes}) to absorb longer stalls without loss`,
      );
    }
    o.log?.info(info, 'receiver listening');
    socket.on('message', onDatagram);
    socket.on('error', (err) => {
      src.socketErrors++;
      if (src.socketErrors <= 10) o.log?.error({ err: err.message }, 'UDP socket error');
    });
    return src;
  }

  /** Stop receiving (datagrams still in the kernel buffer are dropped). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}
