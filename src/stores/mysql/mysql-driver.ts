import type { SqlExecutor } from '../../core/ports.js';

/**
 * The slice of `mysql2/promise` this store uses. Declared here so the store does not import
 * `mysql2`: pass your own pool (`mysql.createPool(…)` from `mysql2/promise`), or anything with
 * this shape.
 */

/** What an INSERT, UPDATE, DELETE or CALL without a result set answers (mysql2's ResultSetHeader). */
export interface MySqlResultHeader {
  affectedRows: number;
  /** The OK packet's status flags: bit 0x0001 in a transaction, 0x0002 autocommit. */
  serverStatus?: number;
}

/**
 * mysql2's answer: `[rows, fields]` for a SELECT, `[header, undefined]` for other statements,
 * and for a CALL an array of result sets followed by a header.
 */
export type MySqlResult = [unknown, unknown];

/** A statement with options (`timeout`: the driver stops waiting after that many ms). */
export interface MySqlQueryOptions {
  sql: string;
  values?: unknown[];
  timeout?: number;
}

/** A connection of `mysql2/promise`, or anything with its `query` and `execute`. */
export interface MySqlQueryable {
  query(options: MySqlQueryOptions): Promise<MySqlResult>;
  query(sql: string, values?: unknown): Promise<MySqlResult>;
  /** A prepared statement, cached by mysql2 per connection under its SQL text. */
  execute(sql: string, values?: unknown): Promise<MySqlResult>;
}

/** A connection checked out of a pool (`await pool.getConnection()`). */
export interface MySqlPoolConnection extends MySqlQueryable {
  release(): void;
  /** Closes the connection instead of handing it back (after a deadline or a lost socket). */
  destroy(): void;
  /** The connection under the promise wrapper: the same object for every checkout. */
  readonly connection?: object;
}

/** A `mysql2/promise` pool. */
export interface MySqlPool {
  getConnection(): Promise<MySqlPoolConnection>;
  end(): Promise<void>;
  /**
   * A pool's settings, only read to name the server (host and port, never the password) in
   * errors about a pool you passed in.
   */
  readonly pool?: { readonly config?: unknown };
}

/** The settings of a mysql2 connection that say which server it connects to. */
export interface MySqlConnectionSettings {
  readonly host?: unknown;
  readonly port?: unknown;
  readonly database?: unknown;
}

/**
 * A mysql2 connection your transaction runs on: a `PoolConnection` from
 * `await pool.getConnection()` or a `Connection` from `mysql.createConnection()`, after
 * `await conn.beginTransaction()` (or `START TRANSACTION`).
 *
 * `getConnection` typed `never`: a pool has it and a connection has not. Passing a pool here is
 * a compile error, since a pool runs each statement on whichever connection is free, in a
 * transaction of its own.
 */
export interface MySqlTransactionConnection extends MySqlQueryable {
  readonly getConnection?: never;
}

/** Everything `enqueue` on a MySQL store takes as the caller's transaction. */
export type MySqlTransactionHandle = MySqlTransactionConnection | SqlExecutor;
