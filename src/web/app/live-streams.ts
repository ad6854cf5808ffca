/**
 * The page's two subscriptions to the current acquisition, on two WebSockets:
 *
 * - `maps`: everything but signal-space images (navigation maps, the damage map, state,
 *   progress, sectors): small updates, at the server's full rate;
 * - `images`: the signal-space images only (a 1860 x 2048 float64 sum is 30 MB an update).
 *
 * Only the images are paced (StreamPacer): both streams share the page's one thread, so a
 * backlog of either (the small map updates queue behind a big image being decoded) lowers the
 * image rate, while the maps keep the full rate: a page that cannot take the images at full
 * rate gets them less often, and its maps stay live. The split needs the buffer keys, which a filter names:
 * `maps` first subscribes to everything, and on that snapshot narrows itself to the non-image
 * keys and points `images` at the image keys; when another acquisition becomes current, it
 * widens again to learn the new layout.
 */
import { TesseraClient, type AppliedUpdate, type LiveMirror } from '../../client/tessera-client.js';
import { StreamPacer } from './stream-pacer.js';

export interface LiveStreamsHandlers {
  onMaps(u: AppliedUpdate): void;
  onImages(u: AppliedUpdate): void;
  /** the images' paced rate changed (or was first set) */
  onRates(images: number, max: number): void;
  onClose(): void;
}

export class LiveStreams {
  readonly maps: TesseraClient;
  readonly images: TesseraClient;
  /** acquisition the current split was made for, or null while `maps` takes everything */
  private splitFor: string | null = null;
  private mapsKeys: string[] | null = null;
  private imageKeys: string[] = [];
  private pacer: StreamPacer | null = null;
  private maxRate = 60;
  private closed = false;
  /** replay (`tessera replay`): the time this page shows, ms since the recording's start ('end'), or null to follow the server's */
  private at: number | 'end' | null = null;

  constructor(
    url: string,
    token: string | null,
    private readonly handlers: LiveStreamsHandlers,
  ) {
    this.maps = new TesseraClient({ url, token });
    this.images = new TesseraClient({ url, token });
  }

  /** Connect both; rejects if either cannot. */
  async connect(): Promise<void> {
    await Promise.all([this.maps.connect(), this.images.connect()]);
    const max = this.maps.hello?.maxRate ?? 60;
    this.maxRate = max;
    this.pacer = new StreamPacer(this.images, max, () => this.subscribeImages(), () => this.rates());
    this.maps.on('update', (u) => {
      this.pacer!.observe(u);
      this.onMapsUpdate(u);
    });
    this.images.on('update', (u) => this.handlers.onImages(u));
    for (const c of [this.maps, this.images]) {
      c.on('error', (e) => console.warn('stream:', e.message));
      c.on('close', () => this.close());
    }
    this.rates();
    this.subscribeMaps();
  }

  get imagesRate(): number {
    return this.pacer?.rate ?? this.maxRate;
  }

  private rates(): void {
    this.handlers.onRates(this.imagesRate, this.maxRate);
  }

  /** `current`, pinned to the replay time this page chose (docs/protocol.md, "Replay": `@t=`). */
  private get acquisition(): string {
    return this.at === null ? 'current' : `current@t=${this.at === 'end' ? 'end' : Math.round(this.at)}`;
  }

  /**
   * Replay only: show the recording at time `t` (ms since its start, 'end', or null to follow
   * the server's time). Both streams subscribe again and get a snapshot of that time.
   */
  setTime(t: number | 'end' | null): void {
    this.at = t;
    this.subscribeMaps();
    this.subscribeImages();
  }

  get time(): number | 'end' | null {
    return this.at;
  }

  private subscribeMaps(): void {
    this.maps.subscribe({ acquisition: this.acquisition, ...(this.mapsKeys ? { buffers: this.mapsKeys } : {}) });
  }

  private subscribeImages(): void {
    if (this.imageKeys.length > 0) this.images.subscribe({ acquisition: this.acquisition, maxRate: this.imagesRate, buffers: this.imageKeys });
  }

  private onMapsUpdate(u: AppliedUpdate): void {
    if (u.snapshot) {
      const m = this.maps.mirror;
      if (this.mapsKeys !== null && m.acquisition !== this.splitFor) {
        // another acquisition: take everything again to learn its buffers
        this.mapsKeys = null;
        this.splitFor = null;
        this.imageKeys = [];
        this.images.unsubscribe();
        this.subscribeMaps();
      } else if (this.mapsKeys === null && m.acquisition !== this.splitFor) {
        this.split(m);
      }
    }
    this.handlers.onMaps(u);
  }

  private split(m: LiveMirror): void {
    this.splitFor = m.acquisition;
    const all = [...m.buffers.values()];
    const images = all.filter((b) => b.kind === 'sig').map((b) => b.key);
    if (images.length === 0) return;
    this.mapsKeys = all.filter((b) => b.kind !== 'sig').map((b) => b.key);
    this.imageKeys = images;
    this.subscribeMaps();
    this.subscribeImages();
  }

  /** The mirror that holds image `key` of the maps' acquisition (images', or maps' before the split). */
  imageMirror(): LiveMirror {
    const i = this.images.mirror;
    return this.mapsKeys !== null && i.acquisition === this.maps.mirror.acquisition ? i : this.maps.mirror;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pacer?.stop();
    void this.maps.close();
    void this.images.close();
    this.handlers.onClose();
  }
}
