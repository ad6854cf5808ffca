/**
 * Correlation peak finding and strain mapping on whole K2 IS frames (1860 x 2048, simulator
 * disks of radius 22 px, 64 x 64 windows), per worker core: a PartitionTask running
 * StrainMapUDF (correlation in windows + refinement + lattice fit) exactly as a frame worker or
 * the offline runner runs it, for 8 and 32 peaks, with centre-of-mass and upsampled-DFT
 * refinement. frames/s, against two references measured or fixed in the same run:
 *  - the plain alternative on the same frame: one FFT correlation of the whole frame
 *    (rfft2 + template product + irfft2, src/udf/fft.ts; LiberTEM's FullFrameCorrelationUDF);
 *  - the detector's real-time rate, 400 frames/s.
 * Rates are frames per second of this process's CPU time (process.cpuUsage, medians of
 * several runs): what one worker core delivers, even when the shared machine is oversubscribed
 * and wall-clock rates only measure this process's share of it.
 */
import { loadavg } from 'node:os';
import { FRAME_HEIGHT, FRAME_WIDTH } from '../src/k2is/constants.js';
import { SimulatedScan } from '../src/k2is/simulator/scene.js';
import { irfft2, rfft2 } from '../src/udf/fft.js';
import { StrainMapUDF, type StrainMapParams } from '../src/udf/lib/strain.js';
import { wrappedTemplate } from '../src/udf/lib/blobfinder/templates.js';
import { PartitionTask } from '../src/udf/partition-task.js';
import { makeRunContext } from '../src/udf/runner.js';
import { median, report } from './lib.js';

const H = FRAME_HEIGHT;
const W = FRAME_WIDTH;
const DETECTOR_FPS = 400;
const FRAMES = 4;

/** Calls per CPU-second of this process: median over `runs` runs of at least `minCpuMs` each, after a warm-up. */
function perCpuSecond(fn: () => void, runs: number, minCpuMs: number): number {
  const cpuMs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const warm = cpuMs();
  do fn();
  while (cpuMs() - warm < minCpuMs);
  const rates: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = cpuMs();
    let n = 0;
    let t = 0;
    do {
      fn();
      n++;
      t = cpuMs() - t0;
    } while (t < minCpuMs);
    rates.push((n * 1000) / t);
  }
  return median(rates);
}

export async function run(): Promise<void> {
  // figures are per core: on a shared machine they scale with the share of a core this process gets
  console.log(`# load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const scan = new SimulatedScan({ scanShape: [1, 8], seed: 3 });
  // non-vacuum positions: every frame has the full lattice
  const frames = Array.from({ length: FRAMES }, (_, k) => scan.frame(4 + k));

  // reference: a whole-frame FFT correlation of the same frame
  const template = wrappedTemplate({ type: 'disk', radius: 22 }, 64);
  const templateFrame = new Float64Array(H * W);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) templateFrame[((y + H - 32) % H) * W + ((x + W - 32) % W)] = template[((y + 32) % 64) * 64 + ((x + 32) % 64)]!;
  const tspec = rfft2(templateFrame, H, W);
  const fullFrame = () => {
    const s = rfft2(frames[0]!, H, W);
    for (let i = 0; i < s.length; i += 2) {
      const [a, b, c, d] = [s[i]!, s[i + 1]!, tspec[i]!, -tspec[i + 1]!];
      s[i] = a * c - b * d;
      s[i + 1] = a * d + b * c;
    }
    irfft2(s, H, W);
  };
  const fftFps = perCpuSecond(fullFrame, 3, 1);
  report('full-frame FFT correlation (rfft2 + product + irfft2, 1860 x 2048)', fftFps, 'frames/s per core', fftFps / DETECTOR_FPS, "the detector's 400 fps");

  for (const peaks of [8, 32]) {
    for (const refine of ['com', 'upsample'] as const) {
      const params: StrainMapParams = {
        lattice: { zero: [(H - 1) / 2, (W - 1) / 2], a: scan.a0, b: scan.b0 },
        template: { type: 'disk', radius: 22 },
        maxPeaks: peaks,
        refine,
      };
      const udf = new StrainMapUDF(params);
      const context = makeRunContext({ navShape: [FRAMES], sigShape: [H, W], datasetDtype: 'uint16', sectors: 8, udfs: [udf] });
      // one partition of FRAMES frames per call: task data (template spectrum) made once per task, as in a worker
      const task = () => {
        const t = new PartitionTask({ udfs: [udf], context, partition: { navStart: 0, navEnd: FRAMES, sig: { origin: [0, 0], shape: [H, W] } } });
        for (let k = 0; k < FRAMES; k++) t.processTile({ data: frames[k]!, navStart: k, depth: 1, sigOrigin: [0, 0], sigShape: [H, W] });
        const r = t.finish();
        if (!(r.udfs[0]!.peaks![1]! >= Math.min(peaks, 5))) throw new Error(`strain fit failed with ${peaks} peaks`);
      };
      const fps = perCpuSecond(task, 5, 300) * FRAMES;
      const name = `peak finding + lattice fit, ${peaks} peaks, ${refine === 'com' ? 'centre of mass' : 'upsampled DFT'}`;
      report(name, fps, 'frames/s per core', fps / fftFps, 'full-frame FFT correlation');
      report(`${name}, real time`, fps, 'frames/s per core', fps / DETECTOR_FPS, "the detector's 400 fps");
    }
  }
}
