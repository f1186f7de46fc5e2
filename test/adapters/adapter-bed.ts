import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import {
  isNotATransactionError,
  Outbox,
  Relay,
  type MessageInput,
  type SqlExecutor,
} from '../../src/core/index.js';
import type { PostgresStore, PostgresTransactionHandle } from '../../src/stores/postgres/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';

/**
 * A PostgreSQL schema of its own for one adapter's test file: the outbox (migrated by the
 * store), a business table `orders (id text primary key)`, an Outbox, and a Relay publishing to a
 * MemoryTransport. Registers the file's `before`/`after` hooks; call it at the top of a `describe`.
 */
export function adapterTestBed(
  prefix: string,
  options: { outboxStore?: (db: TestDb) => PostgresStore } = {},
) {
  let db: TestDb | undefined;
  let relay: Relay | undefined;
  let outbox: Outbox<PostgresTransactionHandle> | undefined;
  const memory = new MemoryTransport();
  let n = 0;
  before(async () => {
    db = await createTestDb(prefix);
    await db.pool.query(`CREATE TABLE "${db.schema}".orders (id text PRIMARY KEY)`);
    outbox = new Outbox({ store: options.outboxStore?.(db) ?? db.store });
    relay = new Relay({ store: db.store, transport: memory });
    await relay.start();
  });
  after(async () => {
    await relay?.stop();
    await db?.drop();
  });
  const bed = {
    get db(): TestDb {
      if (!db) throw new Error('adapterTestBed: the database is made in the before hook');
      return db;
    },
    get schema(): string {
      return bed.db.schema;
    },
    /** The business table, schema-qualified and quoted. */
    get orders(): string {
      return `"${bed.db.schema}".orders`;
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
      if (!outbox) throw new Error('adapterTestBed: the outbox is made in the before hook');
      return outbox.enqueue(executor, message);
    },
    async orderExists(id: string): Promise<boolean> {
      const res = await bed.db.pool.query(`SELECT 1 FROM ${bed.orders} WHERE id = $1`, [id]);
      return res.rowCount === 1;
    },
    async outboxHas(messageId: string): Promise<boolean> {
      const res = await bed.db.pool.query(`SELECT 1 FROM "${bed.db.schema}".outbox WHERE id = $1`, [
        messageId,
      ]);
      return res.rowCount === 1;
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
