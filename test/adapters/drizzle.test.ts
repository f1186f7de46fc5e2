import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { drizzle as drizzlePg, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { pgSchema, text } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePostgresJs, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import pg from 'pg';
import postgres from 'postgres';
import { fromDrizzle } from '../../src/adapters/drizzle.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';

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
