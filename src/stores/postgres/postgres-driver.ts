import type { SqlExecutor } from '../../core/ports.js';

/**
 * The slice of node-postgres (`pg`) this store uses. Declared here so the store does not import
 * `pg`: pass your own `pg.Pool` (or anything with this shape).
 */
export interface PgQueryResult {
  rows: Array<Record<string, unknown>>;
  rowCount?: number | null;
}

export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<PgQueryResult>;
}

export interface PgNotification {
  channel: string;
  payload?: string | undefined;
}

export interface PgPoolClient extends PgQueryable {
  release(err?: Error | boolean): void;
  on(event: 'notification', listener: (msg: PgNotification) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'end', listener: () => void): unknown;
  removeListener(event: 'notification', listener: (msg: PgNotification) => void): unknown;
  removeListener(event: 'error', listener: (err: Error) => void): unknown;
  removeListener(event: 'end', listener: () => void): unknown;
}

export interface PgPool extends PgQueryable {
  connect(): Promise<PgPoolClient>;
  end(): Promise<void>;
  on?(event: 'error', listener: (err: Error) => void): unknown;
  /**
   * A `pg.Pool`'s settings. Only read, to name the server (host and port, never the password) in
   * errors about a pool you passed in; pools without them are named by what their errors say.
   */
  readonly options?: PgPoolSettings;
}

/** The settings of a `pg.Pool` that say which server it connects to. */
export interface PgPoolSettings {
  readonly connectionString?: unknown;
  readonly host?: unknown;
  readonly port?: unknown;
  readonly database?: unknown;
}

/** The slice of a postgres.js `sql` (or transaction) that enqueue uses. */
export interface PostgresJsSql {
  unsafe(query: string, params?: unknown[], options?: { prepare?: boolean }): PromiseLike<unknown> & object;
}

/**
 * A node-postgres client that your transaction runs on: a `pg.Client`, or the `pg.PoolClient`
 * that `pool.connect()` returned, after `BEGIN`. PGlite's `tx` from `db.transaction(async (tx) =>
 * …)` has the same shape.
 *
 * The members typed `never` are what a `pg.Pool` (`totalCount`…) and a whole PGlite database
 * (`transaction`) have and a client does not: passing either one here is a compile error, since
 * each of their statements commits on its own, outside your transaction.
 */
export interface PgTransactionClient extends PgQueryable {
  readonly totalCount?: never;
  readonly idleCount?: never;
  readonly waitingCount?: never;
  readonly transaction?: never;
}

/**
 * A postgres.js handle bound to one connection: the `tx` of `sql.begin(async (tx) => …)` (or of
 * `tx.savepoint`), or a connection from `sql.reserve()` after you ran `BEGIN` on it. The root
 * `sql` has `begin` and no `release` and so is not one of these: it runs each statement on any
 * free connection of its pool.
 */
export type PostgresJsTransaction = PostgresJsSql & ({ readonly begin?: never } | { release(): void });

/** Everything `enqueue` on a PostgreSQL (or PGlite) store takes as the caller's transaction. */
export type PostgresTransactionHandle = PgTransactionClient | PostgresJsTransaction | SqlExecutor;

/**
 * What a node-postgres client knows about its session without a round trip (pg 8.23 has both;
 * other clients may have neither, and are then asked nothing).
 */
export interface PgClientState {
  /** The transaction status byte of the server's last ReadyForQuery: idle, in a block, failed block. */
  getTransactionStatus?(): 'I' | 'T' | 'E' | null;
  /** True while no query is queued or in flight, so that status is the session's state now. */
  readonly readyForQuery?: unknown;
}
