/**
 * Discrete Fourier transforms of any length: fft.js (radix-4) for powers of two, Bluestein's
 * chirp-z algorithm on top of it for every other length (the K2 IS frame is 1860 rows: not a
 * power of two). Complex data is interleaved [re0, im0, re1, im1, ...] in Float64Arrays.
 * Conventions follow numpy.fft: forward X[k] = sum x[n] exp(-2 pi i k n / N), the inverse is
 * scaled by 1/N, and rfft2/irfft2 transform the last axis as real (w / 2 + 1 columns kept).
 */
import FFT from 'fft.js';

interface FFTLike {
  transform(out: Float64Array, data: Float64Array): void;
}

/** A reusable transform of one length. */
export class FFTPlan {
  readonly n: number;
  private readonly pow2: FFTLike | null = null;
  // Bluestein: chirp e^{-i pi k^2 / n}, FFT of the convolution kernel, work buffers
  private readonly m: number = 0;
  private readonly inner: FFTLike | null = null;
  private readonly chirp: Float64Array | null = null;
  private readonly kernel: Float64Array | null = null;
  private readonly a: Float64Array | null = null;
  private readonly fa: Float64Array | null = null;

  constructor(n: number) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`FFT length must be a positive integer, got ${n}`);
    this.n = n;
    if (n === 1) return;
    if ((n & (n - 1)) === 0) {
      this.pow2 = new (FFT as unknown as new (n: number) => FFTLike)(n);
      return;
    }
    let m = 2;
    while (m < 2 * n - 1) m *= 2;
    this.m = m;
    this.inner = new (FFT as unknown as new (n: number) => FFTLike)(m);
    const chirp = new Float64Array(2 * n);
    for (let k = 0; k < n; k++) {
      // k^2 mod 2n keeps the angle small and exact
      const angle = (Math.PI * ((k * k) % (2 * n))) / n;
      chirp[2 * k] = Math.cos(angle);
      chirp[2 * k + 1] = -Math.sin(angle);
    }
    const b = new Float64Array(2 * m);
    for (let k = 0; k < n; k++) {
      // b[k] = conj(chirp[k]), placed at k and m - k (a circular convolution over -(n-1)..n-1)
      b[2 * k] = chirp[2 * k]!;
      b[2 * k + 1] = -chirp[2 * k + 1]!;
      if (k > 0) {
        b[2 * (m - k)] = chirp[2 * k]!;
        b[2 * (m - k) + 1] = -chirp[2 * k + 1]!;
      }
    }
    const kernel = new Float64Array(2 * m);
    this.inner.transform(kernel, b);
    this.chirp = chirp;
    this.kernel = kernel;
    this.a = new Float64Array(2 * m);
    this.fa = new Float64Array(2 * m);
  }

  /** out = DFT(input); both interleaved complex of length n (out must not alias input). */
  forward(input: Float64Array, out: Float64Array): void {
    const n = this.n;
    if (n === 1) {
      out[0] = input[0]!;
      out[1] = input[1]!;
      return;
    }
    if (this.pow2) {
      this.pow2.transform(out, input);
      return;
    }
    const m = this.m;
    const chirp = this.chirp!;
    const kernel = this.kernel!;
    const a = this.a!;
    const fa = this.fa!;
    a.fill(0);
    for (let k = 0; k < n; k++) {
      const xr = input[2 * k]!;
      const xi = input[2 * k + 1]!;
      const cr = chirp[2 * k]!;
      const ci = chirp[2 * k + 1]!;
      a[2 * k] = xr * cr - xi * ci;
      a[2 * k + 1] = xr * ci + xi * cr;
    }
    this.inner!.transform(fa, a);
    for (let k = 0; k < m; k++) {
      const ar = fa[2 * k]!;
      const ai = fa[2 * k + 1]!;
      const br = kernel[2 * k]!;
      const bi = kernel[2 * k + 1]!;
      // conj of the product, so that a forward transform computes the inverse (then conj again)
      fa[2 * k] = ar * br - ai * bi;
      fa[2 * k + 1] = -(ar * bi + ai * br);
    }
    this.inner!.transform(a, fa);
    for (let k = 0; k < n; k++) {
      const cr = a[2 * k]! / m;
      const ci = -a[2 * k + 1]! / m;
      const wr = chirp[2 * k]!;
      const wi = chirp[2 * k + 1]!;
      out[2 * k] = cr * wr - ci * wi;
      out[2 * k + 1] = cr * wi + ci * wr;
    }
  }

  /** out = inverse DFT(input), scaled by 1/n. */
  inverse(input: Float64Array, out: Float64Array): void {
    const n = this.n;
    const conj = new Float64Array(2 * n);
    for (let k = 0; k < n; k++) {
      conj[2 * k] = input[2 * k]!;
      conj[2 * k + 1] = -input[2 * k + 1]!;
    }
    this.forward(conj, out);
    for (let k = 0; k < n; k++) {
      out[2 * k] = out[2 * k]! / n;
      out[2 * k + 1] = -out[2 * k + 1]! / n;
    }
  }
}

const plans = new Map<number, FFTPlan>();

export function fftPlan(n: number): FFTPlan {
  let p = plans.get(n);
  if (!p) {
    p = new FFTPlan(n);
    plans.set(n, p);
  }
  return p;
}

/** numpy.fft.fft of interleaved complex data. */
export function fft(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  fftPlan(x.length / 2).forward(x, out);
  return out;
}

/** numpy.fft.ifft of interleaved complex data. */
export function ifft(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  fftPlan(x.length / 2).inverse(x, out);
  return out;
}

/** numpy.fft.rfft2 of an h x w real image: h x (w / 2 + 1) complex, interleaved. */
export function rfft2(data: ArrayLike<number>, h: number, w: number): Float64Array {
  const w2 = Math.floor(w / 2) + 1;
  const out = new Float64Array(2 * h * w2);
  const rowPlan = fftPlan(w);
  const row = new Float64Array(2 * w);
  const rowOut = new Float64Array(2 * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      row[2 * x] = data[y * w + x]!;
      row[2 * x + 1] = 0;
    }
    rowPlan.forward(row, rowOut);
    out.set(rowOut.subarray(0, 2 * w2), 2 * y * w2);
  }
  columns(out, h, w2, (col, res) => fftPlan(h).forward(col, res));
  return out;
}

/** numpy.fft.irfft2 with output shape h x w, from h x (w / 2 + 1) complex. */
export function irfft2(spec: Float64Array, h: number, w: number): Float64Array {
  const w2 = Math.floor(w / 2) + 1;
  const tmp = spec.slice();
  columns(tmp, h, w2, (col, res) => fftPlan(h).inverse(col, res));
  const out = new Float64Array(h * w);
  const full = new Float64Array(2 * w);
  const res = new Float64Array(2 * w);
  const rowPlan = fftPlan(w);
  for (let y = 0; y < h; y++) {
    const o = 2 * y * w2;
    for (let k = 0; k < w2; k++) {
      full[2 * k] = tmp[o + 2 * k]!;
      full[2 * k + 1] = tmp[o + 2 * k + 1]!;
    }
    // Hermitian completion; like numpy, the imaginary parts of DC and Nyquist are ignored
    full[1] = 0;
    if (w % 2 === 0) full[2 * (w2 - 1) + 1] = 0;
    for (let k = w2; k < w; k++) {
      full[2 * k] = full[2 * (w - k)]!;
      full[2 * k + 1] = -full[2 * (w - k) + 1]!;
    }
    rowPlan.inverse(full, res);
    for (let x = 0; x < w; x++) out[y * w + x] = res[2 * x]!;
  }
  return out;
}

/** Apply `f` to every column of an h x cols complex array, in place. */
function columns(a: Float64Array, h: number, cols: number, f: (col: Float64Array, out: Float64Array) => void): void {
  const col = new Float64Array(2 * h);
  const res = new Float64Array(2 * h);
  for (let c = 0; c < cols; c++) {
    for (let y = 0; y < h; y++) {
      col[2 * y] = a[2 * (y * cols + c)]!;
      col[2 * y + 1] = a[2 * (y * cols + c) + 1]!;
    }
    f(col, res);
    for (let y = 0; y < h; y++) {
      a[2 * (y * cols + c)] = res[2 * y]!;
      a[2 * (y * cols + c) + 1] = res[2 * y + 1]!;
    }
  }
}
