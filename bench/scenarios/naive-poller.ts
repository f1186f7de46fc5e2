/**
 * A peer for the drain scenario: the outbox relay most blog posts show. One at a time: select
 * the oldest row, publish it, wait for the confirm, delete it. Same table, same broker, same
 * confirms, so only the relay's design differs.
 */
import amqp from 'amqplib';
import { AMQP_URL, benchDb, brokerSink, prefill, round, type Row } from '../lib.js';

export async function naivePollerDrain(messages: number, keys: number): Promise<Row> {
  const db = await benchDb();
  const sink = await brokerSink();
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createConfirmChannel();
  try {
    await prefill(db, messages, keys);
    const client = await db.pool.connect();
    const t0 = performance.now();
    let done = 0;
    try {
      for (;;) {
        const r = await client.query(
          `SELECT seq, id::text AS id, topic, payload FROM "${db.schema}".outbox ORDER BY seq LIMIT 1`,
        );
        const row = r.rows[0];
        if (!row) break;
        await new Promise<void>((resolve, reject) =>
          ch.publish(sink.exchange, row.topic, row.payload, { persistent: true, messageId: row.id }, (err) =>
            err ? reject(err as Error) : resolve(),
          ),
        );
        await client.query(`DELETE FROM "${db.schema}".outbox WHERE seq = $1`, [row.seq]);
        done++;
      }
    } finally {
      client.release();
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      peer: 'naive poller (select, publish, confirm, delete)',
      messages,
      keys,
      'msg/s': round(done / seconds, 0),
    };
  } finally {
    await conn.close().catch(() => undefined);
    await sink.close();
    await db.drop();
  }
}
