/**
 * Where the project's own files are, both when running compiled code (dist/src/…) and when
 * tests import the TypeScript sources (src/…).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'config'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the Tessera project root');
    dir = parent;
  }
}

export const PROJECT_ROOT = findRoot();
/** The compiled CLI entry point, for spawning role processes. */
export const CLI_PATH = join(PROJECT_ROOT, 'dist', 'src', 'cli.js');
