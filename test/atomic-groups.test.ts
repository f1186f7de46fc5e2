/**
 * Atomic groups through the outbox (`enqueue(tx, messages, { atomic: true })`) with the real
 * PostgreSQL store and the memory transport's broker transactions: a group is stored as one row,
 * published in one transaction (all members or none reach the "broker"), retried and
 * dead-lettered as a whole, kept in its key's order beside plain messages, spends no attempt in
 * an outage, and is dead-lettered with a clear reason by a relay whose transport has no
 * transactions. Bad groups are refused before anything is written. The RabbitMQ and STOMP
 * transports' own transactions are tested in test/transports/.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  ATOMIC_GROUP_CONTENT_TYPE,
  InvalidMessageError,
  Outbox,
  Relay,
  toReceivedMessage,
  type MessageInput,
} from '../src/core/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

describe('atomic groups', () => {
  let db: TestDb;
  let outbox: Outbox;
  const relays: Relay[] = [];

  before(async () => {
    db = await createTestDb('atomic');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => {
    await db.drop();
  });
  beforeEach(async () => {
    for (const r of relays.splice(0)) await r.stop();
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
  });

  function relay(transport: MemoryTransport, options: Record<string, unknown> = {}): Relay {
    const r = new Relay({
      store: db.store,
      transport,
      retry: { baseDelayMs: 20, maxDelayMs: 50 },
      probeMinDelayMs: 50,
      probeMaxDelayMs: 100,
      ...options,
    });
    relays.push(r);
    return r;
  }

  const group = (key: string | null, n: number, tag = 'g'): MessageInput[] =>
    Array.from({ length: n }, (_, i) => ({ topic: `atomic.${tag}`, key, payload: { i } }));

  it('stores a group as one row and delivers its members in one broker transaction, with group headers', async () => {
    const transport = new MemoryTransport();
    const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, group('order-1', 3), { atomic: true }));
    const stored = await db.pool.query(`SELECT id::text, content_type FROM "${db.schema}".outbox`);
    assert.deepEqual(stored.rows, [{ id: ids[0], content_type: ATOMIC_GROUP_CONTENT_TYPE }]);
    await relay(transport).start();
    const got = await transport.waitFor(3);
    assert.deepEqual(
      got.map((m) => m.id),
      ids,
    );
    assert.equal(transport.commits, 1);
    const received = got.map(toReceivedMessage);
    assert.deepEqual(
      received.map((m) => m.group),
      [0, 1, 2].map((index) => ({ id: ids[0], size: 3, index })),
    );
    assert.deepEqual(
      received.map((m) => m.payload),
      [{ i: 0 }, { i: 1 }, { i: 2 }],
    );
    assert.deepEqual(received[0]?.headers, {}, 'group headers are Mailroom headers, not the sender’s');
    await waitUntil(async () => (await db.count()) === 0, 'settled');
  });

  it('never delivers part of a group: a commit that fails delivers none, the retry delivers all', async () => {
    let refusals = 2;
    const transport = new MemoryTransport({
      failWith: (m) => (m.payload.toString().includes('"i":1') && refusals-- > 0 ? 'retry' : undefined),
    });
    const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, group('order-2', 3), { atomic: true }));
    const r = relay(transport);
    const retried: number[] = [];
    r.on('relay:message:retry', ({ message }) => retried.push(message.attempts));
    await r.start();
    await transport.waitFor(3, 5000);
    await new Promise((res) => setTimeout(res, 100));
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
      'the members once, together: the failed commits recorded nothing',
    );
    assert.deepEqual(retried, [1, 2], 'the group retried as one message, one attempt each try');
  });

  it('keeps a group in its key’s order beside plain messages, in one batch and across batches', async () => {
    const transport = new MemoryTransport();
    const ids = await inTransaction(db.pool, async (c) => [
      ...(await outbox.enqueue(c, [{ topic: 'atomic.o', key: 'k', payload: 'a' }])),
      ...(await outbox.enqueue(c, group('k', 2, 'o'), { atomic: true })),
      ...(await outbox.enqueue(c, [{ topic: 'atomic.o', key: 'k', payload: 'c' }])),
      ...(await outbox.enqueue(c, group('k', 2, 'o'), { atomic: true })),
    ]);
    await relay(transport, { maxPerKey: 10 }).start();
    await transport.waitFor(ids.length);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
    );
  });

  it('holds a group behind an earlier message of its key that failed in the same batch', async () => {
    let fail = true;
    const transport = new MemoryTransport({
      failWith: (m) => (fail && m.payload.toString() === '"first"' ? ((fail = false), 'retry') : undefined),
    });
    const ids = await inTransaction(db.pool, async (c) => [
      ...(await outbox.enqueue(c, [{ topic: 'atomic.h', key: 'h', payload: 'first' }])),
      ...(await outbox.enqueue(c, group('h', 2, 'h'), { atomic: true })),
    ]);
    await relay(transport, { maxPerKey: 10 }).start();
    await transport.waitFor(3, 5000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
      'the group waited for the retried message of its key',
    );
  });

  it('spends no attempt in an outage and delivers the group whole after it', async () => {
    const transport = new MemoryTransport({ unavailable: true });
    const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, group(null, 4), { atomic: true }));
    const r = relay(transport);
    await r.start();
    await waitUntil(async () => !r.transportAvailable, 'the outage seen', 5000);
    // The relay sees the outage before its release of the batch (the attempt given back) has
    // committed: wait for the release, which must come.
    const attempts = async () =>
      (await db.pool.query(`SELECT attempts FROM "${db.schema}".outbox`)).rows[0]?.attempts as number;
    await waitUntil(
      async () => (await attempts()) === 0,
      'the group released with its attempt given back',
      5000,
    );
    assert.equal(await attempts(), 0);
    transport.unavailable = false;
    await transport.waitFor(4, 5000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
    );
    assert.ok(transport.messages.every((m) => m.attempts === 1));
  });

  it('dead-letters a group on a transport without transactions, saying why, and delivers none of it', async () => {
    const transport = new MemoryTransport({ transactions: false });
    const [first] = await inTransaction(db.pool, (c) => outbox.enqueue(c, group('k', 2), { atomic: true }));
    const plain = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'atomic.p', payload: 1 }));
    await relay(transport).start();
    await transport.waitFor(1);
    await waitUntil(async () => (await db.count('dead_letter')) === 1, 'the group dead-lettered', 5000);
    const [dead] = await db.store.listDeadLetters();
    assert.equal(dead?.id, first);
    assert.match(dead?.lastError ?? '', /atomic group.*no broker transactions/);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      [plain],
    );
  });

  it('refuses a group it cannot keep atomic before writing anything', async () => {
    await inTransaction(db.pool, async (c) => {
      await assert.rejects(
        outbox.enqueue(
          c,
          [
            { topic: 't', key: 'a', payload: 1 },
            { topic: 't', key: 'b', payload: 2 },
          ],
          { atomic: true },
        ),
        (err: Error) => err instanceof InvalidMessageError && /share one key/.test(err.message),
      );
      await assert.rejects(
        outbox.enqueue(c, [{ topic: 't', payload: 1, delayMs: 1000 }], { atomic: true }),
        (err: Error) => err instanceof InvalidMessageError && /delayMs/.test(err.message),
      );
      await assert.rejects(outbox.enqueue(c, [], { atomic: true }), InvalidMessageError);
      await assert.rejects(
        outbox.enqueue(c, [{ topic: 't', payload: 1 }], { atomic: 'yes' as unknown as boolean }),
        /atomic must be true or false/,
      );
    });
    assert.equal(await db.count(), 0);
  });
});
