/**
 * Queue a ZeroMQ message without waiting. On a socket with sendTimeout 0 a send either queues at
 * once (resolves) or fails at once (EAGAIN: nobody connected, or the peer's queue is full), so no
 * send is ever in flight and nothing piles up in JavaScript; `done` says which, for the counters.
 */
export function trySend(socket: { send(message: Buffer | Buffer[]): Promise<void> }, message: Buffer | Buffer[], done: (ok: boolean) => void): void {
  let p: Promise<void>;
  try {
    p = socket.send(message);
  } catch {
    done(false);
    return;
  }
  p.then(
    () => done(true),
    () => done(false),
  );
}
