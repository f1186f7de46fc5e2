import type { SQLWrapper } from 'drizzle-orm';
import type { MySqlTransaction } from 'drizzle-orm/mysql-core';
import type { PgTransaction } from 'drizzle-orm/pg-core';
import type { SQLiteTransaction } from 'drizzle-orm/sqlite-core';
import { NotATransactionError } from '../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../core/ports.js';
import { describeValue, isFunction, requireObject, type Shape } from './adapter-support.js';
import { scanPlaceholders, type SqlDialect } from './placeholders.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- any driver, any schema */
/** A Drizzle transaction on PostgreSQL, MySQL/MariaDB or SQLite, whatever its driver and schema. */
export type DrizzleTransaction =
  PgTransaction<any, any, any> | MySqlTransaction<any, any, any, any> | SQLiteTransaction<any, any, any, any>;
/* eslint-enable @typescript-eslint/no-explicit-any */

const INSTEAD =
  'pass the `tx` of `db.transaction(async (tx) => { …; await outbox.enqueue(fromDrizzle(tx), message) })`';

/** Drizzle marks its classes with this symbol (`entityKind`), also across copies of the package. */
const ENTITY_KIND = Symbol.for('drizzle:entityKind');

/** The `entityKind` names of `value`'s class and its ancestors: `NodePgTransaction`, `PgTransaction`… */
function entityKinds(value: Shape): string[] {
  const kinds: string[] = [];
  for (
    let ctor = (value as { constructor?: unknown }).constructor;
    typeof ctor === 'function';
    ctor = Object.getPrototypeOf(ctor)
  ) {
    const kind = (ctor as unknown as Shape)[ENTITY_KIND];
    if (typeof kind === 'string') kinds.push(kind);
  }
  return kinds;
}

const DIALECT_OF_TRANSACTION: Record<string, SqlDialect> = {
  PgTransaction: 'postgres',
  MySqlTransaction: 'mysql',
  SQLiteTransaction: 'sqlite',
};

/**
 * The statement as a Drizzle `SQLWrapper`. Drizzle builds the text it sends through its dialect's
 * `escapeParam`, so the placeholders come out in its driver's style (`$1` on PostgreSQL, `?` on
 * MySQL and SQLite) without Mailroom loading Drizzle's `sql` helper.
 */
function drizzleQuery(sql: string, params: readonly unknown[], dialect: SqlDialect): SQLWrapper {
  const { pieces } = scanPlaceholders(sql, params, dialect);
  const query = {
    getSQL() {
      return query;
    },
    toQuery(config: { escapeParam(num: number, value: unknown): string }) {
      const values: unknown[] = [];
      const text = pieces
        .map((piece) => {
          if ('text' in piece) return piece.text;
          const value = params[piece.param];
          values.push(value);
          return config.escapeParam(values.length - 1, value);
        })
        .join('');
      return { sql: text, params: values };
    },
  };
  // Drizzle's dialects call only `getSQL()` and then `toQuery(config)` on what execute/all get;
  // the object has both, it is just not an instance of Drizzle's own SQL class.
  return query as unknown as SQLWrapper;
}

/** Rows out of what each Drizzle driver's raw call returns. */
function rowsOf(result: unknown): Array<Record<string, unknown>> {
  if (Array.isArray(result)) {
    // mysql2: [rows, fields] for a SELECT, [ResultSetHeader, undefined] for an INSERT.
    const [first] = result as unknown[];
    if (Array.isArray(first)) return first as Array<Record<string, unknown>>;
    if (first !== null && typeof first === 'object' && 'affectedRows' in first) return [];
    // postgres.js, libsql: the rows.
    return Array.from(result as Array<Record<string, unknown>>);
  }
  const rows = (result as { rows?: unknown } | null | undefined)?.rows;
  // node-postgres, PGlite, Neon: { rows }.
  return Array.isArray(rows) ? (rows as Array<Record<string, unknown>>) : [];
}

/**
 * Drizzle's better-sqlite3 transactions are synchronous (better-sqlite3's `transaction()`): the
 * callback cannot await, so an async enqueue would write its row and report a failure only after
 * the transaction committed without it.
 */
function rejectSynchronous(kind: string | undefined): never {
  throw new NotATransactionError(
    'a synchronous Drizzle SQLite transaction',
    `fromDrizzle() got a synchronous SQLite transaction (${kind ?? 'better-sqlite3'}): its callback cannot await, ` +
      'so an async enqueue could fail after your transaction committed without the message. Inside ' +
      '`db.transaction((tx) => …)` call `store.enqueueSync(db.$client, message)` of SqliteStore (`db.$client` is the ' +
      'better-sqlite3 Database you gave Drizzle: same connection, same transaction)',
  );
}

/**
 * A Drizzle transaction as the store's {@link SqlExecutor}: the store's statements run on the
 * transaction's connection, so the message commits and rolls back with your business rows.
 * Works with Drizzle's PostgreSQL (node-postgres, postgres.js, PGlite…), MySQL (mysql2) and
 * asynchronous SQLite (libsql) drivers; the placeholders are rendered by Drizzle's own dialect.
 *
 * Rows come back as the driver returns them (node-postgres under Drizzle keeps timestamps as
 * strings), as plain objects. Drizzle's better-sqlite3 transactions are synchronous and refused:
 * call SqliteStore's `enqueueSync(db.$client, message)` inside them.
 *
 * @param tx - the transaction Drizzle hands you: `db.transaction(async (tx) => …)`. The `db`
 *   itself is refused (by the compiler, and at run time): each of its statements would commit on
 *   its own.
 * @throws NotATransactionError when `tx` is not a Drizzle transaction, or is a synchronous one.
 *
 * @example
 * ```ts
 * await db.transaction(async (tx) => {
 *   await tx.insert(orders).values(order);
 *   await outbox.enqueue(fromDrizzle(tx), { topic: 'order.placed', key: order.id, payload: order });
 * });
 * ```
 */
export function fromDrizzle(tx: DrizzleTransaction): SqlExecutor {
  const o = requireObject(tx, 'fromDrizzle', INSTEAD);
  const kinds = entityKinds(o);
  const family = kinds.find((k) => k in DIALECT_OF_TRANSACTION);
  if (family === undefined || !isFunction(o.rollback)) {
    const isDatabase = kinds.some((k) => /Database$/.test(k));
    const handle = isDatabase ? 'a Drizzle database' : describeValue(tx);
    throw new NotATransactionError(
      handle,
      isDatabase
        ? `fromDrizzle() got the Drizzle database \`db\` (${kinds[0] ?? 'unknown driver'}), not a transaction: each of its ` +
            'statements runs in a transaction of its own, so the message would be committed even when your ' +
            `transaction rolls back. Instead, ${INSTEAD}`
        : `fromDrizzle() needs a Drizzle transaction, got ${handle}: ${INSTEAD}`,
    );
  }
  const dialect = DIALECT_OF_TRANSACTION[family] as SqlDialect;
  if (dialect === 'sqlite' && o.resultKind === 'sync') rejectSynchronous(kinds[0]);
  const db = o as { execute?(q: SQLWrapper): unknown; all?(q: SQLWrapper): unknown };
  return {
    async execute<Row>(sql: string, params: readonly unknown[] = []) {
      const query = drizzleQuery(sql, params, dialect);
      // PostgreSQL and MySQL: `execute`; SQLite has `all` (rows, also for statements without any).
      const result = dialect === 'sqlite' ? await db.all?.(query) : await db.execute?.(query);
      return { rows: rowsOf(result) as Row[] };
    },
  };
}
