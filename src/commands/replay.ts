/**
 * `tessera replay FILE.h5`: serve a recording (written by the merger's recorder) through the
 * merger's WebSocket protocol, HTTP API (read-only, plus GET /api/replay and POST
 * /api/replay/time) and browser UI, with the recorded stream's time line (docs/protocol.md,
 * "Replay").
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { TesseraError } from '../errors.js';
import { createLogger } from '../log.js';
import { DEFAULT_STATIC_DIR } from '../merger/merger-process.js';
import { ReplayController } from '../merger/replay-controller.js';
import { RecordingFile } from '../merger/replay-file.js';
import { ReplayRegistry } from '../merger/replay-store.js';
import { buildMergerServer } from '../merger/server.js';

interface ReplayOptions {
  port: string;
  host: string;
  static?: string;
}

export function registerReplayCommand(program: Command): void {
  program
    .command('replay')
    .description('serve a recording (HDF5 written by the merger) over the WebSocket stream and browser UI, with a time line')
    .argument('<file>', 'the recording (.h5)')
    .option('-p, --port <n>', 'HTTP/WebSocket port (0: any free port)', '8080')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--static <dir>', 'serve the browser UI from DIR (default dist/web when it exists)')
    .action(async (file: string, raw: ReplayOptions) => {
      const log = createLogger('replay');
      const port = Number(raw.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--port', `"${raw.port}" is not a port number`);
      const recording = await RecordingFile.open(file);
      const registry = new ReplayRegistry(recording);
      const staticDir = raw.static ?? (existsSync(DEFAULT_STATIC_DIR) ? DEFAULT_STATIC_DIR : null);
      const server = await buildMergerServer({ controller: new ReplayController(registry), stores: registry, logger: log, host: raw.host, port, staticDir });
      const timeline = registry.timeline();
      process.stdout.write(`tessera replay: ${server.url}\n`);
      log.info({ url: server.url, wsUrl: server.wsUrl, file: recording.path, acquisition: registry.acquisition, epochs: timeline.epochs.length, durationMs: timeline.end - timeline.start }, 'replay listening');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      await server.close();
      recording.close();
      await new Promise<void>((resolve) => log.flush(() => resolve()));
    });
}
