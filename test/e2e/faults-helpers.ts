/** Shared by the fault, load and resume end-to-end tests (test/e2e/faults*.test.ts, outage-resume*.test.ts). */
import type { LiveMirror } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';
import type { Pipeline } from './pipeline-helpers.js';

/** Damage word of a position no block of which came (merged as missing). */
const FULL = 0xffffffff;

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

/** The mirror of one epoch of the acquisition, once every position of it is merged. */
export async function epochMirror(p: Pipeline, id: string, epoch: number, positions: number): Promise<LiveMirror> {
  // (subscribing to an epoch that does not exist yet is an error)
  await waitUntil(async () => (await p.client.api.get(id)).epochs.includes(epoch), 30_000, `epoch ${epoch} begun`);
  // a fresh connection per epoch (connect() closes the one before)
  await p.client.connect();
  p.client.subscribe({ acquisition: id, epoch });
  return p.client.waitFor((m) => m.acquisition === id && m.epoch === epoch && completeEpoch(m, positions), 30_000);
}

/** Positions of the mirrored epoch of which no sector delivered anything (merged as missing). */
export function lostWhole(m: LiveMirror, positions: number): number[] {
  const bits = m.get('_damage', 'sectorBlocks')!.data as Uint32Array;
  return Array.from({ length: positions }, (_, i) => i).filter((i) => bits.subarray(i * 8, i * 8 + 8).every((b) => b === FULL));
}
