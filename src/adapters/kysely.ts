import type { CompiledQuery, QueryId, RawNode, Transaction } from 'kysely';
import { NotATransactionError } from '../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../core/ports.js';
import { describeValue, isFunction, requireObject } from './adapter-support.js';

const INSTEAD =
  'pass the `trx` of `db.transaction().execute(async (trx) => { …; await outbox.enqueue(fromKysely(trx), message) })`, ' +
  'or of `const trx = await db.startTransaction().execute()`';

let lastQueryId = 0;

/**
 * A Kysely transaction as the store's {@link SqlExecutor}: the store's statements run on the
 * transaction's connection, so the message commits and rolls back with your business rows.
 *
 * The statement goes to Kysely's driver as it is (Kysely passes raw SQL through, so the store's
 * placeholders are already the database's own: `$1` on PostgreSQL, `?` on MySQL and SQLite), and
 * skips your Kysely plugins, whose result transforms (`CamelCasePlugin`…) would rename the
 * store's columns. Rows come back as the driver returns them, as plain objects.
 *
 * @param trx - the transaction Kysely hands you: `db.transaction().execute(async (trx) => …)`,
 *   or a `ControlledTransaction` from `db.startTransaction().execute()`. The `db` itself is
 *   refused (by the compiler, and at run time): each of its statements would commit on its own.
 * @throws NotATransactionError when `trx` is not a Kysely transaction.
 *
 * @example
 * ```ts
 * await db.transaction().execute(async (trx) => {
 *   await trx.insertInto('orders').values(order).execute();
 *   await outbox.enqueue(fromKysely(trx), { topic: 'order.placed', key: order.id, payload: order });
 * });
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any database schema
export function fromKysely(trx: Transaction<any>): SqlExecutor {
  const o = requireObject(trx, 'fromKysely', INSTEAD);
  if (!isFunction(o.getExecutor) || !('isTransaction' in o)) {
    throw new NotATransactionError(
      describeValue(trx),
      `fromKysely() needs a Kysely transaction, got ${describeValue(trx)} (no getExecutor, no isTransaction): ${INSTEAD}`,
    );
  }
  if (o.isTransaction !== true) {
    throw new NotATransactionError(
      'a Kysely instance',
      'fromKysely() got a Kysely instance that is not a transaction (`isTransaction` is false): each of its ' +
        'statements runs on any free connection in a transaction of its own, so the message would be committed ' +
        `even when your transaction rolls back. Instead, ${INSTEAD}`,
    );
  }
  // Without plugins: they would transform the store's own statements and rows.
  const executor = trx.getExecutor().withoutPlugins();
  return {
    async execute<Row>(sql: string, params: readonly unknown[] = []) {
      // What CompiledQuery.raw(sql, params) builds, written out: Mailroom loads no Kysely code.
      const query: RawNode = { kind: 'RawNode', sqlFragments: [sql], parameters: [] };
      const queryId: QueryId = { queryId: `mailroom-${(lastQueryId += 1)}` };
      const compiled: CompiledQuery<Row> = { query, queryId, sql, parameters: params };
      const result = await executor.executeQuery(compiled);
      return { rows: [...result.rows] };
    },
  };
}
