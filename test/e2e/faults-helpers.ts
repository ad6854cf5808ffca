/** Shared by the fault and load end-to-end tests (test/e2e/faults*.test.ts). */
import type { LiveMirror } from '../../src/client/tessera-client.js';

/**
 * Every position of the mirrored epoch merged (some blocks may be lost: a receiver starved of
 * CPU on a loaded machine drops datagrams; references then zero what the damage map says).
 */
export function completeEpoch(m: LiveMirror, positions: number): boolean {
  const blocks = m.get('_damage', 'sectorBlocks')?.data as Uint32Array | undefined;
  return !!blocks && blocks.length === positions * 8 && m.progress?.framesMerged === positions;
}

/** One sample of a Prometheus text without labels. */
export function metric(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}
