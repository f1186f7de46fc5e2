import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { CamelCasePlugin, Kysely, MysqlDialect, PostgresDialect, SqliteDialect, sql } from 'kysely';
import { createPool as createMysqlPool } from 'mysql2';
import pg from 'pg';
import { fromKysely } from '../../src/adapters/kysely.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';
import { transactionContract } from './adapter-contract.js';

interface Db {
  orders: { id: string };
}

describe('fromKysely on PostgreSQL', () => {
  const bed = adapterTestBed('kysely');
  let db: Kysely<Db>;
  before(() => {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
    db = new Kysely<Db>({
      dialect: new PostgresDialect({ pool }),
      // A plugin that renames result columns: the adapter must not let it touch the store's rows.
      plugins: [new CamelCasePlugin()],
    }).withSchema(bed.schema);
  });
  after(async () => {
    await db.destroy();
  });

  it('delivers the message of a committed transaction, and its business row is there', async () => {
    const { id, message } = bed.order();
    const messageId = await db.transaction().execute(async (trx) => {
      await trx.insertInto('orders').values({ id }).execute();
      return bed.enqueue(fromKysely(trx), message);
    });
    assert.equal(await bed.orderExists(id), true);
    await bed.delivered(messageId);
  });

  it('leaves neither the row nor the message when an error thrown in the callback rolls the transaction back', async () => {
    const { id, message } = bed.order();
    let messageId: string | undefined;
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('orders').values({ id }).execute();
        messageId = await bed.enqueue(fromKysely(trx), message);
        assert.equal(await bed.outboxHas(messageId), false, 'not visible before commit');
        throw new Error('business failure');
      }),
      /business failure/,
    );
    await bed.assertRolledBack(id, messageId, () =>
      db.transaction().execute((trx) => bed.enqueue(fromKysely(trx), bed.order().message)),
    );
  });

  it('rolls back with a controlled transaction too', async () => {
    const { id, message } = bed.order();
    const trx = await db.startTransaction().execute();
    await trx.insertInto('orders').values({ id }).execute();
    const messageId = await bed.enqueue(fromKysely(trx), message);
    await trx.rollback().execute();
    await bed.assertRolledBack(id, messageId, async () => {
      const later = await db.startTransaction().execute();
      const laterId = await bed.enqueue(fromKysely(later), bed.order().message);
      await later.commit().execute();
      return laterId;
    });
  });

  it('returns rows as plain objects with their own column names, past the CamelCasePlugin', async () => {
    const rows = await db
      .transaction()
      .execute((trx) =>
        fromKysely(trx).execute('SELECT $1::int AS snake_case, $2::text AS other_col', [7, 'x']),
      );
    assert.deepEqual(rows.rows, [{ snake_case: 7, other_col: 'x' }]);
    assert.equal(Object.getPrototypeOf(rows.rows[0]), Object.prototype);
  });

  it('refuses the Kysely instance and a connection outside a transaction, saying to pass trx', async () => {
    assert.throws(
      // @ts-expect-error the Kysely instance is not a transaction: the compiler refuses it too.
      () => fromKysely(db),
      notATransaction('a Kysely instance', /db\.transaction\(\)\.execute\(async \(trx\)/),
    );
    await db.connection().execute(async (conn) => {
      // @ts-expect-error a connection is not a transaction either.
      assert.throws(() => fromKysely(conn), notATransaction('a Kysely instance', /startTransaction/));
      await sql`SELECT 1`.execute(conn);
    });
    // @ts-expect-error nor is a string.
    assert.throws(() => fromKysely('trx'), notATransaction('a string', /trx/));
  });
});

describe('fromKysely on MySQL/MariaDB', () => {
  const bed = adapterTestBed('kysely', 'mysql');
  let pool: ReturnType<typeof createMysqlPool>;
  let db: Kysely<Db>;
  before(() => {
    pool = createMysqlPool({ uri: bed.mysqlUrl, connectionLimit: 3 });
    db = new Kysely<Db>({ dialect: new MysqlDialect({ pool }) });
  });
  after(async () => {
    await db.destroy();
  });
  transactionContract(bed, (fn) =>
    db.transaction().execute((trx) =>
      fn({
        executor: fromKysely(trx),
        insertOrder: async (id) => {
          await trx.insertInto('orders').values({ id }).execute();
        },
      }),
    ),
  );
});

describe('fromKysely on SQLite (better-sqlite3)', () => {
  const bed = adapterTestBed('kysely', 'sqlite');
  let db: Kysely<Db>;
  before(() => {
    db = new Kysely<Db>({ dialect: new SqliteDialect({ database: new Database(bed.sqliteFile) }) });
  });
  after(async () => {
    await db.destroy();
  });
  transactionContract(bed, (fn) =>
    db.transaction().execute((trx) =>
      fn({
        executor: fromKysely(trx),
        insertOrder: async (id) => {
          await trx.insertInto('orders').values({ id }).execute();
        },
      }),
    ),
  );
});
