/** `tessera merger`: the central process (src/merger/merger-process.ts); prints its URL. */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { startMerger } from '../merger/merger-process.js';
import { onParentExit } from '../parent-watch.js';

export function registerMergerCommand(program: Command): void {
  program
    .command('merger')
    .description('run the merger: receivers\' control and results (ZeroMQ), acquisitions, HTTP API, WebSocket stream and browser UI, first-frame election')
    .option('-c, --config <file>', 'config file overlaid on config/default.json')
    .option('--no-election', 'do not host the first-frame election coordinator (another process does)')
    .option('--static <dir>', 'serve the browser UI from DIR (default dist/web when it exists)')
    .action(async (raw: { config?: string; election: boolean; static?: string }) => {
      const config = loadConfig(raw.config);
      const log = createLogger('merger');
      const merger = await startMerger({ config, log, election: raw.election && config.merger.hostElection, staticDir: raw.static });
      process.stdout.write(`tessera merger: ${merger.url}\n`);
      log.info({ url: merger.url, wsUrl: merger.server.wsUrl, control: merger.link.controlEndpoint, results: merger.link.resultsEndpoint, election: merger.election?.endpoint ?? null }, 'merger listening');
      await new Promise<void>((resolve) => {
        const stop = (sig: string) => {
          log.info({ signal: sig }, 'merger stopping');
          resolve();
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
        onParentExit(stop);
      });
      await merger.close();
      await new Promise<void>((resolve) => log.flush(() => resolve()));
    });
}
