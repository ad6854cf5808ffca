/**
 * Virtual detectors: the disk and ring masks of the acquisition's ApplyMasks UDFs, drawn on
 * the signal image, created by dragging (centre, then radius), moved by dragging inside,
 * resized by dragging an edge, edited as numbers in the side panel. Every finished gesture
 * sends the UDF's new masks with PATCH /api/acquisitions/:id/udfs/:udfId (latest wins: while
 * one request is in flight, only the newest geometry waits); the reply says from which frame
 * the new masks apply.
 */
import type { UdfInstance, UdfParamsChange } from '../../merger/acquisition-schema.js';
import { fill, fmt, h } from './dom.js';
import type { ImageOverlay, ImagePoint, ImageView } from './image-view.js';

export type DiskMask = { type: 'disk'; cy: number; cx: number; r: number };
export type RingMask = { type: 'ring'; cy: number; cx: number; ri: number; ro: number };
/** other mask types (point, rectangle, dense, sparse) are kept as they are, not drawn */
export type Mask = DiskMask | RingMask | ({ type: string } & Record<string, unknown>);

export const DETECTOR_COLOURS = ['#ff6b6b', '#4fc3f7', '#ffd54f', '#81c784', '#ce93d8', '#ff8a65', '#4db6ac', '#f06292'];

export const isApplyMasks = (name: string): boolean => /applymasks/i.test(name);

const round1 = (v: number) => Math.round(v * 10) / 10;
const editable = (m: Mask): m is DiskMask | RingMask => m.type === 'disk' || m.type === 'ring';
const outer = (m: DiskMask | RingMask) => (m.type === 'disk' ? m.r : m.ro);

type Part = 'move' | 'outer' | 'inner' | 'create';

interface Drag {
  udf: string;
  index: number;
  part: Part;
  start: ImagePoint;
  orig: DiskMask | RingMask;
}

export interface DetectorLogEntry {
  udf: string;
  masks: Mask[];
  appliesFromFrame: number | null;
  error: string | null;
}

export interface DetectorEditorOptions {
  /** send new params; resolves with the API's reply */
  patch(acquisition: string, udfId: string, params: Record<string, unknown>): Promise<UdfParamsChange>;
  /** called after every reply (for the page's message line) */
  onResult?(entry: DetectorLogEntry): void;
  /** the merger refused these masks for UDF `udf` (they were reverted on the image) */
  onRejected?(udf: string, masks: Mask[]): void;
}

export class DetectorEditor implements ImageOverlay {
  readonly panel: HTMLElement;
  mode: 'pan' | 'disk' | 'ring' = 'pan';
  acquisition: string | null = null;
  /** ApplyMasks UDFs of the acquisition, with the masks as last confirmed or being edited */
  targets: UdfInstance[] = [];
  active: string | null = null;
  readonly log: DetectorLogEntry[] = [];
  /** per UDF, the masks the merger last accepted (what a refused change reverts to) */
  private readonly confirmed = new Map<string, Mask[]>();
  private drag: Drag | null = null;
  private readonly inFlight = new Set<string>();
  private readonly waiting = new Map<string, Mask[]>();
  private view: ImageView | null = null;
  private readonly list: HTMLElement;
  private readonly modeButtons: Record<'pan' | 'disk' | 'ring', HTMLButtonElement>;
  private readonly status: HTMLElement;

  constructor(private readonly options: DetectorEditorOptions) {
    const modeButton = (mode: 'pan' | 'disk' | 'ring', label: string, title: string) =>
      h('button', { type: 'button', class: 'mode', title, 'data-mode': mode, onclick: () => this.setMode(mode) }, label);
    this.modeButtons = {
      pan: modeButton('pan', 'pan / move', 'drag to pan; drag a detector to move it, its edge to resize it'),
      disk: modeButton('disk', '+ disk', 'drag on the signal image: centre, then radius'),
      ring: modeButton('ring', '+ ring', 'drag on the signal image: centre, then outer radius'),
    };
    this.list = h('div', { class: 'detector-list' });
    this.status = h('div', { class: 'detector-status muted' });
    this.panel = h('section', { class: 'panel detectors' }, h('h2', {}, 'Virtual detectors'), h('div', { class: 'modes' }, ...Object.values(this.modeButtons)), this.list, this.status);
    this.setMode('pan');
  }

  attach(view: ImageView): void {
    this.view = view;
    view.overlays.push(this);
  }

  setMode(mode: 'pan' | 'disk' | 'ring'): void {
    this.mode = mode;
    for (const [m, b] of Object.entries(this.modeButtons)) b.classList.toggle('on', m === mode);
  }

  /** The acquisition's UDFs changed (status poll, new acquisition). */
  setAcquisition(acquisition: string | null, udfs: UdfInstance[]): void {
    const changedAcq = acquisition !== this.acquisition;
    this.acquisition = acquisition;
    const next = udfs.filter((u) => isApplyMasks(u.name)).map((u) => ({ ...u, params: { ...u.params } }));
    if (!changedAcq) {
      // keep local geometry of UDFs being edited or waiting for their reply
      for (const t of next) {
        const mine = this.targets.find((o) => o.id === t.id);
        if (mine && (this.drag?.udf === t.id || this.inFlight.has(t.id) || this.waiting.has(t.id))) t.params = mine.params;
      }
    } else this.drag = null;
    const before = JSON.stringify(this.targets);
    if (changedAcq) this.confirmed.clear();
    for (const u of udfs) if (isApplyMasks(u.name) && !this.inFlight.has(u.id) && !this.waiting.has(u.id)) this.confirmed.set(u.id, (u.params.masks ?? []) as Mask[]);
    this.targets = next;
    if (!this.active || !next.some((t) => t.id === this.active)) this.active = next[0]?.id ?? null;
    if (changedAcq || before !== JSON.stringify(next)) {
      this.renderList();
      this.view?.request();
    }
  }

  masksOf(udf: string): Mask[] {
    return ((this.targets.find((t) => t.id === udf)?.params.masks ?? []) as Mask[]);
  }

  /** Colour of mask `index` of UDF `udf` (the same as its map's). */
  colourOf(udf: string, index: number): string {
    let n = 0;
    for (const t of this.targets) {
      if (t.id === udf) return DETECTOR_COLOURS[(n + index) % DETECTOR_COLOURS.length]!;
      n += this.masksOf(t.id).length;
    }
    return '#fff';
  }

  // -------------------------------------------------------------------------------------------
  // overlay

  draw(ctx: CanvasRenderingContext2D, view: ImageView): void {
    for (const t of this.targets) {
      this.masksOf(t.id).forEach((m, i) => {
        if (!editable(m)) return;
        const c = view.toScreen(m.cx + 0.5, m.cy + 0.5);
        ctx.save();
        ctx.strokeStyle = this.colourOf(t.id, i);
        ctx.lineWidth = t.id === this.active ? 2 : 1.25;
        ctx.setLineDash(this.inFlight.has(t.id) || this.waiting.has(t.id) ? [5, 4] : []);
        ctx.beginPath();
        ctx.arc(c.x, c.y, Math.max(0.5, outer(m) * view.scale), 0, 2 * Math.PI);
        if (m.type === 'ring') {
          ctx.moveTo(c.x + m.ri * view.scale, c.y);
          ctx.arc(c.x, c.y, Math.max(0.5, m.ri * view.scale), 0, 2 * Math.PI);
        }
        ctx.stroke();
        ctx.fillStyle = ctx.strokeStyle;
        ctx.fillRect(c.x - 2, c.y - 2, 4, 4);
        ctx.font = '11px system-ui, sans-serif';
        ctx.fillText(`${t.id}[${i}]`, c.x + outer(m) * view.scale * 0.72 + 3, c.y - outer(m) * view.scale * 0.72 - 3);
        ctx.restore();
      });
    }
  }

  /**
   * What a press at p grabs: an edge (resize), the centre handle (move), or, in pan mode, the
   * inside of a disk (move). Ring interiors are not grabbed: a wide dark-field ring covers
   * most of the frame, and new detectors must be drawable inside it.
   */
  private hit(p: ImagePoint, view: ImageView): { udf: string; index: number; part: Part } | null {
    const tol = 6 / view.scale;
    const handle = 8 / view.scale;
    let best: { udf: string; index: number; part: Part; score: number } | null = null;
    const consider = (udf: string, index: number, part: Part, score: number) => {
      if (!best || score < best.score) best = { udf, index, part, score };
    };
    for (const t of this.targets) {
      this.masksOf(t.id).forEach((m, index) => {
        if (!editable(m)) return;
        const d = Math.hypot(p.x - (m.cx + 0.5), p.y - (m.cy + 0.5));
        if (Math.abs(d - outer(m)) <= tol) consider(t.id, index, 'outer', Math.abs(d - outer(m)));
        if (m.type === 'ring' && Math.abs(d - m.ri) <= tol) consider(t.id, index, 'inner', Math.abs(d - m.ri));
        if (d <= handle) consider(t.id, index, 'move', d);
        else if (this.mode === 'pan' && m.type === 'disk' && d < m.r - tol) consider(t.id, index, 'move', tol + d);
      });
    }
    return best;
  }

  cursorAt(p: ImagePoint, view: ImageView): string | null {
    const hit = this.hit(p, view);
    if (hit) return hit.part === 'move' ? 'move' : 'ew-resize';
    return this.mode === 'pan' ? 'grab' : 'crosshair';
  }

  pointerDown(p: ImagePoint, _ev: PointerEvent, view: ImageView): boolean {
    if (!this.acquisition) return false;
    const hit = this.hit(p, view);
    if (hit) {
      this.active = hit.udf;
      this.drag = { ...hit, start: p, orig: { ...(this.masksOf(hit.udf)[hit.index] as DiskMask | RingMask) } };
      return true;
    }
    if (this.mode === 'pan') return false;
    if (!this.active) {
      this.status.textContent = 'The acquisition has no ApplyMasks UDF: add one to draw detectors.';
      return false;
    }
    const cy = round1(p.y - 0.5);
    const cx = round1(p.x - 0.5);
    const mask: DiskMask | RingMask = this.mode === 'disk' ? { type: 'disk', cy, cx, r: 0 } : { type: 'ring', cy, cx, ri: 0, ro: 0 };
    const masks = [...this.masksOf(this.active), mask];
    this.setMasks(this.active, masks);
    this.drag = { udf: this.active, index: masks.length - 1, part: 'create', start: p, orig: { ...mask } };
    return true;
  }

  pointerMove(p: ImagePoint): void {
    const d = this.drag;
    if (!d) return;
    const o = d.orig;
    const dist = round1(Math.hypot(p.x - (o.cx + 0.5), p.y - (o.cy + 0.5)));
    let m: DiskMask | RingMask;
    if (d.part === 'move') {
      m = { ...o, cx: round1(o.cx + p.x - d.start.x), cy: round1(o.cy + p.y - d.start.y) };
    } else if (d.part === 'inner' && o.type === 'ring') {
      m = { ...o, ri: Math.min(dist, Math.max(0, o.ro - 0.1)) };
    } else if (o.type === 'ring') {
      // a new ring's inner radius follows at half the outer one
      m = d.part === 'create' ? { ...o, ro: dist, ri: round1(dist / 2) } : { ...o, ro: Math.max(dist, o.ri + 0.1) };
    } else {
      m = { ...o, r: dist };
    }
    const masks = [...this.masksOf(d.udf)];
    masks[d.index] = m;
    this.setMasks(d.udf, masks);
    this.view?.request();
  }

  pointerUp(): void {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    const masks = [...this.masksOf(d.udf)];
    const m = masks[d.index] as DiskMask | RingMask;
    if (d.part === 'create' && outer(m) < 1) {
      // a click, not a drag: no detector
      masks.splice(d.index, 1);
      this.setMasks(d.udf, masks);
      return;
    }
    void this.commit(d.udf);
  }

  private setMasks(udf: string, masks: Mask[]): void {
    const t = this.targets.find((x) => x.id === udf);
    if (t) t.params = { ...t.params, masks };
    this.renderList();
  }

  /** Send the UDF's current masks (latest wins while a request is in flight). */
  async commit(udf: string): Promise<void> {
    const masks = this.masksOf(udf);
    if (this.inFlight.has(udf)) {
      this.waiting.set(udf, masks);
      return;
    }
    const acquisition = this.acquisition;
    const t = this.targets.find((x) => x.id === udf);
    if (!acquisition || !t) return;
    this.inFlight.add(udf);
    this.view?.request();
    let entry: DetectorLogEntry;
    try {
      const reply = await this.options.patch(acquisition, udf, { ...t.params, masks });
      entry = { udf, masks, appliesFromFrame: reply.appliesFromFrame, error: null };
      this.confirmed.set(udf, masks);
    } catch (err) {
      entry = { udf, masks, appliesFromFrame: null, error: (err as Error).message };
    }
    this.inFlight.delete(udf);
    if (entry.error && !this.waiting.has(udf)) {
      // refused (e.g. a merger that cannot change the number of masks mid-acquisition):
      // show what runs, and offer the new set for the next acquisition
      const confirmed = this.confirmed.get(udf);
      if (confirmed) this.setMasks(udf, confirmed);
      this.options.onRejected?.(udf, masks);
    }
    this.log.push(entry);
    this.status.textContent = entry.error
      ? `${udf}: ${entry.error}`
      : `${udf}: ${masks.length} detector${masks.length === 1 ? '' : 's'}, applied from frame ${fmt(entry.appliesFromFrame)}`;
    this.status.classList.toggle('error', !!entry.error);
    this.options.onResult?.(entry);
    const next = this.waiting.get(udf);
    this.waiting.delete(udf);
    if (next) {
      this.setMasks(udf, next);
      await this.commit(udf);
    }
    this.view?.request();
  }

  // -------------------------------------------------------------------------------------------
  // side panel

  private renderList(): void {
    if (this.targets.length === 0) {
      fill(this.list, h('p', { class: 'muted' }, this.acquisition ? 'No ApplyMasks UDF in this acquisition.' : 'No acquisition.'));
      return;
    }
    fill(
      this.list,
      ...this.targets.map((t) =>
        h(
          'div',
          { class: 'detector-udf' },
          h(
            'label',
            { class: 'detector-target', title: 'new detectors go to this UDF' },
            h('input', { type: 'radio', name: 'detector-target', checked: t.id === this.active, onchange: () => ((this.active = t.id), this.view?.request()) }),
            t.id,
          ),
          ...this.masksOf(t.id).map((m, i) => this.maskRow(t.id, m, i)),
        ),
      ),
    );
  }

  private maskRow(udf: string, m: Mask, index: number): HTMLElement {
    const swatch = h('span', { class: 'swatch', style: `background:${this.colourOf(udf, index)}` });
    const remove = h('button', {
      type: 'button',
      class: 'small',
      title: 'remove this detector',
      onclick: () => {
        const masks = this.masksOf(udf).filter((_, i) => i !== index);
        if (masks.length === 0) {
          this.status.textContent = 'ApplyMasks needs at least one mask.';
          return;
        }
        this.setMasks(udf, masks);
        void this.commit(udf);
      },
    }, '×');
    if (!editable(m)) return h('div', { class: 'mask-row' }, swatch, `${index}: ${m.type}`, remove);
    const fields: Array<keyof DiskMask | keyof RingMask> = m.type === 'disk' ? ['cy', 'cx', 'r'] : ['cy', 'cx', 'ri', 'ro'];
    return h(
      'div',
      { class: 'mask-row' },
      swatch,
      h('span', { class: 'mask-type' }, `${index}: ${m.type}`),
      ...fields.map((f) =>
        h(
          'label',
          {},
          f,
          h('input', {
            type: 'number',
            step: 'any',
            value: String((m as Record<string, unknown>)[f]),
            onchange: (ev: Event) => {
              const v = Number((ev.target as HTMLInputElement).value);
              if (!Number.isFinite(v)) return;
              const masks = [...this.masksOf(udf)];
              masks[index] = { ...m, [f]: v } as Mask;
              this.setMasks(udf, masks);
              void this.commit(udf);
            },
          }),
        ),
      ),
      remove,
    );
  }
}
