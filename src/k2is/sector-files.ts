/**
 * Finding the files of a recorded K2 IS dataset (spec A.1), the way LiberTEM does it: eight
 * sector files `<prefix>*.bin` plus one `<prefix>.gtg`, sorted by name into sectors 0..7.
 *
 *  - `P.gtg`          -> the sector files are `P*.bin`
 *  - `P123.bin`       -> trailing digits come off the stem: `P*.bin`, and the .gtg is `P.gtg`
 *  - a directory      -> every `*.bin` in it; the .gtg derived from the first of them, or the
 *                        directory's only `.gtg`
 * Extensions match case-insensitively. Exactly eight sector files, or a TESSERA_ERR_SECTOR_FILES
 * error that names what was found.
 */
import { readdirSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { BLOCK_SIZE, NUM_SECTORS } from './constants.js';
import { TesseraError } from '../errors.js';

export interface SectorFile {
  /** sector index 0..7 = position in name order */
  sector: number;
  path: string;
  size: number;
  /** whole blocks in the file; a truncated last block is normal (spec convention 5) */
  blocks: number;
  /** bytes of a truncated block after the last whole one */
  trailingBytes: number;
}

export interface SectorFileSet {
  /** how the sector files were looked for, for messages */
  pattern: string;
  files: SectorFile[];
  /** where the .gtg is or would be; `gtgExists` says whether it is there */
  gtgPath: string | undefined;
  gtgExists: boolean;
}

const hasExt = (name: string, ext: string): boolean => name.toLowerCase().endsWith(ext) && name.length > ext.length;

function listDir(dir: string, forPath: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_SECTOR_FILES', `cannot list directory ${dir} (looking for ${forPath}): ${(err as Error).message}`);
  }
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}

/** Code-point order, as Python's sorted() on str (LiberTEM sorts the paths). */
const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** `<stem>.gtg` in `dir`, with the extension matched case-insensitively. */
function findGtg(dir: string, names: string[], stem: string): string | undefined {
  const want = `${stem}.gtg`.toLowerCase();
  const hit = names.filter((n) => n.length === want.length && n.startsWith(stem) && n.toLowerCase() === want).sort(byName);
  return hit.length > 0 ? join(dir, hit[0]!) : undefined;
}

/**
 * The eight sector files of the dataset that `path` (a .gtg, one of the .bin files, or their
 * directory) belongs to.
 */
export function discoverSectorFiles(path: string): SectorFileSet {
  const st = statOrUndefined(path);
  let dir: string;
  let prefix: string;
  let gtgPath: string | undefined;
  let names: string[];
  if (st?.isDirectory()) {
    dir = path;
    names = listDir(dir, path);
    prefix = '';
  } else {
    const ext = extname(path).toLowerCase();
    dir = dirname(path);
    const stem = basename(path, extname(path));
    if (ext === '.gtg') prefix = stem;
    else if (ext === '.bin') prefix = stem.replace(/[0-9]+$/, '');
    else {
      throw new TesseraError(
        'TESSERA_ERR_SECTOR_FILES',
        `${path}: unknown extension "${extname(path)}" (give a .gtg file, one of the .bin sector files, or their directory)`,
      );
    }
    names = listDir(dir, path);
    gtgPath = ext === '.gtg' ? path : (findGtg(dir, names, prefix) ?? join(dir, `${prefix}.gtg`));
  }
  const pattern = join(dir, `${prefix}*.bin`);
  const binNames = names
    .filter((n) => n.startsWith(prefix) && hasExt(n, '.bin') && n.length >= prefix.length + 4)
    .filter((n) => statOrUndefined(join(dir, n))?.isFile() === true)
    .sort(byName);
  if (binNames.length !== NUM_SECTORS) {
    const shown = binNames.slice(0, 12).join(', ') + (binNames.length > 12 ? `, … (${binNames.length - 12} more)` : '');
    throw new TesseraError(
      'TESSERA_ERR_SECTOR_FILES',
      `expected ${NUM_SECTORS} sector files matching ${pattern}, found ${binNames.length}` + (shown ? `: ${shown}` : ''),
    );
  }
  if (st?.isDirectory()) {
    const firstStem = basename(binNames[0]!, extname(binNames[0]!)).replace(/[0-9]+$/, '');
    const gtgs = names.filter((n) => hasExt(n, '.gtg'));
    gtgPath = findGtg(dir, names, firstStem) ?? (gtgs.length === 1 ? join(dir, gtgs[0]!) : undefined);
  }
  const files = binNames.map((n, sector): SectorFile => {
    const p = join(dir, n);
    const size = statSync(p).size;
    const blocks = Math.floor(size / BLOCK_SIZE);
    if (blocks === 0) {
      throw new TesseraError(
        'TESSERA_ERR_SECTOR_FILES',
        `sector ${sector} file ${p} is ${size} bytes: not even one ${BLOCK_SIZE}-byte block`,
      );
    }
    return { sector, path: p, size, blocks, trailingBytes: size - blocks * BLOCK_SIZE };
  });
  const gtgExists = gtgPath !== undefined && statOrUndefined(gtgPath)?.isFile() === true;
  return { pattern, files, gtgPath, gtgExists };
}
