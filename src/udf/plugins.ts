/**
 * UDF plugins: users' own UDF classes in .js/.mjs or .ts/.mts modules, in a plugin directory
 * (config key udf.pluginDir) or named one by one. Every role loads them with this loader, which
 * registers each exported UDF class (the default export and named exports) by its name.
 *
 * A plugin imports the base class as `import { UDF } from 'tessera/udf'`: the loader installs a
 * module resolve hook that maps 'tessera/udf' to this engine's own public module, so the plugin
 * extends the very class the engine uses, wherever the plugin file lives. TypeScript plugins
 * are loaded at run time with tsx (no compile step); they must be ES modules (.mts, or .ts below
 * a package.json with "type": "module"), because the 'tessera/udf' mapping is an ESM hook.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { register } from 'node:module';
import { dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TesseraError } from '../errors.js';
import { registerUdf } from './registry.js';
import { isUdfClass, udfNameOf, type UDFClass } from './udf.js';
// the engine's public module (a cycle, harmless: only read when the first plugin loads)
import * as engine from './index.js';

const PLUGIN_EXTENSIONS = new Set(['.js', '.mjs', '.ts', '.mts']);
const loaded: string[] = [];
let hookInstalled = false;

const ENGINE_KEY = Symbol.for('tessera.udf.engine');

const HOOK_SOURCE = `
let target;
export async function initialize(data) { target = data.target; }
export async function resolve(specifier, context, next) {
  if (specifier === 'tessera/udf') return { url: target, shortCircuit: true };
  return next(specifier, context);
}`;

/**
 * Map 'tessera/udf' to a module that re-exports this engine's public module, handed over
 * through a global: the plugin gets the same UDF class as the engine (one copy of the engine,
 * whichever way the plugin itself was loaded).
 */
function installHook(): void {
  if (hookInstalled) return;
  (globalThis as Record<symbol, unknown>)[ENGINE_KEY] = engine;
  const names = Object.keys(engine as Record<string, unknown>).filter((k) => k !== 'default');
  const facade = `const m = globalThis[Symbol.for('tessera.udf.engine')];\nexport const { ${names.join(', ')} } = m;\nexport default m;\n`;
  register(`data:text/javascript,${encodeURIComponent(HOOK_SOURCE)}`, {
    data: { target: `data:text/javascript,${encodeURIComponent(facade)}` },
  });
  hookInstalled = true;
}

type ModuleRecord = Record<string, unknown>;

/** Does the nearest package.json above `file` declare "type": "module"? */
function inEsmPackage(file: string): boolean {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: string }).type === 'module';
      } catch {
        return false;
      }
    }
    if (dirname(dir) === dir) return false;
  }
}

async function importPlugin(file: string): Promise<ModuleRecord> {
  installHook();
  const url = pathToFileURL(file).href;
  const ext = extname(file);
  // TypeScript plugins load through tsx; so does everything when Tessera itself runs from its
  // sources (tests), where import() may be a test runner's and not Node's.
  if (ext === '.ts' && !inEsmPackage(file)) {
    // tsx would compile it as CommonJS, where require('tessera/udf') cannot be mapped
    throw new Error('a .ts plugin must be an ES module: rename it to .mts, or put a package.json with "type": "module" in its directory');
  }
  if (ext === '.ts' || ext === '.mts' || import.meta.url.endsWith('.ts')) {
    const { tsImport } = (await import('tsx/esm/api')) as { tsImport: (s: string, parent: string) => Promise<ModuleRecord> };
    return tsImport(url, import.meta.url);
  }
  return (await import(url)) as ModuleRecord;
}

function pluginFiles(path: string): string[] {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new TesseraError('TESSERA_ERR_UDF_PLUGIN', path, 'no such file or directory');
  }
  if (!st.isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => PLUGIN_EXTENSIONS.has(extname(f)) && !f.endsWith('.d.ts') && !f.startsWith('.'))
    .sort()
    .map((f) => join(path, f));
}

/**
 * Load a plugin file, or every .js/.mjs/.ts/.mts file of a directory, and register the UDF
 * classes they export. Returns the registered names. A file that exports no UDF class is an
 * error (TESSERA_ERR_UDF_PLUGIN), so that a typo does not silently drop a detector.
 */
export async function loadUdfPlugins(path: string): Promise<string[]> {
  const names: string[] = [];
  for (const file of pluginFiles(resolve(path))) {
    let mod: Record<string, unknown>;
    try {
      mod = await importPlugin(file);
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_UDF_PLUGIN', file, (err as Error).message);
    }
    const classes = new Set<UDFClass>();
    for (const value of Object.values(mod)) if (isUdfClass(value)) classes.add(value);
    const def = (mod.default as { default?: unknown } | undefined)?.default; // CommonJS interop
    if (isUdfClass(def)) classes.add(def);
    if (classes.size === 0) throw new TesseraError('TESSERA_ERR_UDF_PLUGIN', file, 'exports no class extending UDF');
    for (const cls of classes) {
      registerUdf(cls);
      names.push(udfNameOf(cls));
    }
    if (!loaded.includes(file)) loaded.push(file);
  }
  return names;
}

/** Load the plugin directory named by the config key udf.pluginDir, if any (relative to the working directory). */
export async function loadConfiguredPlugins(config: { udf: { pluginDir: string | null } }): Promise<string[]> {
  return config.udf.pluginDir ? loadUdfPlugins(config.udf.pluginDir) : [];
}

/** Plugin files loaded in this thread, for worker threads to load the same. */
export function loadedPluginSources(): string[] {
  return [...loaded];
}
