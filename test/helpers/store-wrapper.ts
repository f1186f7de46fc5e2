import type { OutboxStore } from '../../src/core/index.js';

/**
 * The same store with some methods replaced, for tests that make the database misbehave in one
 * place (a settle that fails, a subscribe that is slow). Other members go to the real store.
 */
export function wrapStore(store: OutboxStore, overrides: Partial<OutboxStore>): OutboxStore {
  return new Proxy(store, {
    get(target, prop) {
      if (Object.prototype.hasOwnProperty.call(overrides, prop)) {
        return (overrides as Record<string | symbol, unknown>)[prop];
      }
      const value: unknown = Reflect.get(target, prop, target);
      // Bound to the real store: its private fields do not exist on the proxy.
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
