// RabbitMqConsumer against the real broker (127.0.0.1:5672, override with MAILROOM_TEST_AMQP_URL)
// and PostgreSQL: effects are rows written with the inbox transaction, so "exactly one effect" is
// a count in the database. Every exchange and queue has a name of its own and is deleted after.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { promisify } from 'node:util';

import * as amqplib from 'amqplib';
import type pg from 'pg';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { PermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { OutboxMessage, ReceivedMessage } from '../../src/core/types.js';
import { Inbox } from '../../src/inbox/inbox.js';
import type { PostgresTransactionHandle } from '../../src/stores/postgres/postgres-driver.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  decodeDelivery,
  RabbitMqConsumer,
  RabbitMqTransport,
  type AmqpConsumerConnect,
  type AmqpDelivery,
  type ConsumerContext,
  type RabbitMqConsumerEvents,
} from '../../src/transports/rabbitmq/index.js';
import { messageProperties } from '../../src/transports/rabbitmq/rabbitmq-publish.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { afterCommit, PgInbox } from '../helpers/pg-inbox.js';
import { waitUntil } from '../helpers/wait.js';
import { breakSocket, RABBITMQ_URL, TestBroker, uniqueName } from './rabbitmq-helpers.js';

const run = promisify(execFile);

let db: TestDb;
let broker: TestBroker;

before(async () => {
  db = await createTestDb('mrcons');
  await db.pool.query(`
    CREATE TABLE "${db.schema}".effects (id uuid NOT NULL, key text, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE "${db.schema}".test_inbox (consumer text NOT NULL, id uuid NOT NULL, PRIMARY KEY (consumer, id));
  `);
  broker = await TestBroker.open();
});

after(async () => {
  await broker.close();
  await db.drop();
});

beforeEach(async () => {
  await db.pool.query(`TRUNCATE "${db.schema}".effects, "${db.schema}".test_inbox`);
});

async function effectCount(): Promise<number> {
  const res = await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".effects`);
  return res.rows[0].n as number;
}

async function recordCount(): Promise<number> {
  const res = await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".test_inbox`);
  return res.rows[0].n as number;
}

function writeEffect(tx: pg.PoolClient, message: ReceivedMessage): Promise<unknown> {
  return tx.query(`INSERT INTO "${db.schema}".effects (id, key) VALUES ($1, $2)`, [message.id, message.key]);
}

/** Ready and unacknowledged messages of a queue, as the broker counts them right now. */
async function queueCounts(queue: string): Promise<{ ready: number; unacked: number }> {
  const { stdout } = await run('rabbitmqctl', [
    '-q',
    'list_queues',
    '--no-table-headers',
    'name',
    'messages_ready',
    'messages_unacknowledged',
  ]);
  const line = stdout.split('\n').find((l) => l.split('\t')[0] === queue);
  if (!line) throw new Error(`queue ${queue} not found; rabbitmqctl listed:\n${stdout}`);
  const [, ready, unacked] = line.split('\t');
  return { ready: Number(ready), unacked: Number(unacked) };
}

function once<K extends keyof RabbitMqConsumerEvents>(
  consumer: RabbitMqConsumer<never> | RabbitMqConsumer<pg.PoolClient> | RabbitMqConsumer,
  event: K,
  count = 1,
): Promise<Array<RabbitMqConsumerEvents[K]>> {
  const seen: Array<RabbitMqConsumerEvents[K]> = [];
  return new Promise((resolve) => {
    const off = (consumer as RabbitMqConsumer).on(event, (payload) => {
      seen.push(payload);
      if (seen.length === count) {
        off();
        resolve(seen);
      }
    });
  });
}

/** Per test: an exchange, queue and dead-letter queue of its own, a transport to publish with. */
interface Bed {
  exchange: string;
  queue: string;
  deadLetterQueue: string;
  topic: string;
  transport: RabbitMqTransport;
  publish(messages: OutboxMessage[]): Promise<void>;
  /** Publishes bytes with the given properties, as a foreign client might. */
  publishRaw(content: Buffer, properties: amqplib.Options.Publish): Promise<void>;
  /** Takes up to `count` messages off the dead-letter queue. */
  dead(count: number): Promise<amqplib.GetMessage[]>;
  consumers: Array<{ stop(): Promise<void> }>;
}

let bed: Bed;

beforeEach(async () => {
  const exchange = uniqueName('mr-consumer');
  const queue = uniqueName('mr-consumer-q');
  const transport = new RabbitMqTransport({ url: RABBITMQ_URL, exchange });
  const topic = `orders.${uniqueName('t').replace(/-/g, '_')}.created`;
  bed = {
    exchange,
    queue,
    deadLetterQueue: `${queue}.dead`,
    topic,
    transport,
    consumers: [],
    async publish(messages) {
      const outcomes = await transport.publish(messages);
      for (const o of outcomes) assert.equal(o.status, 'ok', o.status === 'ok' ? '' : o.error.message);
    },
    async publishRaw(content, properties) {
      const ch = await broker.connection.createConfirmChannel();
      try {
        ch.publish(exchange, topic, content, { persistent: true, ...properties });
        await ch.waitForConfirms();
      } finally {
        await ch.close();
      }
    },
    async dead(count) {
      const got: amqplib.GetMessage[] = [];
      await waitUntil(async () => {
        await broker.withChannel(async (ch) => {
          for (;;) {
            const m = await ch.get(`${queue}.dead`, { noAck: true });
            if (m === false) break;
            got.push(m);
          }
        });
        return got.length >= count;
      }, `${count} dead letters on ${queue}.dead`);
      return got;
    },
  };
});

afterEach(async () => {
  for (const c of bed.consumers) await c.stop();
  await bed.transport.close();
  await broker.withChannel(async (ch) => {
    await ch.deleteQueue(bed.queue).catch(() => {});
    await ch.deleteQueue(bed.deadLetterQueue).catch(() => {});
    await ch.deleteExchange(bed.exchange).catch(() => {});
  });
});

/** A consumer on the bed's queue, bound to its topic, stopped after the test. */
function consumer<Tx>(options: Record<string, unknown>): RabbitMqConsumer<Tx> {
  const c = new RabbitMqConsumer({
    url: RABBITMQ_URL,
    exchange: bed.exchange,
    queue: bed.queue,
    bindings: [bed.topic],
    retry: { baseDelayMs: 5, maxDelayMs: 20 },
    ...options,
  } as never) as RabbitMqConsumer<Tx>;
  bed.consumers.push(c);
  return c;
}

function message(overrides: Partial<OutboxMessage> = {}): OutboxMessage {
  return testMessage({ topic: bed.topic, ...overrides });
}

/** A connect function that keeps the connections it opens, to cut them in tests. */
function recordingConnect(): { connect: AmqpConsumerConnect; connections: amqplib.ChannelModel[] } {
  const connections: amqplib.ChannelModel[] = [];
  const connect: AmqpConsumerConnect = async (url, socketOptions) => {
    const model = await amqplib.connect(url, socketOptions);
    connections.push(model);
    return model;
  };
  return { connect, connections };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('decodeDelivery', () => {
  function delivery(over: Partial<AmqpDelivery['properties']> = {}, content = Buffer.from('{"a":1}')) {
    const m = testMessage({ key: 'k1', type: 'order.created', headers: { trace: 't1' }, attempts: 3 });
    const props = messageProperties(m, true);
    return {
      sent: m,
      raw: {
        content,
        fields: { deliveryTag: 1, redelivered: false, exchange: 'x', routingKey: m.topic },
        properties: { ...props, headers: { ...props.headers, 'mailroom-ack-to': 'mailroom.ack' }, ...over },
      } satisfies AmqpDelivery,
    };
  }

  it("reads back what the transport's messageProperties() writes", () => {
    const { sent, raw } = delivery();
    const decoded = decodeDelivery(raw);
    assert.ok(decoded.ok);
    const m = decoded.message;
    assert.equal(m.id, sent.id);
    assert.equal(m.topic, sent.topic);
    assert.equal(m.key, 'k1');
    assert.equal(m.type, 'order.created');
    assert.deepEqual(m.headers, { trace: 't1' }, 'mailroom-* headers are taken out');
    assert.equal(m.contentType, 'application/json');
    assert.deepEqual(m.payload, { a: 1 });
    assert.equal(m.ackTo, 'mailroom.ack');
    assert.equal(m.attempt, 3);
    assert.equal(m.createdAt?.getTime(), Math.floor(sent.createdAt.getTime() / 1000) * 1000);
  });

  it('reads the atomic group a member came in, and null for a message sent alone', () => {
    const { raw } = delivery();
    assert.equal((decodeDelivery(raw) as { ok: true; message: { group: unknown } }).message.group, null);
    const headers = {
      ...raw.properties.headers,
      'mailroom-group': '01a23bbf-c139-7000-af71-2653b9a78693',
      'mailroom-group-size': '3',
      'mailroom-group-index': '1',
    };
    const decoded = decodeDelivery({ ...raw, properties: { ...raw.properties, headers } });
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.message.group, {
      id: '01a23bbf-c139-7000-af71-2653b9a78693',
      size: 3,
      index: 1,
    });
    assert.deepEqual(decoded.message.headers, { trace: 't1' });
  });

  it('reads bytes, no attempt and no timestamp leniently', () => {
    const { raw } = delivery({ contentType: undefined, timestamp: undefined, headers: {} }, Buffer.from('x'));
    const decoded = decodeDelivery(raw);
    assert.ok(decoded.ok);
    assert.equal(decoded.message.contentType, 'application/octet-stream');
    assert.ok(Buffer.isBuffer(decoded.message.payload));
    assert.equal(decoded.message.attempt, 1);
    assert.equal(decoded.message.createdAt, null);
    assert.equal(decoded.message.key, null);
    assert.equal(decoded.message.ackTo, null);
  });

  it('refuses a delivery without a UUID message-id or with a JSON body that does not parse', () => {
    for (const [raw, field] of [
      [delivery({ messageId: undefined }).raw, 'messageId'],
      [delivery({ messageId: 'order-17' }).raw, 'messageId'],
      [delivery({}, Buffer.from('{not json')).raw, 'body'],
    ] as const) {
      const decoded = decodeDelivery(raw);
      assert.equal(decoded.ok, false);
      if (!decoded.ok) assert.equal(decoded.error.details['field'], field, decoded.error.message);
    }
  });
});

describe('RabbitMqConsumer options', () => {
  const base = { url: RABBITMQ_URL, queue: 'billing.orders', bindings: ['order.*'], handler: async () => {} };

  function configError(options: Record<string, unknown>): { key: string; message: string } {
    try {
      new RabbitMqConsumer({ ...base, ...options } as never);
    } catch (err) {
      assert.ok(isConfigError(err), `expected a ConfigError, got ${String(err)}`);
      return { key: err.key, message: err.message };
    }
    assert.fail(`no ConfigError for ${JSON.stringify(options)}`);
  }

  it('names an unknown option and the allowed ones', () => {
    const { key, message } = configError({ Concurrency: 2 });
    assert.equal(key, 'Concurrency');
    assert.match(message, /unknown RabbitMqConsumer option "Concurrency" \(did you mean concurrency\?\)/);
    assert.match(message, /allowed: url, queue, bindings/);
  });

  it('says what is wrong with a queue name, a binding, a URL and related options', () => {
    assert.match(configError({ queue: 'amq.orders' }).message, /not starting with 'amq\.'/);
    assert.match(configError({ queue: 'orders queue' }).message, /queue name of 1 to 255 letters/);
    const binding = configError({ bindings: ['order.*', 'payment*'] });
    assert.equal(binding.key, 'bindings[1]');
    assert.match(binding.message, /did you mean "payment\.\*"/);
    assert.equal(configError({ bindings: ['order..created'] }).key, 'bindings[0]');
    assert.equal(configError({ bindings: 'order.*' }).key, 'bindings');
    assert.equal(configError({ exchange: '', bindings: ['x'] }).key, 'bindings');
    assert.equal(configError({ deadLetterQueue: 'billing.orders' }).key, 'deadLetterQueue');
    assert.match(
      configError({ concurrency: 8, prefetch: 4 }).message,
      /concurrency \(8\) must not exceed prefetch/,
    );
    assert.equal(configError({ retry: { maxAttempts: 0 } }).key, 'retry.maxAttempts');
    const url = configError({ url: 'http://billing:s3cret@rabbit:5672' });
    assert.equal(url.key, 'url');
    assert.match(url.message, /scheme "http"; use amqp:\/\//);
    assert.doesNotMatch(url.message, /s3cret/);
    assert.equal(configError({ handler: undefined }).key, 'handler');
  });

  it('defaults prefetch to twice the concurrency and the dead-letter queue to <queue>.dead', () => {
    const c = new RabbitMqConsumer({ ...base, concurrency: 3 });
    assert.equal(c.deadLetterQueue, 'billing.orders.dead');
  });

  it('start() on an unreachable port is a TransportError naming the redacted URL', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const c = new RabbitMqConsumer({ ...base, url: `amqp://billing:s3cret@127.0.0.1:${port}` });
    await assert.rejects(c.start(), (err: unknown) => {
      assert.ok(isTransportError(err), String(err));
      assert.equal(err.code, 'unreachable');
      assert.match(err.message, new RegExp(`amqp://billing:\\*\\*\\*@127\\.0\\.0\\.1:${port}`));
      assert.match(err.message, /check that the broker is running/);
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    });
    assert.equal(c.running, false);
    await c.stop();
  });
});

describe('RabbitMqConsumer with an inbox', () => {
  it('handles a message published three times once: one effect, one handler run, every copy acknowledged', async () => {
    let runs = 0;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      concurrency: 4,
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        runs++;
        await writeEffect(tx, m);
      },
    });
    await c.start();
    const handled = once(c, 'consumer:message:handled');
    const duplicates = once(c, 'consumer:message:duplicate', 2);
    const m = message({ key: null });
    await bed.publish([m, m]);
    await bed.publish([m]);
    await Promise.all([handled, duplicates]);
    assert.equal(runs, 1);
    assert.equal(await effectCount(), 1);
    assert.equal(await recordCount(), 1);
    await c.stop();
    // Unacknowledged deliveries return to the queue when the consumer's channel closes.
    const { messageCount } = await broker.withChannel((ch) => ch.checkQueue(bed.queue));
    assert.equal(messageCount, 0, 'every copy was acknowledged');
  });

  it('a copy redelivered after the connection was cut between commit and basic.ack is a duplicate', async () => {
    const { connect, connections } = recordingConnect();
    const inbox = new PgInbox(db, 'billing');
    let cut = false;
    let runs = 0;
    const c = consumer<pg.PoolClient>({
      connect,
      // The inbox as the consumer sees it: the real one, then the connection cut the moment its
      // transaction has committed, before the consumer can send basic.ack.
      inbox: afterCommit(inbox, async () => {
        if (cut) return;
        cut = true;
        assert.equal(await effectCount(), 1, 'committed before the cut');
        breakSocket(connections.at(-1) as amqplib.ChannelModel);
      }),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        runs++;
        await writeEffect(tx, m);
      },
    });
    await c.start();
    const reconnected = once(c, 'consumer:reconnected');
    const duplicate = once(c, 'consumer:message:duplicate');
    await bed.publish([message()]);
    await reconnected;
    const [dup] = await duplicate;
    assert.ok(dup);
    assert.equal(runs, 1);
    assert.equal(await effectCount(), 1);
    assert.equal(connections.length, 2);
    await c.stop();
    const { messageCount } = await broker.withChannel((ch) => ch.checkQueue(bed.queue));
    assert.equal(messageCount, 0);
  });

  it('retries a throwing handler without leaving an inbox record, then dead-letters it with the error', async () => {
    let runs = 0;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      retry: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 },
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        runs++;
        await writeEffect(tx, m);
        throw new Error(`invoice service refused order ${m.id}`);
      },
    });
    await c.start();
    const retries = once(c, 'consumer:message:retry', 2);
    const dead = once(c, 'consumer:message:dead');
    const m = message({ key: 'order-1', headers: { trace: 'abc' } });
    await bed.publish([m]);
    const [[event], retried] = await Promise.all([dead, retries]);
    assert.equal(runs, 3);
    assert.deepEqual(
      retried.map((r) => r.failedAttempts),
      [1, 2],
    );
    assert.equal(event?.reason, 'handler_failed');
    assert.equal(await recordCount(), 0, 'no inbox record for a failed handler');
    assert.equal(await effectCount(), 0, 'effects rolled back with it');

    const [letter] = await bed.dead(1);
    assert.ok(letter);
    assert.equal(letter.properties.messageId, m.id);
    assert.equal(letter.content.toString(), m.payload.toString());
    assert.equal(letter.properties.contentType, m.contentType);
    const h = letter.properties.headers ?? {};
    assert.equal(String(h['mailroom-error']), `invoice service refused order ${m.id}`);
    assert.equal(String(h['mailroom-failed-attempts']), '3');
    assert.ok(!Number.isNaN(Date.parse(String(h['mailroom-dead-at']))));
    assert.equal(String(h['mailroom-dead-topic']), m.topic);
    assert.equal(String(h['mailroom-key']), 'order-1');
    assert.equal(String(h['trace']), 'abc');
    await c.stop();
    const { messageCount } = await broker.withChannel((ch) => ch.checkQueue(bed.queue));
    assert.equal(messageCount, 0, 'the original was acknowledged after the dead letter was confirmed');
  });

  it('a handler that fails twice and then succeeds has one effect', async () => {
    let runs = 0;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        runs++;
        await writeEffect(tx, m);
        if (runs <= 2) throw new Error('deadlock detected');
      },
    });
    await c.start();
    const handled = once(c, 'consumer:message:handled');
    await bed.publish([message()]);
    const [event] = await handled;
    assert.equal(event?.attempt, 3);
    assert.equal(runs, 3);
    assert.equal(await effectCount(), 1);
    assert.equal(await recordCount(), 1);
  });

  it('dead-letters at once on a PermanentDeliveryError', async () => {
    let runs = 0;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      handler: async () => {
        runs++;
        throw new PermanentDeliveryError('order 17 does not exist here');
      },
    });
    await c.start();
    const dead = once(c, 'consumer:message:dead');
    await bed.publish([message()]);
    await dead;
    assert.equal(runs, 1);
    const [letter] = await bed.dead(1);
    assert.equal(String(letter?.properties.headers?.['mailroom-failed-attempts']), '1');
  });

  it('keeps a key serial and in order, retries included, while other keys run alongside', async () => {
    const spans: Array<{ id: string; key: string; start: number; end: number }> = [];
    let running = 0;
    let maxRunning = 0;
    let failedOnce = false;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      concurrency: 4,
      retry: { baseDelayMs: 60, maxDelayMs: 60, jitter: 'none' },
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        const start = performance.now();
        try {
          await sleep(60);
          await writeEffect(tx, m);
          if (m.key === 'a' && !failedOnce) {
            failedOnce = true; // the first of key a fails once: a2 must still wait for it
            throw new Error('transient');
          }
          spans.push({ id: m.id, key: m.key as string, start, end: performance.now() });
        } finally {
          running--;
        }
      },
    });
    await c.start();
    const a = [message({ key: 'a' }), message({ key: 'a' }), message({ key: 'a' })];
    const others = [message({ key: 'b' }), message({ key: 'c' })];
    const handled = once(c, 'consumer:message:handled', 5);
    await bed.publish([a[0]!, others[0]!, a[1]!, others[1]!, a[2]!]);
    await handled;

    const ofA = spans.filter((s) => s.key === 'a');
    assert.deepEqual(
      ofA.map((s) => s.id),
      a.map((m) => m.id),
      'key a handled in order, the retried first one included',
    );
    for (let i = 1; i < ofA.length; i++) {
      assert.ok(ofA[i]!.start >= ofA[i - 1]!.end, `a${i + 1} started before a${i} ended`);
    }
    assert.ok(maxRunning >= 2, `other keys ran alongside key a (at most ${maxRunning} at once)`);
    const b = spans.find((s) => s.key === 'b')!;
    assert.ok(b.end <= ofA[0]!.end, 'key b did not wait for the retry of key a');
    assert.equal(await effectCount(), 5);
  });

  it('acknowledges only after the inbox transaction committed', async () => {
    const steps: string[] = [];
    let enterHandler!: () => void;
    const inHandler = new Promise<void>((resolve) => (enterHandler = resolve));
    let leaveHandler!: () => void;
    const handlerGate = new Promise<void>((resolve) => (leaveHandler = resolve));
    let committed!: () => void;
    const wasCommitted = new Promise<void>((resolve) => (committed = resolve));
    let releaseCommit!: () => void;
    const commitGate = new Promise<void>((resolve) => (releaseCommit = resolve));
    const inbox = new PgInbox(db, 'billing');
    const c = consumer<pg.PoolClient>({
      // A slow return from the inbox: committed, not yet acknowledged.
      inbox: afterCommit(inbox, async () => {
        committed();
        await commitGate;
      }),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        await writeEffect(tx, m);
        enterHandler();
        await handlerGate;
      },
    });
    await c.start();
    const handled = once(c, 'consumer:message:handled');
    await bed.publish([message()]);

    await inHandler;
    assert.equal(await effectCount(), 0, 'not committed yet');
    assert.deepEqual(await queueCounts(bed.queue), { ready: 0, unacked: 1 });
    steps.push('in handler: unacked');
    leaveHandler();

    await wasCommitted;
    assert.equal(await effectCount(), 1, 'committed');
    assert.deepEqual(await queueCounts(bed.queue), { ready: 0, unacked: 1 });
    steps.push('committed: still unacked');
    releaseCommit();

    await handled;
    await waitUntil(async () => (await queueCounts(bed.queue)).unacked === 0, 'the ack');
    steps.push('acked');
    assert.deepEqual(steps, ['in handler: unacked', 'committed: still unacked', 'acked']);
  });
});

describe('RabbitMqConsumer lifecycle and bad input', () => {
  it('stop() waits for the handler running, which is then acknowledged', async () => {
    let entered!: () => void;
    const started = new Promise<void>((resolve) => (entered = resolve));
    let finished = false;
    const c = consumer<pg.PoolClient>({
      inbox: new PgInbox(db, 'billing'),
      handler: async (m: ReceivedMessage, tx: pg.PoolClient) => {
        entered();
        await sleep(300);
        await writeEffect(tx, m);
        finished = true;
      },
    });
    await c.start();
    await bed.publish([message()]);
    await started;
    const stopped = once(c, 'consumer:stopped');
    await c.stop();
    assert.equal(finished, true, 'stop() returned after the handler finished');
    assert.equal((await stopped)[0]?.abandoned, 0);
    assert.equal(await effectCount(), 1);
    const { messageCount } = await broker.withChannel((ch) => ch.checkQueue(bed.queue));
    assert.equal(messageCount, 0);
  });

  it('a handler still running at the stop deadline commits, and its redelivered copy is a duplicate', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const started = new Promise<void>((resolve) => (entered = resolve));
    let runs = 0;
    const handler = async (m: ReceivedMessage, tx: pg.PoolClient) => {
      runs++;
      entered();
      await gate;
      await writeEffect(tx, m);
    };
    const first = consumer<pg.PoolClient>({ inbox: new PgInbox(db, 'billing'), handler });
    await first.start();
    await bed.publish([message()]);
    await started;
    const stopped = once(first, 'consumer:stopped');
    const ackLost = once(first, 'consumer:ack:lost');
    await first.stop({ timeoutMs: 50 });
    assert.equal((await stopped)[0]?.abandoned, 1);
    release();
    await ackLost;
    assert.equal(await effectCount(), 1);

    const second = consumer<pg.PoolClient>({ inbox: new PgInbox(db, 'billing'), handler });
    const duplicate = once(second, 'consumer:message:duplicate');
    await second.start();
    await duplicate;
    assert.equal(runs, 1);
    assert.equal(await effectCount(), 1);
  });

  it('dead-letters deliveries without a UUID message-id or with a broken JSON body, without running the handler', async () => {
    let runs = 0;
    const c = consumer({ handler: async () => void runs++ });
    await c.start();
    const dead = once(c, 'consumer:message:dead', 3);
    await bed.publishRaw(Buffer.from('{}'), { contentType: 'application/json' });
    await bed.publishRaw(Buffer.from('{}'), { contentType: 'application/json', messageId: 'order-17' });
    const id = message().id;
    await bed.publishRaw(Buffer.from('{oops'), { contentType: 'application/json', messageId: id });
    const events = await dead;
    assert.deepEqual(
      events.map((e) => [e.reason, e.id]),
      [
        ['malformed', null],
        ['malformed', 'order-17'],
        ['malformed', id],
      ],
    );
    assert.equal(runs, 0);
    const letters = await bed.dead(3);
    assert.equal(letters.length, 3);
    for (const letter of letters) {
      const h = letter.properties.headers ?? {};
      assert.equal(String(h['mailroom-dead-reason']), 'malformed');
      assert.equal(String(h['mailroom-failed-attempts']), '0');
    }
    assert.match(String(letters[0]?.properties.headers?.['mailroom-error']), /no message-id/);
    assert.match(String(letters[2]?.properties.headers?.['mailroom-error']), /body is not JSON/);
  });

  it('without an inbox runs the handler for every copy, and context.ack() is a ConfigError', async () => {
    const seen: string[] = [];
    const ackErrors: unknown[] = [];
    const c = consumer({
      handler: async (m: ReceivedMessage, tx: undefined, context: ConsumerContext) => {
        assert.equal(tx, undefined);
        seen.push(m.id);
        try {
          context.ack();
        } catch (err) {
          ackErrors.push(err);
        }
      },
    });
    await c.start();
    const handled = once(c, 'consumer:message:handled', 2);
    const m = message();
    await bed.publish([m, m]);
    await handled;
    assert.deepEqual(seen, [m.id, m.id]);
    assert.equal(ackErrors.length, 2);
    assert.ok(isConfigError(ackErrors[0]));
    assert.match((ackErrors[0] as Error).message, /needs an inbox/);
  });
});

describe('RabbitMqConsumer with the Inbox on PostgreSQL', () => {
  it('handles each id once with the real Inbox, enqueues the acknowledgement in that transaction, and prunes old records', async () => {
    // maxRedeliveryMs 0 and retentionMs 1: every record is past retention at once, so the
    // prune the consumer runs at start and every 200 ms has work to show.
    const inbox = new Inbox({
      store: db.store,
      consumer: 'billing',
      maxRedeliveryMs: 0,
      retentionMs: 1,
    });
    const stale = [uuid(), uuid(), uuid()];
    for (const id of stale) {
      await db.pool.query(
        `INSERT INTO "${db.schema}".inbox (consumer, id, processed_at) VALUES ('billing', $1, now() - interval '1 hour')`,
        [id],
      );
    }
    const pruned: number[] = [];
    const c = consumer<PostgresTransactionHandle>({
      inbox,
      pruneIntervalMs: 200,
      handler: async (m: ReceivedMessage, tx: PostgresTransactionHandle) =>
        writeEffect(tx as pg.PoolClient, m),
    });
    c.on('consumer:inbox:pruned', (e) => pruned.push(e.deleted));
    await c.start();
    await waitUntil(async () => pruned.length >= 1, 'the first prune');
    assert.ok(pruned[0]! >= stale.length, `the first prune deleted ${pruned[0]}`);

    // One message asking for an acknowledgement, three copies of it.
    const m = message({ headers: { 'mailroom-ack-to': 'mailroom.ack' } });
    const handled = once(c, 'consumer:message:handled');
    const duplicates = once(c, 'consumer:message:duplicate', 2);
    await bed.publish([m, m, m]);
    await Promise.all([handled, duplicates]);
    const effects = await db.pool.query(`SELECT id::text FROM "${db.schema}".effects`);
    assert.deepEqual(
      effects.rows.map((r) => r.id),
      [m.id],
    );
    const acks = await db.pool.query(
      `SELECT topic, convert_from(payload, 'UTF8')::jsonb AS payload FROM "${db.schema}".outbox WHERE topic = 'mailroom.ack'`,
    );
    assert.equal(acks.rowCount, 1, 'one acknowledgement, enqueued with the effect');
    assert.equal((acks.rows[0].payload as { id: string }).id, m.id);
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });
});

function uuid(): string {
  return crypto.randomUUID();
}
