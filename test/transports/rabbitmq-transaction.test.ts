// Broker transactions on the RabbitMQ transport (issue 15) against the real broker
// (127.0.0.1:5672, override with MAILROOM_TEST_AMQP_URL): a consumer of the test's own checks
// what a commit, a rollback or a cut connection leaves visible. "Nothing visible" is checked with
// a marker: a message published after the operation, confirmed; once the marker arrived, anything
// the operation had made visible would have arrived before it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import * as amqplib from 'amqplib';

import { isInvalidMessageError } from '../../src/core/errors/invalid-message-error.js';
import { isMailroomError } from '../../src/core/errors/mailroom-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import { isTransactionalTransport } from '../../src/core/broker-transaction.js';
import { Outbox, Relay, toReceivedMessage, type MessageInput } from '../../src/core/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import type { OutboxMessage } from '../../src/core/types.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import {
  RabbitMqTransport,
  type AmqpConnect,
  type RabbitMqTransportOptions,
} from '../../src/transports/rabbitmq/index.js';
import {
  recordingConnect,
  RABBITMQ_URL,
  TestBroker,
  uniqueName,
  type TestConsumer,
} from './rabbitmq-helpers.js';
import { createTestDb, inTransaction } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

const exchange = uniqueName('mailroom-test-tx');
let broker: TestBroker;
let consumer: TestConsumer;
const open: Array<{ close(): Promise<void> }> = [];

before(async () => {
  broker = await TestBroker.open();
  await broker.withChannel((ch) => ch.assertExchange(exchange, 'topic', { durable: true }));
  consumer = await broker.consume(exchange, ['tx.#']);
});

after(async () => {
  for (const thing of open.reverse()) await thing.close();
  await consumer.close();
  await broker.deleteExchange(exchange).catch(() => {});
  await broker.close();
});

function transport(options: Partial<RabbitMqTransportOptions> = {}): RabbitMqTransport {
  const t = new RabbitMqTransport({ url: RABBITMQ_URL, exchange, confirmTimeoutMs: 5000, ...options });
  open.push(t);
  return t;
}

async function proxied(): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(RABBITMQ_URL);
  const proxy = await TcpProxy.start({
    targetHost: target.hostname,
    targetPort: Number(target.port || 5672),
  });
  open.push(proxy);
  const url = new URL(RABBITMQ_URL);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  return { proxy, url: url.toString() };
}

/** Ids received on the test queue from `from` on. */
function idsSince(from: number): string[] {
  return consumer.raw.slice(from).map((m) => String(m.properties.messageId));
}

/**
 * Publishes a marker (confirmed, on a transport of its own) and waits for it: returns the ids
 * that arrived from `from` on, the marker left out.
 */
async function seenUpToMarker(from: number): Promise<string[]> {
  const marker = testMessage({ topic: 'tx.marker' });
  const t = new RabbitMqTransport({ url: RABBITMQ_URL, exchange });
  try {
    const [outcome] = await t.publish([marker]);
    assert.equal(outcome?.status, 'ok');
    await consumer.waitForIds([marker.id], 10_000);
  } finally {
    await t.close();
  }
  return idsSince(from).filter((id) => id !== marker.id);
}

/** A connect function whose plain channels (the transactions') count the messages they send. */
function countingConnect(): { connect: AmqpConnect; readonly written: number } {
  const state = { written: 0 };
  const connect: AmqpConnect = async (url, socketOptions) => {
    const model = await amqplib.connect(url, socketOptions);
    const createChannel = model.createChannel.bind(model);
    model.createChannel = async (options) => {
      const channel = await createChannel(options);
      const publish = channel.publish.bind(channel);
      channel.publish = (...args: Parameters<typeof publish>) => {
        state.written++;
        return publish(...args);
      };
      return channel;
    };
    return model;
  };
  return {
    connect,
    get written() {
      return state.written;
    },
  };
}

/** A received AMQP message as the stored message it was published from (for toReceivedMessage). */
function toOutbox(m: amqplib.ConsumeMessage): OutboxMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(m.properties.headers ?? {})) headers[name] = String(value);
  return {
    seq: '0',
    id: String(m.properties.messageId),
    topic: m.fields.routingKey,
    key: headers['mailroom-key'] ?? null,
    type: (m.properties.type as string | undefined) ?? null,
    payload: m.content,
    contentType: String(m.properties.contentType),
    headers,
    createdAt: new Date(),
    attempts: 1,
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('RabbitMQ broker transactions', () => {
  it('is a transactional transport', () => {
    assert.equal(isTransactionalTransport(transport()), true);
  });

  it('delivers every message published in a transaction at the commit, and none before it', async () => {
    const t = transport();
    const from = consumer.raw.length;
    const tx = await t.begin();
    const first = [testMessage({ topic: 'tx.a', key: 'k1' }), testMessage({ topic: 'tx.b', key: 'k1' })];
    const second = testMessage({ topic: 'tx.c', key: 'k1' });
    await tx.publish(first);
    await tx.publish([second]);
    // The broker holds them until the commit: a marker published meanwhile arrives alone.
    assert.deepEqual(await seenUpToMarker(from), []);
    await tx.commit();
    const ids = [...first.map((m) => m.id), second.id];
    await consumer.waitForIds(ids, 10_000);
    assert.deepEqual(
      idsSince(from).filter((id) => ids.includes(id)),
      ids,
      'in the order published',
    );
  });

  it('delivers none of them after a rollback', async () => {
    const t = transport();
    const from = consumer.raw.length;
    const tx = await t.begin();
    await tx.publish([testMessage({ topic: 'tx.a' }), testMessage({ topic: 'tx.b' })]);
    await tx.rollback();
    await tx.rollback(); // idempotent
    assert.deepEqual(await seenUpToMarker(from), []);
    await assert.rejects(tx.publish([testMessage({ topic: 'tx.a' })]), (err: unknown) => {
      assert.ok(isTransportError(err));
      assert.equal(err.code, 'transaction_closed');
      return true;
    });
  });

  it('transaction(fn) commits when fn returns and returns its value', async () => {
    const t = transport();
    const messages = [testMessage({ topic: 'tx.a' }), testMessage({ topic: 'tx.b' })];
    const value = await t.transaction(async (tx) => {
      await tx.publish(messages);
      return 42;
    });
    assert.equal(value, 42);
    await consumer.waitForIds(
      messages.map((m) => m.id),
      10_000,
    );
  });

  it('transaction(fn) rolls back and rethrows when fn throws', async () => {
    const t = transport();
    const from = consumer.raw.length;
    const boom = new Error('handler failed');
    await assert.rejects(
      t.transaction(async (tx) => {
        await tx.publish([testMessage({ topic: 'tx.a' })]);
        throw boom;
      }),
      (err: unknown) => err === boom,
    );
    assert.deepEqual(await seenUpToMarker(from), []);
  });

  it('takes message inputs as enqueue does, and refuses delayMs with an InvalidMessageError before sending anything', async () => {
    const counted = countingConnect();
    const t = transport({ connect: counted.connect });
    const from = consumer.raw.length;
    const tx = await t.begin();
    await assert.rejects(
      tx.publish([
        { topic: 'tx.a', payload: { ok: true } },
        { topic: 'tx.b', payload: { late: true }, delayMs: 1000 },
      ]),
      (err: unknown) => {
        assert.ok(isInvalidMessageError(err), String(err));
        assert.equal(err.field, 'delayMs');
        return true;
      },
    );
    assert.equal(counted.written, 0, 'nothing was sent');
    // The transaction is still usable: the bad call sent nothing.
    await tx.publish([{ topic: 'tx.c', key: 'order-1', type: 'c', payload: { n: 1 } }]);
    await tx.commit();
    assert.equal(counted.written, 1);
    await consumer.take(from + 1, 10_000);
    const received = consumer.raw.slice(from);
    assert.equal(received.length, 1);
    assert.equal(received[0]?.fields.routingKey, 'tx.c');
    assert.equal(received[0]?.properties.headers?.['mailroom-key'], 'order-1');
    assert.deepEqual(JSON.parse(received[0]?.content.toString() ?? ''), { n: 1 });
  });

  it('leaves nothing visible when the connection is cut between publish and commit', async () => {
    const { proxy, url } = await proxied();
    const t = transport({ url });
    const from = consumer.raw.length;
    const tx = await t.begin();
    await tx.publish([testMessage({ topic: 'tx.a' }), testMessage({ topic: 'tx.b' })]);
    await sleep(100); // the broker has them (uncommitted)
    proxy.cut();
    await sleep(200); // the client sees the reset
    await assert.rejects(tx.commit(), (err: unknown) => {
      assert.ok(isTransportError(err), String(err));
      assert.equal(err.code, 'transaction_lost');
      assert.match(err.message, /nothing was committed/);
      return true;
    });
    await tx.rollback(); // resolves with the connection gone
    assert.deepEqual(await seenUpToMarker(from), []);
    // The next transaction reconnects.
    const next = [testMessage({ topic: 'tx.d' })];
    await t.transaction((tx2) => tx2.publish(next));
    await consumer.waitForIds(
      next.map((m) => m.id),
      10_000,
    );
  });

  it('reports commit_unknown when the connection is lost after tx.commit was sent', async () => {
    const { proxy, url } = await proxied();
    const t = transport({ url });
    const tx = await t.begin();
    await tx.publish([testMessage({ topic: 'tx.a' })]);
    await sleep(50);
    proxy.delay(400); // tx.commit (or its answer) is held in the proxy…
    const committing = tx.commit();
    await sleep(150);
    proxy.cut(); // …when the connection goes
    await assert.rejects(committing, (err: unknown) => {
      assert.ok(isTransportError(err), String(err));
      assert.equal(err.code, 'commit_unknown');
      return true;
    });
    proxy.heal();
  });

  it('reports commit_unknown and drops the connection when the broker does not answer the commit in time', async () => {
    const { proxy, url } = await proxied();
    const t = transport({ url, confirmTimeoutMs: 300 });
    const tx = await t.begin();
    await tx.publish([testMessage({ topic: 'tx.a' })]);
    proxy.blackhole();
    const connectionsBefore = proxy.openConnections;
    await assert.rejects(tx.commit(), (err: unknown) => {
      assert.ok(isTransportError(err), String(err));
      assert.equal(err.code, 'commit_unknown');
      assert.match(err.message, /300 ms/);
      return true;
    });
    proxy.heal();
    // The silent transaction connection was dropped; the next transaction opens a new one.
    const next = [testMessage({ topic: 'tx.e' })];
    await t.transaction((tx2) => tx2.publish(next));
    await consumer.waitForIds(
      next.map((m) => m.id),
      10_000,
    );
    assert.ok(proxy.connections > connectionsBefore);
  });

  it('fails the commit with a PermanentDeliveryError naming an unroutable message; the routable ones are committed', async () => {
    const t = transport();
    const routable = testMessage({ topic: 'tx.routable' });
    const unroutable = testMessage({ topic: 'nobody.listens' });
    const tx = await t.begin();
    await tx.publish([routable, unroutable]);
    await assert.rejects(tx.commit(), (err: unknown) => {
      assert.ok(isPermanentDeliveryError(err), String(err));
      assert.match(err.message, new RegExp(unroutable.id));
      assert.match(err.message, /other 1 were committed/);
      assert.equal(err.details['committed'], 1);
      return true;
    });
    await consumer.waitForIds([routable.id], 10_000);
  });

  it("a channel error in a transaction commits nothing and leaves the confirm channel's connection alone", async () => {
    const own = uniqueName('mailroom-test-tx-gone');
    await broker.withChannel((ch) => ch.assertExchange(own, 'topic', { durable: true }));
    const { connect, connections } = recordingConnect();
    const t = new RabbitMqTransport({ url: RABBITMQ_URL, exchange: own, declareExchange: false, connect });
    open.push(t);
    const ownConsumer = await broker.consume(own, ['#']);
    try {
      const [before] = await t.publish([testMessage({ topic: 'x.before' })]);
      assert.equal(before?.status, 'ok');
      const tx = await t.begin();
      await broker.deleteExchange(own);
      await tx.publish([testMessage({ topic: 'x.in-tx' })]); // the broker answers with 404 NOT_FOUND
      await assert.rejects(tx.commit(), (err: unknown) => {
        assert.ok(isMailroomError(err), String(err));
        assert.equal(err.code, 'transaction_refused');
        assert.match(err.message, /nothing was committed/);
        assert.notEqual(err.name, 'TransportError', 'not an outage: the relay spends an attempt');
        return true;
      });
      await broker.withChannel((ch) => ch.assertExchange(own, 'topic', { durable: true }));
      await broker.withChannel((ch) => ch.bindQueue(ownConsumer.queue, own, '#'));
      const after = testMessage({ topic: 'x.after' });
      const [outcome] = await t.publish([after]);
      assert.equal(outcome?.status, 'ok');
      // Two connections in all (confirms, transactions): the confirm one was never replaced.
      assert.equal(connections.length, 2);
      await ownConsumer.waitForIds([after.id], 10_000);
      assert.equal(
        ownConsumer.raw.some((m) => m.fields.routingKey === 'x.in-tx'),
        false,
      );
    } finally {
      await ownConsumer.close();
      await broker.deleteExchange(own).catch(() => {});
    }
  });

  it('runs transactions side by side, each on a channel of its own', async () => {
    const t = transport();
    const groups = Array.from({ length: 5 }, (_, g) => [
      testMessage({ topic: `tx.p${g}`, key: `g${g}` }),
      testMessage({ topic: `tx.p${g}`, key: `g${g}` }),
    ]);
    const rolledBack = testMessage({ topic: 'tx.rolled-back' });
    const from = consumer.raw.length;
    await Promise.all([
      ...groups.map((messages) => t.transaction((tx) => tx.publish(messages))),
      t
        .transaction(async (tx) => {
          await tx.publish([rolledBack]);
          throw new Error('no');
        })
        .catch(() => {}),
    ]);
    await consumer.waitForIds(
      groups.flat().map((m) => m.id),
      10_000,
    );
    assert.equal(idsSince(from).includes(rolledBack.id), false);
  });

  it('carries an atomic group from the outbox through a relay in one transaction, and dead-letters one with an unroutable member', async () => {
    const db = await createTestDb('mrtx');
    const t = transport();
    const relay = new Relay({ store: db.store, transport: t, retry: { baseDelayMs: 20, maxDelayMs: 50 } });
    try {
      const outbox = new Outbox({ store: db.store });
      const group = (topics: string[]): MessageInput[] =>
        topics.map((topic, i) => ({ topic, key: 'order-7', payload: { i } }));
      const from = consumer.raw.length;
      const plainBefore = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [{ topic: 'tx.plain', key: 'order-7', payload: { before: true } }]),
      );
      const ids = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, group(['tx.g.a', 'tx.g.b', 'tx.g.c']), { atomic: true }),
      );
      const bad = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, group(['tx.g.d', 'nobody.listens.here']), { atomic: true }),
      );
      await relay.start();
      await consumer.waitForIds([...plainBefore, ...ids], 15_000);
      await waitUntil(async () => (await db.count('dead_letter')) === 1, 'the bad group to be dead-lettered');
      const received = consumer.raw.slice(from).map((m) => toReceivedMessage(toOutbox(m)));
      const good = received.filter((m) => ids.includes(m.id));
      assert.deepEqual(
        good.map((m) => m.group),
        [0, 1, 2].map((index) => ({ id: ids[0], size: 3, index })),
      );
      assert.deepEqual(
        received.filter((m) => plainBefore.includes(m.id) || ids.includes(m.id)).map((m) => m.id),
        [...plainBefore, ...ids],
        'in key order',
      );
      const [dead] = await db.store.listDeadLetters();
      assert.equal(dead?.id, bad[0]);
      assert.match(dead?.lastError ?? '', /returned 1 of its 2 messages as unroutable/);
    } finally {
      await relay.stop();
      await db.drop();
    }
  });

  it('refuses begin() on a closed transport and commits nothing left open by close()', async () => {
    const t = transport();
    const from = consumer.raw.length;
    const tx = await t.begin();
    await tx.publish([testMessage({ topic: 'tx.a' })]);
    await t.close();
    await assert.rejects(tx.commit(), (err: unknown) => isTransportError(err));
    await assert.rejects(t.begin(), (err: unknown) => {
      assert.ok(isTransportError(err));
      assert.equal(err.code, 'closed');
      return true;
    });
    assert.deepEqual(await seenUpToMarker(from), []);
  });
});
