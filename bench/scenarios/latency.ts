/**
 * Latency under a steady offered load: writers commit one message per transaction at a fixed
 * rate; we record when each commit returned, when the broker confirmed it to the relay, and
 * when a consumer on the real queue received it.
 */
import amqp from 'amqplib';
import { Relay, type OutboxMessage, type PublishOutcome, type Transport } from '../../src/core/index.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { AMQP_URL, benchDb, brokerSink, payload256, percentile, round, sleep, type Row } from '../lib.js';

/** Records when the broker confirmed each message: a decorator, so the relay stays untouched. */
function timedTransport(inner: Transport, confirmedAt: Map<string, number>): Transport {
  return {
    name: inner.name,
    capabilities: inner.capabilities,
    start: () => inner.start(),
    close: () => inner.close(),
    async publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
      const outcomes = await inner.publish(messages);
      const now = performance.now();
      outcomes.forEach((o, i) => {
        const id = (messages[i] as OutboxMessage).id;
        if (o.status === 'ok' && !confirmedAt.has(id)) confirmedAt.set(id, now);
      });
      return outcomes;
    },
  };
}

export async function latencyOnce(options: {
  rate: number;
  seconds: number;
  wakeup: 'notify' | 'poll';
  batchSize?: number;
  concurrency?: number;
}): Promise<Row> {
  const db = await benchDb({ notify: options.wakeup === 'notify', poolMax: 16 });
  const sink = await brokerSink();
  const committedAt = new Map<string, number>();
  const confirmedAt = new Map<string, number>();
  const receivedAt = new Map<string, number>();
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.prefetch(2000);
  await ch.consume(sink.queue, (m) => {
    if (!m) return;
    receivedAt.set(String(m.properties.messageId), performance.now());
    ch.ack(m);
  });
  const transport = timedTransport(
    new RabbitMqTransport({ url: AMQP_URL, exchange: sink.exchange }),
    confirmedAt,
  );
  const relay = new Relay({
    store: db.store,
    transport,
    wakeup: options.wakeup,
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
  });
  await relay.start();
  try {
    const total = Math.round(options.rate * options.seconds);
    const writers = 8;
    let next = 0;
    const t0 = performance.now();
    // Each message is due at t0 + i / rate; writers take the next due one and wait for its time.
    const writer = async () => {
      const client = await db.pool.connect();
      try {
        for (;;) {
          const i = next++;
          if (i >= total) return;
          const due = t0 + (i * 1000) / options.rate;
          const wait = due - performance.now();
          if (wait > 1) await sleep(wait);
          await client.query('BEGIN');
          const id = await db.outbox.enqueue(client, {
            topic: 'bench.latency',
            key: `k${i % 1000}`,
            payload: payload256(i),
          });
          await client.query('COMMIT');
          committedAt.set(id, performance.now());
        }
      } finally {
        client.release();
      }
    };
    await Promise.all(Array.from({ length: writers }, writer));
    const offered = total / ((performance.now() - t0) / 1000);
    const deadline = performance.now() + 30_000;
    while (receivedAt.size < committedAt.size && performance.now() < deadline) await sleep(20);
    const toBroker: number[] = [];
    const toConsumer: number[] = [];
    for (const [id, c] of committedAt) {
      const b = confirmedAt.get(id);
      const r = receivedAt.get(id);
      if (b !== undefined) toBroker.push(b - c);
      if (r !== undefined) toConsumer.push(r - c);
    }
    toBroker.sort((a, b) => a - b);
    toConsumer.sort((a, b) => a - b);
    return {
      'offered msg/s': options.rate,
      'achieved msg/s': round(offered, 0),
      wakeup: options.wakeup,
      'commit→broker p50 ms': round(percentile(toBroker, 50)),
      'p95 ms': round(percentile(toBroker, 95)),
      'p99 ms': round(percentile(toBroker, 99)),
      'commit→consumer p50 ms': round(percentile(toConsumer, 50)),
      'c p95 ms': round(percentile(toConsumer, 95)),
      'c p99 ms': round(percentile(toConsumer, 99)),
      received: `${receivedAt.size}/${committedAt.size}`,
    };
  } finally {
    await relay.stop();
    await transport.close();
    await conn.close().catch(() => undefined);
    await sink.close();
    await db.drop();
  }
}
