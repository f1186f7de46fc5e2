import type { EntityManager, QueryRunner } from 'typeorm';
import { NotATransactionError } from '../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../core/ports.js';
import { describeValue, isFunction, requireObject, type Shape } from './adapter-support.js';

const INSTEAD =
  'pass the `manager` of `dataSource.transaction(async (manager) => { …; await outbox.enqueue(fromTypeORM(manager), message) })`, ' +
  'or a QueryRunner (or its `manager`) after `await queryRunner.startTransaction()`';

const isQueryRunner = (o: Shape): boolean => isFunction(o.query) && isFunction(o.startTransaction);

function rejectInactive(runner: Shape, how: string): never {
  const released = runner.isReleased === true;
  throw new NotATransactionError(
    released ? 'a released TypeORM QueryRunner' : 'a TypeORM QueryRunner outside a transaction',
    `fromTypeORM() got ${how} whose QueryRunner ${released ? 'was released' : 'has no transaction open (isTransactionActive is false)'}: ` +
      'the message would be committed on its own, whatever your business transaction does. ' +
      `Instead, ${INSTEAD}`,
  );
}

/**
 * A TypeORM transaction as the store's {@link SqlExecutor}: the store's statements run on the
 * transaction's QueryRunner, so the message commits and rolls back with your business rows.
 *
 * TypeORM sends raw SQL to its driver as it is, so the store's placeholders are already the
 * database's own (`$1` on PostgreSQL, `?` on MySQL/MariaDB and SQLite). Rows are the driver's
 * records, as plain objects.
 *
 * @param manager - the `EntityManager` TypeORM hands you in `dataSource.transaction(async
 *   (manager) => …)`, or a `QueryRunner` (or `queryRunner.manager`) after `startTransaction()`.
 *   `dataSource.manager` and the `DataSource` are refused: without a QueryRunner of its own, a
 *   manager runs each statement on a fresh connection that commits at once. Checked again before
 *   each statement, so a transaction that already ended is refused too.
 * @throws NotATransactionError when `manager` is not inside a transaction.
 *
 * @example
 * ```ts
 * await dataSource.transaction(async (manager) => {
 *   await manager.save(Order, order);
 *   await outbox.enqueue(fromTypeORM(manager), { topic: 'order.placed', key: order.id, payload: order });
 * });
 * ```
 */
export function fromTypeORM(manager: EntityManager | QueryRunner): SqlExecutor {
  const o = requireObject(manager, 'fromTypeORM', INSTEAD);
  let runner: QueryRunner;
  let how: string;
  if (isQueryRunner(o)) {
    runner = manager as QueryRunner;
    how = 'a QueryRunner';
  } else if (isFunction(o.createQueryRunner) && isFunction(o.transaction) && 'manager' in o) {
    throw new NotATransactionError(
      'a TypeORM DataSource',
      'fromTypeORM() got the DataSource, not a transaction: each of its statements runs on a fresh connection ' +
        'and commits at once, so the message would be committed even when your transaction rolls back. ' +
        `Instead, ${INSTEAD}`,
    );
  } else if (isFunction(o.query) && isFunction(o.transaction) && 'connection' in o) {
    const own = o.queryRunner;
    if (own === undefined || own === null) {
      throw new NotATransactionError(
        'a TypeORM EntityManager outside a transaction',
        'fromTypeORM() got an EntityManager with no QueryRunner (such as `dataSource.manager`): it runs each ' +
          'statement on a fresh connection that commits at once, so the message would be committed even when ' +
          `your transaction rolls back. Instead, ${INSTEAD}`,
      );
    }
    runner = own as QueryRunner;
    how = 'an EntityManager';
  } else {
    throw new NotATransactionError(
      describeValue(manager),
      `fromTypeORM() needs a TypeORM EntityManager or QueryRunner, got ${describeValue(manager)}: ${INSTEAD}`,
    );
  }
  const check = () => {
    if (runner.isReleased || !runner.isTransactionActive) rejectInactive(runner as unknown as Shape, how);
  };
  check();
  return {
    async execute<Row>(sql: string, params: readonly unknown[] = []) {
      check();
      // The structured result: `records` are the rows, whatever the statement (the plain result
      // of an UPDATE on PostgreSQL is [rows, count]).
      const result = await runner.query(sql, [...params], true);
      const records: unknown = result.records;
      return { rows: (Array.isArray(records) ? records : []) as Row[] };
    },
  };
}
