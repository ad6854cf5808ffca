/**
 * Config files under fuzzing (src/config.ts): random bytes and random JSON files, and the
 * default config with one leaf replaced by random JSON or one unknown key added. loadConfig
 * either returns a config that passes the schema or throws TESSERA_ERR_BAD_CONFIG that names
 * the key at fault (for a mutated leaf: that very key or one of its parents); never another
 * error, never a crash.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_PATH, loadConfig, validateConfig } from '../../src/config.js';
import { TesseraError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'tessera-config-fuzz-'));
let n = 0;
function file(content: string | Uint8Array): string {
  const p = join(dir, `c${n++}.json`);
  writeFileSync(p, content);
  return p;
}

const DEFAULTS = JSON.parse(readFileSync(DEFAULT_CONFIG_PATH, 'utf8')) as Record<string, unknown>;

/** Paths (dot-separated) of every leaf of the default config. */
function leaves(o: unknown, prefix: string[] = []): string[][] {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return [prefix];
  return Object.entries(o as Record<string, unknown>).flatMap(([k, v]) => leaves(v, [...prefix, k]));
}
const LEAVES = leaves(DEFAULTS);

function setPath(o: Record<string, unknown>, path: string[], value: unknown): Record<string, unknown> {
  const copy = structuredClone(o);
  let cur = copy as Record<string, unknown>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string, unknown>;
  cur[path[path.length - 1]!] = value;
  return copy;
}

/** Load; returns the key named by a BAD_CONFIG, or null if the config was accepted. */
function keyOfError(load: () => unknown): string | null {
  try {
    load();
    return null;
  } catch (err) {
    if (!(err instanceof TesseraError) || err.code !== 'TESSERA_ERR_BAD_CONFIG') throw new Error(`not a BAD_CONFIG: ${String(err)}`);
    return /key "([^"]*)"/.exec(err.message)?.[1] ?? '(parse)';
  }
}

const json = fc.jsonValue({ maxDepth: 3 });

describe('config files under fuzzing', () => {
  it('random bytes and random JSON: accepted or TESSERA_ERR_BAD_CONFIG', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }), json.map((v) => JSON.stringify(v))), (content) => {
        keyOfError(() => loadConfig(file(content)));
      }),
      { numRuns: 400 },
    );
  });

  it('a leaf of the default config replaced by random JSON: the error names that key (or a parent)', () => {
    let refused = 0;
    fc.assert(
      fc.property(fc.constantFrom(...LEAVES), json, (path, value) => {
        const key = keyOfError(() => validateConfig(setPath(DEFAULTS, path, value), 'fuzz'));
        if (key === null) return;
        refused++;
        const full = path.join('.');
        // the key itself, a parent, or an item of it (an array's entry)
        expect(full === key || full.startsWith(key + '.') || key.startsWith(full + '.'), `${full} vs ${key}`).toBe(true);
      }),
      { numRuns: 1000 },
    );
    expect(refused).toBeGreaterThan(500);
  });

  it('an unknown key anywhere is named as unknown, in a file overlay too', () => {
    fc.assert(
      fc.property(fc.constantFrom(...LEAVES.map((p) => p.slice(0, -1))), fc.stringMatching(/^[a-z][a-zA-Z]{0,10}$/), json, (parent, name, value) => {
        let obj = DEFAULTS as Record<string, unknown>;
        for (const k of parent) obj = obj[k] as Record<string, unknown>;
        fc.pre(!(name in obj));
        const overlay: Record<string, unknown> = {};
        let cur = overlay;
        for (const k of parent) cur = cur[k] = {} as Record<string, unknown>;
        cur[name] = value;
        expect(keyOfError(() => loadConfig(file(JSON.stringify(overlay))))).toBe([...parent, name].join('.'));
      }),
      { numRuns: 300 },
    );
  });

  it('a __proto__ key in a file is an unknown key, not a silent prototype change', () => {
    const path = file('{"merger": {"__proto__": {"chunkTimeoutMs": 5}}}');
    expect(keyOfError(() => loadConfig(path))).toBe('merger.__proto__');
    expect(({} as Record<string, unknown>).chunkTimeoutMs).toBeUndefined();
  });
});
