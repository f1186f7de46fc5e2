// The wake gate with a real relay and real PostgreSQL: writers with the default wake-up
// (`notify: 'idle'`) send no NOTIFY while relays are busy, an idle relay is woken at commit, and
// a writer racing a relay that goes idle is never left for the poll. Every relay here polls
// once a minute, far longer than any wait below: only a wake-up delivers in time.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Outbox, Relay, type RelayOptions } from '../src/core/index.js';
import { notifyChannel } from '../src/stores/postgres/schema-name.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const POLL_MS = 60_000;

describe('relay and wake gate (PostgreSQL)', () => {
  let db: TestDb;
  let listen: pg.Client;
  let notifications = 0;
  const relays: Relay[] = [];
  const clients: pg.Client[] = [];

  const startRelay = async (options: Partial<RelayOptions> & { transport: MemoryTransport }) => {
    const relay = new Relay({ store: db.store, pollIntervalMs: POLL_MS, ...options });
    relays.push(relay);
    await relay.start();
    return relay;
  };
  const stopRelays = () => Promise.all(relays.splice(0).map((r) => r.stop()));
  const open = async () => {
    const c = new pg.Client({ connectionString: DATABASE_URL });
    c.on('error', () => undefined);
    await c.connect();
    clients.push(c);
    return c;
  };
  /** True while a relay holds (or waits for) the gate: a writer's shared try fails then. */
  const gateTaken = async () => {
    const res = await inTransaction(db.pool, (c) =>
      c.query<{ free: boolean }>(`SELECT pg_try_advisory_xact_lock_shared(hashtext($1)) AS free`, [
        `mailroom.wake.${db.schema}`,
      ]),
    );
    return res.rows[0]?.free === false;
  };

  before(async () => {
    db = await createTestDb('mrwg');
    listen = await open();
    listen.on('notification', () => notifications++);
    await listen.query(`LISTEN "${notifyChannel(db.schema)}"`);
  });
  after(async () => {
    await stopRelays();
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await db.drop();
  });

  it("is the default: a busy relay's writers send no NOTIFY, an idle relay's writers do", async () => {
    assert.equal(db.store.notify, 'idle');
    const outbox = new Outbox({ store: db.store });
    // A backlog the relay needs well over a second for: 60 batches of 50 at 50 ms a batch.
    await inTransaction(db.pool, (c) =>
      outbox.enqueue(
        c,
        Array.from({ length: 3000 }, (_, i) => ({ topic: 'backlog', payload: i })),
      ),
    );
    const transport = new MemoryTransport({ latencyMs: 50 });
    await startRelay({ transport, batchSize: 50, concurrency: 1 });
    await waitUntil(() => transport.messages.length > 0, 'the relay to be busy');
    const before = notifications;
    for (let i = 0; i < 40; i++) {
      await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'busy', payload: i }));
    }
    // The relay must still have had full batches to claim, or this proves nothing.
    const left = await db.count();
    assert.ok(left > 100, `the relay was busy while the writers wrote (${left} messages left)`);
    await sleep(200); // notifications of the last commits arrive after COMMIT returns
    assert.equal(notifications - before, 0, 'writers sent a NOTIFY while the relay was busy');

    // Drained, the relay idles with the gate held: a writer wakes it.
    await waitUntil(async () => (await db.count()) === 0, 'the backlog to drain', 60_000);
    await waitUntil(gateTaken, 'the idle relay to take the gate');
    const idleBefore = notifications;
    await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'idle', payload: 1 }));
    await waitUntil(() => transport.messagesFor('idle').length === 1, 'the message (the poll is a minute)');
    await waitUntil(() => notifications > idleBefore, 'the NOTIFY of the writer that found the gate taken');
    await stopRelays();
    assert.equal(await gateTaken(), false, 'stop() gives the gate back');
  });

  it('keeps writers quiet while a relay that keeps up has batches in flight (their settles wake it)', async () => {
    await db.pool.query(`TRUNCATE "${db.schema}".outbox`);
    const outbox = new Outbox({ store: db.store });
    // A slow broker: every batch is out for 40 ms while writers commit every few ms, so the
    // relay keeps up with short batches and never claims a full one.
    const transport = new MemoryTransport({ latencyMs: 40 });
    await startRelay({ transport, batchSize: 250 });
    const before = notifications;
    const commits = 150;
    for (let i = 0; i < commits; i++) {
      await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'steady', payload: i }));
      await sleep(2);
    }
    await waitUntil(
      () => transport.messagesFor('steady').length === commits,
      'every message (the poll is a minute)',
    );
    const sent = notifications - before;
    // Some writers notify (the first of each quiet spell, and any that find the gate held while
    // it is being given back); most must not.
    assert.ok(sent < commits / 3, `${sent} NOTIFYs for ${commits} commits to a relay that was busy`);
    await stopRelays();
  });

  it('wakes an idle relay at every commit, whether it just went idle or slept long', async () => {
    const outbox = new Outbox({ store: db.store });
    const transport = new MemoryTransport();
    await startRelay({ transport });
    for (let i = 0; i < 20; i++) {
      await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'wake', payload: i }));
      await waitUntil(
        () => transport.messagesFor('wake').length === i + 1,
        `message ${i} (the poll is a minute)`,
      );
      await sleep(Math.floor(Math.random() * 30));
    }
    await stopRelays();
  });

  it('stop() ends a wait for the gate behind a writer that never commits, leaving no connection behind', async () => {
    await db.pool.query(`TRUNCATE "${db.schema}".outbox`);
    const outbox = new Outbox({ store: db.store });
    const writer = await open();
    await writer.query('BEGIN');
    await outbox.enqueue(writer, { topic: 'open', payload: 1 });
    try {
      const transport = new MemoryTransport();
      const relay = await startRelay({ transport });
      // The relay went idle and asked for the gate: it waits behind the open writer.
      await waitUntil(gateTaken, 'the relay to ask for the gate');
      await relay.stop();
      relays.splice(relays.indexOf(relay), 1);
      assert.equal(await gateTaken(), false, 'the wait for the gate ended with stop()');
    } finally {
      await writer.query('ROLLBACK');
    }
    // db.drop() in `after` fails the file if the gate's connection was not given back.
  });

  for (const count of [1, 2]) {
    it(
      `never leaves a writer racing ${count} relay(s) going idle for the poll`,
      { timeout: 180_000 },
      async () => {
        await db.pool.query(`TRUNCATE "${db.schema}".outbox`);
        const transport = new MemoryTransport();
        // Small batches, so a round's messages fill some claims (the gate is given back) and not
        // others (the relay goes idle and takes it again) at every moment of the round.
        for (let r = 0; r < count; r++) await startRelay({ transport, batchSize: 3, concurrency: 2 });
        const outbox = new Outbox({ store: db.store });
        const writers = await Promise.all(Array.from({ length: 4 }, () => open()));
        let committed = 0;
        for (let round = 0; round < 60; round++) {
          await Promise.all(
            writers.map(async (c, w) => {
              const n = 1 + Math.floor(Math.random() * 3);
              for (let i = 0; i < n; i++) {
                await c.query('BEGIN');
                await outbox.enqueue(c, { topic: 'race', key: `w${w}`, payload: { round, i } });
                // Lingering after the enqueue: the window in which a relay going idle must wait.
                if (Math.random() < 0.5) await sleep(Math.floor(Math.random() * 10));
                if (Math.random() < 0.1) {
                  await c.query('ROLLBACK');
                } else {
                  await c.query('COMMIT');
                  committed++;
                }
              }
            }),
          );
          const want = committed;
          await waitUntil(
            () => new Set(transport.messagesFor('race').map((m) => m.id)).size >= want,
            `round ${round}'s messages (the poll is a minute: a message not woken for is stuck)`,
            10_000,
          );
          await sleep(Math.floor(Math.random() * 25));
        }
        await stopRelays();
        assert.equal(new Set(transport.messagesFor('race').map((m) => m.id)).size, committed);
      },
    );
  }
});
