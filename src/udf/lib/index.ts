/** The standard UDF library, one UDF per file; registry.ts registers these by name. */
import type { UDFClass } from '../udf.js';
import { ApplyMasksUDF } from './apply-masks.js';
import { CoMUDF } from './com.js';
import { SumSigUDF } from './sum-sig.js';
import { SumUDF } from './sum.js';

export { ApplyMasksUDF, CoMUDF, SumSigUDF, SumUDF };

export const STANDARD_UDFS: UDFClass[] = [SumUDF, SumSigUDF, ApplyMasksUDF, CoMUDF];
