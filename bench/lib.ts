/**
 * Shared helpers for bench/*.bench.ts: timing, the memcpy reference and the report line.
 *
 * Machines here are shared and noisy, so every figure is a median over several timed runs,
 * after a warm-up long enough for V8 to tier JavaScript and WebAssembly up to optimised code,
 * and is quoted as a ratio against a reference measured in the same run on the same bytes.
 */
import { performance } from 'node:perf_hooks';

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export interface MeasureOptions {
  /** bytes processed by one call of fn (the figure's denominator) */
  bytes: number;
  /** timed runs; the median is returned (default 7) */
  runs?: number;
  /** each run lasts at least this long (default 150 ms) */
  minTimeMs?: number;
  /** calling fn for this long first (default minTimeMs) */
  warmupMs?: number;
}

/** Call fn repeatedly; return the median throughput over `runs` runs in GB/s (1e9 B/s). */
export function measure(fn: () => void, options: MeasureOptions): number {
  const runs = options.runs ?? 7;
  const minTimeMs = options.minTimeMs ?? 150;
  const warmupMs = options.warmupMs ?? minTimeMs;
  // Warm up, and find how many calls take about 1 ms, so that reading the clock costs nothing.
  let calls = 0;
  const warmStart = performance.now();
  while (performance.now() - warmStart < warmupMs) {
    fn();
    calls++;
  }
  const batch = Math.max(1, Math.round(calls / Math.max(1, warmupMs)));
  const rates: number[] = [];
  for (let r = 0; r < runs; r++) {
    let n = 0;
    const t0 = performance.now();
    let elapsed = 0;
    do {
      for (let i = 0; i < batch; i++) fn();
      n += batch;
      elapsed = performance.now() - t0;
    } while (elapsed < minTimeMs);
    rates.push((options.bytes * n) / (elapsed * 1e6));
  }
  return median(rates);
}

export interface MemcpyFigures {
  /** Uint8Array.prototype.set, GB/s */
  set: number;
  /** Buffer.prototype.copy, GB/s */
  bufferCopy: number;
  /** the faster of the two: the reference ratios are taken against */
  best: number;
}

/** The physical limit: copying `bytes` bytes between two buffers of that size, both ways
 *  Node offers. Large sizes measure memory bandwidth, small ones the caches. */
export function measureMemcpy(bytes: number, options: Omit<MeasureOptions, 'bytes'> = {}): MemcpyFigures {
  const src = Buffer.alloc(bytes);
  const dst = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4096) src[i] = i & 0xff; // touch every page
  const srcView = new Uint8Array(src.buffer, src.byteOffset, bytes);
  const dstView = new Uint8Array(dst.buffer, dst.byteOffset, bytes);
  const set = measure(() => dstView.set(srcView), { ...options, bytes });
  const bufferCopy = measure(() => src.copy(dst), { ...options, bytes });
  return { set, bufferCopy, best: Math.max(set, bufferCopy) };
}

function formatValue(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  return abs >= 100 ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** Print one figure: `name: value unit (ratio x vs refName)`. */
export function report(name: string, value: number, unit: string, ratio?: number, refName?: string): void {
  let line = `${name}: ${formatValue(value)} ${unit}`;
  if (ratio !== undefined) line += ` (${formatValue(ratio)}x vs ${refName ?? 'reference'})`;
  console.log(line);
}

/** A human-readable size: 714 KB, 45.7 MB. */
export function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${Math.round(bytes / 1e3)} KB`;
  return `${bytes} B`;
}
