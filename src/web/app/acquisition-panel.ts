/**
 * The acquisition panel: scan shape, the UDFs to run (from GET /api/udfs) with a form built
 * from each UDF's JSON schema (numbers, booleans, enums as inputs; anything else as JSON),
 * single or continuous, record on/off; start (define + start), stop, abort.
 */
import type { AcquisitionRequest, AcquisitionSummary, UdfDescription, UdfRequest } from '../../merger/acquisition-schema.js';
import { fill, h } from './dom.js';

type Schema = Record<string, unknown> & { type?: string | string[]; properties?: Record<string, Schema>; enum?: unknown[]; default?: unknown };

export interface AcquisitionPanelOptions {
  start(request: AcquisitionRequest | null, current: AcquisitionSummary | null): Promise<void>;
  stop(id: string): Promise<void>;
  abort(id: string): Promise<void>;
  /** switch the recording of a defined or running acquisition on or off */
  setRecording(id: string, enabled: boolean): Promise<void>;
  /** default parameters for a UDF (e.g. detector masks sized to the frame) */
  defaults(name: string): Record<string, unknown> | undefined;
}

/** UDFs checked when the page opens: the live view's standard set. */
const DEFAULT_UDFS = /^(SumUDF|SumSigUDF|ApplyMasksUDF|CoMUDF)$/;

interface UdfRow {
  udf: UdfDescription;
  enabled: HTMLInputElement;
  read(): Record<string, unknown>;
  /** set one parameter's field; false if the form has no such field */
  write(key: string, value: unknown): boolean;
  body: HTMLElement;
}

function typesOf(s: Schema): string[] {
  return s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
}

export class AcquisitionPanel {
  readonly root: HTMLElement;
  private readonly scanH: HTMLInputElement;
  private readonly scanW: HTMLInputElement;
  private readonly continuous: HTMLInputElement;
  private readonly record: HTMLInputElement;
  private readonly recordPath: HTMLInputElement;
  private readonly chunk: HTMLInputElement;
  private readonly udfList: HTMLElement;
  private readonly buttons: { start: HTMLButtonElement; stop: HTMLButtonElement; abort: HTMLButtonElement };
  private readonly message: HTMLElement;
  private readonly stateLine: HTMLElement;
  private readonly recordLine: HTMLElement;
  private readonly recordToggle: HTMLButtonElement;
  private rows: UdfRow[] = [];
  private current: AcquisitionSummary | null = null;
  private adopted = false;

  constructor(private readonly options: AcquisitionPanelOptions) {
    const num = (id: string, value: number, title: string) => h('input', { type: 'number', id, min: 1, step: 1, value: String(value), title, class: 'dim' });
    this.scanH = num('scan-h', 64, 'scan rows');
    this.scanW = num('scan-w', 64, 'scan columns');
    this.chunk = h('input', { type: 'number', id: 'chunk', min: 1, step: 1, placeholder: 'one row', title: 'frames per partial result', class: 'dim' });
    this.continuous = h('input', { type: 'checkbox', id: 'continuous' });
    this.record = h('input', { type: 'checkbox', id: 'record', onchange: () => (this.recordPath.disabled = !this.record.checked) });
    this.recordPath = h('input', { type: 'text', id: 'record-path', placeholder: 'default path', disabled: true });
    this.udfList = h('div', { class: 'udf-list' }, h('p', { class: 'muted' }, 'loading UDFs…'));
    const action = (name: 'start' | 'stop' | 'abort', label: string) => h('button', { type: 'button', id: `btn-${name}`, class: `action ${name}`, onclick: () => void this.run(name) }, label);
    this.buttons = { start: action('start', 'Start'), stop: action('stop', 'Stop'), abort: action('abort', 'Abort') };
    this.message = h('div', { class: 'message', id: 'acq-message' });
    this.stateLine = h('div', { class: 'state-line', id: 'acq-state' }, 'no acquisition');
    this.recordToggle = h('button', { type: 'button', id: 'btn-record', class: 'small', onclick: () => void this.toggleRecording() }, 'record');
    this.recordLine = h('div', { class: 'record-line muted', id: 'record-state' });
    this.root = h(
      'section',
      { class: 'panel acquisition' },
      h('h2', {}, 'Acquisition'),
      this.stateLine,
      h('div', { class: 'row record-row' }, this.recordToggle, this.recordLine),
      h('div', { class: 'row' }, h('label', { for: 'scan-h' }, 'scan'), this.scanH, '×', this.scanW, h('label', { for: 'chunk' }, 'chunk'), this.chunk),
      h(
        'div',
        { class: 'row' },
        h('label', {}, this.continuous, 'continuous'),
        h('label', {}, this.record, 'record'),
        this.recordPath,
      ),
      h('h3', {}, 'UDFs'),
      this.udfList,
      h('div', { class: 'row buttons' }, this.buttons.start, this.buttons.stop, this.buttons.abort),
      this.message,
    );
    this.setCurrent(null);
  }

  setUdfs(udfs: UdfDescription[]): void {
    this.rows = udfs.map((u) => this.udfRow(u));
    fill(this.udfList, ...this.rows.map((r) => r.body));
  }

  private udfRow(udf: UdfDescription): UdfRow {
    const schema = udf.params as Schema;
    const defaults = this.options.defaults(udf.name) ?? {};
    const readers: Array<(out: Record<string, unknown>) => void> = [];
    const writers = new Map<string, (value: unknown) => void>();
    const fields: HTMLElement[] = [];
    for (const [key, prop] of Object.entries(schema.properties ?? {})) {
      const types = typesOf(prop);
      const initial = defaults[key] ?? prop.default;
      const nullable = types.includes('null');
      if (prop.enum) {
        const select = h('select', { name: key }, h('option', { value: '' }, '(default)'), ...prop.enum.map((v) => h('option', { value: JSON.stringify(v), selected: JSON.stringify(v) === JSON.stringify(initial) }, String(v))));
        readers.push((out) => void (select.value !== '' && (out[key] = JSON.parse(select.value))));
        writers.set(key, (value) => (select.value = value === undefined ? '' : JSON.stringify(value)));
        fields.push(h('label', { title: key }, key, select));
      } else if (types.includes('boolean') && types.length === 1) {
        const box = h('input', { type: 'checkbox', name: key, checked: initial === true });
        writers.set(key, (value) => (box.checked = value === true));
        readers.push((out) => {
          if (box.checked || initial !== undefined) out[key] = box.checked;
        });
        fields.push(h('label', { title: key }, box, key));
      } else if (types.some((t) => t === 'number' || t === 'integer') && types.every((t) => t === 'number' || t === 'integer' || t === 'null')) {
        const input = h('input', { type: 'number', name: key, step: types.includes('integer') ? 1 : 'any', placeholder: nullable ? 'auto' : 'default', value: initial === undefined || initial === null ? '' : String(initial) });
        readers.push((out) => void (input.value !== '' && (out[key] = Number(input.value))));
        writers.set(key, (value) => (input.value = typeof value === 'number' ? String(value) : ''));
        fields.push(h('label', { title: key }, key, input));
      } else {
        const area = h('textarea', { name: key, rows: 3, spellcheck: false }, initial === undefined ? '' : JSON.stringify(initial));
        readers.push((out) => {
          if (area.value.trim() === '') return;
          try {
            out[key] = JSON.parse(area.value);
          } catch {
            throw new Error(`${udf.name}.${key}: not valid JSON`);
          }
        });
        writers.set(key, (value) => (area.value = JSON.stringify(value)));
        fields.push(h('label', { class: 'json', title: `${key} (JSON)` }, key, area));
      }
    }
    const enabled = h('input', { type: 'checkbox', class: 'udf-enabled', 'data-udf': udf.name, checked: DEFAULT_UDFS.test(udf.name) });
    const params = h('div', { class: 'udf-params' }, ...fields);
    const body = h('div', { class: 'udf', 'data-udf': udf.name }, h('label', { class: 'udf-name', title: udf.description }, enabled, udf.name, h('span', { class: 'muted' }, ` ${udf.description}`)), params);
    const toggle = () => body.classList.toggle('off', !enabled.checked);
    enabled.addEventListener('change', toggle);
    toggle();
    return {
      udf,
      enabled,
      body,
      write: (key, value) => {
        const w = writers.get(key);
        if (w) w(value);
        return !!w;
      },
      read: () => {
        const out: Record<string, unknown> = {};
        for (const r of readers) r(out);
        return out;
      },
    };
  }

  /**
   * Fill the form from a running acquisition (scan, mode, UDFs and their parameters), so that
   * "Start new" starts the same again unless the user changes something. Once per page.
   */
  adopt(summary: AcquisitionSummary): void {
    if (this.adopted || this.rows.length === 0) return;
    this.adopted = true;
    this.scanH.value = String(summary.scanShape[0]);
    this.scanW.value = String(summary.scanShape[1]);
    this.continuous.checked = summary.mode === 'continuous';
    this.chunk.value = summary.chunkSize === summary.scanShape[1] ? '' : String(summary.chunkSize);
    for (const row of this.rows) {
      const u = summary.udfs.find((x) => x.name === row.udf.name);
      row.enabled.checked = !!u;
      row.body.classList.toggle('off', !u);
      if (u) for (const [k, v] of Object.entries(u.params)) row.write(k, v);
    }
  }

  /** Put a value into a UDF's JSON parameter field (and check the UDF). */
  setParam(udfName: string, key: string, value: unknown): boolean {
    const row = this.rows.find((r) => r.udf.name === udfName);
    if (!row || !row.write(key, value)) return false;
    row.enabled.checked = true;
    row.body.classList.remove('off');
    return true;
  }

  /** The request the form describes (throws with a readable message on bad JSON). */
  request(): AcquisitionRequest {
    const udfs: UdfRequest[] = this.rows.filter((r) => r.enabled.checked).map((r) => ({ name: r.udf.name, params: r.read() }));
    const req: AcquisitionRequest = {
      scanShape: [Number(this.scanH.value), Number(this.scanW.value)],
      udfs,
      mode: this.continuous.checked ? 'continuous' : 'single',
      record: this.record.checked,
    };
    if (this.record.checked && this.recordPath.value.trim()) req.recordPath = this.recordPath.value.trim();
    if (this.chunk.value !== '') req.chunkSize = Number(this.chunk.value);
    return req;
  }

  setCurrent(summary: AcquisitionSummary | null): void {
    this.current = summary;
    const state = summary?.state ?? null;
    const live = state === 'running' || state === 'stopping';
    this.buttons.start.disabled = live;
    this.buttons.start.textContent = state === 'defined' ? 'Start' : 'Start new';
    this.buttons.stop.disabled = state !== 'running';
    this.buttons.abort.disabled = !(state === 'defined' || live);
    this.showRecording(summary);
    if (!summary) {
      this.stateLine.textContent = 'no acquisition';
      this.stateLine.dataset.state = 'none';
      return;
    }
    this.stateLine.dataset.state = summary.state;
    // the merger's own lag: what the page shows is that old when it came (a second is normal)
    const lagMs = summary.mergeLagMs ?? 0;
    fill(
      this.stateLine,
      h('span', { class: `badge ${summary.state}` }, summary.state),
      ` ${summary.id} · ${summary.scanShape.join(' × ')} · ${summary.mode}${summary.mode === 'continuous' ? `, epoch ${summary.epoch}` : ''}`,
      lagMs > 1000
        ? h(
            'span',
            { class: 'merge-lag', id: 'merge-lag', title: `the newest merged results were sent by the receivers this long before the merger merged them: the merger is short of CPU or partial results queue up. Each chunk costs the merger a sum of every signal-sized result, so fewer, larger chunks (the "chunk" field, frames per partial result) help` },
            ` · merging ${(lagMs / 1000).toFixed(1)} s behind the detector (chunks of ${summary.chunkSize} frames: a larger chunk helps)`,
          )
        : null,
      summary.message ? h('div', { class: 'muted' }, summary.message) : null,
    );
  }

  /** The recording's state (the merger's recorder: path, size, how far the writer lags) and the on/off button. */
  private showRecording(summary: AcquisitionSummary | null): void {
    const live = summary?.state === 'defined' || summary?.state === 'running';
    const r = summary?.record;
    const on = !!r?.enabled && r.state !== 'closed' && r.state !== 'failed';
    this.recordToggle.disabled = !live;
    this.recordToggle.textContent = on ? 'stop recording' : 'record';
    this.recordToggle.classList.toggle('on', on);
    this.recordLine.dataset.state = r?.state ?? (r?.enabled ? 'recording' : 'off');
    if (!summary || !r) {
      this.recordLine.textContent = '';
      return;
    }
    const mb = r.bytes !== undefined ? ` · ${(r.bytes / 1e6).toFixed(1)} MB` : '';
    const lag = r.lagMs !== undefined && r.lagMs > 1000 ? ` · ${(r.lagMs / 1000).toFixed(1)} s behind` : '';
    const state = r.state ?? (r.enabled ? 'recording' : 'off');
    this.recordLine.textContent =
      state === 'off' && !r.path ? 'not recording' : `${state}${r.path ? ` ${r.path}` : ''}${mb}${lag}${r.error ? ` · ${r.error.code}: ${r.error.message}` : ''}`;
    this.recordLine.classList.toggle('error', state === 'failed');
  }

  private async toggleRecording(): Promise<void> {
    const cur = this.current;
    if (!cur) return;
    const on = !!cur.record.enabled && cur.record.state !== 'closed' && cur.record.state !== 'failed';
    try {
      await this.options.setRecording(cur.id, !on);
      this.showMessage(on ? 'recording stopped' : 'recording');
    } catch (err) {
      this.showMessage((err as Error).message, true);
    }
  }

  showMessage(text: string, error = false): void {
    this.message.textContent = text;
    this.message.classList.toggle('error', error);
  }

  private async run(action: 'start' | 'stop' | 'abort'): Promise<void> {
    const cur = this.current;
    try {
      if (action === 'start') {
        const reuse = cur?.state === 'defined';
        await this.options.start(reuse ? null : this.request(), reuse ? cur : null);
        this.showMessage('started');
      } else if (cur) {
        await this.options[action](cur.id);
        this.showMessage(action === 'stop' ? 'stopping after the frames in flight' : 'aborted');
      }
    } catch (err) {
      this.showMessage((err as Error).message, true);
    }
  }
}
