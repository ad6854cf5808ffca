export * from './constants.js';
export * from './header.js';
export * from './geometry.js';
export * from './uint12.js';
