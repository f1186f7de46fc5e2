/**
 * Writer impact: application transactions per second (one business row + one outbox row) with
 * 8 and 32 writers; without Mailroom, with it (NOTIFY on and off), with and without a relay
 * draining at the same time. The ratio to "business row only" is the cost of using Mailroom.
 */
import type pg from 'pg';
import { Relay } from '../../src/core/index.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import { AMQP_URL, benchDb, brokerSink, payload256, round, type Row } from '../lib.js';

type Variant = { name: string; outbox: boolean; notify: boolean; relay: boolean };

export const VARIANTS: Variant[] = [
  { name: 'business row only', outbox: false, notify: false, relay: false },
  { name: '+ outbox, NOTIFY off, no relay', outbox: true, notify: false, relay: false },
  { name: '+ outbox, NOTIFY on, no relay', outbox: true, notify: true, relay: false },
  { name: '+ outbox, NOTIFY off, relay polling', outbox: true, notify: false, relay: true },
  { name: '+ outbox, NOTIFY on, relay notified', outbox: true, notify: true, relay: true },
];

export async function writerImpactOnce(
  writers: number,
  variant: Variant,
  seconds: number,
): Promise<{ tps: number }> {
  const db = await benchDb({ notify: variant.notify, poolMax: writers + 4 });
  const sink = variant.relay ? await brokerSink() : undefined;
  await db.pool.query(
    `CREATE TABLE "${db.schema}".orders (id bigserial PRIMARY KEY, customer text, data jsonb)`,
  );
  let relay: Relay | undefined;
  let transport: RabbitMqTransport | undefined;
  if (variant.relay && sink) {
    transport = new RabbitMqTransport({ url: AMQP_URL, exchange: sink.exchange });
    relay = new Relay({ store: db.store, transport, wakeup: variant.notify ? 'notify' : 'poll' });
    await relay.start();
  }
  try {
    let stop = false;
    let commits = 0;
    const insert = `INSERT INTO "${db.schema}".orders (customer, data) VALUES ($1, $2)`;
    const loop = async (w: number) => {
      const client: pg.PoolClient = await db.pool.connect();
      try {
        let i = 0;
        while (!stop) {
          const data = payload256(i);
          await client.query('BEGIN');
          await client.query(insert, [`c${w}`, data]);
          if (variant.outbox) {
            await db.outbox.enqueue(client, { topic: 'bench.order', key: `c${w}-${i % 50}`, payload: data });
          }
          await client.query('COMMIT');
          commits++;
          i++;
        }
      } finally {
        client.release();
      }
    };
    const t0 = performance.now();
    const loops = Array.from({ length: writers }, (_, w) => loop(w));
    await new Promise((r) => setTimeout(r, seconds * 1000));
    stop = true;
    await Promise.all(loops);
    return { tps: commits / ((performance.now() - t0) / 1000) };
  } finally {
    await relay?.stop();
    await transport?.close();
    await sink?.close();
    await db.drop();
  }
}

export async function writerImpact(seconds: number): Promise<Row[]> {
  const rows: Row[] = [];
  for (const writers of [8, 32]) {
    let base = NaN;
    for (const v of VARIANTS) {
      const { tps } = await writerImpactOnce(writers, v, seconds);
      if (!v.outbox) base = tps;
      rows.push({
        writers,
        variant: v.name,
        'tx/s': round(tps, 0),
        'vs business only': `${round((tps / base) * 100, 0)}%`,
      });
    }
  }
  return rows;
}
