import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DataSource } from 'typeorm';
import { fromTypeORM } from '../../src/adapters/typeorm.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';
import { transactionContract } from './adapter-contract.js';

describe('fromTypeORM on PostgreSQL', () => {
  const bed = adapterTestBed('typeorm');
  let dataSource: DataSource;
  before(async () => {
    dataSource = new DataSource({ type: 'postgres', url: DATABASE_URL, poolSize: 3, entities: [] });
    await dataSource.initialize();
  });
  after(async () => {
    await dataSource.destroy();
  });

  it('delivers the message of a committed transaction, and its business row is there', async () => {
    const { id, message } = bed.order();
    const messageId = await dataSource.transaction(async (manager) => {
      await manager.query(`INSERT INTO ${bed.orders} (id) VALUES ($1)`, [id]);
      return bed.enqueue(fromTypeORM(manager), message);
    });
    assert.equal(await bed.orderExists(id), true);
    await bed.delivered(messageId);
  });

  it('leaves neither the row nor the message when an error thrown in the callback rolls back', async () => {
    const { id, message } = bed.order();
    let messageId: string | undefined;
    await assert.rejects(
      dataSource.transaction(async (manager) => {
        await manager.query(`INSERT INTO ${bed.orders} (id) VALUES ($1)`, [id]);
        messageId = await bed.enqueue(fromTypeORM(manager), message);
        throw new Error('business failure');
      }),
      /business failure/,
    );
    await bed.assertRolledBack(id, messageId, () =>
      dataSource.transaction((manager) => bed.enqueue(fromTypeORM(manager), bed.order().message)),
    );
  });

  it('works on a QueryRunner after startTransaction, rolled back by rollbackTransaction, and refuses it once ended', async () => {
    const { id, message } = bed.order();
    const runner = dataSource.createQueryRunner();
    try {
      await runner.startTransaction();
      await runner.manager.query(`INSERT INTO ${bed.orders} (id) VALUES ($1)`, [id]);
      const executor = fromTypeORM(runner);
      const messageId = await bed.enqueue(executor, message);
      await runner.rollbackTransaction();
      // The executor checks before each statement: the transaction it was made for has ended.
      await assert.rejects(
        bed.enqueue(executor, bed.order().message),
        notATransaction('a TypeORM QueryRunner outside a transaction', /isTransactionActive is false/),
      );
      await bed.assertRolledBack(id, messageId, async () => {
        await runner.startTransaction();
        const laterId = await bed.enqueue(fromTypeORM(runner.manager), bed.order().message);
        await runner.commitTransaction();
        return laterId;
      });
    } finally {
      await runner.release();
    }
    assert.throws(
      () => fromTypeORM(runner),
      notATransaction('a released TypeORM QueryRunner', /was released/),
    );
  });

  it('returns the rows of a statement as plain objects', async () => {
    const { rows } = await dataSource.transaction((manager) =>
      fromTypeORM(manager).execute('SELECT $1::int AS a, $2::text[] AS arr', [1, ['x']]),
    );
    assert.deepEqual(rows, [{ a: 1, arr: ['x'] }]);
  });

  it('refuses dataSource.manager and the DataSource, saying to pass the manager of dataSource.transaction', () => {
    assert.throws(
      () => fromTypeORM(dataSource.manager),
      notATransaction(
        'a TypeORM EntityManager outside a transaction',
        /dataSource\.transaction\(async \(manager\)/,
      ),
    );
    assert.throws(
      // @ts-expect-error a DataSource is not a manager: the compiler refuses it too.
      () => fromTypeORM(dataSource),
      notATransaction('a TypeORM DataSource', /dataSource\.transaction/),
    );
  });
});

for (const backend of ['mysql', 'sqlite'] as const) {
  describe(`fromTypeORM on ${backend === 'mysql' ? 'MySQL/MariaDB (mysql2)' : 'SQLite (better-sqlite3)'}`, () => {
    const bed = adapterTestBed('typeorm', backend);
    let dataSource: DataSource;
    before(async () => {
      dataSource =
        backend === 'mysql'
          ? new DataSource({ type: 'mariadb', url: bed.mysqlUrl, poolSize: 3, entities: [] })
          : new DataSource({ type: 'better-sqlite3', database: bed.sqliteFile, entities: [] });
      await dataSource.initialize();
    });
    after(async () => {
      await dataSource.destroy();
    });
    transactionContract(bed, (fn) =>
      dataSource.transaction((manager) =>
        fn({
          executor: fromTypeORM(manager),
          insertOrder: async (id) => {
            await manager.query('INSERT INTO orders (id) VALUES (?)', [id]);
          },
        }),
      ),
    );

    it('returns the rows of a statement, and none for an INSERT', async () => {
      await dataSource.transaction(async (manager) => {
        const executor = fromTypeORM(manager);
        assert.deepEqual((await executor.execute('SELECT ? + 1 AS a', [1])).rows, [{ a: 2 }]);
        assert.deepEqual(
          (await executor.execute('INSERT INTO orders (id) VALUES (?)', ['typeorm-rows'])).rows,
          [],
        );
      });
    });
  });
}
