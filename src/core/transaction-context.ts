/**
 * Ambient transactions: the transaction of the current async call chain, for apps that keep it
 * in `AsyncLocalStorage` (NestJS CLS transactional plugins, request-scoped unit-of-work
 * helpers), so `outbox.enqueue(message)` finds it without the handle being passed down.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Where `Outbox` looks for the ambient transaction: a function returning the current one, or
 * an object with such a `current()` (a {@link TransactionContext}). `undefined` means there is
 * none, and `enqueue(message)` then throws rather than write outside a transaction.
 *
 * @example NestJS with @nestjs-cls/transactional: `() => txHost.tx`
 */
export type AmbientTransaction<Tx> = (() => Tx | undefined) | { current(): Tx | undefined };

/**
 * An `AsyncLocalStorage` holding the transaction of the code that runs inside {@link run}: hand
 * it to `new Outbox({ ambientTransaction })`, and `outbox.enqueue(message)` called anywhere
 * below `run` writes in that transaction.
 *
 * @example
 * ```ts
 * const transactions = new TransactionContext<pg.PoolClient>();
 * const outbox = new Outbox({ store, ambientTransaction: transactions });
 *
 * const client = await pool.connect();
 * await client.query('BEGIN');
 * await transactions.run(client, async () => {
 *   await placeOrder(order); // deep inside: await outbox.enqueue({ topic: 'order.placed', payload: order })
 * });
 * await client.query('COMMIT');
 * ```
 */
export class TransactionContext<Tx> {
  readonly #storage = new AsyncLocalStorage<Tx>();

  /** Runs `fn` with `tx` as the ambient transaction of everything it calls and awaits. */
  run<T>(tx: Tx, fn: () => T): T {
    return this.#storage.run(tx, fn);
  }

  /** The ambient transaction here, or undefined outside {@link run}. */
  current(): Tx | undefined {
    return this.#storage.getStore();
  }
}

/** The getter of an {@link AmbientTransaction}. */
export function ambientGetter<Tx>(ambient: AmbientTransaction<Tx>): () => Tx | undefined {
  return typeof ambient === 'function' ? ambient : () => ambient.current();
}
