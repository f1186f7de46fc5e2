/**
 * The relay in `replication` mode against PostgreSQL's real log (a pgoutput slot; wal_level is
 * logical on test machines, `.ci/run` sets it): commit order, rollbacks, a long transaction, a
 * poison key, a restart, a slot dropped behind the relay's back, a hot standby taking over.
 * Every slot and publication made here is dropped after.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import type pg from 'pg';
import { Outbox, Relay } from '../../src/core/index.js';
import { PostgresLogSource } from '../../src/replication/postgres-log-source.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, DATABASE_URL, type TestDb } from '../helpers/postgres.js';
import { dropSlot as dropSlotOf } from '../helpers/slots.js';
import { waitUntil } from '../helpers/wait.js';

describe('Relay with wakeup replication (PostgreSQL log)', () => {
  let db: TestDb;
  let outbox: Outbox;
  let slot: string;
  let publication: string;
  const relays: Relay[] = [];

  before(async () => {
    db = await createTestDb('logrelay');
    outbox = new Outbox({ store: db.store });
    publication = `${db.schema}_outbox`;
  });

  const dropSlot = (name: string) => dropSlotOf(db.pool, name);

  beforeEach(async () => {
    for (const r of relays.splice(0)) await r.stop();
    if (slot) await dropSlot(slot);
    slot = `mr_test_${randomBytes(4).toString('hex')}`;
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  after(async () => {
    for (const r of relays.splice(0)) await r.stop();
    if (slot) await dropSlot(slot);
    await db.pool.query(`DROP PUBLICATION IF EXISTS "${publication}"`);
    await db.drop();
  });

  function relay(transport: MemoryTransport, options: Record<string, unknown> = {}): Relay {
    const r = new Relay({
      store: db.store,
      transport,
      source: new PostgresLogSource({
        connectionString: DATABASE_URL,
        schema: db.schema,
        slot,
        store: db.store,
        standbyRetryMs: 200,
      }),
      retry: { baseDelayMs: 50, maxDelayMs: 100 },
      ...options,
    });
    relays.push(r);
    return r;
  }

  async function begin(): Promise<pg.PoolClient> {
    const client = await db.pool.connect();
    await client.query('BEGIN');
    return client;
  }
  async function enqueue(client: pg.PoolClient, key: string | null, n = 1): Promise<string[]> {
    return outbox.enqueue(
      client,
      Array.from({ length: n }, (_, i) => ({ topic: 'log.relay', key, payload: { i } })),
    );
  }
  async function commit(client: pg.PoolClient): Promise<void> {
    await client.query('COMMIT');
    client.release();
  }
  async function oneTx(key: string | null, n = 1): Promise<string[]> {
    const c = await begin();
    const ids = await enqueue(c, key, n);
    await commit(c);
    return ids;
  }

  const claimsCounted = () => {
    let n = 0;
    const claim = db.store.claim.bind(db.store);
    db.store.claim = async (request) => {
      n++;
      return claim(request);
    };
    return { count: () => n, restore: () => (db.store.claim = claim) };
  };

  it('delivers interleaved transactions in commit order, never a rolled-back one, a long one after the short ones it waited for', async () => {
    const transport = new MemoryTransport();
    const claims = claimsCounted();
    try {
      // One batch at a time, so the broker sees exactly the log's order (with more, batches of
      // different keys overlap; each key's order holds either way).
      const r = relay(transport, { concurrency: 1 });
      await r.start();
      const claimsAtStart = claims.count();
      // A and B interleave their inserts; B commits first.
      const a = await begin();
      const b = await begin();
      const a1 = await enqueue(a, null);
      const b1 = await enqueue(b, null);
      const a2 = await enqueue(a, null);
      const long = await begin();
      const l1 = await enqueue(long, 'long');
      await commit(b);
      const rolled = await begin();
      const r1 = await enqueue(rolled, null);
      await rolled.query('ROLLBACK');
      rolled.release();
      await commit(a);
      const shorts: string[] = [];
      // Keys of their own: a key with a batch still out would be left to the table path, which
      // keeps its order but not the order across keys.
      for (let i = 0; i < 20; i++) shorts.push(...(await oneTx(i % 2 === 0 ? `s${i}` : null)));
      await commit(long);
      const expected = [...b1, ...a1, ...a2, ...shorts, ...l1];
      await transport.waitFor(expected.length, 10_000);
      await new Promise((res) => setTimeout(res, 300));
      assert.deepEqual(
        transport.messages.map((m) => m.id),
        expected,
      );
      assert.ok(
        !transport.messages.some((m) => r1.includes(m.id)),
        'the rolled-back message never delivered',
      );
      assert.equal(await db.count(), 0);
      // Delivered by the log, not by claims: none beyond the backstop's.
      assert.ok(claims.count() - claimsAtStart <= 2, `${claims.count() - claimsAtStart} claims`);
    } finally {
      claims.restore();
    }
  });

  it('holds a poison key in the retry path while other keys flow, then delivers it in order', async () => {
    let failing = true;
    const transport = new MemoryTransport({
      failWith: (m) => (failing && m.key === 'poison' ? 'retry' : undefined),
    });
    const r = relay(transport);
    await r.start();
    const [p1] = await oneTx('poison');
    await waitUntil(async () => {
      const res = await db.pool.query(`SELECT attempts FROM "${db.schema}".outbox WHERE id = $1`, [p1]);
      return (res.rows[0]?.attempts ?? 0) >= 2;
    }, 'the poison message retried');
    const [p2] = await oneTx('poison');
    const others = [...(await oneTx('a')), ...(await oneTx('b')), ...(await oneTx(null))];
    await transport.waitFor(3, 5000);
    // Different keys: batches in flight side by side may reach the broker in either order.
    assert.deepEqual(
      transport.messages.map((m) => m.id).sort(),
      [...others].sort(),
      'other keys flowed past the poison key',
    );
    failing = false;
    await waitUntil(
      async () => transport.messages.filter((m) => m.key === 'poison').length === 2,
      'the poison key drained',
    );
    assert.deepEqual(
      transport.messages.filter((m) => m.key === 'poison').map((m) => m.id),
      [p1, p2],
    );
  });

  it('resumes after a restart, and delivers from the table what was committed while the slot was gone', async () => {
    const transport = new MemoryTransport();
    const first = relay(transport);
    await first.start();
    const before = await oneTx('k', 3);
    await transport.waitFor(3, 5000);
    await first.stop();
    relays.splice(relays.indexOf(first), 1);
    // Committed while no relay runs: the slot keeps the log for the next one.
    const whileStopped = await oneTx('k', 2);
    const second = relay(transport);
    await second.start();
    await transport.waitFor(5, 5000);
    await second.stop();
    relays.splice(relays.indexOf(second), 1);

    // The slot dropped behind the relay's back: the next start creates it again, says so, and
    // the table still delivers what the log no longer has.
    await dropSlot(slot);
    const gap = await oneTx('k', 2);
    const third = relay(transport);
    await third.start();
    await transport.waitFor(7, 8000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      [...before, ...whileStopped, ...gap],
    );
    await waitUntil(async () => (await db.count()) === 0, 'settled');
  });

  it('four relays started at once on a new publication and slot all start: one reads, three stand by', async () => {
    const publication4 = `${db.schema}_pub4`;
    const started = Array.from({ length: 4 }, () => {
      const r = new Relay({
        store: db.store,
        transport: new MemoryTransport(),
        source: new PostgresLogSource({
          connectionString: DATABASE_URL,
          schema: db.schema,
          slot,
          publication: publication4,
          store: db.store,
          standbyRetryMs: 200,
        }),
      });
      relays.push(r);
      return r.start();
    });
    try {
      // Creating the publication and the slot race: the losers use what the winner made.
      await Promise.all(started);
    } finally {
      for (const r of relays.splice(0)) await r.stop();
      await dropSlot(slot);
      await db.pool.query(`DROP PUBLICATION IF EXISTS "${publication4}"`);
    }
  });

  it('a second relay on the same slot waits as a hot standby and takes over when the first stops', async () => {
    const transport = new MemoryTransport();
    const active = relay(transport, { owner: 'active' });
    await active.start();
    const standbySource = new PostgresLogSource({
      connectionString: DATABASE_URL,
      schema: db.schema,
      slot,
      store: db.store,
      standbyRetryMs: 200,
    });
    const standby = new Relay({ store: db.store, transport, source: standbySource, owner: 'standby' });
    relays.push(standby);
    await standby.start();
    assert.equal(standbySource.standby, true, 'the slot is held by the first relay');
    const early = await oneTx('t', 2);
    await transport.waitFor(2, 5000);
    await active.stop();
    relays.splice(relays.indexOf(active), 1);
    const stoppedAt = Date.now();
    await waitUntil(async () => standbySource.connected, 'the standby took the log over', 10_000);
    const tookOverMs = Date.now() - stoppedAt;
    console.log(`# standby took the log over ${tookOverMs} ms after the reader stopped`);
    assert.ok(tookOverMs < 5000, `took over in ${tookOverMs} ms`);
    const late = await oneTx('t', 2);
    await transport.waitFor(4, 5000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      [...early, ...late],
    );
  });
});
