// Ambient transactions (issue 18): outbox.enqueue(message) finds the transaction the app keeps
// in AsyncLocalStorage, on the real PostgreSQL; without one it refuses and writes nothing.
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { after, before, describe, it } from 'node:test';

import type pg from 'pg';

import { isNotATransactionError } from '../src/core/errors/not-a-transaction-error.js';
import { Outbox } from '../src/core/outbox.js';
import { TransactionContext } from '../src/core/transaction-context.js';
import { createTestDb, type TestDb } from './helpers/postgres.js';

let db: TestDb;

before(async () => {
  db = await createTestDb('mramb');
});
after(() => db.drop());

async function topics(): Promise<string[]> {
  const res = await db.pool.query<{ topic: string }>(
    `SELECT topic FROM "${db.schema}".outbox ORDER BY topic`,
  );
  return res.rows.map((r) => r.topic);
}

async function clear(): Promise<void> {
  await db.pool.query(`TRUNCATE "${db.schema}".outbox`);
}

/** Runs `fn` on a client of its own inside BEGIN; commits, or rolls back when `rollback` or it throws. */
async function inTx<T>(fn: (client: pg.PoolClient) => Promise<T>, rollback = false): Promise<T> {
  const client = await db.pool.connect();
  try {
    await client.query('BEGIN');
    const value = await fn(client);
    await client.query(rollback ? 'ROLLBACK' : 'COMMIT');
    return value;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}

describe('ambient transactions', () => {
  it('enqueue(message) writes in the TransactionContext transaction: kept at commit, gone at rollback', async () => {
    await clear();
    const transactions = new TransactionContext<pg.PoolClient>();
    const outbox = new Outbox({ store: db.store, ambientTransaction: transactions });
    // Deep in the app: no handle passed down.
    const placeOrder = async (topic: string) => outbox.enqueue({ topic, payload: { n: 1 } });
    await inTx((client) => transactions.run(client, () => placeOrder('kept')));
    await inTx((client) => transactions.run(client, () => placeOrder('rolled-back')), true);
    const ids = await inTx((client) =>
      transactions.run(client, () =>
        outbox.enqueue(
          [
            { topic: 'group-a', payload: null },
            { topic: 'group-b', payload: null },
          ],
          { atomic: true },
        ),
      ),
    );
    assert.equal(ids.length, 2);
    assert.deepEqual(await topics(), ['group-a', 'kept']);
  });

  it('keeps concurrent scopes apart: each enqueue lands in its own scope transaction', async () => {
    await clear();
    const transactions = new TransactionContext<pg.PoolClient>();
    const outbox = new Outbox({ store: db.store, ambientTransaction: transactions });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        inTx(
          (client) =>
            transactions.run(client, async () => {
              await sleep(5 * (6 - i));
              await outbox.enqueue({ topic: `scope-${i}`, payload: null });
              await sleep(5 * i);
              await outbox.enqueue({ topic: `scope-${i}-again`, payload: null });
            }),
          i % 2 === 1,
        ),
      ),
    );
    assert.deepEqual(await topics(), [
      'scope-0',
      'scope-0-again',
      'scope-2',
      'scope-2-again',
      'scope-4',
      'scope-4-again',
    ]);
  });

  it('takes a function, as CLS libraries keep the transaction (a getter over their AsyncLocalStorage)', async () => {
    await clear();
    const cls = new AsyncLocalStorage<Map<string, unknown>>();
    const outbox = new Outbox({
      store: db.store,
      ambientTransaction: () => cls.getStore()?.get('tx') as pg.PoolClient | undefined,
    });
    await inTx((client) =>
      cls.run(new Map([['tx', client]]), () => outbox.enqueue({ topic: 'from-cls', payload: null })),
    );
    assert.deepEqual(await topics(), ['from-cls']);
  });

  it('refuses enqueue(message) outside a scope, or on an Outbox without ambientTransaction, writing nothing', async () => {
    await clear();
    const transactions = new TransactionContext<pg.PoolClient>();
    const outbox = new Outbox({ store: db.store, ambientTransaction: transactions });
    await assert.rejects(outbox.enqueue({ topic: 'outside', payload: null }), (err: unknown) => {
      assert.ok(isNotATransactionError(err), String(err));
      assert.match(err.message, /found no ambient transaction here/);
      assert.match(err.message, /never enqueues in autocommit/);
      return true;
    });
    const plain = new Outbox({ store: db.store });
    await assert.rejects(plain.enqueue([{ topic: 'no-ambient', payload: null }]), (err: unknown) => {
      assert.ok(isNotATransactionError(err), String(err));
      assert.match(err.message, /has no ambientTransaction: pass your transaction first/);
      return true;
    });
    assert.deepEqual(await topics(), []);
  });

  it('still takes the transaction first, which wins over the ambient one', async () => {
    await clear();
    const transactions = new TransactionContext<pg.PoolClient>();
    const outbox = new Outbox({ store: db.store, ambientTransaction: transactions });
    await inTx(async (explicit) => {
      await inTx(
        (ambient) =>
          transactions.run(ambient, () => outbox.enqueue(explicit, { topic: 'explicit', payload: null })),
        true,
      );
    });
    assert.deepEqual(await topics(), ['explicit']);
  });

  it('refuses an ambientTransaction that is neither a function nor has current()', () => {
    assert.throws(
      () => new Outbox({ store: db.store, ambientTransaction: 'tx' as never }),
      /ambientTransaction/,
    );
  });
});
