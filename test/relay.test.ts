import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Outbox, type OutboxMessage, type Transport } from '../src/core/index.js';
import { ManualClock } from '../src/testkit/manual-clock.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { inTransaction } from './helpers/postgres.js';
import { relayTestBed } from './helpers/relay-bed.js';
import { wrapStore } from './helpers/store-wrapper.js';
import { waitUntil } from './helpers/wait.js';

/** `inner`, with `before` run (and awaited) at the start of every publish. */
function withPublishHook(
  inner: Transport,
  before: (messages: readonly OutboxMessage[]) => Promise<void>,
): Transport {
  return {
    name: inner.name,
    start: () => inner.start(),
    probe: (options) => inner.probe(options),
    close: () => inner.close(),
    async publish(messages, options) {
      await before(messages);
      return inner.publish(messages, options);
    },
  };
}

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
  const bed = relayTestBed('relay', { pollIntervalMs: 100, leaseMs: 2000 });
  const { start, clean } = bed;

  it('misses no message when concurrent transactions commit out of their insert order', async () => {
    await clean();
    const transport = new MemoryTransport();
    const outbox = new Outbox({ store: bed.db.store });
    await start({ transport });
    // Three transactions insert in order 1, 2, 3 and commit in order 3, 1 (2 rolls back): a
    // relay that tracked "the highest seq seen" would skip 1.
    const c1 = await bed.db.pool.connect();
    const c2 = await bed.db.pool.connect();
    const c3 = await bed.db.pool.connect();
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
      await waitUntil(async () => (await bed.db.count()) === 0, 'outbox to drain');
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

  it('takes over the messages of a relay that died only once its lease has run out', async () => {
    await clean();
    const outbox = new Outbox({ store: bed.db.store });
    await inTransaction(bed.db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'lease', payload: 1, key: 'a' },
        { topic: 'lease', payload: 2 },
      ]),
    );
    // A relay claims and then dies without settling.
    const dead = await bed.db.store.claim({ owner: 'dead-relay', limit: 10, leaseMs: 1500 });
    assert.equal(dead.messages.length, 2);
    // Both clocks below are the database's, in microseconds since the epoch: exact, and the
    // same clock the lease is kept on.
    const leases = await bed.db.pool.query<{ id: string; until: string }>(
      `SELECT id::text, (extract(epoch FROM lease_until) * 1000000)::bigint::text AS until
         FROM "${bed.db.schema}".outbox WHERE lease_token = $1`,
      [dead.leaseToken],
    );
    const leaseUntil = new Map(leases.rows.map((r) => [r.id, BigInt(r.until)]));
    assert.equal(leaseUntil.size, 2);
    const memory = new MemoryTransport();
    const publishedAt = new Map<string, bigint>();
    const transport = withPublishHook(memory, async (messages) => {
      const res = await bed.db.pool.query<{ now: string }>(
        `SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS now`,
      );
      for (const m of messages) publishedAt.set(m.id, BigInt(res.rows[0]?.now ?? '0'));
    });
    await start({ transport });
    await memory.waitFor(2, 15_000);
    for (const [id, until] of leaseUntil) {
      const at = publishedAt.get(id);
      assert.ok(
        at !== undefined && at >= until,
        `${id} published at ${at} µs, its dead lease ran to ${until} µs`,
      );
    }
    assert.deepEqual(
      memory.messages.map((m) => m.attempts),
      [2, 2],
      'the dead claim counted one attempt, the takeover the second',
    );
  });

  it('never hands the same message to two relays at once', async () => {
    await clean();
    const outbox = new Outbox({ store: bed.db.store });
    const broker = new MemoryTransport({ latencyMs: 2 });
    for (let i = 0; i < 4; i++) await start({ transport: broker, batchSize: 50, owner: `r${i}` });
    const ids: string[] = [];
    for (let t = 0; t < 10; t++) {
      const batch = Array.from({ length: 300 }, (_, j) => ({
        topic: 'once',
        key: j % 3 === 0 ? `k${j % 30}` : null,
        payload: j,
      }));
      ids.push(...(await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, batch))));
    }
    await waitUntil(
      () => new Set(broker.messages.map((m) => m.id)).size === ids.length,
      'all delivered',
      30_000,
    );
    await waitUntil(async () => (await bed.db.count()) === 0, 'an empty outbox');
    // No failures, no crashes, leases far longer than the run: every copy beyond one is a
    // double claim.
    assert.equal(broker.messages.length, ids.length, 'each message published exactly once');
  });

  it('keeps per-key order with two relays and injected publish failures', async () => {
    await clean();
    const outbox = new Outbox({ store: bed.db.store });
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
      const ids = await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, batch));
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
    const outbox = new Outbox({ store: bed.db.store });
    const relay = await start({ transport });
    const claimed = new Promise<void>((resolve) => relay.once('relay:batch:claimed', () => resolve()));
    await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, [{ topic: 'drain', payload: 1 }]));
    await claimed;
    const stopped = relay.stop();
    await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, [{ topic: 'after-stop', payload: 2 }]));
    await stopped;
    assert.equal(transport.messagesFor('drain').length, 1, 'the in-flight batch was published');
    assert.equal(await bed.db.count(), 1, 'it was settled; the message enqueued after stop is left');
    assert.equal(transport.messagesFor('after-stop').length, 0);
    await relay.stop(); // idempotent
  });

  // A stop that waited for the publish would hang: the timeout makes that a failure.
  it(
    'returns from stop at its deadline with a publish that never answers, leaving the batch leased',
    { timeout: 30_000 },
    async () => {
      await clean();
      // A broker that takes the batch and never answers, abort or not: nothing the transport does
      // can end the wait, only the relay's own deadline.
      let publishes = 0;
      const hung: Transport = {
        name: 'hung',
        start: async () => undefined,
        probe: async () => undefined,
        close: async () => undefined,
        publish: () => {
          publishes++;
          return new Promise<never>(() => undefined);
        },
      };
      // Every wait of the relay is on this clock, so "at its deadline" is exact: the stop deadline
      // is the only sleep of this length, and time moves only when the test says so.
      const clock = new ManualClock();
      const shutdownTimeoutMs = 4321;
      const relay = await start({ transport: hung, clock, shutdownTimeoutMs, leaseMs: 60_000 });
      const claimed = new Promise<void>((resolve) => relay.once('relay:batch:claimed', () => resolve()));
      const outbox = new Outbox({ store: bed.db.store });
      await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, [{ topic: 'hung', payload: 1 }]));
      await claimed;
      await waitUntil(() => publishes === 1, 'the publish to start');
      let abandoned = -1;
      relay.on('relay:stopped', (e) => (abandoned = e.abandoned));
      let returned = false;
      const stopping = relay.stop().then(() => (returned = true));
      await waitUntil(() => clock.sleeps.includes(shutdownTimeoutMs), 'stop to start its deadline');
      await clock.advance(shutdownTimeoutMs - 1);
      assert.equal(returned, false, 'stop waits for the batch until its deadline');
      await clock.advance(1);
      await stopping;
      assert.equal(abandoned, 1, 'the hung batch was abandoned');
      const rows = await bed.db.pool.query<{ lease_owner: string | null; held: boolean }>(
        `SELECT lease_owner, lease_until > now() AS held FROM "${bed.db.schema}".outbox`,
      );
      assert.deepEqual(
        rows.rows,
        [{ lease_owner: relay.options.owner, held: true }],
        'still in the outbox, leased to the stopped relay until another takes it over',
      );
      assert.equal(publishes, 1, 'nothing published after stop');
    },
  );

  it('archives delivered messages when asked, and prunes the archive', async () => {
    await clean();
    const store = bed.db.makeStore({ archive: true });
    const transport = new MemoryTransport();
    const outbox = new Outbox({ store });
    await start({ transport, store });
    const id = await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, { topic: 'arch', payload: 1 }));
    await transport.waitFor(1);
    await waitUntil(async () => (await bed.db.count('archive')) === 1, 'the archived row');
    const row = (await bed.db.pool.query(`SELECT id::text FROM "${bed.db.schema}".archive`)).rows[0];
    assert.equal(row.id, id);
    assert.equal(await store.pruneArchive(60_000), 0, 'a fresh row is kept');
    // Aged on the database clock the archive is kept on, instead of waiting for it to age.
    await bed.db.pool.query(
      `UPDATE "${bed.db.schema}".archive SET sent_at = sent_at - interval '61 seconds'`,
    );
    assert.equal(await store.pruneArchive(60_000), 1, 'a row older than the limit is pruned');
  });

  it('recovers when its database connections are terminated, and is woken by NOTIFY again', async () => {
    await clean();
    const pg = (await import('pg')).default;
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const pool = new pg.Pool({
      connectionString: (await import('./helpers/postgres.js')).DATABASE_URL,
      application_name: `mr_term_${bed.db.schema}`,
    });
    pool.on('error', () => undefined);
    // One log of what the relay does, in the order it happened: its wake-ups, the start of each
    // next-due lookup (the last step before it sleeps), its claims, and the test's enqueue.
    const log: string[] = [];
    const real = new PostgresStore({ pool, schema: bed.db.schema });
    const store = wrapStore(real, {
      nextDueInMs: () => {
        log.push('next-due');
        return real.nextDueInMs();
      },
    });
    const transport = new MemoryTransport();
    // An hour: the relay can only be woken, never find the message by polling, within this test.
    const relay = await start({ transport, store, pollIntervalMs: 3_600_000 });
    relay.on('relay:error', (e) => log.push(`error:${e.phase}`));
    relay.on('relay:wakeup', (e) => log.push(`wakeup:${e.source}`));
    relay.on('relay:batch:claimed', () => log.push('claimed'));
    const outbox = new Outbox({ store: bed.db.store });
    try {
      await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, { topic: 'before', payload: 1 }));
      await transport.waitFor(1);
      const killed = await bed.db.pool.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
        [`mr_term_${bed.db.schema}`],
      );
      assert.ok(killed.rowCount && killed.rowCount >= 1, 'the LISTEN connection at least was terminated');
      // Re-subscribed (it wakes itself then, for notifications missed meanwhile), then asleep:
      // a next-due lookup started after its last wake-up is the relay's last step before sleeping.
      await waitUntil(() => {
        const lost = log.indexOf('error:listen');
        const resubscribed = lost >= 0 ? log.indexOf('wakeup:notify', lost) : -1;
        const lastWake = log.findLastIndex((e) => e.startsWith('wakeup:'));
        return resubscribed >= 0 && log.indexOf('next-due', Math.max(resubscribed, lastWake)) >= 0;
      }, 'the relay to re-subscribe after the lost LISTEN connection and go back to sleep');
      const enqueuing = log.push('enqueue') - 1;
      await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, { topic: 'after', payload: 2 }));
      await transport.waitFor(2, 15_000);
      const since = log.slice(enqueuing + 1);
      assert.equal(since[0], 'wakeup:notify', `woken by NOTIFY first (${since.join(', ')})`);
      assert.ok(since.indexOf('claimed') > 0, `then claimed the message (${since.join(', ')})`);
    } finally {
      await relay.stop();
      await pool.end();
    }
  });
});
