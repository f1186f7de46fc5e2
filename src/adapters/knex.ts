import type { Knex } from 'knex';
import { NotATransactionError } from '../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../core/ports.js';
import { describeValue, isFunction, requireObject } from './adapter-support.js';
import { PlaceholderError } from './placeholder-error.js';
import { scanPlaceholders, toQuestionMarks, type SqlDialect } from './placeholders.js';

const INSTEAD =
  'pass the `trx` of `knex.transaction(async (trx) => { …; await outbox.enqueue(fromKnex(trx), message) })`, ' +
  'or of `const trx = await knex.transaction()`';

/** Knex's `client.dialect` → the database. PostgreSQL's offshoots speak its SQL. */
const DIALECTS: Record<string, SqlDialect> = {
  postgresql: 'postgres',
  pgnative: 'postgres',
  cockroachdb: 'postgres',
  redshift: 'postgres',
  mysql: 'mysql',
  sqlite3: 'sqlite',
};

/** Rows out of what `trx.raw` resolves to on each Knex client. */
function rowsOf(result: unknown): Array<Record<string, unknown>> {
  if (Array.isArray(result)) {
    // mysql / mysql2: [rows, fields], or [ResultSetHeader, …] for an INSERT.
    const [first] = result as unknown[];
    if (Array.isArray(first)) return first as Array<Record<string, unknown>>;
    if (first !== null && typeof first === 'object' && 'affectedRows' in first) return [];
    // sqlite3 / better-sqlite3: the rows.
    return result as Array<Record<string, unknown>>;
  }
  // pg: the pg result, { rows }; SQLite's run() gives { changes, lastInsertRowid }.
  const rows = (result as { rows?: unknown } | null | undefined)?.rows;
  return Array.isArray(rows) ? (rows as Array<Record<string, unknown>>) : [];
}

/**
 * A Knex transaction as the store's {@link SqlExecutor}: the store's statements run on the
 * transaction's connection, so the message commits and rolls back with your business rows.
 *
 * `trx.raw` reads every `?` as a binding and `??` as an identifier, whatever the database, and
 * Knex's PostgreSQL client turns them into `$1, $2…` itself. So on PostgreSQL the store's `$n`
 * placeholders are rewritten to `?` (one per occurrence, values in that order) and every other `?`
 * (the JSON operators `?`, `?|`, `?&`, a `?` inside a string literal or comment) is escaped as
 * `\?`, which Knex sends as a plain `?`. On MySQL and SQLite the store's `?` placeholders pass
 * as they are; a `?` that is not a placeholder cannot be sent through `trx.raw` there (Knex has no
 * escape that it removes on those clients), and is refused with a {@link PlaceholderError}.
 *
 * @param trx - the transaction Knex hands you: `knex.transaction(async (trx) => …)`, or
 *   `await knex.transaction()`. The `knex` instance itself is refused (by the compiler, and at run
 *   time): each of its statements would commit on its own.
 * @throws NotATransactionError when `trx` is not a Knex transaction.
 *
 * @example
 * ```ts
 * await knex.transaction(async (trx) => {
 *   await trx('orders').insert(order);
 *   await outbox.enqueue(fromKnex(trx), { topic: 'order.placed', key: order.id, payload: order });
 * });
 * ```
 */
export function fromKnex(trx: Knex.Transaction): SqlExecutor {
  const o = requireObject(trx, 'fromKnex', INSTEAD);
  if (!isFunction(o.raw) || typeof o.client !== 'object' || o.client === null) {
    throw new NotATransactionError(
      describeValue(trx),
      `fromKnex() needs a Knex transaction, got ${describeValue(trx)} (no raw, no client): ${INSTEAD}`,
    );
  }
  if (o.isTransaction !== true) {
    throw new NotATransactionError(
      'a Knex instance',
      'fromKnex() got the `knex` instance, not a transaction: each of its statements runs on any free ' +
        'connection of its pool in a transaction of its own, so the message would be committed even when your ' +
        `transaction rolls back. Instead, ${INSTEAD}`,
    );
  }
  const clientDialect = String((o.client as { dialect?: unknown }).dialect);
  const dialect = DIALECTS[clientDialect];
  if (dialect === undefined) {
    throw new NotATransactionError(
      `a Knex transaction on ${clientDialect}`,
      `fromKnex() got a transaction of Knex's ${clientDialect} client; Mailroom's stores run on PostgreSQL ` +
        '(postgresql, pgnative, cockroachdb, redshift), MySQL/MariaDB (mysql, mysql2) and SQLite ' +
        '(sqlite3, better-sqlite3)',
    );
  }
  return {
    async execute<Row>(sql: string, params: readonly unknown[] = []) {
      const scanned = scanPlaceholders(sql, params, dialect);
      const rewritten = toQuestionMarks(scanned, params, {
        literalQuestionMark(offset) {
          // Knex's PostgreSQL client reads `\?` as a plain `?` unless an even run of backslashes
          // precedes it; a backslash already before the `?` would flip that.
          if (dialect === 'postgres' && sql[offset - 1] !== '\\') return '\\?';
          throw new PlaceholderError(
            `Knex cannot send the \`?\` at offset ${offset} as text on ${clientDialect} (trx.raw reads every ? as a binding)`,
            sql,
          );
        },
      });
      // `trx.raw(sql, bindings)`: a bindings array binds by position (an object would bind by name).
      // Knex refuses `undefined` bindings, which the drivers send as NULL: sent as NULL here too.
      const bindings = rewritten.params.map((p) => (p === undefined ? null : p)) as Knex.RawBinding[];
      const result: unknown = await trx.raw(rewritten.sql, bindings);
      return { rows: rowsOf(result) as Row[] };
    },
  };
}
