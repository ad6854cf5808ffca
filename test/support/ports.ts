/** Test ports come from below the kernel's ephemeral range: see bench/free-ports.ts. */
export { candidatePort } from '../../bench/free-ports.js';
