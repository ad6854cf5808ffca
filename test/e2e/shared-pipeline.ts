/** For test files whose cases share one pipeline, one acquisition each. */
import type { TesseraClient } from '../../src/client/tessera-client.js';
import { waitUntil } from '../merger/live-helpers.js';

/**
 * Stop the acquisition a failed earlier case may have left running, so that one failure is not
 * reported again by every case after it ("cannot define another acquisition").
 */
export async function stopLeftover(client: TesseraClient): Promise<void> {
  const left = (await client.api.status()).acquisition;
  if (!left || !['running', 'stopping'].includes(left.state)) return;
  if (left.state === 'running') await client.api.stop(left.id);
  await waitUntil(async () => !['running', 'stopping'].includes((await client.api.get(left.id)).state), 30_000, `acquisition ${left.id} (left by an earlier case) stopped`);
}
