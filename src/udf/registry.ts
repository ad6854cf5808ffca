/**
 * UDF classes by name: the standard library plus plugins. Workers, receivers and the merger
 * re-create UDFs from a UDFSpec (name + params) through this registry.
 */
import { TesseraError } from '../errors.js';
import { STANDARD_UDFS } from './lib/index.js';
import { isUdfClass, type UDF, type UDFClass, type UDFSpec, udfNameOf } from './udf.js';

const classes = new Map<string, UDFClass>();

export function registerUdf(cls: UDFClass, name: string = udfNameOf(cls)): void {
  if (!isUdfClass(cls)) throw new TesseraError('TESSERA_ERR_UDF_DECLARATION', name, 'is not a class extending UDF');
  classes.set(name, cls);
}

export function registeredUdfNames(): string[] {
  return [...classes.keys()].sort();
}

export function getUdfClass(name: string): UDFClass {
  const cls = classes.get(name);
  if (!cls) throw new TesseraError('TESSERA_ERR_UNKNOWN_UDF', name, registeredUdfNames().join(', '));
  return cls;
}

export function createUdf(spec: UDFSpec): UDF {
  if (spec === null || typeof spec !== 'object' || typeof spec.name !== 'string') {
    throw new TesseraError('TESSERA_ERR_UNKNOWN_UDF', JSON.stringify(spec), registeredUdfNames().join(', '));
  }
  return new (getUdfClass(spec.name))(spec.params ?? {});
}

for (const cls of STANDARD_UDFS) registerUdf(cls);
