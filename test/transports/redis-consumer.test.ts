// RedisConsumer against the local Redis (6379): a consumer group on the stream the relay's
// transport writes, acknowledged (XACK) only after the inbox commit, own pending entries re-read
// on reconnect, a killed consumer's entries taken over with XAUTOCLAIM, two consumers sharing a
// group, retries then dead letters (XADD + XACK in one MULTI/EXEC), per-key lanes, connection
// cuts through a TcpProxy, draining stop, typed errors. Each test has keys of its own (a prefix),
// deleted afterwards.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';

import type { Redis } from 'ioredis';
import type pg from 'pg';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { PermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { OutboxMessage, ReceivedMessage } from '../../src/core/types.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  RedisConsumer,
  RedisStreamsTransport,
  type RedisConsumerEvents,
  type RedisConsumerOptions,
} from '../../src/transports/redis/index.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { afterCommit, PgInbox } from '../helpers/pg-inbox.js';
import { waitUntil } from '../helpers/wait.js';
import {
  deleteKeys,
  fieldMap,
  freePort,
  REDIS_PORT,
  REDIS_URL,
  testClient,
  uniquePrefix,
} from './redis-helpers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let db: TestDb;
let redis: Redis;
const consumers: Array<RedisConsumer<never>> = [];

before(async () => {
  db = await createTestDb('mrrcons');
  await db.pool.query(`
    CREATE TABLE "${db.schema}".effects (id uuid NOT NULL, key text, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE "${db.schema}".test_inbox (consumer text NOT NULL, id uuid NOT NULL, PRIMARY KEY (consumer, id));
  `);
  redis = await testClient();
});

after(async () => {
  await redis.quit();
  await db.drop();
});

/** Per test: a key prefix, the stream template under it, the topic, and a transport to publish with. */
interface Bed {
  prefix: string;
  template: string;
  topic: string;
  stream: string;
  dead: string;
  group: string;
  transport: RedisStreamsTransport;
  publish(messages: OutboxMessage[]): Promise<void>;
}
let bed: Bed;

beforeEach(async () => {
  await db.pool.query(`TRUNCATE "${db.schema}".effects, "${db.schema}".test_inbox`);
  const prefix = uniquePrefix();
  const template = `${prefix}{topic}`;
  const topic = 'order.created';
  const transport = new RedisStreamsTransport({ url: REDIS_URL, stream: template });
  bed = {
    prefix,
    template,
    topic,
    stream: `${prefix}${topic}`,
    dead: `${prefix}${topic}.dead`,
    group: 'billing',
    transport,
    async publish(messages) {
      const outcomes = await transport.publish(messages);
      assert.ok(
        outcomes.every((o) => o.status === 'ok'),
        `published: ${outcomes.map((o) => o.status).join(', ')}`,
      );
    },
  };
});

afterEach(async () => {
  for (const c of consumers.splice(0)) await c.stop({ timeoutMs: 1000 });
  await bed.transport.close();
  await deleteKeys(bed.prefix);
});

function message(overrides: Partial<OutboxMessage> = {}): OutboxMessage {
  return testMessage({ topic: bed.topic, key: 'k', ...overrides });
}

function consumer<Tx = undefined>(
  options: Omit<RedisConsumerOptions<Tx>, 'url' | 'topic' | 'group' | 'stream'> &
    Partial<Pick<RedisConsumerOptions<Tx>, 'url' | 'group'>>,
): RedisConsumer<Tx> {
  const c = new RedisConsumer<Tx>({
    url: REDIS_URL,
    topic: bed.topic,
    stream: bed.template,
    group: bed.group,
    ...options,
  } as RedisConsumerOptions<Tx>);
  consumers.push(c as unknown as RedisConsumer<never>);
  return c;
}

function fastRetry(maxAttempts: number) {
  return { maxAttempts, baseDelayMs: 5, maxDelayMs: 20, jitter: 'none' as const };
}

function once<K extends keyof RedisConsumerEvents>(
  c: RedisConsumer<never> | RedisConsumer<pg.PoolClient> | RedisConsumer,
  event: K,
  count = 1,
): Promise<Array<RedisConsumerEvents[K]>> {
  const seen: Array<RedisConsumerEvents[K]> = [];
  return new Promise((resolve) => {
    const off = (c as RedisConsumer).on(event, (payload) => {
      seen.push(payload);
      if (seen.length === count) {
        off();
        resolve(seen);
      }
    });
  });
}

/** Entries of the group not yet acknowledged (XPENDING's count). */
async function pendingCount(stream = bed.stream, group = bed.group): Promise<number> {
  const summary = (await redis.call('XPENDING', stream, group)) as [number, ...unknown[]];
  return Number(summary[0]);
}

async function deadLetters(): Promise<Array<Map<string, Buffer>>> {
  const entries = await redis.xrangeBuffer(bed.dead, '-', '+');
  return entries.map(([, fields]) => fieldMap(fields));
}

async function effectCount(): Promise<number> {
  const res = await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".effects`);
  return res.rows[0].n as number;
}

function writeEffect(tx: pg.PoolClient, m: ReceivedMessage): Promise<unknown> {
  return tx.query(`INSERT INTO "${db.schema}".effects (id, key) VALUES ($1, $2)`, [m.id, m.key]);
}

describe('RedisConsumer with an inbox', () => {
  it('handles a message published twice once: one effect, one handler run, both entries acknowledged', async () => {
    let runs = 0;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        runs++;
        await writeEffect(tx, m);
      },
    });
    await c.start();
    const handled = once(c, 'consumer:message:handled');
    const duplicate = once(c, 'consumer:message:duplicate');
    const m = message({ headers: { tenant: 'acme' }, type: 'order.created.v1' });
    await bed.publish([m]);
    await bed.publish([{ ...m, attempts: 2 }]);
    const [[event]] = await Promise.all([handled, duplicate]);
    assert.equal(runs, 1);
    assert.equal(await effectCount(), 1);
    const got = event?.message;
    assert.equal(got?.id, m.id);
    assert.equal(got?.topic, bed.topic);
    assert.equal(got?.key, 'k');
    assert.equal(got?.type, 'order.created.v1');
    assert.deepEqual(got?.headers, { tenant: 'acme' });
    assert.deepEqual(got?.payload, JSON.parse(m.payload.toString()));
    await c.stop();
    assert.equal(await pendingCount(), 0, 'both entries acknowledged');
  });

  it('acknowledges only after the commit: a copy re-read after the connection was cut between commit and XACK is a duplicate', async () => {
    const proxy = await TcpProxy.start({ targetPort: REDIS_PORT });
    try {
      const inbox = new PgInbox(db, 'billing');
      let cut = false;
      let runs = 0;
      const c = consumer<pg.PoolClient>({
        url: `redis://127.0.0.1:${proxy.port}`,
        inbox: afterCommit(inbox, async () => {
          if (cut) return;
          cut = true;
          assert.equal(await effectCount(), 1, 'committed before the cut');
          assert.equal(await pendingCount(), 1, 'not acknowledged before the commit');
          proxy.cut();
        }),
        handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
          runs++;
          await writeEffect(tx, m);
        },
      });
      const lostAck = once(c, 'consumer:ack:lost');
      const reconnected = once(c, 'consumer:reconnected');
      const duplicate = once(c, 'consumer:message:duplicate');
      await c.start();
      await bed.publish([message()]);
      await Promise.all([lostAck, reconnected, duplicate]);
      assert.equal(runs, 1);
      assert.equal(await effectCount(), 1);
      await c.stop();
      assert.equal(await pendingCount(), 0);
    } finally {
      await proxy.close();
    }
  });

  it('stopped while a handler is blocked, the entry is left pending and another consumer takes it over', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let blocked = 0;
    const first = consumer({
      consumerName: 'first',
      handler: async () => {
        blocked++;
        await gate;
      },
    });
    await first.start();
    const stoppedFirst = once(first, 'consumer:stopped');
    const m = message();
    await bed.publish([m]);
    await waitUntil(() => blocked === 1, 'the handler blocked');
    await first.stop({ timeoutMs: 50 });
    const [stopped] = await stoppedFirst;
    assert.equal(stopped?.abandoned, 1);
    assert.equal(await pendingCount(), 1, 'left pending, not acknowledged');
    const handled: ReceivedMessage[] = [];
    const second = consumer({
      consumerName: 'second',
      claimIdleMs: 200,
      handler: async (r: ReceivedMessage) => void handled.push(r),
    });
    const claimed = once(second, 'consumer:entries:claimed');
    await second.start();
    const [event] = await claimed;
    await waitUntil(() => handled.length === 1, 'the entry handled by the second consumer');
    assert.equal(event?.ids.length, 1);
    assert.equal(handled[0]?.id, m.id);
    await waitUntil(async () => (await pendingCount()) === 0, 'acknowledged by the second consumer');
    release();
    await second.stop();
  });
});

describe('RedisConsumer in a group', () => {
  it("takes over a killed consumer's pending entries with XAUTOCLAIM, counting its deliveries", async () => {
    const messages = [message({ key: null }), message({ key: null }), message({ key: null })];
    const c0 = consumer({ consumerName: 'setup', handler: async () => {} });
    await c0.start(); // creates the group at the end of the stream
    await c0.stop();
    await bed.publish(messages);
    // A consumer that read the entries and was killed before acknowledging them.
    await redis.call('XREADGROUP', 'GROUP', bed.group, 'killed', 'COUNT', '10', 'STREAMS', bed.stream, '>');
    const attempts: number[] = [];
    const handled: string[] = [];
    const c = consumer({
      consumerName: 'survivor',
      claimIdleMs: 300,
      handler: async (m: ReceivedMessage) => {
        handled.push(m.id);
        attempts.push(m.attempt);
      },
    });
    const claimed: string[] = [];
    c.on('consumer:entries:claimed', (e) => claimed.push(...e.ids));
    const events: number[] = [];
    c.on('consumer:message:handled', (e) => events.push(e.attempt));
    await c.start();
    await waitUntil(() => events.length === 3, 'the three entries handled and acknowledged');
    assert.deepEqual(handled.sort(), messages.map((m) => m.id).sort());
    assert.equal(claimed.length, 3);
    // Delivered once to the killed consumer: this run counts as the second attempt.
    assert.deepEqual(events, [2, 2, 2]);
    await waitUntil(async () => (await pendingCount()) === 0, 'every entry acknowledged');
    await c.stop();
  });

  it('dead-letters without running the handler an entry delivered maxAttempts times already', async () => {
    const c0 = consumer({ consumerName: 'setup', handler: async () => {} });
    await c0.start();
    await c0.stop();
    await bed.publish([message()]);
    // Read three times by a consumer that crashed each time (history reads count too).
    await redis.call('XREADGROUP', 'GROUP', bed.group, 'crashy', 'STREAMS', bed.stream, '>');
    await redis.call('XREADGROUP', 'GROUP', bed.group, 'crashy', 'STREAMS', bed.stream, '0');
    await redis.call('XREADGROUP', 'GROUP', bed.group, 'crashy', 'STREAMS', bed.stream, '0');
    let runs = 0;
    const c = consumer({
      claimIdleMs: 150,
      retry: fastRetry(3),
      handler: async () => {
        runs++;
      },
    });
    const dead = once(c, 'consumer:message:dead');
    await c.start();
    const [event] = await dead;
    assert.equal(runs, 0);
    assert.equal(event?.failedAttempts, 3);
    const [letter] = await deadLetters();
    assert.equal(letter?.get('mailroom-failed-attempts')?.toString(), '3');
    assert.equal(await pendingCount(), 0);
    await c.stop();
  });

  it('a handler slower than claimIdleMs keeps its entry: not taken over, not even counted again', async () => {
    let runs = 0;
    /** The entry's delivery count (XPENDING) near the end of the slow run. */
    const deliveries: number[] = [];
    const make = (name: string) =>
      consumer({
        consumerName: name,
        claimIdleMs: 150,
        handler: async () => {
          runs++;
          await sleep(600);
          const rows = (await redis.call('XPENDING', bed.stream, bed.group, '-', '+', '10')) as Array<
            [string, string, number, number]
          >;
          deliveries.push(...rows.map((r) => Number(r[3])));
          await sleep(100);
        },
      });
    const a = make('a');
    const b = make('b');
    const claims: string[] = [];
    for (const c of [a, b]) c.on('consumer:entries:claimed', (e) => claims.push(...e.ids));
    let handled = 0;
    for (const c of [a, b]) c.on('consumer:message:handled', () => handled++);
    await a.start();
    await b.start();
    await bed.publish([message()]);
    await waitUntil(() => handled === 1, 'the message handled');
    await sleep(200);
    assert.equal(runs, 1, 'one run: the entry was kept fresh while it ran');
    assert.deepEqual(claims, []);
    // Without the refresh, XAUTOCLAIM (the other consumer's, or its own) would have claimed it.
    assert.deepEqual(deliveries, [1]);
    assert.equal(await pendingCount(), 0);
  });

  it('two consumers of one group share the work: every entry handled once, by one of them', async () => {
    const seen = new Map<string, string>();
    const twice: string[] = [];
    const make = (name: string) =>
      consumer({
        consumerName: name,
        concurrency: 2,
        handler: async (m: ReceivedMessage) => {
          if (seen.has(m.id)) twice.push(m.id);
          seen.set(m.id, name);
          await sleep(5);
        },
      });
    const a = make('a');
    const b = make('b');
    await a.start();
    await b.start();
    const messages = Array.from({ length: 60 }, () => message({ key: null }));
    for (let i = 0; i < messages.length; i += 10) await bed.publish(messages.slice(i, i + 10));
    await waitUntil(() => seen.size === messages.length, 'every message handled');
    await a.stop();
    await b.stop();
    assert.deepEqual(twice, []);
    const byA = [...seen.values()].filter((n) => n === 'a').length;
    assert.ok(byA > 0 && byA < messages.length, `a handled ${byA} of ${messages.length}, b the rest`);
    assert.equal(await pendingCount(), 0);
    // Stopped consumers with nothing pending leave the group's consumer list.
    const listed = (await redis.call('XINFO', 'CONSUMERS', bed.stream, bed.group)) as unknown[];
    assert.equal(listed.length, 0);
  });

  it("startFrom 'new' skips what the stream held before the group existed; 'beginning' reads it", async () => {
    const old = message();
    await bed.publish([old]);
    const fresh: string[] = [];
    const c = consumer({ handler: async (m: ReceivedMessage) => void fresh.push(m.id) });
    await c.start();
    const later = message();
    await bed.publish([later]);
    await waitUntil(() => fresh.length === 1, 'the later message');
    await sleep(100);
    assert.deepEqual(fresh, [later.id]);
    await c.stop();
    const all: string[] = [];
    const d = consumer({
      group: 'audit',
      startFrom: 'beginning',
      handler: async (m: ReceivedMessage) => void all.push(m.id),
    });
    await d.start();
    await waitUntil(() => all.length === 2, 'both messages');
    assert.deepEqual(all, [old.id, later.id]);
    await d.stop();
  });

  it('deleteAfterAck removes each entry from the stream once acknowledged', async () => {
    let n = 0;
    const c = consumer({ deleteAfterAck: true, handler: async () => void n++ });
    await c.start();
    await bed.publish([message(), message()]);
    await waitUntil(() => n === 2, 'two handled');
    await c.stop();
    assert.equal(await redis.xlen(bed.stream), 0);
    assert.equal(await pendingCount(), 0);
  });
});

describe('RedisConsumer failures', () => {
  it('retries a failing handler with backoff, then dead-letters it (XADD and XACK together) with why', async () => {
    let runs = 0;
    const c = consumer({
      retry: fastRetry(3),
      handler: async () => {
        runs++;
        throw new Error('cannot handle this');
      },
    });
    const retries: Array<{ failedAttempts: number; delayMs: number }> = [];
    c.on('consumer:message:retry', (e) =>
      retries.push({ failedAttempts: e.failedAttempts, delayMs: e.delayMs }),
    );
    const dead = once(c, 'consumer:message:dead');
    await c.start();
    const m = message({ headers: { tenant: 'acme' } });
    await bed.publish([m]);
    const [event] = await dead;
    assert.equal(runs, 3);
    assert.deepEqual(retries, [
      { failedAttempts: 1, delayMs: 5 },
      { failedAttempts: 2, delayMs: 10 },
    ]);
    assert.equal(event?.deadLetterStream, bed.dead);
    assert.equal(event?.reason, 'handler_failed');
    const [letter] = await deadLetters();
    assert.ok(letter);
    assert.equal(letter.get('mailroom-id')?.toString(), m.id);
    assert.equal(letter.get('mailroom-topic')?.toString(), bed.topic);
    assert.equal(letter.get('headers')?.toString(), JSON.stringify({ tenant: 'acme' }));
    assert.equal(letter.get('mailroom-error')?.toString(), 'cannot handle this');
    assert.equal(letter.get('mailroom-failed-attempts')?.toString(), '3');
    assert.equal(letter.get('mailroom-dead-reason')?.toString(), 'handler_failed');
    assert.equal(letter.get('mailroom-dead-stream')?.toString(), bed.stream);
    assert.equal(letter.get('mailroom-dead-group')?.toString(), bed.group);
    assert.ok(letter.get('payload')?.equals(m.payload));
    assert.equal(await pendingCount(), 0);
    await c.stop();
  });

  it('dead-letters at once on a PermanentDeliveryError, and an entry without a mailroom-id as malformed', async () => {
    let runs = 0;
    const c = consumer({
      handler: async () => {
        runs++;
        throw new PermanentDeliveryError('unknown customer');
      },
    });
    const dead = once(c, 'consumer:message:dead', 2);
    await c.start();
    await bed.publish([message()]);
    await redis.xadd(bed.stream, '*', 'payload', 'hello');
    const events = await dead;
    assert.equal(runs, 1);
    assert.deepEqual(events.map((e) => e.reason).sort(), ['handler_failed', 'malformed']);
    const letters = await deadLetters();
    const malformed = letters.find((l) => l.get('mailroom-dead-reason')?.toString() === 'malformed');
    assert.match(malformed?.get('mailroom-error')?.toString() ?? '', /no mailroom-id field/);
    assert.equal(malformed?.get('payload')?.toString(), 'hello');
    assert.equal(await pendingCount(), 0);
    await c.stop();
  });

  it('acknowledges a failed entry only with its dead letter: while the dead letter cannot be added, it stays pending', async () => {
    const c = consumer({
      retry: fastRetry(1),
      handler: async () => {
        throw new PermanentDeliveryError('refused');
      },
    });
    const errors = once(c, 'consumer:error', 2);
    const dead = once(c, 'consumer:message:dead');
    await c.start();
    // The dead-letter key turns into another type after start: XADD would fail inside the
    // transaction while the XACK went through, so the consumer must not send them.
    await redis.set(bed.dead, 'in the way');
    await bed.publish([message()]);
    const [first] = await errors;
    assert.equal(first?.phase, 'dead-letter');
    assert.match(first?.error.message ?? '', /is a string, not a stream/);
    assert.equal(await pendingCount(), 1, 'not acknowledged');
    await redis.del(bed.dead);
    await dead;
    assert.equal((await deadLetters()).length, 1);
    assert.equal(await pendingCount(), 0);
    await c.stop();
  });

  it('a dead-letter stream key of another type is refused at start, before anything is read', async () => {
    await redis.set(bed.dead, 'not a stream');
    const c = consumer({ handler: async () => {} });
    await assert.rejects(
      c.start(),
      (err: unknown) => isTransportError(err) && err.code === 'dead_letter_stream_invalid',
    );
    assert.equal(c.running, false);
  });

  it('keeps a key serial and in order, retries included, while other keys run alongside', async () => {
    const running = new Map<string, number>();
    let parallel = 0;
    let most = 0;
    const order = new Map<string, number[]>();
    const failedOnce = new Set<string>();
    const c = consumer({
      concurrency: 4,
      retry: fastRetry(3),
      handler: async (m: ReceivedMessage) => {
        const key = m.key as string;
        assert.equal(running.get(key) ?? 0, 0, `two messages of key ${key} at once`);
        running.set(key, 1);
        parallel++;
        most = Math.max(most, parallel);
        await sleep(15);
        parallel--;
        running.set(key, 0);
        const n = (m.payload as { i: number }).i;
        if (n === 1 && !failedOnce.has(m.id)) {
          failedOnce.add(m.id);
          throw new Error('first run of i=1 fails');
        }
        order.set(key, [...(order.get(key) ?? []), n]);
      },
    });
    await c.start();
    const messages: OutboxMessage[] = [];
    for (let i = 0; i < 5; i++) {
      for (const key of ['a', 'b', 'c']) {
        messages.push(message({ key, payload: Buffer.from(JSON.stringify({ i })) }));
      }
    }
    await bed.publish(messages);
    await waitUntil(
      () => [...order.values()].every((l) => l.length === 5) && order.size === 3,
      'all handled',
    );
    for (const key of ['a', 'b', 'c']) assert.deepEqual(order.get(key), [0, 1, 2, 3, 4], `order of ${key}`);
    assert.ok(most >= 2, `keys ran in parallel (at most ${most} at once)`);
    assert.ok(most <= 4);
    await c.stop();
  });

  it('reconnects after the connection is cut mid-stream and loses nothing', async () => {
    const proxy = await TcpProxy.start({ targetPort: REDIS_PORT });
    try {
      const handled = new Set<string>();
      const c = consumer({
        url: `redis://127.0.0.1:${proxy.port}`,
        concurrency: 4,
        handler: async (m: ReceivedMessage) => {
          await sleep(3);
          handled.add(m.id);
        },
      });
      const reconnected = once(c, 'consumer:reconnected', 2);
      await c.start();
      const messages = Array.from({ length: 120 }, (_, i) => message({ key: `k${i % 6}` }));
      await bed.publish(messages.slice(0, 60));
      await waitUntil(() => handled.size >= 10, 'some handled');
      proxy.cut();
      await bed.publish(messages.slice(60));
      await waitUntil(() => handled.size >= 70, 'more handled');
      proxy.cut();
      await reconnected;
      await waitUntil(() => handled.size === messages.length, 'every message handled');
      await waitUntil(async () => (await pendingCount()) === 0, 'every entry acknowledged');
      await c.stop();
    } finally {
      await proxy.close();
    }
  });

  it('a server that stops answering ends the session after the reply deadline; it reconnects once healed', async () => {
    const proxy = await TcpProxy.start({ targetPort: REDIS_PORT });
    try {
      const handled = new Set<string>();
      const c = consumer({
        url: `redis://127.0.0.1:${proxy.port}`,
        replyTimeoutMs: 300,
        connectTimeoutMs: 500,
        handler: async (m: ReceivedMessage) => void handled.add(m.id),
      });
      await c.start();
      const lost = once(c, 'consumer:connection:lost');
      const reconnected = once(c, 'consumer:reconnected');
      proxy.blackhole();
      const [event] = await lost;
      assert.match(event?.error.message ?? '', /no reply to XREADGROUP/);
      const messages = [message(), message()];
      await bed.publish(messages);
      proxy.heal();
      await reconnected;
      await waitUntil(() => handled.size === 2, 'both messages handled after the heal');
      await waitUntil(async () => (await pendingCount()) === 0, 'both acknowledged');
      await c.stop();
    } finally {
      await proxy.close();
    }
  });
});

describe('RedisConsumer lifecycle', () => {
  it('stop() lets a running handler finish and acknowledges it, within its deadline', async () => {
    let finished = false;
    let runs = 0;
    const c = consumer({
      handler: async () => {
        runs++;
        await sleep(300);
        finished = true;
      },
    });
    await c.start();
    await bed.publish([message()]);
    await waitUntil(async () => (await pendingCount()) === 1, 'the entry read');
    const stopped = once(c, 'consumer:stopped');
    await c.stop({ timeoutMs: 5000 });
    assert.equal(finished, true);
    const [event] = await stopped;
    assert.equal(event?.abandoned, 0);
    assert.equal(await pendingCount(), 0);
    assert.equal(c.running, false);
    assert.equal(c.connected, false);
    // Started again, it consumes again.
    await c.start();
    assert.equal(c.connected, true);
    await bed.publish([message()]);
    await waitUntil(async () => finished && (await pendingCount()) === 0 && runs === 2, 'the second message');
    await c.stop();
  });

  it('start() on an unreachable server is a TransportError naming the redacted URL', async () => {
    const port = await freePort();
    const c = consumer({ url: `redis://app:s3cret@127.0.0.1:${port}`, handler: async () => {} });
    await assert.rejects(c.start(), (err: unknown) => {
      assert.ok(isTransportError(err));
      assert.equal(err.code, 'unreachable');
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    });
    assert.equal(c.running, false);
  });

  it('refuses bad options with a ConfigError naming the option', () => {
    const base = { url: REDIS_URL, topic: 't', group: 'g', handler: async () => {} };
    const refuses = (options: Record<string, unknown>, key: string, pattern?: RegExp) =>
      assert.throws(
        () => new RedisConsumer({ ...base, ...options } as RedisConsumerOptions),
        (err: unknown) =>
          isConfigError(err) && err.key === key && (pattern === undefined || pattern.test(err.message)),
      );
    refuses({ group: undefined }, 'group', /missing/);
    refuses({ stream: 'no-placeholder' }, 'stream');
    refuses({ deadLetterStream: 't' }, 'deadLetterStream', /must differ/);
    refuses({ url: 'http://x:s3cret@h' }, 'url');
    refuses({ startFrom: 'yesterday' }, 'startFrom');
    refuses({ claimIdleMs: -1 }, 'claimIdleMs');
    refuses({ concurrency: 4, prefetch: 2 }, 'prefetch');
    refuses({ handler: undefined }, 'handler');
    assert.throws(
      () => new RedisConsumer({ ...base, prefech: 3 } as RedisConsumerOptions),
      (err: unknown) => isConfigError(err) && /prefetch/.test(err.message),
    );
    const c = new RedisConsumer({ ...base, stream: 'app:{topic}' });
    assert.equal(c.stream, 'app:t');
    assert.equal(c.deadLetterStream, 'app:t.dead');
    assert.match(c.consumerName, new RegExp(`-${process.pid}-[0-9a-f]{8}$`));
  });
});
