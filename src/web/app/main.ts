/**
 * Tessera's browser live view. Two WebSocket subscriptions to the merger's current
 * acquisition (maps and status; signal images: live-streams.ts) keep LiveMirrors
 * (src/client/tessera-client.ts); every update only marks the page dirty, and one render per
 * animation frame draws the newest state (latest wins). The
 * HTTP API defines, starts, stops and aborts acquisitions and moves virtual detectors.
 */
import type { AcquisitionSummary, MergerStatus } from '../../merger/acquisition-schema.js';
import { LiveMirror, TesseraClient, type AppliedUpdate } from '../../client/tessera-client.js';
import { DAMAGE_SECTORS, DAMAGE_UDF } from '../../protocol/ws-messages.js';
import { AcquisitionPanel } from './acquisition-panel.js';
import { DetectorEditor, isApplyMasks, type Mask } from './detectors.js';
import { fill, fmtValue, h } from './dom.js';
import { ImageView, type ImageOverlay, type ImageSource } from './image-view.js';
import { listNavMaps, listPickBuffers, listSigImages, mergedPositions, navMapSource, pickedFrameSource, sigSource, type MapSpec } from './maps.js';
import { schedule } from './scheduler.js';
import { EpochHistory, ProgressBar, RatePlot, SectorTable } from './status-panel.js';
import { LiveStreams } from './live-streams.js';

const K2IS_FRAME: [number, number] = [1860, 2048];
const STATUS_POLL_MS = 1000;

const base = location.origin;
/**
 * A merger on a network address wants a token (control or viewer): open the page as
 * http://host:port/#token=… (the fragment never leaves the browser); kept for this tab.
 */
function readToken(): string | null {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) {
    sessionStorage.setItem('tessera-token', fromHash);
    window.history.replaceState(null, '', location.pathname + location.search);
  }
  return fromHash ?? sessionStorage.getItem('tessera-token');
}
const token = readToken();
// the HTTP half of the client (the streams have their own clients; no socket here)
const api = new TesseraClient({ url: base, WebSocket: class {} as never, token }).api;

/** POST /api/acquisitions/:id/record (not in TesseraClient's api yet). */
async function setRecording(id: string, enabled: boolean): Promise<AcquisitionSummary> {
  const response = await fetch(`${base}/api/acquisitions/${encodeURIComponent(id)}/record`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ enabled }),
  });
  const body = (await response.json().catch(() => ({}))) as Partial<{ code: string; message: string }>;
  if (!response.ok) throw new Error(`${body.code ?? response.status}: ${body.message ?? 'record failed'}`);
  return body as unknown as AcquisitionSummary;
}

/** What to tell the user when the merger refuses us. */
function explain(err: unknown): string {
  const e = err as { code?: string; message?: string };
  if (e.code === 'TESSERA_ERR_UNAUTHORIZED') return 'This merger needs a token: open the page as ' + `${base}/#token=YOUR_TOKEN`;
  return e.message ?? String(err);
}

// ---------------------------------------------------------------------------------------------
// state

let summary: AcquisitionSummary | null = null;
let sigShapeHint: [number, number] = K2IS_FRAME;
let pick: { y: number; x: number } | null = null;
let showAllMaps = false;
const rendered = { version: 0, acquisition: null as string | null, epoch: null as number | null, renders: 0, rate: 0, imagesVersion: 0 };
/** per view: the buffer object and version it last showed */
const shown = new Map<string, { buffer: unknown; version: number; valid: number }>();
let validStamp = 0;
let lastEpochSeen: { acquisition: string; epoch: number; progress: LiveMirror['progress']; since: number; damaged: number } | null = null;

const mirror = (): LiveMirror => streams?.maps.mirror ?? emptyMirror;
const imageMirror = (): LiveMirror => streams?.imageMirror() ?? emptyMirror;
const emptyMirror = new LiveMirror();

// ---------------------------------------------------------------------------------------------
// layout

const connection = h('span', { class: 'connection', id: 'connection' }, 'connecting…');
const progress = new ProgressBar();
const sectors = new SectorTable();
const ratePlot = new RatePlot();
const history = new EpochHistory();

const panel = new AcquisitionPanel({
  start: async (request, current) => {
    const id = current ? current.id : (await api.define(request!)).id;
    summary = await api.start(id);
    panel.setCurrent(summary);
    void pollStatus();
  },
  stop: async (id) => {
    panel.setCurrent(await api.stop(id));
    void pollStatus();
  },
  abort: async (id) => {
    panel.setCurrent(await api.abort(id));
    void pollStatus();
  },
  setRecording: async (id, enabled) => {
    panel.setCurrent(await setRecording(id, enabled));
    void pollStatus();
  },
  defaults: (name) => {
    if (!isApplyMasks(name)) return undefined;
    const [fh, fw] = sigShapeHint;
    const [cy, cx] = [Math.floor(fh / 2), Math.floor(fw / 2)];
    const m = Math.min(fh, fw);
    return {
      masks: [
        { type: 'disk', cy, cx, r: Math.round(m / 16) },
        { type: 'ring', cy, cx, ri: Math.round(m / 8), ro: Math.round(m / 3) },
      ],
    };
  },
});

const detectors = new DetectorEditor({
  patch: (acquisition, udfId, params) => api.updateUdfParams(acquisition, udfId, params),
  onResult: () => void pollStatus(),
  onRejected: (udf, masks) => {
    const name = summary?.udfs.find((u) => u.id === udf)?.name;
    if (name && panel.setParam(name, 'masks', masks)) {
      panel.showMessage(`The merger kept the running detectors of ${udf}; the new set is in the form for the next acquisition (Start new).`);
    }
  },
});

/** The picked scan position, marked on every navigation map. */
const pickMarker: ImageOverlay = {
  draw(ctx, view) {
    if (!pick) return;
    const a = view.toScreen(pick.x, pick.y);
    const s = Math.max(view.scale, 4);
    ctx.save();
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 1.5;
    ctx.strokeRect(a.x - (s - view.scale) / 2, a.y - (s - view.scale) / 2, s, s);
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 0.75;
    ctx.strokeRect(a.x - (s - view.scale) / 2 - 1.5, a.y - (s - view.scale) / 2 - 1.5, s + 3, s + 3);
    ctx.restore();
  },
};

const sigView = new ImageView({ title: 'signal', log: true, className: 'sig-view' });
detectors.attach(sigView);
const sigSelect = h('select', { id: 'sig-select', title: 'signal-space image', onchange: () => ((shown.delete('sig'), render())) });
const pickView = new ImageView({ title: 'picked frame', log: true, className: 'pick-view' });
const pickInfo = h('div', { class: 'pick-info', id: 'pick-info' }, 'Click a scan position on a navigation map.');
const navGrid = h('div', { class: 'nav-grid', id: 'nav-grid' });
const navViews = new Map<string, { view: ImageView; spec: MapSpec }>();
const allMapsBox = h('input', { type: 'checkbox', onchange: () => ((showAllMaps = allMapsBox.checked), render()) });

// ---------------------------------------------------------------------------------------------
// replay (`tessera replay FILE.h5`): a time slider over the recorded stream

interface ReplayTimeline {
  acquisition: string;
  path: string;
  start: number;
  end: number;
  epochs: Array<{ epoch: number; firstMerged: number | null; lastMerged: number | null; complete: boolean; snapshots: number[] }>;
  /** the time the snapshot shows, ms since the start */
  t: number;
}
/** The server's replay time line (from the stream's info), or null when it is a live merger. */
const replayOf = (m: LiveMirror): ReplayTimeline | null => ((m.info as { replay?: ReplayTimeline } | null)?.replay ?? null);
const replaySlider = h('input', { type: 'range', id: 'replay-time', min: '0', max: '0', step: '1', value: '0', oninput: () => scheduleReplayTime() });
const replayLabel = h('span', { class: 'replay-label', id: 'replay-label' });
const replayMarks = h('datalist', { id: 'replay-marks' });
replaySlider.setAttribute('list', 'replay-marks');
const replayBar = h(
  'section',
  { class: 'panel replay', id: 'replay', hidden: true },
  h('h2', {}, 'Replay'),
  replaySlider,
  replayMarks,
  replayLabel,
  h('button', { type: 'button', class: 'small', onclick: () => ((replaySlider.value = replaySlider.max), scheduleReplayTime()) }, 'end'),
);
let replayPending = false;
/** Slider moves are coalesced to one subscription per animation frame (the newest position wins). */
function scheduleReplayTime(): void {
  showReplayLabel(Number(replaySlider.value));
  if (replayPending) return;
  replayPending = true;
  requestAnimationFrame(() => {
    replayPending = false;
    const t = Number(replaySlider.value);
    streams?.setTime(t >= Number(replaySlider.max) ? 'end' : t);
  });
}
function showReplayLabel(t: number): void {
  const span = Number(replaySlider.max);
  replayLabel.textContent = `${(t / 1000).toFixed(1)} s of ${(span / 1000).toFixed(1)} s`;
}
/** Show the slider for a replay server (once its time line is known); the stream's `t` moves it unless the user is dragging. */
function syncReplay(m: LiveMirror): void {
  const r = replayOf(m);
  replayBar.hidden = !r;
  if (!r) return;
  const span = r.end - r.start;
  if (replaySlider.max !== String(span)) {
    replaySlider.max = String(span);
    const marks = r.epochs.flatMap((e) => [e.firstMerged, e.lastMerged, ...e.snapshots]).filter((v): v is number => v !== null);
    fill(replayMarks, ...[...new Set(marks)].map((v) => h('option', { value: String(v) })));
  }
  if (document.activeElement !== replaySlider) {
    replaySlider.value = String(r.t);
    showReplayLabel(r.t);
  }
}

document.body.append(
  h(
    'header',
    {},
    h('h1', {}, 'Tessera'),
    h('span', { class: 'subtitle' }, 'K2 IS live view'),
    progress.root,
    connection,
  ),
  h(
    'div',
    { class: 'layout' },
    h('aside', {}, panel.root, detectors.panel, sectors.root),
    h(
      'main',
      {},
      replayBar,
      h('section', { class: 'panel maps' }, h('div', { class: 'panel-head' }, h('h2', {}, 'Navigation maps'), h('label', { class: 'muted' }, allMapsBox, 'all maps')), navGrid),
      h(
        'div',
        { class: 'sig-row' },
        h('section', { class: 'panel signal' }, h('div', { class: 'panel-head' }, h('h2', {}, 'Signal'), sigSelect), sigView.root),
        h('section', { class: 'panel picked' }, h('h2', {}, 'Picked frame'), pickInfo, pickView.root),
      ),
      h('div', { class: 'bottom-row' }, ratePlot.root, history.root),
    ),
  ),
);

// ---------------------------------------------------------------------------------------------
// rendering (latest wins: everything reads the mirror at render time)

function mapTitle(spec: MapSpec): string {
  const udf = summary?.udfs.find((u) => u.id === spec.udf);
  if (spec.udf === DAMAGE_UDF) return 'damage: sectors complete';
  let title = spec.component === null ? spec.key : `${spec.key}[${spec.component}]`;
  if (udf && isApplyMasks(udf.name) && spec.component !== null) {
    const m = (udf.params.masks as Mask[] | undefined)?.[spec.component];
    if (m) title = `${spec.udf}[${spec.component}] ${m.type}`;
  }
  if (spec.vector) title += ' (colour wheel)';
  return title;
}

function syncNavViews(specs: MapSpec[]): void {
  const wanted = new Set(specs.map((s) => s.id));
  for (const [id, { view }] of navViews) {
    if (!wanted.has(id)) {
      view.root.remove();
      navViews.delete(id);
      shown.delete(id);
    }
  }
  for (const spec of specs) {
    let entry = navViews.get(spec.id);
    if (!entry) {
      const view = new ImageView({ title: mapTitle(spec), onPick: (y, x) => setPick(y, x), className: 'nav-view', ...(spec.diverging ? { cmap: 'rdbu_r' as const } : {}) });
      view.root.dataset.map = spec.id;
      if (spec.diverging) view.root.dataset.diverging = '';
      view.overlays.push(pickMarker);
      entry = { view, spec };
      navViews.set(spec.id, entry);
    }
    entry.spec = spec;
    navGrid.append(entry.view.root); // keeps the order of `specs`
    const udf = summary?.udfs.find((u) => u.id === spec.udf);
    const swatch = udf && isApplyMasks(udf.name) && spec.component !== null ? detectors.colourOf(spec.udf, spec.component) : null;
    entry.view.setTitle(mapTitle(spec));
    entry.view.root.style.setProperty('--accent', swatch ?? 'transparent');
  }
  if (specs.length === 0 && !navGrid.querySelector('.empty')) fill(navGrid, h('p', { class: 'muted empty' }, 'No navigation maps yet: start an acquisition.'));
  else if (specs.length > 0) navGrid.querySelector('.empty')?.remove();
}

function render(): void {
  schedule(renderNow);
}

function renderNow(): void {
  const m = mirror();
  const specs = listNavMaps(m).filter((s) => showAllMaps || !s.secondary);
  syncNavViews(specs);
  const valid = mergedPositions(m);
  const damageVersion = m.get(DAMAGE_UDF, DAMAGE_SECTORS)?.version ?? 0;
  if (damageVersion !== validStamp) validStamp = damageVersion;
  for (const { view, spec } of navViews.values()) {
    const b = m.buffers.get(spec.key);
    const last = shown.get(spec.id);
    if (b && last && last.buffer === b && last.version === b.version && last.valid === validStamp) continue;
    view.setSource(b ? navMapSource(m, spec, valid) : null);
    shown.set(spec.id, { buffer: b, version: b?.version ?? -1, valid: validStamp });
  }

  // signal image (from the images stream once the page has split its subscription)
  const im = imageMirror();
  const sigs = listSigImages(im);
  const keys = sigs.map((b) => b.key);
  if ([...sigSelect.options].map((o) => o.value).join() !== keys.join()) {
    const keep = sigSelect.value;
    fill(sigSelect, ...keys.map((k) => h('option', { value: k, selected: k === keep }, k)));
    if (!keys.includes(keep)) sigSelect.value = keys.find((k) => /^sum/i.test(k) && !/sumsig/i.test(k)) ?? keys[0] ?? '';
  }
  const sig = im.buffers.get(sigSelect.value);
  const lastSig = shown.get('sig');
  if (!sig) {
    if (lastSig) sigView.setSource(null);
    shown.delete('sig');
  } else if (!lastSig || lastSig.buffer !== sig || lastSig.version !== sig.version) {
    sigView.setSource(sigSource(sig));
    sigView.setTitle(sig.key);
    sigShapeHint = [sig.shape[0]!, sig.shape[1]!];
    shown.set('sig', { buffer: sig, version: sig.version, valid: 0 });
  }

  renderPick(m);
  syncReplay(m);
  const continuous = (m.info?.mode ?? summary?.mode) === 'continuous';
  progress.set(m.progress, m.epoch, continuous);
  if (m.sectors.length > 0) sectors.set(m.sectors);
  if (valid) lastDamaged = countDamaged(m, valid);
  rendered.version = m.version;
  rendered.imagesVersion = im.version;
  rendered.acquisition = m.acquisition;
  rendered.epoch = m.epoch;
  rendered.renders++;
}

let lastDamaged = 0;
function countDamaged(m: LiveMirror, valid: Uint8Array): number {
  const complete = m.get(DAMAGE_UDF, DAMAGE_SECTORS)!.data;
  let n = 0;
  for (let i = 0; i < valid.length; i++) if (valid[i] && complete[i]! < 8) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// picking a scan position

/**
 * The frame at a scan position, or null if nothing can supply it. The default looks for a
 * nav buffer holding whole frames (PickUDF, run with a ROI); a pick-frame endpoint (the
 * shuffle's, issue 7) can replace it: `window.tessera.pickFrame = async (acq, index) => …`.
 */
type PickFrameProvider = (acquisition: string, index: number, mirror: LiveMirror) => ImageSource | null | Promise<ImageSource | null>;
let pickFrame: PickFrameProvider = (acq, index, m) => {
  const b = listPickBuffers(m)[0];
  if (b) return pickedFrameSource(b, index);
  // the shuffle assembles it when the acquisition runs whole-frame UDFs (else the merger says 404: no frame source)
  return acq ? shuffleFrame(acq, index) : null;
};

/** the last frame fetched from the shuffle (or its failure): kept until the next click, the mirror changes 10 times a second */
let shuffleFrameCache: { key: string; frame: Promise<ImageSource | null> } | null = null;

/** GET /api/acquisitions/:id/frames/:position: uint16 little-endian rows, shape in x-tessera-shape (docs/protocol.md). */
function shuffleFrame(acquisition: string, index: number): Promise<ImageSource | null> {
  const key = `${acquisition}/${index}`;
  if (shuffleFrameCache?.key === key) return shuffleFrameCache.frame;
  const frame = (async () => {
    const response = await fetch(`${base}/api/acquisitions/${encodeURIComponent(acquisition)}/frames/${index}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (!response.ok) {
      const body = (await response.json().catch(() => ({}))) as Partial<{ code: string; message: string }>;
      lastPickError = response.status === 404 ? null : `${body.code ?? response.status}: ${body.message ?? 'no frame'}`;
      return null;
    }
    const [height, width] = (response.headers.get('x-tessera-shape') ?? '1860,2048').split(',').map(Number) as [number, number];
    lastPickError = null;
    return { width, height, values: new Uint16Array(await response.arrayBuffer()) };
  })().catch((err: unknown) => {
    lastPickError = String((err as Error).message ?? err);
    return null;
  });
  shuffleFrameCache = { key, frame };
  return frame;
}
let lastPickError: string | null = null;
let pickRequest = 0;

function setPick(y: number, x: number): void {
  pick = { y, x };
  shuffleFrameCache = null; // a click asks the shuffle again
  for (const { view } of navViews.values()) view.request();
  shown.delete('pick');
  render();
}

function renderPick(m: LiveMirror): void {
  if (!pick) return;
  const scan = m.info?.scanShape as number[] | undefined;
  if (!scan) return;
  const index = pick.y * scan[1]! + pick.x;
  const values = [...navViews.values()].map(({ view, spec }) => {
    const v = view.valueAt(pick!.y, pick!.x);
    return `${mapTitle(spec)}: ${v === null ? '–' : Array.isArray(v) ? `(${fmtValue(v[0])}, ${fmtValue(v[1])})` : fmtValue(v)}`;
  });
  fill(pickInfo, h('div', {}, h('b', {}, `scan y ${pick.y}, x ${pick.x}`), ` · frame ${index}`), h('div', { class: 'muted values' }, values.join(' · ')));
  const stamp = `${m.acquisition}/${m.epoch}/${index}/${m.version}`;
  if ((shown.get('pick')?.buffer as string | undefined) === stamp) return;
  shown.set('pick', { buffer: stamp, version: 0, valid: 0 });
  const request = ++pickRequest;
  void Promise.resolve(pickFrame(m.acquisition ?? '', index, m)).then((frame) => {
    if (request !== pickRequest) return;
    pickView.setSource(frame);
    pickView.setTitle(frame ? `frame ${index}` : 'no frame source');
    pickView.root.classList.toggle('unavailable', !frame);
    if (!frame) {
      pickInfo.append(h('div', { class: 'muted hook' }, lastPickError ? `The shuffle did not return the frame: ${lastPickError}` : 'Frame picking needs a frame source: a PickUDF with a ROI in the acquisition, or the shuffle service (an acquisition with whole-frame UDFs).'));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// stream and status

function onUpdate(u: AppliedUpdate): void {
  const m = mirror();
  if (u.snapshot) {
    shown.clear();
    if (lastEpochSeen && lastEpochSeen.acquisition === u.acquisition && lastEpochSeen.epoch !== u.epoch) {
      const p = lastEpochSeen.progress;
      history.add({
        acquisition: lastEpochSeen.acquisition,
        epoch: lastEpochSeen.epoch,
        framesMerged: p?.framesMerged ?? 0,
        framesTotal: p?.framesTotal ?? null,
        seconds: (Date.now() - lastEpochSeen.since) / 1000,
        framesPerSecond: p?.framesPerSecond ?? null,
        damagedPositions: lastEpochSeen.damaged,
        thumbnail: thumbnail(),
      });
    }
    if (!lastEpochSeen || lastEpochSeen.acquisition !== u.acquisition || lastEpochSeen.epoch !== u.epoch) {
      lastEpochSeen = { acquisition: u.acquisition, epoch: u.epoch, progress: null, since: Date.now(), damaged: 0 };
    }
    if (u.acquisition !== summary?.id) void pollStatus();
  }
  if (lastEpochSeen) {
    lastEpochSeen.progress = m.progress;
    lastEpochSeen.damaged = lastDamaged;
  }
  if (m.sectors.length > 0) ratePlot.add(m.sectors);
  render();
}

/** The first navigation map as it is drawn now, 64 px wide. */
function thumbnail(): string | null {
  const first = navViews.values().next().value as { view: ImageView } | undefined;
  const img = first?.view.image;
  if (!img || img.width === 0) return null;
  const c = document.createElement('canvas');
  c.width = 64;
  c.height = Math.max(1, Math.round((64 * img.height) / img.width));
  c.getContext('2d')!.drawImage(img, 0, 0, c.width, c.height);
  return c.toDataURL();
}

async function connect(): Promise<void> {
  const s = new LiveStreams(base, token, {
    onMaps: onUpdate,
    onImages: () => render(),
    onRates: (images, max) => {
      connection.textContent = images < max ? `live · images ${images}/s` : 'live';
      connection.title = `signal images per second this page asks for (at most ${max}; maps always at the full rate): lowered while the page falls behind the stream, raised again when it keeps up`;
      rendered.rate = images;
    },
    onClose: () => {
      if (streams !== s) return;
      streams = null;
      void retryUnlessRefused();
    },
  });
  try {
    await s.connect();
  } catch {
    // (close() schedules the retry)
    streams = s;
    s.close();
    return;
  }
  streams = s;
  connection.className = 'connection up';
}
let streams: LiveStreams | null = null;

/**
 * A refused WebSocket upgrade is only a closed socket to a browser (no status): ask the HTTP API
 * why. A 401 means no (or a wrong) token: retrying cannot help, so say so and stop; anything
 * else (the merger restarting) retries every second.
 */
async function retryUnlessRefused(): Promise<void> {
  try {
    await api.status();
  } catch (err) {
    if ((err as { code?: string }).code === 'TESSERA_ERR_UNAUTHORIZED') {
      tokenNeeded = true;
      connection.textContent = token ? 'token refused' : 'token needed';
      connection.className = 'connection down auth';
      connection.title = explain(err);
      panel.showMessage(token ? `This merger refused the token: open the page as ${base}/#token=YOUR_TOKEN` : explain(err), true);
      return;
    }
  }
  connection.textContent = 'disconnected, retrying…';
  connection.className = 'connection down';
  setTimeout(() => void connect(), 1000);
}
/** the merger refused our token (or that we have none): no more retries or polls */
let tokenNeeded = false;

let polling = false;
async function pollStatus(): Promise<void> {
  if (polling || tokenNeeded) return;
  polling = true;
  try {
    const status: MergerStatus = await api.status();
    summary = status.acquisition;
    panel.setCurrent(summary);
    if (summary) panel.adopt(summary);
    detectors.setAcquisition(summary?.id ?? null, summary?.udfs ?? []);
    // the shuffle is only in the status (not in the stream)
    sectors.shuffle.set(status.shuffle);
    if (mirror().sectors.length === 0 && status.sectors.length > 0) {
      sectors.set(status.sectors);
      ratePlot.add(status.sectors);
    }
    for (const { view, spec } of navViews.values()) view.setTitle(mapTitle(spec));
  } catch (err) {
    // no API (a stream-only server) or the merger is away: the stream still shows results
    panel.showMessage(`status: ${explain(err)}`, true);
  } finally {
    polling = false;
  }
}

async function init(): Promise<void> {
  try {
    panel.setUdfs(await api.udfs());
  } catch (err) {
    panel.showMessage(`cannot list UDFs: ${explain(err)}`, true);
  }
  await pollStatus();
  setInterval(() => void pollStatus(), STATUS_POLL_MS);
  await connect();
  render();
}

// what tests (and curious users in the console) can read
Object.assign(window, {
  tessera: {
    get mirror() {
      return mirror();
    },
    get summary() {
      return summary;
    },
    get pick() {
      return pick;
    },
    get streams() {
      return streams;
    },
    get replay() {
      return replayOf(mirror());
    },
    get tokenNeeded() {
      return tokenNeeded;
    },
    set pickFrame(provider: PickFrameProvider) {
      pickFrame = provider;
      shown.delete('pick');
      render();
    },
    rendered,
    navViews,
    sigView,
    pickView,
    detectors,
    history,
    setPick,
  },
});

void init();
