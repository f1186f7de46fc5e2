import { NotATransactionError } from '../../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../../core/ports.js';
import type { SqliteDatabase, SqliteStatement } from './sqlite-driver.js';
import { isBusyError } from './sqlite-errors.js';

/**
 * What `SqliteStore` takes as a transaction: a better-sqlite3 `Database` with a transaction open
 * on it (`db.inTransaction`), or an adapter with `execute(sql, params)` over a SQLite connection
 * in a transaction (an ORM's transaction through `fromKysely(trx)`-style adapters).
 */
export type SqliteTransactionHandle = SqliteDatabase | SqlExecutor;

type Shape = Record<string, unknown>;

const isFunction = (value: unknown): boolean => typeof value === 'function';

/** A better-sqlite3 `Database` (or a look-alike): `prepare`, `exec` and the `inTransaction` flag. */
export function isSqliteDatabase(value: unknown): value is SqliteDatabase {
  if (value === null || typeof value !== 'object') return false;
  const o = value as Shape;
  return isFunction(o.prepare) && isFunction(o.exec) && typeof o.inTransaction === 'boolean';
}

const WHAT_TO_PASS =
  "open a transaction on your better-sqlite3 Database first: `db.exec('BEGIN IMMEDIATE')`, your writes, " +
  "`await outbox.enqueue(db, message)`, then `db.exec('COMMIT')`; inside a synchronous " +
  '`db.transaction(() => …)` call `store.enqueueSync(db, message)` instead (an async enqueue cannot run ' +
  "there); or pass an ORM adapter's executor (`execute(sql, params)`)";

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object' && typeof value !== 'function') return `a ${typeof value}`;
  const ctor = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof ctor === 'string' && ctor !== 'Object' && ctor !== 'Function'
    ? `an object of class ${ctor}`
    : 'an object';
}

/** Throws the error for a Database with no transaction open: each statement would commit alone. */
export function rejectAutocommitDatabase(db: SqliteDatabase): never {
  throw new NotATransactionError(
    'a better-sqlite3 Database outside a transaction',
    `enqueue got the better-sqlite3 Database ${JSON.stringify(db.name)} with no transaction open ` +
      '(db.inTransaction is false): the INSERT would commit on its own, whatever your business ' +
      `transaction does later. ${WHAT_TO_PASS}`,
  );
}

/** Most prepared statements kept per connection; the oldest goes first. */
const STATEMENT_CACHE_SIZE = 64;
const statementCache = new WeakMap<SqliteDatabase, Map<string, SqliteStatement>>();

/**
 * `db.prepare(sql)`, cached per connection: parsing is most of a small statement's cost in
 * SQLite, and the store runs the same few statements over and over.
 */
export function prepareCached(db: SqliteDatabase, sql: string): SqliteStatement {
  let cache = statementCache.get(db);
  if (!cache) {
    cache = new Map();
    statementCache.set(db, cache);
  }
  let statement = cache.get(sql);
  if (statement) {
    // Most recently used last, so the oldest is evicted first.
    cache.delete(sql);
  } else {
    statement = db.prepare(sql);
    if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  }
  cache.set(sql, statement);
  return statement;
}

/**
 * Binds what SQLite can take: better-sqlite3 refuses booleans and `undefined`; SQLite has no
 * booleans (1/0) and `undefined` means a missing value (NULL).
 */
export function bindable(params: readonly unknown[]): unknown[] {
  return params.map((p) => (p === undefined ? null : typeof p === 'boolean' ? (p ? 1 : 0) : p));
}

/** Runs one statement synchronously: the rows of a reader, none for the others. */
export function runSync<Row>(db: SqliteDatabase, sql: string, params: readonly unknown[] = []): Row[] {
  const statement = prepareCached(db, sql);
  const values = bindable(params);
  if (statement.reader) return statement.all(...values) as Row[];
  statement.run(...values);
  return [];
}

/** Runs one statement that returns no rows synchronously; how many rows it changed. */
export function runChanges(db: SqliteDatabase, sql: string, params: readonly unknown[] = []): number {
  return prepareCached(db, sql).run(...bindable(params)).changes;
}

/**
 * Wraps what the caller holds in the transaction it already runs: a better-sqlite3 `Database`
 * with a transaction open (`BEGIN` … `COMMIT` around awaits), or anything with
 * `execute(sql, params)` (ORM adapters). Statements on a Database run synchronously, in the
 * caller's transaction.
 *
 * Throws {@link NotATransactionError} for a Database with no transaction open (its INSERT would
 * commit alone, so the message would outlive a rollback) and for anything else.
 */
export function sqliteExecutor(tx: SqliteTransactionHandle): SqlExecutor {
  const handle: unknown = tx;
  if (isSqliteDatabase(handle)) {
    const db = handle;
    if (!db.inTransaction) rejectAutocommitDatabase(db);
    return {
      execute<Row>(sql: string, params: readonly unknown[] = []) {
        // Checked again at each statement: a transaction that ended between two chunks of one
        // enqueue must not see the later chunks commit on their own.
        if (!db.inTransaction) return Promise.reject(notATransactionAnyMore(db));
        try {
          return Promise.resolve({ rows: runSync<Row>(db, sql, params) });
        } catch (err) {
          return Promise.reject(err as Error);
        }
      },
    };
  }
  if (handle !== null && typeof handle === 'object' && isFunction((handle as Shape).execute)) {
    // An ORM adapter's executor: it already speaks our interface; what it wraps is its business.
    return handle as SqlExecutor;
  }
  throw new NotATransactionError(
    describe(handle),
    `enqueue needs the caller's transaction, got ${describe(handle)}: ${WHAT_TO_PASS}`,
  );
}

function notATransactionAnyMore(db: SqliteDatabase): NotATransactionError {
  return new NotATransactionError(
    'a better-sqlite3 Database whose transaction ended',
    `the transaction on the better-sqlite3 Database ${JSON.stringify(db.name)} ended while enqueue was ` +
      'still writing (a synchronous `db.transaction(() => …)` does not wait for an async enqueue): ' +
      'call `store.enqueueSync(db, messages)` inside it, or keep the transaction open until enqueue resolves',
  );
}

/** How the store's own transactions begin. */
export type TransactionMode = 'IMMEDIATE' | 'DEFERRED';

/** Options of {@link runTransaction}. */
export interface RunTransactionOptions {
  /** Longest wait for the write lock (or for the caller's open transaction on a shared connection). */
  busyTimeoutMs: number;
  /** Turns a driver error into the error to throw (the store names its file). */
  wrap: (err: unknown) => unknown;
  /** The store's error for a wait that ran out; `reason` says what it waited for. */
  timedOut: (reason: 'locked' | 'in-transaction', cause: unknown) => Error;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `fn` synchronously in a transaction of its own on `db`, and commits; rolls back and
 * throws when `fn` throws. `IMMEDIATE` takes SQLite's write lock at BEGIN, so a transaction that
 * reads and then writes (a claim) cannot fail half-way with SQLITE_BUSY, and claims from several
 * processes are serialised by the database.
 *
 * Never blocks the event loop waiting: better-sqlite3 is synchronous, and its busy handler would
 * block the whole process for up to `busy_timeout`, including the application's own async
 * transaction on another connection that holds the lock and cannot finish while we block. So the
 * BEGIN runs with `busy_timeout = 0` (the connection's setting is put back right after), and a
 * locked database is retried after an async pause (2 ms doubling to 50 ms) until
 * `busyTimeoutMs`. Likewise, on a connection shared with the application, the store's
 * statements wait (asynchronously) while the application's transaction is open on it, instead of
 * running inside it. Once begun, `fn` and the COMMIT run with no await in between: nothing else
 * in this process can interleave.
 */
export async function runTransaction<T>(
  db: SqliteDatabase,
  mode: TransactionMode,
  fn: () => T,
  options: RunTransactionOptions,
): Promise<T> {
  return whenBegun(db, mode, options, () => {
    let result: T;
    try {
      result = fn();
      db.exec('COMMIT');
    } catch (err) {
      rollbackQuietly(db);
      throw options.wrap(err);
    }
    return result;
  });
}

/** ROLLBACK unless SQLite already rolled back by itself (it does after some errors). */
export function rollbackQuietly(db: SqliteDatabase): void {
  if (!db.inTransaction) return;
  try {
    db.exec('ROLLBACK');
  } catch {
    // Nothing to roll back after all.
  }
}

/**
 * Waits (asynchronously) until a transaction can begin on `db`, begins it, and calls `body`
 * synchronously right after the BEGIN, with nothing in between: its result is returned. See
 * {@link runTransaction} for why the wait never blocks the event loop.
 */
export async function whenBegun<T>(
  db: SqliteDatabase,
  mode: TransactionMode,
  options: RunTransactionOptions,
  body: () => T,
): Promise<T> {
  const deadline = Date.now() + options.busyTimeoutMs;
  let pause = 2;
  for (;;) {
    if (db.inTransaction) {
      if (Date.now() >= deadline) throw options.timedOut('in-transaction', undefined);
    } else {
      let begun: boolean;
      try {
        begun = begin(db, mode);
      } catch (err) {
        throw options.wrap(err);
      }
      if (begun) return body();
      if (Date.now() >= deadline) throw options.timedOut('locked', undefined);
    }
    await sleep(pause);
    pause = Math.min(50, pause * 2);
  }
}

/** BEGINs without waiting in SQLite's busy handler; false when another connection holds the lock. */
function begin(db: SqliteDatabase, mode: TransactionMode): boolean {
  if (mode === 'DEFERRED') {
    // In WAL mode a reader never waits for a writer: nothing to wait for here.
    db.exec('BEGIN DEFERRED');
    return true;
  }
  const saved = (prepareCached(db, 'PRAGMA busy_timeout').get() as { timeout?: unknown } | undefined)
    ?.timeout;
  const restore = typeof saved === 'number' && saved !== 0;
  if (restore) db.exec('PRAGMA busy_timeout = 0');
  try {
    db.exec('BEGIN IMMEDIATE');
    return true;
  } catch (err) {
    if (isBusyError(err)) return false;
    throw err;
  } finally {
    if (restore) db.exec(`PRAGMA busy_timeout = ${Math.floor(saved)}`);
  }
}
