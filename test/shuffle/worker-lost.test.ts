/**
 * Frames a worker had taken and never answered when its connection went (a killed worker) are
 * counted, on real ZeroMQ sockets in process: eight real SliceSenders, the ShuffleService, the
 * merger's ShuffleLink and a worker DEALER that says its window (so the shuffle pings it), keeps
 * frames without answering, then disconnects. Reference: the frames that worker got and did not
 * answer. The count reaches the merger (the link's state: /api/status, /metrics, the UI line).
 * A worker whose host froze (its connection open, no byte moving: a TCP relay that stops) is
 * found by the ZMTP heartbeats and counted the same way.
 */
import { describe, expect, it } from 'vitest';
import { waitUntil } from '../merger/live-helpers.js';
import { TcpRelay } from '../support/tcp-relay.js';
import { closeAfterEach, sliceSenderRig } from './helpers.js';

const closers = closeAfterEach();

describe('frames lost with a worker', () => {
  it('counts the frames a disconnected worker had taken and not answered, not the ones it answered', async () => {
    const { service: s, link, worker, begin, feedSelected } = await sliceSenderRig(closers, { acquisition: 'acq-k', scan: [2, 4], worker: { credits: 4, sayWindow: true } });
    begin(1, 3);
    // answered: its credit came back
    await feedSelected(1, 1, 0);
    await feedSelected(1, 1, 1);
    await waitUntil(() => s.dispatcher.workers.values().next().value?.credits === 4, 20_000, 'credit back for the answered frames');
    // taken, never answered
    worker.answering = false;
    for (let i = 2; i < 5; i++) await feedSelected(1, 1, i);
    const unanswered = worker.frames.length - 2;
    expect(unanswered).toBe(3);
    expect(s.framesLostInWorkers).toBe(0);

    worker.close();
    // the shuffle's ping finds the connection gone (at most a ping period, 1 s)
    await waitUntil(() => s.workersLost === 1, 20_000, 'the worker found gone');
    expect(s.framesLostInWorkers).toBe(unanswered);
    expect(s.dispatcher.live).toBe(0);
    await waitUntil(() => link.state().framesLostInWorkers === unanswered, 20_000, 'the count at the merger');
  }, 60_000);

  it('counts the frames of a worker whose host froze (no reset, the connection open) once its heartbeats stop', async () => {
    let relay: TcpRelay | null = null;
    closers.push(() => relay?.close());
    const heartbeatTimeoutMs = 1000;
    const { service: s, worker, begin, feedSelected } = await sliceSenderRig(closers, {
      acquisition: 'acq-f',
      scan: [2, 4],
      worker: { credits: 4, sayWindow: true },
      workerHeartbeatTimeoutMs: heartbeatTimeoutMs,
      workerVia: async (frames) => (relay = await TcpRelay.start(Number(new URL(frames).port))).endpoint,
    });
    begin(1, 3);
    await feedSelected(1, 1, 0);
    await waitUntil(() => s.dispatcher.workers.values().next().value?.credits === 4, 20_000, 'credit back for the answered frame');
    worker.answering = false;
    for (let i = 1; i < 4; i++) await feedSelected(1, 1, i);
    // busy, not frozen: past the heartbeat timeout it is still there with its frames
    await new Promise((r) => setTimeout(r, 1.5 * heartbeatTimeoutMs));
    expect(s.workersLost).toBe(0);
    expect(s.framesLostInWorkers).toBe(0);

    const frozenAt = Date.now();
    relay!.freeze();
    // the heartbeat timeout closes the connection, the next ping finds it gone; without
    // heartbeats it would only go silent after workerTimeoutMs (10 s), its frames not counted
    await waitUntil(() => s.workersLost === 1, 8000, 'the frozen worker found gone');
    expect(s.framesLostInWorkers).toBe(worker.frames.length - 1);
    expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(heartbeatTimeoutMs - 100);
  }, 60_000);
});
