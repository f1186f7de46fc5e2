/**
 * Latency under a steady offered load: writers commit one message per transaction at a fixed
 * rate; we record when each commit returned, when the broker confirmed it to the relay, and
 * when a consumer on the real queue received it.
 */
import { Relay, type OutboxMessage, type PublishOutcome, type Transport } from '../../src/core/index.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import {
  AMQP_URL,
  benchDb,
  brokerSink,
  latencyColumns,
  pacedWriters,
  payload256,
  percentile,
  round,
  timedConsumer,
  type Row,
} from '../lib.js';

/** Records when the broker confirmed each message: a decorator, so the relay stays untouched. */
function timedTransport(inner: Transport, confirmedAt: Map<string, number>): Transport {
  return {
    name: inner.name,
    start: () => inner.start(),
    probe: (options) => inner.probe(options),
    close: () => inner.close(),
    async publish(messages: readonly OutboxMessage[], options): Promise<PublishOutcome[]> {
      const outcomes = await inner.publish(messages, options);
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
  /** The writers' wake-up (PostgresStore `notify`): the default, `'idle'`, with `wakeup: 'notify'`. */
  notify?: boolean | 'idle';
  batchSize?: number;
  concurrency?: number;
}): Promise<Row> {
  const notify = options.notify ?? (options.wakeup === 'notify' ? 'idle' : false);
  const db = await benchDb({ notify, poolMax: 16 });
  const sink = await brokerSink();
  const committedAt = new Map<string, number>();
  const confirmedAt = new Map<string, number>();
  const consumer = await timedConsumer(sink.queue);
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
    const achieved = await pacedWriters(
      db.pool,
      options,
      (client, i) =>
        db.outbox.enqueue(client, { topic: 'bench.latency', key: `k${i % 1000}`, payload: payload256(i) }),
      committedAt,
    );
    const columns = await latencyColumns(committedAt, confirmedAt, consumer.receivedAt);
    // The tail the issue asks for beside p99: one message in a thousand (10 s at 1,000 msg/s
    // gives ten of them, so read it as a rough figure).
    const toBroker: number[] = [];
    for (const [id, c] of committedAt) {
      const b = confirmedAt.get(id);
      if (b !== undefined) toBroker.push(b - c);
    }
    toBroker.sort((a, b) => a - b);
    const latency: Row = {};
    for (const [column, value] of Object.entries(columns)) {
      latency[column] = value;
      if (column === 'p99 ms') latency['p99.9 ms'] = round(percentile(toBroker, 99.9));
    }
    return {
      'offered msg/s': options.rate,
      'achieved msg/s': round(achieved, 0),
      wakeup:
        options.wakeup === 'notify' && notify !== 'idle'
          ? `notify (writers: ${String(notify)})`
          : options.wakeup,
      ...latency,
    };
  } finally {
    await relay.stop();
    await transport.close();
    await consumer.close();
    await sink.close();
    await db.drop();
  }
}
