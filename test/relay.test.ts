import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  Outbox,
  PermanentDeliveryError,
  Relay,
  type OutboxMessage,
  type RelayOptions,
} from '../src/core/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

/** Per key, the order in which each message id was first delivered. */
function firstDeliveries(messages: readonly OutboxMessage[]): Map<string, string[]> {
  const seen = new Set<string>();
  const byKey = new Map<string, string[]>();
  for (const m of messages) {
    if (seen.has(m.id) || m.key === null) continue;
    seen.add(m.id);
    const list = byKey.get(m.key) ?? [];
    list.push(m.id);
    byKey.set(m.key, list);
  }
  return byKey;
}

describe('Relay with the PostgreSQL store', () => {
  let db: TestDb;
  const relays: Relay[] = [];
  const start = async (options: Partial<RelayOptions> & { transport: MemoryTransport }) => {
    const relay = new Relay({ store: db.store, pollIntervalMs: 100, leaseMs: 2000, ...options });
    relays.push(relay);
    await relay.start();
    return relay;
  };

  before(async () => {
    db = await createTestDb('relay');
  });
  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await db.drop();
  });

  async function clean() {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await db.pool.query(`TRUNCATE "${db.schema}".outbox, "${db.schema}".dead_letter, "${db.schema}".archive`);
  }

  it('delivers committed messages and never a rolled-back one', async () => {
    await clean();
    const transport = new MemoryTransport();
    const outbox = new Outbox({ store: db.store });
    await start({ transport });
    const committed = await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'a', payload: 1 },
        { topic: 'a', payload: 2, key: 'k' },
      ]),
    );
    await assert.rejects(
      inTransaction(db.pool, async (c) => {
        await outbox.enqueue(c, { topic: 'phantom', payload: 'never' });
        throw new Error('rollback');
      }),
    );
    await transport.waitFor(2);
    await waitUntil(async () => (await db.count()) === 0, 'outbox to be empty');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(new Set(transport.messages.map((m) => m.id)), new Set(committed));
    assert.equal(transport.messagesFor('phantom').length, 0);
  });

  it('misses no message when concurrent transactions commit out of their insert order', async () => {
    await clean();
    const transport = new MemoryTransport();
    const outbox = new Outbox({ store: db.store });
    await start({ transport });
    // Three transactions insert in order 1, 2, 3 and commit in order 3, 1 (2 rolls back): a
    // relay that tracked "the highest seq seen" would skip 1.
    const c1 = await db.pool.connect();
    const c2 = await db.pool.connect();
    const c3 = await db.pool.connect();
    try {
      for (const c of [c1, c2, c3]) await c.query('BEGIN');
      const [id1] = await outbox.enqueue(c1, [{ topic: 'ooo', payload: 1, key: 'same' }]);
      const [id2] = await outbox.enqueue(c2, [{ topic: 'ooo', payload: 2 }]);
      const [id3] = await outbox.enqueue(c3, [{ topic: 'ooo', payload: 3, key: 'same' }]);
      await c3.query('COMMIT');
      await transport.waitFor(1);
      await c1.query('COMMIT');
      await c2.query('ROLLBACK');
      await transport.waitFor(2);
      await waitUntil(async () => (await db.count()) === 0, 'outbox to drain');
      const ids = transport.messages.map((m) => m.id);
      assert.deepEqual(new Set(ids), new Set([id1, id3]));
      assert.ok(!ids.includes(id2 as string));
    } finally {
      for (const c of [c1, c2, c3]) c.release();
    }
  });

  it('retries with exponential backoff, then dead-letters with the last error, and replays', async () => {
    await clean();
    const transport = new MemoryTransport({ failWith: () => new Error('broker says no') });
    const outbox = new Outbox({ store: db.store });
    const delays: number[] = [];
    const relay = await start({
      transport,
      retry: { baseDelayMs: 100, maxDelayMs: 400, maxAttempts: 4, jitter: 'none' },
    });
    relay.on('relay:message:retry', (e) => delays.push(e.delayMs));
    const id = await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, { topic: 'flaky', payload: {}, key: 'x' }),
    );
    await waitUntil(async () => (await db.count('dead_letter')) === 1, 'the dead letter');
    assert.deepEqual(delays, [100, 200, 400], 'doubling from the base, capped at the max');
    const [dead] = await db.store.listDeadLetters();
    assert.equal(dead?.id, id);
    assert.equal(dead?.attempts, 4);
    assert.match(dead?.lastError ?? '', /gave up after 4 attempts: broker says no/);
    assert.equal(await db.count(), 0);

    transport.failWith = undefined;
    const replayed = await db.store.replayDeadLetters({ ids: [id] });
    assert.deepEqual(replayed, [{ id, status: 'replayed' }]);
    const [delivered] = await transport.waitFor(1);
    assert.equal(delivered?.id, id, 'a replayed message keeps its id');
    assert.equal(await db.count('dead_letter'), 0);
  });

  it('full jitter draws each delay between zero and the exponential ceiling', async () => {
    const { resolveRetryPolicy, retryDelayMs } = await import('../src/core/index.js');
    const draws = [0, 0.5, 0.999];
    const policy = resolveRetryPolicy({
      baseDelayMs: 1000,
      maxDelayMs: 5000,
      random: () => draws.shift() ?? 1,
    });
    assert.equal(retryDelayMs(policy, 1), 0);
    assert.equal(retryDelayMs(policy, 2), 1000);
    assert.equal(retryDelayMs(policy, 10), 4995);
  });

  it('dead-letters a permanent failure at once and keeps delivering the rest of its key', async () => {
    await clean();
    const transport = new MemoryTransport({
      failWith: (m) =>
        JSON.parse(m.payload.toString()) === 'poison' ? new PermanentDeliveryError('rejected') : undefined,
    });
    const outbox = new Outbox({ store: db.store });
    await start({ transport });
    await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'p', key: 'k', payload: 'poison' },
        { topic: 'p', key: 'k', payload: 'after' },
      ]),
    );
    const [after] = await transport.waitFor(1);
    assert.equal(after?.payload.toString(), '"after"');
    const dead = await db.store.listDeadLetters({ topic: 'p' });
    assert.equal(dead.length, 1);
    assert.equal(dead[0]?.attempts, 1);
    assert.equal(dead[0]?.lastError, 'rejected');
  });

  it('redelivers a message whose confirm was lost, with the same id', async () => {
    await clean();
    let lose = true;
    const transport = new MemoryTransport({
      loseConfirm: () => {
        const l = lose;
        lose = false;
        return l;
      },
    });
    const outbox = new Outbox({ store: db.store });
    await start({ transport, retry: { baseDelayMs: 10, jitter: 'none' } });
    const id = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'dup', payload: 1 }));
    const copies = await transport.waitFor(2);
    assert.deepEqual(
      copies.map((m) => m.id),
      [id, id],
    );
    assert.deepEqual(
      copies.map((m) => m.attempts),
      [1, 2],
    );
  });

  it('takes over the messages of a relay that died once its lease runs out', async () => {
    await clean();
    const outbox = new Outbox({ store: db.store });
    await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'lease', payload: 1, key: 'a' },
        { topic: 'lease', payload: 2 },
      ]),
    );
    // A relay claims and then dies without settling.
    const dead = await db.store.claim({ owner: 'dead-relay', limit: 10, leaseMs: 1500 });
    assert.equal(dead.messages.length, 2);
    const claimedAt = Date.now();
    const transport = new MemoryTransport();
    await start({ transport });
    await transport.waitFor(2, 10_000);
    const took = Date.now() - claimedAt;
    assert.ok(took >= 1400, `not before the lease expired (${took} ms)`);
    assert.ok(took < 4000, `within seconds of the lease expiring (${took} ms)`);
    assert.deepEqual(
      transport.messages.map((m) => m.attempts),
      [2, 2],
    );
  });

  it('keeps per-key order with two relays and injected publish failures', async () => {
    await clean();
    const outbox = new Outbox({ store: db.store });
    let n = 0;
    // One "broker" shared by both relays records every accepted message in one global order;
    // about a quarter of publishes fail, deterministically.
    const broker = new MemoryTransport({
      failWith: () => (++n % 4 === 0 ? 'retry' : undefined),
      latencyMs: 3,
    });
    const retry = { baseDelayMs: 20, maxDelayMs: 100, maxAttempts: 50 };
    const r1 = await start({ transport: broker, batchSize: 7, retry, owner: 'r1' });
    const r2 = await start({ transport: broker, batchSize: 5, retry, owner: 'r2' });
    const byRelay = { r1: 0, r2: 0 };
    r1.on('relay:batch:settled', (e) => (byRelay.r1 += e.delivered));
    r2.on('relay:batch:settled', (e) => (byRelay.r2 += e.delivered));
    const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    const expected = new Map<string, string[]>(keys.map((k) => [k, []]));
    // Transactions commit one after another, so per key the commit order is the enqueue order.
    const rounds = 30;
    for (let round = 0; round < rounds; round++) {
      const batch = [
        ...keys.map((key) => ({ topic: 'order', key, payload: { round } })),
        { topic: 'order', payload: { round } },
      ];
      const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, batch));
      keys.forEach((k, i) => expected.get(k)?.push(ids[i] as string));
    }
    const total = rounds * (keys.length + 1);
    await waitUntil(
      () => new Set(broker.messages.map((m) => m.id)).size === total,
      'all messages delivered',
      30_000,
    );
    assert.ok(byRelay.r1 > 0 && byRelay.r2 > 0, `both relays took part (${JSON.stringify(byRelay)})`);
    const order = firstDeliveries(broker.messages);
    for (const k of keys) assert.deepEqual(order.get(k), expected.get(k), `key ${k} in commit order`);
  });
});
