/**
 * The run's vital signs: progress (frames, frames/s, ETA), the 8 sectors (state, datagram
 * rate, loss, damage) and the shuffle of the whole-frame UDFs (state, workers), a time plot of the datagram rate and loss (uPlot), and the history of
 * epochs in continuous mode.
 */
import uPlot from 'uplot';
import type { ShuffleState } from '../../merger/acquisition-schema.js';
import type { Progress, SectorStatus } from '../../protocol/ws-messages.js';
import { fill, fmt, fmtDuration, h } from './dom.js';

const PLOT_SAMPLES = 600;

/** 12,500 -> 12.5k: axis labels that fit. */
const compact = (v: number): string => (Math.abs(v) >= 1e6 ? `${+(v / 1e6).toFixed(1)}M` : Math.abs(v) >= 1e3 ? `${+(v / 1e3).toFixed(1)}k` : String(v));
const SAMPLE_EVERY_MS = 500;

export class ProgressBar {
  readonly root: HTMLElement;
  private readonly bar: HTMLElement;
  private readonly text: HTMLElement;

  constructor() {
    this.bar = h('div', { class: 'progress-fill' });
    this.text = h('div', { class: 'progress-text', id: 'progress-text' }, 'idle');
    this.root = h('div', { class: 'progress', id: 'progress' }, this.bar, this.text);
  }

  set(p: Progress | null, epoch: number | null, continuous: boolean): void {
    if (!p) {
      this.bar.style.width = '0';
      this.text.textContent = 'idle';
      return;
    }
    const frac = p.framesTotal ? Math.min(1, p.framesMerged / p.framesTotal) : 0;
    this.bar.style.width = `${(frac * 100).toFixed(2)}%`;
    this.text.textContent =
      `${fmt(p.framesMerged)}${p.framesTotal ? ` / ${fmt(p.framesTotal)}` : ''} frames` +
      (p.framesTotal ? ` (${(frac * 100).toFixed(1)} %)` : '') +
      ` · ${fmt(p.framesPerSecond, 1)} frames/s · ETA ${fmtDuration(p.etaSeconds)}` +
      (continuous && epoch !== null ? ` · epoch ${epoch}` : '');
  }
}

export class SectorTable {
  readonly root: HTMLElement;
  /** the shuffle's state, below the sectors */
  readonly shuffle = new ShuffleLine();
  private readonly body: HTMLElement;

  constructor() {
    this.body = h('tbody');
    this.root = h(
      'section',
      { class: 'panel sectors' },
      h('h2', {}, 'Sectors'),
      h(
        'table',
        { id: 'sectors' },
        h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'state'), h('th', {}, 'datagrams/s'), h('th', {}, 'lost'), h('th', {}, 'damaged'))),
        this.body,
      ),
      this.shuffle.root,
    );
    this.set([]);
  }

  set(sectors: SectorStatus[]): void {
    const rows = sectors.length > 0 ? sectors : Array.from({ length: 8 }, (_, i) => ({ sector: i, state: 'unknown' }) as SectorStatus);
    fill(
      this.body,
      ...rows.map((s) =>
        h(
          'tr',
          { 'data-state': s.state, title: s.datagrams === undefined ? '' : `datagrams ${fmt(s.datagrams)}, duplicates ${fmt(s.duplicates)}, late ${fmt(s.late)}, corrupt ${fmt(s.corrupt)}` },
          h('td', {}, s.sector),
          h('td', {}, h('span', { class: `dot ${s.state}` }), s.state),
          h('td', { class: 'num' }, fmt(s.datagramsPerSecond)),
          h('td', { class: 'num' }, fmt(s.lost)),
          h('td', { class: 'num' }, fmt(s.damagedFrames)),
        ),
      ),
    );
  }
}

/** What the shuffle line says, and whether it is bad news (no whole frames reach a worker). */
export function describeShuffle(s: ShuffleState): { text: string; bad: boolean; title: string } {
  // what became of frames: skipped for want of a free worker, lost with a worker that went
  const skipped = s.framesSkipped > 0 ? `, ${fmt(s.framesSkipped)} frames skipped` : '';
  const lost = (s.framesLostInWorkers ?? 0) > 0 ? `, ${fmt(s.framesLostInWorkers)} lost with a worker` : '';
  const frames = skipped + lost;
  const restarts = s.restarts > 0 ? `, restarted ${fmt(s.restarts)}×` : '';
  const title =
    `the shuffle service of the whole-frame UDFs (pid ${s.pid ?? '–'}), from /api/status: ` +
    `${s.restarts} restarts, ${s.framesSkipped} frames skipped (no worker free), ${s.framesLostInWorkers ?? 0} frames lost with a worker that went (taken, never answered) as its last status said`;
  if (s.state === 'missing') {
    return { text: `shuffle missing ${fmtDuration((s.silentMs ?? 0) / 1000)}${frames}${restarts}`, bad: true, title };
  }
  if (s.workers === 0) return { text: `shuffle: up, no worker${frames}${restarts}`, bad: true, title };
  return { text: `shuffle: up, ${fmt(s.workers)} worker${s.workers === 1 ? '' : 's'}${frames}${restarts}`, bad: false, title };
}

/**
 * The shuffle's state under the sector table, from the status poll: hidden where no shuffle
 * ever answered (`absent`: not deployed), red while it is missing or has no worker.
 */
export class ShuffleLine {
  readonly root: HTMLElement;
  private readonly text: HTMLElement;
  private readonly dot: HTMLElement;

  constructor() {
    this.dot = h('span', { class: 'dot' });
    this.text = h('span', { class: 'shuffle-text' });
    this.root = h('div', { class: 'shuffle-line', id: 'shuffle-status', hidden: true }, this.dot, this.text);
  }

  set(s: ShuffleState | null | undefined): void {
    if (!s || s.state === 'absent') {
      this.root.hidden = true;
      this.root.removeAttribute('data-state');
      return;
    }
    const d = describeShuffle(s);
    this.root.hidden = false;
    this.root.dataset.state = s.state === 'up' && s.workers === 0 ? 'no-worker' : s.state;
    this.root.dataset.workers = String(s.workers);
    this.root.classList.toggle('bad', d.bad);
    this.root.title = d.title;
    this.dot.className = `dot ${d.bad ? 'missing' : 'alive'}`;
    this.text.textContent = d.text;
  }
}

/** Datagrams/s (all sectors) and blocks lost/s over time. */
export class RatePlot {
  readonly root: HTMLElement;
  private plot: uPlot | null = null;
  private readonly t: number[] = [];
  private readonly rate: number[] = [];
  private readonly loss: number[] = [];
  private last: { t: number; lost: number } | null = null;
  private readonly holder: HTMLElement;

  constructor() {
    this.holder = h('div', { class: 'plot-holder' });
    this.root = h('section', { class: 'panel rates' }, h('h2', {}, 'Datagram rate and loss'), this.holder);
    new ResizeObserver(() => this.resize()).observe(this.holder);
  }

  /** A sector status sample (rate-limited here: the stream may send up to 60 a second). */
  add(sectors: SectorStatus[], now = Date.now()): void {
    if (sectors.length === 0) return;
    if (this.last && now - this.last.t < SAMPLE_EVERY_MS) return;
    const lost = sectors.reduce((a, s) => a + s.lost, 0);
    const rate = sectors.reduce((a, s) => a + s.datagramsPerSecond, 0);
    const lossRate = this.last && lost >= this.last.lost ? ((lost - this.last.lost) * 1000) / (now - this.last.t) : 0;
    this.last = { t: now, lost };
    this.t.push(now / 1000);
    this.rate.push(rate);
    this.loss.push(lossRate);
    if (this.t.length > PLOT_SAMPLES) for (const a of [this.t, this.rate, this.loss]) a.shift();
    this.ensurePlot();
    this.plot?.setData([this.t, this.rate, this.loss]);
  }

  private size(): { width: number; height: number } {
    return { width: Math.max(200, this.holder.clientWidth), height: 160 };
  }

  private ensurePlot(): void {
    if (this.plot || this.holder.clientWidth === 0) return;
    this.plot = new uPlot(
      {
        ...this.size(),
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        scales: { rate: { auto: true, range: (_u, _min, max) => [0, Math.max(1, max)] }, loss: { auto: true, range: (_u, _min, max) => [0, Math.max(1, max)] } },
        axes: [
          { stroke: '#aab', grid: { stroke: '#2a2f3a' } },
          { scale: 'rate', stroke: '#4fc3f7', grid: { stroke: '#2a2f3a' }, size: 50, values: (_u, ticks) => ticks.map(compact) },
          { scale: 'loss', side: 1, stroke: '#ff6b6b', grid: { show: false }, size: 50 },
        ],
        series: [
          {},
          { label: 'datagrams/s', scale: 'rate', stroke: '#4fc3f7', width: 1.5, value: (_u, v) => fmt(v) },
          { label: 'lost blocks/s', scale: 'loss', stroke: '#ff6b6b', width: 1.5, value: (_u, v) => fmt(v, 1) },
        ],
      },
      [this.t, this.rate, this.loss],
      this.holder,
    );
  }

  private resize(): void {
    this.ensurePlot();
    this.plot?.setSize(this.size());
  }
}

export interface EpochRecord {
  acquisition: string;
  epoch: number;
  framesMerged: number;
  framesTotal: number | null;
  /** as seen by the page (it may have joined late or skipped updates) */
  seconds: number;
  /** the merger's rate at the last update the page saw */
  framesPerSecond: number | null;
  damagedPositions: number;
  /** a small picture of the first navigation map */
  thumbnail: string | null;
}

export class EpochHistory {
  readonly root: HTMLElement;
  readonly records: EpochRecord[] = [];
  private readonly list: HTMLElement;

  constructor(private readonly keep = 12) {
    this.list = h('ol', { class: 'epochs', id: 'epochs', reversed: true });
    this.root = h('section', { class: 'panel history' }, h('h2', {}, 'Epochs'), this.list);
    this.render();
  }

  add(record: EpochRecord): void {
    this.records.unshift(record);
    this.records.length = Math.min(this.records.length, this.keep);
    this.render();
  }

  private render(): void {
    if (this.records.length === 0) {
      fill(this.list, h('li', { class: 'muted' }, 'Finished epochs of a continuous scan appear here.'));
      return;
    }
    fill(
      this.list,
      ...this.records.map((r) =>
        h(
          'li',
          {},
          r.thumbnail ? h('img', { src: r.thumbnail, alt: `epoch ${r.epoch}` }) : null,
          h(
            'span',
            {},
            `${r.acquisition} epoch ${r.epoch}: ${fmt(r.framesMerged)}${r.framesTotal ? `/${fmt(r.framesTotal)}` : ''} frames in ${fmtDuration(r.seconds)}` +
              (r.framesPerSecond !== null ? `, ${fmt(r.framesPerSecond, 1)} frames/s` : '') +
              `, ${fmt(r.damagedPositions)} damaged`,
          ),
        ),
      ),
    );
  }
}
