/**
 * Worker thread that renders stream frames into shared memory, so that the main thread only
 * sends (see frame-source.ts). It builds the same scene and stream from the same options, so
 * its bytes are the bytes the main thread would have rendered.
 */
import { parentPort } from 'node:worker_threads';
import { SimulatedScan, type SimulatedScanOptions } from './scene.js';
import { K2ISStream, type StreamOptions } from './stream.js';

export interface RenderWorkerInit {
  scene: SimulatedScanOptions;
  stream: StreamOptions;
  sectors: number[];
  slots: SharedArrayBuffer[];
}

export type RenderWorkerRequest = { type: 'render'; frame: number; slot: number };
export type RenderWorkerReply = { type: 'ready' } | { type: 'done'; frame: number; slot: number } | { type: 'error'; message: string };

if (parentPort) {
  const port = parentPort;
  let stream: K2ISStream | null = null;
  let init: RenderWorkerInit | null = null;
  port.on('message', (msg: RenderWorkerInit | RenderWorkerRequest) => {
    try {
      if ('type' in msg) {
        if (!stream || !init) throw new Error('render before init');
        stream.writeFrame(msg.frame, new Uint8Array(init.slots[msg.slot]!), init.sectors);
        port.postMessage({ type: 'done', frame: msg.frame, slot: msg.slot } satisfies RenderWorkerReply);
      } else {
        init = msg;
        stream = new K2ISStream(new SimulatedScan(msg.scene), msg.stream);
        port.postMessage({ type: 'ready' } satisfies RenderWorkerReply);
      }
    } catch (err) {
      port.postMessage({ type: 'error', message: (err as Error).message } satisfies RenderWorkerReply);
    }
  });
}
