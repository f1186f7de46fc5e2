import type { SqlExecutor } from '../../../core/ports.js';
import type { TccStore } from '../../../tcc/state.js';

/**
 * The order service's database as one coordinator process sees it, for simulating that
 * process's death: after `crash()`, no transaction it asks for starts, and none that was
 * running returns. A transaction already running in the database finishes there (it commits
 * or not, as a statement interrupted by a crash does), so no lock is left held on the single
 * PGlite connection. The process's writes simply stop.
 */
export class CrashableStore<Tx> implements TccStore<Tx> {
  readonly #inner: TccStore<Tx>;
  #crashed = false;

  constructor(inner: TccStore<Tx>) {
    this.#inner = inner;
  }

  get name(): string {
    return this.#inner.name;
  }

  get schema(): string {
    return this.#inner.schema;
  }

  get crashed(): boolean {
    return this.#crashed;
  }

  /** From now on, nothing this process asks of its database returns. */
  crash(): void {
    this.#crashed = true;
  }

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    if (this.#crashed) return never<T>();
    let result: T;
    try {
      result = await this.#inner.transaction(fn);
    } catch (err) {
      if (this.#crashed) return never<T>();
      throw err;
    }
    if (this.#crashed) return never<T>();
    return result;
  }

  executor(tx: Tx): SqlExecutor {
    return this.#inner.executor(tx);
  }
}

/** A promise that never settles: what a dead process waits for. */
export function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}
