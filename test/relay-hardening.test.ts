/**
 * The relay when the world misbehaves: a transport that is down for longer than the whole retry
 * budget, a broker that never answers, a stop with a batch stuck in flight, a database that
 * fails the settle after the broker confirmed, a transport that breaks its contract, and a
 * LISTEN re-subscribe racing stop(). Each test fails on the relay of 0.1.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay, type OutboxStore, type PublishOutcome, type Transport } from '../src/core/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';
import { relayTestBed } from './helpers/relay-bed.js';
import { wrapStore } from './helpers/store-wrapper.js';
import { waitUntil } from './helpers/wait.js';

describe('relay hardening', () => {
  const bed = relayTestBed('hard');
  const { start, clean } = bed;

  async function enqueue(messages: Array<{ topic: string; key?: string | null; payload: unknown }>) {
    const outbox = new Outbox({ store: bed.db.store });
    return inTransaction(bed.db.pool, (c) => outbox.enqueue(c, messages));
  }

  async function rows(): Promise<Array<{ id: string; attempts: number; lease_token: string | null }>> {
    const res = await bed.db.pool.query(
      `SELECT id::text, attempts, lease_token::text FROM "${bed.db.schema}".outbox ORDER BY seq`,
    );
    return res.rows;
  }

  it('spends no attempt and dead-letters nothing during an outage longer than the whole retry budget', async () => {
    await clean();
    const transport = new MemoryTransport({ unavailable: true });
    // The budget is what this test is about: three attempts 10-20 ms apart would all be spent
    // within a second if an outage counted against them.
    const retry = { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 20 };
    const ids = await enqueue(
      Array.from({ length: 20 }, (_, i) => ({ topic: 'outage', key: `k${i % 4}`, payload: i })),
    );
    const events: string[] = [];
    let claims = 0;
    const relay = new Relay({ store: bed.db.store, transport, retry });
    bed.track(relay);
    relay.on('relay:transport:unavailable', () => events.push('unavailable'));
    relay.on('relay:transport:available', () => events.push('available'));
    relay.on('relay:batch:claimed', () => claims++);
    await relay.start();

    // Four failed probes (500 ms doubling, jittered: at least 3.75 s of outage), far beyond the
    // budget.
    await waitUntil(() => transport.probeCalls >= 4, 'four failed probes', 20_000);
    assert.equal(relay.transportAvailable, false);
    assert.equal(await bed.db.count('dead_letter'), 0, 'no dead letters during the outage');
    const during = await rows();
    assert.equal(during.length, 20);
    assert.deepEqual(
      during.filter((r) => r.attempts !== 0 || r.lease_token !== null),
      [],
      'every row has its attempt back and no lease',
    );
    assert.equal(claims, 1, 'one claim found the outage; none after it');
    assert.deepEqual(events, ['unavailable'], 'one event for the whole outage');

    transport.unavailable = false;
    await transport.waitFor(20, 20_000);
    await waitUntil(async () => (await bed.db.count()) === 0, 'an empty outbox');
    assert.deepEqual(new Set(transport.messages.map((m) => m.id)), new Set(ids));
    assert.deepEqual(
      transport.messages.map((m) => m.attempts),
      ids.map(() => 1),
      'each delivered on its first counted attempt',
    );
    assert.equal(await bed.db.count('dead_letter'), 0);
    assert.deepEqual(events, ['unavailable', 'available']);
  });

  it('releases a batch the broker never answers at the publish deadline, probes, and resumes', async () => {
    await clean();
    const transport = new MemoryTransport({ hang: true });
    const unavailable: Array<{ code?: unknown }> = [];
    const relay = new Relay({ store: bed.db.store, transport, publishTimeoutMs: 300 });
    bed.track(relay);
    relay.on('relay:transport:unavailable', (e) => unavailable.push(e.error as { code?: unknown }));
    await relay.start();
    const ids = await enqueue([1, 2, 3].map((i) => ({ topic: 'hung', key: 'same', payload: i })));

    await waitUntil(() => unavailable.length === 1, 'the publish deadline to pass');
    assert.equal(unavailable[0]?.code, 'publish_timeout');
    await waitUntil(
      async () => (await rows()).every((r) => r.lease_token === null && r.attempts === 0),
      'the batch to be released without spending its attempt',
    );
    assert.equal(transport.messages.length, 0);

    transport.hang = false;
    await transport.waitFor(3, 20_000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
      'delivered in order once the broker answers',
    );
  });

  it('stops the heartbeat of a batch stop() abandons, so another relay takes it over', async () => {
    await clean();
    // A publish that never returns and ignores its signal, on a relay whose database goes away
    // with it: nothing but the lease running out can free the message.
    const never: Transport = {
      name: 'never',
      start: async () => undefined,
      close: async () => undefined,
      probe: async () => undefined,
      publish: () => new Promise<PublishOutcome[]>(() => undefined),
    };
    let settles = 0;
    const failing = wrapStore(bed.db.store, {
      settle: async () => {
        settles++;
        throw new Error('the database is gone with the process');
      },
    });
    const leaseMs = 1000;
    const a = await start({ store: failing, transport: never, leaseMs, shutdownTimeoutMs: 100 });
    const claimed = new Promise<void>((resolve) => a.once('relay:batch:claimed', () => resolve()));
    const [id] = await enqueue([{ topic: 'takeover', key: 'k', payload: 1 }]);
    await claimed;
    await a.stop();

    const b = new MemoryTransport();
    await start({ transport: b, leaseMs, pollIntervalMs: 100 });
    // On 0.1 the abandoned batch's heartbeat kept extending the lease forever.
    const [taken] = await b.waitFor(1, 10_000);
    assert.equal(taken?.id, id);
    assert.ok(settles <= 1, 'the abandoned batch tried to settle at most once');
  });

  it('returns from stop() at its deadline while a claim never answers', async () => {
    await clean();
    let claims = 0;
    const stuck = wrapStore(bed.db.store, {
      claim: (request) => {
        claims++;
        // The first claim works; the next one meets a database that never answers.
        return claims === 1 ? bed.db.store.claim(request) : new Promise(() => undefined);
      },
    });
    const relay = await start({ store: stuck, transport: new MemoryTransport(), shutdownTimeoutMs: 200 });
    await waitUntil(() => claims >= 2, 'a claim that hangs');
    let abandoned = -1;
    relay.on('relay:stopped', (e) => (abandoned = e.abandoned));
    let guard: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      relay.stop().then(() => 'stopped'),
      new Promise((r) => (guard = setTimeout(() => r('still waiting'), 10_000))),
    ]);
    clearTimeout(guard);
    assert.equal(outcome, 'stopped', 'on 0.1, stop() waited for the claim forever');
    assert.equal(abandoned, 0);
  });

  it('keeps the lease while a settle fails, so a database blip after the confirm publishes nothing twice', async () => {
    await clean();
    const transport = new MemoryTransport();
    let failUntil = 0;
    let settleFailures = 0;
    const blip = wrapStore(bed.db.store, {
      settle: async (settlement) => {
        failUntil ||= Date.now() + 2500;
        if (Date.now() < failUntil) {
          settleFailures++;
          throw new Error('connection terminated (injected blip)');
        }
        await bed.db.store.settle(settlement);
      },
    });
    // A lease shorter than the blip: without the heartbeat it would run out mid-settle and the
    // relay's own next claim would publish the batch again.
    await start({ store: blip, transport, leaseMs: 1000, pollIntervalMs: 100 });
    const ids = await enqueue([1, 2, 3].map((i) => ({ topic: 'blip', payload: i })));
    await waitUntil(async () => (await bed.db.count()) === 0, 'the settle to land after the blip', 15_000);
    assert.ok(settleFailures >= 2, `the settle failed during the blip (${settleFailures})`);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
      'each message published exactly once',
    );
  });

  it('fails only the batch when a transport answers with the wrong number of outcomes', async () => {
    await clean();
    const inner = new MemoryTransport();
    let calls = 0;
    const broken: Transport = {
      name: 'broken',
      start: () => inner.start(),
      close: () => inner.close(),
      probe: () => inner.probe(),
      async publish(messages, options) {
        calls++;
        if (calls === 1) return [];
        if (calls === 2)
          return [
            undefined as unknown as PublishOutcome,
            ...messages.slice(1).map(() => ({ status: 'ok' as const })),
          ];
        return inner.publish(messages, options);
      },
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown) => unhandled.push(err);
    process.on('unhandledRejection', onUnhandled);
    const codes: unknown[] = [];
    try {
      const relay = await start({ transport: broken, retry: { baseDelayMs: 10, maxDelayMs: 20 } });
      relay.on('relay:error', (e) => codes.push((e.error as { code?: unknown }).code));
      const [id] = await enqueue([{ topic: 'broken', payload: 1 }]);
      const [message] = await inner.waitFor(1, 10_000);
      assert.equal(message?.id, id);
      assert.equal(message?.attempts, 3, 'the two broken answers each cost one attempt');
      assert.ok(codes.filter((c) => c === 'bad_outcomes').length >= 2, JSON.stringify(codes));
      assert.equal(relay.running, true, 'the relay loop survived');
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, []);
  });

  it('closes a LISTEN subscription that completes after stop(), leaking no connection', async () => {
    await clean();
    let lose: ((err: unknown) => Promise<void>) | undefined;
    let subscribes = 0;
    let open = 0;
    let release: (() => void) | undefined;
    const slowSecond = wrapStore(bed.db.store, {
      subscribe: async (onWake, onError) => {
        subscribes++;
        if (subscribes === 2) await new Promise<void>((r) => (release = r));
        const unsubscribe = await (bed.db.store as Required<OutboxStore>).subscribe(onWake, onError);
        open++;
        let closed = false;
        const close = async () => {
          if (closed) return;
          closed = true;
          open--;
          await unsubscribe();
        };
        // As the store does when its LISTEN connection dies: the connection is gone, then the
        // relay hears of it.
        lose = async (err) => {
          await close();
          onError(err);
        };
        return close;
      },
    });
    const relay = await start({ store: slowSecond, transport: new MemoryTransport() });
    assert.equal(open, 1);
    // The LISTEN connection is lost; the relay subscribes again after its backoff, and stop()
    // arrives while that second subscribe is under way.
    await lose?.(new Error('LISTEN connection lost (injected)'));
    await waitUntil(() => subscribes === 2, 'the relay to subscribe again', 5000);
    const stopped = relay.stop();
    release?.();
    await stopped;
    assert.equal(open, 0, 'the subscription that completed after stop() was closed');
    await waitUntil(
      () => bed.db.pool.idleCount === bed.db.pool.totalCount,
      'every pool client back in the pool',
    );
  });
});

describe('a message claimed more often than maxAttempts without an outcome', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('abandon');
  });
  after(async () => {
    await db.drop();
  });

  it('is dead-lettered at its next claim instead of being published again', async () => {
    const outbox = new Outbox({ store: db.store });
    const [poison, next] = await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'p', key: 'k', payload: 'poison' },
        { topic: 'p', key: 'k', payload: 'next' },
      ]),
    );
    // Three relays claim the poison and die before any outcome (the lease is made to run out).
    for (let i = 0; i < 3; i++) {
      const c = await db.store.claim({ owner: `dead-${i}`, limit: 10, leaseMs: 60_000 });
      assert.deepEqual(
        c.messages.map((m) => m.id),
        [poison],
      );
      await db.pool.query(`UPDATE "${db.schema}".outbox SET lease_until = now() - interval '1 second'`);
    }
    const transport = new MemoryTransport();
    const relay = new Relay({ store: db.store, transport, retry: { maxAttempts: 3 } });
    const dead: string[] = [];
    relay.on('relay:message:dead', (e) => dead.push(e.message.id));
    await relay.start();
    try {
      const [delivered] = await transport.waitFor(1, 10_000);
      assert.equal(delivered?.id, next, 'its key flows on');
      assert.deepEqual(dead, [poison]);
      // Both may travel in one batch (a run), settled together after the publish.
      await waitUntil(async () => (await db.store.countDeadLetters()).count === 1, 'the dead letter');
      const [letter] = await db.store.listDeadLetters();
      assert.equal(letter?.id, poison);
      assert.match(letter?.lastError ?? '', /claimed 3 times .* without an outcome/);
      assert.equal(transport.messages.length, 1, 'the poison was not published again');
    } finally {
      await relay.stop();
    }
  });
});
