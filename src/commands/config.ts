/** `tessera config`: show the effective configuration, or check a config file. */
import type { Command } from 'commander';
import { loadConfig } from '../config.js';

export function registerConfigCommand(program: Command): void {
  program
    .command('config')
    .description('validate a config file (default: config/default.json) and print the effective configuration')
    .option('-c, --config <file>', 'config file overlaid on config/default.json')
    .action((opts: { config?: string }) => {
      const config = loadConfig(opts.config);
      process.stdout.write(JSON.stringify(config, null, 2) + '\n');
    });
}
