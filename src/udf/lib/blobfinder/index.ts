/** Correlation-based peak finding and lattice fitting (LiberTEM-blobfinder, spec D). */
export * from './templates.js';
export * from './refine.js';
export * from './correlation.js';
export * from './lattice.js';
export * from './peaks.js';
export { FastCorrelationUDF, type FastCorrelationParams } from './fast-correlation.js';
