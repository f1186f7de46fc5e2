import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import postgres from 'postgres';
import {
  isNotATransactionError,
  Outbox,
  type MessageInput,
  type OutboxStore,
  type SqlExecutor,
} from '../src/core/index.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import type { PostgresTransactionHandle } from '../src/stores/postgres/index.js';
import { createTestDb, DATABASE_URL, type TestDb } from './helpers/postgres.js';

const message: MessageInput = { topic: 'handles', payload: { n: 1 } };

/** Asserts a NotATransactionError about `handle` that says what to pass instead. */
function notATransaction(handle: string, instead: RegExp) {
  return (err: unknown) => {
    assert.ok(isNotATransactionError(err), `expected NotATransactionError, got ${String(err)}`);
    assert.equal(err.code, 'not_a_transaction');
    assert.equal(err.handle, handle);
    assert.match(err.message, instead);
    return true;
  };
}

/** A pg client whose statements are counted, to show which checks cost a round trip. */
function counting(client: pg.PoolClient): { client: pg.PoolClient; sent: string[] } {
  const sent: string[] = [];
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const counted = Object.create(client) as pg.PoolClient;
  (counted as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const first = args[0];
    sent.push(typeof first === 'string' ? first : String((first as { text?: unknown }).text));
    return query(...args);
  };
  return { client: counted, sent };
}

/** An ORM-style executor over a pg client: Mailroom cannot see the client behind it. */
function executorOver(client: pg.PoolClient): SqlExecutor & { sent: string[] } {
  const sent: string[] = [];
  return {
    sent,
    async execute<Row>(sql: string, params: readonly unknown[] = []) {
      sent.push(sql);
      const res = await client.query(sql, params as unknown[]);
      return { rows: res.rows as Row[] };
    },
  };
}

describe('enqueue handles', () => {
  let db: TestDb;
  let outbox: Outbox<PostgresTransactionHandle>;
  let checked: Outbox<PostgresTransactionHandle>;
  let sql: postgres.Sql;
  before(async () => {
    db = await createTestDb('handles');
    outbox = new Outbox({ store: db.store });
    checked = new Outbox({ store: db.store, requireTransaction: true });
    sql = postgres(DATABASE_URL, { max: 2, onnotice: () => undefined });
  });
  after(async () => {
    await sql.end();
    await db.drop();
  });

  it('refuses a pg.Pool inside a transaction that rolls back, so no phantom row is left', async () => {
    const before = await db.count();
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      await assert.rejects(
        // @ts-expect-error a pg.Pool is not a transaction handle: the compiler refuses it too.
        outbox.enqueue(db.pool, message),
        notATransaction('a pg.Pool', /pool\.connect\(\).*BEGIN/),
      );
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    assert.equal(await db.count(), before);
  });

  it('refuses the root postgres.js sql and takes the tx of sql.begin, whose rollback leaves no row', async () => {
    const before = await db.count();
    await assert.rejects(
      // @ts-expect-error the root sql is not a transaction handle: the compiler refuses it too.
      outbox.enqueue(sql, message),
      notATransaction('the root postgres.js sql', /sql\.begin/),
    );
    assert.equal(await db.count(), before);
    await assert.rejects(
      sql.begin(async (tx) => {
        await outbox.enqueue(tx, message);
        assert.equal(
          (await tx.unsafe(`SELECT count(*)::int AS n FROM "${db.schema}".outbox`))[0]?.n,
          before + 1,
        );
        throw new Error('business failure');
      }),
      /business failure/,
    );
    assert.equal(await db.count(), before);
    await sql.begin((tx) => outbox.enqueue(tx, message));
    assert.equal(await db.count(), before + 1);
  });

  it('refuses a pg client outside BEGIN without a round trip, and writes through one inside BEGIN (also one still in flight) whose rollback leaves no row', async () => {
    const before = await db.count();
    const { client, sent } = counting(await db.pool.connect());
    try {
      await assert.rejects(
        outbox.enqueue(client, message),
        notATransaction('a pg client outside BEGIN', /BEGIN/),
      );
      assert.deepEqual(sent, [], 'refused before any statement was sent');

      await client.query('BEGIN');
      await outbox.enqueue(client, message);
      await client.query('ROLLBACK');
      assert.equal(await db.count(), before);

      // A BEGIN sent without await is still a correct call: the client runs the enqueue after it.
      const begun = client.query('BEGIN');
      await outbox.enqueue(client, message);
      await begun;
      await client.query('ROLLBACK');
      assert.equal(await db.count(), before);

      // After COMMIT the client is outside a transaction again.
      await client.query('BEGIN');
      await outbox.enqueue(client, message);
      await client.query('COMMIT');
      assert.equal(await db.count(), before + 1);
      await assert.rejects(outbox.enqueue(client, message), { name: 'NotATransactionError' });
      assert.equal(await db.count(), before + 1);
    } finally {
      client.release();
    }
  });

  it('with requireTransaction, refuses an executor outside a transaction block and accepts it inside one', async () => {
    const before = await db.count();
    const client = await db.pool.connect();
    try {
      // Without the option, an executor hides the client's state: the INSERT commits on its own.
      const unchecked = executorOver(client);
      await outbox.enqueue(unchecked, message);
      assert.equal(await db.count(), before + 1);

      const outside = executorOver(client);
      await assert.rejects(
        checked.enqueue(outside, message),
        notATransaction('a connection outside a transaction block', /25P01/),
      );
      assert.equal(outside.sent.length, 1, 'only the check ran, not the INSERT');
      assert.equal(await db.count(), before + 1);

      const inside = executorOver(client);
      await client.query('BEGIN');
      await checked.enqueue(inside, message);
      assert.equal(
        (await client.query(`SELECT count(*)::int AS n FROM "${db.schema}".outbox`)).rows[0].n,
        before + 2,
      );
      await client.query('ROLLBACK');
      assert.equal(inside.sent.length, 2, 'one round trip for the check, one for the INSERT');
      assert.equal(await db.count(), before + 1);
    } finally {
      client.release();
    }
  });

  it('with requireTransaction, refuses a postgres.js reserved connection outside BEGIN and accepts it after BEGIN', async () => {
    const before = await db.count();
    const reserved = await sql.reserve();
    try {
      await assert.rejects(checked.enqueue(reserved, message), { name: 'NotATransactionError' });
      assert.equal(await db.count(), before);
      await reserved.unsafe('BEGIN');
      await checked.enqueue(reserved, message);
      await reserved.unsafe('ROLLBACK');
      assert.equal(await db.count(), before);
      // After ROLLBACK the connection is outside a block again.
      await assert.rejects(checked.enqueue(reserved, message), { name: 'NotATransactionError' });
      assert.equal(await db.count(), before);
    } finally {
      reserved.release();
    }
  });

  it('with requireTransaction, accepts sql.begin and a pg client in BEGIN, the latter without an extra round trip', async () => {
    const before = await db.count();
    await sql.begin((tx) => checked.enqueue(tx, message));
    const { client, sent } = counting(await db.pool.connect());
    try {
      await client.query('BEGIN');
      sent.length = 0;
      await checked.enqueue(client, message);
      assert.equal(sent.length, 1, 'the client knew it was in a transaction: only the INSERT ran');
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    assert.equal(await db.count(), before + 2);
  });

  it('refuses requireTransaction on a store that cannot check, and handles that are no handle at all', async () => {
    // A store that cannot tell, as a wrapper that only forwards the port's methods would be.
    const store: OutboxStore = new Proxy(db.store, {
      get: (target, key) => (key === 'requireTransaction' ? undefined : Reflect.get(target, key)),
    });
    assert.throws(
      () => new Outbox({ store, requireTransaction: true }),
      /cannot check that a handle is inside a transaction/,
    );
    // @ts-expect-error null is not a transaction handle.
    await assert.rejects(outbox.enqueue(null, message), notATransaction('null', /pool\.connect\(\)/));
    await assert.rejects(
      // @ts-expect-error neither is an object without query, unsafe or execute.
      outbox.enqueue(new Map(), message),
      notATransaction('an object of class Map', /execute/),
    );
  });
});

describe('enqueue handles on PGlite', () => {
  let db: PGlite;
  let store: PGliteStore;
  before(async () => {
    db = await PGlite.create();
    store = new PGliteStore({ db });
    await store.migrate();
  });
  after(async () => {
    await store.close();
    await db.close();
  });
  const count = async () =>
    (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM mailroom.outbox')).rows[0]?.n;

  it(
    'refuses the PGlite database itself, also inside its own transaction where it used to hang',
    { timeout: 20_000 },
    async () => {
      const outbox = new Outbox({ store });
      await assert.rejects(
        // @ts-expect-error the database object is not a transaction handle: the compiler refuses it too.
        outbox.enqueue(db, message),
        notATransaction('a PGlite database', /db\.transaction/),
      );
      assert.equal(await count(), 0);
      await assert.rejects(
        db.transaction(async () => {
          // @ts-expect-error as above
          await outbox.enqueue(db, message);
        }),
        { name: 'NotATransactionError' },
      );
      assert.equal(await count(), 0);
    },
  );

  it('takes the tx of db.transaction, with and without requireTransaction, and its rollback leaves no row', async () => {
    for (const outbox of [new Outbox({ store }), new Outbox({ store, requireTransaction: true })]) {
      await assert.rejects(
        db.transaction(async (tx) => {
          await outbox.enqueue(tx, message);
          throw new Error('business failure');
        }),
        /business failure/,
      );
      assert.equal(await count(), 0);
    }
    await db.transaction((tx) => new Outbox({ store, requireTransaction: true }).enqueue(tx, message));
    assert.equal(await count(), 1);
  });
});
