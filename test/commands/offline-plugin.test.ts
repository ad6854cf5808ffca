/**
 * `tessera offline` runs plugin UDFs from the config's udf.pluginDir, on worker threads: a tile
 * UDF (runs sector-split) and a whole-frame UDF (processFrame only) in one pass, checked against
 * the simulator's ground truth; and the progress bar on a terminal. Runs the compiled CLI: build first.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_PATH } from '../../src/paths.js';
import { readNpy } from '../../src/k2is/npy.js';
import { readReducedFile } from '../../src/io/reduced-file.js';
import { killChildren, runCli, simulateRecording } from './offline.helpers.js';

const P = 1860 * 2048;

const PLUGIN = `
import { UDF } from 'tessera/udf';

// pixels above a threshold per frame: tiles, so it runs on sector slices
export class AboveUDF extends UDF {
  static paramsSchema = { type: 'object', required: ['threshold'], properties: { threshold: { type: 'number' } }, additionalProperties: false };
  getResultBuffers() {
    return { count: this.buffer({ kind: 'nav', dtype: 'uint32' }) };
  }
  processTile(tile) {
    const depth = tile.shape[0];
    const n = tile.length / depth;
    const out = this.results.count;
    for (let f = 0; f < depth; f++) {
      let c = 0;
      for (let i = 0; i < n; i++) if (tile[f * n + i] > this.params.threshold) c++;
      out[f] += c;
    }
  }
}

// the brightest pixel of each frame and where it is: needs whole frames
export class BrightestUDF extends UDF {
  getResultBuffers() {
    return { value: this.buffer({ kind: 'nav', dtype: 'float64' }), at: this.buffer({ kind: 'nav', dtype: 'int32', extraShape: [2] }) };
  }
  processFrame(frame) {
    const w = frame.shape[1];
    let best = -1;
    let at = 0;
    for (let i = 0; i < frame.length; i++) if (frame[i] > best) { best = frame[i]; at = i; }
    this.results.value[0] = best;
    this.results.at[0] = Math.floor(at / w);
    this.results.at[1] = at % w;
  }
}
`;

describe.skipIf(!existsSync(CLI_PATH))('tessera offline with plugin UDFs (udf.pluginDir)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-offline-plugin-'));
  });
  afterEach(killChildren);
  afterAll(() => {
    killChildren();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs a tile plugin and a whole-frame plugin with a standard UDF, on 2 workers, equal to the truth', async () => {
    const rec = join(dir, 'rec');
    const plugins = join(dir, 'plugins');
    mkdirSync(rec);
    mkdirSync(plugins);
    writeFileSync(join(plugins, 'my-udfs.mjs'), PLUGIN);
    const config = join(dir, 'tessera.json');
    writeFileSync(config, JSON.stringify({ udf: { pluginDir: plugins } }));
    await simulateRecording(rec, 'Plug', ['--scan', '4x4', '--seed', '3', '--frames-before', '2', '--frames-after', '1']);
    const truth = readNpy(join(rec, 'Plug-truth.npy'));
    const data = truth.data as Uint16Array;
    const frames = 16;
    expect(truth.shape[0]).toBe(frames);

    const output = join(dir, 'plug.h5');
    const threshold = 40;
    const r = await runCli([
      'offline', '-c', config, '--input', rec, '--workers', '2', '--output', output,
      '--udf', `Above:${JSON.stringify({ threshold })}`,
      '--udf', 'BrightestUDF',
      '--udf', 'SumSig',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const f = await readReducedFile(output);
    expect(Object.keys(f.udfs).sort()).toEqual(['AboveUDF', 'BrightestUDF', 'SumSigUDF']);

    const count = new Array<number>(frames).fill(0);
    const value = new Array<number>(frames).fill(-1);
    const at: number[] = [];
    const total = new Array<number>(frames).fill(0);
    for (let k = 0; k < frames; k++) {
      let best = -1;
      let bi = 0;
      for (let i = 0; i < P; i++) {
        const v = data[k * P + i]!;
        if (v > threshold) count[k]!++;
        if (v > best) {
          best = v;
          bi = i;
        }
        total[k] += v;
      }
      value[k] = best;
      at.push(Math.floor(bi / 2048), bi % 2048);
    }
    const above = f.udfs.AboveUDF!.buffers.count!;
    expect(above.shape).toEqual([4, 4]);
    expect(above.data).toBeInstanceOf(Uint32Array);
    expect(Array.from(above.data)).toEqual(count);
    expect(f.udfs.AboveUDF!.params).toEqual({ threshold });
    // a threshold that separates: neither none nor all pixels are above it
    expect(count.every((c) => c > 0 && c < P)).toBe(true);
    const b = f.udfs.BrightestUDF!.buffers;
    expect(Array.from(b.value!.data)).toEqual(value);
    expect(b.at!.shape).toEqual([4, 4, 2]);
    expect(Array.from(b.at!.data)).toEqual(at);
    expect(Array.from(f.udfs.SumSigUDF!.buffers.intensity!.data)).toEqual(total);
  });

  it('a plugin name without the config is an unknown UDF', async () => {
    const rec = join(dir, 'rec');
    const r = await runCli(['offline', '--input', rec, '--udf', 'Above:{"threshold":1}', '--output', join(dir, 'none.h5')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^tessera: error TESSERA_ERR_UNKNOWN_UDF: unknown UDF "Above"/m);
    expect(existsSync(join(dir, 'none.h5'))).toBe(false);
  });

  it.skipIf(!existsSync('/usr/bin/script'))('on a terminal (a pty from script(1)): a progress bar on stderr, ending at 100%', async () => {
    const rec = join(dir, 'rec');
    const output = join(dir, 'tty.h5');
    const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const cmd = [process.execPath, CLI_PATH, 'offline', '--input', rec, '--udf', 'SumSig', '--workers', '0', '--output', output].map(quote).join(' ');
    const res = spawnSync('/usr/bin/script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, TESSERA_LOG_LEVEL: 'warn' } });
    expect(res.status, res.stdout + res.stderr).toBe(0);
    const bars = res.stdout.split('\r').filter((l) => l.startsWith('['));
    expect(bars.length).toBeGreaterThanOrEqual(1);
    expect(bars.at(-1)).toMatch(/^\[#{30}\] 100% 16\/16 frames +[\d.]+ GB\/s +ETA 00:00/);
    expect(res.stdout).toMatch(/tessera offline: wrote .*tty\.h5 \(SumSigUDF\): 16 frames/);
    expect(existsSync(output)).toBe(true);
  });
});
