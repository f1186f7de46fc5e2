/**
 * Latency under a steady offered load: writers commit one message per transaction at a fixed
 * rate; we record when each commit returned, when the broker confirmed it to the relay, and
 * when a consumer on the real queue received it. With `wakeup: 'replication'` the relay tails
 * the log through a slot of its own (`mr_bench_…`), dropped with the publication afterwards.
 * With `wakeup: 'tableless'` it is the same relay, and the writers emit logical messages
 * (`PostgresStore({ tableless: true })`) instead of inserting rows; the relay creates the slot
 * when it starts, before the first write.
 */
import { Relay, type OutboxMessage, type PublishOutcome, type Transport } from '../../src/core/index.js';
import { PostgresLogSource } from '../../src/replication/postgres-log-source.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import {
  AMQP_URL,
  DATABASE_URL,
  benchDb,
  benchSlot,
  brokerSink,
  dropReplication,
  latencyColumns,
  onInterrupt,
  pacedWriters,
  payload256,
  percentile,
  relayWakeup,
  round,
  timedConsumer,
  type Mode,
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
  /** The relay's wake-up, or `tableless` (a replication relay, table-less writers). */
  wakeup: Mode;
  /**
   * The writers' wake-up (PostgresStore `notify`): the default, `'idle'`, with `wakeup: 'notify'`;
   * `false` otherwise (a polling or log-tailing relay needs none).
   */
  notify?: boolean | 'idle';
  batchSize?: number;
  concurrency?: number;
}): Promise<Row> {
  const notify = options.notify ?? (options.wakeup === 'notify' ? 'idle' : false);
  const slot = options.wakeup === 'replication' || options.wakeup === 'tableless' ? benchSlot() : undefined;
  const db = await benchDb({
    notify,
    poolMax: 16,
    ...(options.wakeup === 'tableless' && slot !== undefined ? { tableless: { slot } } : {}),
  });
  let relay: Relay | undefined;
  let transport: Transport | undefined;
  let consumer: Awaited<ReturnType<typeof timedConsumer>> | undefined;
  let sink: Awaited<ReturnType<typeof brokerSink>> | undefined;
  // The relay first (it holds the slot), then the slot and publication, then the rest.
  const cleanup = onInterrupt(async () => {
    try {
      await relay?.stop();
      await transport?.close();
    } finally {
      try {
        if (slot !== undefined) await dropReplication({ slot, schema: db.schema });
      } finally {
        await consumer?.close();
        await sink?.close();
        await db.drop();
      }
    }
  });
  try {
    sink = await brokerSink();
    const committedAt = new Map<string, number>();
    const confirmedAt = new Map<string, number>();
    consumer = await timedConsumer(sink.queue);
    transport = timedTransport(
      new RabbitMqTransport({ url: AMQP_URL, exchange: sink.exchange }),
      confirmedAt,
    );
    relay = new Relay({
      store: db.store,
      transport,
      ...(slot === undefined
        ? { wakeup: relayWakeup(options.wakeup) }
        : {
            source: new PostgresLogSource({
              connectionString: DATABASE_URL,
              schema: db.schema,
              slot,
              store: db.store,
            }),
          }),
      ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
      ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
    });
    await relay.start();
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
    await cleanup();
  }
}
