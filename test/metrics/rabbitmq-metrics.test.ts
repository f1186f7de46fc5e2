import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay, type MessageInput } from '../../src/core/index.js';
import { RelayMetrics } from '../../src/metrics/index.js';
import { TcpProxy } from '../../src/testkit/index.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { AMQP_URL, bindConsumer } from '../helpers/amqp.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { scrapeUntil, value } from './scrape.js';

function many(n: number, from = 0): MessageInput[] {
  return Array.from({ length: n }, (_, i) => ({
    topic: 'orders.created',
    key: `k${i % 5}`,
    payload: { i: from + i },
  }));
}

describe('RelayMetrics with RabbitMQ', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('mtq');
  });
  after(async () => db.drop());

  it('counts and times confirmed deliveries, and shows the broker down while it is unreachable', async (t) => {
    const exchange = `mr_metrics_${randomBytes(3).toString('hex')}`;
    const consumer = await bindConsumer(exchange);
    t.after(() => consumer.close());
    const broker = new URL(AMQP_URL);
    const proxy = await TcpProxy.start({
      targetHost: broker.hostname,
      targetPort: Number(broker.port || 5672),
    });
    t.after(() => proxy.close());
    const url = new URL(AMQP_URL);
    url.hostname = '127.0.0.1';
    url.port = String(proxy.port);
    const transport = new RabbitMqTransport({ url: url.toString(), exchange });
    t.after(() => transport.close());
    const metrics = new RelayMetrics();
    t.after(() => metrics.close());
    const relay = new Relay({
      store: db.store,
      transport,
      metrics,
      probeMinDelayMs: 50,
      probeMaxDelayMs: 200,
    });
    t.after(() => relay.stop());
    await relay.start();

    const outbox = new Outbox({ store: db.store });
    await inTransaction(db.pool, (client) => outbox.enqueue(client, many(20)));
    await waitUntil(() => consumer.received.length >= 20, 'the consumer to receive 20 messages');
    const source = { source: db.schema };
    const samples = await scrapeUntil(
      metrics.registry,
      (s) => value(s, 'mailroom_published_total', { ...source, outcome: 'delivered' }) === 20,
      'twenty confirmed deliveries counted',
    );
    assert.equal(value(samples, 'mailroom_delivery_latency_seconds_count', source), 20);
    assert.equal(value(samples, 'mailroom_transport_up', { ...source, transport: 'rabbitmq' }), 1);
    assert.equal(value(samples, 'mailroom_transport_outages_total', source), undefined);

    // The broker becomes unreachable: new connections refused, open ones reset.
    proxy.refuse();
    proxy.cut();
    await inTransaction(db.pool, (client) => outbox.enqueue(client, many(5, 20)));
    const down = await scrapeUntil(
      metrics.registry,
      (s) => value(s, 'mailroom_transport_up', source) === 0,
      'transport_up to be 0 while the broker is unreachable',
    );
    assert.equal(value(down, 'mailroom_transport_outages_total', source), 1);
    // An outage spends no attempt: nothing retried, nothing dead.
    assert.equal(value(down, 'mailroom_published_total', { ...source, outcome: 'retried' }), undefined);
    assert.equal(value(down, 'mailroom_published_total', { ...source, outcome: 'dead' }), undefined);

    proxy.heal();
    await waitUntil(
      () => consumer.received.length >= 25,
      'the consumer to receive the 5 held messages',
      30_000,
    );
    const back = await scrapeUntil(
      metrics.registry,
      (s) =>
        value(s, 'mailroom_published_total', { ...source, outcome: 'delivered' }) === 25 &&
        value(s, 'mailroom_transport_up', source) === 1,
      'transport_up back to 1 and 25 deliveries counted',
    );
    assert.equal(value(back, 'mailroom_delivery_latency_seconds_count', source), 25);
    assert.equal(value(back, 'mailroom_transport_outages_total', source), 1);
  });
});
