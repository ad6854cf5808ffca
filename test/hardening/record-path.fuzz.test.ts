/**
 * Recording paths under fuzzing (src/merger/record-path.ts): requested paths built from `..`,
 * `.`, empty segments, absolute prefixes, a symbolic link inside the data directory that leads
 * out of it, one that stays inside, a data directory that is itself reached through a link,
 * and odd characters. `recordingPath` either refuses with TESSERA_ERR_RECORD_PATH or returns a
 * path whose file, once really written, lies inside the data directory's real location
 * (checked with realpath on the written file: the independent reference).
 */
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, sep } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { TesseraError } from '../../src/errors.js';
import { recordingPath } from '../../src/merger/record-path.js';

const root = mkdtempSync(join(tmpdir(), 'tessera-record-path-'));
const realData = join(root, 'real-data');
const outside = join(root, 'outside');
const dataLink = join(root, 'data'); // the configured dataDir is a link to real-data
mkdirSync(join(realData, 'sub'), { recursive: true });
mkdirSync(outside);
symlinkSync(realData, dataLink);
symlinkSync(outside, join(realData, 'escape')); // leads out
symlinkSync(join(realData, 'sub'), join(realData, 'inner')); // stays in
symlinkSync(join(outside, 'file.h5'), join(realData, 'dangling.h5')); // a dangling link to a file outside
const REAL_DATA = realpathSync(realData);

afterAll(() => rmSync(root, { recursive: true, force: true }));

const segment = fc.constantFrom('..', '.', '', 'a', 'b.h5', 'sub', 'inner', 'escape', 'dangling.h5', 'real-data', 'data', 'outside', '..%2f', 'x\\y', ' ', '\u00e9');
const requested = fc.oneof(
  fc.array(segment, { minLength: 1, maxLength: 6 }).map((s) => s.join('/')),
  fc.tuple(fc.constantFrom(dataLink, realData, outside, root, '/', '/etc'), fc.array(segment, { maxLength: 4 })).map(([base, s]) => [base, ...s].join('/')),
  fc.string({ minLength: 1, maxLength: 30 }),
);

function insideRealData(file: string): boolean {
  const real = realpathSync(file);
  return real.startsWith(REAL_DATA + sep);
}

describe('recording paths under fuzzing', () => {
  it('every accepted path, once written, is inside the real data directory; the rest is TESSERA_ERR_RECORD_PATH', () => {
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(requested, (req) => {
        let path: string;
        try {
          path = recordingPath(dataLink, 'acq-1', req);
        } catch (err) {
          if (!(err instanceof TesseraError) || err.code !== 'TESSERA_ERR_RECORD_PATH') throw new Error(`not RECORD_PATH: ${String(err)}`);
          refused++;
          return;
        }
        // what the recorder would do: create the parents and write the file
        let written = true;
        try {
          mkdirSync(dirname(path), { recursive: true });
          writeFileSync(path, 'x', { flag: 'a' });
        } catch {
          written = false; // e.g. a file where a directory would have to be: the recorder reports it
        }
        if (written) {
          accepted++;
          expect(insideRealData(path), `${JSON.stringify(req)} -> ${path} -> ${realpathSync(path)}`).toBe(true);
        }
      }),
      { numRuns: 1500 },
    );
    expect(accepted).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(50);
  });

  it('named cases', () => {
    const refuse = (req: string) => expect(() => recordingPath(dataLink, 'a', req), req).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_RECORD_PATH' }));
    for (const r of ['../x.h5', 'sub/../../x.h5', 'escape/x.h5', 'escape/deeper/x.h5', join(outside, 'x.h5'), '/etc/passwd', '.', 'sub/..', 'dangling.h5']) refuse(r);
    expect(recordingPath(dataLink, 'a', 'inner/x.h5')).toBe(join(dataLink, 'inner', 'x.h5'));
    expect(recordingPath(dataLink, 'a', join(dataLink, 'sub', 'y.h5'))).toBe(join(dataLink, 'sub', 'y.h5'));
    expect(recordingPath(dataLink, 'acq-7', null)).toBe(join(dataLink, 'acq-7.h5'));
  });
});
