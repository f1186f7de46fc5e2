import { NotATransactionError } from '../core/errors/not-a-transaction-error.js';

/** An object's members, for the shape checks of the adapters. */
export type Shape = Record<string | symbol, unknown>;

export const isFunction = (value: unknown): value is (...args: never[]) => unknown =>
  typeof value === 'function';

/** `a string`, `an object of class Pool`…: what was passed, in words, never its contents. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value !== 'object' && typeof value !== 'function') return `a ${typeof value}`;
  const ctor = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof ctor === 'string' && ctor !== '' && ctor !== 'Object' && ctor !== 'Function'
    ? `an object of class ${ctor}`
    : 'an object';
}

/**
 * Checks that `value` is an object (or function) and returns it as a {@link Shape}; otherwise
 * throws a {@link NotATransactionError} naming what was passed and what to pass (`instead`).
 */
export function requireObject(value: unknown, adapter: string, instead: string): Shape {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) {
    const what = describeValue(value);
    throw new NotATransactionError(
      what,
      `${adapter}() needs your ORM's transaction, got ${what}: ${instead}`,
    );
  }
  return value as Shape;
}
