// Bundle the browser UI (src/web) into dist/web: app.js (esbuild, ES2022, minified, source
// map), app.css (ours + uPlot's), index.html. Everything is served by the merger: no CDN.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'web');
mkdirSync(out, { recursive: true });

const t0 = Date.now();
const result = await build({
  entryPoints: [join(root, 'src/web/app/main.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  minify: true,
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
});
const css = [readFileSync(join(root, 'node_modules/uplot/dist/uPlot.min.css'), 'utf8'), readFileSync(join(root, 'src/web/style.css'), 'utf8')];
writeFileSync(join(out, 'app.css'), css.join('\n'));
copyFileSync(join(root, 'src/web/index.html'), join(out, 'index.html'));
const bytes = result.metafile.outputs['dist/web/app.js']?.bytes ?? Object.values(result.metafile.outputs).find((o) => o.entryPoint)?.bytes;
console.log(`web UI built into dist/web (app.js ${Math.round((bytes ?? 0) / 1024)} KiB) in ${Date.now() - t0} ms`);
