/** Test ports: one allocator for tests and benches, see bench/free-ports.ts. */
export { candidatePort, freeTcpPort, freeUdpBase, freeUdpPort } from '../../bench/free-ports.js';
