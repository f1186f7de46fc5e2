import { NotATransactionError } from '../../core/errors/not-a-transaction-error.js';
import { StoreError } from '../../core/errors/store-error.js';
import type { SqlExecutor } from '../../core/ports.js';
import type { MySqlQueryable, MySqlResultHeader, MySqlTransactionHandle } from './mysql-driver.js';
import { mysqlErrno } from './mysql-errors.js';

type Shape = Record<string, unknown>;

const isFunction = (value: unknown): boolean => typeof value === 'function';

const WHAT_TO_PASS =
  'pass the connection your transaction runs on: `const conn = await pool.getConnection(); await ' +
  'conn.beginTransaction(); …; await outbox.enqueue(conn, message); await conn.commit(); conn.release()`, ' +
  "or an ORM adapter's executor (`execute(sql, params)`)";

/** The OK packet's flags (mysql2's ServerStatus): in a transaction, and autocommit on. */
const SERVER_STATUS_IN_TRANS = 0x0001;
const SERVER_STATUS_AUTOCOMMIT = 0x0002;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object' && typeof value !== 'function') return `a ${typeof value}`;
  const ctor = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof ctor === 'string' && ctor !== 'Object' && ctor !== 'Function'
    ? `an object of class ${ctor}`
    : 'an object';
}

/**
 * The rows of a mysql2 answer: a SELECT's rows; for a CALL (a list of result sets, then a
 * header), its first result set; for anything else none.
 */
export function mysqlRows<Row>(result: unknown): Row[] {
  if (!Array.isArray(result)) return [];
  if (result.length > 0 && Array.isArray(result[0])) return result[0] as Row[];
  // A CALL whose procedure selected nothing: only the header.
  if (result.length > 0 && !isRowLike(result[0])) return [];
  return result as Row[];
}

function isRowLike(value: unknown): boolean {
  return value !== null && typeof value === 'object' && !('affectedRows' in (value as object));
}

/** How {@link requireMySqlTransaction} can tell about each executor made here. */
const probes = new WeakMap<SqlExecutor, MySqlQueryable>();

/**
 * Wraps what the caller holds in the transaction it already runs:
 * - a mysql2 connection (`mysql2/promise` `PoolConnection` or `Connection`, or the callback API's,
 *   through its `.promise()`), after `beginTransaction()`;
 * - anything with `execute(sql, params)` returning `{ rows }` (ORM adapters).
 *
 * Throws {@link NotATransactionError} for a pool (promise or callback API, or a pool cluster):
 * it runs each statement on whichever connection is free, in a transaction of its own, so the
 * message would outlive a rollback of your transaction. The type rejects pools at compile time
 * (see {@link MySqlTransactionHandle}).
 */
export function mysqlExecutor(tx: MySqlTransactionHandle): SqlExecutor {
  const handle: unknown = tx;
  if (handle === null || (typeof handle !== 'object' && typeof handle !== 'function')) {
    throw new NotATransactionError(
      describe(handle),
      `enqueue needs the caller's transaction, got ${describe(handle)}: ${WHAT_TO_PASS}`,
    );
  }
  const o = handle as Shape;
  if (isFunction(o.getConnection)) {
    throw new NotATransactionError(
      'a mysql2 pool',
      'enqueue got a mysql2 pool, not a transaction: a pool runs each statement on whichever connection is free, ' +
        'in a transaction of its own, so the message would be committed even when your transaction rolls back. ' +
        WHAT_TO_PASS.replace(/^pass/, 'Pass'),
    );
  }
  const isConnection = isFunction(o.query) && isFunction(o.beginTransaction) && isFunction(o.execute);
  if (isConnection) {
    // The callback API's connection: its promise wrapper speaks the same protocol on the same socket.
    const conn = (
      isFunction(o.promise) ? (o.promise as () => unknown).call(handle) : handle
    ) as MySqlQueryable;
    const executor: SqlExecutor = {
      async execute<Row>(sql: string, params: readonly unknown[] = [], name?: string) {
        // A name asks for a statement prepared once per connection (mysql2 caches it under its
        // text): the one-message enqueue. Others go as text, so that statements whose text varies
        // (multi-row inserts) do not fill the server's prepared-statement slots.
        const [result] = name ? await conn.execute(sql, [...params]) : await conn.query(sql, [...params]);
        return { rows: mysqlRows<Row>(result) };
      },
    };
    probes.set(executor, conn);
    return executor;
  }
  if (isFunction(o.execute)) return handle as SqlExecutor;
  throw new NotATransactionError(
    describe(handle),
    `enqueue needs the caller's transaction, got ${describe(handle)} with no query or execute method: ${WHAT_TO_PASS}`,
  );
}

function notInTransaction(how: string): never {
  throw new NotATransactionError(
    'a connection outside a transaction',
    `enqueue's handle is not inside a transaction (requireTransaction is on, and ${how}), so the message ` +
      'would commit on its own, whatever your business transaction does. Run `await conn.beginTransaction()` ' +
      `on that connection first, or ${WHAT_TO_PASS}`,
  );
}

/**
 * Makes sure the executor's connection is inside a transaction (or has autocommit off, where
 * every statement is), exactly, in one round trip:
 * - a mysql2 connection: `DO 0`, whose OK packet carries the session's status flags
 *   (in transaction, autocommit), on MySQL and MariaDB alike;
 * - an adapter: `SELECT @@in_transaction, @@autocommit`. MariaDB has `in_transaction`; MySQL 8
 *   does not (error 1193), and no statement tells it there, so this throws a {@link StoreError}
 *   saying to pass the mysql2 connection instead.
 */
export async function requireMySqlTransaction(
  executor: SqlExecutor,
  sql: { statusProbe: string; inTransaction: string },
): Promise<void> {
  const conn = probes.get(executor);
  if (conn) {
    const [header] = (await conn.query(sql.statusProbe)) as [MySqlResultHeader, unknown];
    const status = Number(header?.serverStatus ?? NaN);
    if (!Number.isFinite(status)) return;
    if ((status & SERVER_STATUS_IN_TRANS) !== 0 || (status & SERVER_STATUS_AUTOCOMMIT) === 0) return;
    notInTransaction('the server reported the session in autocommit with no transaction open');
  }
  let row: Record<string, unknown> | undefined;
  try {
    row = (await executor.execute(sql.inTransaction)).rows[0];
  } catch (err) {
    if (mysqlErrno(err) !== 1193) throw err;
    throw new StoreError(
      'cannot_check_transaction',
      'requireTransaction cannot check this handle on MySQL: MySQL has no @@in_transaction (MariaDB has), and the ' +
        "adapter's execute() does not show the session's status flags. Pass the mysql2 connection your transaction " +
        'runs on (its answers carry the flags), or turn requireTransaction off',
      { cause: err },
    );
  }
  if (Number(row?.in_tx) === 1 || Number(row?.autocommit) === 0) return;
  notInTransaction('@@in_transaction is 0 with autocommit on');
}
