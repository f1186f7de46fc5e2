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
}

/** The slice of a postgres.js `sql` (or transaction) that enqueue uses. */
export interface PostgresJsSql {
  unsafe(query: string, params?: unknown[], options?: { prepare?: boolean }): PromiseLike<unknown> & object;
}
