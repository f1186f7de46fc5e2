import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PostgresStore, type PostgresStoreOptions } from '../../src/stores/postgres/index.js';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A schema of its own for one test file, migrated, dropped by `drop()`. */
export interface TestDb {
  schema: string;
  pool: pg.Pool;
  store: PostgresStore;
  /** Another store on the same schema with other options. */
  makeStore(options?: Omit<PostgresStoreOptions, 'pool' | 'schema'>): PostgresStore;
  count(table?: string): Promise<number>;
  drop(): Promise<void>;
}

export async function createTestDb(
  prefix = 'mrt',
  options: Omit<PostgresStoreOptions, 'pool' | 'schema'> = {},
): Promise<TestDb> {
  const schema = `${prefix}_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 });
  pool.on('error', () => undefined);
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
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
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
