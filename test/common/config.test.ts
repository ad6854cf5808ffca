import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, validateConfig } from '../../src/config.js';

function tempConfig(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-config-'));
  const path = join(dir, 'config.json');
  writeFileSync(path, content);
  return path;
}

describe('config', () => {
  it('loads and validates the default config', () => {
    const config = loadConfig();
    expect(config.detector.sectors).toBe(8);
    expect(config.detector.udp.basePort).toBe(2001);
  });

  it('overlays a partial file on the defaults', () => {
    const config = loadConfig(tempConfig(JSON.stringify({ merger: { http: { port: 9999 } } })));
    expect(config.merger.http.port).toBe(9999);
    expect(config.merger.http.host).toBe('127.0.0.1');
  });

  it.each([
    [{ receiver: { tilez: 1 } }, 'receiver.tilez', 'unknown key'],
    [{ detector: { udp: { basePort: 70000 } } }, 'detector.udp.basePort', 'must be <= 65535'],
    [{ merger: { results: 'http://x' } }, 'merger.results', 'must match pattern'],
  ])('names the bad key in %j', (override, key, why) => {
    expect(() => loadConfig(tempConfig(JSON.stringify(override)))).toThrow(
      expect.objectContaining({ code: 'TESSERA_ERR_BAD_CONFIG', message: expect.stringContaining(`"${key}"`) }),
    );
    expect(() => loadConfig(tempConfig(JSON.stringify(override)))).toThrow(why);
  });

  it('reports a missing key, a missing file and unparsable JSON', () => {
    expect(() => validateConfig({})).toThrow(/key "detector": missing key/);
    expect(() => loadConfig('/nonexistent/tessera.json')).toThrow(
      expect.objectContaining({ code: 'TESSERA_ERR_CONFIG_NOT_FOUND' }),
    );
    expect(() => loadConfig(tempConfig('{ not json'))).toThrow(expect.objectContaining({ code: 'TESSERA_ERR_BAD_CONFIG' }));
  });
});
