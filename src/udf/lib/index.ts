/** The standard UDF library, one UDF per file; registry.ts registers these by name. */
import { AutoUDF } from '../auto.js';
import type { UDFClass } from '../udf.js';
import { ApplyMasksUDF } from './apply-masks.js';
import { CoMUDF } from './com.js';
import { CrystallinityUDF } from './crystallinity.js';
import { FEMUDF } from './fem.js';
import { LogsumUDF } from './logsum.js';
import { PickUDF } from './pick.js';
import { FastCorrelationUDF } from './blobfinder/fast-correlation.js';
import { StdDevUDF } from './stddev.js';
import { StrainMapUDF } from './strain.js';
import { SumSigUDF } from './sum-sig.js';
import { SumUDF } from './sum.js';

export { ApplyMasksUDF, CoMUDF, CrystallinityUDF, FEMUDF, LogsumUDF, PickUDF, StdDevUDF, SumSigUDF, SumUDF };
export { FastCorrelationUDF, StrainMapUDF };
/** templates, window correlation, refinement, lattice fit, reference lattice from a frame */
export * as blobfinder from './blobfinder/index.js';

export const STANDARD_UDFS: UDFClass[] = [
  SumUDF,
  SumSigUDF,
  StdDevUDF,
  ApplyMasksUDF,
  CoMUDF,
  LogsumUDF,
  PickUDF,
  FEMUDF,
  CrystallinityUDF,
  AutoUDF,
  FastCorrelationUDF,
  StrainMapUDF,
];
