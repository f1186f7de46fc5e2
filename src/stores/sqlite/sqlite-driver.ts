/**
 * The slice of `better-sqlite3` (12.x) this store uses. Declared here so the store does not import
 * the driver's types: pass your own `Database` (or anything with this shape).
 *
 * @module
 */

/** What `statement.run()` reports. */
export interface SqliteRunResult {
  changes: number;
  lastInsertRowid: number | bigint;
}

/** A prepared statement (`db.prepare(sql)`); parameters bind positionally to `?`. */
export interface SqliteStatement {
  /** True for a statement that returns rows (SELECT, or RETURNING). */
  readonly reader: boolean;
  run(...params: unknown[]): SqliteRunResult;
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
}

/**
 * A `better-sqlite3` `Database`: one connection to one database file, synchronous. It is also the
 * handle `enqueue` takes, once a transaction is open on it (`db.inTransaction`).
 */
export interface SqliteDatabase {
  prepare(sql: string): SqliteStatement;
  /** Runs one or more statements without parameters. */
  exec(sql: string): unknown;
  /** True between BEGIN and COMMIT/ROLLBACK (also inside `db.transaction(fn)`). */
  readonly inTransaction: boolean;
  /** False once closed. */
  readonly open: boolean;
  /** The file name the connection was opened with (`:memory:` or `''` for a private database). */
  readonly name: string;
  /** True for an in-memory database. */
  readonly memory: boolean;
  close(): unknown;
}

/** The `better-sqlite3` constructor, as the store calls it when it opens its own connection. */
export type SqliteDatabaseConstructor = new (
  filename: string,
  options?: { timeout?: number; fileMustExist?: boolean; readonly?: boolean },
) => SqliteDatabase;
