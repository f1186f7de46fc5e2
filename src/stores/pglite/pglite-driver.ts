import type { PgPool, PgPoolClient, PgQueryResult } from '../postgres/postgres-driver.js';

/**
 * The slice of PGlite (`@electric-sql/pglite`) this store uses. Declared here so the store does
 * not import PGlite's types: pass your own `PGlite` instance (or anything with this shape).
 */
export interface PGliteResults {
  rows: Array<Record<string, unknown>>;
  affectedRows?: number;
}

/** What `db.transaction(async (tx) => …)` hands its callback; `enqueue` takes it as `tx`. */
export interface PGliteTransaction {
  query(sql: string, params?: unknown[]): Promise<PGliteResults>;
  /** Runs one or more statements without parameters (the simple query protocol). */
  exec(sql: string): Promise<PGliteResults[]>;
}

/** A PGlite database: one embedded PostgreSQL, one connection. */
export interface PGliteDatabase extends PGliteTransaction {
  transaction<T>(callback: (tx: PGliteTransaction) => Promise<T>): Promise<T>;
  /** Subscribes to a NOTIFY channel (an SQL identifier, quoted when it has capitals). */
  listen(channel: string, callback: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
  readonly closed?: boolean;
}

/** PGlite returns `bytea` as a plain `Uint8Array`; the store (and transports) expect a `Buffer`. */
function toPgResult(res: PGliteResults): PgQueryResult {
  for (const row of res.rows) {
    for (const [column, value] of Object.entries(row)) {
      if (value instanceof Uint8Array && !Buffer.isBuffer(value)) {
        row[column] = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      }
    }
  }
  return { rows: res.rows, rowCount: res.affectedRows ?? res.rows.length };
}

/**
 * Like node-postgres: a statement without parameters goes through the simple query protocol,
 * which (unlike PGlite's `query`) takes several statements at once, as migration files hold.
 */
async function run(target: PGliteTransaction, text: string, values?: unknown[]): Promise<PgQueryResult> {
  if (values === undefined || values.length === 0) {
    const results = await target.exec(text);
    return toPgResult(results[results.length - 1] ?? { rows: [] });
  }
  return toPgResult(await target.query(text, values));
}

function released(): never {
  throw new Error('this PGlite client was released; connect() again');
}

/**
 * A `pg.Pool` look-alike over one PGlite instance, so {@link PostgresStore} runs unchanged on it.
 *
 * PGlite is a single connection. `connect()` hands out that connection exclusively until
 * `release()`: it runs inside PGlite's own `transaction()`, which holds the lock that every
 * `db.query()` and `db.transaction()` waits for — the store's pool-level queries and the
 * application's own queries alike. A statement of another caller can therefore never land in
 * the middle of the store's BEGIN…COMMIT (a mutex of our own could not stop the application's
 * direct `db.query()` calls).
 *
 * PGlite opens that transaction with BEGIN; the store's own BEGIN inside it only draws a
 * warning, and PGlite's COMMIT at release finds the store's transaction already finished.
 */
export function pglitePool(db: PGliteDatabase): PgPool {
  return {
    async query(text, values) {
      return run(db, text, values);
    },

    connect() {
      return new Promise<PgPoolClient>((resolve, reject) => {
        let handedOut = false;
        db.transaction(async (tx) => {
          let release!: () => void;
          const done = new Promise<void>((r) => (release = r));
          let open = true;
          const client: PgPoolClient = {
            async query(text, values) {
              if (!open) released();
              return run(tx, text, values);
            },
            release() {
              if (!open) return;
              open = false;
              release();
            },
            // Errors surface from query(); notifications go through PGlite's listen().
            on: () => client,
            removeListener: () => client,
          };
          handedOut = true;
          resolve(client);
          await done;
        }).catch((err: unknown) => {
          // After release, PGlite's closing COMMIT may find a transaction the store left failed;
          // the store already saw that error from its own statements.
          if (!handedOut) reject(err);
        });
      });
    },

    async end() {
      // The store that made the PGlite instance closes it; a pool adapter owns nothing.
    },
  };
}
