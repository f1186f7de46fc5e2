import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import mysql from 'mysql2/promise';
import { Outbox, Relay } from '../../src/core/index.js';
import { Inbox } from '../../src/inbox/index.js';
import {
  isRetryableMySqlError,
  MySqlStore,
  mysqlExecutor,
  splitStatements,
} from '../../src/stores/mysql/index.js';
import { mysqlErrno } from '../../src/stores/mysql/mysql-errors.js';
import { closedPort } from '../../src/testkit/conformance-support.js';
import { createConnection as createCallbackConnection } from 'mysql2';
import { runReceivingConformance } from '../../src/testkit/receiving-conformance.js';
import { runStoreConformance, type StoreHarness } from '../../src/testkit/store-conformance.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import type { OutboxMessage } from '../../src/core/types.js';

// One database for the file, dropped at the end; a table prefix per test.
const SERVER_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';
const DATABASE = `mailroom_test_${randomBytes(4).toString('hex')}`;
const DATABASE_URL = `${SERVER_URL}/${DATABASE}`;

let admin: mysql.Connection | undefined;
let pool: mysql.Pool | undefined;

async function sharedPool(): Promise<mysql.Pool> {
  if (!admin) {
    admin = await mysql.createConnection(SERVER_URL);
    await admin.query(`CREATE DATABASE \`${DATABASE}\``);
  }
  pool ??= mysql.createPool({ uri: DATABASE_URL, connectionLimit: 8 });
  return pool;
}

after(async () => {
  await pool?.end();
  if (admin) {
    await admin.query(`DROP DATABASE IF EXISTS \`${DATABASE}\``);
    await admin.end();
  }
});

const prefix = () => `t${randomBytes(4).toString('hex')}_`;

/** Runs `fn` in a transaction on a connection of the shared pool; rolls back when it throws. */
async function inTransaction<T>(fn: (conn: mysql.PoolConnection) => Promise<T>): Promise<T> {
  const conn = await (await sharedPool()).getConnection();
  try {
    await conn.beginTransaction();
    try {
      const result = await fn(conn);
      await conn.commit();
      return result;
    } catch (err) {
      await conn.rollback();
      throw err;
    }
  } finally {
    conn.release();
  }
}

async function newStore(options: { archive?: boolean; tablePrefix?: string } = {}): Promise<MySqlStore> {
  await sharedPool();
  const store = await MySqlStore.connect({
    connectionString: DATABASE_URL,
    tablePrefix: prefix(),
    ...options,
  });
  try {
    await store.migrate();
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}

const harness = async (): Promise<StoreHarness> => {
  const store = await newStore();
  return { store, transaction: (fn) => inTransaction(fn), close: () => store.close() };
};
runStoreConformance('MySQL store (MariaDB)', { create: harness });
runReceivingConformance('MySQL store (MariaDB)', { create: harness });

const payloadOf = (m: OutboxMessage): unknown => JSON.parse(m.payload.toString());

describe('MySQL store', () => {
  let store: MySqlStore;
  let outbox: Outbox<Parameters<MySqlStore['executor']>[0]>;
  before(async () => {
    store = await newStore();
    outbox = new Outbox({ store });
  });
  after(() => store.close());

  async function rows(sql: string, params: unknown[] = []): Promise<Array<Record<string, unknown>>> {
    const [result] = await (await sharedPool()).query(sql, params);
    return result as Array<Record<string, unknown>>;
  }
  async function drain(s: MySqlStore = store): Promise<void> {
    const { leaseToken, messages } = await s.claim({ owner: 't', limit: 1000, leaseMs: 5000 });
    await s.settle({ leaseToken, delivered: messages, released: [], retry: [], dead: [] });
  }

  it('migrates twice, and from two processes at once, applying each file once', async () => {
    const p = prefix();
    const a = await MySqlStore.connect({ connectionString: DATABASE_URL, tablePrefix: p });
    // The second through a mariadb:// URL: the same store.
    const b = await MySqlStore.connect({
      connectionString: DATABASE_URL.replace(/^mysql:/, 'mariadb:'),
      tablePrefix: p,
    });
    try {
      const [ra, rb] = await Promise.all([a.migrate(), b.migrate()]);
      const applied = [...ra, ...rb].filter((r) => r.status === 'applied').map((r) => r.version);
      assert.deepEqual(applied.sort(), [1, 2, 3, 4], 'each migration applied by exactly one of them');
      assert.ok((await a.migrate()).every((r) => r.status === 'already-applied'));
      await a.check();
      await b.check();
      const versions = await rows(`SELECT version FROM \`${p}migrations\` ORDER BY version`);
      assert.deepEqual(
        versions.map((r) => r.version),
        [1, 2, 3, 4],
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('says to migrate when the tables are missing', async () => {
    const fresh = await MySqlStore.connect({ connectionString: DATABASE_URL, tablePrefix: prefix() });
    try {
      await assert.rejects(fresh.check(), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'schema_missing');
        assert.match(err.message, /migrate/);
        return true;
      });
    } finally {
      await fresh.close();
    }
  });

  it('splits migration files as the mysql client does', () => {
    assert.deepEqual(
      splitStatements(
        '-- c;\nCREATE TABLE a (x INT); \nDELIMITER $$\nCREATE PROCEDURE p() BEGIN SELECT 1; END$$\nDELIMITER ;\nDROP TABLE a;',
      ),
      ['CREATE TABLE a (x INT)', 'CREATE PROCEDURE p() BEGIN SELECT 1; END', 'DROP TABLE a'],
    );
  });

  it('refuses a pool as the transaction, and an autocommit connection with requireTransaction', async () => {
    const p = await sharedPool();
    // @ts-expect-error a pool is not a transaction handle
    await assert.rejects(outbox.enqueue(p, { topic: 't', payload: 1 }), { name: 'NotATransactionError' });
    const strict = new Outbox({ store, requireTransaction: true });
    const conn = await p.getConnection();
    try {
      await assert.rejects(strict.enqueue(conn, { topic: 'autocommit', payload: 1 }), {
        name: 'NotATransactionError',
      });
      await conn.beginTransaction();
      await strict.enqueue(conn, { topic: 'in.tx', payload: 1 });
      await conn.rollback();
    } finally {
      conn.release();
    }
    assert.equal((await store.stats()).backlog, 0, 'nothing written by the refused or rolled-back enqueues');
  });

  it('enqueues many messages in one call (several statements) and keeps key bytes exact', async () => {
    const keys = ['ключ', 'A', 'a', 'a '];
    const ids = await inTransaction((conn) =>
      outbox.enqueue(
        conn,
        Array.from({ length: 1500 }, (_, i) => ({ topic: 'bulk', key: keys[i % 4] as string, payload: i })),
      ),
    );
    assert.equal(ids.length, 1500);
    const c = await store.claim({ owner: 't', limit: 100, leaseMs: 5000 });
    assert.deepEqual(
      c.messages.map((m) => m.key),
      keys,
      "one head per key; 'A', 'a' and 'a ' are three keys (bytes, not a collation)",
    );
    await store.settle({
      leaseToken: c.leaseToken,
      delivered: [],
      released: c.messages.map((message) => ({ message, error: 'x' })),
      retry: [],
      dead: [],
    });
    await rows(`DELETE FROM ${store.names.outbox}`);
  });

  it('enqueues from SQL with the procedure and rejects bad input there too', async () => {
    const call = (args: string, params: unknown[] = []) =>
      inTransaction(async (conn) => {
        await conn.query(`CALL ${store.names.enqueue}(${args}, @id)`, params);
        const [[row]] = (await conn.query('SELECT @id AS id')) as unknown as [[{ id: string }]];
        return row.id;
      });
    const id = await call(`'sql.topic', JSON_OBJECT('x', 1), 'key-1', '{"h":"v"}', 'sql.type', 0`);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const c = await store.claim({ owner: 't', limit: 10, leaseMs: 5000 });
    assert.equal(c.messages.length, 1);
    const m = c.messages[0] as OutboxMessage;
    assert.equal(m.id, id);
    assert.equal(m.key, 'key-1');
    assert.equal(m.type, 'sql.type');
    assert.deepEqual(m.headers, { h: 'v' });
    assert.deepEqual(payloadOf(m), { x: 1 });
    assert.ok(Math.abs(m.createdAt.getTime() - Date.now()) < 60_000, 'created about now, in UTC');
    await store.settle({
      leaseToken: c.leaseToken,
      delivered: c.messages,
      released: [],
      retry: [],
      dead: [],
    });

    const bad: Array<[string, RegExp]> = [
      [`'', '1', NULL, NULL, NULL, 0`, /topic must be 1 to 255 bytes/],
      [`'a\\tb', '1', NULL, NULL, NULL, 0`, /control character/],
      [`'t', '1', REPEAT('k', 1025), NULL, NULL, 0`, /key must be 1 to 1024 bytes/],
      [`'t', '1', NULL, '{"n": 1}', NULL, 0`, /header value must be a JSON string/],
      [`'t', '1', NULL, '[1]', NULL, 0`, /headers must be a JSON object/],
      [`'t', '{bad', NULL, NULL, NULL, 0`, /not valid JSON/],
      [`'t', '1', NULL, NULL, NULL, -1`, /delay must be 0 to/],
      [`'t', '1', NULL, NULL, NULL, 31536000001`, /delay must be 0 to/],
      [`'t', CONCAT('"', REPEAT('x', 1048576), '"'), NULL, NULL, NULL, 0`, /over the limit of 1048576/],
    ];
    for (const [args, message] of bad) {
      await assert.rejects(call(args), (err: Error & { sqlState?: string }) => {
        assert.equal(err.sqlState, '22023', `${args}: ${err.message}`);
        assert.match(err.message, message);
        return true;
      });
    }
    assert.equal((await store.stats()).backlog, 0, 'a refused call writes nothing');
  });

  it('delays a message from SQL, and a rolled-back call leaves nothing', async () => {
    await assert.rejects(
      inTransaction(async (conn) => {
        await conn.query(`CALL ${store.names.enqueue}('sql.rolled', '1', NULL, NULL, NULL, 0, @id)`);
        throw new Error('rollback');
      }),
    );
    assert.equal((await store.stats()).backlog, 0);
    await inTransaction((conn) =>
      conn.query(`CALL ${store.names.enqueue}('sql.later', '1', 'k', NULL, NULL, 60000, @id)`),
    );
    const due = await store.nextDueInMs();
    assert.ok(due !== null && due > 55_000 && due <= 60_000, `due in about a minute, got ${due}`);
    assert.equal((await store.claim({ owner: 't', limit: 10, leaseMs: 5000 })).messages.length, 0);
    await rows(`DELETE FROM ${store.names.outbox}`);
  });

  it('enqueues from a trigger in the writing transaction, and nothing when it rolls back', async () => {
    const orders = `\`${store.tablePrefix}orders\``;
    await rows(`CREATE TABLE ${orders} (id INT PRIMARY KEY, total INT NOT NULL)`);
    await rows(
      `CREATE TRIGGER \`${store.tablePrefix}orders_outbox\` AFTER INSERT ON ${orders} FOR EACH ROW
       BEGIN
         DECLARE v_id CHAR(36);
         CALL ${store.names.enqueue}('order.created', JSON_OBJECT('id', NEW.id, 'total', NEW.total),
                                     CONCAT('order-', NEW.id), NULL, 'order.created', 0, v_id);
       END`,
    );
    await assert.rejects(
      inTransaction(async (conn) => {
        await conn.query(`INSERT INTO ${orders} (id, total) VALUES (1, 10)`);
        throw new Error('rollback');
      }),
    );
    assert.equal((await store.stats()).backlog, 0, 'the rolled-back order left no message');
    await inTransaction((conn) => conn.query(`INSERT INTO ${orders} (id, total) VALUES (2, 20), (3, 30)`));
    const c = await store.claim({ owner: 't', limit: 10, leaseMs: 5000 });
    assert.deepEqual(
      c.messages.map((m) => [m.key, payloadOf(m)]),
      [
        ['order-2', { id: 2, total: 20 }],
        ['order-3', { id: 3, total: 30 }],
      ],
    );
    await store.settle({
      leaseToken: c.leaseToken,
      delivered: c.messages,
      released: [],
      retry: [],
      dead: [],
    });
    await rows(`DROP TABLE ${orders}`);
  });

  it('claims heads behind a window full of a blocked key (the bounded walk over keys)', async () => {
    // 1,200 rows of one key whose head is leased fill the window (4 × limit, at least 1,000);
    // the heads of 30 other keys are behind it and must still be claimed.
    await inTransaction((conn) =>
      outbox.enqueue(
        conn,
        Array.from({ length: 1200 }, (_, i) => ({ topic: 'hot', key: 'hot', payload: i })),
      ),
    );
    const hot = await store.claim({ owner: 'a', limit: 1, leaseMs: 30_000 });
    assert.deepEqual(hot.messages.map(payloadOf), [0]);
    await inTransaction((conn) =>
      outbox.enqueue(conn, [
        ...Array.from({ length: 30 }, (_, i) => ({ topic: 'cold', key: `k${i}`, payload: `c${i}` })),
        { topic: 'cold', payload: 'keyless' },
      ]),
    );
    const got: unknown[] = [];
    for (let i = 0; i < 5 && got.length < 31; i++) {
      const c = await store.claim({ owner: 'b', limit: 10, leaseMs: 30_000 });
      got.push(...c.messages.map(payloadOf));
    }
    assert.equal(got.length, 31, `every cold head and the keyless row, got ${JSON.stringify(got)}`);
    assert.ok(
      got.every((p) => typeof p === 'string'),
      "the hot key's later messages wait for its leased head",
    );
    await rows(`DELETE FROM ${store.names.outbox}`);
  });

  it('claims runs of a key in order, cut at a delayed message', async () => {
    await inTransaction((conn) =>
      outbox.enqueue(conn, [
        { topic: 'r', key: 'a', payload: 1 },
        { topic: 'r', key: 'a', payload: 2 },
        { topic: 'r', key: 'b', payload: 3 },
        { topic: 'r', key: 'a', payload: 4, delayMs: 60_000 },
        { topic: 'r', key: 'a', payload: 5 },
        { topic: 'r', key: 'b', payload: 6 },
      ]),
    );
    const c = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000, maxPerKey: 10 });
    assert.deepEqual(c.messages.map(payloadOf), [1, 2, 3, 6]);
    assert.equal(
      (await store.claim({ owner: 'r2', limit: 10, leaseMs: 5000, maxPerKey: 10 })).messages.length,
      0,
    );
    await rows(`DELETE FROM ${store.names.outbox}`);
  });

  it('keeps per-key order with two relays and injected publish failures', async () => {
    const s2 = await MySqlStore.connect({ connectionString: DATABASE_URL, tablePrefix: store.tablePrefix });
    const transport = new MemoryTransport({
      failWith: () => (Math.random() < 0.3 ? new Error('flaky') : undefined),
    });
    const relays = [store, s2].map(
      (s, i) =>
        new Relay({
          store: s,
          transport,
          owner: `r${i}`,
          pollIntervalMs: 20,
          leaseMs: 5000,
          retry: { baseDelayMs: 5, maxDelayMs: 20, maxAttempts: 1000, jitter: 'none' },
        }),
    );
    try {
      await Promise.all(relays.map((r) => r.start()));
      const writers = Array.from({ length: 4 }, (_, w) =>
        (async () => {
          for (let i = 0; i < 25; i++) {
            await inTransaction((conn) =>
              outbox.enqueue(conn, { topic: 'o', key: `k${(w + i) % 5}`, payload: { w, i } }),
            );
          }
        })(),
      );
      await Promise.all(writers);
      const deadline = Date.now() + 15_000;
      while ((await store.stats()).backlog > 0) {
        assert.ok(Date.now() < deadline, 'the relays drain the outbox');
        await new Promise((r) => setTimeout(r, 50));
      }
      // First deliveries, per key, in enqueue (commit) order: per writer, i increases.
      const firsts = new Map<string, { w: number; i: number }>();
      for (const m of transport.messages)
        if (!firsts.has(m.id)) firsts.set(m.id, payloadOf(m) as { w: number; i: number });
      assert.equal(firsts.size, 100);
      const perKey = new Map<string, Array<{ w: number; i: number }>>();
      for (const m of transport.messages) {
        const list = perKey.get(m.key as string) ?? [];
        if (!list.some((x) => JSON.stringify(x) === JSON.stringify(payloadOf(m))))
          list.push(payloadOf(m) as { w: number; i: number });
        perKey.set(m.key as string, list);
      }
      for (const [key, list] of perKey) {
        for (let w = 0; w < 4; w++) {
          const mine = list.filter((x) => x.w === w).map((x) => x.i);
          assert.deepEqual(
            mine,
            [...mine].sort((a, b) => a - b),
            `key ${key}, writer ${w}: in order`,
          );
        }
      }
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
      await s2.close();
    }
  });

  it('misses no message when concurrent transactions commit out of their insert order', async () => {
    const p = await sharedPool();
    const early = await p.getConnection();
    const late = await p.getConnection();
    try {
      await early.beginTransaction();
      await late.beginTransaction();
      const a = await outbox.enqueue(early, { topic: 'ooo', key: 'k', payload: 'first insert' });
      const b = await outbox.enqueue(late, { topic: 'ooo', key: 'k', payload: 'second insert' });
      const c = await outbox.enqueue(late, { topic: 'ooo', payload: 'keyless' });
      await late.commit();
      const first = await store.claim({ owner: 't', limit: 10, leaseMs: 5000 });
      assert.deepEqual(first.messages.map((m) => m.id).sort(), [b, c].sort(), 'the committed ones');
      await store.settle({
        leaseToken: first.leaseToken,
        delivered: first.messages,
        released: [],
        retry: [],
        dead: [],
      });
      await early.commit();
      const second = await store.claim({ owner: 't', limit: 10, leaseMs: 5000 });
      assert.deepEqual(
        second.messages.map((m) => m.id),
        [a],
        'the one that committed last is not skipped',
      );
      await store.settle({
        leaseToken: second.leaseToken,
        delivered: second.messages,
        released: [],
        retry: [],
        dead: [],
      });
    } finally {
      early.release();
      late.release();
    }
  });

  it('claims and settles do not wait for a writer whose transaction is open', async () => {
    await inTransaction((conn) => outbox.enqueue(conn, { topic: 'gap', key: 'g', payload: 1 }));
    const c = await store.claim({ owner: 't', limit: 10, leaseMs: 5000 });
    // A writer holds an open transaction with a new row of the same key while a settle runs
    // and another claim scans: neither waits for the writer, nor the writer for them.
    const p = await sharedPool();
    const writer = await p.getConnection();
    try {
      await writer.beginTransaction();
      await outbox.enqueue(writer, { topic: 'gap', key: 'g', payload: 2 });
      const started = Date.now();
      await store.settle({
        leaseToken: c.leaseToken,
        delivered: c.messages,
        released: [],
        retry: [],
        dead: [],
      });
      assert.equal((await store.claim({ owner: 't', limit: 10, leaseMs: 5000 })).messages.length, 0);
      assert.ok(Date.now() - started < 2000, 'no lock wait');
      await writer.commit();
    } finally {
      writer.release();
    }
    await drain();
  });

  it("takes an ORM adapter's execute, and checks it with @@in_transaction (MariaDB)", async () => {
    const p = await sharedPool();
    const conn = await p.getConnection();
    const adapter = {
      async execute<Row>(sql: string, params: readonly unknown[] = []) {
        const [result] = await conn.query(sql, [...params]);
        return { rows: (Array.isArray(result) ? result : []) as Row[] };
      },
    };
    const strict = new Outbox({ store, requireTransaction: true });
    try {
      await assert.rejects(strict.enqueue(adapter, { topic: 'adapter', payload: 1 }), {
        name: 'NotATransactionError',
      });
      await conn.beginTransaction();
      const id = await strict.enqueue(adapter, { topic: 'adapter', payload: 1 });
      await conn.commit();
      const c = await store.claim({ owner: 't', limit: 10, leaseMs: 5000 });
      assert.deepEqual(
        c.messages.map((m) => m.id),
        [id],
      );
      await store.settle({
        leaseToken: c.leaseToken,
        delivered: c.messages,
        released: [],
        retry: [],
        dead: [],
      });
    } finally {
      conn.release();
    }
  });

  it("takes a connection of mysql2's callback API (through its promise wrapper)", async () => {
    const conn = createCallbackConnection({ uri: DATABASE_URL });
    try {
      await conn.promise().beginTransaction();
      await outbox.enqueue(conn as never, { topic: 'callback.api', payload: 1 });
      assert.equal(typeof mysqlExecutor(conn as never).execute, 'function');
      await conn.promise().rollback();
      assert.equal((await store.stats()).backlog, 0, 'rolled back with the transaction');
    } finally {
      await conn.promise().end();
    }
  });

  it('delivers at once after relay.wake() in the committing process, with a one-minute poll', async () => {
    const transport = new MemoryTransport();
    const relay = new Relay({ store, transport, pollIntervalMs: 60_000 });
    await relay.start();
    try {
      await new Promise((r) => setTimeout(r, 100)); // the relay's first claim found nothing; it sleeps
      const id = await inTransaction((conn) => outbox.enqueue(conn, { topic: 'woken', payload: 1 }));
      relay.wake();
      const [m] = await transport.waitFor(1, 3000);
      assert.equal(m?.id, id);
    } finally {
      await relay.stop();
    }
  });

  it('explains an unreachable server without printing the password, and classifies retryable errors', async () => {
    const p = await sharedPool();
    const sharedPoolNow = () => p;
    const port = await closedPort();
    const s = await MySqlStore.connect({ connectionString: `mysql://root:s3cret@127.0.0.1:${port}/x` });
    try {
      await assert.rejects(s.check(), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'unreachable');
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
        assert.doesNotMatch(err.message, /s3cret/);
        assert.ok(isRetryableMySqlError(err));
        return true;
      });
    } finally {
      await s.close();
    }
    assert.ok(isRetryableMySqlError({ errno: 1213, sqlState: '40001', code: 'ER_LOCK_DEADLOCK' }));
    assert.ok(isRetryableMySqlError({ errno: 1205, sqlState: 'HY000', code: 'ER_LOCK_WAIT_TIMEOUT' }));
    assert.ok(!isRetryableMySqlError({ errno: 1062, sqlState: '23000', code: 'ER_DUP_ENTRY' }));
    assert.throws(() => new MySqlStore({ connectionString: 'postgres://x/y' }), { name: 'ConfigError' });
    assert.throws(() => new MySqlStore({ pool: sharedPoolNow(), tablePrefix: 'bad-prefix' }), {
      name: 'ConfigError',
    });
  });

  it("works on a pool of yours, leaving its sessions' isolation level as it was", async () => {
    const own = mysql.createPool({ uri: DATABASE_URL, connectionLimit: 2 });
    try {
      const s = new MySqlStore({ pool: own, tablePrefix: prefix() });
      await s.migrate();
      const conn = await own.getConnection();
      try {
        await conn.beginTransaction();
        const id = await new Outbox({ store: s }).enqueue(conn, { topic: 'yours', key: 'k', payload: 1 });
        await conn.commit();
        const c = await s.claim({ owner: 't', limit: 10, leaseMs: 5000 });
        assert.deepEqual(
          c.messages.map((m) => m.id),
          [id],
        );
        await s.settle({
          leaseToken: c.leaseToken,
          delivered: c.messages,
          released: [],
          retry: [],
          dead: [],
        });
        const [[row]] = (await conn.query('SELECT @@tx_isolation AS level')) as unknown as [
          [{ level: string }],
        ];
        assert.equal(row.level, 'REPEATABLE-READ', 'the session keeps its own level');
      } finally {
        conn.release();
      }
      assert.equal((await s.stats()).backlog, 0);
      await s.close();
    } finally {
      await own.end();
    }
  });

  it('gives up waiting for a free pool connection at its deadline', async () => {
    const small = mysql.createPool({ uri: DATABASE_URL, connectionLimit: 1 });
    const s = new MySqlStore({ pool: small, tablePrefix: store.tablePrefix, statementTimeoutMs: 300 });
    const held = await small.getConnection();
    try {
      await assert.rejects(s.stats(), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'pool_timeout');
        assert.match(err.message, /within 300 ms/);
        return true;
      });
    } finally {
      held.release();
    }
    assert.equal(typeof (await s.stats()).backlog, 'number', 'works again once a connection is free');
    await s.close();
    await small.end();
  });

  it('archives delivered messages when asked', async () => {
    const s = await newStore({ archive: true });
    try {
      const id = await inTransaction((conn) =>
        new Outbox({ store: s }).enqueue(conn, { topic: 'arch', payload: 1 }),
      );
      await drain(s);
      const archived = await rows(`SELECT id FROM ${s.names.archive}`);
      assert.deepEqual(
        archived.map((r) => r.id),
        [id],
      );
      assert.equal(await s.pruneArchive(60_000), 0);
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(await s.pruneArchive(1), 1);
    } finally {
      await s.close();
    }
  });

  it('records an inbox entry once per consumer in the handler transaction, and not after a rollback', async () => {
    const inbox = new Inbox({ store, consumer: 'mysql' });
    const message = {
      id: '01890000-0000-7000-8000-000000000001',
      topic: 't',
      key: null,
      type: null,
      headers: {},
      contentType: 'application/json',
      body: Buffer.from('1'),
      payload: 1,
      ackTo: null,
      attempt: 1,
      createdAt: null,
    };
    let effects = 0;
    await assert.rejects(
      inbox.handle(message, async () => {
        effects++;
        throw new Error('handler failed');
      }),
      /handler failed/,
    );
    const first = await inbox.handle(message, async () => {
      effects++;
    });
    const second = await inbox.handle(message, async () => {
      effects++;
    });
    assert.equal(first.status, 'processed');
    assert.equal(second.status, 'duplicate');
    assert.equal(effects, 2, 'the rolled-back run and the first commit');
    assert.equal(await store.pruneInbox('mysql', 60_000, 10), 0);
  });
});

describe('mysqlErrno', () => {
  it("reads the server's error number through a driver error, its causes, and Prisma's P2010 wrapper", () => {
    const driver = Object.assign(new Error('Unknown system variable'), { errno: 1193, sqlState: 'HY000' });
    assert.equal(mysqlErrno(driver), 1193);
    assert.equal(mysqlErrno(new Error('wrapped', { cause: driver })), 1193);
    // What @prisma/adapter-mariadb raises through $queryRawUnsafe.
    const prisma = Object.assign(new Error('Raw query failed'), {
      code: 'P2010',
      meta: { driverAdapterError: { cause: { kind: 'mysql', code: 1193, state: 'HY000' } } },
    });
    assert.equal(mysqlErrno(prisma), 1193);
    assert.equal(mysqlErrno(new Error('no number here')), undefined);
  });
});
