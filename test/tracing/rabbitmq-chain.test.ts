// The whole chain in one trace, with the SDK's in-memory exporter: a producer span enqueues in a
// PostgreSQL transaction, a relay publishes to RabbitMQ (127.0.0.1:5672), a RabbitMqConsumer
// hands the message to an Inbox handler that makes a span of its own.
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import { SpanKind, trace } from '@opentelemetry/api';

import { Outbox, Relay, type ReceivedMessage } from '../../src/core/index.js';
import { Inbox } from '../../src/inbox/inbox.js';
import { tracedTransport } from '../../src/tracing/index.js';
import { RabbitMqConsumer, RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { RABBITMQ_URL, TestBroker, uniqueName } from '../transports/rabbitmq-helpers.js';
import { registerTestSdk, type TestSdk } from './otel-sdk.js';

let sdk: TestSdk;
let db: TestDb;
let broker: TestBroker;

before(async () => {
  sdk = registerTestSdk();
  db = await createTestDb('mrtrchain');
  broker = await TestBroker.open();
});

after(async () => {
  await broker.close();
  await db.drop();
  await sdk.shutdown();
});

it('producer → relay → RabbitMQ → consumer → handler: one trace, each span the child of the one before', async () => {
  const exchange = uniqueName('mr-trace');
  const queue = uniqueName('mr-trace-q');
  const topic = `orders.${uniqueName('t').replace(/-/g, '_')}.created`;
  const transport = new RabbitMqTransport({ url: RABBITMQ_URL, exchange });
  const relay = new Relay({ store: db.store, transport: tracedTransport(transport), pollIntervalMs: 50 });
  const inbox = new Inbox({ store: db.store, consumer: 'billing' });
  const tracer = trace.getTracer('mailroom-test');
  const handled: string[] = [];
  const consumer = new RabbitMqConsumer({
    url: RABBITMQ_URL,
    exchange,
    queue,
    bindings: [topic],
    inbox,
    handler: async (message: ReceivedMessage) => {
      // The application's own work, traced with its own tracer.
      await tracer.startActiveSpan('charge card', async (span) => {
        await db.pool.query('SELECT 1');
        span.end();
      });
      handled.push(message.id);
    },
  });
  const outbox = new Outbox({ store: db.store });
  try {
    await consumer.start();
    await relay.start();
    const { id, producer } = await tracer.startActiveSpan('POST /orders', async (span) => {
      const id = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, { topic, key: 'o-1', payload: { total: 3 } }),
      );
      span.end();
      return { id, producer: span };
    });
    await waitUntil(() => handled.includes(id), 'the handler ran');
    await waitUntil(() => sdk.spans(`process ${topic}`).length === 1, 'the process span ended');

    const publish = sdk.span(`publish ${topic}`);
    const process = sdk.span(`process ${topic}`);
    const charge = sdk.span('charge card');
    const traceId = producer.spanContext().traceId;
    for (const s of [publish, process, charge]) assert.equal(s.spanContext().traceId, traceId, s.name);

    assert.equal(publish.kind, SpanKind.PRODUCER);
    assert.equal(publish.parentSpanContext?.spanId, producer.spanContext().spanId);
    assert.equal(publish.attributes['messaging.system'], 'rabbitmq');
    assert.equal(publish.attributes['messaging.destination.name'], topic);
    assert.equal(publish.attributes['messaging.message.id'], id);
    assert.equal(publish.attributes['mailroom.publish.outcome'], 'ok');

    assert.equal(process.kind, SpanKind.CONSUMER);
    assert.equal(process.parentSpanContext?.spanId, publish.spanContext().spanId);
    assert.equal(process.links[0]?.context.spanId, publish.spanContext().spanId);
    assert.equal(process.attributes['messaging.message.id'], id);
    assert.equal(process.attributes['messaging.consumer.group.name'], 'billing');
    assert.equal(process.attributes['mailroom.inbox.status'], 'processed');

    assert.equal(charge.parentSpanContext?.spanId, process.spanContext().spanId);
  } finally {
    await consumer.stop();
    await relay.stop();
    await transport.close();
    await broker.withChannel(async (ch) => {
      await ch.deleteQueue(queue).catch(() => {});
      await ch.deleteQueue(`${queue}.dead`).catch(() => {});
      await ch.deleteExchange(exchange).catch(() => {});
    });
  }
});
