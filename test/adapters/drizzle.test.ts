import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { sql } from 'drizzle-orm';
import { drizzle as drizzleSqlite, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { mysqlTable, varchar } from 'drizzle-orm/mysql-core';
import { drizzle as drizzleMysql, type MySql2Database } from 'drizzle-orm/mysql2';
import { drizzle as drizzlePg, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { pgSchema, text } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgresJs, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import mysql from 'mysql2/promise';
import pg from 'pg';
import postgres from 'postgres';
import { fromDrizzle } from '../../src/adapters/drizzle.js';
import { SqliteStore } from '../../src/stores/sqlite/index.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';
import { transactionContract } from './adapter-contract.js';

const ordersIn = (schema: string) => pgSchema(schema).table('orders', { id: text('id').primaryKey() });

describe('fromDrizzle on PostgreSQL', () => {
  const bed = adapterTestBed('drizzle');
  let pool: pg.Pool;
  let client: postgres.Sql;
  let nodePg: NodePgDatabase;
  let postgresJs: PostgresJsDatabase;
  let orders: ReturnType<typeof ordersIn>;
  before(() => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
    client = postgres(DATABASE_URL, { max: 3, onnotice: () => undefined });
    nodePg = drizzlePg(pool);
    postgresJs = drizzlePostgresJs(client);
    orders = ordersIn(bed.schema);
  });
  after(async () => {
    await client.end();
    await pool.end();
  });

  for (const driver of ['node-postgres', 'postgres.js'] as const) {
    const db = () => (driver === 'node-postgres' ? nodePg : postgresJs);

    it(`delivers the message of a committed transaction, and its business row is there (${driver})`, async () => {
      const { id, message } = bed.order();
      const messageId = await db().transaction(async (tx) => {
        await tx.insert(orders).values({ id });
        return bed.enqueue(fromDrizzle(tx), message);
      });
      assert.equal(await bed.orderExists(id), true);
      await bed.delivered(messageId);
    });

    it(`leaves neither the row nor the message when an error thrown in the callback rolls back (${driver})`, async () => {
      const { id, message } = bed.order();
      let messageId: string | undefined;
      await assert.rejects(
        db().transaction(async (tx) => {
          await tx.insert(orders).values({ id });
          messageId = await bed.enqueue(fromDrizzle(tx), message);
          throw new Error('business failure');
        }),
        /business failure/,
      );
      await bed.assertRolledBack(id, messageId, () =>
        db().transaction((tx) => bed.enqueue(fromDrizzle(tx), bed.order().message)),
      );
    });
  }

  it("rolls back with Drizzle's tx.rollback() and inside a nested transaction (savepoint)", async () => {
    const { id, message } = bed.order();
    let messageId: string | undefined;
    await assert.rejects(
      nodePg.transaction(async (tx) => {
        await tx.insert(orders).values({ id });
        messageId = await bed.enqueue(fromDrizzle(tx), message);
        tx.rollback();
      }),
      /Rollback/,
    );
    await bed.assertRolledBack(id, messageId, () =>
      nodePg.transaction((tx) => bed.enqueue(fromDrizzle(tx), bed.order().message)),
    );
    // A savepoint rolled back takes its message with it; the outer transaction's commits.
    const inner = bed.order();
    const outer = bed.order();
    let innerId: string | undefined;
    const outerId = await nodePg.transaction(async (tx) => {
      await assert.rejects(
        tx.transaction(async (sp) => {
          innerId = await bed.enqueue(fromDrizzle(sp), inner.message);
          throw new Error('inner failure');
        }),
        /inner failure/,
      );
      return bed.enqueue(fromDrizzle(tx), outer.message);
    });
    await bed.delivered(outerId);
    assert.ok(innerId);
    assert.equal(await bed.outboxHas(innerId), false);
    assert.equal(bed.wasDelivered(innerId), false);
  });

  it("renders the store's placeholders through Drizzle's dialect: repeated $n, and $n or ? inside literals kept", async () => {
    for (const db of [nodePg, postgresJs] as const) {
      const { rows } = await db.transaction((tx) =>
        fromDrizzle(tx).execute(
          `SELECT $1::int AS a, $1::int + $2::int AS b, '$1 ?' AS lit, $$ $2 $$ AS body, '{"k":1}'::jsonb ? 'k' AS has -- $3 ?`,
          [1, 2],
        ),
      );
      assert.deepEqual(rows, [{ a: 1, b: 3, lit: '$1 ?', body: ' $2 ', has: true }]);
    }
  });

  it('refuses the Drizzle database itself and other values, saying to pass tx', () => {
    assert.throws(
      // @ts-expect-error the database is not a transaction: the compiler refuses it too.
      () => fromDrizzle(nodePg),
      notATransaction('a Drizzle database', /NodePgDatabase.*db\.transaction\(async \(tx\)/),
    );
    assert.throws(
      // @ts-expect-error a pool is not a Drizzle transaction.
      () => fromDrizzle(pool),
      notATransaction('an object of class BoundPool', /fromDrizzle\(tx\)/),
    );
  });
});

describe('fromDrizzle on MySQL/MariaDB (mysql2)', () => {
  const bed = adapterTestBed('drizzle', 'mysql');
  let pool: mysql.Pool;
  let db: MySql2Database;
  const orders = mysqlTable('orders', { id: varchar('id', { length: 64 }).primaryKey() });
  before(() => {
    pool = mysql.createPool({ uri: bed.mysqlUrl, connectionLimit: 3 });
    db = drizzleMysql(pool);
  });
  after(async () => {
    await pool.end();
  });
  transactionContract(bed, (fn) =>
    db.transaction((tx) =>
      fn({
        executor: fromDrizzle(tx),
        insertOrder: async (id) => {
          await tx.insert(orders).values({ id });
        },
      }),
    ),
  );

  it('returns the rows of a statement, and none for an INSERT', async () => {
    const rows = await db.transaction(async (tx) => {
      const executor = fromDrizzle(tx);
      const inserted = await executor.execute('INSERT INTO orders (id) VALUES (?)', ['drizzle-rows']);
      assert.deepEqual(inserted.rows, []);
      return executor.execute("SELECT ? + 1 AS a, '?' AS q", [1]);
    });
    assert.deepEqual(rows.rows, [{ a: 2, q: '?' }]);
  });
});

describe('fromDrizzle on SQLite (better-sqlite3)', () => {
  const bed = adapterTestBed('drizzle', 'sqlite');
  let sqlite: Database.Database;
  let db: BetterSQLite3Database & { $client: Database.Database };
  let store: SqliteStore;
  before(async () => {
    sqlite = new Database(bed.sqliteFile);
    db = drizzleSqlite(sqlite);
    store = new SqliteStore({ db: sqlite });
  });
  after(async () => {
    await store.close();
    sqlite.close();
  });

  it("refuses Drizzle's synchronous transaction, naming store.enqueueSync(db.$client, …), which commits and rolls back with it", async () => {
    const committed = bed.order();
    const messageId = db.transaction((tx) => {
      assert.throws(
        () => fromDrizzle(tx),
        notATransaction(
          'a synchronous Drizzle SQLite transaction',
          /store\.enqueueSync\(db\.\$client, message\)/,
        ),
      );
      tx.run(sql`INSERT INTO orders (id) VALUES (${committed.id})`);
      return store.enqueueSync(db.$client, committed.message);
    });
    await bed.delivered(messageId);
    const rolledBack = bed.order();
    let lostId: string | undefined;
    assert.throws(
      () =>
        db.transaction((tx) => {
          tx.run(sql`INSERT INTO orders (id) VALUES (${rolledBack.id})`);
          lostId = store.enqueueSync(db.$client, rolledBack.message);
          throw new Error('business failure');
        }),
      /business failure/,
    );
    await bed.assertRolledBack(rolledBack.id, lostId, async () =>
      db.transaction(() => store.enqueueSync(db.$client, bed.order().message)),
    );
  });
});
