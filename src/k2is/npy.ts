/**
 * NumPy .npy files (format version 1.0): a streaming writer for arrays too big to hold in
 * memory (the simulator's ground-truth frames, N x 1860 x 2048 uint16), and a reader for tests
 * and tools.
 *
 * Layout: magic "\x93NUMPY", major 1, minor 0, header length (u16 little-endian), then an ASCII
 * Python dict literal {'descr': '<u2', 'fortran_order': False, 'shape': (N, 1860, 2048), }
 * padded with spaces and ended by '\n' so that the data starts on a multiple of 64 bytes; then
 * the raw little-endian data in C order.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { endianness } from 'node:os';
import { TesseraError } from '../errors.js';

export type NpyDtype = '<u1' | '|u1' | '<u2' | '<i2' | '<u4' | '<i4' | '<f4' | '<f8';

type NpyTypedArray = Uint8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array;

const DTYPES: Record<NpyDtype, { bytes: number; make: (buf: ArrayBuffer, offset: number, length: number) => NpyTypedArray }> = {
  '<u1': { bytes: 1, make: (b, o, n) => new Uint8Array(b, o, n) },
  '|u1': { bytes: 1, make: (b, o, n) => new Uint8Array(b, o, n) },
  '<u2': { bytes: 2, make: (b, o, n) => new Uint16Array(b, o, n) },
  '<i2': { bytes: 2, make: (b, o, n) => new Int16Array(b, o, n) },
  '<u4': { bytes: 4, make: (b, o, n) => new Uint32Array(b, o, n) },
  '<i4': { bytes: 4, make: (b, o, n) => new Int32Array(b, o, n) },
  '<f4': { bytes: 4, make: (b, o, n) => new Float32Array(b, o, n) },
  '<f8': { bytes: 8, make: (b, o, n) => new Float64Array(b, o, n) },
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
const ALIGN = 64;

function assertLittleEndianHost(): void {
  // typed arrays use the host's byte order; every machine Tessera targets is little-endian
  if (endianness() !== 'LE') throw new TesseraError('TESSERA_ERR_OUTPUT', 'npy', 'big-endian hosts are not supported');
}

/** The complete preamble (magic, version, header) for an array; its length is a multiple of 64. */
export function npyHeader(dtype: NpyDtype, shape: readonly number[]): Uint8Array {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'shape', `bad dimension ${d}`);
  }
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let dict = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const unpadded = MAGIC.length + 2 + 2 + dict.length + 1;
  dict += ' '.repeat((ALIGN - (unpadded % ALIGN)) % ALIGN) + '\n';
  const headerLen = dict.length;
  if (headerLen > 0xffff) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'shape', 'npy v1.0 header too long');
  const out = new Uint8Array(10 + headerLen);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  out[8] = headerLen & 0xff;
  out[9] = headerLen >> 8;
  for (let i = 0; i < headerLen; i++) out[10 + i] = dict.charCodeAt(i);
  return out;
}

export interface NpyHeaderInfo {
  dtype: NpyDtype;
  shape: number[];
  fortranOrder: boolean;
  /** byte offset of the data */
  dataOffset: number;
  /** bytes per element */
  itemSize: number;
}

/** Parse the preamble of an .npy file (versions 1.0, 2.0 and 3.0) from its first bytes. */
export function parseNpyHeader(buf: Uint8Array, source = 'npy'): NpyHeaderInfo {
  const fail = (why: string): never => {
    throw new TesseraError('TESSERA_ERR_NPY', source, why);
  };
  if (buf.length < 10 || MAGIC.some((b, i) => buf[i] !== b)) fail('not an .npy file (bad magic)');
  const major = buf[6]!;
  let headerLen: number;
  let start: number;
  if (major === 1) {
    headerLen = buf[8]! | (buf[9]! << 8);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) fail('truncated preamble');
    headerLen = (buf[8]! | (buf[9]! << 8) | (buf[10]! << 16) | (buf[11]! << 24)) >>> 0;
    start = 12;
  } else {
    return fail(`unsupported format version ${major}`);
  }
  if (buf.length < start + headerLen) fail('truncated header');
  const text = new TextDecoder('latin1').decode(buf.subarray(start, start + headerLen));
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(text)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) return fail(`unreadable header ${JSON.stringify(text)}`);
  if (!(descr in DTYPES)) fail(`unsupported dtype ${descr}`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      const n = Number(s.replace(/L$/, ''));
      if (!Number.isInteger(n) || n < 0) fail(`bad shape (${shapeText})`);
      return n;
    });
  const dtype = descr as NpyDtype;
  return { dtype, shape, fortranOrder: fortran === 'True', dataOffset: start + headerLen, itemSize: DTYPES[dtype].bytes };
}

/** Writes one array of known shape, a slab at a time along axis 0 (or in any pieces, in order). */
export class NpyWriter {
  readonly path: string;
  readonly dtype: NpyDtype;
  readonly shape: readonly number[];
  private readonly fh: FileHandle;
  private written = 0;
  private readonly expected: number;
  private position: number;

  private constructor(path: string, fh: FileHandle, dtype: NpyDtype, shape: readonly number[], headerLength: number) {
    this.path = path;
    this.fh = fh;
    this.dtype = dtype;
    this.shape = [...shape];
    this.expected = shape.reduce((a, b) => a * b, 1);
    this.position = headerLength;
  }

  static async create(path: string, dtype: NpyDtype, shape: readonly number[]): Promise<NpyWriter> {
    assertLittleEndianHost();
    if (!(dtype in DTYPES)) throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'dtype', dtype);
    const header = npyHeader(dtype, shape);
    let fh: FileHandle;
    try {
      fh = await open(path, 'w');
      await fh.write(header, 0, header.length, 0);
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_OUTPUT', path, (err as Error).message);
    }
    return new NpyWriter(path, fh, dtype, shape, header.length);
  }

  /** Elements written so far. */
  get count(): number {
    return this.written;
  }

  /** Append elements (their type must match the dtype's element size). */
  async write(data: NpyTypedArray): Promise<void> {
    if (data.BYTES_PER_ELEMENT !== DTYPES[this.dtype].bytes) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'data', `element size ${data.BYTES_PER_ELEMENT} does not match ${this.dtype}`);
    }
    if (this.written + data.length > this.expected) {
      throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `more data than the shape (${this.shape.join('x')}) holds`);
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, done, bytes.length - done, this.position);
      done += bytesWritten;
      this.position += bytesWritten;
    }
    this.written += data.length;
  }

  /** Close; fails if fewer elements were written than the shape promises (the file would be unreadable). */
  async close(): Promise<void> {
    await this.fh.close();
    if (this.written !== this.expected) {
      throw new TesseraError('TESSERA_ERR_OUTPUT', this.path, `wrote ${this.written} of ${this.expected} elements`);
    }
  }

  /** Close without the completeness check (after an error). */
  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** An open .npy file, read in slabs along axis 0 (so a stack of frames need not fit in memory). */
export class NpyFile {
  readonly path: string;
  readonly header: NpyHeaderInfo;
  private fd: number | null;
  /** elements per index of axis 0 */
  readonly slabElements: number;

  private constructor(path: string, fd: number, header: NpyHeaderInfo) {
    this.path = path;
    this.fd = fd;
    this.header = header;
    this.slabElements = header.shape.slice(1).reduce((a, b) => a * b, 1);
  }

  static open(path: string): NpyFile {
    assertLittleEndianHost();
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new TesseraError('TESSERA_ERR_NPY', path, (err as Error).message);
    }
    try {
      const size = fstatSync(fd).size;
      const head = new Uint8Array(Math.min(size, 65536 + 12));
      readSync(fd, head, 0, head.length, 0);
      const header = parseNpyHeader(head, path);
      const elements = header.shape.reduce((a, b) => a * b, 1);
      if (size < header.dataOffset + elements * header.itemSize) {
        throw new TesseraError('TESSERA_ERR_NPY', path, `file too short for shape (${header.shape.join(', ')})`);
      }
      return new NpyFile(path, fd, header);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  get dtype(): NpyDtype {
    return this.header.dtype;
  }

  get shape(): number[] {
    return this.header.shape;
  }

  /** Elements [index, index + count) along axis 0, as a typed array of the file's dtype. */
  read(index = 0, count = this.header.shape[0] ?? 1): NpyTypedArray {
    if (this.fd === null) throw new TesseraError('TESSERA_ERR_NPY', this.path, 'closed');
    const n0 = this.header.shape.length === 0 ? 1 : this.header.shape[0]!;
    if (!Number.isInteger(index) || !Number.isInteger(count) || index < 0 || count < 0 || index + count > n0) {
      throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'index', `[${index}, ${index + count}) outside axis 0 of length ${n0}`);
    }
    const elements = count * this.slabElements;
    const { itemSize, dataOffset, dtype } = this.header;
    const buf = new ArrayBuffer(elements * itemSize);
    const bytes = new Uint8Array(buf);
    let done = 0;
    const start = dataOffset + index * this.slabElements * itemSize;
    while (done < bytes.length) {
      const n = readSync(this.fd, bytes, done, bytes.length - done, start + done);
      if (n === 0) throw new TesseraError('TESSERA_ERR_NPY', this.path, 'unexpected end of file');
      done += n;
    }
    return DTYPES[dtype].make(buf, 0, elements);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Read a whole .npy file. */
export function readNpy(path: string): NpyHeaderInfo & { data: NpyTypedArray } {
  const f = NpyFile.open(path);
  try {
    return { ...f.header, data: f.read() };
  } finally {
    f.close();
  }
}
