import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import {
  isNotATransactionError,
  Outbox,
  Relay,
  type MessageInput,
  type SqlExecutor,
} from '../../src/core/index.js';
import { MySqlStore } from '../../src/stores/mysql/index.js';
import type { PostgresStore } from '../../src/stores/postgres/index.js';
import { SqliteStore } from '../../src/stores/sqlite/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';

export type Backend = 'postgres' | 'mysql' | 'sqlite';

export const MYSQL_SERVER_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';

/** What each database gives the bed: its store, a query outside any transaction, and names. */
interface Opened {
  /** Outbox.enqueue on the database's store. */
  enqueue(executor: SqlExecutor, message: MessageInput): Promise<string>;
  /** A relay on the database's store, not started. */
  relay: Relay;
  /** Runs one statement on a connection of the bed's own, outside the ORM under test. */
  query(sql: string, params?: unknown[]): Promise<unknown[]>;
  orders: string;
  outbox: string;
  close(): Promise<void>;
}

/**
 * A database of its own for one adapter's test file: the outbox (migrated by the store), a
 * business table `orders (id)`, an Outbox, and a Relay publishing to a MemoryTransport.
 * - postgres: a schema in the `test` database (`bed.schema`);
 * - mysql: a database on the local MariaDB (`bed.mysqlUrl`), the store's tables prefixed;
 * - sqlite: a file in a temporary directory (`bed.sqliteFile`), WAL.
 * Registers the file's `before`/`after` hooks; call it at the top of a `describe`.
 */
export function adapterTestBed(
  prefix: string,
  backend: Backend = 'postgres',
  options: { outboxStore?: (db: TestDb) => PostgresStore } = {},
) {
  let opened: Opened | undefined;
  let pgDb: TestDb | undefined;
  const memory = new MemoryTransport();
  const mysqlDatabase = `mailroom_${prefix}_${randomBytes(4).toString('hex')}`;
  let sqliteDir: string | undefined;
  let n = 0;

  async function open(): Promise<Opened> {
    if (backend === 'postgres') {
      const db = (pgDb = await createTestDb(prefix));
      const orders = `"${db.schema}".orders`;
      await db.pool.query(`CREATE TABLE ${orders} (id text PRIMARY KEY)`);
      const outbox = new Outbox({ store: options.outboxStore?.(db) ?? db.store });
      return {
        enqueue: (executor, message) => outbox.enqueue(executor, message),
        relay: new Relay({ store: db.store, transport: memory }),
        query: async (sql, params) => (await db.pool.query(sql, params)).rows,
        orders,
        outbox: `"${db.schema}".outbox`,
        close: () => db.drop(),
      };
    }
    if (backend === 'mysql') {
      const admin = await mysql.createConnection(MYSQL_SERVER_URL);
      let pool: mysql.Pool | undefined;
      let store: MySqlStore | undefined;
      const close = async () => {
        try {
          await store?.close();
          await pool?.end();
          await admin.query(`DROP DATABASE IF EXISTS \`${mysqlDatabase}\``);
        } finally {
          await admin.end().catch(() => admin.destroy());
        }
      };
      try {
        await admin.query(`CREATE DATABASE \`${mysqlDatabase}\``);
        pool = mysql.createPool({ uri: `${MYSQL_SERVER_URL}/${mysqlDatabase}`, connectionLimit: 4 });
        store = new MySqlStore({ pool, tablePrefix: 'mr_' });
        await store.migrate();
        await pool.query('CREATE TABLE orders (id VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB');
      } catch (err) {
        // Nothing left open for the leak guard to report instead of the cause.
        await close().catch(() => undefined);
        throw err;
      }
      const outbox = new Outbox({ store });
      const ready = pool;
      return {
        enqueue: (executor, message) => outbox.enqueue(executor, message),
        relay: new Relay({ store, transport: memory }),
        query: async (sql, params) => (await ready.query(sql, params))[0] as unknown[],
        orders: 'orders',
        outbox: 'mr_outbox',
        close,
      };
    }
    sqliteDir = mkdtempSync(join(tmpdir(), `mailroom-${prefix}-`));
    const file = join(sqliteDir, 'app.db');
    const store = await SqliteStore.connect({ filename: file });
    await store.migrate();
    const own = new Database(file);
    own.exec('CREATE TABLE orders (id TEXT PRIMARY KEY)');
    const outbox = new Outbox({ store });
    return {
      enqueue: (executor, message) => outbox.enqueue(executor, message),
      relay: new Relay({ store, transport: memory }),
      query: async (sql, params = []) => {
        const statement = own.prepare(sql);
        return statement.reader ? statement.all(...params) : (statement.run(...params), []);
      },
      orders: 'orders',
      outbox: 'mailroom_outbox',
      async close() {
        own.close();
        await store.close();
        rmSync(sqliteDir as string, { recursive: true, force: true });
      },
    };
  }

  before(async () => {
    opened = await open();
    await opened.relay.start();
  });
  after(async () => {
    await opened?.relay.stop();
    await opened?.close();
  });
  const it = (): Opened => {
    if (!opened) throw new Error('adapterTestBed: the database is made in the before hook');
    return opened;
  };
  const bed = {
    /** PostgreSQL: the test schema. */
    get schema(): string {
      if (!pgDb) throw new Error('adapterTestBed: schema is for the postgres backend');
      return pgDb.schema;
    },
    /** MySQL: the URL of the test database. */
    mysqlUrl: `${MYSQL_SERVER_URL}/${mysqlDatabase}`,
    /** SQLite: the database file. */
    get sqliteFile(): string {
      if (!sqliteDir) throw new Error('adapterTestBed: sqliteFile is for the sqlite backend');
      return join(sqliteDir, 'app.db');
    },
    /** The business table, qualified and quoted as the database needs. */
    get orders(): string {
      return it().orders;
    },
    /** The n-th placeholder in the database's style (`$n` or `?`). */
    p(index: number): string {
      return backend === 'postgres' ? `$${index}` : '?';
    },
    memory,
    /** A fresh order id and the message that announces it. */
    order(): { id: string; message: MessageInput } {
      n += 1;
      const id = `${prefix}-order-${n}`;
      return { id, message: { topic: 'order.placed', key: id, payload: { id } } };
    },
    /** Writes the message through an adapter's executor, as an app does. */
    enqueue(executor: SqlExecutor, message: MessageInput): Promise<string> {
      return it().enqueue(executor, message);
    },
    async orderExists(id: string): Promise<boolean> {
      return (
        (await it().query(`SELECT 1 AS x FROM ${it().orders} WHERE id = ${bed.p(1)}`, [id])).length === 1
      );
    },
    async outboxHas(messageId: string): Promise<boolean> {
      return (
        (await it().query(`SELECT 1 AS x FROM ${it().outbox} WHERE id = ${bed.p(1)}`, [messageId])).length ===
        1
      );
    },
    /** Resolves once the relay published the message with this id (throws after 10 s). */
    async delivered(messageId: string): Promise<void> {
      const deadline = performance.now() + 10_000;
      while (!memory.messages.some((m) => m.id === messageId)) {
        if (performance.now() > deadline)
          throw new Error(`message ${messageId} was not delivered within 10 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    wasDelivered(messageId: string): boolean {
      return memory.messages.some((m) => m.id === messageId);
    },
    /**
     * After a rollback: neither the row nor the message is in the database, and a message
     * committed afterwards is delivered while the rolled-back one never is.
     */
    async assertRolledBack(
      orderId: string,
      messageId: string | undefined,
      commitLater: () => Promise<string>,
    ) {
      assert.equal(await bed.orderExists(orderId), false, 'the business row rolled back');
      if (messageId !== undefined)
        assert.equal(await bed.outboxHas(messageId), false, 'the message rolled back');
      const later = await commitLater();
      await bed.delivered(later);
      if (messageId !== undefined) assert.equal(bed.wasDelivered(messageId), false, 'no phantom delivered');
    },
  };
  return bed;
}

/** Asserts a NotATransactionError about `handle` that says what to pass instead. */
export function notATransaction(handle: string | RegExp, instead: RegExp) {
  return (err: unknown) => {
    assert.ok(isNotATransactionError(err), `expected NotATransactionError, got ${String(err)}`);
    assert.equal(err.code, 'not_a_transaction');
    if (typeof handle === 'string') assert.equal(err.handle, handle);
    else assert.match(err.handle, handle);
    assert.match(err.message, instead);
    return true;
  };
}
