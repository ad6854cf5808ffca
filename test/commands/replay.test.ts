/**
 * `tessera replay` (a real process) serving a recording made by the recorder on a real
 * ChunkMerger: a TesseraClient over WebSocket gets the recorded final results, the state at an
 * earlier time (the rows merged by then, the sum image of the snapshot before it), and follows
 * the time set over HTTP; the HTTP API reports the recorded acquisition read-only.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { TesseraClient, type WebSocketConstructor } from '../../src/client/tessera-client.js';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { spawnCli, type RoleProcess } from '../receivers/process-helpers.js';
import { firstDifference, makeRecording, offlineOf, SCAN } from '../merger/recorder.helpers.js';

let roles: RoleProcess[] = [];
let clients: TesseraClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => {});
  await Promise.all(roles.splice(0).map((r) => r.stop(5000).catch(() => r.kill())));
}, 30_000);

function halfFrames(frames: Uint16Array): Uint16Array {
  const out = new Uint16Array(frames.length);
  out.set(frames.subarray(0, 8 * 1860 * 2048));
  return out;
}

describe('tessera replay', () => {
  it('serves the recorded results, the state at an earlier time, and the time line', async () => {
    const r = await makeRecording({ seed: 7 });
    const file = await readReducedFile(r.path);
    const replay = spawnCli('replay', ['replay', r.path, '--port', '0']);
    roles.push(replay);
    const listening = await replay.waitForMsg('replay listening', 30_000);
    const url = String(listening.url);
    const client = new TesseraClient({ url, WebSocket: WebSocket as unknown as WebSocketConstructor });
    clients.push(client);

    const status = await client.api.status();
    expect(status.acquisition).toMatchObject({ id: r.acquisition, state: 'done', scanShape: SCAN, epochs: [0] });
    await expect(client.api.start(r.acquisition)).rejects.toMatchObject({ code: 'TESSERA_ERR_ACQUISITION_STATE' });
    const timeline = (await (await fetch(`${url}/api/replay`)).json()) as { start: number; end: number; epochs: Array<{ snapshots: number[] }> };
    expect(timeline.end).toBeGreaterThan(timeline.start);
    expect(timeline.epochs[0]!.snapshots.length).toBeGreaterThanOrEqual(1);

    // the end: the recorded final results
    await client.connect();
    client.subscribe({ acquisition: r.acquisition });
    const final = await client.waitFor((m) => m.acquisition === r.acquisition && m.progress?.framesMerged === 16, 20_000);
    expect(final.state?.state).toBe('done');
    expect(firstDifference(final.get('sum', 'intensity')!.data as ArrayLike<number>, file.udfs.sum!.buffers.intensity!.data)).toBe(-1);
    expect(firstDifference(final.get('sumsig', 'intensity')!.data as ArrayLike<number>, file.udfs.sumsig!.buffers.intensity!.data)).toBe(-1);
    expect(Array.from(final.get('_damage', 'sectorsComplete')!.data as ArrayLike<number>)).toEqual(new Array(16).fill(8));

    // during the pause: the first two chunks (8 positions) and the sum of their frames
    const t = r.pauseAt - timeline.start;
    const half = await offlineOf(halfFrames(r.frames));
    const expectHalf = (m: typeof final) => {
      const nav = Array.from(m.get('sumsig', 'intensity')!.data as ArrayLike<number>);
      expect(nav.slice(0, 8)).toEqual(Array.from(file.udfs.sumsig!.buffers.intensity!.data).slice(0, 8));
      expect(nav.slice(8)).toEqual(new Array(8).fill(0));
      expect(firstDifference(m.get('sum', 'intensity')!.data as ArrayLike<number>, half[0]!.intensity!.data)).toBe(-1);
      expect(m.state?.state).toBe('running');
    };
    client.subscribe({ acquisition: `${r.acquisition}@t=${t}` });
    expectHalf(await client.waitFor((m) => m.progress?.framesMerged === 8, 20_000));

    // the time set for everyone following 'current'
    client.subscribe({ acquisition: 'current' });
    await client.waitFor((m) => m.progress?.framesMerged === 16, 20_000);
    const set = await fetch(`${url}/api/replay/time`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ t }) });
    expect(set.status).toBe(200);
    expectHalf(await client.waitFor((m) => m.progress?.framesMerged === 8, 20_000));
  }, 90_000);

  it('a file that is not a recording: a clear error, exit code 1', async () => {
    const missing = spawnCli('replay', ['replay', '/nonexistent/rec.h5', '--port', '0']);
    roles.push(missing);
    const { code } = await missing.exited;
    expect(code).not.toBe(0);
    expect(missing.rawStderr.join('\n') + missing.stdout).toMatch(/TESSERA_ERR_NOT_FOUND/);
  }, 30_000);
});
