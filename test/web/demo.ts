/**
 * Run the UI against the synthetic controller for a look by eye:
 * `node scripts/build-web.mjs && npx tsx test/web/demo.ts [port]`, then open the printed URL.
 */
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/paths.js';
import { buildMergerServer } from '../../src/merger/server.js';
import { createLogger } from '../../src/log.js';
import { SyntheticController } from './synthetic-controller.js';

const controller = new SyntheticController();
const server = await buildMergerServer({
  controller,
  stores: controller.registry,
  staticDir: join(PROJECT_ROOT, 'dist', 'web'),
  port: Number(process.argv[2] ?? 0),
  logger: createLogger('web-demo'),
});
controller.play(16, 50);
console.log(`UI at ${server.url}`);
process.on('SIGINT', () => {
  controller.pause();
  void server.close().then(() => process.exit(0));
});
