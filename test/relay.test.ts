import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay, type OutboxMessage, type RelayOptions } from '../src/core/index.js';
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

// What every store must do through the relay (phantoms, retries, dead letters, lost confirms)
// is in the store conformance suite (src/testkit/store-conformance.ts), run for PostgreSQL by
// test/postgres-store.test.ts. These are the PostgreSQL-only cases: several connections and
// relays at once, connection faults, lifecycle.
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

  it('never hands the same message to two relays at once', async () => {
    await clean();
    const outbox = new Outbox({ store: db.store });
    const broker = new MemoryTransport({ latencyMs: 2 });
    for (let i = 0; i < 4; i++) await start({ transport: broker, batchSize: 50, owner: `r${i}` });
    const ids: string[] = [];
    for (let t = 0; t < 10; t++) {
      const batch = Array.from({ length: 300 }, (_, j) => ({
        topic: 'once',
        key: j % 3 === 0 ? `k${j % 30}` : null,
        payload: j,
      }));
      ids.push(...(await inTransaction(db.pool, (c) => outbox.enqueue(c, batch))));
    }
    await waitUntil(
      () => new Set(broker.messages.map((m) => m.id)).size === ids.length,
      'all delivered',
      30_000,
    );
    await waitUntil(async () => (await db.count()) === 0, 'an empty outbox');
    // No failures, no crashes, leases far longer than the run: every copy beyond one is a
    // double claim.
    assert.equal(broker.messages.length, ids.length, 'each message published exactly once');
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

  it('drains the batch in flight when stopped, and stops claiming', async () => {
    await clean();
    const transport = new MemoryTransport({ latencyMs: 400 });
    const outbox = new Outbox({ store: db.store });
    const relay = await start({ transport });
    const claimed = new Promise<void>((resolve) => relay.once('relay:batch:claimed', () => resolve()));
    await inTransaction(db.pool, (c) => outbox.enqueue(c, [{ topic: 'drain', payload: 1 }]));
    await claimed;
    const stopped = relay.stop();
    await inTransaction(db.pool, (c) => outbox.enqueue(c, [{ topic: 'after-stop', payload: 2 }]));
    await stopped;
    assert.equal(transport.messagesFor('drain').length, 1, 'the in-flight batch was published');
    assert.equal(await db.count(), 1, 'it was settled; the message enqueued after stop is left');
    assert.equal(transport.messagesFor('after-stop').length, 0);
    await relay.stop(); // idempotent
  });

  it('gives up on a hung batch at the stop deadline and leaves it leased for takeover', async () => {
    await clean();
    const hung = new MemoryTransport({ latencyMs: 60_000 });
    const outbox = new Outbox({ store: db.store });
    const relay = await start({ transport: hung, shutdownTimeoutMs: 300 });
    const claimed = new Promise<void>((resolve) => relay.once('relay:batch:claimed', () => resolve()));
    await inTransaction(db.pool, (c) => outbox.enqueue(c, [{ topic: 'hung', payload: 1 }]));
    await claimed;
    let abandoned = -1;
    relay.on('relay:stopped', (e) => (abandoned = e.abandoned));
    const t0 = Date.now();
    await relay.stop();
    assert.ok(Date.now() - t0 < 2000, 'stop returned at its deadline');
    assert.equal(abandoned, 1);
    assert.equal(await db.count(), 1, 'the message is still in the outbox');
    await hung.close();
  });

  it('archives delivered messages when asked, and prunes the archive', async () => {
    await clean();
    const store = db.makeStore({ archive: true });
    const transport = new MemoryTransport();
    const outbox = new Outbox({ store });
    await start({ transport, store });
    const id = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'arch', payload: 1 }));
    await transport.waitFor(1);
    await waitUntil(async () => (await db.count('archive')) === 1, 'the archived row');
    const row = (await db.pool.query(`SELECT id::text FROM "${db.schema}".archive`)).rows[0];
    assert.equal(row.id, id);
    assert.equal(await store.pruneArchive(60_000), 0, 'a fresh row is kept');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await store.pruneArchive(1), 1, 'an old row is pruned');
  });

  it('recovers when its database connections are terminated', async () => {
    await clean();
    const pg = (await import('pg')).default;
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const pool = new pg.Pool({
      connectionString: (await import('./helpers/postgres.js')).DATABASE_URL,
      application_name: `mr_term_${db.schema}`,
    });
    pool.on('error', () => undefined);
    const store = new PostgresStore({ pool, schema: db.schema });
    const transport = new MemoryTransport();
    const errors: string[] = [];
    const relay = await start({ transport, store, pollIntervalMs: 5000 });
    relay.on('relay:error', (e) => errors.push(e.phase));
    const outbox = new Outbox({ store: db.store });
    try {
      await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'before', payload: 1 }));
      await transport.waitFor(1);
      const killed = await db.pool.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
        [`mr_term_${db.schema}`],
      );
      assert.ok(killed.rowCount && killed.rowCount >= 1, 'the LISTEN connection at least was terminated');
      await waitUntil(() => errors.includes('listen'), 'the relay to notice the lost LISTEN connection');
      // Woken by NOTIFY again (the poll is 5 s, so a quick delivery proves LISTEN is back).
      await new Promise((r) => setTimeout(r, 800));
      const t0 = Date.now();
      await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'after', payload: 2 }));
      await transport.waitFor(2, 10_000);
      assert.ok(Date.now() - t0 < 2500, `woken by NOTIFY after re-subscribing (${Date.now() - t0} ms)`);
    } finally {
      await relay.stop();
      await pool.end();
    }
  });
});
