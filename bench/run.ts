/**
 * Runs the compiled benchmarks (dist/bench/*.bench.js, each exporting `run()`) one after the
 * other, or only those whose file name contains argv[2]: `npm run bench decode`.
 * A header records where the figures were measured, since they only mean something next to
 * the machine they came from.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // not Linux: fall through
  }
  return cpus()[0]?.model ?? 'unknown CPU';
}

async function main(): Promise<number> {
  const filter = process.argv[2] ?? '';
  const dir = dirname(fileURLToPath(import.meta.url));
  const benches = readdirSync(dir)
    .filter((f) => f.endsWith('.bench.js') && f.includes(filter))
    .sort();
  console.log(`# Tessera benchmarks: node ${process.version}, ${cpuModel()} (${cpus().length} cores), ${new Date().toISOString()}`);
  if (benches.length === 0) {
    console.error(`no benchmark in ${dir} matches "${filter}"`);
    return 1;
  }
  let failed = 0;
  for (const file of benches) {
    console.log(`\n## ${file.replace(/\.bench\.js$/, '')}`);
    try {
      const mod = (await import(pathToFileURL(join(dir, file)).href)) as { run?: () => Promise<void> };
      if (typeof mod.run !== 'function') throw new Error(`${file} does not export run()`);
      await mod.run();
    } catch (err) {
      failed++;
      console.error(`${file} failed:`, err);
    }
  }
  return failed === 0 ? 0 : 1;
}

process.exitCode = await main();
