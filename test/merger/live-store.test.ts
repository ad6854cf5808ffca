/**
 * The live store on its own: the changed nav ranges of a diff against a brute-force scan of
 * per-position versions, versions and filters, progress rates, argument errors, the registry.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LiveStore, LiveStoreRegistry } from '../../src/merger/live-store.js';
import { DAMAGE_UDF } from '../../src/protocol/ws-messages.js';

const rangesOf = (store: LiveStore, since: number, key: string) =>
  store.diffSince(since).buffers.find((b) => b.key === key)?.ranges.map((r) => [r.start, r.end] as [number, number]) ?? [];

describe('LiveStore', () => {
  it('a diff covers exactly the positions changed since a version (brute-force reference)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3000 }),
        fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 1, max: 400 })), { minLength: 1, maxLength: 60 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (navSize, writes, sinceAt) => {
          const store = new LiveStore({ acquisition: 'a', scanShape: [navSize] });
          store.defineBuffer({ udfId: 'u', name: 'x', kind: 'nav', dtype: 'float64', shape: [navSize, 2] });
          // reference: the version of the last write of each position, kept by hand
          const versionOf = new Array<number>(navSize).fill(0);
          const versions: number[] = [store.version];
          let counter = 0;
          for (const [where, length] of writes) {
            const start = Math.floor(where * navSize) % navSize;
            const end = Math.min(navSize, start + length);
            const values = Float64Array.from({ length: (end - start) * 2 }, () => ++counter);
            store.updateNavRange('u', 'x', start, end, values);
            versionOf.fill(store.version, start, end);
            versions.push(store.version);
          }
          const since = versions[Math.floor(sinceAt * (versions.length - 1))]!;
          const changed = versionOf.map((v) => v > since);
          const ranges = rangesOf(store, since, 'u/x').map(([s, e]) => [s / 2, e / 2] as [number, number]);
          const covered = new Array<boolean>(navSize).fill(false);
          let last = -1;
          for (const [s, e] of ranges) {
            expect(s).toBeGreaterThan(last); // sorted, disjoint, non-adjacent
            expect(e).toBeLessThanOrEqual(navSize);
            expect(changed[s] && changed[e - 1]).toBe(true); // each range starts and ends on a change
            covered.fill(true, s, e);
            last = e;
          }
          expect(ranges.length).toBeLessThanOrEqual(16);
          for (let i = 0; i < navSize; i++) if (changed[i]) expect(covered[i]).toBe(true);
          // the data sent is the buffer's current data over each range
          const update = store.diffSince(since).buffers.find((b) => b.key === 'u/x');
          const data = store.getBuffer('u', 'x').data as Float64Array;
          for (const r of update?.ranges ?? []) {
            expect(Array.from(new Float64Array(r.data.slice().buffer))).toEqual(Array.from(data.subarray(r.start, r.end)));
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('row-by-row filling: each diff is the rows written since', () => {
    const store = new LiveStore({ acquisition: 'a', scanShape: [256, 256] });
    store.defineBuffer({ udfId: 'vd', name: 'i', kind: 'nav', dtype: 'float32', shape: [256, 256] });
    const row = new Float32Array(256);
    let seen = store.version;
    for (let r = 0; r < 256; r += 3) {
      for (let k = r; k < Math.min(256, r + 3); k++) store.updateNavRange('vd', 'i', k * 256, (k + 1) * 256, row.fill(k));
      expect(rangesOf(store, seen, 'vd/i')).toEqual([[r * 256, Math.min(256, r + 3) * 256]]);
      seen = store.version;
    }
    expect(rangesOf(store, 0, 'vd/i')).toEqual([[0, 65536]]);
  });

  it('every change bumps the version by one; a diff from the current version is empty', () => {
    const store = new LiveStore({ acquisition: 'a', scanShape: [2, 3] });
    const v0 = store.version;
    store.defineBuffer({ udfId: 's', name: 'img', kind: 'sig', dtype: 'uint32', shape: [4] });
    store.setSig('s', 'img', [1, 2, 3, 4]);
    store.setDamage(0, 6, 8, 0);
    store.setProgress({ framesMerged: 6, framesTotal: 6 });
    store.setSectorStatus(2, { state: 'alive' });
    store.setState('done');
    store.setInfo({ note: 'x' });
    expect(store.version).toBe(v0 + 7);
    const empty = store.diffSince(store.version);
    expect(empty).toEqual({ acquisition: 'a', epoch: 0, from: store.version, version: store.version, buffers: [] });
    const last = store.diffSince(store.version - 1);
    expect(last.info).toEqual({ note: 'x', scanShape: [2, 3] });
    expect(last.state).toBeUndefined();
    expect(store.diffSince(v0).layout?.map((d) => d.key)).toEqual([`${DAMAGE_UDF}/sectorsComplete`, `${DAMAGE_UDF}/blocksMissing`, 's/img']);
  });

  it('a re-declared buffer is sent whole again (layout + what was written since), a removed one leaves the layout', () => {
    const store = new LiveStore({ acquisition: 'a', scanShape: [4] });
    store.defineBuffer({ udfId: 'm', name: 'i', kind: 'nav', dtype: 'int32', shape: [4, 2] });
    store.updateNavRange('m', 'i', 0, 4, [1, 2, 3, 4, 5, 6, 7, 8]);
    const seen = store.version;
    store.defineBuffer({ udfId: 'm', name: 'i', kind: 'nav', dtype: 'int32', shape: [4, 3] });
    store.updateNavRange('m', 'i', 1, 2, [9, 9, 9]);
    const diff = store.diffSince(seen);
    expect(diff.layout?.find((d) => d.key === 'm/i')).toMatchObject({ shape: [4, 3], definedAt: seen + 1 });
    expect(diff.buffers.map((b) => [b.key, b.ranges.map((r) => [r.start, r.end])])).toEqual([['m/i', [[3, 6]]]]);
    store.removeBuffer('m', 'i');
    expect(store.diffSince(seen).layout?.map((d) => d.key)).not.toContain('m/i');
  });

  it('filters by UDF id or buffer key', () => {
    const store = new LiveStore({ acquisition: 'a', scanShape: [2] });
    store.defineBuffer({ udfId: 'a', name: 'x', kind: 'single', dtype: 'float32', shape: [1] });
    store.defineBuffer({ udfId: 'a', name: 'y', kind: 'single', dtype: 'float32', shape: [1] });
    store.defineBuffer({ udfId: 'b', name: 'x', kind: 'single', dtype: 'float32', shape: [1] });
    for (const [u, n] of [['a', 'x'], ['a', 'y'], ['b', 'x']] as const) store.setSingle(u, n, [1]);
    const keys = (filter: string[]) => store.diffSince(0, { filter: new Set(filter) }).buffers.map((b) => b.key);
    expect(keys(['a'])).toEqual(['a/x', 'a/y']);
    expect(keys(['b/x', 'a/y'])).toEqual(['a/y', 'b/x']);
    expect(store.diffSince(0, { filter: new Set(['a/x']) }).layout?.map((d) => d.key)).toEqual(['a/x']);
  });

  it('progress: frames/s over the last second and the ETA from it, with an injected clock', () => {
    let now = 0;
    const store = new LiveStore({ acquisition: 'a', scanShape: [10, 100], now: () => now });
    store.setProgress({ framesMerged: 0, framesTotal: 1000 });
    now = 500;
    store.setProgress({ framesMerged: 150 });
    expect(store.getProgress()).toEqual({ framesMerged: 150, framesTotal: 1000, framesPerSecond: 0, etaSeconds: null });
    now = 1000;
    store.setProgress({ framesMerged: 400 });
    expect(store.getProgress()).toEqual({ framesMerged: 400, framesTotal: 1000, framesPerSecond: 400, etaSeconds: 1.5 });
    now = 2000;
    store.setProgress({ framesMerged: 600, framesPerSecond: 123, etaSeconds: 7 });
    expect(store.getProgress()).toMatchObject({ framesPerSecond: 123, etaSeconds: 7 });
  });

  it('rejects bad arguments with codes', () => {
    const store = new LiveStore({ acquisition: 'a', scanShape: [4, 4] });
    store.defineBuffer({ udfId: 'v', name: 'i', kind: 'nav', dtype: 'float32', shape: [4, 4] });
    store.defineBuffer({ udfId: 's', name: 'i', kind: 'sig', dtype: 'float32', shape: [3] });
    const code = (f: () => void) => {
      try {
        f();
      } catch (err) {
        return (err as { code: string }).code;
      }
      return 'no error';
    };
    expect(code(() => store.updateNavRange('v', 'i', 0, 2, [1]))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.updateNavRange('v', 'i', 15, 17, [1, 2]))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.updateNavRange('v', 'i', 3, 2, []))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.updateNavRange('nope', 'i', 0, 1, [1]))).toBe('TESSERA_ERR_NOT_FOUND');
    expect(code(() => store.updateNavRange('s', 'i', 0, 1, [1]))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.setSig('v', 'i', new Float32Array(16)))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.setSig('s', 'i', [1, 2]))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.defineBuffer({ udfId: 'w', name: 'i', kind: 'nav', dtype: 'float32', shape: [4, 5] }))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.defineBuffer({ udfId: 'w', name: 'i', kind: 'sig', dtype: 'float16' as 'float32', shape: [4] }))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.setDamage(0, 4, [1, 2], 0))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => store.setSectorStatus(8, { state: 'alive' }))).toBe('TESSERA_ERR_BAD_ARGUMENT');
    expect(code(() => new LiveStore({ acquisition: 'a', scanShape: [0, 4] }))).toBe('TESSERA_ERR_BAD_ARGUMENT');
  });
});

describe('LiveStoreRegistry', () => {
  it('keeps the latest epochs and acquisitions, knows the current one, notifies on any change', () => {
    const registry = new LiveStoreRegistry({ keepEpochs: 2, keepAcquisitions: 2 });
    let notified = 0;
    registry.onChange(() => notified++);
    const a0 = registry.create({ acquisition: 'a', epoch: 0, scanShape: [2] });
    registry.create({ acquisition: 'a', epoch: 1, scanShape: [2] });
    expect(registry.get('current')?.epoch).toBe(1);
    expect(registry.get('a', 0)).toBe(a0);
    registry.create({ acquisition: 'a', epoch: 2, scanShape: [2] });
    expect(registry.epochs('a')).toEqual([1, 2]);
    expect(registry.get('a', 0)).toBeUndefined();
    // a dropped store no longer notifies
    const before = notified;
    a0.setState('running');
    expect(notified).toBe(before);
    registry.get('a')!.setState('running');
    expect(notified).toBe(before + 1);

    registry.create({ acquisition: 'b', scanShape: [2] });
    expect(registry.current).toBe('b');
    registry.create({ acquisition: 'c', scanShape: [2] }, false);
    expect(registry.current).toBe('b');
    expect(registry.has('a')).toBe(false); // the oldest non-current one made room
    expect(registry.has('c')).toBe(true);
    registry.setCurrent('c');
    expect(registry.get('current')?.acquisition).toBe('c');
    registry.remove('c');
    expect(registry.current).toBeNull();
    expect(registry.get('current')).toBeUndefined();
    expect(() => registry.setCurrent('zzz')).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_NOT_FOUND' }));
  });
});
