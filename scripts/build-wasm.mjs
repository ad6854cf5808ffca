// Assemble every WebAssembly text file (src/**/*.wat) into a .wasm binary next to its compiled
// module in dist/, using wabt (the WebAssembly Binary Toolkit, as an npm package). The .wasm
// is also written beside the source so that tests importing src/*.ts find it.
import { readdirSync, readFileSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const wabt = await wabtInit();

function* walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (p.endsWith('.wat')) yield p;
  }
}

let count = 0;
for (const watPath of walk(join(root, 'src'))) {
  const mod = wabt.parseWat(watPath, readFileSync(watPath, 'utf8'), { simd: true });
  mod.validate();
  const { buffer } = mod.toBinary({});
  mod.destroy();
  const rel = relative(root, watPath).replace(/\.wat$/, '.wasm');
  for (const out of [join(root, 'dist', rel), join(root, rel)]) {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, buffer);
  }
  count++;
}
console.log(`build-wasm: ${count} module(s) assembled`);
