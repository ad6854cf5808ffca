/**
 * AutoUDF: a per-frame function as a UDF (LiberTEM's AutoUDF / Context.map). The
 * result buffer's shape and dtype come from calling the function once on a frame of ones: a
 * number gives one float64 per scan position, a typed array (or NDArray) its dtype and shape.
 *
 * Worker threads receive the function's source text, so a function for a multi-threaded run
 * must be self-contained (no variables from its closure). In-process runs take any function.
 */
import { TesseraError } from '../errors.js';
import { allocate, dtypeOf, isTypedArray } from './dtype.js';
import { type NDArray, ndarray } from './ndarray.js';
import { UDF, type UDFSpec } from './udf.js';

/** A function of one frame (an NDArray [h, w] of the run's input dtype). */
export type FrameFunction = (frame: NDArray<any>) => number | ArrayLike<number>;

export interface AutoParams {
  /** the function, or its source text (an arrow function or function expression) */
  fn: FrameFunction | string;
}

export class AutoUDF extends UDF<AutoParams> {
  static override udfName = 'AutoUDF';
  private readonly fn: FrameFunction;

  constructor(params: AutoParams) {
    super(params);
    const { fn } = params ?? ({} as AutoParams);
    if (typeof fn === 'function') this.fn = fn;
    else if (typeof fn === 'string') {
      try {
        this.fn = new Function(`return (${fn});`)() as FrameFunction;
      } catch (err) {
        throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'AutoUDF', `fn does not compile: ${(err as Error).message}`);
      }
      if (typeof this.fn !== 'function') throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'AutoUDF', 'fn is not a function expression');
    } else throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'AutoUDF', 'fn must be a function or its source');
  }

  getResultBuffers() {
    const [h, w] = this.meta.sigShape;
    let probe: ReturnType<FrameFunction>;
    try {
      probe = this.fn(ndarray(allocate(this.meta.inputDtype, h * w).fill(1), [h, w]));
    } catch (err) {
      const hint = typeof this.rawParams.fn === 'string' ? ' (a function sent as source must not use variables from its closure)' : '';
      throw new TesseraError('TESSERA_ERR_UDF_PARAMS', 'AutoUDF', `fn failed on a frame of ones: ${(err as Error).message}${hint}`);
    }
    if (typeof probe === 'number') return { result: this.buffer({ kind: 'nav', dtype: 'float64' }) };
    if (isTypedArray(probe)) {
      const shape = (probe as Partial<NDArray>).shape ?? [probe.length];
      return { result: this.buffer({ kind: 'nav', dtype: dtypeOf(probe), extraShape: [...shape] }) };
    }
    if (probe && typeof probe === 'object' && typeof probe.length === 'number') {
      return { result: this.buffer({ kind: 'nav', dtype: 'float64', extraShape: [probe.length] }) };
    }
    throw new TesseraError('TESSERA_ERR_UDF_DECLARATION', 'AutoUDF', `fn returned ${typeof probe}; expected a number or an array`);
  }

  override processFrame(frame: NDArray): void {
    const r = this.fn(frame);
    if (typeof r === 'number') this.results.result![0] = r;
    else this.results.result = r as never;
  }

  override toSpec(): UDFSpec {
    const fn = this.rawParams.fn;
    return { name: 'AutoUDF', params: { fn: typeof fn === 'function' ? fn.toString() : fn } };
  }
}
