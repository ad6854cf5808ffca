/**
 * Where a recording goes: always inside the configured data directory. A requested path is
 * taken relative to it (an absolute one must already point inside it); `..`, and symbolic
 * links of existing parents that lead out of it, are refused.
 */
import { lstatSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { TesseraError } from '../errors.js';

function inside(dir: string, path: string): boolean {
  const r = relative(dir, path);
  return r !== '' && !r.startsWith('..' + sep) && r !== '..' && !isAbsolute(r);
}

/** Whether `path` exists as an entry (a dangling symbolic link exists: writing through it would create its target). */
function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The nearest existing ancestor of `path`, resolved through symbolic links. */
function realAncestor(path: string): { real: string; rest: string } {
  let p = path;
  let rest = '';
  while (!exists(p)) {
    const parent = dirname(p);
    rest = rest === '' ? p.slice(parent.length + 1) : join(p.slice(parent.length + 1), rest);
    if (parent === p) break;
    p = parent;
  }
  if (!exists(p)) return { real: p, rest };
  try {
    return { real: realpathSync(p), rest };
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_RECORD_PATH', path, `${p} is a link that leads nowhere (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * The absolute path of a recording: `requested` (relative to dataDir, or absolute inside it),
 * or `<dataDir>/<acquisition>.h5`. Throws TESSERA_ERR_RECORD_PATH for a path outside dataDir.
 */
export function recordingPath(dataDir: string, acquisition: string, requested: string | null): string {
  const dir = resolve(dataDir);
  const path = requested === null ? join(dir, `${acquisition}.h5`) : isAbsolute(requested) ? resolve(requested) : resolve(dir, requested);
  if (!inside(dir, path)) throw new TesseraError('TESSERA_ERR_RECORD_PATH', requested ?? path, `not inside the data directory ${dir}`);
  const realDir = realAncestor(dir);
  const realPath = realAncestor(path);
  const realDirPath = join(realDir.real, realDir.rest);
  const realFull = realPath.rest === '' ? realPath.real : join(realPath.real, realPath.rest);
  if (!inside(realDirPath, realFull)) throw new TesseraError('TESSERA_ERR_RECORD_PATH', requested ?? path, `leads out of the data directory ${dir} through a link`);
  return path;
}
