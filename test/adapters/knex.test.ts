import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import knexFactory, { type Knex } from 'knex';
import { fromKnex } from '../../src/adapters/knex.js';
import { isPlaceholderError } from '../../src/adapters/placeholder-error.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';
import { transactionContract } from './adapter-contract.js';

describe('fromKnex on PostgreSQL', () => {
  const bed = adapterTestBed('knex');
  let knex: Knex;
  before(() => {
    knex = knexFactory({ client: 'pg', connection: DATABASE_URL, pool: { min: 0, max: 3 } });
  });
  after(async () => {
    await knex.destroy();
  });

  it('delivers the message of a committed transaction, and its business row is there', async () => {
    const { id, message } = bed.order();
    const messageId = await knex.transaction(async (trx) => {
      await trx.withSchema(bed.schema).table('orders').insert({ id });
      return bed.enqueue(fromKnex(trx), message);
    });
    assert.equal(await bed.orderExists(id), true);
    await bed.delivered(messageId);
  });

  it('leaves neither the row nor the message when an error thrown in the callback rolls back', async () => {
    const { id, message } = bed.order();
    let messageId: string | undefined;
    await assert.rejects(
      knex.transaction(async (trx) => {
        await trx.withSchema(bed.schema).table('orders').insert({ id });
        messageId = await bed.enqueue(fromKnex(trx), message);
        throw new Error('business failure');
      }),
      /business failure/,
    );
    await bed.assertRolledBack(id, messageId, () =>
      knex.transaction((trx) => bed.enqueue(fromKnex(trx), bed.order().message)),
    );
  });

  it('rolls back with a transaction object ended by trx.rollback()', async () => {
    const { id, message } = bed.order();
    const trx = await knex.transaction();
    await trx.withSchema(bed.schema).table('orders').insert({ id });
    const messageId = await bed.enqueue(fromKnex(trx), message);
    await trx.rollback();
    await bed.assertRolledBack(id, messageId, async () => {
      const later = await knex.transaction();
      const laterId = await bed.enqueue(fromKnex(later), bed.order().message);
      await later.commit();
      return laterId;
    });
  });

  it("rewrites the store's $n to Knex's ?, keeping the JSON operators ?, ?| and ? in literals as text", async () => {
    const { rows } = await knex.transaction((trx) =>
      fromKnex(trx).execute(
        `SELECT $1::int AS a, $1::int + $2::int AS b, '?' AS q, '{"k":1}'::jsonb ? 'k' AS has, ` +
          `'{"k":1}'::jsonb ?| array['z', $3::text] AS any, $4::text[] AS arr, $5::bytea AS bytes /* ?? */`,
        [1, 2, 'k', ['x', 'y'], Buffer.from('hi')],
      ),
    );
    assert.deepEqual(rows, [
      { a: 1, b: 3, q: '?', has: true, any: true, arr: ['x', 'y'], bytes: Buffer.from('hi') },
    ]);
  });

  it('sends an undefined parameter as NULL, as the drivers do (Knex alone refuses it)', async () => {
    const { rows } = await knex.transaction((trx) =>
      fromKnex(trx).execute('SELECT $1::text IS NULL AS missing', [undefined]),
    );
    assert.deepEqual(rows, [{ missing: true }]);
  });

  it('refuses the knex instance, saying to pass trx', () => {
    assert.throws(
      // @ts-expect-error the knex instance is not a transaction: the compiler refuses it too.
      () => fromKnex(knex),
      notATransaction('a Knex instance', /knex\.transaction\(async \(trx\)/),
    );
    // @ts-expect-error nor is undefined.
    assert.throws(() => fromKnex(undefined), notATransaction('undefined', /fromKnex\(trx\)/));
  });
});

for (const backend of ['mysql', 'sqlite'] as const) {
  describe(`fromKnex on ${backend === 'mysql' ? 'MySQL/MariaDB (mysql2)' : 'SQLite (better-sqlite3)'}`, () => {
    const bed = adapterTestBed('knex', backend);
    let knex: Knex;
    before(() => {
      knex =
        backend === 'mysql'
          ? knexFactory({ client: 'mysql2', connection: bed.mysqlUrl, pool: { min: 0, max: 3 } })
          : knexFactory({
              client: 'better-sqlite3',
              connection: { filename: bed.sqliteFile },
              useNullAsDefault: true,
            });
    });
    after(async () => {
      await knex.destroy();
    });
    transactionContract(bed, (fn) =>
      knex.transaction((trx) =>
        fn({
          executor: fromKnex(trx),
          insertOrder: async (id) => {
            await trx('orders').insert({ id });
          },
        }),
      ),
    );

    it("passes the store's ? placeholders as they are, and refuses a ? that Knex would take for a binding", async () => {
      await knex.transaction(async (trx) => {
        const executor = fromKnex(trx);
        assert.deepEqual((await executor.execute('SELECT ? + 1 AS a, ? AS b', [1, 'x'])).rows, [
          { a: 2, b: 'x' },
        ]);
        assert.deepEqual(
          (await executor.execute('INSERT INTO orders (id) VALUES (?)', ['knex-rows'])).rows,
          [],
        );
        await assert.rejects(executor.execute("SELECT '?' AS q", []), (err: unknown) => {
          assert.ok(isPlaceholderError(err), String(err));
          assert.match(err.message, /Knex cannot send the `\?` at offset 8 as text/);
          return true;
        });
      });
    });
  });
}
