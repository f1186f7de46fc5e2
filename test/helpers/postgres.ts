import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PostgresStore, type PostgresStoreOptions } from '../../src/stores/postgres/index.js';
import { LeakError } from './leak-guard.js';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * Longest `drop()` waits for the pool to end. `pool.end()` waits for every client to come back,
 * so a client nobody releases would otherwise hang the test file for good.
 */
const END_DEADLINE_MS = 10_000;

/** A schema of its own for one test file, migrated, dropped by `drop()`. */
export interface TestDb {
  schema: string;
  pool: pg.Pool;
  store: PostgresStore;
  /** Another store on the same schema with other options. */
  makeStore(options?: Omit<PostgresStoreOptions, 'pool' | 'schema'>): PostgresStore;
  count(table?: string): Promise<number>;
  /**
   * Drops the schema and ends the pool. Rejects with a {@link LeakError} when pool clients are
   * still checked out (a `pool.connect()` without `release()`, a relay not stopped), naming what
   * each was doing; those clients are destroyed and the schema dropped all the same.
   */
  drop(): Promise<void>;
}

/** What the server says a leaked client's backend is doing, e.g. `idle in transaction: INSERT …`. */
async function describeBackends(pids: number[]): Promise<Map<number, string>> {
  const found = new Map<number, string>();
  if (pids.length === 0) return found;
  // A client of its own: the pool may be full of the very clients being described.
  const client = new pg.Client({ connectionString: DATABASE_URL });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const res = await client.query<{ pid: number; state: string | null; query: string | null }>(
      'SELECT pid, state, query FROM pg_stat_activity WHERE pid = ANY($1)',
      [pids],
    );
    for (const row of res.rows) {
      const query = (row.query ?? '').replace(/\s+/g, ' ').trim();
      found.set(
        row.pid,
        `${row.state ?? 'unknown state'}, last statement: ${query.slice(0, 120) || '(none)'}`,
      );
    }
  } catch {
    // The description is a courtesy; the count of clients is the finding.
  } finally {
    await client.end().catch(() => undefined);
  }
  return found;
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LeakError(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export async function createTestDb(
  prefix = 'mrt',
  options: Omit<PostgresStoreOptions, 'pool' | 'schema'> = {},
): Promise<TestDb> {
  const schema = `${prefix}_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 });
  pool.on('error', () => undefined);
  // Which clients are checked out right now, kept from the pool's own events.
  const checkedOut = new Set<pg.PoolClient>();
  pool.on('acquire', (client) => checkedOut.add(client));
  pool.on('release', (_err, client) => checkedOut.delete(client));
  pool.on('remove', (client) => checkedOut.delete(client));
  const store = new PostgresStore({ pool, schema, ...options });
  await store.migrate();
  return {
    schema,
    pool,
    store,
    makeStore: (o = {}) => new PostgresStore({ pool, schema, ...o }),
    async count(table = 'outbox') {
      const res = await pool.query(`SELECT count(*)::int AS n FROM "${schema}"."${table}"`);
      return res.rows[0].n as number;
    },
    async drop() {
      const leaked = [...checkedOut];
      let report: string | undefined;
      if (leaked.length > 0) {
        // pg's Client knows its backend's pid; @types/pg does not declare it.
        const pids = leaked.map(
          (c) => (c as pg.PoolClient & { processID?: number | null }).processID ?? null,
        );
        const states = await describeBackends(pids.filter((p): p is number => typeof p === 'number'));
        const lines = pids.map(
          (pid) => `  - backend ${pid ?? '?'}: ${(pid !== null && states.get(pid)) || 'gone'}`,
        );
        report =
          `test schema ${schema}: drop() found ${leaked.length} pool client(s) still checked out:\n` +
          `${lines.join('\n')}\n` +
          'Release every client from pool.connect() in a finally block, and stop every relay, before ' +
          'drop(). They were destroyed and the schema dropped anyway.';
        // Destroyed, not returned: one may be inside a transaction holding locks DROP SCHEMA needs.
        for (const client of leaked) client.release(true);
      }
      await withDeadline(
        pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`),
        END_DEADLINE_MS,
        `DROP SCHEMA ${schema}`,
      );
      await withDeadline(pool.end(), END_DEADLINE_MS, `the pool of test schema ${schema} ending`);
      if (report) throw new LeakError(report);
    },
  };
}

/** Runs `fn` inside BEGIN/COMMIT on one client; rolls back when it throws. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}
