/**
 * The one catalogue of Tessera's errors, shared by the CLI, the HTTP API and the logs.
 *
 * Modelled on fastify's lib/errors.js: each error has a stable code (tests assert on codes,
 * never on message text), a message template with %s placeholders and, where it can reach
 * an HTTP client, a status. Throw with `new TesseraError('TESSERA_ERR_…', arg1, …)`.
 */

export interface ErrorSpec {
  message: string;
  statusCode?: number;
}

export const ERRORS = {
  // configuration and command line
  TESSERA_ERR_BAD_CONFIG: { message: 'invalid config %s: %s', statusCode: 500 },
  TESSERA_ERR_CONFIG_NOT_FOUND: { message: 'config file not found: %s', statusCode: 500 },
  TESSERA_ERR_BAD_ARGUMENT: { message: 'invalid argument %s: %s', statusCode: 400 },

  // K2 IS wire format
  TESSERA_ERR_BAD_DATAGRAM: { message: 'bad datagram (%s): %s' },
  TESSERA_ERR_UDP_BIND: { message: 'cannot receive UDP on %s: %s' },
  TESSERA_ERR_ROLE_FAILED: { message: '%s exited unexpectedly (%s)' },
  TESSERA_ERR_BAD_HEADER: { message: 'bad block header: %s' },
  TESSERA_ERR_BAD_PACKED_LENGTH: { message: 'packed 12-bit data length %s is not a multiple of 3 bytes' },
  TESSERA_ERR_WASM_MODULE: { message: 'cannot load WebAssembly module %s: %s' },

  // recorded K2 IS files
  TESSERA_ERR_SECTOR_FILES: { message: 'sector files: %s' },
  TESSERA_ERR_SYNC: { message: 'cannot synchronise sector files: %s' },
  TESSERA_ERR_GTG: { message: 'cannot read scan shape from %s: %s' },
  TESSERA_ERR_DM4: { message: 'DM4 file %s: %s' },
  TESSERA_ERR_NO_SCAN_SHAPE: { message: 'no scan shape: %s' },
  TESSERA_ERR_BAD_BLOCK: { message: 'bad block in %s: %s' },

  // UDFs
  TESSERA_ERR_UNKNOWN_UDF: { message: 'unknown UDF "%s" (known: %s)', statusCode: 400 },
  TESSERA_ERR_UDF_PARAMS: { message: 'bad parameters for UDF %s: %s', statusCode: 400 },
  TESSERA_ERR_UDF_DECLARATION: { message: 'invalid UDF declaration in %s: %s', statusCode: 400 },
  TESSERA_ERR_UDF_RESULTS: { message: 'invalid results from UDF %s: %s' },
  TESSERA_ERR_UDF_PLUGIN: { message: 'cannot load UDF plugin %s: %s' },
  TESSERA_ERR_ROI: { message: 'invalid ROI: %s', statusCode: 400 },

  // messages between processes
  TESSERA_ERR_BAD_MESSAGE: { message: 'malformed message (%s): %s' },
  TESSERA_ERR_PROTOCOL_VERSION: { message: 'unsupported protocol version %s (expected %s)' },
  TESSERA_ERR_ELECTION: { message: 'first-frame election failed: %s' },
  TESSERA_ERR_BIND: { message: 'cannot bind %s: %s' },
  /** a receiver cannot run a live acquisition's UDF on its sector slice */
  TESSERA_ERR_UDF_NOT_TILED: { message: 'UDF %s has no processTile: it cannot run on a sector slice (it needs whole frames)', statusCode: 400 },
  /** a receiver cannot start a live acquisition where the merger asked */
  TESSERA_ERR_LIVE_START: { message: 'cannot start acquisition %s on this receiver: %s' },

  // acquisition control (merger HTTP API)
  TESSERA_ERR_ACQUISITION_STATE: { message: 'cannot %s: acquisition is %s', statusCode: 409 },
  TESSERA_ERR_NEEDS_WHOLE_FRAMES: { message: 'UDF %s needs whole frames (no processTile): that needs the shuffle service with a worker (tessera shuffle, tessera worker), and none answers', statusCode: 400 },
  TESSERA_ERR_NOT_FOUND: { message: '%s not found', statusCode: 404 },
  /** GET /api/acquisitions/:id/frames/:position: the shuffle did not deliver the frame in time */
  TESSERA_ERR_PICK_TIMEOUT: { message: 'the frame at scan position %s did not come from the shuffle within %s ms', statusCode: 504 },
  /** the frame cannot come (a single scan past it, the acquisition ended, …) */
  TESSERA_ERR_PICK_GONE: { message: 'cannot pick that frame: %s', statusCode: 409 },
  TESSERA_ERR_UNAUTHORIZED: { message: 'this action needs a valid token', statusCode: 401 },
  TESSERA_ERR_PAYLOAD_TOO_LARGE: { message: 'request body larger than %s bytes', statusCode: 413 },
  TESSERA_ERR_INTERNAL: { message: 'internal error: %s', statusCode: 500 },

  // merger -> browser stream
  TESSERA_ERR_SLOW_CLIENT: { message: 'client read nothing for %s ms' },

  // files written by Tessera
  TESSERA_ERR_OUTPUT: { message: 'cannot write %s: %s' },
  TESSERA_ERR_RECORD_PATH: { message: 'recording path %s: %s', statusCode: 400 },
  TESSERA_ERR_NOT_A_RECORDING: { message: '%s is not a Tessera recording: %s' },
  TESSERA_ERR_NPY: { message: 'npy file %s: %s' },
  TESSERA_ERR_PATH_OUTSIDE_DATA_DIR: { message: 'path %s is outside the data directory %s', statusCode: 400 },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

function format(template: string, args: unknown[]): string {
  let i = 0;
  return template.replace(/%s/g, () => (i < args.length ? String(args[i++]) : '%s'));
}

export class TesseraError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number | undefined;

  constructor(code: ErrorCode, ...args: unknown[]) {
    const spec: ErrorSpec = ERRORS[code];
    super(format(spec.message, args));
    this.name = 'TesseraError';
    this.code = code;
    this.statusCode = spec.statusCode;
  }
}

export function isTesseraError(err: unknown, code?: ErrorCode): err is TesseraError {
  return err instanceof TesseraError && (code === undefined || err.code === code);
}
