/**
 * Tessera's configuration: one JSON file (config/default.json is the default), validated
 * against a JSON schema so that a typo fails at start-up with the name of the bad key,
 * not hours later in the middle of an experiment.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { TesseraError } from './errors.js';
import { PROJECT_ROOT } from './paths.js';

export interface UdpEndpointConfig {
  host: string;
  basePort: number;
  /** multicast group to join (the camera sends to e.g. 225.1.1.1), or null for unicast */
  multicast: string | null;
  /** local interface address for the multicast join, or null for the default */
  interface: string | null;
}

export interface TesseraConfig {
  detector: { sectors: number; udp: UdpEndpointConfig };
  simulator: {
    fps: number;
    scan: [number, number];
    seed: number;
    framesBeforeScan: number;
    framesAfterScan: number;
    frameIdStart: number;
  };
  receiver: {
    tile: { depth: number; rows: number };
    frameTimeoutMs: number;
    maxFramesInFlight: number;
    recvBufferBytes: number;
    statsIntervalMs: number;
    /** while acquiring, no frame for this long (ms) means the detector stream stopped: the acquisition ends */
    streamIdleMs: number;
    /** after this long (ms) without a block, blocks behind the frames already out are a restarted camera, not stragglers */
    restartSilenceMs: number;
  };
  election: { endpoint: string; timeoutMs: number };
  merger: {
    control: string;
    results: string;
    http: {
      host: string;
      port: number;
      /** bearer token for control actions; required when host is not loopback (src/merger/auth.ts) */
      token?: string | null;
      /** bearer token that allows reading (status, stream, metrics) but no control */
      viewerToken?: string | null;
      /** anyone who reaches the server may read */
      publicRead?: boolean;
    };
    /** after a chunk's first partial, wait this long for the other sectors before zero-filling them */
    chunkTimeoutMs: number;
    /** epochs of a continuous scan merged and served at the same time */
    keepEpochs: number;
    /** the merger hosts the first-frame election coordinator (at election.endpoint) */
    hostElection: boolean;
  };
  shuffle: { slices: string; frames: string };
  udf: { pluginDir: string | null };
  dataDir: string;
  /** recordings of acquisitions (src/merger/recorder.ts): written into dataDir */
  recorder: {
    /** take and write what changed at most this often */
    writeIntervalMs: number;
    /** append a snapshot of the sig and single results of a running epoch this often (the end state is the final dataset) */
    snapshotIntervalMs: number;
  };
}

const port = { type: 'integer', minimum: 0, maximum: 65535 } as const;
const zmqEndpoint = { type: 'string', pattern: '^(tcp|ipc|inproc)://.+' } as const;
const positiveInt = { type: 'integer', minimum: 1 } as const;

function obj(properties: Record<string, unknown>) {
  return { type: 'object', additionalProperties: false, required: Object.keys(properties), properties };
}

export const configSchema = obj({
  detector: obj({
    sectors: { type: 'integer', minimum: 1, maximum: 8 },
    udp: obj({
      host: { type: 'string', minLength: 1 },
      basePort: port,
      multicast: { type: ['string', 'null'] },
      interface: { type: ['string', 'null'] },
    }),
  }),
  simulator: obj({
    fps: { type: 'number', minimum: 0 },
    scan: { type: 'array', items: positiveInt, minItems: 2, maxItems: 2 },
    seed: { type: 'integer' },
    framesBeforeScan: { type: 'integer', minimum: 1 },
    framesAfterScan: { type: 'integer', minimum: 0 },
    frameIdStart: { type: 'integer', minimum: 0, maximum: 0xffffffff },
  }),
  receiver: obj({
    tile: obj({ depth: positiveInt, rows: { enum: [930, 1860, 465, 310, 186, 155, 93, 62, 31, 30, 15, 10, 6, 5, 3, 2, 1] } }),
    frameTimeoutMs: positiveInt,
    maxFramesInFlight: positiveInt,
    recvBufferBytes: positiveInt,
    statsIntervalMs: positiveInt,
    streamIdleMs: positiveInt,
    restartSilenceMs: positiveInt,
  }),
  election: obj({ endpoint: zmqEndpoint, timeoutMs: positiveInt }),
  merger: obj({
    control: zmqEndpoint,
    results: zmqEndpoint,
    http: {
      ...obj({ host: { type: 'string', minLength: 1 }, port }),
      properties: {
        host: { type: 'string', minLength: 1 },
        port,
        token: { type: ['string', 'null'], minLength: 16, maxLength: 4096 },
        viewerToken: { type: ['string', 'null'], minLength: 16, maxLength: 4096 },
        publicRead: { type: 'boolean' },
      },
    },
    chunkTimeoutMs: positiveInt,
    keepEpochs: positiveInt,
    hostElection: { type: 'boolean' },
  }),
  shuffle: obj({ slices: zmqEndpoint, frames: zmqEndpoint }),
  udf: obj({ pluginDir: { type: ['string', 'null'] } }),
  dataDir: { type: 'string', minLength: 1 },
  recorder: obj({ writeIntervalMs: positiveInt, snapshotIntervalMs: positiveInt }),
});

const ajv = new Ajv({ allErrors: true });
const validate = ajv.compile<TesseraConfig>(configSchema);

export const DEFAULT_CONFIG_PATH = join(PROJECT_ROOT, 'config', 'default.json');

function describe(err: ErrorObject): [string, string] {
  const path = err.instancePath.replace(/^\//, '').replace(/\//g, '.') || '(root)';
  if (err.keyword === 'additionalProperties') {
    const extra = (err.params as { additionalProperty: string }).additionalProperty;
    return [path === '(root)' ? extra : `${path}.${extra}`, 'unknown key'];
  }
  if (err.keyword === 'required') {
    const missing = (err.params as { missingProperty: string }).missingProperty;
    return [path === '(root)' ? missing : `${path}.${missing}`, 'missing key'];
  }
  return [path, err.message ?? 'invalid'];
}

/** Validate a parsed config object; throws TESSERA_ERR_BAD_CONFIG naming the first bad key. */
export function validateConfig(value: unknown, source = 'config'): TesseraConfig {
  if (!validate(value)) {
    const [key, why] = describe(validate.errors![0]!);
    throw new TesseraError('TESSERA_ERR_BAD_CONFIG', `${source}: key "${key}"`, why);
  }
  return value;
}

/** Deep-merge `override` into `base` (objects merge, everything else replaces). */
export function mergeConfig<T>(base: T, override: unknown): T {
  if (override === null || typeof override !== 'object' || Array.isArray(override)) return override as T;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(override as Record<string, unknown>)) {
    const b = Object.hasOwn(out, k) ? out[k] : undefined;
    // defineProperty: a "__proto__" key in a file stays a key (reported as unknown), never a prototype
    Object.defineProperty(out, k, { value: b !== null && typeof b === 'object' && !Array.isArray(b) ? mergeConfig(b, v) : v, enumerable: true, writable: true, configurable: true });
  }
  return out as T;
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new TesseraError('TESSERA_ERR_CONFIG_NOT_FOUND', path);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TesseraError('TESSERA_ERR_BAD_CONFIG', path, (err as Error).message);
  }
}

/**
 * Load the default config, overlaid with `path` if given (a partial file is enough: only the
 * keys it names change). The result is validated as a whole.
 */
export function loadConfig(path?: string): TesseraConfig {
  const defaults = readJson(DEFAULT_CONFIG_PATH);
  const merged = path ? mergeConfig(defaults, readJson(path)) : defaults;
  return validateConfig(merged, path ?? DEFAULT_CONFIG_PATH);
}
