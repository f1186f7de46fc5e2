import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';

export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** A message as a test consumer saw it. */
export interface Received {
  id: string;
  key: string | null;
  topic: string;
  payload: string;
  redelivered: boolean;
  /** The `mailroom-attempt` header: the delivery attempt the relay counted. */
  attempt: string | undefined;
}

/**
 * A queue bound to `exchange` (declared durable/topic like the transport does) that records
 * everything it receives, acking each message. `close()` deletes the queue.
 */
export async function bindConsumer(exchange: string, pattern = '#') {
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.assertExchange(exchange, 'topic', { durable: true });
  const queue = `mr_test_${randomBytes(4).toString('hex')}`;
  await ch.assertQueue(queue, { durable: false, autoDelete: false });
  await ch.bindQueue(queue, exchange, pattern);
  const received: Received[] = [];
  await ch.consume(queue, (msg) => {
    if (!msg) return;
    const key = msg.properties.headers?.['mailroom-key'];
    const attempt = msg.properties.headers?.['mailroom-attempt'];
    received.push({
      id: String(msg.properties.messageId),
      key: typeof key === 'string' ? key : null,
      topic: msg.fields.routingKey,
      payload: msg.content.toString(),
      redelivered: msg.fields.redelivered,
      attempt: attempt === undefined ? undefined : String(attempt),
    });
    ch.ack(msg);
  });
  return {
    queue,
    received,
    async close() {
      await ch.deleteQueue(queue).catch(() => undefined);
      await ch.deleteExchange(exchange).catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
  };
}
