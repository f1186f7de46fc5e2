/**
 * The bar every outbox store must pass, as a `node:test` suite. Each store's test file calls
 * {@link runStoreConformance} with a factory of fresh, migrated, empty stores; the suite checks
 * the {@link OutboxStore} contract the relay relies on (transactional enqueue, per-key claims,
 * leases, settling, dead letters, wake-ups) and then runs a relay over the store.
 *
 * Only what one connection can show is checked here. Tests that need several connections at
 * once (concurrent migrators, transactions committing out of order, two relays) belong to the
 * stores that allow them.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { PermanentDeliveryError } from '../core/errors/permanent-delivery-error.js';
import { Outbox } from '../core/outbox.js';
import type { OutboxStore } from '../core/ports.js';
import { Relay, type RelayOptions } from '../core/relay.js';
import type { OutboxMessage } from '../core/types.js';
import { MemoryTransport } from '../transports/memory/memory-transport.js';

/** One store under test, with a way to run the application's transactions on its database. */
export interface StoreHarness {
  store: OutboxStore;
  /**
   * Runs `fn` in a transaction of the store's database and commits; rolls back and rethrows
   * when `fn` throws. `tx` is what `outbox.enqueue(tx, …)` takes for this store.
   */
  transaction<T>(fn: (tx: unknown) => Promise<T>): Promise<T>;
  /** Releases what the harness made (drops the schema, closes the store). */
  close(): Promise<void>;
}

export interface StoreConformanceOptions {
  /** Returns a new store on a migrated, empty schema. Each test makes its own and closes it. */
  create: () => Promise<StoreHarness>;
  /**
   * Upper bound for waiting on the relay.
   *
   * @default 10000
   */
  timeoutMs?: number;
}

function payloadOf(m: OutboxMessage): unknown {
  return JSON.parse(m.payload.toString());
}

async function waitUntil(check: () => Promise<boolean> | boolean, what: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Registers the conformance tests for one store under `describe(name)`.
 *
 * @example
 * ```ts
 * runStoreConformance('PGlite store', {
 *   create: async () => {
 *     const store = new PGliteStore({ db, schema: `t_${n++}` });
 *     await store.migrate();
 *     return { store, transaction: (fn) => db.transaction(fn), close: () => dropSchema(store.schema) };
 *   },
 * });
 * ```
 */
export function runStoreConformance(name: string, options: StoreConformanceOptions): void {
  const timeoutMs = options.timeoutMs ?? 10_000;

  describe(`${name}: store conformance`, () => {
    const open: Array<{ h: StoreHarness; relays: Relay[] }> = [];
    after(async () => {
      for (const { h, relays } of open.splice(0)) {
        await Promise.all(relays.map((r) => r.stop()));
        await h.close();
      }
    });

    /** A fresh store, closed (with its relays) after the test. */
    async function setup(t: { after: (fn: () => Promise<void>) => void }) {
      const h = await options.create();
      const entry = { h, relays: [] as Relay[] };
      open.push(entry);
      t.after(async () => {
        const i = open.indexOf(entry);
        if (i !== -1) open.splice(i, 1);
        await Promise.all(entry.relays.map((r) => r.stop()));
        await h.close();
      });
      const outbox = new Outbox({ store: h.store });
      const startRelay = async (o: Partial<RelayOptions> & { transport: MemoryTransport }) => {
        const relay = new Relay({ store: h.store, pollIntervalMs: 100, leaseMs: 2000, ...o });
        entry.relays.push(relay);
        await relay.start();
        return relay;
      };
      return { ...h, outbox, startRelay };
    }

    it('passes its schema check once migrated', async (t) => {
      const { store } = await setup(t);
      await store.check();
      assert.equal(typeof store.name, 'string');
      assert.equal(typeof store.capabilities.notify, 'boolean');
    });

    it('enqueues in a transaction and keeps nothing after a rollback', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await assert.rejects(
        transaction(async (tx) => {
          await outbox.enqueue(tx, [
            { topic: 'rolled.back', payload: { a: 1 } },
            { topic: 'rolled.back', key: 'k', payload: 2 },
          ]);
          throw new Error('business failure');
        }),
        /business failure/,
      );
      assert.equal((await store.stats()).backlog, 0, 'a rolled-back enqueue leaves no row');
      const id = await transaction((tx) =>
        outbox.enqueue(tx, {
          topic: 'committed',
          key: 'k1',
          type: 'thing.done',
          payload: { a: 1 },
          headers: { h: 'v' },
        }),
      );
      assert.equal((await store.stats()).backlog, 1);
      const { messages } = await store.claim({ owner: 'test', limit: 10, leaseMs: 5000 });
      assert.equal(messages.length, 1);
      const m = messages[0] as OutboxMessage;
      assert.equal(m.id, id);
      assert.equal(m.topic, 'committed');
      assert.equal(m.key, 'k1');
      assert.equal(m.type, 'thing.done');
      assert.deepEqual(m.headers, { h: 'v' });
      assert.ok(Buffer.isBuffer(m.payload), 'payload is a Buffer');
      assert.equal(m.payload.toString(), '{"a":1}');
      assert.equal(m.contentType, 'application/json');
      assert.ok(m.createdAt instanceof Date, 'createdAt is a Date');
      assert.ok(Math.abs(m.createdAt.getTime() - Date.now()) < 60_000, 'createdAt is about now');
      assert.equal(m.attempts, 1, 'a claim counts as an attempt');
      assert.equal(typeof m.seq, 'string');
    });

    it('keeps bytes payloads byte for byte', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      const bytes = Buffer.from([0, 1, 2, 127, 128, 255]);
      await transaction((tx) => outbox.enqueue(tx, { topic: 'bytes', payload: bytes }));
      const [m] = (await store.claim({ owner: 'test', limit: 10, leaseMs: 5000 })).messages;
      assert.deepEqual([...(m?.payload ?? [])], [...bytes]);
      assert.equal(m?.contentType, 'application/octet-stream');
    });

    it('claims at most one message per key, oldest first, and skips rows another claim holds', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 't', key: 'a', payload: 1 },
          { topic: 't', key: 'a', payload: 2 },
          { topic: 't', key: 'b', payload: 3 },
          { topic: 't', payload: 4 },
          { topic: 't', payload: 5 },
        ]),
      );
      const first = await store.claim({ owner: 'r1', limit: 10, leaseMs: 5000 });
      assert.deepEqual(first.messages.map(payloadOf), [1, 3, 4, 5]);
      const second = await store.claim({ owner: 'r2', limit: 10, leaseMs: 5000 });
      assert.equal(second.messages.length, 0, 'a:2 must wait for a:1 to be delivered');
      await store.settle({
        leaseToken: first.leaseToken,
        delivered: first.messages,
        released: [],
        retry: [],
        dead: [],
      });
      const third = await store.claim({ owner: 'r2', limit: 10, leaseMs: 5000 });
      assert.deepEqual(third.messages.map(payloadOf), [2]);
      assert.equal(third.messages[0]?.attempts, 1);
      assert.equal((await store.stats()).backlog, 1);
    });

    it('respects the claim limit', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) =>
        outbox.enqueue(
          tx,
          Array.from({ length: 5 }, (_, i) => ({ topic: 'limit', payload: i })),
        ),
      );
      const a = await store.claim({ owner: 'r', limit: 2, leaseMs: 5000 });
      assert.deepEqual(a.messages.map(payloadOf), [0, 1]);
      const b = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.deepEqual(b.messages.map(payloadOf), [2, 3, 4]);
    });

    it('gives the rows of an expired lease to the next claim, counting the attempt', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) => outbox.enqueue(tx, { topic: 'lease', key: 'k', payload: 1 }));
      // Long enough that a slow machine still claims again before it runs out.
      const dead = await store.claim({ owner: 'dead', limit: 10, leaseMs: 1000 });
      assert.equal(dead.messages.length, 1);
      assert.equal((await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 })).messages.length, 0);
      await sleep(1100);
      const taken = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.equal(taken.messages[0]?.id, dead.messages[0]?.id);
      assert.equal(taken.messages[0]?.attempts, 2);
      // The dead claim's late settle must not touch the row the new claim holds…
      await store.settle({
        leaseToken: dead.leaseToken,
        delivered: [],
        retry: [{ message: dead.messages[0] as OutboxMessage, delayMs: 60_000, error: 'late' }],
        dead: [],
        released: [],
      });
      assert.equal((await store.stats()).scheduled, 0, 'a stale lease token changes nothing');
      // …but a delivery is a delivery, whoever reports it.
      await store.settle({
        leaseToken: dead.leaseToken,
        delivered: dead.messages,
        released: [],
        retry: [],
        dead: [],
      });
      assert.equal((await store.stats()).backlog, 0);
    });

    it('releases a message the transport could not take: attempt given back, lease gone, due now', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'release', key: 'k', payload: 1 },
          { topic: 'release', key: 'k', payload: 2 },
        ]),
      );
      // A first attempt that failed for the message itself, so attempts is 2 at the release:
      // giving back one attempt (2 → 1) and resetting the count (→ 0) are then told apart.
      const first = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      await store.settle({
        leaseToken: first.leaseToken,
        delivered: [],
        released: [],
        retry: [{ message: first.messages[0] as OutboxMessage, delayMs: 0, error: 'nack' }],
        dead: [],
      });
      const held = await store.claim({ owner: 'r', limit: 10, leaseMs: 60_000 });
      assert.deepEqual(held.messages.map(payloadOf), [1]);
      assert.equal(held.messages[0]?.attempts, 2);

      await store.settle({
        leaseToken: held.leaseToken,
        delivered: [],
        released: [{ message: held.messages[0] as OutboxMessage, error: 'broker unreachable' }],
        retry: [],
        dead: [],
      });
      const stats = await store.stats();
      assert.equal(stats.backlog, 2, 'a release keeps the message');
      assert.equal(stats.inFlight, 0, 'the lease is gone (it was good for another minute)');
      assert.equal(stats.scheduled, 0, 'the message is due now, not scheduled');

      const again = await store.claim({ owner: 'r2', limit: 10, leaseMs: 5000 });
      assert.deepEqual(
        again.messages.map(payloadOf),
        [1],
        'claimable again at once, and still the head of its key',
      );
      assert.equal(again.messages[0]?.attempts, 2, 'the claim counted 3; the release gave one back');

      // A release from a claim that no longer holds the row (its lease ran out and another relay
      // took it) must change nothing: not the lease, not the attempts.
      await store.settle({
        leaseToken: held.leaseToken,
        delivered: [],
        released: [{ message: held.messages[0] as OutboxMessage, error: 'late release' }],
        retry: [],
        dead: [],
      });
      assert.equal((await store.stats()).inFlight, 1, 'a stale lease token releases nothing');
      assert.equal((await store.claim({ owner: 'r3', limit: 10, leaseMs: 5000 })).messages.length, 0);
      await store.settle({
        leaseToken: again.leaseToken,
        delivered: [],
        released: [{ message: again.messages[0] as OutboxMessage, error: 'broker unreachable' }],
        retry: [],
        dead: [],
      });
      const last = await store.claim({ owner: 'r3', limit: 10, leaseMs: 5000 });
      assert.equal(last.messages[0]?.attempts, 2, 'the stale release gave no attempt back');
    });

    it('extends a lease it still holds', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) => outbox.enqueue(tx, { topic: 'extend', payload: 1 }));
      const c = await store.claim({ owner: 'r', limit: 10, leaseMs: 300 });
      await store.extendLease(c.leaseToken, 5000);
      await sleep(450);
      assert.equal((await store.claim({ owner: 'r2', limit: 10, leaseMs: 5000 })).messages.length, 0);
      assert.equal((await store.stats()).inFlight, 1);
    });

    it('schedules a retry after its delay and reports when it is due', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      assert.equal(await store.nextDueInMs(), null, 'nothing scheduled in an empty outbox');
      await transaction((tx) => outbox.enqueue(tx, { topic: 'retry', key: 'k', payload: 1 }));
      const c = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      await store.settle({
        leaseToken: c.leaseToken,
        delivered: [],
        retry: [{ message: c.messages[0] as OutboxMessage, delayMs: 1000, error: 'try later' }],
        dead: [],
        released: [],
      });
      const due = await store.nextDueInMs();
      assert.ok(due !== null && due >= 0 && due <= 1000, `due within 1000 ms, got ${due}`);
      const stats = await store.stats();
      assert.equal(stats.scheduled, 1);
      assert.equal(stats.inFlight, 0);
      assert.equal((await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 })).messages.length, 0);
      await sleep(1100);
      const again = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.equal(again.messages[0]?.attempts, 2);
    });

    it('holds back the later messages of a key behind a delayed message of that key until it is due', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'delay', key: 'k', payload: 'delayed', delayMs: 1000 },
          { topic: 'delay', key: 'k', payload: 'behind' },
          { topic: 'delay', key: 'other', payload: 'free' },
        ]),
      );
      // Per-key order wins over the delay: 'behind' was written after 'delayed' committed, so it
      // is not delivered before it, however long the delay. Other keys are not held back.
      const early = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.deepEqual(early.messages.map(payloadOf), ['free']);
      await sleep(1100);
      const due = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.deepEqual(due.messages.map(payloadOf), ['delayed'], 'the delayed head, and only it');
      await store.settle({
        leaseToken: due.leaseToken,
        delivered: due.messages,
        released: [],
        retry: [],
        dead: [],
      });
      const next = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.deepEqual(next.messages.map(payloadOf), ['behind']);
    });

    it('dead-letters with the error, then replays with the same id and purges', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      const [a, b] = await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'dl.a', key: 'k', payload: 'a' },
          { topic: 'dl.b', payload: 'b' },
        ]),
      );
      const c = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      await store.settle({
        leaseToken: c.leaseToken,
        delivered: [],
        released: [],
        retry: [],
        dead: c.messages.map((message) => ({ message, error: `rejected ${payloadOf(message)}` })),
      });
      const stats = await store.stats();
      assert.equal(stats.backlog, 0);
      assert.equal(stats.deadLetters, 2);
      const dead = await store.listDeadLetters();
      assert.deepEqual(dead.map((d) => d.id).sort(), [a, b].sort());
      const deadA = dead.find((d) => d.id === a);
      assert.equal(deadA?.lastError, 'rejected a');
      assert.equal(deadA?.attempts, 1);
      assert.ok(deadA?.deadAt instanceof Date);
      assert.deepEqual(
        (await store.listDeadLetters({ topic: 'dl.b' })).map((d) => d.id),
        [b],
      );
      const counted = await store.countDeadLetters();
      assert.equal(counted.count, 2);
      assert.ok(counted.asOf instanceof Date, 'countDeadLetters says when it counted');
      assert.equal((await store.countDeadLetters({ topic: 'dl.b' })).count, 1);
      assert.deepEqual(
        await store.replayDeadLetters({ deadBefore: new Date(0) }),
        [],
        'none died before 1970',
      );

      const batches: number[] = [];
      assert.deepEqual(
        await store.replayDeadLetters(
          { ids: [a as string] },
          { batchSize: 1, onBatch: (r) => batches.push(r.length) },
        ),
        [{ id: a, status: 'replayed' }],
      );
      assert.deepEqual(batches, [1], 'onBatch hears of each batch');
      const replayed = await store.claim({ owner: 'r', limit: 10, leaseMs: 5000 });
      assert.equal(replayed.messages[0]?.id, a, 'a replayed message keeps its id');
      assert.equal(replayed.messages[0]?.attempts, 1, 'attempts start again');
      assert.deepEqual(await store.purgeDeadLetters({ topic: 'dl.b' }), [{ id: b, status: 'purged' }]);
      assert.equal((await store.stats()).deadLetters, 0);
    });

    it('counts backlog, in-flight and dead letters per topic', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'x', payload: 1 },
          { topic: 'x', payload: 2 },
          { topic: 'y', payload: 3 },
        ]),
      );
      await store.claim({ owner: 'r', limit: 1, leaseMs: 5000 });
      const stats = await store.stats();
      assert.equal(stats.backlog, 3);
      assert.equal(stats.inFlight, 1);
      assert.ok(stats.oldestAgeMs !== null && stats.oldestAgeMs >= 0);
      assert.deepEqual(stats.topics, [
        { topic: 'x', backlog: 2, deadLetters: 0 },
        { topic: 'y', backlog: 1, deadLetters: 0 },
      ]);
    });

    it('wakes subscribers when an enqueueing transaction commits, not when it rolls back', async (t) => {
      const { store, outbox, transaction } = await setup(t);
      if (!store.capabilities.notify || !store.subscribe) {
        t.skip(`${store.name} does not notify`);
        return;
      }
      let wakes = 0;
      const unsubscribe = await store.subscribe(
        () => wakes++,
        () => undefined,
      );
      // A store whose writers notify only while a relay is idle: be that idle relay.
      const gate = store.wakeGate?.();
      await gate?.arm({ signal: new AbortController().signal, onLost: () => undefined });
      try {
        await assert.rejects(
          transaction(async (tx) => {
            await outbox.enqueue(tx, { topic: 'quiet', payload: 1 });
            throw new Error('rollback');
          }),
        );
        await sleep(200);
        assert.equal(wakes, 0, 'a rolled-back transaction sends no wake-up');
        await transaction((tx) => outbox.enqueue(tx, { topic: 'loud', payload: 1 }));
        await waitUntil(() => wakes > 0, 'a wake-up at commit', timeoutMs);
      } finally {
        await unsubscribe();
        await gate?.disarm();
      }
      const before = wakes;
      await transaction((tx) => outbox.enqueue(tx, { topic: 'after', payload: 1 }));
      await sleep(200);
      assert.equal(wakes, before, 'no wake-ups after unsubscribing');
    });

    it('relays every committed message and never a rolled-back one, woken at commit', async (t) => {
      const { store, outbox, transaction, startRelay } = await setup(t);
      const transport = new MemoryTransport();
      // A poll far longer than the test: only a wake-up at commit can deliver in time.
      const notify = store.capabilities.notify && typeof store.subscribe === 'function';
      await startRelay({ transport, ...(notify ? { pollIntervalMs: 60_000 } : {}) });
      const committed: string[] = [];
      for (let i = 0; i < 10; i++) {
        const ids = await transaction((tx) =>
          outbox.enqueue(tx, [
            { topic: 'relay', key: `k${i % 3}`, payload: i },
            { topic: 'relay', payload: i },
          ]),
        );
        committed.push(...ids);
        if (i % 4 === 0) {
          await assert.rejects(
            transaction(async (tx) => {
              await outbox.enqueue(tx, { topic: 'phantom', payload: i });
              throw new Error('rollback');
            }),
          );
        }
      }
      await waitUntil(
        () => new Set(transport.messages.map((m) => m.id)).size >= committed.length,
        'every committed message',
        timeoutMs,
      );
      await waitUntil(async () => (await store.stats()).backlog === 0, 'an empty outbox', timeoutMs);
      assert.deepEqual(new Set(transport.messages.map((m) => m.id)), new Set(committed));
      assert.equal(transport.messagesFor('phantom').length, 0);
      for (const k of ['k0', 'k1', 'k2']) {
        const got = transport.messages.filter((m) => m.key === k).map(payloadOf);
        assert.deepEqual(
          got,
          [...got].sort((x, y) => (x as number) - (y as number)),
          `key ${k} in order`,
        );
      }
    });

    it('retries with backoff through the relay, dead-letters, and delivers a replayed message', async (t) => {
      const { store, outbox, transaction, startRelay } = await setup(t);
      const transport = new MemoryTransport({ failWith: () => new Error('broker says no') });
      const delays: number[] = [];
      const relay = await startRelay({
        transport,
        retry: { baseDelayMs: 50, maxDelayMs: 200, maxAttempts: 3, jitter: 'none' },
      });
      relay.on('relay:message:retry', (e) => delays.push(e.delayMs));
      const id = await transaction((tx) => outbox.enqueue(tx, { topic: 'flaky', key: 'x', payload: {} }));
      await waitUntil(async () => (await store.stats()).deadLetters === 1, 'the dead letter', timeoutMs);
      assert.deepEqual(delays, [50, 100]);
      const [dead] = await store.listDeadLetters();
      assert.equal(dead?.id, id);
      assert.equal(dead?.attempts, 3);
      assert.match(dead?.lastError ?? '', /gave up after 3 attempts: broker says no/);

      transport.failWith = (m) =>
        payloadOf(m) === 'poison' ? new PermanentDeliveryError('rejected') : undefined;
      assert.deepEqual(await store.replayDeadLetters({ ids: [id] }), [{ id, status: 'replayed' }]);
      const [delivered] = await transport.waitFor(1, timeoutMs);
      assert.equal(delivered?.id, id, 'a replayed message keeps its id');

      await transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'p', key: 'k', payload: 'poison' },
          { topic: 'p', key: 'k', payload: 'after' },
        ]),
      );
      await transport.waitFor(2, timeoutMs);
      assert.equal(transport.messages[1]?.payload.toString(), '"after"', 'a poison message blocks nothing');
      // Both may travel in one batch (a run), settled together after the publish.
      await waitUntil(
        async () => (await store.listDeadLetters({ topic: 'p' })).length === 1,
        'the poison dead letter',
        timeoutMs,
      );
      const poison = await store.listDeadLetters({ topic: 'p' });
      assert.equal(poison[0]?.lastError, 'rejected');
      assert.equal(poison[0]?.attempts, 1);
    });

    it('redelivers a message whose confirm was lost, with the same id', async (t) => {
      const { outbox, transaction, startRelay } = await setup(t);
      let lose = true;
      const transport = new MemoryTransport({
        loseConfirm: () => {
          const l = lose;
          lose = false;
          return l;
        },
      });
      await startRelay({ transport, retry: { baseDelayMs: 10, jitter: 'none' } });
      const id = await transaction((tx) => outbox.enqueue(tx, { topic: 'dup', payload: 1 }));
      const copies = await transport.waitFor(2, timeoutMs);
      assert.deepEqual(
        copies.map((m) => [m.id, m.attempts]),
        [
          [id, 1],
          [id, 2],
        ],
      );
    });
  });
}
