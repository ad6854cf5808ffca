/**
 * Candidate ports for test servers, below the kernel's ephemeral range (32768-60999 on Linux).
 * A port picked by binding port 0 comes from that range, which every outgoing connection of
 * the tests running in parallel (ZeroMQ, HTTP, UDP senders) also draws its local port from, so
 * between "found free" and "bound" another test could take it (seen in CI: "Address already in
 * use"). Callers still check a candidate by binding it.
 */
export function candidatePort(span = 1): number {
  const low = 10_000;
  const high = 32_000 - span;
  return low + Math.floor(Math.random() * (high - low));
}
