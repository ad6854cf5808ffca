/**
 * ImageView: one image on a canvas, with a colour map, automatic or manual contrast, an
 * optional log scale, the value under the cursor, zoom (wheel) and pan (drag), a click to
 * pick a pixel, and an overlay hook (virtual detectors, the picked position).
 *
 * The data is mapped to colours once per data change into a 1:1 canvas (`image`); zooming
 * and panning only redraw that canvas with a transform, so they stay smooth on the 1860 x
 * 2048 signal image. Both happen in the shared latest-wins scheduler.
 */
import { COLORMAPS, DIVERGING, lutOf, wheelColour, type ColormapName } from './colormaps.js';
import { fmtValue, h } from './dom.js';
import { schedule } from './scheduler.js';

/** Pixels of an image: value i is values[i * stride + offset]; vectors take (y, x) from offset, offset + 1. */
export interface ImageSource {
  width: number;
  height: number;
  values: ArrayLike<number>;
  stride?: number;
  offset?: number;
  /** vector field (colour wheel) instead of scalars */
  vector?: boolean;
  /** positions where valid[i] is 0 are not drawn (not merged yet) */
  valid?: ArrayLike<number> | null;
}

export interface ImagePoint {
  /** continuous image coordinates: pixel (row y, column x) covers [x, x+1) x [y, y+1) */
  x: number;
  y: number;
}

/** What an overlay can draw and which pointer gestures it may claim. */
export interface ImageOverlay {
  draw(ctx: CanvasRenderingContext2D, view: ImageView): void;
  /** return true to take this gesture (no pan, no pick) */
  pointerDown?(p: ImagePoint, ev: PointerEvent, view: ImageView): boolean;
  pointerMove?(p: ImagePoint, ev: PointerEvent, view: ImageView): void;
  pointerUp?(p: ImagePoint, ev: PointerEvent, view: ImageView): void;
  /** cursor to show when hovering at p (null: the default) */
  cursorAt?(p: ImagePoint, view: ImageView): string | null;
}

export interface ImageViewOptions {
  title: string;
  cmap?: ColormapName;
  log?: boolean;
  /** auto-contrast percentiles (0..1) */
  autoRange?: [number, number];
  onPick?: (y: number, x: number) => void;
  className?: string;
}

/** What the last render drew (read by tests and the readout). */
export interface RenderInfo {
  width: number;
  height: number;
  /** display range in transformed units (log1p when log is on); vectors: [0, length scale] */
  lo: number;
  hi: number;
  log: boolean;
  cmap: ColormapName;
  vector: boolean;
  renders: number;
}

const MIN_SCALE = 1 / 64;
/** paints slower than this are spaced out (3x their cost apart) */
const SLOW_PAINT_MS = 8;
const MAX_SCALE = 256;

/** The value transform of the log scale (counts are >= 0; negative values clip to 0). */
export const logTransform = (v: number): number => Math.log1p(v > 0 ? v : 0);

const packed = new Map<ColormapName, Uint32Array>();
/** The colour map as opaque RGBA words in the byte order of ImageData on this machine. */
function packedLut(name: ColormapName): Uint32Array {
  let table = packed.get(name);
  if (!table) {
    const lut = lutOf(name);
    const bytes = new Uint8ClampedArray(256 * 4);
    for (let j = 0; j < 256; j++) bytes.set([lut[j * 3]!, lut[j * 3 + 1]!, lut[j * 3 + 2]!, 255], j * 4);
    table = new Uint32Array(bytes.buffer);
    packed.set(name, table);
  }
  return table;
}

export class ImageView {
  readonly root: HTMLElement;
  readonly canvas: HTMLCanvasElement;
  /** the data mapped to colours, one canvas pixel per image pixel */
  readonly image: HTMLCanvasElement;
  readonly overlays: ImageOverlay[] = [];
  source: ImageSource | null = null;
  cmap: ColormapName;
  log: boolean;
  auto = true;
  /** manual range, in data units */
  manual: [number, number] = [0, 1];
  info: RenderInfo | null = null;
  /** screen = (image - origin) * scale, in CSS pixels */
  scale = 1;
  ox = 0;
  oy = 0;
  private fitted = true;
  private dataDirty = false;
  private imageData: ImageData | null = null;
  private readonly readout: HTMLElement;
  private readonly loInput: HTMLInputElement;
  private readonly hiInput: HTMLInputElement;
  private readonly autoBox: HTMLInputElement;
  private readonly autoRange: [number, number];
  private drag: { x: number; y: number; moved: boolean; overlay: ImageOverlay | null } | null = null;
  private readonly onPick?: (y: number, x: number) => void;
  private renders = 0;
  private lastPaint = -Infinity;
  /** ms the last paint took */
  paintCost = 0;
  private repaintTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly renderTask = () => this.render();

  constructor(options: ImageViewOptions) {
    this.cmap = options.cmap ?? 'viridis';
    this.log = options.log ?? false;
    this.autoRange = options.autoRange ?? [0.002, 0.998];
    this.onPick = options.onPick;
    this.image = document.createElement('canvas');
    this.canvas = h('canvas', { class: 'view-canvas' });
    const cmapSelect = h(
      'select',
      { title: 'colour map', onchange: (ev) => this.setColormap((ev.target as HTMLSelectElement).value as ColormapName) },
      ...COLORMAPS.map((c) => h('option', { value: c, selected: c === this.cmap }, c)),
    );
    this.autoBox = h('input', { type: 'checkbox', checked: true, onchange: () => this.setAuto(this.autoBox.checked) });
    const logBox = h('input', { type: 'checkbox', checked: this.log, onchange: () => this.setLog(logBox.checked) });
    const manualChange = () => {
      const lo = Number(this.loInput.value);
      const hi = Number(this.hiInput.value);
      if (Number.isFinite(lo) && Number.isFinite(hi)) this.setRange(lo, hi);
    };
    this.loInput = h('input', { type: 'number', class: 'range', title: 'display minimum', step: 'any', onchange: manualChange });
    this.hiInput = h('input', { type: 'number', class: 'range', title: 'display maximum', step: 'any', onchange: manualChange });
    this.readout = h('span', { class: 'readout' }, '\u00a0');
    this.root = h(
      'div',
      { class: `view ${options.className ?? ''}` },
      h(
        'div',
        { class: 'view-bar' },
        h('span', { class: 'view-title' }, options.title),
        cmapSelect,
        h('label', { title: 'log scale' }, logBox, 'log'),
        h('label', { title: 'automatic contrast' }, this.autoBox, 'auto'),
        this.loInput,
        this.hiInput,
        h('button', { type: 'button', title: 'fit the image (or double-click it)', onclick: () => this.fit() }, 'fit'),
      ),
      h('div', { class: 'view-body' }, this.canvas),
      h('div', { class: 'view-foot' }, this.readout),
    );
    this.attachPointer();
    new ResizeObserver(() => this.resize()).observe(this.canvas);
  }

  setTitle(title: string): void {
    (this.root.querySelector('.view-title') as HTMLElement).textContent = title;
  }

  /** New data (or the same arrays, changed in place): re-map at the next frame. */
  setSource(source: ImageSource | null): void {
    const resized = !this.source || !source || source.width !== this.source.width || source.height !== this.source.height;
    this.source = source;
    if (resized) this.fitted = true;
    this.dataDirty = true;
    this.request();
  }

  setColormap(cmap: ColormapName): void {
    this.cmap = cmap;
    this.dataDirty = true;
    this.request();
  }

  setLog(log: boolean): void {
    this.log = log;
    this.dataDirty = true;
    this.request();
  }

  setAuto(auto: boolean): void {
    this.auto = auto;
    this.autoBox.checked = auto;
    this.dataDirty = true;
    this.request();
  }

  /** A manual display range in data units (turns automatic contrast off). */
  setRange(lo: number, hi: number): void {
    this.manual = [lo, hi];
    this.setAuto(false);
  }

  /** Redraw (overlays changed, or new data) at the next frame. */
  request(): void {
    schedule(this.renderTask);
  }

  fit(): void {
    this.fitted = true;
    this.request();
  }

  // -------------------------------------------------------------------------------------------
  // coordinates

  toImage(sx: number, sy: number): ImagePoint {
    return { x: sx / this.scale + this.ox, y: sy / this.scale + this.oy };
  }

  toScreen(x: number, y: number): { x: number; y: number } {
    return { x: (x - this.ox) * this.scale, y: (y - this.oy) * this.scale };
  }

  private cssSize(): { w: number; h: number } {
    return { w: this.canvas.clientWidth || 1, h: this.canvas.clientHeight || 1 };
  }

  private applyFit(): void {
    const s = this.source;
    if (!s) return;
    const { w, h: ch } = this.cssSize();
    this.scale = Math.min(w / s.width, ch / s.height);
    this.ox = (s.width - w / this.scale) / 2;
    this.oy = (s.height - ch / this.scale) / 2;
  }

  private resize(): void {
    const dpr = window.devicePixelRatio || 1;
    const { w, h: ch } = this.cssSize();
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(ch * dpr);
    this.request();
  }

  private eventPoint(ev: PointerEvent | WheelEvent | MouseEvent): ImagePoint {
    const r = this.canvas.getBoundingClientRect();
    return this.toImage(ev.clientX - r.left, ev.clientY - r.top);
  }

  private attachPointer(): void {
    const c = this.canvas;
    c.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      const p = this.eventPoint(ev);
      const overlay = this.overlays.find((o) => o.pointerDown?.(p, ev, this)) ?? null;
      this.drag = { x: ev.clientX, y: ev.clientY, moved: false, overlay };
      c.setPointerCapture(ev.pointerId);
    });
    c.addEventListener('pointermove', (ev) => {
      const p = this.eventPoint(ev);
      this.showReadout(p);
      const d = this.drag;
      if (!d) {
        c.style.cursor = this.overlays.map((o) => o.cursorAt?.(p, this) ?? null).find((x) => x) ?? 'crosshair';
        return;
      }
      if (Math.abs(ev.clientX - d.x) + Math.abs(ev.clientY - d.y) > 3) d.moved = true;
      if (d.overlay) {
        d.overlay.pointerMove?.(p, ev, this);
      } else if (d.moved) {
        this.ox -= (ev.clientX - d.x) / this.scale;
        this.oy -= (ev.clientY - d.y) / this.scale;
        d.x = ev.clientX;
        d.y = ev.clientY;
        this.fitted = false;
      }
      this.request();
    });
    const end = (ev: PointerEvent) => {
      const d = this.drag;
      if (!d) return;
      this.drag = null;
      const p = this.eventPoint(ev);
      if (d.overlay) d.overlay.pointerUp?.(p, ev, this);
      else if (!d.moved && this.source && this.onPick) {
        const x = Math.floor(p.x);
        const y = Math.floor(p.y);
        if (x >= 0 && y >= 0 && x < this.source.width && y < this.source.height) this.onPick(y, x);
      }
      this.request();
    };
    c.addEventListener('pointerup', end);
    c.addEventListener('pointercancel', end);
    c.addEventListener('pointerleave', () => {
      if (!this.drag) this.readout.textContent = '\u00a0';
    });
    c.addEventListener('dblclick', () => this.fit());
    c.addEventListener(
      'wheel',
      (ev) => {
        ev.preventDefault();
        const r = this.canvas.getBoundingClientRect();
        const sx = ev.clientX - r.left;
        const sy = ev.clientY - r.top;
        const p = this.toImage(sx, sy);
        const next = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * Math.pow(1.2, -ev.deltaY / 100)));
        this.scale = next;
        this.ox = p.x - sx / next;
        this.oy = p.y - sy / next;
        this.fitted = false;
        this.request();
      },
      { passive: false },
    );
  }

  /** The value at pixel (y, x) of the current data, or null outside it. */
  valueAt(y: number, x: number): number | [number, number] | null {
    const s = this.source;
    if (!s || x < 0 || y < 0 || x >= s.width || y >= s.height) return null;
    const i = y * s.width + x;
    const k = i * (s.stride ?? 1) + (s.offset ?? 0);
    return s.vector ? [s.values[k]!, s.values[k + 1]!] : s.values[k]!;
  }

  private showReadout(p: ImagePoint): void {
    const x = Math.floor(p.x);
    const y = Math.floor(p.y);
    const v = this.valueAt(y, x);
    if (v === null) {
      this.readout.textContent = '\u00a0';
      return;
    }
    const valid = this.source?.valid ? this.source.valid[y * this.source.width + x] !== 0 : true;
    const text = Array.isArray(v) ? `(${fmtValue(v[0])}, ${fmtValue(v[1])}) |${fmtValue(Math.hypot(v[0], v[1]))}|` : fmtValue(v);
    this.readout.textContent = `y ${y}, x ${x}: ${valid ? text : 'not merged yet'}`;
  }

  // -------------------------------------------------------------------------------------------
  // rendering

  private computeRange(s: ImageSource): [number, number] {
    const n = s.width * s.height;
    const stride = s.stride ?? 1;
    const offset = s.offset ?? 0;
    if (!this.auto) {
      if (s.vector) return [0, this.manual[1]];
      const t = this.log ? logTransform : (v: number) => v;
      return [t(this.manual[0]), t(this.manual[1])];
    }
    // percentiles of a sample of at most ~64k valid pixels
    const step = Math.max(1, Math.floor(n / 65536));
    const sample = new Float64Array(Math.ceil(n / step));
    let m = 0;
    const vals = s.values;
    for (let i = 0; i < n; i += step) {
      if (s.valid && s.valid[i] === 0) continue;
      const k = i * stride + offset;
      const v = s.vector ? Math.hypot(vals[k]!, vals[k + 1]!) : this.log ? logTransform(vals[k]!) : vals[k]!;
      if (Number.isFinite(v)) sample[m++] = v;
    }
    if (m === 0) return [0, 1];
    const sorted = sample.subarray(0, m).sort();
    const q = (f: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(f * (sorted.length - 1))))]!;
    if (s.vector) return [0, q(this.autoRange[1])];
    let lo = q(this.autoRange[0]);
    let hi = q(this.autoRange[1]);
    if (!(hi > lo)) {
      lo = sorted[0]!;
      hi = sorted[sorted.length - 1]!;
    }
    if (DIVERGING.has(this.cmap) && !this.log) {
      // signed data (strain): 0 stays the centre colour
      const half = Math.max(Math.abs(lo), Math.abs(hi));
      return half > 0 ? [-half, half] : [-1, 1];
    }
    return [lo, hi];
  }

  /** Map the data to colours into `image`. */
  private paint(s: ImageSource): void {
    const { width, height } = s;
    if (this.image.width !== width || this.image.height !== height || !this.imageData) {
      this.image.width = width;
      this.image.height = height;
      this.imageData = new ImageData(width, height);
    }
    const [lo, hi] = this.computeRange(s);
    const px = this.imageData.data;
    const n = width * height;
    const stride = s.stride ?? 1;
    const offset = s.offset ?? 0;
    const valid = s.valid ?? null;
    if (s.vector) {
      for (let i = 0; i < n; i++) {
        const k = i * stride + offset;
        const [r, g, b] = wheelColour(s.values[k]!, s.values[k + 1]!, hi);
        px[i * 4] = r;
        px[i * 4 + 1] = g;
        px[i * 4 + 2] = b;
        px[i * 4 + 3] = valid && valid[i] === 0 ? 0 : 255;
      }
    } else {
      this.paintScalars(s, lo, hi, new Uint32Array(px.buffer, px.byteOffset, n));
    }
    this.image.getContext('2d')!.putImageData(this.imageData, 0, 0);
    this.info = { width, height, lo, hi, log: this.log, cmap: this.cmap, vector: !!s.vector, renders: ++this.renders };
    if (this.auto) {
      const back = (t: number) => (this.log && !s.vector ? Math.expm1(t) : t);
      if (document.activeElement !== this.loInput) this.loInput.value = fmtValue(back(lo));
      if (document.activeElement !== this.hiInput) this.hiInput.value = fmtValue(back(hi));
    }
  }

  /** The hot loop: one packed RGBA word per pixel from a 256-entry table. */
  private paintScalars(s: ImageSource, lo: number, hi: number, out: Uint32Array): void {
    const table = packedLut(this.cmap);
    const n = out.length;
    const stride = s.stride ?? 1;
    const offset = s.offset ?? 0;
    const valid = s.valid ?? null;
    const vals = s.values;
    const inv = hi > lo ? 256 / (hi - lo) : 0;
    if (!this.log) {
      for (let i = 0, k = offset; i < n; i++, k += stride) {
        const v = vals[k]!;
        let j = (v - lo) * inv;
        j = j < 0 ? 0 : j > 255 ? 255 : j | 0;
        out[i] = v !== v || (valid !== null && valid[i] === 0) ? 0 : table[j]!;
      }
      return;
    }
    // log scale without a logarithm per pixel: colour j starts at value th[j] = expm1(lo + j / inv),
    // found by an 8-step binary search (th is monotonic; about twice as fast as Math.log1p)
    const th = new Float64Array(257);
    for (let j = 0; j < 257; j++) th[j] = j === 0 ? -Infinity : j === 256 ? Infinity : inv > 0 ? Math.expm1(lo + j / inv) : Infinity;
    for (let i = 0, k = offset; i < n; i++, k += stride) {
      const v = vals[k]!;
      let j = v >= th[128]! ? 128 : 0;
      if (v >= th[j + 64]!) j += 64;
      if (v >= th[j + 32]!) j += 32;
      if (v >= th[j + 16]!) j += 16;
      if (v >= th[j + 8]!) j += 8;
      if (v >= th[j + 4]!) j += 4;
      if (v >= th[j + 2]!) j += 2;
      if (v >= th[j + 1]!) j += 1;
      out[i] = v !== v || (valid !== null && valid[i] === 0) ? 0 : table[j]!;
    }
  }

  render(): void {
    const s = this.source;
    if (s && this.dataDirty) {
      // a big image that takes long to map waits a little between repaints (zoom and pan
      // redraw at once regardless), so it never takes over the page's frames
      const wait = this.lastPaint + this.paintCost * 3 - performance.now();
      if (this.paintCost > SLOW_PAINT_MS && wait > 0) {
        if (!this.repaintTimer) {
          this.repaintTimer = setTimeout(() => {
            this.repaintTimer = null;
            this.request();
          }, wait);
        }
      } else {
        const t0 = performance.now();
        this.paint(s);
        this.lastPaint = performance.now();
        this.paintCost = this.lastPaint - t0;
        this.dataDirty = false;
      }
    }
    if (this.fitted) this.applyFit();
    const ctx = this.canvas.getContext('2d')!;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (!s) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    // smooth when shrinking the big signal image, sharp pixels when zoomed in
    ctx.imageSmoothingEnabled = this.scale < 1;
    // the scan's extent shows before it is filled in
    ctx.fillStyle = '#1c212b';
    ctx.fillRect(-this.ox * this.scale, -this.oy * this.scale, s.width * this.scale, s.height * this.scale);
    ctx.drawImage(this.image, -this.ox * this.scale, -this.oy * this.scale, s.width * this.scale, s.height * this.scale);
    for (const o of this.overlays) o.draw(ctx, this);
  }
}
